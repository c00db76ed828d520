"""Bench reports: ``results.json``, ``results.md`` and ``report.html`` with per-item images."""

from __future__ import annotations

import html
import json
from pathlib import Path

import cv2
import numpy as np

from ..data.shards import write_atomic
from .datasets import Benchmark, Item

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
        scale = THUMB_SIDE / max(rgb.shape[:2])
        thumb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) \
            if scale < 1 else rgb
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        write_atomic(self.folder / name, data.tobytes())
        return f"report_images/{name}"


def difference_heatmap(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|prediction − truth| as a colour map (×8, so a 32-level error is full scale)."""
    pred = cv2.resize(prediction, (truth.shape[1], truth.shape[0])) \
        if prediction.shape[:2] != truth.shape[:2] else prediction
    diff = np.abs(pred.astype(np.int16) - truth.astype(np.int16)).max(axis=2)
    scaled = np.clip(diff * 8, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def html_report(payload: dict, bench: Benchmark, images: dict[int, dict[str, str]]) -> str:
    """One table row per item: exemplar pair, query, ground truth, each prediction and its diff."""
    methods = list(payload["methods"])
    head = "".join(f"<th>{html.escape(m)}</th><th>{html.escape(m)} − truth</th>" for m in methods)
    rows = []
    by_item = {name: {r["item"]: r for r in payload["methods"][name]["rows"]} for name in methods}

    def cell(src: str | None, caption: str = "") -> str:
        img = f'<img src="{html.escape(src)}" alt="{html.escape(caption)}">' if src else "–"
        return f"<td>{img}<br><small>{html.escape(caption)}</small></td>"

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
            cells += [cell(imgs.get(f"pred:{m}"), caption),
                      cell(imgs.get(f"diff:{m}"), f"difference to {against} ×8")]
        rows.append(f"<tr><th>{item.index}<br><small>{html.escape(item.instruction)}</small></th>"
                    + "".join(cells) + "</tr>")
    table = markdown(payload)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mirrorppr bench — {html.escape(payload['dataset'])}</title>
<style>body{{font-family:sans-serif}} td,th{{vertical-align:top;padding:4px;text-align:center}}
img{{max-width:{THUMB_SIDE}px}} pre{{background:#f4f4f4;padding:8px}}</style></head>
<body><h1>mirrorppr bench — {html.escape(payload['dataset'])}</h1>
<pre>{html.escape(table)}</pre>
<table><tr><th>item</th><th>exemplar before</th><th>exemplar after</th><th>query</th><th>ground truth</th>{head}</tr>
{''.join(rows)}
</table></body></html>
"""


def item_images(saver: ImageSaver, item: Item, load) -> dict[str, str]:
    return {
        "before": saver.save(f"{item.index:04d}_before.jpg", load(item.exemplar_before)),
        "after": saver.save(f"{item.index:04d}_after.jpg", load(item.exemplar_after)),
        "query": saver.save(f"{item.index:04d}_query.jpg", load(item.query)),
        **({"truth": saver.save(f"{item.index:04d}_truth.jpg", load(item.truth))}
           if item.truth is not None else {}),
    }
