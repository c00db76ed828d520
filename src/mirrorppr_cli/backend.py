"""Backends: swappable engines behind every command, found by name.

A backend is a class with a ``name``, a one-line ``summary``, the ``options`` its constructor
takes (command-line values; the loader refuses any other) and ``capabilities``
(:data:`CAPABILITIES`): what it can do beyond the core protocol (:class:`Backend`). The CLI
never names a backend kind: ``retouch`` = :meth:`~Backend.measure` once, then
:meth:`~Backend.retouch_file` per query; ``bench`` = :meth:`~Backend.retouch` on arrays;
``apply`` and ``explain`` call the methods their capability names.

Backends are registered through the ``mirrorppr.backends`` entry-point group (installed
packages) or :func:`register_backend` (in-process, e.g. a script or a test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import UsageError

ENTRY_POINT_GROUP = "mirrorppr.backends"
DEFAULT_BACKEND = "warp"

#: What a backend can do beyond measuring and retouching, and the methods each needs.
CAPABILITIES = {
    "retouch": "measure an exemplar pair and apply it to queries (retouch, bench): measure, "
               "retouch_file, retouch, input_note, edit_summary",
    "ops": "apply named catalog operations (apply): apply_ops, apply_body_ops",
    "explain": "name the exemplar's edit as catalog operations (explain): explain",
    "strength": "scale a measured edit (--strength): retouch_file honours settings.strength",
    "edit-file": "save and load measured edits (--save-edit, --edit): save_edit, load_edit",
    "export": "write the edit as maps and layers (--export): retouch_file honours "
              "settings.exports",
    "select": "carry part of an edit (--only, --ops): select",
    "parallel": "picklable, runs a batch in several processes (--workers)",
}


@dataclass(frozen=True)
class RetouchSettings:
    """How each query of a ``retouch`` run is done and written (picklable: sent to workers)."""

    strength: float = 1.0
    face_index: int | None = None
    force: bool = False
    output_format: str | None = None
    max_pixels: int | None = None
    check: bool = True
    exports: tuple[str, ...] = ()
    quality: int | None = None
    #: Where the review page goes (``--review``): a backend that can, writes each query's
    #: thumbnails and motion heat-map there and returns them in ``report.extra["review"]``.
    review_dir: Path | None = None


@runtime_checkable
class Backend(Protocol):
    """The protocol every backend implements ("retouch" capability); the other capabilities
    add the methods :data:`CAPABILITIES` lists."""

    name: str
    summary: str
    capabilities: frozenset[str]
    options: frozenset[str]

    def availability(self) -> tuple[bool, str]:
        """Whether it can run here, and why (not)."""
        ...

    def prepare(self, status: Callable[[str], None] | None = None) -> None:
        """Load what the jobs need (weights, device), failing fast with a clear error."""
        ...

    def input_note(self, path: Path, max_pixels: int | None = None) -> str | None:
        """A note about an input file it will read (e.g. only the first frame is used), or
        an error if it cannot read it."""
        ...

    def measure(self, before: Path, after: Path, *, max_pixels: int | None = None,
                on_stage: Callable[[str], None] | None = None) -> Any:
        """The exemplar pair's edit, measured once for any number of queries."""
        ...

    def retouch_file(self, edit: Any, source: Path, dest: Path,
                     settings: RetouchSettings) -> Any:
        """Apply ``edit`` to the query ``source``, write ``dest`` atomically; a report with
        ``to_dict()`` (:class:`~mirrorppr_cli.result.Result`)."""
        ...

    def retouch(self, before: np.ndarray, after: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Arrays in, array out (``(H, W, 3)`` uint8 RGB): what ``bench`` scores."""
        ...

    def edit_summary(self, edit: Any) -> dict:
        """What a run's JSON summary says about ``edit``."""
        ...


_registered: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``factory`` (a backend class) loadable as ``name`` in this process."""
    _registered[name] = factory


def backend_names() -> list[str]:
    """Names of every installed or registered backend, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(_registered))


def backend_class(name: str) -> Callable[..., Backend]:
    """The class registered as ``name``; UsageError naming the installed ones otherwise."""
    if name in _registered:
        return _registered[name]
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(backend_names()) or "none (is mirrorppr installed?)"
        raise UsageError(f"unknown backend {name!r}; installed backends: {known}")
    return matches[0].load()


def load_backend(name: str, **options) -> Backend:
    """Instantiate the backend ``name`` with the ``options`` given (None: not given). An
    option the backend does not take is refused, naming its command-line flag."""
    cls = backend_class(name)
    given = {key: value for key, value in options.items() if value is not None}
    accepted = getattr(cls, "options", frozenset())
    refused = sorted(set(given) - set(accepted))
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        raise UsageError(f"backend {name!r} takes no {flags}"
                         + (f" (its options: {', '.join('--' + o.replace('_', '-') for o in sorted(accepted))})"
                            if accepted else " (it has no options)"))
    return cls(**given)


def require(backend: Backend, capability: str, what: str | None = None) -> None:
    """UsageError unless ``backend`` has ``capability``; ``what`` names the option that needs
    it (default: the capability as a job)."""
    if capability not in backend.capabilities:
        needed = what or f"{capability!r} jobs"
        raise UsageError(
            f"backend {backend.name!r} cannot do {needed} "
            f"(it can: {', '.join(sorted(backend.capabilities))}); the warp backend can"
        )
