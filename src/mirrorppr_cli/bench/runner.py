"""Score methods on a benchmark with the shared metric library.

A *method* turns an item into a prediction: ``identity`` (the query returned unchanged, the
baseline every report shows), ``oracle`` (the ground truth itself: a sanity check),
``predictions`` (another system's outputs read from a folder) or a backend that can
``retouch``. Every method is scored on the same items with the same code.

``artefacts`` needs no ground truth: every prediction is scored against its query for new
blobs (:func:`~mirrorppr_cli.metrics.artefacts.new_blobs`), and where an item has a ground
truth, the truth once as well, so a report can show that a real edit scores like the query.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MirrorError
from ..inputs import IMAGE_SUFFIXES
from ..io import read_image
from ..metrics.artefacts import new_blobs
from ..metrics.edit_fidelity import edit_fidelity
from ..metrics.pixel import PixelScores, match_size
from .datasets import Benchmark, Item

ALL_METRICS = ("psnr", "ssim", "lpips", "face", "edit", "artefacts")
#: What ``bench`` scores without ``--metrics``: everything, except that a metric whose extra
#: (or weights) this install lacks is skipped with a one-line note naming what to install,
#: and the run goes on; a metric named in ``--metrics`` must be scored (exit 5 otherwise).
#: Why not put LPIPS in the base install: it needs torch, and ``mirrorppr[metrics]`` adds
#: 4.4 GiB (20 distributions: torch 1.1 GiB, the CUDA libraries and triton that PyPI's Linux
#: torch wheel pulls in) to the base install's 1.0 GiB (56 distributions), measured from the
#: installed files' RECORDs; PSNR, SSIM, edit fidelity and the artefact check need only numpy
#: and OpenCV, which the base already has. Face similarity likewise needs ``mirrorppr[face]``
#: (dlib, 144 MiB) or ``mirrorppr[arcface]`` (insightface and downloaded weights).
DEFAULT_METRICS = ALL_METRICS
#: Identical images have infinite PSNR; reports write this value instead (JSON has no inf).
PSNR_CAP = 100.0
#: A row "has artefacts" when it shows more than this many new blobs beyond its item's
#: ground truth (0 without one): on real material the metric gave 0 on 9 professional
#: retouches, and a single stray blob (hair texture) was its only false positive on 33
#: catalog warps of the development photos.
ARTEFACT_MARGIN = 1

Predictor = Callable[[Item, np.ndarray], np.ndarray]


def rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file (any colour mode the reader accepts)."""
    return np.ascontiguousarray(read_image(path).rgb8())


def identity_method(item: Item, query: np.ndarray) -> np.ndarray:
    return query


def oracle_method(item: Item, query: np.ndarray) -> np.ndarray:
    if item.truth is None:
        raise InputError(f"item {item.index} has no ground truth (pair2_edited)")
    return rgb(item.truth)


def predictions_method(folder: Path) -> Predictor:
    """Predictions named by item index (``0007.png``, ``7.jpg``) or by the query's file name."""
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES} \
        if folder.is_dir() else {}
    if not files:
        raise InputError(f"--predictions {folder}: no images found")

    def predict(item: Item, query: np.ndarray) -> np.ndarray:
        for key in (f"{item.index:04d}", str(item.index), item.query.stem):
            if key in files:
                return rgb(files[key])
        raise InputError(f"no prediction for item {item.index} in {folder} "
                         f"(expected {item.index:04d}.png or {item.query.name})")

    return predict


@dataclass
class MethodScores:
    """Per-item rows and set-level accumulators of one method."""

    name: str
    pixel: PixelScores = field(default_factory=PixelScores)
    rows: list[dict] = field(default_factory=list)

    @property
    def pixel_samples(self) -> int:
        """Items scored against a ground truth."""
        return len(self.pixel.ssim_values)

    def summary(self, metrics: tuple[str, ...], face_model: str | None) -> dict:
        """Summary with the official evaluation's keys, plus edit fidelity."""
        ok = [r for r in self.rows if r.get("error") is None]

        def mean(key: str) -> float | None:
            values = [r[key] for r in ok if r.get(key) is not None and not math.isnan(r[key])]
            return float(np.mean(values)) if values else None

        identity = [r["identity_similarity"] for r in ok if r.get("identity_similarity") is not None]
        out = {
            "total_samples": len(self.rows),
            "valid_pixel_samples": self.pixel_samples,
            "average_psnr": (
                min(self.pixel.pooled_psnr, PSNR_CAP)
                if self.pixel.count and "psnr" in metrics else None
            ),
            "average_ssim": self.pixel.mean_ssim if self.pixel.count and "ssim" in metrics else None,
            "average_lpips": mean("lpips") if "lpips" in metrics else None,
            "valid_identity_samples": len(identity) if "face" in metrics else 0,
            "average_identity_similarity_edited": (
                float(np.mean(identity)) if identity and "face" in metrics else None
            ),
            "face_model": face_model,
            "average_edit_recall": mean("edit_recall") if "edit" in metrics else None,
            "average_edit_epe": mean("edit_epe") if "edit" in metrics else None,
            "average_changed_fraction": mean("changed_fraction"),
        }
        if "artefacts" in metrics:
            blobs = [r["artefact_blobs"] for r in ok if r.get("artefact_blobs") is not None]
            out.update({
                "average_artefact_blobs": float(np.mean(blobs)) if blobs else None,
                "max_artefact_blobs": int(max(blobs)) if blobs else None,
                "items_with_artefacts": sum(
                    1 for r in ok if r.get("artefact_blobs") is not None
                    and r["artefact_blobs"] > (r.get("truth_artefact_blobs") or 0) + ARTEFACT_MARGIN
                ),
                "average_truth_artefact_blobs": mean("truth_artefact_blobs"),
                "artefact_margin": ARTEFACT_MARGIN,
            })
        return out


def score(
    bench: Benchmark,
    methods: dict[str, Predictor],
    metrics: tuple[str, ...] = ALL_METRICS,
    *,
    embedder=None,
    lpips_options: dict | None = None,
    on_step: Callable[[], None] | None = None,
    keep_predictions: Callable[[str, Item, np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, MethodScores]:
    """Score every method on every item; a failed prediction is a row with an error."""
    from ..metrics import perceptual

    results = {name: MethodScores(name) for name in methods}
    for item in bench.items:
        query = rgb(item.query)
        truth = rgb(item.truth) if item.truth is not None else None
        before, after = rgb(item.exemplar_before), rgb(item.exemplar_after)
        exemplar_changed = (
            float(np.any(before != after, axis=-1).mean()) if before.shape == after.shape else None
        )
        truth_blobs = (
            new_blobs(query, match_size(truth, query)).count
            if "artefacts" in metrics and truth is not None else None
        )
        for name, predict in methods.items():
            row: dict = {"item": item.index, "query": str(item.query), "error": None,
                         "exemplar_changed_fraction": exemplar_changed}
            try:
                pred = predict(item, query)
            except MirrorError as error:
                row["error"] = str(error)
                results[name].rows.append(row)
                continue
            if keep_predictions:
                keep_predictions(name, item, pred, truth if truth is not None else query)
            if pred.shape == query.shape:
                row["changed_fraction"] = float(np.any(pred != query, axis=-1).mean())
            if "artefacts" in metrics:
                blobs = new_blobs(query, match_size(pred, query))
                row["artefact_blobs"], row["artefact_area_px"] = blobs.count, blobs.area_px
                row["artefact_long_components"] = blobs.long_components
                if truth_blobs is not None:
                    row["truth_artefact_blobs"] = truth_blobs
            if truth is None:  # a real pair: nothing to compare with but what changed
                results[name].rows.append(row)
                continue
            p, s = results[name].pixel.add(pred, truth)
            row["psnr"], row["ssim"] = min(p, PSNR_CAP), s
            if "lpips" in metrics:
                row["lpips"] = perceptual.lpips_distance(pred, truth, **(lpips_options or {}))
            if "face" in metrics and embedder is not None:
                from ..metrics.face_similarity import face_similarity

                row["identity_similarity"] = face_similarity(embedder, pred, truth)
            if "edit" in metrics:
                fid = edit_fidelity(query, pred, truth)
                row["edit_recall"], row["edit_epe"] = fid.recall, fid.epe
            results[name].rows.append(row)
        if on_step:
            on_step()
    return results
