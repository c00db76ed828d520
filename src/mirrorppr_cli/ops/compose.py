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
    displacement: dict[int, np.ndarray] = {}
    anchors: set[int] = set()
    polygons = []
    for req in requests:
        if req.strength == 0:
            continue
        op = get_operation(req.name)
        idx, targets, anchor_idx = op.control_points(points, frame, req.strength)
        for i, target in zip(idx.tolist(), targets, strict=True):
            displacement[i] = displacement.get(i, 0.0) + (target - points[i])
        anchors.update(anchor_idx.tolist())
        polygons.append(points[np.concatenate([idx, anchor_idx])])
    moving = sorted(displacement)
    fixed = _clear_anchors(points, frame, moving, sorted(anchors.difference(moving)))
    src = points[moving + fixed]
    dst = src.copy()
    if moving:
        dst[: len(moving)] += np.array([displacement[i] for i in moving])
    return LocalWarp(
        source=src, target=dst, polygons=polygons, feather_px=FEATHER_FACE_UNITS * frame.unit
    )


def _clear_anchors(
    points: np.ndarray, frame: FaceFrame, moving: list[int], anchors: list[int]
) -> list[int]:
    """``anchors`` without those within :data:`ANCHOR_CLEARANCE` of a moving landmark."""
    if not moving or not anchors:
        return anchors
    local = frame.to_local(points)
    dist = np.linalg.norm(local[anchors][:, None] - local[moving][None], axis=-1).min(axis=1)
    return [a for a, d in zip(anchors, dist, strict=True) if d >= ANCHOR_CLEARANCE]
