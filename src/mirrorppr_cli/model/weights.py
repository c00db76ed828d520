"""Where pretrained weights come from: a local directory, the Hugging Face cache, never the net.

A weight spec is a local directory (used as is) or a hub id (``owner/name``), looked up in the
huggingface-hub cache with ``local_files_only=True``. The tool never downloads: a missing
model raises :class:`MissingWeightsError` (exit code 5) whose message says what to fetch and
how to point the tool at it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ..errors import MissingWeightsError


def resolve_weights(spec: str | Path, *, what: str, flag: str,
                    allow_patterns: list[str] | None = None) -> Path:
    """A local folder holding ``spec``'s files; ``what`` and ``flag`` name it in errors."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    text = str(spec)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise MissingWeightsError(f"{what}: folder {text!r} does not exist; pass {flag} with a "
                                  "folder of downloaded weights or a hub id already in the "
                                  "Hugging Face cache (`hf download OWNER/NAME`)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface-hub is a core dependency
        raise MissingWeightsError(f"{what}: huggingface-hub is not installed") from exc
    try:
        return Path(snapshot_download(repo_id=text, local_files_only=True,
                                      allow_patterns=allow_patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        # `hf download` takes one pattern per --include.
        hint = f"hf download {text}" + "".join(f' --include "{p}"' for p in allow_patterns or [])
        raise MissingWeightsError(
            f"{what}: {text!r} is not in the local Hugging Face cache; fetch it on a machine "
            f"with network access ({hint}) or pass {flag} DIR"
        ) from exc


def load_mae(spec: str | None, cfg):
    """The MAE encoder: ``ViTMAEModel.from_pretrained`` from ``spec`` (folder or hub id), or
    ``None`` when ``spec`` is empty/``"none"`` (random init, allowed only for a trainable MAE
    or the ``tiny`` preset: a frozen random encoder cannot extract anything useful)."""
    if not spec or spec == "none":
        return None
    from transformers import ViTMAEModel

    folder = resolve_weights(spec, what="MAE encoder", flag="--mae",
                             allow_patterns=["config.json", "*.safetensors", "*.json"])
    try:
        model = ViTMAEModel.from_pretrained(folder, mask_ratio=0.0)
    except (pickle.UnpicklingError, EOFError) as exc:  # torch's weights-only unpickler said no
        raise MissingWeightsError(
            f"MAE encoder: {_pickled_weights(folder)}: refused, not a plain weights file "
            f"({refusal_reason(exc)}); replace it with the model's safetensors weights"
        ) from None
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"MAE encoder: cannot load {folder}: {exc}") from exc
    if model.config.hidden_size != cfg.hidden_size or model.config.patch_size != cfg.patch_size:
        raise MissingWeightsError(
            f"MAE encoder {spec}: hidden {model.config.hidden_size}/patch "
            f"{model.config.patch_size} does not match the config's {cfg.hidden_size}/"
            f"{cfg.patch_size}; set mae.* in the config to match"
        )
    return model


def _pickled_weights(folder: Path) -> Path:
    """The pickled weights file ``from_pretrained`` read in ``folder`` (the folder if none)."""
    for name in ("pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            return folder / name
    return next(iter(sorted(folder.glob("*.bin"))), folder)


def refusal_reason(error: BaseException) -> str:
    """One short line saying why a restricted unpickler refused a file (torch's weights-only
    unpickler writes a paragraph; the line after "WeightsUnpickler error:" is the reason)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for k, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not rest and k + 1 < len(lines):
                rest = lines[k + 1]
            return rest[:200] or type(error).__name__
    return (lines[0] if lines else type(error).__name__)[:200]
