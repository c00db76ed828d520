"""``mirrorppr train extractor|joint``: parse options, run a training loop, print a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MirrorError, UsageError
from ..extras import extra_imports, require_extra

train_app = typer.Typer(
    help="Train the neural engine: `extractor` pre-training, then `joint` LoRA fine-tuning.",
    no_args_is_help=True,
)

DataOpt = Annotated[list[str], typer.Option(
    "--data", help="Shards (a build-dataset folder, .tar or glob); repeat for curriculum stages "
    "(simulated first, then professional).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, metrics, weights.")]
ConfigOpt = Annotated[str, typer.Option(
    "--config", help="Preset (paper, tiny) or a .json/.toml file of overrides.")]
StepsOpt = Annotated[list[int] | None, typer.Option(
    "--steps", help="Optimizer steps (one per --data stage; default: the config's).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Makes every random choice.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--mixed-precision", help="auto (bf16 on CUDA), no, bf16 or fp16.")]
BatchOpt = Annotated[int | None, typer.Option(
    "--batch-size", help="Global batch (default: the config's).", min=1)]
MicroOpt = Annotated[int | None, typer.Option(
    "--micro-batch", help="Samples per forward pass; the rest is gradient accumulation.", min=1)]
SaveOpt = Annotated[int, typer.Option(
    "--save-every", help="Checkpoint every N steps (and always at the end).", min=0)]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Start over in an --out that holds a run.")]
MaeOpt = Annotated[str | None, typer.Option(
    "--mae", help="MAE weights: folder or hub id (cache only); 'none' = random init.")]
CkptOpt = Annotated[bool, typer.Option(
    "--gradient-checkpointing", help="Recompute activations in backward to save memory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
WorkersOpt = Annotated[int, typer.Option(
    "--loader-workers", min=0,
    help="Background processes that decode the shards, per training process (0: decode in "
    "the training process). The batches are the same bytes either way.")]
FsdpOpt = Annotated[bool, typer.Option(
    "--fsdp", help="Shard the model with FSDP2 (through accelerate) over the processes of a "
    "torchrun / accelerate launch: each DiT block is one unit. Default: DDP.")]


def _options(kind: str, **kwargs):
    """The loop's options; without the neural extra, its one-line error (exit 5)."""
    from .console import fail

    try:
        with extra_imports("neural", f"mirrorppr train {kind}"):
            require_extra("neural", f"mirrorppr train {kind}")
            from ..train.loops import TrainOptions
    except MirrorError as error:
        raise fail(error) from None
    steps = kwargs.pop("steps") or None
    return TrainOptions(steps=steps, **kwargs)


def _execute(kind: str, config_spec: str, options, as_json: bool) -> None:
    from ..model.config import ConfigError, load_config
    from .console import fail, out, plain, progress_bar

    what = f"mirrorppr train {kind}"
    try:
        try:
            config = load_config(config_spec)
        except ConfigError as exc:
            raise UsageError(str(exc)) from exc
        with extra_imports("neural", what):
            from ..train import loops
        run = loops.train_extractor if kind == "extractor" else loops.train_joint
        with extra_imports("neural", what), progress_bar(disable=False) as progress:
            task = progress.add_task(f"train {kind}", total=None)

            def on_step(step: int, total: int, record: dict) -> None:
                loss = record.get("loss", float("nan"))
                progress.update(task, completed=step, total=total,
                                description=f"train {kind} loss {loss:.4g}")

            result = run(config, options, on_step=on_step)
    except MirrorError as error:
        raise fail(error) from None
    summary = {"stage": kind, "config": config.name, "out": str(options.out),
               "steps": result["steps"], "resumed_from": result["resumed_from"],
               "last": result["last"], "weights": result["weights"]}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    last = result["last"]
    terms = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "mse", "lpips") if k in last)
    out.print(f"{kind}: {result['steps']} steps ({terms}) → {plain(result['weights'])}",
              highlight=False, soft_wrap=True)


@train_app.command("extractor")
def train_extractor_command(
    data: DataOpt, out_dir: OutOpt, config: ConfigOpt = "paper", steps: StepsOpt = None,
    seed: SeedOpt = 0, device: DeviceOpt = "auto", mixed_precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = None, micro_batch: MicroOpt = None, save_every: SaveOpt = 0,
    resume: ResumeOpt = False, force: ForceOpt = False, mae: MaeOpt = None,
    gradient_checkpointing: CkptOpt = False, loader_workers: WorkersOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Pre-train the operation extractor (R-Former + decoder; MSE + λ·LPIPS)."""
    options = _options("extractor", data=data, out=out_dir, steps=steps, seed=seed,
                       device=device, mixed_precision=mixed_precision, batch_size=batch_size,
                       micro_batch=micro_batch, save_every=save_every, resume=resume,
                       force=force, mae=mae, gradient_checkpointing=gradient_checkpointing,
                       loader_workers=loader_workers)
    _execute("extractor", config, options, as_json)


@train_app.command("joint")
def train_joint_command(
    data: DataOpt, out_dir: OutOpt, config: ConfigOpt = "paper", steps: StepsOpt = None,
    seed: SeedOpt = 0, device: DeviceOpt = "auto", mixed_precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = None, micro_batch: MicroOpt = None, save_every: SaveOpt = 0,
    resume: ResumeOpt = False, force: ForceOpt = False, mae: MaeOpt = None,
    dit: Annotated[str | None, typer.Option(
        "--dit", help="Qwen-Image-Edit weights: folder or hub id (cache only).", metavar="DIR|ID")] = None,
    extractor: Annotated[str | None, typer.Option(
        "--extractor", help="Pre-trained extractor: a `train extractor` --out folder.", metavar="DIR")] = None,
    gradient_checkpointing: CkptOpt = False, loader_workers: WorkersOpt = 0,
    fsdp: FsdpOpt = False, as_json: JsonOpt = False,
) -> None:
    """Fine-tune R-Former, connector and DiT LoRA end to end (flow matching)."""
    options = _options("joint", data=data, out=out_dir, steps=steps, seed=seed,
                       device=device, mixed_precision=mixed_precision, batch_size=batch_size,
                       micro_batch=micro_batch, save_every=save_every, resume=resume,
                       force=force, mae=mae, dit=dit, extractor=extractor,
                       gradient_checkpointing=gradient_checkpointing,
                       loader_workers=loader_workers, fsdp=fsdp)
    _execute("joint", config, options, as_json)


@train_app.command("show-config")
def show_config_command(
    config: Annotated[str, typer.Argument(help="Preset (paper, tiny) or a config file.", metavar="PRESET")] = "paper",
) -> None:
    """Print a resolved config as JSON (a starting point for a --config file)."""
    from ..model.config import ConfigError, load_config
    from .console import fail

    try:
        print(load_config(config).to_json(), end="")
    except ConfigError as exc:
        raise fail(UsageError(str(exc))) from None
