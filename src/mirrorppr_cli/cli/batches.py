"""Running one job over a batch of files and printing its reports (``retouch``, ``apply``),
with the run's review page."""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import OutputError
from .console import (
    REVIEW_EXIT_CODE,
    err,
    fail,
    is_verbose,
    out,
    plain,
    print_error,
    progress_bar,
)

if TYPE_CHECKING:
    from ..batch import Workers


def remove_stale_temporaries(plan, *, as_json: bool) -> list[str]:
    """Delete the ``.part`` temporaries a killed run left beside this run's outputs (only
    those, see :func:`mirrorppr_cli.io.remove_stale_temporaries`); say so on stderr."""
    from ..io import remove_stale_temporaries

    removed = [str(p) for p in remove_stale_temporaries([dest for _, dest in plan])]
    if removed and not as_json:
        err.print(f"[yellow]note:[/] removed {len(removed)} temporary file(s) an interrupted "
                  f"run left: {plain(', '.join(removed[:3]))}"
                  + (" …" if len(removed) > 3 else ""), highlight=False, soft_wrap=True)
    return removed

def run_file_batch(plan, work, report_type, *, as_json: bool, batch: bool,
                    summary_extra: dict | None = None, skip_existing: bool = False,
                    workers: int | Workers = 1, review_dir: Path | None = None,
                    reviewed: bool = False) -> None:
    """Run ``work(src, dest)`` for each planned file (``workers`` > 1: in that many processes,
    or beside :class:`~mirrorppr_cli.batch.Workers` the caller started; :mod:`mirrorppr_cli.
    batch`): an item that fails — with the tool's own error or any other exception — is
    reported (one line naming the file) and the batch goes on; with
    ``skip_existing`` an item whose output exists is not run and is reported as skipped;
    prints the reports; exits 1 if a batch item failed (a single input's own error code
    otherwise). ``reviewed``: the job looks for frames to review (the summary counts them)."""
    from ..batch import Workers, run_batch

    reports: list = [None] * len(plan)
    todo = []
    for index, (src, dest) in enumerate(plan):
        if skip_existing and os.path.lexists(dest):
            reports[index] = report_type(input=str(src), output=str(dest), status="skipped")
        else:
            todo.append(index)
    if isinstance(workers, Workers):  # started before, by the caller, who ends them
        pool = nullcontext(workers)
    else:  # started before the progress bar's thread: forked, not spawned (batch.start_method)
        pool = Workers(max(1, min(workers, len(todo))) - 1, verbose=is_verbose())
    with pool as started, progress_bar(disable=len(plan) < 2) as progress:
        task = progress.add_task("retouching", total=len(plan), completed=len(plan) - len(todo))
        used = started.count + 1 if len(todo) > 1 else 1
        outcomes = run_batch([plan[i] for i in todo], work, report_type, workers=started,
                             verbose=is_verbose())
        for position, report, message, error in outcomes:
            reports[todo[position]] = report
            if message is not None and not as_json:
                print_error(message)
            if error is not None and is_verbose():
                traceback.print_exception(error, file=sys.stderr)
            progress.advance(task)
    failed = [r for r in reports if r.status == "failed"]
    skipped = [r for r in reports if r.status == "skipped"]
    flagged = [r for r in reports if r.status == "ok" and getattr(r, "review", None)]
    written = len(reports) - len(failed) - len(skipped)
    summary = {"ok": written, "failed": len(failed),
               **({"skipped": len(skipped)} if skip_existing else {}),
               **({"to_review": len(flagged)} if reviewed else {}), "workers": used,
               **(summary_extra or {})}
    made = {index: r.extra.pop("review") for index, r in enumerate(reports)  # heat-maps
            if isinstance(getattr(r, "extra", None), dict) and "review" in r.extra}
    run = {"items": [r.to_dict() for r in reports], "summary": summary}
    page = None
    if review_dir is not None:
        page = write_review_page(review_dir, run, made, as_json=as_json)
        summary["review_page"] = str(page)
    if as_json:
        print(json.dumps(run, indent=2))
    else:
        for r in reports:
            if r.status == "skipped":
                out.print(f"{plain(r.input)} → {plain(r.output)} (exists: skipped)",
                          highlight=False, soft_wrap=True)
            elif r.status == "ok":
                note = f" (face {r.face} of {r.faces_found})" if r.faces_found > 1 else ""
                out.print(f"{plain(r.input)} → {plain(r.output)}{note}", highlight=False,
                          soft_wrap=True)
                for text in getattr(r, "notes", None) or ():
                    err.print(f"[yellow]note:[/] {plain(r.input)}: {plain(text)}",
                              highlight=False, soft_wrap=True)
                for text in getattr(r, "review", None) or ():
                    err.print(f"[bold yellow]review:[/] {plain(r.output)}: {plain(text)}",
                              highlight=False, soft_wrap=True)
        if page is not None:
            out.print(f"review page: {plain(page)}", highlight=False, soft_wrap=True)
        if batch:
            out.print(f"{written} written, {len(failed)} failed"
                      + (f", {len(skipped)} skipped (outputs exist)" if skipped else "")
                      + (f", {len(flagged)} to review" if flagged else ""))
    if failed:
        raise typer.Exit(1 if batch else failed[0].exit_code)
    if flagged:
        raise typer.Exit(REVIEW_EXIT_CODE)

def write_review_page(folder: Path, run: dict, made: dict, *, as_json: bool) -> Path:
    """The run's review page in ``folder`` (:mod:`mirrorppr_cli.review_page`): assets the jobs
    made (motion heat-maps, by item index), the rest from the files (pixel differences)."""
    from ..review_assets import item_id, make_assets
    from ..review_page import write_review

    warnings: list[str] = []
    try:
        assets = make_assets(folder, run, [Path.cwd()], warnings,
                             ready={item_id(index): asset for index, asset in made.items()})
        page = write_review(folder, run, assets)
    except OSError as error:
        raise fail(OutputError(f"{error.filename or folder}: the review page could not be "
                                f"written ({error.strerror or error})")) from None
    for line in [] if as_json else warnings:
        err.print(f"[yellow]warning:[/] {plain(line)}", highlight=False, soft_wrap=True)
    return page

def review_folder(review: Path | None, force: bool) -> Path | None:
    """``review`` checked (absent, empty, or ``force``) and created; None without --review."""
    if review is None:
        return None
    from ..review_assets import check_out

    check_out(review, force)
    try:
        review.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{review}: cannot be created ({error.strerror or error})") from None
    return review
