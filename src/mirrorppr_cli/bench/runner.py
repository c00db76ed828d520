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

#: Images with a side under this many pixels are not scored (the edit-fidelity flow needs 12).
MIN_SCORE_SIDE = 16

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
            # items without a ground truth (real pairs): face similarity to the query itself
            "average_query_similarity": mean("query_similarity") if "face" in metrics else None,
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


def describe_failure(error: BaseException) -> str:
    """One line for a failed item: a MirrorError's message, else the exception's type and
    its message's last line (shortened)."""
    if isinstance(error, MirrorError):
        return str(error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


@dataclass
class LoadedItem:
    """An item's images and the scores that do not depend on the method."""

    query: np.ndarray
    truth: np.ndarray | None
    exemplar_changed: float | None
    truth_blobs: int | None


def load_item(item: Item, metrics: tuple[str, ...]) -> LoadedItem:
    """Read an item's four images and check that they can be scored (InputError otherwise:
    a side under :data:`MIN_SCORE_SIDE`, or with ``edit`` a truth not of the query's size)."""
    query = rgb(item.query)
    truth = rgb(item.truth) if item.truth is not None else None
    before, after = rgb(item.exemplar_before), rgb(item.exemplar_after)
    for label, path, image in (("query", item.query, query), ("ground truth", item.truth, truth),
                               ("exemplar before", item.exemplar_before, before),
                               ("exemplar after", item.exemplar_after, after)):
        if image is not None and min(image.shape[:2]) < MIN_SCORE_SIDE:
            raise InputError(f"{label} {path}: {image.shape[1]}×{image.shape[0]} pixels is too "
                             f"small to score (at least {MIN_SCORE_SIDE} a side)")
    if "edit" in metrics and truth is not None and truth.shape != query.shape:
        raise InputError(f"ground truth {item.truth} is {truth.shape[1]}×{truth.shape[0]} pixels, "
                         f"the query {query.shape[1]}×{query.shape[0]}: edit fidelity needs "
                         "them equal")
    exemplar_changed = (
        float(np.any(before != after, axis=-1).mean()) if before.shape == after.shape else None
    )
    truth_blobs = (
        new_blobs(query, match_size(truth, query)).count
        if "artefacts" in metrics and truth is not None else None
    )
    return LoadedItem(query, truth, exemplar_changed, truth_blobs)


def score_prediction(row: dict, pred: np.ndarray, loaded: LoadedItem, metrics: tuple[str, ...],
                     *, embedder=None, lpips_options: dict | None = None
                     ) -> tuple[float, int, float] | None:
    """Fill ``row`` with the scores of one prediction; returns the measured pixel scores for
    the set (:meth:`PixelScores.record`), or None without a ground truth. Raises whatever a
    metric raises, having recorded nothing in any set."""
    from ..metrics import perceptual

    query, truth = loaded.query, loaded.truth
    if pred.shape == query.shape:
        row["changed_fraction"] = float(np.any(pred != query, axis=-1).mean())
    if "artefacts" in metrics:
        blobs = new_blobs(query, match_size(pred, query))
        row["artefact_blobs"], row["artefact_area_px"] = blobs.count, blobs.area_px
        row["artefact_long_components"] = blobs.long_components
        if loaded.truth_blobs is not None:
            row["truth_artefact_blobs"] = loaded.truth_blobs
    if truth is None:  # a real pair: what changed, and whether the person is still the same
        if "face" in metrics and embedder is not None:
            from ..metrics.face_similarity import face_similarity

            row["query_similarity"] = face_similarity(embedder, pred, query)
        return None
    measured = PixelScores.measure(pred, truth)
    if "lpips" in metrics:
        row["lpips"] = perceptual.lpips_distance(pred, truth, **(lpips_options or {}))
    if "face" in metrics and embedder is not None:
        from ..metrics.face_similarity import face_similarity

        row["identity_similarity"] = face_similarity(embedder, pred, truth)
    if "edit" in metrics:
        fid = edit_fidelity(query, pred, truth)
        row["edit_recall"], row["edit_epe"] = fid.recall, fid.epe
    return measured


def score(
    bench: Benchmark,
    methods: dict[str, Predictor],
    metrics: tuple[str, ...] = ALL_METRICS,
    *,
    embedder=None,
    lpips_options: dict | None = None,
    on_step: Callable[[], None] | None = None,
    keep_predictions: Callable[[str, Item, np.ndarray, np.ndarray], None] | None = None,
    failures: dict[int, str] | None = None,
) -> dict[str, MethodScores]:
    """Score every method on every item.

    A method that refuses an item (a MirrorError: no prediction, no face, no ground truth)
    gives a row with ``error``. An item that cannot be scored at all (an unreadable or too
    small image, a truth of another size, or any exception while scoring it) gives every
    method a row with ``error`` and ``failed: true``, is added to ``failures`` (index →
    reason) and recorded in no set; the other items go on.
    """
    results = {name: MethodScores(name) for name in methods}
    failures = {} if failures is None else failures

    def failed_row(item: Item, reason: str) -> dict:
        return {"item": item.index, "query": str(item.query), "error": reason, "failed": True,
                "exemplar_changed_fraction": None}

    for item in bench.items:
        try:
            loaded = load_item(item, metrics)
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the others
            failures[item.index] = describe_failure(error)
            for res in results.values():
                res.rows.append(failed_row(item, failures[item.index]))
            if on_step:
                on_step()
            continue
        for name, predict in methods.items():
            row: dict = {"item": item.index, "query": str(item.query), "error": None,
                         "exemplar_changed_fraction": loaded.exemplar_changed}
            try:
                pred = predict(item, loaded.query)
            except MirrorError as error:
                row["error"] = str(error)
                results[name].rows.append(row)
                continue
            except Exception as error:  # noqa: BLE001 - a crash on one item is that item's
                reason = f"{name}: {describe_failure(error)}"
                failures.setdefault(item.index, reason)
                results[name].rows.append(failed_row(item, reason))
                continue
            try:
                pred = np.asarray(pred)
                measured = score_prediction(row, pred, loaded, metrics, embedder=embedder,
                                            lpips_options=lpips_options)
            except Exception as error:  # noqa: BLE001
                reason = f"{name}: {describe_failure(error)}"
                failures.setdefault(item.index, reason)
                results[name].rows.append(failed_row(item, reason))
                continue
            if measured is not None:
                p, s = results[name].pixel.record(*measured)
                row["psnr"], row["ssim"] = min(p, PSNR_CAP), s
            if keep_predictions:
                keep_predictions(name, item, pred,
                                 loaded.truth if loaded.truth is not None else loaded.query)
            results[name].rows.append(row)
        if on_step:
            on_step()
    return results
