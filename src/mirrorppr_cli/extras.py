"""Optional extras (``pip install 'mirrorppr[EXTRA]'``): which modules each one brings, and the
one-line error a verb gives when the extra it needs is not installed.

The base install (``pip install mirrorppr``) runs ``apply``, ``retouch`` / ``explain`` with the
warp backend, ``build-dataset`` (local engine) and ``bench`` with the metrics that need no
extra (PSNR, SSIM, edit fidelity, artefacts). Everything else names its extra:

* ``neural`` — the neural backends (``eager``, ``compile``, ``fp8``) and ``train``;
* ``metrics`` — LPIPS (torch + the lpips network);
* ``face`` — face similarity with dlib's embedding (the offline substitute);
* ``arcface`` — face similarity with ArcFace (insightface; its weights come separately);
* ``ray`` — ``build-dataset --engine ray``.

A missing extra is a missing model component: :class:`MissingExtraError`, exit code 5.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import MissingWeightsError

#: The top-level modules each extra installs (what is probed, and what an ImportError of
#: which is blamed on the extra).
EXTRAS: dict[str, tuple[str, ...]] = {
    "neural": ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate",
               "safetensors"),
    "metrics": ("torch", "torchvision", "lpips"),
    "face": ("dlib", "face_recognition_models"),
    "arcface": ("insightface", "onnxruntime"),
    "ray": ("ray",),
}


class MissingExtraError(MissingWeightsError):
    """An optional extra the request needs is not installed (exit code 5)."""

    def __init__(self, message: str, extra: str = "", module: str | None = None) -> None:
        super().__init__(message)
        self.extra, self.module = extra, module


def install_command(extra: str) -> str:
    """``pip install 'mirrorppr[EXTRA]'`` (quoted: shells expand brackets)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    return f"pip install 'mirrorppr[{extra}]'"


def needs_extra(extra: str, module: str | None = None) -> str:
    """``needs the EXTRA extra: pip install 'mirrorppr[EXTRA]' (MODULE is not installed)``."""
    why = f" ({module} is not installed)" if module else ""
    return f"needs the {extra} extra: {install_command(extra)}{why}"


def missing_extra(extra: str, what: str, module: str | None = None) -> MissingExtraError:
    """The error for ``what`` (e.g. "backend 'eager'") needing ``extra``; ``module`` is the
    module found missing, named in parentheses."""
    return MissingExtraError(f"{what} {needs_extra(extra, module)}", extra, module)


def missing_module(extra: str, modules: tuple[str, ...] | None = None) -> str | None:
    """The first of ``extra``'s modules (or of ``modules``) that is not installed, or None.

    Looked up without importing (cheap); a module that is installed but broken is caught
    when it is imported (:func:`extra_imports`).
    """
    for name in modules or EXTRAS[extra]:
        if name in sys.modules:  # imported already (or blocked: None)
            if sys.modules[name] is None:
                return name
            continue
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken parent package
            return name
    return None


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``extra``'s modules (or ``modules``) are installed."""
    missing = missing_module(extra, modules)
    if missing is not None:
        raise missing_extra(extra, what, missing)


def extra_of(error: ImportError) -> str | None:
    """The extra whose module ``error`` failed to import, or None (another module: a bug)."""
    top = (error.name or "").partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


@contextmanager
def extra_imports(extra: str, what: str) -> Iterator[None]:
    """Turn an ImportError of one of ``extra``'s modules inside the block into
    :class:`MissingExtraError`; any other ImportError propagates (it is a bug)."""
    try:
        yield
    except ImportError as error:
        top = (error.name or "").partition(".")[0]
        if top not in EXTRAS[extra]:
            raise
        raise missing_extra(extra, what, top) from None
