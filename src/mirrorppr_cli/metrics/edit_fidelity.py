"""Edit fidelity: did the prediction move the query's pixels the way the ground truth did?

PSNR barely notices a structural edit that was not made (few pixels move, by a few pixels),
so this metric compares motions directly. Dense optical flow (OpenCV's DIS, medium preset,
on grey levels) is computed from the query to the ground truth and from the query to the
prediction. Over the pixels the ground truth moves by at least :data:`MOVED_PX`:

* ``epe``: mean end-point error ``|flow_pred − flow_gt|`` in pixels;
* ``recall``: ``1 − epe / mean |flow_gt|`` — 0 for the unchanged query, 1 for a perfect
  transfer, 0.5 for an edit made at half strength, negative for a wrong one.

The prediction is resized bilinearly to the ground truth's size first; the query must have
the ground truth's size (it does in the official layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .pixel import match_size

#: Pixels the ground truth moves less than this (px) do not count as edited.
MOVED_PX = 0.5


@dataclass(frozen=True)
class EditFidelity:
    """``recall`` and ``epe`` over ``moved_pixels`` pixels (``nan`` when none moved)."""

    recall: float
    epe: float
    gt_motion: float
    moved_pixels: int


def _grey(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        scale = 255.0 if not np.issubdtype(arr.dtype, np.integer) else 255.0 / np.iinfo(arr.dtype).max
        arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(arr)


def dense_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` float32 flow ``(dx, dy)``: where each source pixel is found in ``target``.

    A plain DIS preset on purpose, not the refined estimator ``retouch`` measures edits with:
    a method should not be scored by its own instrument. Both flows of a comparison come from
    this same estimator, so its bias (it under-reads sub-pixel motion) largely cancels.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(source), _grey(target), None)


def edit_fidelity(query: np.ndarray, prediction: np.ndarray, truth: np.ndarray) -> EditFidelity:
    """Score how well ``prediction`` reproduces the motion from ``query`` to ``truth``."""
    if query.shape[:2] != truth.shape[:2]:
        raise ValueError(f"query {query.shape[:2]} and ground truth {truth.shape[:2]} differ in size")
    prediction = match_size(np.asarray(prediction), np.asarray(truth))
    flow_gt = dense_flow(query, truth)
    flow_pred = dense_flow(query, prediction)
    magnitude = np.linalg.norm(flow_gt, axis=-1)
    moved = magnitude >= MOVED_PX
    if not moved.any():
        return EditFidelity(math.nan, math.nan, 0.0, 0)
    epe = float(np.linalg.norm(flow_pred - flow_gt, axis=-1)[moved].mean())
    motion = float(magnitude[moved].mean())
    return EditFidelity(1.0 - epe / motion, epe, motion, int(moved.sum()))
