"""``mirrorppr train extractor`` and ``train joint``: the two training stages of the paper.

Both loops run through `accelerate`, so the same code trains on one CPU, one GPU, or many GPUs
and nodes when started with ``accelerate launch`` / ``torchrun``: DDP by default, FSDP2 with
``fsdp`` (``--fsdp``; each DiT block is a sharding unit, the rest one root unit). Mixed
precision (bf16 by default on CUDA), gradient checkpointing and background loader workers are
options. Every random choice of step ``s`` (which quadruplets, which noise
and σ) is a function of ``(seed, s)``; together with the checkpoint's optimizer and RNG state a
resumed run therefore continues exactly as an uninterrupted one would.

Outputs in ``OUT``: ``checkpoints/step-NNNNNNN/`` (see :mod:`.checkpoint`), ``metrics.jsonl``
(one line per step: loss terms, lr, samples/s; the extractor stage also logs
``mse_unchanged``, the batch's MSE of the unchanged query: its baseline), ``config.json``,
``distributed.json`` (how the run was distributed: world size, accelerate's distributed type,
the prepared model's class, the device of every module) and
the final weights (``extractor.safetensors`` for pre-training; ``weights/`` for the joint
stage).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import InputError, OutputError, UsageError
from ..model import quiet_hub_libraries
from ..model.config import ModelConfig
from ..model.connector import Connector
from ..model.decoder import EditDecoder
from ..model.engine import export_weights
from ..model.extractor import OperationExtractor
from ..model.weights import load_mae
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_state
from .data import QuadrupletSource

quiet_hub_libraries()

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
DISTRIBUTED_FILE = "distributed.json"
EXTRACTOR_FILE = "extractor.safetensors"
WEIGHTS_DIR = "weights"


@dataclass
class TrainOptions:
    """What a training run reads and writes; ``data`` has one entry per curriculum stage."""

    data: list[str]
    out: Path
    steps: list[int] | None = None  # per stage; None: the config's steps for one stage
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, none on CPU) | no | bf16 | fp16
    batch_size: int | None = None  # global batch; None: the config's
    micro_batch: int | None = None  # per forward pass (gradient accumulation); None: all
    save_every: int = 0  # 0: only at the end
    resume: bool = False
    force: bool = False
    mae: str | None = None  # folder or hub id; None: the config's hub id ("" = random init)
    dit: str | None = None
    extractor: str | None = None  # joint stage: a pre-training output (folder or file)
    gradient_checkpointing: bool = False
    fsdp: bool = False  # shard with FSDP2 over the processes of a torchrun / accelerate launch
    loader_workers: int = 0  # background processes decoding the shards (0: in this process)
    extra: dict = field(default_factory=dict)


def cosine_lr(step: int, total: int, lr_max: float, lr_min: float, warmup: int = 0) -> float:
    """Linear warm-up, then cosine decay from ``lr_max`` (step ``warmup``) to ``lr_min``."""
    if warmup and step < warmup:
        return lr_max * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress))


# The FSDP2 sharding units: each DiT block (the 20 B parameters), as diffusers declares them
# (``_no_split_modules``); everything else (extractor, connector, VAE, VL stream, the DiT's
# embeddings) is the root unit, gathered for the forward pass (the VAE's ``encode`` is called
# inside it, so it needs no pre-forward hook of its own).
FSDP_UNITS = ["QwenImageTransformerBlock"]


def _fsdp_plugin(model: nn.Module):
    from accelerate.utils import FullyShardedDataParallelPlugin

    units = [name for name in FSDP_UNITS
             if any(type(m).__name__ == name for m in model.modules())]
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
        auto_wrap_policy="transformer_based_wrap" if units else "no_wrap",
        transformer_cls_names_to_wrap=units or None)


def _accelerator(options: TrainOptions, model: nn.Module | None = None):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    cuda = torch.cuda.is_available()
    if options.device == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    cpu = options.device == "cpu" or not cuda
    precision = options.mixed_precision
    if precision == "auto":
        precision = "bf16" if not cpu else "no"
    plugin = _fsdp_plugin(model) if options.fsdp and model is not None else None
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision, fsdp_plugin=plugin)
    state = accelerator.state
    if plugin is not None and state.distributed_type == DistributedType.MULTI_CPU:
        # accelerate (1.15) turns a given FSDP plugin on only for accelerator devices (CUDA,
        # XPU, ...; state.py) and silently falls back to DDP on CPU processes; torch's FSDP2
        # itself shards over gloo on the CPU, so switch it on here (in both of accelerate's
        # shared states: prepare() reads the accelerator's, the collectives PartialState's).
        from accelerate.state import PartialState

        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if state.distributed_type == DistributedType.FSDP:
        if state.fsdp_plugin.fsdp_version != 2:
            raise UsageError("FSDP version 1 is not supported; set fsdp_version: 2 in the "
                             "accelerate config (or use --fsdp)")
    elif plugin is not None:
        raise UsageError("--fsdp shards the model over several processes: start the command "
                         "under torchrun --nproc_per_node N or accelerate launch")
    return accelerator


def _is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _meta_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are on the ``meta`` device (no memory; buffers are
    copied): the plain module that a gathered FSDP state is loaded into for export."""
    import copy

    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _gather_for_export(model: nn.Module, twin: nn.Module | None,
                       needed: Callable[[str], bool]) -> None:
    """Gather the full value of every parameter ``needed`` for export (collective: every
    process calls it) and load them into ``twin`` (the main process's; None elsewhere)."""
    from .checkpoint import _full

    state = {}
    for name, p in model.named_parameters():
        if needed(name):
            value = _full(p.detach()).cpu()
            if twin is not None:
                state[name] = value
    if twin is not None:
        twin.load_state_dict(state, strict=False, assign=True)
        for name, p in twin.named_parameters():
            if needed(name) and p.is_meta:
                raise RuntimeError(f"export: {name} was not gathered")


def _device_key(device: torch.device) -> tuple[str, int]:
    device = torch.device(device)
    return device.type, (device.index or 0) if device.type != "cpu" else 0


def _module_devices(model: nn.Module) -> dict[str, list[str]]:
    """The devices of every parameter and buffer of each top-level module (a DTensor's: its
    local shard's)."""
    from torch.distributed.tensor import DTensor

    found: dict[str, set[str]] = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        local = t.to_local() if isinstance(t, DTensor) else t
        found.setdefault(name.split(".", 1)[0], set()).add(str(local.device))
    return {k: sorted(v) for k, v in sorted(found.items())}


def _report_distribution(accelerator, model: nn.Module, out: Path, loader_workers: int) -> dict:
    """``distributed.json``: how this run is distributed; refuses a module the prepared model
    left on another device than accelerate's."""
    devices = _module_devices(accelerator.unwrap_model(model))
    want = _device_key(accelerator.device)
    stray = {k: v for k, v in devices.items()
             if any(_device_key(torch.device(d)) != want for d in v)}
    if stray:
        raise RuntimeError(f"modules not on {accelerator.device} after accelerate.prepare: "
                           f"{stray}")
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        FSDPModule = ()  # noqa: N806
    info = {"world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type.value),
            "device": str(accelerator.device),
            "prepared_model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "fsdp_module": isinstance(model, FSDPModule),
            "fsdp_units": sum(isinstance(m, FSDPModule) for m in model.modules()),
            "fsdp_version": (accelerator.state.fsdp_plugin.fsdp_version
                             if _is_fsdp(accelerator) else None),
            "module_devices": devices, "loader_workers": loader_workers}
    if accelerator.is_main_process:
        (out / DISTRIBUTED_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def _bf16_run(options: TrainOptions) -> bool:
    """Whether this run computes in bf16 (the mixed-precision setting ``_accelerator`` uses)."""
    if options.mixed_precision == "bf16":
        return True
    if options.mixed_precision != "auto":
        return False
    return torch.cuda.is_available() and options.device != "cpu"


def _stage_plan(options: TrainOptions, default_steps: int) -> list[int]:
    steps = options.steps or [default_steps]
    if len(steps) == 1 and len(options.data) > 1:
        steps = steps * len(options.data)
    if len(steps) != len(options.data):
        raise UsageError(f"give one --steps per --data stage ({len(options.data)}), "
                         f"not {len(steps)}")
    if any(s <= 0 for s in steps):
        raise UsageError("--steps must be positive")
    return steps


def _prepare_out(options: TrainOptions, config: ModelConfig) -> Path | None:
    """Create ``out``; return the checkpoint to resume from (or None)."""
    out = Path(options.out)
    found = latest_checkpoint(out)
    if options.resume:
        if found is None:
            raise InputError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        saved = json.loads((out / CONFIG_FILE).read_text())
        if saved != json.loads(config.to_json()):
            raise UsageError(f"--resume: the config differs from the one {out} was started "
                             "with; resume with the same --config")
        return found
    if found is not None or (out / METRICS_FILE).exists():
        if not options.force:
            raise OutputError(f"{out} already holds a training run; add --resume to continue "
                              "it or --force to start over")
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / METRICS_FILE).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(config.to_json())
    return None


def _trim_metrics(out: Path, step: int) -> None:
    """Drop log lines of steps after ``step`` (written after the checkpoint we resume from)."""
    path = out / METRICS_FILE
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def _sample_generators(seed: int, step: int, indices: list[int]) -> list[torch.Generator]:
    """One generator per sample of the step, seeded by (seed, step, sample index): the noise
    of a sample does not depend on which process (or micro-batch) takes it."""
    gens = []
    for index in indices:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(((seed * 1_000_003 + step) * 1009 + index) % (2 ** 63))
        gens.append(gen)
    return gens


class PretrainModel(nn.Module):
    """Extractor + decoder: exemplar pair and query → predicted retouched query."""

    def __init__(self, config: ModelConfig, mae=None):
        super().__init__()
        self.extractor = OperationExtractor(config.mae, config.rformer, mae)
        self.decoder = EditDecoder(config.decoder, config.rformer)

    def forward(self, before, after, query):
        return self.decoder(query, self.extractor(before, after))


class JointModel(nn.Module):
    """Extractor (frozen MAE) + connector + DiT with LoRA (frozen base): flow-matching loss.

    Every module the step uses is a submodule (the frozen VAE and Qwen2.5-VL stream too), so
    ``accelerate.prepare`` / ``.to`` moves them with the rest; frozen tensors are not in the
    checkpoint (it holds the trainable ones only)."""

    def __init__(self, config: ModelConfig, dit, mae=None, vl=None):
        super().__init__()
        self.extractor = OperationExtractor(config.mae, config.rformer, mae)
        self.connector = Connector(config.connector, config.rformer.hidden_size)
        self.transformer = dit.transformer
        self.vae = dit.vae
        self.vl = vl
        self._dit = dit  # the same transformer / VAE objects, plus the scheduler

    def condition(self, before, after, query=None):
        """The DiT conditioning ``(cond, mask)``: the query's VL stream (when there is one)
        followed by the exemplar pair's operation tokens (paper §3.3)."""
        from ..model.vl import join_condition

        ops, ops_mask = self.connector(self.extractor(before, after))
        if self.vl is None or query is None:
            return ops, ops_mask
        vl, vl_mask = self.vl(query)
        return join_condition(vl, vl_mask, ops, ops_mask)

    def forward(self, before, after, query, target, generator):
        from ..model.dit import flow_matching_loss

        cond, mask = self.condition(before, after, query)
        return flow_matching_loss(self._dit, cond, mask, query, target, generator=generator)


def _mae_spec(options: TrainOptions, config: ModelConfig) -> str | None:
    spec = options.mae if options.mae is not None else config.mae.hub_id
    if (not spec or spec == "none") and config.mae.frozen and config.name != "tiny":
        raise UsageError("a frozen MAE needs pretrained weights: pass --mae DIR|HUB_ID, or set "
                         "mae.frozen = false in the config to train a substitute from scratch")
    return spec


def _plan(options: TrainOptions, stage_steps: list[int], batch_sizes: Callable[[int], int],
          start: int, world: int, rank: int) -> list[tuple[int, int, int, list[list[int]]]]:
    """``(step, stage, global batch, micro-batches of this process's sample indices)`` for
    every step from ``start``. Which samples a step takes depends on the step alone, so the
    loader can read ahead."""
    plan = []
    total = sum(stage_steps)
    for step in range(start, total):
        stage = next(k for k in range(len(stage_steps)) if step < sum(stage_steps[: k + 1]))
        local = step - sum(stage_steps[:stage])
        batch = options.batch_size or batch_sizes(stage)
        if batch % world:
            raise UsageError(f"batch size {batch} is not divisible by {world} processes")
        indices = list(range(local * batch, (local + 1) * batch))[rank::world]
        micro = options.micro_batch or len(indices)
        plan.append((step, stage, batch,
                     [indices[i:i + micro] for i in range(0, len(indices), micro)]))
    return plan


def _run(options: TrainOptions, config: ModelConfig, model: nn.Module, *, stage_name: str,
         lr_at: Callable[[int, int], float], weight_decay: float, adam_eps: float,
         default_steps: int, batch_sizes: Callable[[int], int], side: int,
         loss_fn: Callable[[nn.Module, dict, torch.Generator], dict],
         on_step: Callable[[int, int, dict], None] | None,
         export_needs: Callable[[str], bool] = lambda name: True) -> dict:
    """The loop shared by both stages; ``loss_fn`` returns ``{"loss": tensor, ...terms}``.
    The returned ``model`` is a plain module with full weights on the main process (under FSDP
    a copy with the parameters ``export_needs`` gathered into it; None on the other
    processes)."""
    from .checkpoint import gather_optimizer_state, gather_trainable_state, load_sharded_optimizer
    from .data import plan_loader

    if options.loader_workers < 0:
        raise UsageError("--loader-workers must be 0 or more")
    accelerator = _accelerator(options, model)
    fsdp = _is_fsdp(accelerator)
    stage_steps = _stage_plan(options, default_steps)
    total = sum(stage_steps)
    sources = [QuadrupletSource(spec, side, options.seed + 7919 * k)
               for k, spec in enumerate(options.data)]
    resume_from = _prepare_out(options, config)
    out = Path(options.out)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr_at(0, total), weight_decay=weight_decay,
                                  eps=adam_eps)
    start = 0
    if resume_from is not None:
        # Under FSDP the optimizer state is loaded after sharding (below), cut to the shards.
        state = load_checkpoint(resume_from, model, None if fsdp else optimizer)
        start = state["step"]
        _trim_metrics(out, start)
    twin = _meta_twin(model) if fsdp and accelerator.is_main_process else None
    model, optimizer = accelerator.prepare(model, optimizer)
    if fsdp and resume_from is not None:
        load_sharded_optimizer(resume_from, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    _report_distribution(accelerator, model, out, options.loader_workers)
    plan = _plan(options, stage_steps, batch_sizes, start, world, rank)
    loader = plan_loader(sources, [(stage, tuple(chunk)) for _, stage, _, chunks in plan
                                   for chunk in chunks],
                         workers=options.loader_workers, seed=options.seed, rank=rank,
                         pin_memory=accelerator.device.type == "cuda")
    batches = iter(loader)
    log = open(out / METRICS_FILE, "a") if accelerator.is_main_process else None
    last: dict = {}
    try:
        for step, stage, batch, chunks in plan:
            n = sum(len(chunk) for chunk in chunks)
            lr = lr_at(step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            tick = time.perf_counter()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            terms: dict[str, float] = {}
            for chunk in chunks:
                gens = _sample_generators(options.seed, step, chunk)
                tensors = {k: v.to(accelerator.device) for k, v in next(batches).items()}
                with accelerator.autocast():
                    result = loss_fn(model, tensors, gens)
                weight = len(chunk) / n
                accelerator.backward(result["loss"] * weight)
                for k, v in result.items():
                    terms[k] = terms.get(k, 0.0) + float(v.detach()) * weight
            optimizer.step()
            if world > 1:  # log the global batch's mean, not this process's share
                keys = sorted(terms)
                values = accelerator.reduce(
                    torch.tensor([terms[k] for k in keys], device=accelerator.device),
                    reduction="mean")
                terms = dict(zip(keys, values.tolist(), strict=True))
            elapsed = time.perf_counter() - tick
            last = {"step": step + 1, "stage": stage, "batch": batch, "lr": lr, "world": world,
                    **{k: round(v, 7) for k, v in terms.items()},
                    "samples_per_s": round(batch / elapsed, 3)}
            if log is not None:
                log.write(json.dumps(last, sort_keys=True) + "\n")
                log.flush()
            if on_step is not None and accelerator.is_main_process:
                on_step(step + 1, total, last)
            done = step + 1
            if done == total or (options.save_every and done % options.save_every == 0):
                extra = {"stage": stage_name, "config": config.to_dict(), "seed": options.seed,
                         "data": options.data}
                if fsdp:  # every process takes part in gathering the shards
                    tensors = gather_trainable_state(model)
                    opt_state = gather_optimizer_state(optimizer)
                    if accelerator.is_main_process:
                        save_checkpoint(out, done, tensors, opt_state, extra)
                elif accelerator.is_main_process:
                    save_checkpoint(out, done, accelerator.unwrap_model(model), optimizer, extra)
            accelerator.wait_for_everyone()
    finally:
        if log is not None:
            log.close()
        del batches  # stops the loader's workers
    if fsdp:
        _gather_for_export(model, twin, export_needs)
        plain = twin
    else:
        plain = accelerator.unwrap_model(model) if accelerator.is_main_process else None
    return {"steps": total, "resumed_from": start, "last": last, "world_size": world,
            "model": plain, "is_main_process": accelerator.is_main_process}


def train_extractor(config: ModelConfig, options: TrainOptions,
                    on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Pre-train R-Former (+ decoder) with MSE + λ·LPIPS on the reconstruction proxy task."""
    from ..metrics.perceptual import lpips_model

    torch.manual_seed(options.seed)
    model = PretrainModel(config, load_mae(_mae_spec(options, config), config.mae))
    if options.gradient_checkpointing:
        model.extractor.rformer.gradient_checkpointing = True
        model.decoder.gradient_checkpointing = True
    tcfg = config.extractor_training
    lpips_net = lpips_model(tcfg.lpips_net) if tcfg.lpips_weight else None

    def loss_fn(model, batch, _gen):
        pred = model(batch["before"], batch["after"], batch["query"])
        mse = F.mse_loss(pred.float(), batch["target"])
        # The baseline in the same batch: the unchanged query (a model that copies scores it).
        baseline = {"mse_unchanged": F.mse_loss(batch["query"].float(), batch["target"])}
        if lpips_net is None:
            return {"loss": mse, "mse": mse, **baseline}
        net = lpips_net.to(pred.device)
        perceptual = net(pred.float() * 2 - 1, batch["target"] * 2 - 1).mean()
        return {"loss": mse + tcfg.lpips_weight * perceptual, "mse": mse, "lpips": perceptual,
                **baseline}

    result = _run(
        options, config, model, stage_name="extractor",
        lr_at=lambda s, total: cosine_lr(s, total, tcfg.lr_max, tcfg.lr_min, tcfg.warmup_steps),
        weight_decay=tcfg.weight_decay, adam_eps=tcfg.adam_eps, default_steps=tcfg.steps,
        batch_sizes=lambda k: tcfg.batch_size if k == 0 else tcfg.batch_size_professional,
        side=config.decoder.image_size, loss_fn=loss_fn, on_step=on_step,
    )
    model = result.pop("model")
    out = Path(options.out)
    if result.pop("is_main_process"):
        save_file(trainable_state(model), str(out / EXTRACTOR_FILE))
    result["weights"] = str(out / EXTRACTOR_FILE)
    return result


def _load_extractor_init(model: JointModel, spec: str) -> None:
    path = Path(spec)
    file = path / EXTRACTOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"--extractor: {file} not found; pass the output folder of "
                         "`mirrorppr train extractor` or its extractor.safetensors")
    state = {k.removeprefix("extractor."): v for k, v in load_file(str(file)).items()
             if k.startswith("extractor.")}
    missing, _ = model.extractor.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("mae.")]
    if missing:
        raise InputError(f"--extractor {file} does not fit the config (missing {missing[:3]})")


def _export_needs(config: ModelConfig, name: str) -> bool:
    """Whether ``export_weights`` writes the parameter ``name`` of a :class:`JointModel`: the
    trained ones always; the frozen DiT, VAE and MAE only when they come from no hub id (so
    the weights folder must carry them); the VL stream never."""
    if name.startswith("vl."):
        return False
    if name.startswith(("transformer.", "vae.")) and "lora_" not in name:
        return not config.dit.hub_id
    if name.startswith("extractor.mae."):
        return not (config.mae.frozen and config.mae.hub_id)
    return True


def train_joint(config: ModelConfig, options: TrainOptions,
                on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train R-Former, connector and LoRA end to end with the flow-matching loss."""
    from ..model.dit import add_lora, build_dit, freeze_dead_lora
    from ..model.vl import build_vl_stream

    torch.manual_seed(options.seed)
    # The frozen bases in the dtype they compute in under bf16 mixed precision, from the first
    # allocation (built on the meta device and filled shard by shard): a float32 copy of the
    # 20 B DiT would need ~82 GB.
    base_dtype = torch.bfloat16 if _bf16_run(options) else torch.float32
    dit = build_dit(config.dit, weights=options.dit if options.dit is not None
                    else (config.dit.hub_id or None), dtype=base_dtype)
    add_lora(dit.transformer, config.lora)
    freeze_dead_lora(dit.transformer)
    if options.gradient_checkpointing:
        dit.transformer.enable_gradient_checkpointing()
    vl = build_vl_stream(config.vl, dit.root, dtype=base_dtype)
    model = JointModel(config, dit, load_mae(_mae_spec(options, config), config.mae), vl)
    if options.extractor:
        _load_extractor_init(model, options.extractor)
    if options.gradient_checkpointing:
        model.extractor.rformer.gradient_checkpointing = True
    tcfg = config.joint_training
    side = max(16, int(math.sqrt(tcfg.image_area)) // 16 * 16)

    def loss_fn(model, batch, gens):
        loss = model(batch["before"], batch["after"], batch["query"], batch["target"], gens)
        return {"loss": loss}

    result = _run(
        options, config, model, stage_name="joint", lr_at=lambda s, total: tcfg.lr,
        weight_decay=tcfg.weight_decay, adam_eps=tcfg.adam_eps, default_steps=tcfg.steps,
        batch_sizes=lambda k: tcfg.batch_size, side=side, loss_fn=loss_fn, on_step=on_step,
        export_needs=lambda name: _export_needs(config, name),
    )
    model = result.pop("model")
    folder = Path(options.out) / WEIGHTS_DIR
    if result.pop("is_main_process"):  # ``model._dit``: under FSDP the gathered copy's DiT
        export_weights(folder, config, model.extractor, model.connector, model._dit)
    result["weights"] = str(folder)
    return result
