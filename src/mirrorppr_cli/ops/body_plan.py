"""Body operations planned on one body into one confined MLS warp, and applied.

The operations are :mod:`mirrorppr_cli.ops.body_catalog`'s.

**Confinement: why background lines stay straight.** The MLS field of a few moving outline
points is non-zero everywhere; left alone it would bend the whole background a little. The
planned inverse map is therefore ``x ↦ x + W(x)·D(x)``, with ``D`` the MLS displacement and
``W = W_person · W_region · W_face``:

* ``W_person`` is 1 on the person (and up to ``r0`` px outside it, ``r0`` = the largest outward
  move, so thickened outlines reach their targets), falls with a smoothstep to exactly 0 over a
  margin of ``m = max(MIN_MARGIN_PX, MARGIN_PER_SHIFT × largest move)`` px outside the person
  (distance transform of the person mask), and is 0 beyond;
* ``W_region`` is 1 within :data:`REGION_INNER` body units of a moving point and falls to
  exactly 0 at :data:`REGION_OUTER`, so other body parts are not touched;
* ``W_face`` is 0 on the face (an ellipse from the pose's eyes, ears and mouth, see
  :meth:`mirrorppr_cli.geometric.body.Body.face_zone`) and rises to 1 just outside it: body edits never
  move the face.

Only pixels with ``W > 0`` are resampled; every other pixel is copied bit for bit. Background
farther than ``r0 + m`` from the person is thus unchanged, and straight lines there stay exactly
straight. Inside the band the displacement is at most the outline's own move, points the way the
outline moves (along its normal), and fades to 0 across the band; a background line crossing the
band along the outline normal slides along itself (stays straight), one running parallel to the
outline inside the band shifts by up to the outline's move (that is the background filling the
space a slimmed body part leaves, or making room for a widened one). Measured at strength ±100
(``tests/test_body_ops.py``): grid lines behind the astronaut bend by at most 4.7–7.1 px inside
the band (0.4–0.6 × the outline's move of 9.7–11.7 px), behind a synthetic figure by 1.0–6.3 px
(moves 4.3–9.6 px); beyond the band they are unchanged. With ``MARGIN_PER_SHIFT = 3`` the
band's stretch stays moderate: the Jacobian determinant of every single-operation map stayed
above 0.25 on the development photos, and of the composition of all five above 0.2.

Several operations compose as successive warps (see :func:`plan_body_warp`): each stage is
one-to-one, so their composition is too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import UsageError
from ..geometric.body import Body
from ..geometric.box import Box
from ..geometric.mls import inverse_map_fast, pixel_grid
from .body_catalog import (
    BODY_CATALOG,
    RING,
    BodyPartNotVisible,
    get_body_operation,
    min_distance,
    smoothstep,
)
from .request import MAX_STRENGTH, OpRequest

#: ``W_region``: 1 within REGION_INNER body units of a moving control point, 0 beyond
#: REGION_OUTER.
REGION_INNER = 0.2
REGION_OUTER = 0.4
#: ... where the moving points that count are those moving at least this fraction of the
#: largest move.
REGION_SEED = 0.25
#: Confinement margin outside the person: ``max(MIN_MARGIN_PX, MARGIN_PER_SHIFT · largest move)``.
MIN_MARGIN_PX = 3.0
MARGIN_PER_SHIFT = 3.0
#: A fixed point is dropped when a moving point's displacement exceeds this fraction of the
#: distance between them (the MLS map would fold between them).
MAX_ANCHOR_STRAIN = 0.5
#: Fixed points are thinned to this spacing (body units).
ANCHOR_SPACING = 0.03
#: ``W_face`` (the face is never moved): 0 inside the face ellipse, 1 beyond this many times
#: its size.
FACE_FEATHER = 1.3
#: ... and reaches this many times higher above its centre than below (the hair).
FACE_UP = 1.6
#: Coarse-grid spacing of the MLS evaluation, body units (clipped to 2–8 px).
GRID_UNITS = 0.02


@dataclass(frozen=True, eq=False)
class BodyStage:
    """One operation's warp on one body, as planned.

    Attributes:
        name / strength: the request.
        source / target: ``(N, 2)`` control points in this stage's input / where they go in
            its output (``moving`` moving points first, then the fixed ones), px.
        box: the output pixels this stage may change (bounding box of ``weight > 0``).
        weight: ``(box.height, box.width)`` float32 ``W`` in [0, 1] (module docstring).
        displacement: ``(box.height, box.width, 2)`` float32 ``W(x)·D(x)``: output pixel ``x``
            samples the stage's input at ``x + displacement``.
        margin_px: the confinement band's width outside the person (``m``), px.
        reach_px: ``r0``, how far outside the person ``W`` stays 1, px.
        max_shift_px: the largest control-point move, px.
        shape: ``(H, W)`` of the image.
    """

    name: str
    strength: float
    source: np.ndarray
    target: np.ndarray
    moving: int
    box: Box
    weight: np.ndarray
    displacement: np.ndarray
    margin_px: float
    reach_px: float
    max_shift_px: float
    shape: tuple[int, int]

    def displacement_at(self, positions: np.ndarray) -> np.ndarray:
        """``W·D`` sampled (bilinearly) at output positions ``(..., 2)`` float32 ``(x, y)``:
        0 away from the box inside the image, the nearest edge value beyond the image."""
        height, width = self.shape
        b = self.box
        pads = (int(b.y0 > 0), int(b.y1 < height), int(b.x0 > 0), int(b.x1 < width))
        field = np.pad(self.displacement, ((pads[0], pads[1]), (pads[2], pads[3]), (0, 0)))
        return cv2.remap(
            field,
            positions[..., 0] - (b.x0 - pads[2]),
            positions[..., 1] - (b.y0 - pads[0]),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


@dataclass(frozen=True, eq=False)
class BodyWarp:
    """A planned body warp: the stages (one per operation) and their composed sampling map.

    Attributes:
        stages: the operations, in the order they act on the image.
        box: the output pixels that may change (union of the stages' boxes).
        weight: ``(box.height, box.width)`` float32: the largest stage weight ``W`` at each pixel;
            pixels where it is 0 are copied unchanged.
        sample_map: ``(box.height, box.width, 2)`` float32 input ``(x, y)`` each output pixel of
            ``box`` samples (the stages' maps composed).
    """

    stages: tuple[BodyStage, ...]
    box: Box
    weight: np.ndarray
    sample_map: np.ndarray

    @property
    def is_identity(self) -> bool:
        return not self.stages or self.box.empty

    @property
    def margin_px(self) -> float:
        return max((st.margin_px for st in self.stages), default=0.0)

    @property
    def reach_px(self) -> float:
        return max((st.reach_px for st in self.stages), default=0.0)

    @property
    def max_shift_px(self) -> float:
        return max((st.max_shift_px for st in self.stages), default=0.0)

    @staticmethod
    def identity() -> BodyWarp:
        return BodyWarp(
            (), Box(0, 0, 0, 0), np.zeros((0, 0), np.float32), np.zeros((0, 0, 2), np.float32)
        )

    def changed(self, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` bool: the pixels the warp may change (``W > 0``); all others are
        returned bit-identical by :func:`apply_body_warp`."""
        out = np.zeros(shape, bool)
        if not self.box.empty:
            out[self.box.slices()] = self.weight > 0
        return out


def validate(requests: list[OpRequest]) -> None:
    """UsageError unless every request names a body operation with a strength in ±100."""
    for req in requests:
        get_body_operation(req.name)
        if not math.isfinite(req.strength) or abs(req.strength) > MAX_STRENGTH:
            raise UsageError(f"{req.name}: strength must be between -100 and 100")


def plan_body_warp(body: Body, requests: list[OpRequest], *, strict: bool = True) -> BodyWarp:
    """Plan body operations on one person as one warp.

    Operations act one after the other, in catalog order (so the order of ``requests`` does
    not matter): each is planned on the person's outline as the previous ones left it (the
    person mask is warped along; the pose landmarks and the body frame stay those of
    ``body``), and the stages' sampling maps are composed. Each stage's map is one-to-one
    (checked in the tests), so their composition is too, however the operations overlap.

    Args:
        body: from :func:`mirrorppr_cli.geometric.body.detect_body` (or :meth:`Body.from_landmarks`).
        requests: body operations and strengths in [−100, 100].
        strict: when True, an operation whose body part is not visible raises
            :class:`BodyPartNotVisible`; when False it is skipped.
    """
    validate(requests)
    order = {name: k for k, name in enumerate(BODY_CATALOG)}
    todo = sorted((r for r in requests if r.strength != 0), key=lambda r: order[r.name])
    stages: list[BodyStage] = []
    current = body
    for k, req in enumerate(todo):
        try:
            stage = plan_stage(current, req)
        except BodyPartNotVisible:
            if strict:
                raise
            continue
        if stage is None:
            continue
        stages.append(stage)
        if k + 1 < len(todo):
            mask = _warp_array(current.mask, stage.box, stage.weight, _stage_map(stage))
            current = Body(body.points, body.visibility, mask, body.frame)
    return _compose(stages)


def plan_stage(body: Body, request: OpRequest) -> BodyStage | None:
    """One operation's confined warp on ``body`` (None when it moves nothing).

    Raises:
        BodyPartNotVisible: the operation's body part is not on the person's outline.
    """
    unit = body.frame.unit
    ctl = get_body_operation(request.name).controls(body, request.strength)
    source, shift = ctl.source, ctl.shift
    max_shift = float(np.linalg.norm(shift, axis=1).max(initial=0.0))
    if max_shift < 1e-6:
        return None

    # Confinement band and the ring of fixed points at its outer edge.
    contour = body.contour
    reach = _outward_reach(ctl.keys, shift, contour.normals)
    margin = max(MIN_MARGIN_PX, MARGIN_PER_SHIFT * max_shift)
    offset = reach + margin + 1.0
    ring = contour.points + offset * contour.normals
    height, width = body.shape
    inside = (
        (ring[:, 0] >= 0)
        & (ring[:, 0] <= width - 1)
        & (ring[:, 1] >= 0)
        & (ring[:, 1] <= height - 1)
    )
    ring = ring[inside & ~contour.on_border]
    ring = ring[_sample_at(body.outside_distance, ring) >= 0.9 * (reach + margin)]
    ring = ring[min_distance(ring, source) <= RING * unit]

    fixed = np.concatenate([ctl.anchors, ring])
    fixed = fixed[min_distance(fixed, source) > 1e-6]
    fixed = fixed[_max_strain(fixed, source, shift) <= MAX_ANCHOR_STRAIN]
    fixed = _thinned(fixed, ANCHOR_SPACING * unit)

    weight, box = _weight(body, source, shift, reach, margin)
    if box.empty:
        return None
    src = np.concatenate([source, fixed])
    dst = src.copy()
    dst[: len(source)] += shift
    grid = int(np.clip(round(GRID_UNITS * unit), 2, 8))
    here = pixel_grid(box)
    # the map is needed only where W > 0 (elsewhere it is multiplied by 0)
    disp = weight[..., None].astype(np.float64) * (
        inverse_map_fast(box, src, dst, grid=grid, needed=weight > 0) - here
    )
    return BodyStage(
        name=request.name,
        strength=float(request.strength),
        source=src,
        target=dst,
        moving=len(source),
        box=box,
        weight=weight,
        displacement=disp.astype(np.float32),
        margin_px=float(margin),
        reach_px=float(reach),
        max_shift_px=max_shift,
        shape=(height, width),
    )


def _stage_map(stage: BodyStage) -> np.ndarray:
    return (pixel_grid(stage.box) + stage.displacement).astype(np.float32)


def _compose(stages: list[BodyStage]) -> BodyWarp:
    """The stages' maps composed: output ``x`` samples ``S_1(S_2(…S_n(x)))``."""
    if not stages:
        return BodyWarp.identity()
    boxes = [st.box for st in stages]
    box = Box(
        min(b.x0 for b in boxes),
        min(b.y0 for b in boxes),
        max(b.x1 for b in boxes),
        max(b.y1 for b in boxes),
    )
    weight = np.zeros((box.height, box.width), np.float32)
    for st in stages:
        rows = slice(st.box.y0 - box.y0, st.box.y1 - box.y0)
        cols = slice(st.box.x0 - box.x0, st.box.x1 - box.x0)
        np.maximum(weight[rows, cols], st.weight, out=weight[rows, cols])
    positions = pixel_grid(box).astype(np.float32)
    for st in reversed(stages):
        positions = positions + st.displacement_at(positions)
    return BodyWarp(stages=tuple(stages), box=box, weight=weight, sample_map=positions)


def _outward_reach(keys: list[int], shift: np.ndarray, normals: np.ndarray) -> float:
    """The largest outward component of an outline sample's move, px (0 if none moves out)."""
    out = float(np.max(np.sum(shift * normals[keys], axis=1), initial=0.0))
    return out + 0.5 if out > 0 else 0.0


def _sample_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    idx = np.rint(points).astype(int)
    return image[idx[:, 1], idx[:, 0]]


def _max_strain(fixed: np.ndarray, source: np.ndarray, shift: np.ndarray) -> np.ndarray:
    if len(fixed) == 0:
        return np.zeros(0)
    size = np.linalg.norm(shift, axis=1)
    out = np.zeros(len(fixed))
    step = max(1, 2_000_000 // len(source))
    for i in range(0, len(fixed), step):
        d = np.linalg.norm(fixed[i : i + step, None] - source[None], axis=-1)
        out[i : i + step] = (size[None] / np.maximum(d, 1e-9)).max(axis=1)
    return out


def _thinned(points: np.ndarray, spacing: float) -> np.ndarray:
    """Greedy subset of ``points`` (in order) at least ``spacing`` apart."""
    if len(points) == 0:
        return points.reshape(0, 2)
    cell = np.floor(points / spacing).astype(np.int64)
    kept: list[int] = []
    grid: dict[tuple[int, int], list[int]] = {}
    for i, (cx, cy) in enumerate(cell):
        close = False
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in grid.get((cx + dx, cy + dy), ()):
                    if np.sum((points[i] - points[j]) ** 2) < spacing**2:
                        close = True
                        break
        if not close:
            kept.append(i)
            grid.setdefault((cx, cy), []).append(i)
    return points[kept]


def _weight(
    body: Body, source: np.ndarray, shift: np.ndarray, reach: float, margin: float
) -> tuple[np.ndarray, Box]:
    """``W = W_person · W_region`` (module docstring) and the bounding box of ``W > 0``.

    ``W_region`` is exactly 0 farther than :data:`REGION_OUTER` body units from every seed, so
    everything is worked in the seeds' box grown by that much (the same values as over the
    whole image: the distance transform is exact, the rest per pixel)."""
    height, width = body.shape
    unit = body.frame.unit
    size = np.linalg.norm(shift, axis=1)
    significant = size >= REGION_SEED * size.max()
    seeds = np.concatenate([source[significant], (source + shift)[significant]])
    idx = np.rint(seeds).astype(int)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < width) & (idx[:, 1] >= 0) & (idx[:, 1] < height)
    if not ok.any():
        return np.zeros((0, 0), np.float32), Box(0, 0, 0, 0)
    idx = idx[ok]
    pad = int(np.ceil(REGION_OUTER * unit)) + 1
    crop = Box(max(int(idx[:, 0].min()) - pad, 0), max(int(idx[:, 1].min()) - pad, 0),
               min(int(idx[:, 0].max()) + pad + 1, width),
               min(int(idx[:, 1].max()) + pad + 1, height))
    person = 1.0 - smoothstep(body.outside_distance[crop.slices()], reach, reach + margin)
    canvas = np.full((crop.height, crop.width), 255, np.uint8)
    canvas[idx[:, 1] - crop.y0, idx[:, 0] - crop.x0] = 0
    near = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    region = 1.0 - smoothstep(near, REGION_INNER * unit, REGION_OUTER * unit)
    weight = (person * region * _face_guard(body, crop)).astype(np.float32)
    weight[weight < 1e-4] = 0.0
    ys, xs = np.nonzero(weight > 0)
    if len(xs) == 0:
        return np.zeros((0, 0), np.float32), Box(0, 0, 0, 0)
    box = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return (np.ascontiguousarray(weight[box.slices()]),
            Box(crop.x0 + box.x0, crop.y0 + box.y0, crop.x0 + box.x1, crop.y0 + box.y1))


def _face_guard(body: Body, box: Box | None = None) -> np.ndarray | float:
    """``W_face`` over ``box`` (default the whole image): 0 inside the face ellipse
    (:meth:`Body.face_zone`, stretched upwards by :data:`FACE_UP` to cover the hair), rising to
    1 at :data:`FACE_FEATHER` times its size."""
    zone = body.face_zone()
    if zone is None:
        return 1.0
    centre, half_u, half_v = zone
    height, width = body.shape
    local = body.frame.to_local(pixel_grid(Box.full(height, width) if box is None else box))
    # Above its centre the zone reaches higher, over the hair.
    dv = local[..., 1] - centre[1]
    dv = np.where(dv < 0, dv / FACE_UP, dv)
    r = np.hypot((local[..., 0] - centre[0]) / half_u, dv / half_v)
    return smoothstep(r, 1.0, FACE_FEATHER)


def apply_body_warp(pixels: np.ndarray, warp: BodyWarp) -> np.ndarray:
    """Resample ``pixels`` (``(H, W)`` or ``(H, W, C)``, any dtype cv2 can remap; bool is
    taken as 0/1) through ``warp``. Pixels outside :meth:`BodyWarp.changed` are returned
    bit-identical."""
    if warp.is_identity:
        return pixels.copy()
    return _warp_array(pixels, warp.box, warp.weight, warp.sample_map)


def _warp_array(
    pixels: np.ndarray, box: Box, weight: np.ndarray, sample_map: np.ndarray
) -> np.ndarray:
    squeeze = pixels.ndim == 2
    work = pixels[..., None] if squeeze else pixels
    is_bool = work.dtype == bool
    if is_bool:
        work = work.astype(np.uint8) * 255
    parts = []
    for start in range(0, work.shape[2], 4):  # cv2.remap handles at most 4 channels
        chunk = np.ascontiguousarray(work[..., start : start + 4])
        res = cv2.remap(
            chunk,
            sample_map[..., 0],
            sample_map[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        parts.append(res.reshape(res.shape[0], res.shape[1], -1))
    warped = np.concatenate(parts, axis=2)
    out = work.copy()
    np.copyto(out[box.slices()], warped, where=(weight > 0)[..., None])
    if is_bool:
        out = out >= 128
    return out[..., 0] if squeeze else out


def apply_body_ops(
    rgb: np.ndarray, body: Body, requests: list[OpRequest], *, strict: bool = True
) -> np.ndarray:
    """Apply body operations to ``rgb`` (``(H, W, C)``): :func:`plan_body_warp` then
    :func:`apply_body_warp`. Pixels the warp does not reach are returned bit-identical."""
    if rgb.shape[:2] != body.shape:
        raise ValueError(f"image {rgb.shape[:2]} and body mask {body.shape} differ in size")
    return apply_body_warp(rgb, plan_body_warp(body, requests, strict=strict))
