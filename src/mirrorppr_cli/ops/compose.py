"""Several catalog operations → one local warp of one face."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..face_frame import FaceFrame
from ..warp import LocalWarp
from .catalog import MAX_STRENGTH, get_operation

#: Anchors closer than this (face units) to a moving point of *another* operation are
#: dropped: a fixed point next to a moving one would fold the warp between them.
ANCHOR_CLEARANCE = 0.12
#: An operation's own anchors closer than this to one of its moving points are dropped too
#: (dense mesh points can sit a fraction of a pixel apart on small faces).
OWN_ANCHOR_CLEARANCE = 0.08

#: An anchor is dropped when a moving landmark's displacement exceeds this fraction of its
#: distance to that landmark: composed operations can push a point (nearly) onto a fixed
#: one, and similarity MLS then folds the image between them.
MAX_ANCHOR_STRAIN = 0.5

#: Anchors are thinned to at least this spacing (face units): the mesh is denser than a
#: smooth warp needs, and every extra handle adds cost and small-scale wiggles to the map.
ANCHOR_SPACING = 0.06

#: Feather kernel, in face units (inter-ocular distances). 0.25 reproduces the official
#: generator's "5 % of the short side" on face crops, and follows the face elsewhere.
FEATHER_FACE_UNITS = 0.25

_OP_SYNTAX = re.compile(r"^\s*([a-z_]+)\s*=\s*([+-]?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class OpRequest:
    """One named operation at one strength in [−100, 100]."""

    name: str
    strength: float


def parse_op(text: str) -> OpRequest:
    """Parse ``name=strength`` (e.g. ``eye_resize=40``, ``nose_alar=-30``)."""
    match = _OP_SYNTAX.match(text)
    if not match:
        raise UsageError(f"--op {text!r}: expected NAME=STRENGTH, e.g. eye_resize=40")
    name, value = match.group(1), float(match.group(2))
    get_operation(name)
    if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise UsageError(f"--op {text!r}: strength must be between -100 and 100")
    return OpRequest(name, value)


def plan_warp(points: np.ndarray, requests: list[OpRequest]) -> LocalWarp:
    """Compose ``requests`` on one face into a single local warp.

    Each operation's displacements are computed from the *original* landmarks; a landmark
    moved by several operations receives the sum of their displacements; a landmark that
    one operation moves is never an anchor of another.

    Args:
        points: ``(478, 2)`` landmarks ``(x, y)`` px.
    """
    frame = FaceFrame.from_points(points)
    local = frame.to_local(points)
    displacement: dict[int, np.ndarray] = {}
    per_op: list[tuple[np.ndarray, np.ndarray]] = []
    polygons = []
    for req in requests:
        if req.strength == 0:
            continue
        op = get_operation(req.name)
        idx, targets, anchor_idx = op.control_points(points, frame, req.strength)
        for i, target in zip(idx.tolist(), targets, strict=True):
            displacement[i] = displacement.get(i, 0.0) + (target - points[i])
        per_op.append((idx, anchor_idx))
        polygons.append(points[np.concatenate([idx, anchor_idx])])
    moving = sorted(displacement)
    anchors: set[int] = set()
    for k, (own_moving, own_anchors) in enumerate(per_op):
        others = [m for j, (m, _) in enumerate(per_op) if j != k]
        kept = _clear(local, own_anchors, own_moving, OWN_ANCHOR_CLEARANCE)
        if others:
            kept = _clear(local, kept, np.concatenate(others), ANCHOR_CLEARANCE)
        anchors.update(kept.tolist())
    fixed = sorted(anchors.difference(moving))
    shifts = np.array([displacement[i] for i in moving]).reshape(-1, 2)
    fixed = _unstrained(points, fixed, moving, shifts)
    fixed = thinned(local, fixed, ANCHOR_SPACING)
    src = points[moving + fixed]
    dst = src.copy()
    dst[: len(moving)] += shifts
    return LocalWarp(
        source=src, target=dst, polygons=polygons, feather_px=FEATHER_FACE_UNITS * frame.unit
    )


def _clear(local: np.ndarray, anchors: np.ndarray, moving: np.ndarray, clearance: float) -> np.ndarray:
    """``anchors`` without those within ``clearance`` (face units) of any ``moving`` landmark."""
    if len(anchors) == 0 or len(moving) == 0:
        return anchors
    dist = np.linalg.norm(local[anchors][:, None] - local[moving][None], axis=-1).min(axis=1)
    return anchors[dist >= clearance]


def _unstrained(
    points: np.ndarray, anchors: list[int], moving: list[int], shifts: np.ndarray
) -> list[int]:
    """``anchors`` except those a moving landmark would approach too closely (see
    :data:`MAX_ANCHOR_STRAIN`). ``shifts`` are the moving landmarks' displacements in px."""
    if not anchors or not moving:
        return anchors
    dist = np.linalg.norm(points[anchors][:, None] - points[moving][None], axis=-1)
    strain = np.linalg.norm(shifts, axis=1)[None, :] / np.maximum(dist, 1e-9)
    return [a for a, s in zip(anchors, strain.max(axis=1), strict=True) if s <= MAX_ANCHOR_STRAIN]


def thinned(local: np.ndarray, indices: list[int], spacing: float) -> list[int]:
    """Greedy subset of ``indices`` (in order) whose points are ≥ ``spacing`` apart."""
    kept: list[int] = []
    kept_points = np.empty((len(indices), 2))
    for i in indices:
        if not kept or np.min(np.sum((kept_points[: len(kept)] - local[i]) ** 2, axis=1)) >= spacing**2:
            kept_points[len(kept)] = local[i]
            kept.append(i)
    return kept
