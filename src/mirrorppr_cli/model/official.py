"""The official MirrorPPR release layout, checked tensor by tensor and mapped onto our modules.

The release (SJTU-DENG-Lab/MirrorPPR, ``mirrorppr/inference/simface100.py``) is a folder::

    ROOT/mirrorppr_face/mae/mae_pretrained.safetensors      ViT-MAE-L (keys ``vit.*``)
    ROOT/mirrorppr_face/rformer/rformer.safetensors         R-Former (``embeddings.*``, ``encoder.layer.N.*``, ``layernorm.*``)
    ROOT/mirrorppr_face/connector/connector.safetensors     connector (``encoder.layers.N.*``, ``proj.{0,2,3}.*``)
    ROOT/mirrorppr_face/lora/lora.safetensors               DiT LoRA (``<module>.lora_A.weight`` / ``lora_B``)
    ROOT/qwen_image_edit/{transformer,vae,text_encoder,processor}/   Qwen-Image-Edit-2511 (diffusers layout)

Key names are DiffSynth's; ours were laid out to match them, so the mapping is a prefix:
``vit.X`` → ``extractor.mae.model.X`` (the official MAE converter also keeps ``vit.*`` only and
drops the pre-training decoder ``decoder.*``), ``X`` → ``extractor.rformer.X``,
``X`` → ``connector.X``, and LoRA keys to peft's (``.lora_A.default.weight`` and the
``pipe.dit.`` / ``diffusion_model.`` prefixes DiffSynth's loader accepts are normalised).
Shapes are read from the file headers (nothing is loaded) and compared with our modules built
on the ``meta`` device. A missing file raises :class:`MissingWeightsError` (exit 5); a foreign
key, a missing tensor or a wrong shape raises :class:`InputError` (exit 3), in one line.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError, MissingWeightsError
from .config import ModelConfig, paper_config

FACE_DIR = "mirrorppr_face"
QWEN_DIR = "qwen_image_edit"
FILES = {  # part → (subfolder, file name in the release)
    "mae": ("mae", "mae_pretrained.safetensors"),
    "rformer": ("rformer", "rformer.safetensors"),
    "connector": ("connector", "connector.safetensors"),
    "lora": ("lora", "lora.safetensors"),
}
WHAT = {"mae": "MAE encoder", "rformer": "R-Former", "connector": "connector",
        "lora": "DiT LoRA"}
LORA_PREFIXES = ("pipe.dit.", "diffusion_model.", "transformer.", "dit.")


@dataclass
class Release:
    """Where the parts of an official release are."""

    face: Path
    files: dict[str, Path]
    qwen: Path | None  # the Qwen-Image-Edit folder beside it, if present


def is_release(folder: str | Path) -> bool:
    """Whether ``folder`` looks like the official layout (``ROOT`` or its ``mirrorppr_face``)."""
    folder = Path(folder)
    return (folder / FACE_DIR).is_dir() or (folder / "rformer").is_dir()


def find_release(folder: str | Path) -> Release:
    """The release's files; :class:`MissingWeightsError` naming the first missing one."""
    folder = Path(folder)
    face = folder / FACE_DIR if (folder / FACE_DIR).is_dir() else folder
    qwen = next((q for q in (folder / QWEN_DIR, face.parent / QWEN_DIR) if q.is_dir()), None)
    files = {}
    for part, (sub, name) in FILES.items():
        path = face / sub / name
        if not path.is_file():
            found = sorted((face / sub).glob("*.safetensors")) if (face / sub).is_dir() else []
            if len(found) != 1:
                raise MissingWeightsError(
                    f"official release {face}: {sub}/{name} is missing; download it with "
                    "`hf download SJTU-DENG-Lab/MirrorPPR-Face --local-dir DIR`")
            path = found[0]
        files[part] = path
    return Release(face=face, files=files, qwen=qwen)


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a bad input file
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None


def _lora_key(key: str) -> str:
    for prefix in LORA_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.replace(".lora_A.default.weight", ".lora_A.weight").replace(
        ".lora_B.default.weight", ".lora_B.weight")


# The release was saved with transformers 4.x ViT names; transformers 5 renamed them (its own
# ``conversion_mapping`` does the same when it loads a 4.x checkpoint).
VIT_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


def _candidates(name: str) -> list[str]:
    renamed = name
    for old, new in VIT_RENAMES:
        renamed = renamed.replace(old, new)
    return [name, renamed, renamed.replace(".encoder.layer.", ".layers.")]


def map_key(part: str, key: str, known: set[str] | None = None) -> str | None:
    """Our name for an official tensor (``None``: dropped as the official loader drops it).
    With ``known`` (our names), the transformers-4 ViT spelling is matched to ours."""
    if part == "mae":
        if key.startswith("decoder."):
            return None  # the MAE pre-training decoder; QwenImageMAEStateDictConverter drops it
        name = ("extractor.mae.model." + key[len("vit."):]) if key.startswith("vit.") \
            else "?" + key
    elif part == "rformer":
        name = "extractor.rformer." + key
    elif part == "connector":
        name = "connector." + key
    else:
        return "lora." + _lora_key(key)
    if known is not None:
        return next((c for c in _candidates(name) if c in known), name)
    return name


def lora_settings(path: Path) -> tuple[int, tuple[str, ...]]:
    """Rank and target modules (suffixes after ``transformer_blocks.N.``) of a LoRA file."""
    ranks, targets = set(), set()
    for key, shape in _header(path).items():
        name = _lora_key(key)
        match = re.fullmatch(r"transformer_blocks\.\d+\.(.+)\.lora_([AB])\.weight", name)
        if not match:
            raise InputError(f"{path}: unexpected tensor {key!r} (not a LoRA of a DiT block's "
                             "linear layer); is this the official lora.safetensors?")
        targets.add(match.group(1))
        if len(shape) != 2:
            raise InputError(f"{path}: tensor {key!r} has shape {list(shape)}, a LoRA matrix "
                             "is 2-D")
        ranks.add(shape[0] if match.group(2) == "A" else shape[1])
    if len(ranks) != 1:
        raise InputError(f"{path}: LoRA ranks {sorted(ranks)} differ between tensors")
    return ranks.pop(), tuple(sorted(targets))


OVERRIDE_FILE = "mirrorppr.json"  # not part of the release: optional config overrides


def release_config(release: Release, base: ModelConfig | None = None) -> ModelConfig:
    """The paper config, with the LoRA rank and targets the release's file holds (α = rank:
    DiffSynth adds B·A unscaled). A ``mirrorppr.json`` in the release folder (not part of the
    release; the tests use it for tiny sizes) replaces the paper preset as the base."""
    if base is None and (release.face / OVERRIDE_FILE).is_file():
        from .config import load_config

        base = load_config(release.face / OVERRIDE_FILE)
    config = copy.deepcopy(base) if base is not None else paper_config()
    config.name = "official"
    rank, targets = lora_settings(release.files["lora"])
    config.lora.rank, config.lora.alpha, config.lora.target_modules = rank, rank, targets
    config.mae.hub_id = ""
    if release.qwen is not None:
        config.dit.hub_id = str(release.qwen)
    return config


def expected_shapes(config: ModelConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """Our tensors per part (``mae``, ``rformer``, ``connector``, ``lora``), on the meta device."""
    from .connector import Connector
    from .dit import add_lora, build_dit, lora_state_dict
    from .extractor import OperationExtractor

    with torch.device("meta"):
        extractor = OperationExtractor(config.mae, config.rformer)
        connector = Connector(config.connector, config.rformer.hidden_size)
    dit = build_dit(config.dit, meta=True)
    add_lora(dit.transformer, config.lora)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {p: {} for p in FILES}
    for k, v in extractor.state_dict().items():
        part = "mae" if k.startswith("mae.") else "rformer"
        shapes[part]["extractor." + k] = tuple(v.shape)
    shapes["connector"] = {"connector." + k: tuple(v.shape)
                           for k, v in connector.state_dict().items()}
    shapes["lora"] = {"lora." + k: tuple(v.shape)
                      for k, v in lora_state_dict(dit.transformer).items()}
    return shapes


def check_release(release: Release, config: ModelConfig) -> dict[str, dict]:
    """Every tensor of every file maps onto one of ours with the same shape, and every one of
    ours is in a file. Returns counts per part; raises :class:`InputError` (one line)."""
    want = expected_shapes(config)
    report = {}
    for part, path in release.files.items():
        got = _header(path)
        mapped, dropped = {}, 0
        known = set(want[part])
        for key, shape in got.items():
            name = map_key(part, key, known)
            if name is None:
                dropped += 1
                continue
            if name not in want[part]:
                raise InputError(f"{path}: unexpected tensor {key!r} (not part of the official "
                                 f"{WHAT[part]}); is this the right file?")
            if shape != want[part][name]:
                raise InputError(f"{path}: tensor {key!r} has shape {list(shape)} but the "
                                 f"official {WHAT[part]} has {list(want[part][name])}")
            mapped[name] = shape
        missing = sorted(set(want[part]) - set(mapped))
        if missing:
            raise InputError(f"{path}: {len(missing)} tensors of the {WHAT[part]} are missing "
                             f"(e.g. {missing[0]!r})")
        report[part] = {"file": str(path), "tensors": len(mapped), "dropped": dropped,
                        "parameters": sum(_numel(s) for s in mapped.values())}
    return report


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_release_state(release: Release, config: ModelConfig) -> dict[str, dict]:
    """Checked, renamed tensors: ``{"mae": {...}, "rformer": {...}, "connector": {...},
    "lora": {...}}`` with keys relative to the module each loads into (``extractor.mae.model``,
    ``extractor.rformer``, ``connector``, the transformer's peft adapter)."""
    from safetensors.torch import load_file

    check_release(release, config)
    want = expected_shapes(config)
    strip = {"mae": "extractor.mae.model.", "rformer": "extractor.rformer.",
             "connector": "connector.", "lora": "lora."}
    state = {}
    for part, path in release.files.items():
        tensors = {}
        known = set(want[part])
        for key, value in load_file(str(path)).items():
            name = map_key(part, key, known)
            if name is not None:
                tensors[name[len(strip[part]):]] = value
        state[part] = tensors
    return state


def convert_release(folder: str | Path, out: str | Path, *, dit: str | None = None) -> dict:
    """Write the release in this project's weights-folder layout (see :mod:`.engine`):
    ``config.json``, ``extractor.safetensors`` (R-Former), ``connector.safetensors``,
    ``lora/pytorch_lora_weights.safetensors`` and ``mae/`` (a transformers ViTMAEModel folder).
    The Qwen-Image-Edit folder is referenced (``dit.hub_id``), not copied."""
    import json

    from safetensors.torch import save_file

    from .dit import LORA_WEIGHT_NAME
    from .extractor import mae_config

    release = find_release(folder)
    config = release_config(release)
    if dit:
        config.dit.hub_id = str(Path(dit).resolve()) if Path(dit).exists() else dit
    elif release.qwen is not None:
        config.dit.hub_id = str(release.qwen.resolve())
    report = check_release(release, config)
    state = load_release_state(release, config)
    out = Path(out)
    (out / "lora").mkdir(parents=True, exist_ok=True)
    (out / "mae").mkdir(parents=True, exist_ok=True)
    save_file({"extractor.rformer." + k: v.contiguous() for k, v in state["rformer"].items()},
              str(out / "extractor.safetensors"))
    save_file({"connector." + k: v.contiguous() for k, v in state["connector"].items()},
              str(out / "connector.safetensors"))
    meta = {"transformer.r": config.lora.rank, "transformer.lora_alpha": config.lora.alpha,
            "transformer.target_modules": list(config.lora.target_modules)}
    save_file({"transformer." + k: v.contiguous() for k, v in state["lora"].items()},
              str(out / "lora" / LORA_WEIGHT_NAME),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    mae_config(config.mae).to_json_file(str(out / "mae" / "config.json"))
    save_file({k: v.contiguous() for k, v in state["mae"].items()},
              str(out / "mae" / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(config.to_json())
    return {"out": str(out), "dit": config.dit.hub_id, "parts": report}
