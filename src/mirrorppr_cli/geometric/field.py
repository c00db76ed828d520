"""Turning a measured flow into a field that is safe to apply: smooth, trusted, fold-free.

A field here is ``(h, w, 2)`` float32 backward offsets ``(dx, dy)`` in pixels over a box.
:func:`smooth_motion` keeps motion only where the flow is trusted (textured or consistently
moving) and smooths it; the unfolding passes scale down any part whose Jacobian determinant
falls below :data:`MIN_JACOBIAN_DET` (a fold-over would tear the image).
"""

from __future__ import annotations

import cv2
import numpy as np

from .box import Box, gaussian_radius, grown, nonzero_box, union
from .flow import STILL_PX, grey, lengths
from .mls import DEFAULT_GRID, LocalWarp, apply_offsets, feathered_offsets

#: Smoothing scale of a measured edit (face units, at least :data:`MIN_SMOOTH_PX`): structural
#: edits move features (an eye, a lip, a nostril, ≥ 0.15 face units across) as a whole, so the
#: field they make varies on that scale or slower; what varies faster is measurement noise.
SMOOTH_SIGMA = 0.03
MIN_SMOOTH_PX = 1.5
#: A flow vector farther than this (px, plus a quarter of the local motion) from the median of
#: its 5×5 neighbourhood is a spike of the estimator, not motion: it gets no trust.
SPIKE_PX = 0.5
#: Texture energy (squared 3×3 Sobel response, grey levels) at which "the flow says nothing
#: moved" is half-trusted: a gradient of 2 grey levels per pixel. Flat skin hides motion, so
#: a zero there is no evidence; an edge or pore texture that did not move is.
TEXTURE_ENERGY = (2.0 * 8.0) ** 2
#: Local density of trusted measurements (the normalised convolution's denominator, 1 where
#: every pixel around is trusted) from which the field keeps its full value; below, it falls
#: smoothly to zero: an isolated measurement (a few pixels, a speckle of the estimator) does
#: not become motion, and nothing is extrapolated far from the evidence.
EVIDENCE_FULL = 0.25
#: Offsets below this (px) leave a pixel untouched: OpenCV's bilinear remap resolves 1/32 px,
#: so a smaller offset would not change the pixel anyway.
MIN_OFFSET_PX = 1.0 / 64.0
#: The field is scaled down until its backward map ``u ↦ u + e(u)`` has a Jacobian
#: determinant of at least this everywhere (no fold-over; a structural edit compresses a
#: feature by 20–40 % at most, det ≥ 0.35).
MIN_JACOBIAN_DET = 0.2


def smooth_motion(flow: np.ndarray, moving: np.ndarray, image: np.ndarray, region: np.ndarray,
                  unit: float, pad: int, *,
                  sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(field, weight)``: a smooth, fold-free version of the measured ``flow``
    (:func:`smooth_motion_and_confidence` without the confidence)."""
    field, weight, _ = smooth_motion_and_confidence(flow, moving, image, region, unit, pad,
                                                    sigma=sigma)
    return field, weight


def smooth_motion_and_confidence(
    flow: np.ndarray, moving: np.ndarray, image: np.ndarray, region: np.ndarray, unit: float,
    pad: int, *, sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(field, weight, confidence)``: a smooth, fold-free version of the measured ``flow``,
    and ``(h, w)`` float32 in [0, 1], smooth: how much the measurement says there (1 where
    trusted motion or textured still pixels are dense, 0 on flat pixels far from either).

    ``flow`` ``(h, w, 2)`` backward offsets (px) over a box of the *after* image ``image``
    ``(h, w, 3)`` uint8; ``moving`` ``(h, w)`` bool: where the flow is motion that explains the
    before/after difference; ``region`` ``(h, w)`` bool: where edits may be; ``unit``: face unit
    (px); ``pad``: the box's margin around the changed pixels (px); ``sigma``: the smoothing
    scale (px; default :data:`SMOOTH_SIGMA` face units).

    A per-pixel mask of "moved" pixels switches motion on and off pixel by pixel, which a
    query shows as holes, islands and ringed dots. Instead the field is a normalised Gaussian
    convolution of the trusted measurements: the motion where it explains the difference
    (spikes of the estimator left out), zero where textured pixels stayed still, nothing from
    flat pixels that hide motion; it falls to zero where the evidence thins out
    (:data:`EVIDENCE_FULL`). It is then tapered to zero outside ``region`` and at the box's border, and
    scaled down if its backward map would fold (:data:`MIN_JACOBIAN_DET`). ``weight`` is 1
    where the field moves a pixel by at least :data:`MIN_OFFSET_PX`, tapering with the field.
    """
    sigma = max(SMOOTH_SIGMA * unit, MIN_SMOOTH_PX) if sigma is None else sigma
    flow = flow.astype(np.float32)
    median = np.dstack([cv2.medianBlur(np.ascontiguousarray(flow[..., c]), 5) for c in (0, 1)])
    spread = lengths(flow - median)
    trusted_motion = moving & (spread <= SPIKE_PX + 0.25 * lengths(median))
    luma = grey(image).astype(np.float32)
    energy = cv2.Sobel(luma, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(luma, cv2.CV_32F, 0, 1) ** 2
    energy = cv2.GaussianBlur(energy, (0, 0), sigma)
    still_trust = energy / (energy + TEXTURE_ENERGY)
    magnitude = lengths(flow)
    still = region & ~moving & (magnitude < STILL_PX)
    trust = np.where(trusted_motion, 1.0, np.where(still, still_trust, 0.0)).astype(np.float32)
    values = flow * trusted_motion[..., None]  # a still pixel contributes a zero
    numerator = cv2.GaussianBlur(values * trust[..., None], (0, 0), sigma)
    denominator = cv2.GaussianBlur(trust, (0, 0), sigma)
    # Full value where the evidence is dense; falling to zero where it thins out.
    confidence = smoothstep(np.clip(denominator / EVIDENCE_FULL, 0.0, 1.0))
    field = numerator * (confidence / np.maximum(denominator, 1e-6))[..., None]
    field *= region_taper(region, sigma, pad)[..., None]
    return (*with_weight(_unfolded(field, sigma)), confidence.astype(np.float32))


def with_weight(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(field, weight)``: ``weight`` 1 where ``field`` moves a pixel by at least
    :data:`MIN_OFFSET_PX`, tapering with the field, 0 (and the field 0) below."""
    reach = lengths(field)
    weight = np.clip(reach / (4 * MIN_OFFSET_PX), 0.0, 1.0)
    weight[reach < MIN_OFFSET_PX] = 0.0
    # field[weight == 0] = 0.0, without gathering the (h, w, 2) array's pixels one by one
    np.copyto(field, 0.0, where=(weight == 0)[..., None])
    return np.ascontiguousarray(field, np.float32), weight.astype(np.float32)


def region_taper(region: np.ndarray, sigma: float, pad: float) -> np.ndarray:
    """``(h, w)`` float32: how a measured field is faded out — ``region`` (``(h, w)`` bool,
    where edits may be) blurred over 2·``sigma`` px, times 0 on the box's border rising to 1
    at ``pad``/2 px in (:func:`border_taper`)."""
    return cv2.GaussianBlur(region.astype(np.float32), (0, 0), 2 * sigma) * border_taper(
        region.shape, max(pad / 2.0, 1.0))


def border_taper(shape: tuple[int, int], width: float) -> np.ndarray:
    """``(h, w)`` float32: 0 on the box's border rising smoothly to 1 at ``width`` px in."""
    ys = np.minimum(np.arange(shape[0]), np.arange(shape[0])[::-1]).astype(np.float32)
    xs = np.minimum(np.arange(shape[1]), np.arange(shape[1])[::-1]).astype(np.float32)
    ramp = lambda d: smoothstep(np.clip(d / width, 0.0, 1.0))  # noqa: E731
    return np.outer(ramp(ys), ramp(xs)).astype(np.float32)


def smoothstep(t: np.ndarray) -> np.ndarray:
    """``3t² − 2t³`` of ``t`` in [0, 1]: 0 and 1 at the ends, flat there."""
    return t * t * (3.0 - 2.0 * t)


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """``(h, w)``: det of the Jacobian of ``u ↦ u + field(u)`` (``field`` ``(h, w, 2)`` px,
    ``(x, y)`` order; central differences). ≤ 0 where the map folds over."""
    return _determinant(*_gradients(field))


def _gradients(field: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(∂x/∂x, ∂x/∂y, ∂y/∂x, ∂y/∂y)`` of ``field`` ``(h, w, 2)`` (central differences)."""
    return (np.gradient(field[..., 0], axis=1), np.gradient(field[..., 0], axis=0),
            np.gradient(field[..., 1], axis=1), np.gradient(field[..., 1], axis=0))


def _determinant(dxdx: np.ndarray, dxdy: np.ndarray, dydx: np.ndarray,
                 dydy: np.ndarray) -> np.ndarray:
    return (1.0 + dxdx) * (1.0 + dydy) - dxdy * dydx


#: Local smoothing passes that try to remove a fold before the whole field is scaled down.
UNFOLD_PASSES = 4


def _unfolded(field: np.ndarray, sigma: float, support: Box | None = None) -> np.ndarray:
    """``field`` with its fold-overs smoothed away locally.

    Where the backward map's Jacobian determinant is below :data:`MIN_JACOBIAN_DET` (a steep
    measured gradient, e.g. at the edge of a cross-faded edit), the field is replaced, within
    a feathered neighbourhood, by a more strongly blurred copy, with a wider blur each pass;
    elsewhere it is untouched; likewise where it is steeper than :data:`MAX_FIELD_GRADIENT`.
    Only if that fails is the whole field scaled down. Returns ``field`` itself (not a copy)
    when nothing folds; never changes it.

    ``support``: a box of ``field``'s pixels (``(h, w, 2)``, px) outside which it is zero
    (default: found). Every pass is worked only where it can change something
    (:func:`_unfold_pass`): the same values as on the whole field, at a cost that follows the
    folds rather than the field's size.
    """
    shape = field.shape[:2]
    support = nonzero_box(field) if support is None else support
    if support.empty:  # a zero field folds nowhere
        return field
    for k in range(UNFOLD_PASSES):
        window = grown(support, 2, shape)  # beyond it the field and its gradient are zero
        folded = _folded(field[window.slices()])
        if not folded.any():
            return field
        field, changed = _unfold_pass(field, folded, window, sigma, k)
        support = union(support, changed)
    window = grown(support, 2, shape)
    return field * _fold_free_scale(field[window.slices()])


def _folded(field: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where the backward map of ``field`` ``(h, w, 2)`` folds or is too
    steep (:data:`MIN_JACOBIAN_DET`, :data:`MAX_FIELD_GRADIENT`)."""
    grads = _gradients(field)  # the determinant's and the steepness test's: computed once
    return (_determinant(*grads) < MIN_JACOBIAN_DET) | _steep(field, grads)


def _unfold_pass(field: np.ndarray, folded: np.ndarray, window: Box, sigma: float,
                 k: int) -> tuple[np.ndarray, Box]:
    """Pass ``k`` of :func:`_unfolded`: ``(new field, box of the pixels it may change)``.

    ``folded``: :func:`_folded` over ``window`` of ``field`` (``(h, w, 2)``), none outside it.
    The pass mixes ``field`` towards its blur (σ = 2·``sigma``·(k + 1)) with a weight that is
    the fold mask dilated (``reach`` px) and blurred (σ = ``sigma``): zero, exactly, farther
    than ``reach`` + that blur's radius from every folded pixel. So only the folds' box grown
    by that much changes, and its blurs need the field only a blur radius beyond: both are
    worked on that crop (OpenCV's filters give the same values there as on the whole field;
    where the crop meets the field's edge both reflect at the same edge).
    """
    shape = field.shape[:2]
    rows, cols = np.nonzero(folded)
    folds = Box(window.x0 + int(cols.min()), window.y0 + int(rows.min()),
                window.x0 + int(cols.max()) + 1, window.y0 + int(rows.max()) + 1)
    reach = int(np.ceil(2 * sigma * (k + 1))) | 1
    wide = 2 * sigma * (k + 1)
    changed = grown(folds, reach + gaussian_radius(sigma), shape)
    crop = grown(changed, gaussian_radius(wide), shape)
    marks = np.zeros((crop.height, crop.width), np.uint8)
    marks[folds.y0 - crop.y0 : folds.y1 - crop.y0, folds.x0 - crop.x0 : folds.x1 - crop.x0] = \
        folded[folds.y0 - window.y0 : folds.y1 - window.y0,
               folds.x0 - window.x0 : folds.x1 - window.x0]
    near = cv2.dilate(marks, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))).astype(np.float32)
    mix = np.clip(cv2.GaussianBlur(near, (0, 0), sigma) * 2.0, 0.0, 1.0)[..., None]
    part = field[crop.slices()]
    blurred = cv2.GaussianBlur(part, (0, 0), wide)
    inner = (slice(changed.y0 - crop.y0, changed.y1 - crop.y0),
             slice(changed.x0 - crop.x0, changed.x1 - crop.x0))
    out = field.copy()
    here = part[inner]
    out[changed.slices()] = here + mix[inner] * (blurred[inner] - here)
    return out, changed


#: Smoothing scales above this many pixels are worked at a reduced resolution that brings
#: them down to it (:func:`unfolded_coarse`, :func:`body_confinement`): OpenCV's Gaussian
#: costs in proportion to its width, and on a 24 MP query a body's smoothing scale is ~30 px
#: (the carry took 22 s of CPU; the fields are smooth on that scale, so nothing is lost).
WORK_SIGMA_PX = 4.0


def unfolded_coarse(field: np.ndarray, sigma: float, support: Box | None = None) -> np.ndarray:
    """:func:`_unfolded` worked at a resolution where ``sigma`` is :data:`WORK_SIGMA_PX`
    (offsets scaled with it, so gradients and Jacobians are the same), the change it makes
    brought back to full size; below that scale it is :func:`_unfolded` itself (``support``:
    see there). ``field`` itself comes back when nothing folds."""
    if sigma <= WORK_SIGMA_PX:
        return _unfolded(field, sigma, support)
    factor = WORK_SIGMA_PX / sigma
    height, width = field.shape[:2]
    small_size = (max(2, round(width * factor)), max(2, round(height * factor)))
    small = cv2.resize(field, small_size, interpolation=cv2.INTER_AREA)
    fx, fy = small_size[0] / width, small_size[1] / height
    scaled = small * np.array([fx, fy], np.float32)
    fixed = _unfolded(scaled, WORK_SIGMA_PX)
    if fixed is scaled:  # nothing folded at this scale
        return field
    change = (fixed - scaled) / np.array([fx, fy], np.float32)
    return field + cv2.resize(change, (width, height), interpolation=cv2.INTER_LINEAR)


#: Largest change of the field between neighbouring pixels (px per px, either component):
#: beyond it an edge is torn into steps even where the map does not yet fold.
MAX_FIELD_GRADIENT = 0.8


def _steep(field: np.ndarray, gradients: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """``(h, w)`` bool: where a component of ``field`` changes by more than
    :data:`MAX_FIELD_GRADIENT` px per pixel (``gradients``: its :func:`_gradients`, when
    known)."""
    steep = np.zeros(field.shape[:2], bool)
    for gradient in _gradients(field) if gradients is None else gradients:
        steep |= np.abs(gradient) > MAX_FIELD_GRADIENT
    return steep


def _fold_free_scale(field: np.ndarray) -> float:
    """The largest factor ≤ 1 (in steps of 0.8) at which ``field`` keeps its Jacobian
    determinant ≥ :data:`MIN_JACOBIAN_DET`."""
    scale = 1.0
    while scale > 0.05 and jacobian_determinant(field * scale).min() < MIN_JACOBIAN_DET:
        scale *= 0.8
    return scale


#: The catalog operations' offsets are smoothed, and their fold-overs repaired, at this
#: fraction of the warp's feather kernel: the face operations' feather is 0.25 face units, so
#: 0.12 of it is the measured edits' 0.03 units (:data:`SMOOTH_SIGMA`).
UNFOLD_SIGMA_PER_FEATHER = 0.12


def operation_sigma(warp: LocalWarp) -> float:
    """Scale (px) at which a catalog warp's fold-overs are repaired as a retouch applies it
    (at least :data:`MIN_SMOOTH_PX`)."""
    return max(UNFOLD_SIGMA_PER_FEATHER * warp.feather_px, MIN_SMOOTH_PX)


def bump_sigma(warp: LocalWarp) -> float:
    """Scale (px) over which a catalog warp's offsets are smoothed (:func:`smoothed`): the
    measured edits' 0.03 face units, with no floor in pixels — the handles' bumps shrink with
    the face, while a floor would weaken a small face's edit (eye_resize on a 21 px face
    unit: mean motion 78 % of the raw warp's with a 1.5 px floor, 95 % without; 93 % at any
    size above ~45 px)."""
    return UNFOLD_SIGMA_PER_FEATHER * warp.feather_px


def smoothed(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """``offsets`` ``(h, w, 2)`` float32 Gaussian-smoothed over ``sigma`` px (worked at a
    resolution where ``sigma`` is :data:`WORK_SIGMA_PX` when it is larger, as
    :func:`unfolded_coarse`). Edges are reflected: where the box is the feather's the offsets
    are zero there anyway; where it is the frame's (a face cut by it) the edit keeps its
    strength up to the frame instead of fading towards it.

    Why: similarity MLS interpolates its handles, so a catalog warp moves each landmark on a
    contour by its full offset and lags between them — a bump per handle. On a lip moved
    4–5 px that is a wavy outline, visible at 1:1 on a ~95 px face unit (survey q27's
    ``mouth_resize`` on another survey face; ``mouth_resize 60`` on one: high-frequency part
    of the offsets up to 1.2 px). Smoothed over the measured edits' scale, the bumps go
    (their period is the handles' spacing, ~3 σ) and the feature still moves as a whole.
    """
    if sigma < MIN_BLUR_SIGMA_PX:
        return offsets
    if sigma <= WORK_SIGMA_PX:
        return cv2.GaussianBlur(offsets, (0, 0), sigma)
    height, width = offsets.shape[:2]
    factor = WORK_SIGMA_PX / sigma
    small_size = (max(2, round(width * factor)), max(2, round(height * factor)))
    small = cv2.resize(offsets, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), WORK_SIGMA_PX)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


#: Below this smoothing scale (px) :func:`smoothed` leaves offsets as they are.
MIN_BLUR_SIGMA_PX = 0.25


#: How far (in :func:`operation_sigma` units) making a catalog warp's offsets smooth and
#: fold-free can carry them beyond the feather's box: the smoothing kernel's radius (4 σ,
#: :func:`~mirrorppr_cli.geometric.box.gaussian_radius`) and the unfolding passes' reach
#: around a fold (2 σ·(k + 1) for pass k < :data:`UNFOLD_PASSES`, plus their mixing blur's
#: radius, 4 σ). They are worked in the box grown by this much, and
#: applied wherever they are at least :data:`MIN_OFFSET_PX` — cut at the feather's edge
#: instead, a repaired fold reopened there (face_shape −100 on survey q07's query: offsets of
#: 7.5 px outside the feather mask, 2.3 px on its box's edge, Jacobian determinant −1.16).
APPLIED_REACH_SIGMAS = 4 + 2 * UNFOLD_PASSES + 4


def fold_free_offsets(shape: tuple[int, int], warp: LocalWarp, *, method: str = "fast",
                      grid: int = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray, Box]:
    """``(offsets, moving, box)``: the backward offsets ``(h, w, 2)`` float32 of a catalog
    ``warp`` on an image of ``shape`` as a retouch applies them — feathered
    (:func:`~mirrorppr_cli.geometric.mls.feathered_offsets`: scaled by the feather mask),
    smoothed (:func:`smoothed`: no bump at each handle) and made fold-free
    (:func:`unfolded_coarse`) — over ``box``, and ``moving`` ``(h, w)`` bool, the pixels they
    move by at least :data:`MIN_OFFSET_PX` (every other pixel is copied). The catalog part of a
    hybrid edit, as the residual is also measured against it."""
    offsets, _, box = feathered_offsets(shape, warp, method=method, grid=grid)
    if box.empty:
        return offsets, np.zeros(offsets.shape[:2], bool), box
    sigma = operation_sigma(warp)
    wide = grown(box, int(np.ceil(APPLIED_REACH_SIGMAS * sigma)) + 2, shape)
    padded = np.zeros((wide.height, wide.width, 2), np.float32)
    padded[box.y0 - wide.y0 : box.y1 - wide.y0, box.x0 - wide.x0 : box.x1 - wide.x0] = offsets
    applied = unfolded_coarse(smoothed(padded, bump_sigma(warp)), sigma)
    moving = lengths(applied) >= MIN_OFFSET_PX
    live = nonzero_box(moving)
    if live.empty:
        return np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), bool), Box(0, 0, 0, 0)
    part = live.slices()
    return (np.ascontiguousarray(applied[part]), moving[part],
            Box(wide.x0 + live.x0, wide.y0 + live.y0, wide.x0 + live.x1, wide.y0 + live.y1))


def fold_free_local_warp(pixels: np.ndarray, warp: LocalWarp, *, method: str = "fast",
                         grid: int = DEFAULT_GRID, in_place: bool = False) -> np.ndarray:
    """``warp`` applied to ``pixels`` as a retouch applies it (:func:`fold_free_offsets`):
    pixels moved or copied, never two places mixed (the feather scales the offsets; a colour
    feather showed a lapel moved 10 px twice), no bump at each handle, no fold-over (composed
    operations can fold the map: mouth corners pulled past their anchors, survey q27's edit on
    another face, Jacobian determinant −2.1). Pixels the warp does not move are bit-identical;
    ``in_place``: ``pixels`` itself is changed and returned."""
    offsets, moving, box = fold_free_offsets(pixels.shape[:2], warp, method=method, grid=grid)
    if box.empty:
        return pixels if in_place else pixels.copy()
    return apply_offsets(pixels, offsets, moving, box, in_place=in_place)
