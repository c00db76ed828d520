"""``mirrorppr review PATH``: the review page of a batch after the run.

PATH is a folder that ``--review`` wrote (its page is rendered again from its
``review.json``, e.g. after an upgrade) or a report saved from ``retouch``/``apply --json``
(the page goes to ``--out``, by default a folder beside the report; its thumbnails are made
from the files the report names, the heat-map from an exported ``.npy`` motion field where
the run wrote one, else from the pixel differences).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, MirrorError, OutputError, UsageError

# The page's modules (OpenCV for the thumbnails) are imported by the functions that use them:
# every `mirrorppr` command registers this one at start-up.


def review_command(
    path: Annotated[Path, typer.Argument(
        help="A folder written by --review, or a JSON report saved from `retouch --json` "
        "or `apply --json`.",
        metavar="PATH", show_default=False)],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the page (a JSON report only; default: "
        "REPORT-review/ beside it).", metavar="DIR", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the page in an --out that holds files.", metavar="")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.",
                                          metavar="")] = False,
) -> None:
    """Write the static review page of a batch: before/after, motion, flags."""
    from ..review_page import asset_for, item_flags, write_review
    from .console import err, fail, out, plain

    warnings: list[str] = []
    try:
        try:
            folder, report, assets = _gather(path, out_dir, force, warnings)
            page = write_review(folder, report, assets)
        except OSError as error:  # thumbnails or the page: disk full, no permission
            raise OutputError(f"{error.filename or path}: the review page could not be written "
                              f"({error.strerror or error})") from None
    except MirrorError as error:
        raise fail(error) from None
    if not as_json:
        for line in warnings:
            err.print(f"[yellow]warning:[/] {plain(line)}", highlight=False, soft_wrap=True)
    items = report.get("items") or []
    flagged = sum(1 for f in item_flags(items, [asset_for(assets, i, it)
                                                for i, it in enumerate(items)]) if f)
    if as_json:
        print(json.dumps({"page": str(page), "items": len(items), "flagged": flagged,
                          "warnings": warnings}, indent=2))
        return
    out.print(f"review page: {plain(page)} ({len(items)} frames, {flagged} flagged)",
              highlight=False, soft_wrap=True)


def _gather(path: Path, out_dir: Path | None, force: bool,
            warnings: list[str]) -> tuple[Path, dict, dict]:
    """``(page folder, report, assets)`` for PATH: a review folder's own, or made from the
    files a JSON report names."""
    from ..review_assets import check_out, make_assets

    if not path.exists():
        raise InputError(f"{path}: not found")
    data = None if path.is_dir() else _read_json(path)
    if data is None or data.get("format") == "mirrorppr-review":  # a folder, or its data
        if out_dir is not None:
            raise UsageError("--out is for a JSON report; a review folder is rendered "
                             "again in place")
        return _from_folder(path if data is None else path.parent)
    folder = out_dir if out_dir is not None else path.with_name(f"{path.stem}-review")
    check_out(folder, force)
    return folder, data, make_assets(folder, data, [Path.cwd(), path.parent], warnings)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON report ({error}); save one with "
                         "`mirrorppr retouch … --json > run.json`") from None
    if not isinstance(data, dict) or not isinstance(data.get("items", data.get("report")),
                                                    (list, dict)):
        raise InputError(f"{path}: not a report of `retouch --json` or `apply --json` "
                         "(no items)")
    return data


def _from_folder(folder: Path) -> tuple[Path, dict, dict]:
    from ..review_page import DATA_FILE

    data_file = folder / DATA_FILE
    if not data_file.is_file():
        raise InputError(f"{folder}: no {DATA_FILE} (not a folder written by --review); "
                         "give the JSON report saved from --json instead")
    data = _read_json(data_file)
    report, assets = data.get("report"), data.get("assets")
    if data.get("format") != "mirrorppr-review" or not isinstance(report, dict) \
            or not isinstance(assets, dict):
        raise InputError(f"{data_file}: not a review page's data (format mirrorppr-review)")
    return folder, report, assets


