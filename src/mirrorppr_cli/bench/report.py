"""Bench reports: ``results.json``, ``results.md`` and ``report.html`` with per-item images.

A report is built in a hidden folder inside ``--out`` (:class:`StagedReport`) and moved into
place only when complete, ``results.json`` last: a failed or killed run leaves no partial
report (at most its hidden folder, which the next run removes once its process is gone).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..data.shards import write_atomic
from ..errors import OutputError
from ..review_assets import save_jpeg, thumbnail
from .datasets import Benchmark, Item
from .runner import ARTEFACT_MARGIN

THUMB_SIDE = 256
COLUMNS = (
    ("average_psnr", "PSNR ↑", "{:.2f}"),
    ("average_ssim", "SSIM ↑", "{:.4f}"),
    ("average_lpips", "LPIPS ↓", "{:.4f}"),
    ("average_identity_similarity_edited", "Face sim. ↑", "{:.4f}"),
    ("average_edit_recall", "Edit recall ↑", "{:.3f}"),
    ("valid_pixel_samples", "valid", "{}"),
    ("average_changed_fraction", "changed px", "{:.2%}"),
    ("average_artefact_blobs", "Artefact blobs ↓", "{:.2f}"),
    ("max_artefact_blobs", "max blobs", "{}"),
    ("items_with_artefacts", "items w/ artefacts", "{}"),
)


def fmt(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def write_json(out: Path, payload: dict) -> None:
    write_atomic(out / "results.json", (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def markdown(payload: dict) -> str:
    lines = [f"# {payload['dataset']} — {payload['items']} items", ""]
    if payload.get("face_model"):
        lines += [f"Face similarity model: {payload['face_model']}", ""]
    lines.append("| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(COLUMNS))
    for name, method in payload["methods"].items():
        s = method["summary"]
        lines.append(f"| {name} | " + " | ".join(fmt(s.get(k), p) for k, _, p in COLUMNS) + " |")
    note = artefact_note(payload)
    if note:
        lines += ["", note]
    skipped = payload.get("skipped_metrics") or {}
    if skipped:
        lines += ["", "Not scored (this install cannot): "
                  + "; ".join(f"{metric}: {why}" for metric, why in skipped.items())]
    failed = payload.get("failed_items") or {}
    if failed:
        lines += ["", f"Items that could not be scored ({len(failed)}; in no average):", ""]
        lines += [f"- item {index}: {why}" for index, why in failed.items()]
    return "\n".join(lines) + "\n"


def artefact_note(payload: dict) -> str:
    """What the artefact columns mean, with the ground truth's own score where there is one."""
    summaries = [m["summary"] for m in payload["methods"].values()]
    scored = [s for s in summaries if s.get("average_artefact_blobs") is not None]
    if not scored:
        return ""
    margin = scored[0].get("artefact_margin", 0)
    note = ("Artefact blobs: new small dots/discs against the query (no ground truth needed); "
            f"an item has artefacts with more than {margin} blob(s) beyond its ground truth's.")
    truth = next((s["average_truth_artefact_blobs"] for s in scored
                  if s.get("average_truth_artefact_blobs") is not None), None)
    if truth is not None:
        note += f" The ground truth itself scores {truth:.2f} on average."
    return note


class ImageSaver:
    """Thumbnails for the HTML report, under ``out/report_images``."""

    def __init__(self, out: Path) -> None:
        self.folder = out / "report_images"
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, rgb: np.ndarray) -> str:
        save_jpeg(self.folder / name, thumbnail(rgb, THUMB_SIDE), quality=90)
        return f"report_images/{name}"


def difference_heatmap(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|prediction − truth| as a colour map (×8, so a 32-level error is full scale)."""
    pred = cv2.resize(prediction, (truth.shape[1], truth.shape[0])) \
        if prediction.shape[:2] != truth.shape[:2] else prediction
    diff = np.abs(pred.astype(np.int16) - truth.astype(np.int16)).max(axis=2)
    scaled = np.clip(diff * 8, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def html_report(payload: dict, bench: Benchmark, images: dict[int, dict[str, str]]) -> str:
    """One table row per item: exemplar pair, query, ground truth, each prediction and its diff;
    built from the review page's components (shell, CSS, image cards, badges)."""
    from ..review_page import badge, esc, image_card, page

    methods = list(payload["methods"])
    head = "".join(f"<th>{esc(m)}</th><th>{esc(m)} − truth</th>" for m in methods)
    rows = []
    by_item = {name: {r["item"]: r for r in payload["methods"][name]["rows"]} for name in methods}

    def cell(src: str | None, caption: str = "", flag: str = "") -> str:
        return f"<td>{flag}{image_card(src, caption, lazy=False)}</td>"

    for item in bench.items:
        imgs = images.get(item.index, {})
        cells = [cell(imgs.get("before"), "exemplar before"), cell(imgs.get("after"), "exemplar after"),
                 cell(imgs.get("query"), "query"), cell(imgs.get("truth"), "ground truth")]
        for m in methods:
            row = by_item[m].get(item.index, {})
            caption = row.get("error") or (
                f"PSNR {fmt(row.get('psnr'), '{:.2f}')} · recall {fmt(row.get('edit_recall'), '{:.2f}')}"
            )
            against = "truth" if item.truth is not None else "query (no ground truth)"
            if item.truth is None and row.get("changed_fraction") is not None:
                caption = f"changed {100 * row['changed_fraction']:.2f} % of pixels"
            if not row.get("error") and row.get("artefact_blobs") is not None:
                caption += f" · blobs {row['artefact_blobs']}"
                if row.get("truth_artefact_blobs") is not None:
                    caption += f" (truth {row['truth_artefact_blobs']})"
            flag = ""
            if row.get("failed"):
                flag = badge("failed", "bad", row.get("error"))
            elif has_artefacts(row):
                flag = badge("artefacts", "warn", "more new blobs than the ground truth's "
                             f"(beyond a margin of {ARTEFACT_MARGIN})")
            cells += [cell(imgs.get(f"pred:{m}"), caption, flag),
                      cell(imgs.get(f"diff:{m}"), f"difference to {against} ×8")]
        rows.append(f"<tr><th>{item.index}<br><small>{esc(item.instruction)}</small></th>"
                    + "".join(cells) + "</tr>")
    title = f"mirrorppr bench — {payload['dataset']}"
    body = (f'<header class="top"><h1>{esc(title)}</h1></header><main>'
            f'<section class="card"><pre>{esc(markdown(payload))}</pre></section>'
            '<section class="card"><table class="grid"><tr><th>item</th><th>exemplar before</th>'
            f"<th>exemplar after</th><th>query</th><th>ground truth</th>{head}</tr>"
            f"{''.join(rows)}</table></section></main>")
    return page(title, body)


def has_artefacts(row: dict) -> bool:
    """Whether a scored row counts in ``items_with_artefacts`` (the runner's rule)."""
    return row.get("artefact_blobs") is not None and not row.get("error") and \
        row["artefact_blobs"] > (row.get("truth_artefact_blobs") or 0) + ARTEFACT_MARGIN


def item_images(saver: ImageSaver, item: Item, load) -> dict[str, str]:
    """Thumbnails of an item's inputs; one that cannot be read (a failed item's) is left out."""
    from ..errors import MirrorError

    images = {}
    for slot, path in (("before", item.exemplar_before), ("after", item.exemplar_after),
                       ("query", item.query), ("truth", item.truth)):
        if path is None:
            continue
        try:
            rgb = load(path)
        except (MirrorError, ValueError):  # reported with the item's rows
            continue
        images[slot] = saver.save(f"{item.index:04d}_{slot}.jpg", rgb)
    return images


#: Files of a report, moved into ``--out`` in this order (``results.json`` last: a folder
#: with ``results.json`` holds a complete report).
REPORT_FILES = ("results.md", "report.html", "results.json")
IMAGES_DIR = "report_images"
STAGING_PREFIX = ".bench-"
STAGING_SUFFIX = ".part"


class StagedReport:
    """A report written into ``staging`` (a hidden folder inside ``out``) and moved into
    ``out`` by :meth:`commit`; used as a context manager, anything that leaves the block
    early (an error, Ctrl-C) removes the staging folder, and ``out`` too when this run made
    it and it is empty. An OSError (disk full, no permission) becomes an OutputError (exit 4).

    Committing: the old ``results.json`` goes first (from then on ``out`` holds no complete
    report), ``report_images/`` is swapped for the new one, then ``results.md``,
    ``report.html`` and ``results.json`` are renamed into place. Each rename is atomic.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created = False
        self.staging: Path | None = None

    def __enter__(self) -> StagedReport:
        try:
            if self.out.exists() and not self.out.is_dir():
                raise OutputError(f"--out {self.out}: exists and is not a folder")
            self.created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.out)
            name = f"{STAGING_PREFIX}{os.getpid()}-"
            self.staging = Path(tempfile.mkdtemp(prefix=name, suffix=STAGING_SUFFIX, dir=self.out))
        except OSError as error:
            self._discard()
            raise OutputError(f"--out {self.out}: cannot be written ({_why(error)})") from None
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._discard()
        if isinstance(error, OSError):
            raise OutputError(f"--out {self.out}: the report could not be written "
                              f"({_why(error)})") from None

    def commit(self) -> None:
        """Move the staged report into ``out``."""
        assert self.staging is not None
        (self.out / "results.json").unlink(missing_ok=True)
        new_images, old_images = self.staging / IMAGES_DIR, self.out / IMAGES_DIR
        if new_images.exists():
            if old_images.exists() or old_images.is_symlink():
                os.replace(old_images, self.staging / f"old-{IMAGES_DIR}")
            os.replace(new_images, old_images)
        for name in REPORT_FILES:
            os.replace(self.staging / name, self.out / name)
        self.created = False  # ``out`` now holds the report

    def _discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self.created:
            try:
                self.out.rmdir()  # only when empty
            except OSError:
                pass
            self.created = False


def _why(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a killed one not yet reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as error:  # EPERM: someone else's process
        return error.errno == errno.EPERM
    try:  # Linux: a zombie still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def remove_stale_staging(out: Path) -> None:
    """Remove the staging folders in ``out`` of bench runs whose process is gone (killed)."""
    for folder in out.glob(f"{STAGING_PREFIX}*{STAGING_SUFFIX}"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) \
                and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
