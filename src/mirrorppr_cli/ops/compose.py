"""Several catalog operations → one local warp of one face."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..geometric.face_frame import FaceFrame
from ..geometric.mls import LocalWarp
from .catalog import distances, get_operation, pairwise_distances
from .request import MAX_STRENGTH, OpRequest

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

#: Extra handles along an operation's ``chains`` are spaced at most this far apart (face
#: units): the silhouette's landmarks are 0.1–0.25 apart, and between handles that far apart
#: similarity MLS lets the contour lag to ≈ 60 % of its move.
CHAIN_SPACING = 0.04

_OP_SYNTAX = re.compile(r"^\s*([a-z_]+)\s*=\s*([+-]?\d+(?:\.\d+)?)\s*$")


def parse_op(text: str) -> OpRequest:
    """Parse ``name=strength`` (e.g. ``eye_resize=40``, ``nose_alar=-30``)."""
    match = _OP_SYNTAX.match(text)
    if not match:
        raise UsageError(f"--op {text!r}: expected NAME=STRENGTH, e.g. eye_resize=40")
    name, value = match.group(1), float(match.group(2))
    from .body_catalog import is_body_operation  # body ops share the --op syntax

    if not is_body_operation(name):
        get_operation(name)
    if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise UsageError(f"--op {text!r}: strength must be between -100 and 100")
    return OpRequest(name, value)


def plan_warp(points: np.ndarray, requests: list[OpRequest],
              layouts: dict | None = None) -> LocalWarp:
    """Compose ``requests`` on one face into a single local warp.

    Each operation's displacements are computed from the *original* landmarks; a landmark
    moved by several operations receives the sum of their displacements; a landmark that
    one operation moves is never an anchor of another. Halo points of contour operations
    (fixed points outside the face, :attr:`Operation.halo`) follow the same clearance and
    strain rules as anchors and come last among the control points.

    Args:
        points: ``(478, 2)`` landmarks ``(x, y)`` px.
        layouts: a dict to keep each operation's strength-independent parts in (anchors,
            halo, polygons), for callers that plan the same operations on the same face many
            times (:func:`~mirrorppr_cli.geometric.fit.explain`); None: computed afresh.
    """
    layouts = {} if layouts is None else layouts
    frame, local, distances = _face(points, layouts)
    shift_sum = np.zeros((len(points), 2))  # summed displacement of each moving landmark, px
    is_moving = np.zeros(len(points), bool)
    per_op: list[tuple[np.ndarray, np.ndarray]] = []
    halos: list[np.ndarray] = []
    chains: set[tuple[int, int]] = set()
    polygons = []
    for req in requests:
        if req.strength == 0:
            continue
        op = get_operation(req.name)
        chains.update(
            (a, b) for chain in op.chains for a, b in zip(chain[:-1], chain[1:], strict=True)
        )
        layout = _layout(op, points, frame, local, distances, layouts)
        idx, targets = op.targets(points, frame, req.strength, local)
        np.add.at(shift_sum, idx, targets - points[idx])
        is_moving[idx] = True
        per_op.append((idx, layout.anchor_idx))  # own-clearance applied
        halos.append(layout.halo_local)
        polygons.extend(layout.polygons)
    moving = np.flatnonzero(is_moving).tolist()
    anchors: set[int] = set()
    halo_kept: list[np.ndarray] = []
    for k, (_, own_anchors) in enumerate(per_op):
        others = [m for j, (m, _) in enumerate(per_op) if j != k]
        kept = own_anchors
        if others:
            kept = _clear(distances, kept, np.concatenate(others), ANCHOR_CLEARANCE)
            halos[k] = _clear_points(halos[k], local[np.concatenate(others)], ANCHOR_CLEARANCE)
        anchors.update(kept.tolist())
        halo_kept.append(halos[k])
    fixed = sorted(anchors.difference(moving))
    shifts = shift_sum[moving].reshape(-1, 2)
    fixed = _unstrained(distances, frame.unit, fixed, moving, shifts)
    extra_src, extra_shift = _chain_handles(points, local, sorted(chains), shift_sum,
                                            is_moving)
    if len(extra_src):
        fixed = [i for i, keep in zip(
            fixed, _unstrained_points(points[fixed], extra_src, extra_shift), strict=True) if keep]
    # often the same for an operation at + and − strength
    key = ("thinned", np.ascontiguousarray(points, np.float64).tobytes(), tuple(fixed))
    if key not in layouts:
        layouts[key] = thinned(local, fixed, ANCHOR_SPACING, distances)
    fixed = list(layouts[key])
    src = points[moving + fixed]
    if len(extra_src):
        src = np.concatenate([src, extra_src])
    if len(halo_kept) > 1:
        halo = np.unique(np.concatenate(halo_kept), axis=0)
    else:  # one operation's halo points are distinct already
        halo = halo_kept[0] if halo_kept else np.empty((0, 2))
    if len(halo):
        halo = frame.to_image(halo)
        keep = _unstrained_points(halo, points[moving], shifts)
        if len(extra_src):
            keep &= _unstrained_points(halo, extra_src, extra_shift)
        src = np.concatenate([src, halo[keep]])
    dst = src.copy()
    dst[: len(moving)] += shifts
    dst[len(moving) + len(fixed) : len(moving) + len(fixed) + len(extra_src)] += extra_shift
    return LocalWarp(
        source=src, target=dst, polygons=polygons, feather_px=FEATHER_FACE_UNITS * frame.unit
    )


@dataclass(frozen=True)
class _Layout:
    """What an operation's warp on one face needs that its strength does not change: its
    anchors (already clear of its own moving points), halo (face units) and polygons (px)."""

    anchor_idx: np.ndarray
    halo_local: np.ndarray
    polygons: list[np.ndarray]


def _face(points: np.ndarray, cache: dict) -> tuple[FaceFrame, np.ndarray, np.ndarray]:
    """``(frame, local landmarks, their pairwise distances)`` of the face, from ``cache``."""
    key = ("face", np.ascontiguousarray(points, np.float64).tobytes())
    if key not in cache:
        frame = FaceFrame.from_points(points)
        local = frame.to_local(points)
        distances = pairwise_distances(local)
        local.flags.writeable = distances.flags.writeable = False
        cache[key] = (frame, local, distances)
    return cache[key]


def _layout(op, points: np.ndarray, frame: FaceFrame, local: np.ndarray,
            distances: np.ndarray, cache: dict) -> _Layout:
    """``op``'s :class:`_Layout` on the face ``points``, from ``cache`` when it holds it."""
    key = (op.name, np.ascontiguousarray(points, np.float64).tobytes())
    found = cache.get(key)
    if found is None:
        moving_idx = op.moving_indices()
        anchor_idx = op.anchors(local, moving_idx, distances)
        found = _Layout(_clear(distances, anchor_idx, moving_idx, OWN_ANCHOR_CLEARANCE),
                        frame.to_local(op.halo_points(points, frame)),
                        op.polygons(points, frame, moving_idx, anchor_idx, distances))
        for array in (found.anchor_idx, found.halo_local, *found.polygons):
            array.flags.writeable = False
        cache[key] = found
    return found


def _clear(distances: np.ndarray, anchors: np.ndarray, moving: np.ndarray,
           clearance: float) -> np.ndarray:
    """``anchors`` without those within ``clearance`` (face units) of any ``moving`` landmark;
    ``distances``: the face's :func:`~mirrorppr_cli.ops.catalog.pairwise_distances`."""
    if len(anchors) == 0 or len(moving) == 0:
        return anchors
    return anchors[distances[moving].min(axis=0)[anchors] >= clearance]  # symmetric


def _chain_handles(
    points: np.ndarray, local: np.ndarray, segments: list[tuple[int, int]],
    displacement: np.ndarray, is_moving: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Handles along chain ``segments`` between moving landmarks: ``(positions px, shifts px)``.

    ``displacement``: ``(478, 2)`` px, each landmark's summed displacement; ``is_moving``:
    ``(478,)`` bool. Each segment gets evenly spaced handles at most :data:`CHAIN_SPACING`
    apart, each at the linear interpolation of the two ends' positions and displacements.
    """
    ends = np.asarray(segments, np.int64).reshape(-1, 2)
    ends = ends[is_moving[ends[:, 0]] & is_moving[ends[:, 1]]]
    a, b = ends[:, 0], ends[:, 1]
    counts = np.ceil(np.sqrt(((local[b] - local[a]) ** 2).sum(axis=1)) / CHAIN_SPACING)
    inner = np.maximum(counts.astype(np.int64) - 1, 0)  # handles strictly between the ends
    if not inner.sum():
        return np.empty((0, 2)), np.empty((0, 2))
    segment = np.repeat(np.arange(len(ends)), inner)
    step = np.arange(len(segment)) - np.repeat(np.cumsum(inner) - inner, inner) + 1
    t = (step / counts[segment])[:, None]
    a, b = a[segment], b[segment]
    return (points[a] + t * (points[b] - points[a]),
            displacement[a] + t * (displacement[b] - displacement[a]))


def _clear_points(candidates: np.ndarray, moving: np.ndarray, clearance: float) -> np.ndarray:
    """Local ``candidates`` ``(H, 2)`` without those within ``clearance`` of a ``moving`` point."""
    if len(candidates) == 0 or len(moving) == 0:
        return candidates
    return candidates[distances(candidates, moving).min(axis=1) >= clearance]


def _unstrained_points(
    candidates: np.ndarray, handles: np.ndarray, shifts: np.ndarray
) -> np.ndarray:
    """Boolean mask: fixed ``candidates`` (px) that no moving ``handles`` (px, displaced by
    ``shifts``) would strain beyond :data:`MAX_ANCHOR_STRAIN`."""
    if len(candidates) == 0 or len(handles) == 0:
        return np.ones(len(candidates), bool)
    dist = distances(candidates, handles)
    strain = np.linalg.norm(shifts, axis=1)[None, :] / np.maximum(dist, 1e-9)
    return strain.max(axis=1) <= MAX_ANCHOR_STRAIN


def _unstrained(
    distances: np.ndarray, unit: float, anchors: list[int], moving: list[int], shifts: np.ndarray
) -> list[int]:
    """``anchors`` except those a moving landmark would approach too closely (see
    :data:`MAX_ANCHOR_STRAIN`). ``distances``: the landmarks' pairwise distances in face
    units of ``unit`` px; ``shifts`` are the moving landmarks' displacements in px."""
    if not anchors or not moving:
        return anchors
    dist = distances[moving][:, anchors].T * unit  # symmetric: rows are columns
    strain = np.linalg.norm(shifts, axis=1)[None, :] / np.maximum(dist, 1e-9)
    keep = strain.max(axis=1) <= MAX_ANCHOR_STRAIN
    return [a for a, k in zip(anchors, keep.tolist(), strict=True) if k]


def thinned(local: np.ndarray, indices: list[int], spacing: float,
            distances: np.ndarray | None = None) -> list[int]:
    """Greedy subset of ``indices`` (in order) whose points are ≥ ``spacing`` apart.

    ``distances``: :func:`~mirrorppr_cli.ops.catalog.pairwise_distances` of ``local``, when
    the caller has it.
    """
    if not indices:
        return []
    if distances is None:
        close = pairwise_distances(local[indices]) < spacing
    else:
        close = distances[np.ix_(indices, indices)] < spacing
    far = ~close
    alive = np.ones(len(indices), bool)  # not yet kept, and no kept point within `spacing`
    kept: list[int] = []
    k = 0
    while True:  # k: the first point still alive; everything before it is decided
        kept.append(indices[k])
        alive &= far[k]
        alive[k] = False
        k = int(alive.argmax())
        if not alive[k]:
            return kept
