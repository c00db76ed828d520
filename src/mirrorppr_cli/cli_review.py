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

import numpy as np
import typer

from .errors import InputError, MirrorError, OutputError, UsageError
from .review_page import DATA_FILE, asset_for, item_flags, relative_link, write_review


def review_command(
    path: Annotated[Path, typer.Argument(
        help="A folder written by --review, or a JSON report saved from `retouch --json` "
        "or `apply --json`.",
        metavar="PATH", show_default=False)],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the page (a JSON report only; default: "
        "REPORT-review/ beside it).", metavar="DIR", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the page in an --out that holds files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write the static review page of a batch: before/after, motion, flags."""
    from .cli import _fail, _plain, err, out

    warnings: list[str] = []
    try:
        try:
            folder, report, assets = _gather(path, out_dir, force, warnings)
            page = write_review(folder, report, assets)
        except OSError as error:  # thumbnails or the page: disk full, no permission
            raise OutputError(f"{error.filename or path}: the review page could not be written "
                              f"({error.strerror or error})") from None
    except MirrorError as error:
        raise _fail(error) from None
    if not as_json:
        for line in warnings:
            err.print(f"[yellow]warning:[/] {_plain(line)}", highlight=False, soft_wrap=True)
    items = report.get("items") or []
    flagged = sum(1 for f in item_flags(items, [asset_for(assets, i, it)
                                                for i, it in enumerate(items)]) if f)
    if as_json:
        print(json.dumps({"page": str(page), "items": len(items), "flagged": flagged,
                          "warnings": warnings}, indent=2))
        return
    out.print(f"review page: {_plain(page)} ({len(items)} frames, {flagged} flagged)",
              highlight=False, soft_wrap=True)


def _gather(path: Path, out_dir: Path | None, force: bool,
            warnings: list[str]) -> tuple[Path, dict, dict]:
    """``(page folder, report, assets)`` for PATH: a review folder's own, or made from the
    files a JSON report names."""
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


def check_out(folder: Path, force: bool) -> None:
    """OutputError unless ``folder`` can take a page: absent, empty, or ``force``."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise OutputError(f"{folder}: exists and holds files; pass --force to replace the page")


def _locate(name: str | None, bases: list[Path]) -> Path | None:
    """The file a report names: as given (absolute, or from the current folder), else from
    the report's folder."""
    if not name:
        return None
    for base in bases:
        candidate = base / name
        if candidate.is_file():
            return candidate
    return None


def make_assets(folder: Path, report: dict, bases: list[Path], warnings: list[str],
                ready: dict[str, dict] | None = None) -> dict:
    """Thumbnails and heat-maps of every item whose files are found; the rest is warned of.
    ``ready``: assets already made (by ``item_id``), kept as they are (links added)."""
    from .io import read_image
    from .review_assets import exemplar_from_files, item_id, save_item_assets, save_query_assets

    assets: dict[str, dict] = {}
    for index, item in enumerate(report.get("items") or []):
        query, output = _locate(item.get("input"), bases), _locate(item.get("output"), bases)
        if item_id(index) in (ready or {}):
            asset = dict(ready[item_id(index)])
            asset["links"] = {k: link for k, p in (("query", query), ("output", output))
                              if p is not None and (link := relative_link(p, folder))}
            assets[item_id(index)] = asset
            continue
        if item.get("status", "ok") != "ok":  # the query alone, where it can be read
            if query is not None and item.get("status") == "failed":
                try:
                    assets[item_id(index)] = save_query_assets(
                        folder, item_id(index), read_image(query).rgb8())
                    link = relative_link(query, folder)
                    assets[item_id(index)]["links"] = {"query": link} if link else {}
                except MirrorError:
                    pass  # its error is on the page already
            continue
        if query is None or output is None:
            missing = item.get("input") if query is None else item.get("output")
            warnings.append(f"item {index + 1}: {missing}: not found; shown without pictures")
            continue
        try:
            before, after = read_image(query).rgb8(), read_image(output).rgb8()
        except MirrorError as error:
            warnings.append(f"item {index + 1}: {error}; shown without pictures")
            continue
        field = _motion_field(item, bases, before.shape[:2])
        asset = save_item_assets(folder, item_id(index), before, after, field)
        asset["links"] = {k: link for k, p in (("query", query), ("output", output))
                          if (link := relative_link(p, folder))}
        assets[item_id(index)] = asset
    pair = [_locate(p, bases) for p in (report.get("summary") or {}).get("exemplar") or []]
    if len(pair) == 2 and all(pair):
        try:
            assets["exemplar"] = exemplar_from_files(folder, [str(p) for p in pair])
            assets["exemplar"]["links"] = {k: relative_link(p, folder)
                                           for k, p in zip(("before", "after"), pair, strict=True)}
        except MirrorError as error:
            warnings.append(f"exemplar: {error}; shown without pictures")
    elif pair:
        warnings.append("exemplar pair: not found; shown without pictures")
    return assets


def _motion_field(item: dict, bases: list[Path], shape: tuple[int, int]) -> np.ndarray | None:
    """The inverse map the run exported with ``--export npy``, if any and of the right shape."""
    for name in item.get("exports") or []:
        if str(name).endswith(".npy") and (file := _locate(name, bases)) is not None:
            try:
                field = np.load(file, allow_pickle=False)
            except (OSError, ValueError):
                continue
            if field.shape == (*shape, 2):
                return field.astype(np.float32, copy=False)
    return None
