"""Carry a field measured on the exemplar into the query, through landmark correspondence.

For a query output pixel ``v``: ``u = T(v)`` its exemplar point (similarity MLS from query to
exemplar handles, evaluated on a node grid and smoothed), and the query is sampled at
``v + J(v)⁻¹·e(u)``. The result is an ``(H, W, 2)``-style backward field on the query, computed
only inside the box the exemplar's motion can reach (:data:`REACH_SIGMAS`). Mirrored queries
flip the correspondence (:func:`_flip`). Conventions: :mod:`mirrorppr_cli.geometric`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .box import Box, gaussian_radius, grown, nonzero, nonzero_box
from .face import is_mirrored
from .face_frame import FaceFrame
from .field import (
    MIN_OFFSET_PX,
    MIN_SMOOTH_PX,
    SMOOTH_SIGMA,
    WORK_SIGMA_PX,
    smoothstep,
    unfolded_coarse,
)
from .landmark_mirror import MIRROR
from .mls import blend_into, grid_nodes, interpolate_planes, mls_similarity, remap_xy
from .motion import Edit

#: Node spacing (px) of the query-side correspondence grid.
GRID = 4


def _query_box(b: Box, handles_exemplar: np.ndarray, handles_query: np.ndarray,
               shape: tuple[int, int], reflect: bool = False) -> Box:
    """The query region an edit over the exemplar box ``b`` can reach, mapped through the
    handles (``reflect``: ``handles_query`` are reflected, x → −x, and so is what they give)."""
    xs = np.linspace(b.x0, b.x1 - 1, 9)
    ys = np.linspace(b.y0, b.y1 - 1, 9)
    outline = np.array([(x, y) for x in xs for y in (ys[0], ys[-1])]
                       + [(x, y) for y in ys for x in (xs[0], xs[-1])], np.float64)
    mapped = mls_similarity(outline, handles_exemplar, handles_query) * _flip(reflect)
    margin = 0.1 * max(mapped.ptp(axis=0))
    height, width = shape
    x0, y0 = np.floor(mapped.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(mapped.max(axis=0) + margin).astype(int) + 1
    return Box(int(max(x0, 0)), int(max(y0, 0)), int(min(x1, width)), int(min(y1, height)))


def _sample(field: np.ndarray, box: Box, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (``(h, w, K)`` over ``box``) at image points ``(..., 2)``;
    zero outside."""
    maps = (points - [box.x0, box.y0]).astype(np.float32)
    out = cv2.remap(field.astype(np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(*points.shape[:-1], -1)


#: Smoothing of the landmark correspondence (query face units): MLS between two faces' noisy
#: landmarks bends between neighbouring handles (1–3 px of jitter, handles 0.05 units apart);
#: the edit moves features as wholes, so the correspondence need not follow it finer.
CORRESPONDENCE_SIGMA = 0.05


#: The correspondence itself is evaluated on nodes this many smoothing σ apart (a multiple
#: of :data:`GRID`, at least GRID), then smoothed and interpolated bilinearly to the GRID
#: nodes: a Gaussian-smoothed function sampled at σ/2 loses nothing visible, and a large face
#: needs far fewer MLS evaluations.
CORRESPONDENCE_STEP_SIGMAS = 0.5


#: The query region where a carried field can be non-zero is its non-zero part's box mapped
#: as the query box is (:func:`_query_box`), grown by this many correspondence σ: the mapping
#: (exemplar → query MLS) is not the inverse of the smoothed correspondence between two faces'
#: noisy landmarks; on the nine survey pairs the carried motion reached up to 3.3 σ beyond it.
REACH_SIGMAS = 4.0
#: Carried offsets must stay this many ``grid`` nodes inside the nodes whose correspondence was
#: evaluated (:func:`_carried_offsets`); closer, the field may reach beyond them, and the
#: correspondence is evaluated over the whole box instead.
REACH_RING_NODES = 2


def _correspondence(box: Box, q_h: np.ndarray, ex_h: np.ndarray, flip: np.ndarray,
                    sigma: float, grid: int = GRID, within: Box | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(T, exact)``: T ``(ny, nx, 2)`` at the ``grid`` nodes of ``box`` (:func:`grid_nodes`),
    T the similarity MLS from the query handles ``q_h`` (already multiplied by ``flip``) to the
    exemplar handles ``ex_h``, smoothed over ``sigma`` px; ``exact`` ``(ny, nx)`` bool: the
    nodes that hold the value T has when it is computed over the whole box (all of them
    without ``within``).

    ``within`` (query px, inside ``box``): the MLS is evaluated only at the nodes of the
    coarser lattice over it, grown by the smoothing kernel's radius and one node; T is exact
    at the nodes whose smoothing and interpolation read evaluated nodes only (and not defined
    elsewhere: zero).
    """
    step = grid * max(1, int(CORRESPONDENCE_STEP_SIGMAS * sigma / grid))
    nodes = grid_nodes(box, step) * flip
    ny, nx = nodes.shape[:2]
    sigma_nodes = sigma / step
    rows, cols = slice(0, ny), slice(0, nx)
    inner_rows, inner_cols = rows, cols
    if within is not None:
        radius = gaussian_radius(sigma_nodes) if sigma_nodes >= 0.5 else 0
        inner_rows = _node_span(within.y0 - box.y0, within.y1 - box.y0, step, ny)
        inner_cols = _node_span(within.x0 - box.x0, within.x1 - box.x0, step, nx)
        rows = _grown_span(inner_rows, radius + 1, ny)
        cols = _grown_span(inner_cols, radius + 1, nx)
        # the nodes whose smoothing reads evaluated nodes only (the grid's own edges are
        # replicated alike in the part and in the whole)
        inner_rows = _shrunk_span(rows, radius, ny)
        inner_cols = _shrunk_span(cols, radius, nx)
    coarse = np.zeros(nodes.shape)
    coarse[rows, cols] = _smooth_nodes(mls_similarity(nodes[rows, cols], q_h, ex_h), sigma_nodes)
    exact = np.zeros((ny, nx), bool)
    exact[inner_rows, inner_cols] = True
    if step == grid:
        return coarse, exact
    fine = grid_nodes(box, grid)
    where = ((fine - [box.x0, box.y0]) / step).astype(np.float32)
    mapped = cv2.remap(coarse.astype(np.float32), where[..., 0], where[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
    # a fine node is exact when the (up to four) coarse nodes it is interpolated from are
    r0 = np.clip(np.floor(where[:, 0, 1]).astype(int), 0, ny - 1)
    c0 = np.clip(np.floor(where[0, :, 0]).astype(int), 0, nx - 1)
    r1, c1 = np.minimum(r0 + 1, ny - 1), np.minimum(c0 + 1, nx - 1)
    fine_exact = (exact[np.ix_(r0, c0)] & exact[np.ix_(r0, c1)] & exact[np.ix_(r1, c0)]
                  & exact[np.ix_(r1, c1)])
    return mapped, fine_exact


def _node_span(lo: int, hi: int, step: int, count: int) -> slice:
    """The nodes (``step`` px apart from 0, ``count`` of them) from the last at or before
    pixel ``lo`` to the first at or after pixel ``hi − 1``."""
    return slice(max(lo // step, 0), min(-(-(hi - 1) // step) + 1, count))


def _grown_span(span: slice, by: int, count: int) -> slice:
    return slice(max(span.start - by, 0), min(span.stop + by, count))


def _shrunk_span(span: slice, by: int, count: int) -> slice:
    """``span`` less ``by`` at each end that is not an end of the ``count`` nodes."""
    return slice(span.start + by if span.start > 0 else 0,
                 span.stop - by if span.stop < count else count)


def _smooth_nodes(mapped: np.ndarray, sigma_nodes: float) -> np.ndarray:
    """``mapped`` ``(ny, nx, 2)`` Gaussian-smoothed over the node grid (σ in nodes; edges
    replicated), a smooth correspondence with the same large-scale course."""
    if sigma_nodes < 0.5:
        return mapped
    return cv2.GaussianBlur(mapped.astype(np.float64), (0, 0), sigma_nodes,
                            borderType=cv2.BORDER_REPLICATE)


def _similarity_inverse(ex_h: np.ndarray, q_h: np.ndarray) -> np.ndarray:
    """``(2, 2)``: the linear part of the similarity that takes exemplar offsets to query
    offsets, fitted to the correspondence handles (least squares, rotation + uniform scale).

    One rotation and scale for the whole face: the correspondence's own Jacobian, between two
    different faces' noisy landmarks, folds and stretches locally between handles, and an offset
    turned or divided by it jumps from one pixel to the next (torn contours, ringed dots).
    """
    q = q_h - q_h.mean(axis=0)
    e = ex_h - ex_h.mean(axis=0)
    # ex ≈ [[a, −b], [b, a]]·q: a = Σ(q·e)/|q|², b = Σ(q × e)/|q|²
    norm = float((q * q).sum())
    a = float((q * e).sum()) / norm
    b = float((q[:, 0] * e[:, 1] - q[:, 1] * e[:, 0]).sum()) / norm
    return np.array([[a, b], [-b, a]]) / (a * a + b * b)


def _flip(reflect: bool) -> np.ndarray:
    """``(2,)`` factors that reflect ``(x, y)`` points about the vertical axis, or keep them."""
    return np.array([-1.0, 1.0]) if reflect else np.ones(2)


def transfer(
    edit: Edit, query: np.ndarray, query_points: np.ndarray, *, strength: float = 1.0,
    in_place: bool = False, mirrored: bool | None = None,
) -> np.ndarray:
    """Apply ``edit`` to ``query`` (``(H, W, C)``, any dtype cv2 remaps) with ``strength``.

    ``query_points``: the query face's ``(478, 2)`` landmarks. ``mirrored``: whether the
    query shows the exemplar's face mirrored (default: :func:`is_mirrored` decides). Returns a
    new array, or with ``in_place`` ``query`` itself, edited (for a caller that owns it: saves
    a copy of the image); pixels the edit does not reach are bit-identical.
    """
    if edit.empty or strength == 0:
        return query if in_place else query.copy()
    handles = edit.handles
    # A mirrored query (the same face, flipped): each exemplar landmark corresponds to the
    # query's mirror landmark.
    reflect = mirrored if mirrored is not None else is_mirrored(edit.appearance, query,
                                                                query_points)
    q_points = query_points[MIRROR] if reflect else query_points
    q_unit = FaceFrame.from_points(query_points).unit
    return carry_field(edit.flow, edit.box, edit.points[handles], q_points[handles], query,
                       reflect=reflect, strength=strength,
                       correspondence_sigma=CORRESPONDENCE_SIGMA * q_unit,
                       smooth_sigma=max(SMOOTH_SIGMA * q_unit, MIN_SMOOTH_PX),
                       in_place=in_place)


def carry_field(field: np.ndarray, field_box: Box, ex_h: np.ndarray, q_h: np.ndarray,
                query: np.ndarray, *, reflect: bool = False, strength: float = 1.0,
                correspondence_sigma: float = 0.0, smooth_sigma: float = MIN_SMOOTH_PX,
                in_place: bool = False, confine: np.ndarray | None = None,
                report: dict | None = None) -> np.ndarray:
    """Carry a backward offset ``field`` ``(h, w, 2)`` (px, over ``field_box`` of the exemplar
    image, zero outside) into ``query`` through the correspondence of handle points ``ex_h``
    (exemplar, in the field's pixel frame) ↔ ``q_h`` (query px), both ``(N, 2)`` ``(x, y)``.

    For a query pixel ``v``: its exemplar point ``u = T(v)`` (similarity MLS from ``q_h`` to
    ``ex_h``, smoothed over ``correspondence_sigma`` px), the offset ``e(u)`` turned and scaled
    by the one similarity fitted to the handles, so the query is sampled at ``v + S⁻¹·e(u)``.
    ``reflect``: the correspondence is a reflection (a mirrored query), computed in reflected
    query coordinates (x → −x) so that MLS similarity and the fitted similarity apply. The
    resulting field is made fold-free and no steeper than :data:`MAX_FIELD_GRADIENT`
    (:func:`_unfolded`, ``smooth_sigma`` px). Pixels it moves by less than
    :data:`MIN_OFFSET_PX` are copied bit for bit; with ``in_place`` ``query`` is changed.
    ``confine``: ``(H, W)`` float in [0, 1] over the query, multiplied into the carried offsets
    (where the query may move: :func:`body_confinement`); ``report`` then gets ``"kept"``, the
    share of the carried motion (sum of squared offsets) that it keeps.

    Cost: a carried edit moves a few per cent of the query box (the features it reshapes), so
    the correspondence is evaluated only where the field can reach (:func:`_carried_offsets`)
    and the interpolation, unfolding, resampling and blending only where offsets are not zero
    (:func:`_reached_box`, :func:`_unfolded`): the same pixels as over the whole box.
    """
    flip = _flip(reflect)
    q_h = q_h * flip
    box = _query_box(field_box, ex_h, q_h, query.shape[:2], reflect)
    if report is not None and confine is not None:
        report["kept"] = 1.0
    if box.empty:
        return query if in_place else query.copy()
    # Nodes GRID px apart, wider where the field is smooth on a larger scale (big images).
    grid = GRID * max(1, int(smooth_sigma / (2 * WORK_SIGMA_PX)))
    box, offsets = _offsets_in_grown_box(field, field_box, ex_h, q_h, box, flip,
                                         correspondence_sigma, grid, reflect, query.shape[:2])
    offsets = offsets * (flip * strength)
    # Everything below is worked only where the field can be non-zero: the same values as
    # over the whole box (pixels the field does not move are copied either way).
    part = _reached_box(offsets, grid, box)
    if part.empty:
        return query if in_place else query.copy()
    rows, cols = np.arange(part.y0, part.y1), np.arange(part.x0, part.x1)
    dx, dy = interpolate_planes(box, grid, offsets, rows, cols)
    if confine is not None:
        inside = confine[box.y0 + part.y0 : box.y0 + part.y1,
                         box.x0 + part.x0 : box.x0 + part.x1].astype(np.float32)
        before = float(np.sum(dx * dx + dy * dy))
        dx, dy = dx * inside, dy * inside
        if report is not None:
            report["kept"] = float(np.sum(dx * dx + dy * dy)) / before if before > 0 else 1.0
    # A safety net: whatever the correspondence did, the query's field is made fold-free.
    whole = np.zeros((box.height, box.width, 2), np.float32)
    whole[part.slices()] = np.dstack([dx, dy])
    smooth = unfolded_coarse(whole, smooth_sigma, support=part)
    moved = part if smooth is whole else nonzero_box(smooth)
    if moved.empty:
        return query if in_place else query.copy()
    dx = np.ascontiguousarray(smooth[moved.slices() + (0,)])
    dy = np.ascontiguousarray(smooth[moved.slices() + (1,)])
    # The field is smooth and falls to zero by itself: a pixel is either moved by its offset
    # or copied (no cross-fade of moved and unmoved pixels, which would ghost an edge).
    weight = (np.hypot(dx, dy) >= MIN_OFFSET_PX).astype(np.float32)
    if not weight.any():
        return query if in_place else query.copy()
    target = Box(box.x0 + moved.x0, box.y0 + moved.y0, box.x0 + moved.x1, box.y0 + moved.y1)
    dx += np.arange(target.x0, target.x1)[None, :]  # the sources: + the pixel grid, in place
    dy += np.arange(target.y0, target.y1)[:, None]
    warped = remap_xy(query, dx, dy)
    return blend_into(query, warped, weight, target, in_place=in_place)


#: The query box (:func:`_query_box`) is a guess: the correspondence between two people's
#: landmarks is not the inverse of the map that made it, and a carried field can still move
#: pixels on the box's edge (a body edit of survey q24 carried to another person: 5.9 px on
#: the bottom edge, a horizontal cut through her arm). Such a box is grown by half its size
#: on each of those sides, at most this many times.
BOX_GROWTHS = 3
#: After the last growth, a field still live on an edge fades to zero over this many nodes
#: next to it (a safety net: never a cut).
EDGE_RAMP_NODES = 8


def _offsets_in_grown_box(field: np.ndarray, field_box: Box, ex_h: np.ndarray, q_h: np.ndarray,
                          box: Box, flip: np.ndarray, sigma: float, grid: int, reflect: bool,
                          shape: tuple[int, int]) -> tuple[Box, np.ndarray]:
    """``(box, offsets)``: :func:`_carried_offsets` over ``box``, grown
    (:data:`BOX_GROWTHS`) until no offset is left on an edge that is not the image's (of
    ``shape``)."""
    for attempt in range(BOX_GROWTHS + 1):
        offsets = _carried_offsets(field, field_box, ex_h, q_h, box, flip, sigma, grid, reflect)
        sides = _live_sides(offsets, box, shape)
        if not sides or attempt == BOX_GROWTHS:
            break
        box = _grown_sides(box, sides, shape)
    if sides:
        offsets = offsets * _edge_ramp(offsets.shape[:2], sides)[..., None]
    return box, offsets


def _live_sides(offsets: np.ndarray, box: Box, shape: tuple[int, int]) -> set[str]:
    """The sides of ``box`` inside the image (of ``shape``) whose edge nodes of ``offsets``
    ``(ny, nx, 2)`` are not all zero."""
    height, width = shape
    live = nonzero(offsets)
    sides = set()
    if box.y0 > 0 and live[0].any():
        sides.add("top")
    if box.y1 < height and live[-1].any():
        sides.add("bottom")
    if box.x0 > 0 and live[:, 0].any():
        sides.add("left")
    if box.x1 < width and live[:, -1].any():
        sides.add("right")
    return sides


def _grown_sides(box: Box, sides: set[str], shape: tuple[int, int]) -> Box:
    """``box`` grown by half its height (width) on each of ``sides``, clipped to ``shape``."""
    height, width = shape
    dy, dx = max(box.height // 2, 1), max(box.width // 2, 1)
    return Box(max(box.x0 - dx, 0) if "left" in sides else box.x0,
               max(box.y0 - dy, 0) if "top" in sides else box.y0,
               min(box.x1 + dx, width) if "right" in sides else box.x1,
               min(box.y1 + dy, height) if "bottom" in sides else box.y1)


def _edge_ramp(node_shape: tuple[int, int], sides: set[str]) -> np.ndarray:
    """``node_shape`` float: 0 on the edge nodes of ``sides``, rising smoothly to 1 at
    :data:`EDGE_RAMP_NODES` nodes in; 1 elsewhere."""
    ny, nx = node_shape
    ramp = lambda n: smoothstep(np.clip(np.arange(n) / EDGE_RAMP_NODES, 0.0, 1.0))  # noqa: E731
    rows, cols = np.ones(ny), np.ones(nx)
    if "top" in sides:
        rows = rows * ramp(ny)
    if "bottom" in sides:
        rows = rows * ramp(ny)[::-1]
    if "left" in sides:
        cols = cols * ramp(nx)
    if "right" in sides:
        cols = cols * ramp(nx)[::-1]
    return np.outer(rows, cols)


def _carried_offsets(field: np.ndarray, field_box: Box, ex_h: np.ndarray, q_h: np.ndarray,
                     box: Box, flip: np.ndarray, sigma: float, grid: int,
                     reflect: bool) -> np.ndarray:
    """``(ny, nx, 2)``: the offsets of ``field`` (over ``field_box``) carried to the ``grid``
    nodes of the query ``box``: sampled at the corresponding exemplar points
    (:func:`_correspondence`, σ ``sigma`` px; ``q_h`` already multiplied by ``flip``) and
    turned by the handles' similarity; ``flip`` and strength not yet applied.

    The correspondence is evaluated only over the query box of the field's non-zero part
    (:func:`_query_box`, as ``box`` is of the whole field box), where the field can reach:
    outside it the offsets are zero, as they are outside ``box``. If a carried offset comes
    within :data:`REACH_RING_NODES` nodes of that region's edge, the field may reach beyond
    it, and the correspondence is evaluated over the whole box instead.
    """
    support = nonzero_box(field)
    if support.empty:
        return np.zeros(grid_nodes(box, grid).shape)
    # where the correspondence can reach the field: its support (and the pixel bilinear
    # sampling reads beyond), mapped as the query box is mapped from the field's box
    moving = Box(field_box.x0 + support.x0 - 1, field_box.y0 + support.y0 - 1,
                 field_box.x0 + support.x1 + 1, field_box.y0 + support.y1 + 1)
    within = grown(_query_box(moving, ex_h, q_h, (box.y1, box.x1), reflect),
                    int(np.ceil(REACH_SIGMAS * sigma)), (box.y1, box.x1))
    within = Box(max(within.x0, box.x0), max(within.y0, box.y0), within.x1, within.y1)
    if not within.empty:
        mapped, exact = _correspondence(box, q_h, ex_h, flip, sigma, grid, within=within)
        sampled = _sample(field, field_box, mapped)
        sampled[~exact] = 0.0
        live = nonzero(sampled)
        ring = 2 * REACH_RING_NODES + 1
        edge = cv2.dilate((~exact).astype(np.uint8), np.ones((ring, ring), np.uint8)) > 0
        if not np.any(live & edge):
            return sampled[..., :2] @ _similarity_inverse(ex_h, q_h).T
    mapped, _ = _correspondence(box, q_h, ex_h, flip, sigma, grid)
    sampled = _sample(field, field_box, mapped)
    return sampled[..., :2] @ _similarity_inverse(ex_h, q_h).T


def _reached_box(offsets: np.ndarray, grid: int, box: Box) -> Box:
    """The pixels of ``box`` (in its own coordinates) that the separable cubic interpolation
    (:func:`~mirrorppr_cli.geometric.mls.interpolate_planes`) of node values ``offsets``
    ``(ny, nx, K)``, ``grid`` px apart, can make non-zero; an empty box when every node is zero.

    Pixel ``i`` lies between nodes ``⌊i/grid⌋`` and the next and reads two nodes either side
    (the ghost nodes beyond the ends are made of the two end nodes), so only pixels with a
    non-zero node among ``⌊i/grid⌋ − 1 … ⌊i/grid⌋ + 2`` can be non-zero.
    """
    live = nonzero(offsets)
    rows, cols = np.any(live, axis=1), np.any(live, axis=0)
    if not rows.any():
        return Box(0, 0, 0, 0)
    r0, r1 = int(np.argmax(rows)), len(rows) - 1 - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - 1 - int(np.argmax(cols[::-1]))
    return Box(max(grid * (c0 - 2), 0), max(grid * (r0 - 2), 0),
               min(grid * (c1 + 2), box.width), min(grid * (r1 + 2), box.height))
#: Pose landmarks mirrored (MediaPipe pose labels left and right by image side in a mirrored
#: photo, as the face mesh does): the nose is its own mirror, each left point its right one.
POSE_MIRROR = np.array([0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20,
                        19, 22, 21, 24, 23, 26, 25, 28, 27, 30, 29, 32, 31], dtype=np.intp)
