"""Resumable training checkpoints in safetensors.

``OUT/checkpoints/step-NNNNNNN/`` holds ``trainable.safetensors`` (the parameters that train),
``optimizer.safetensors`` (every optimizer state tensor), ``rng.safetensors`` (torch RNG
states) and ``state.json`` (step, stage, param groups, the resolved config). A checkpoint is
written to a hidden temporary folder and renamed into place, so a killed run never leaves a
half-written one; :func:`latest_checkpoint` only sees complete ones.

Under FSDP (parameters and optimizer state are DTensor shards) :func:`gather_trainable_state`
and :func:`gather_optimizer_state` assemble the same full tensors on every process (collective
calls), so the files have one layout whichever way the run was distributed;
:func:`load_sharded_optimizer` cuts a saved state back into this process's shards.
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


def _full(value):
    """A DTensor's full tensor (an all-gather: every process must call it), else ``value``."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def gather_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """:func:`trainable_state` of a sharded (FSDP2) model: full tensors on the CPU. Collective:
    every process calls it (the parameters are visited in the same order on each)."""
    return {n: _full(p.detach()).cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def gather_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` with every sharded state tensor gathered to its full size
    (CPU). Collective, like :func:`gather_trainable_state`."""
    state = optimizer.state_dict()
    slots = {}
    for index in sorted(state["state"]):
        slots[index] = {k: _full(v).cpu() if torch.is_tensor(v) else v
                        for k, v in sorted(state["state"][index].items())}
    return {"state": slots, "param_groups": state["param_groups"]}


def load_sharded_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint's optimizer state into an optimizer over FSDP2 (DTensor) parameters:
    each full state tensor is cut into this process's shard, as its parameter is (no
    communication: every process reads the same file)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    meta = json.loads((Path(folder) / "state.json").read_text())["optimizer"]
    state = _unflatten_optimizer(load_file(str(Path(folder) / "optimizer.safetensors")), meta)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, slots in state["state"].items():
        param = params[index]
        if not isinstance(param, DTensor):
            continue
        for key, value in slots.items():
            if torch.is_tensor(value) and value.shape == param.shape and key != "step":
                slots[key] = distribute_tensor(value.to(param.to_local().device),
                                               param.device_mesh, param.placements,
                                               src_data_rank=None)
    optimizer.load_state_dict(state)


def _flatten_optimizer(optimizer: torch.optim.Optimizer | dict) -> tuple[dict, dict]:
    state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
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


def save_checkpoint(out: Path, step: int, model: nn.Module | dict,
                    optimizer: torch.optim.Optimizer | dict, extra: dict) -> Path:
    """Write the checkpoint of ``step`` atomically and return its folder. ``model`` and
    ``optimizer`` may be given as their (gathered) state dicts instead."""
    root = Path(out) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:07d}.", suffix=".part"))
    try:
        tensors = model if isinstance(model, dict) else trainable_state(model)
        save_file(tensors, str(tmp / "trainable.safetensors"))
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
