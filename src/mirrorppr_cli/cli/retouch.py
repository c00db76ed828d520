"""``mirrorppr retouch``, ``apply`` and ``explain``: the verbs that edit portraits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..demo import demo_portrait, demo_retouch_inputs
from ..errors import MirrorError, UsageError
from ..result import Result
from .batches import remove_stale_temporaries, review_folder, run_file_batch
from .console import (
    VerboseOption,
    err,
    fail,
    is_verbose,
    out,
    plain,
    set_verbose,
    stage_line,
    status_printer,
)


def apply_command(
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Image file(s), folder(s) or glob pattern(s).", show_default=False, metavar="IMAGE"),
    ] = None,
    op: Annotated[
        list[str] | None,
        typer.Option("--op", help="NAME=STRENGTH, repeatable (see `mirrorppr ops`).", metavar="NAME=STRENGTH"),
    ] = None,
    ops_file: Annotated[Path | None, typer.Option(
        "--ops-file", help="Operations saved by `mirrorppr explain --ex BEFORE AFTER --json` "
        "(added to any --op).", metavar="FILE")] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "-o", "--out", help="Output file (one input; its suffix names the format) or "
            "folder (several inputs, or a name ending with /)."
        , metavar="FILE|DIR"),
    ] = None,
    face: Annotated[
        int | None,
        typer.Option("--face", help="Which face to edit: 0 = largest (default), 1 = next, …", metavar="N"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.", metavar="")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave an input whose output exists (resume a batch).", metavar="")] = False,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="Output format (jpeg, png, tiff, webp); default: input's.", metavar="FORMAT"),
    ] = None,
    suffix: Annotated[
        str, typer.Option("--suffix", help="Added to the input's name to name outputs.", metavar="TEXT")
    ] = "_retouched",
    method: Annotated[
        str | None, typer.Option("--method", help="warp backend: fast (default) or exact "
                                 "warp evaluation.", metavar="fast|exact")
    ] = None,
    backend_name: Annotated[str, typer.Option("--backend", help="Backend to use.", metavar="NAME")] = "warp",
    max_pixels: Annotated[
        int | None,
        typer.Option("--max-pixels", help="Refuse larger images (decompression-bomb guard).", metavar="PIXELS"),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Use the built-in demo portrait as input.", metavar="")
    ] = False,
    export: Annotated[str | None, typer.Option(
        "--export", help="Also write the edit beside each output: stmap (float EXR), displace "
        "(16-bit X/Y maps + JSON), npy (inverse map), layers (TIFF pages: input, retouched, "
        "changed mask).", metavar="KIND[,KIND]")] = None,
    review: Annotated[Path | None, typer.Option(
        "--review", help="Also write a review page of the batch (index.html: before/after, "
        "motion, flags) in this folder.", metavar="DIR")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Processes for a batch, this one included (default: every core "
        "for 8 files or more, else this process alone).", metavar="N", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.", metavar="")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Retouch portraits with named operations, e.g. --op eye_resize=40 --op nose_alar=-30."""
    set_verbose(verbose)
    from ..backend import load_backend, require
    from ..batch import ApplyWork, worker_count
    from ..inputs import check_unique_outputs, expand_inputs, is_batch, output_path_for
    from ..ops import parse_op

    try:
        if demo:
            if images:
                raise UsageError("--demo takes no IMAGE arguments")
            requests = [parse_op(text) for text in (op or ["eye_resize=40"])]
            sources = [demo_portrait(Path(os.environ.get("TMPDIR", "/tmp")) / "mirrorppr-demo")]
            batch = False
            output = output or Path("astronaut_retouched.png")
        else:
            if not images:
                raise UsageError("give at least one IMAGE (file, folder or glob), or --demo")
            if not op and ops_file is None:
                raise UsageError("give at least one --op NAME=STRENGTH (see `mirrorppr ops`) or "
                                 "--ops-file FILE")
            requests = [parse_op(text) for text in op or []]
            if ops_file is not None:
                from ..selection import read_ops_file

                requests += read_ops_file(ops_file)
            batch = len(images) > 1 or any(is_batch(spec) for spec in images)
            # Overlapping specs (a.jpg and *.jpg) name a file once.
            sources = list(dict.fromkeys(p for spec in images for p in expand_inputs(spec)))
        if force and skip_existing:
            raise UsageError("--force and --skip-existing contradict each other; choose one")
        from ..exports import parse_kinds

        exports = parse_kinds(export)
        backend = load_backend(backend_name, method=method)
        require(backend, "ops")
        if exports:
            require(backend, "export", "--export")
        if workers is not None and workers > 1:
            require(backend, "parallel", "--workers")
        plan = [
            (src, output_path_for(src, output, batch=batch, suffix=suffix, format=output_format))
            for src in sources
        ]
        check_unique_outputs(plan)
        review_dir = review_folder(review, force)
    except MirrorError as error:
        raise fail(error) from None

    removed = remove_stale_temporaries(plan, as_json=as_json)
    run_file_batch(
        plan,
        ApplyWork(tuple(requests), backend, face_index=face, force=force,
                  output_format=output_format, max_pixels=max_pixels, exports=exports,
                  review_dir=review_dir.resolve() if review_dir else None),
        Result,
        as_json=as_json,
        batch=batch,
        skip_existing=skip_existing,
        summary_extra={"removed_temporaries": removed} if removed else None,
        workers=(worker_count(workers, len(plan)) if "parallel" in backend.capabilities
                 else 1),
        review_dir=review_dir,
    )

def retouch_command(
    more_queries: Annotated[list[str] | None, typer.Argument(
        metavar="[QUERY]...", show_default=False,
        help="More queries after --query (files, folders, globs): --query a.jpg b.jpg, or a "
        "glob the shell expanded.")] = None,
    exemplar: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--ex", help="The exemplar pair: BEFORE AFTER (one photo, retouched).", metavar="BEFORE AFTER"),
    ] = None,
    query: Annotated[
        list[str] | None, typer.Option("--query", help="Query file(s), folder(s) or glob(s).", metavar="FILE|DIR|GLOB")
    ] = None,
    output: Annotated[
        str | None, typer.Option("-o", "--out", help="Output file (one query; its suffix names "
                                 "the format) or folder (several, or a name ending with /).", metavar="FILE|DIR")
    ] = None,
    strength: Annotated[
        float, typer.Option("--strength", help="Scale the edit (1 = as in the exemplar).", metavar="FACTOR")
    ] = 1.0,
    face: Annotated[
        int | None, typer.Option("--face", help="Query face: 0 = largest (default), 1 = next, …", metavar="N")
    ] = None,
    backend_name: Annotated[str, typer.Option(
        "--backend", help="warp (geometric, default) or a neural backend: eager, compile, fp8.", metavar="NAME")
    ] = "warp",
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Neural backends: trained weights folder (or $MIRRORPPR_WEIGHTS).", metavar="DIR")
    ] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Neural backends: auto (default), cpu or cuda[:N].",
        metavar="DEVICE")] = None,
    mae: Annotated[str | None, typer.Option(
        "--mae", help="Neural backends: MAE weights folder or hub id (cache only).", metavar="DIR|ID")] = None,
    dit: Annotated[str | None, typer.Option(
        "--dit", help="Neural backends: Qwen-Image-Edit folder or hub id (cache only).", metavar="DIR|ID")] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Neural backends: sampling steps (default 40).", min=2, metavar="N")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Neural backends: sampling seed (default 123).", metavar="N")] = None,
    mode: Annotated[
        str | None, typer.Option(
            "--mode", help="warp backend: hybrid (default: named ops + the rest as measured "
            "motion), flow or catalog.", metavar="hybrid|flow|catalog"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.", metavar="")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave a query whose output exists (resume a batch).", metavar="")] = False,
    output_format: Annotated[
        str | None, typer.Option("--format", help="Output format; default: the query's.", metavar="FORMAT")
    ] = None,
    suffix: Annotated[str, typer.Option("--suffix", help="Added to output names.", metavar="TEXT")] = "_retouched",
    max_pixels: Annotated[
        int | None, typer.Option("--max-pixels", help="Refuse larger images.", metavar="PIXELS")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Use a built-in exemplar pair and query.", metavar="")
    ] = False,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Look for artefacts in each result; a frame with any is "
        "written, reported for review, and the exit code is 7.", metavar="")] = True,
    export: Annotated[str | None, typer.Option(
        "--export", metavar="KIND[,KIND]", help="Also write the edit beside each output: "
        "stmap (float EXR), displace (16-bit X/Y maps + JSON), npy (inverse map), layers "
        "(TIFF pages: query, retouched, changed mask).")] = None,
    quality: Annotated[int | None, typer.Option(
        "--quality", min=1, max=100, metavar="1-100", help="JPEG/WebP output quality "
        "(default: the source JPEG's own, estimated from its tables; else 95).")] = None,
    save_edit: Annotated[Path | None, typer.Option(
        "--save-edit", metavar="FILE", help="Save the measured edit (apply it later with "
        "--edit, on any machine); no --query needed.")] = None,
    edit_file: Annotated[Path | None, typer.Option(
        "--edit", metavar="FILE", help="Apply an edit saved with --save-edit instead of "
        "measuring --ex.")] = None,
    only: Annotated[str | None, typer.Option(
        "--only", help="Carry only the face edit or only the body edit.", metavar="face|body"
    )] = None,
    ops_names: Annotated[str | None, typer.Option(
        "--ops", help="Carry only these named operations (see `mirrorppr explain`), without "
        "the motion no operation names.", metavar="NAME[,NAME]")] = None,
    review: Annotated[Path | None, typer.Option(
        "--review", help="Also write a review page of the batch (index.html: before/after, "
        "motion, flags) in this folder.", metavar="DIR")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Processes for a batch, this one included, warp backend (default: "
        "every core for 8 files or more, else this process alone).", metavar="N",
        min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.", metavar="")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Apply the exemplar pair's edit to query portraits (measured once, applied to each)."""
    set_verbose(verbose)
    from ..backend import RetouchSettings, load_backend, require
    from ..batch import RetouchWork, Workers, worker_count
    from ..exports import parse_kinds
    from ..inputs import check_unique_outputs, expand_inputs, is_batch, output_path_for

    exemplar_notes: list[str] = []
    measured = None
    try:
        exports = parse_kinds(export)
        if exemplar and str(exemplar[1]).startswith("-"):
            raise UsageError(f"--ex takes two files, BEFORE AFTER; only {exemplar[0]} came "
                             f"before {exemplar[1]}")
        if more_queries:
            if not query:
                raise UsageError(f"{more_queries[0]}: give queries with --query (e.g. --query "
                                 "a.jpg b.jpg)")
            query = [*query, *more_queries]
        if edit_file is not None and (exemplar or demo):
            raise UsageError("--edit replaces --ex (and --demo): give one of them")
        if not -3.0 <= strength <= 3.0:
            raise UsageError("--strength must be between -3 and 3")
        if force and skip_existing:
            raise UsageError("--force and --skip-existing contradict each other; choose one")
        if only is not None and only not in ("face", "body"):
            raise UsageError(f"--only must be face or body, not {only!r}")
        op_names = None
        if ops_names is not None:
            from ..selection import parse_op_names

            op_names = parse_op_names(ops_names)
        backend = load_backend(backend_name, weights=weights, device=device, mae=mae, dit=dit,
                               steps=steps, seed=seed, mode=mode)
        require(backend, "retouch")
        for asked, capability, flag in (
                (strength != 1.0, "strength", "--strength"),
                (edit_file or save_edit, "edit-file", "--edit / --save-edit"),
                (exports, "export", "--export"), (only or op_names, "select", "--only / --ops"),
                (workers is not None and workers > 1, "parallel", "--workers")):
            if asked:
                require(backend, capability, flag)
        if demo:
            if exemplar or query:
                raise UsageError("--demo takes no --ex or --query")
            import atexit
            import shutil
            import tempfile

            # this run's own folder, removed when the process ends (no shared leftovers)
            folder = Path(tempfile.mkdtemp(prefix="mirrorppr-demo-"))
            atexit.register(shutil.rmtree, folder, True)
            exemplar, query = demo_retouch_inputs(folder)
            if output is None:  # the demo's own file: a second run leaves it and says so
                output = "astronaut_query_retouched.png"
                skip_existing = skip_existing or not force
        elif edit_file is not None:
            if not query:
                raise UsageError("--edit needs at least one --query")
        elif not exemplar or (not query and save_edit is None):
            raise UsageError("give --ex BEFORE AFTER and at least one --query (or --demo, or "
                             "--save-edit FILE to measure only)")
        query = query or []
        batch = len(query) > 1 or any(is_batch(spec) for spec in query)
        sources = list(dict.fromkeys(p for spec in query for p in expand_inputs(spec)))
        plan = [
            (src, output_path_for(src, output, batch=batch, suffix=suffix, format=output_format))
            for src in sources
        ]
        check_unique_outputs(plan)
        pending = sum(not (skip_existing and os.path.lexists(dest)) for _, dest in plan)
        nothing_to_do = pending == 0
        review_dir = review_folder(review, force)
        for path in exemplar or ():  # what the backend cannot read is refused before it reads
            if note := backend.input_note(path, max_pixels):
                exemplar_notes.append(f"{path}: {note}")
                if not as_json:
                    err.print(f"[yellow]note:[/] {plain(path)}: {plain(note)}",
                              highlight=False, soft_wrap=True)
    except MirrorError as error:
        raise fail(error) from None
    processes = (worker_count(workers, pending) if "parallel" in backend.capabilities
                 and not nothing_to_do else 1)
    # the workers start now: their imports overlap with measuring the exemplar
    with Workers(processes - 1, preload=backend, verbose=is_verbose()) as started:
        try:
            if edit_file is not None:
                measured = backend.load_edit(edit_file)
            elif not (nothing_to_do and save_edit is None):
                backend.prepare(status=status_printer(as_json))  # fail fast (weights, device)
                with stage_line(f"exemplar {exemplar[0].name} → {exemplar[1].name}",
                                 quiet=as_json) as stage:
                    measured = backend.measure(*exemplar, max_pixels=max_pixels, on_stage=stage)
            if (only or op_names) and measured is not None:
                measured, selection_notes = backend.select(measured, only=only, ops=op_names)
                exemplar_notes.extend(selection_notes)
                for text in [] if as_json else selection_notes:
                    err.print(f"[yellow]note:[/] {plain(text)}", highlight=False, soft_wrap=True)
            if save_edit is not None:
                written_edit = backend.save_edit(measured, save_edit, force=force)
                if not as_json:
                    out.print(f"edit saved: {plain(written_edit)}", highlight=False)
        except MirrorError as error:
            raise fail(error) from None
        if not plan:  # --save-edit alone
            if as_json:
                print(json.dumps({"items": [], "summary": {"ok": 0, "failed": 0,
                                                           "edit": str(save_edit)}}, indent=2))
            return

        removed = remove_stale_temporaries(plan, as_json=as_json)
        common = {"exemplar": [str(p) for p in exemplar] if exemplar else None,
                  **({"edit_file": str(edit_file)} if edit_file else {}),
                  **({"saved_edit": str(save_edit)} if save_edit else {}),
                  **({"exemplar_notes": exemplar_notes} if exemplar_notes else {}),
                  **({"removed_temporaries": removed} if removed else {})}
        if measured is None:  # every output exists
            run_file_batch(plan, None, Result, as_json=as_json, batch=batch,
                            skip_existing=True, summary_extra=common, review_dir=review_dir,
                            reviewed=True)
            return
        settings = RetouchSettings(strength=strength, face_index=face, force=force,
                                   output_format=output_format, max_pixels=max_pixels, check=check,
                                   exports=exports, quality=quality,
                                   review_dir=review_dir.resolve() if review_dir else None)
        run_file_batch(
            plan,
            RetouchWork(backend, measured, settings),
            Result,
            as_json=as_json,
            batch=batch,
            skip_existing=skip_existing,
            workers=started,
            summary_extra={**common, **backend.edit_summary(measured)},
            review_dir=review_dir,
            reviewed=True,
        )

def explain_command(
    exemplar: Annotated[
        tuple[Path, Path], typer.Option("--ex", help="The exemplar pair: BEFORE AFTER.", metavar="BEFORE AFTER")
    ],
    max_pixels: Annotated[
        int | None, typer.Option("--max-pixels", help="Refuse larger images.", metavar="PIXELS")
    ] = None,
    backend_name: Annotated[str, typer.Option(
        "--backend", help="Backend that names the edit.", metavar="NAME")] = "warp",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.", metavar="")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Say what the exemplar's retoucher did, as catalog operations with fitted strengths."""
    set_verbose(verbose)
    from ..backend import load_backend, require

    file_notes = []
    try:
        backend = load_backend(backend_name)
        require(backend, "explain")
        for path in exemplar:  # a FIFO, a device, a folder: refused before anything reads it
            if (note := backend.input_note(path, max_pixels)) is not None:
                file_notes.append(f"{path}: {note}")
        backend.prepare(status=status_printer(as_json))
        with stage_line(f"exemplar {exemplar[0].name} → {exemplar[1].name}",
                         quiet=as_json) as stage:
            explained = backend.explain(*exemplar, max_pixels=max_pixels, on_stage=stage)
    except MirrorError as error:
        raise fail(error) from None
    explained = {**explained, "notes": [*file_notes, *explained.get("notes", [])]}
    if as_json:
        print(json.dumps(explained, indent=2))
        return
    for text in file_notes:
        err.print(f"[yellow]note:[/] {plain(text)}", highlight=False, soft_wrap=True)
    body = explained.get("body")
    table = Table(title=plain(f"{exemplar[0].name} → {exemplar[1].name}"))
    table.add_column("operation")
    table.add_column("strength", justify="right")
    table.add_column("meaning")
    for op in [*explained["ops"], *(body["ops"] if body else [])]:
        meta = catalog_meta(op["name"])
        meaning = "" if meta is None else (meta.plus if op["strength"] > 0 else meta.minus)
        table.add_row(plain(op["name"]), f"{op['strength']:+.0f}", plain(meaning))
    out.print(table)
    out.print(f"the catalog explains {100 * explained['explained']:.0f} % of the measured "
              f"motion (mean {explained['mean_motion_px']:.2f} px)", highlight=False)
    if body:
        hidden = (f"; not visible in the exemplar: {plain(', '.join(body['not_visible']))}"
                  if body.get("not_visible") else "")
        out.print(f"the body operations explain {100 * body['explained']:.0f} % of the measured "
                  f"body motion (mean {body['mean_motion_px']:.2f} px){hidden}", highlight=False)
    for text in explained.get("notes", [])[len(file_notes):]:
        out.print(f"note: {plain(text)}", highlight=False)

def catalog_meta(name: str):  # noqa: N802 - a lookup, named like the table it reads
    """The catalog's operation ``name`` (face or body), or None (a backend's own name)."""
    from ..ops import CATALOG
    from ..ops.body_catalog import BODY_CATALOG

    return BODY_CATALOG.get(name) or CATALOG.get(name)
