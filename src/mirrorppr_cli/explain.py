"""Explain a measured edit in catalog terms: which named operations, at which strengths.

Each catalog operation, at strength +100 and at −100, gives a displacement field on the
exemplar (the inverse map of its warp minus the identity, feathered as applied). The measured
edit (backward optical flow, :class:`~mirrorppr_cli.transfer.Edit`) is fitted as a non-negative
combination of those 16 fields by least squares (scipy's NNLS), sampled on a grid over the
region the edit and the operations cover. A strength is ``100·(c₊ − c₋)``. Fields of small
edits add almost linearly, so the fit reads a composed edit back as its parts; how much of
the measured motion the catalog explains is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .ops import CATALOG, OpRequest, plan_warp
from .transfer import Edit
from .warp import Box, feather_mask, inverse_map_fast, pixel_grid

#: Sampling step (px) of the fit grid, and strengths weaker than this are dropped.
FIT_STEP = 3
MIN_STRENGTH = 5.0


@dataclass(frozen=True)
class Explanation:
    """Fitted operations (strongest first) and the share of the motion they explain."""

    ops: list[OpRequest]
    explained: float
    motion_px: float

    def to_dict(self) -> dict:
        return {
            "ops": [{"name": r.name, "strength": r.strength} for r in self.ops],
            "explained": round(self.explained, 4),
            "mean_motion_px": round(self.motion_px, 4),
        }

    def describe(self) -> str:
        parts = [f"{r.name} {r.strength:+.0f}" for r in self.ops] or ["no catalog operation"]
        return f"{', '.join(parts)} (explains {100 * self.explained:.0f} % of the motion)"


def _field(points: np.ndarray, requests: list[OpRequest], shape: tuple[int, int],
           box: Box) -> np.ndarray:
    """Backward displacement ``(h, w, 2)`` over ``box`` of operations, as applied (feathered)."""
    warp = plan_warp(points, requests)
    out = np.zeros((box.height, box.width, 2))
    if warp.is_identity:
        return out
    mask, mbox = feather_mask(shape, warp.polygons, warp.feather_px)
    inter = Box(max(box.x0, mbox.x0), max(box.y0, mbox.y0), min(box.x1, mbox.x1),
                min(box.y1, mbox.y1))
    if inter.empty:
        return out
    disp = inverse_map_fast(inter, warp.source, warp.target) - pixel_grid(inter)
    m = mask[inter.y0 - mbox.y0 : inter.y1 - mbox.y0, inter.x0 - mbox.x0 : inter.x1 - mbox.x0]
    out[inter.y0 - box.y0 : inter.y1 - box.y0, inter.x0 - box.x0 : inter.x1 - box.x0] = (
        disp * m[..., None]
    )
    return out


def explain(edit: Edit, shape: tuple[int, int]) -> Explanation:
    """Fit catalog strengths to ``edit`` (measured on an image of ``shape`` ``(H, W)``)."""
    if edit.empty:
        return Explanation([], 0.0, 0.0)
    box = edit.box
    sl = (slice(0, box.height, FIT_STEP), slice(0, box.width, FIT_STEP))
    target = edit.flow[sl].reshape(-1)
    columns, labels = [], []
    for name in CATALOG:
        for sign in (1.0, -1.0):
            columns.append(_field(edit.points, [OpRequest(name, 100.0 * sign)], shape, box)[sl]
                           .reshape(-1))
            labels.append((name, sign))
    basis = np.stack(columns, axis=1)
    coef, residual = nnls(basis, target.astype(np.float64))
    total = float(np.sum(target.astype(np.float64) ** 2))
    explained = 1.0 - residual**2 / total if total > 0 else 0.0
    strengths: dict[str, float] = {}
    for (name, sign), c in zip(labels, coef, strict=True):
        strengths[name] = strengths.get(name, 0.0) + sign * 100.0 * c
    ops = [OpRequest(n, round(float(np.clip(s, -100, 100)), 1)) for n, s in strengths.items()
           if abs(s) >= MIN_STRENGTH]
    ops.sort(key=lambda r: -abs(r.strength))
    moving = np.linalg.norm(edit.flow, axis=-1)
    return Explanation(ops, float(explained), float(moving[moving > 0].mean()) if moving.any() else 0.0)


def residual_edit(edit: Edit, explanation: Explanation, shape: tuple[int, int]) -> Edit:
    """What the fitted catalog operations leave of ``edit``: its flow minus their field."""
    if edit.empty or not explanation.ops:
        return edit
    fitted = _field(edit.points, explanation.ops, shape, edit.box).astype(np.float32)
    rest = (edit.flow - fitted) * (edit.weight > 0)[..., None]
    return Edit(rest, edit.weight, edit.box, edit.points,
                float(np.linalg.norm(rest, axis=-1).max()))
