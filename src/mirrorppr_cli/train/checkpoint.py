"""Resumable training checkpoints in safetensors.

``OUT/checkpoints/step-NNNNNNN/`` holds ``trainable.safetensors`` (the parameters that train),
``optimizer.safetensors`` (every optimizer state tensor), ``rng.safetensors`` (torch RNG
states) and ``state.json`` (step, stage, param groups, the resolved config). A checkpoint is
written to a hidden temporary folder and renamed into place, so a killed run never leaves a
half-written one; :func:`latest_checkpoint` only sees complete ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d{7})$")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of ``model`` that require grad, by name (detached, contiguous)."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``'s trainable parameters; every one must be present."""
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = wanted - state.keys(), state.keys() - params.keys()
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            name = f"{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    slots: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        slots.setdefault(int(index), {})[key] = value
    return {"state": slots, "param_groups": meta["param_groups"]}


def _rng_states() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = s
    return states


def _restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict) -> Path:
    """Write the checkpoint of ``step`` atomically and return its folder."""
    root = Path(out) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:07d}.", suffix=".part"))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_states(), str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=1, sort_keys=True)
            + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``out``, if any."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))
             and (p / "state.json").is_file()]
    return max(steps)[1] if steps else None


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> dict:
    """Restore model, optimizer and RNG from ``folder``; return its ``state.json``."""
    state = json.loads((folder / "state.json").read_text())
    load_trainable_state(model, load_file(str(folder / "trainable.safetensors")))
    if optimizer is not None:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    _restore_rng(load_file(str(folder / "rng.safetensors")))
    return state
