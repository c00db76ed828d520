"""``mirrorppr build-dataset``: training subsets and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import MirrorError, UsageError
from ..extras import require_extra
from .console import (
    fail,
    out,
    plain,
    progress_bar,
)


def build_dataset_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.", metavar="DIR")],
    faces: Annotated[
        Path | None,
        typer.Option("--faces", help="Folder of source portraits (training subsets, simface).", metavar="DIR"),
    ] = None,
    subset: Annotated[
        str,
        typer.Option(
            "--subset",
            help="Training subset to build: simulated (8 face ops, near-frontal portraits) or "
            "professional (1-7 of the 27 face and body ops, half- and full-body portraits).",
         metavar="NAME", ),
    ] = "simulated",
    benchmark: Annotated[
        str | None,
        typer.Option(
            "--benchmark",
            help="Build a benchmark instead: simface (cross-identity, from --faces) or selfaug "
            "(real before/after pairs from --pairs DIR, self-augmented queries).",
         metavar="NAME", ),
    ] = None,
    pairs: Annotated[
        str,
        typer.Option(
            "--pairs",
            help="Training subsets: retouched pairs per portrait (a number). With --benchmark "
            "selfaug: a folder of before/after pairs, named X-example-source/X-example-retouched, "
            "X-before/X-after or X_source/X_retouched (any image extension), or before/ and "
            "after/ subfolders with equal file names, or a folder with an official dataset.json.",
         metavar="DIR", ),
    ] = "1",
    generator: Annotated[
        str,
        typer.Option(
            "--generator",
            help="--benchmark simface: catalog (the project's warp, strengths ±30-100) or "
            "official (the official LLW generator's warp and blending, strengths ±100).",
         metavar="NAME", ),
    ] = "catalog",
    augment: Annotated[
        int, typer.Option("--augment", help="Self-augmented query pairs per pair.", min=0, metavar="N")
    ] = 4,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Images have the area of SIZE² (sides ×16; default 1024). "
                     "selfaug: outputs of at most SIZE² (default 2048: 4 MP).", min=64, metavar="PX"),
    ] = None,
    combos: Annotated[int, typer.Option("--combos", help="Benchmark items.", min=1, metavar="N")] = 100,
    max_ops: Annotated[
        int,
        typer.Option("--max-ops", help="Simulated subset and benchmark: 1 to MAX_OPS operations "
                     "per pair (official: 8).", min=1, max=8, metavar="N"),
    ] = 8,
    image_format: Annotated[
        str | None,
        typer.Option("--format", help="png or jpg (default png; selfaug: jpg, quality 85-95).", metavar="png|jpg"),
    ] = None,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Portraits per shard.", min=1, metavar="N")
    ] = 8,
    workers: Annotated[int, typer.Option("--workers", help="Local processes.", min=1, metavar="N")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="local or ray.", metavar="local|ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster address (default: local).", metavar="ADDRESS")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Makes every random choice.", metavar="N")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Start again in an --out that holds another build.", metavar="")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.", metavar="")] = False,
) -> None:
    """Build a training subset (simulated or professional; sharded, resumable) or a
    benchmark: SimFace-style (cross-identity) or selfaug (real pairs, self-augmented)."""
    from ..data import build as B
    from ..data.simface import build_simface

    try:
        if image_format is not None and image_format not in ("png", "jpg"):
            raise UsageError(f"--format must be png or jpg, not {image_format!r}")
        if engine not in ("local", "ray"):
            raise UsageError(f"--engine must be local or ray, not {engine!r}")
        if engine == "ray" and benchmark is None:  # before anything is written to --out
            require_extra("ray", "--engine ray")
        if benchmark is not None and benchmark not in ("simface", "selfaug"):
            raise UsageError(f"--benchmark must be simface or selfaug, not {benchmark!r}")
        if generator not in ("catalog", "official"):
            raise UsageError(f"--generator must be catalog or official, not {generator!r}")
        if generator != "catalog" and benchmark != "simface":
            raise UsageError("--generator applies to --benchmark simface only")
        if benchmark == "selfaug":
            if faces is not None:
                raise UsageError("--benchmark selfaug reads --pairs DIR, not --faces")
            if not Path(pairs).is_dir():
                raise UsageError(f"--pairs {pairs}: not a folder; --benchmark selfaug needs "
                                 "--pairs DIR, a folder of before/after pairs")
        else:
            try:
                pair_count = int(pairs)
            except ValueError:
                raise UsageError(
                    f"--pairs {pairs!r}: expected a number of pairs per portrait (a folder of "
                    "before/after pairs goes with --benchmark selfaug)") from None
            if pair_count < 1:
                raise UsageError(f"--pairs must be at least 1, not {pair_count}")
            if faces is None:
                raise UsageError("--faces DIR is required (a folder of source portraits)")
            if not faces.is_dir():
                raise UsageError(f"--faces {faces}: not a folder")
        progress = progress_bar(disable=False)
        if benchmark == "selfaug":
            from ..data.selfaug import build_selfaug

            with progress:
                task = progress.add_task("benchmark items", total=combos)
                summary = build_selfaug(
                    Path(pairs), out_dir, combos=combos, seed=seed,
                    image_format=image_format or "jpg", max_area=(size or 2048) ** 2,
                    force=force, on_item=lambda _: progress.advance(task),
                )
        elif benchmark is not None:
            with progress:
                task = progress.add_task("benchmark items", total=combos)
                summary = build_simface(
                    faces, out_dir, combos=combos, seed=seed, side=size or 1024, force=force,
                    on_item=lambda _: progress.advance(task), max_ops=max_ops,
                    generator=generator,
                )
        else:
            if subset not in B.SUBSETS:
                raise UsageError(
                    f"--subset must be one of {', '.join(B.SUBSETS)}, not {subset!r}"
                )
            plan = B.make_plan(
                faces, subset=subset, seed=seed, pairs=pair_count, augmentations=augment,
                area=(size or 1024) ** 2, image_format=image_format or "png",
                shard_size=shard_size,
                max_ops=max_ops,
            )
            todo = B.prepare_output(out_dir, plan, force=force)
            with progress:
                task = progress.add_task("shards", total=plan.shard_count,
                                         completed=plan.shard_count - len(todo))
                advance = lambda _: progress.advance(task)  # noqa: E731
                if engine == "ray":
                    B.run_ray(plan, out_dir, todo, advance, address=ray_address,
                              num_cpus=None if ray_address else workers)
                else:
                    B.run_local(plan, out_dir, todo, workers, advance)
            summary = B.finalize(plan, out_dir)
    except MirrorError as error:
        raise fail(error) from None
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    if benchmark is not None:
        source = (f"{summary['pairs']} real pairs" if benchmark == "selfaug"
                  else f"{summary['identities']} portraits")
        splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        message = (f"{summary['items']} items ({splits}) from {source} → "
                   f"{out_dir / 'dataset.json'}")
        reasons: dict[str, int] = {}
        for why in summary["skipped"].values():
            why = why.split(":")[0]
            reasons[why] = reasons.get(why, 0) + 1
    else:
        message = (f"{summary['pairs']} pairs, {summary['quadruplets']} quadruplets from "
                   f"{summary['used']} of {summary['sources']} portraits → {out_dir}")
        if "ops_per_pair" in summary:
            counts = ", ".join(f"{n}: {c}" for n, c in summary["ops_per_pair"].items())
            message += f"\n{subset} subset; pairs by operation count: {counts or 'none'}"
            if summary["ops_not_visible"]:
                message += (f"; {summary['ops_not_visible']} sampled body operation(s) "
                            "not visible, left out")
        reasons = dict(summary["skipped"])
        if summary["failed_sources"]:
            reasons["unreadable"] = len(summary["failed_sources"])
    out.print(plain(message), highlight=False, soft_wrap=True)
    if reasons:
        out.print(plain("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))),
                  highlight=False)
