"""Exemplar → edit → query: the training-free retouch of the geometric engine.

Landmarks are too noisy to carry an edit (1–3 px jitter between photos, as large as the edits),
so the edit is *measured* as dense optical flow between the exemplar's before and after (one
photograph: the flow is sub-pixel and zero where nothing moved), and landmarks only provide
the *correspondence* between the query and the exemplar.

Conventions: pixel centres at integers, points ``(x, y)``. The edit is a backward field on the
exemplar's *after* image: for each of its pixels, the offset to where that content was in
*before* (so ``after(u) = before(u + e(u))``). For a query output pixel ``v``, the corresponding
exemplar point is ``u = T(v)`` (similarity MLS from query landmarks to exemplar landmarks), and
the query is sampled at ``v + J(v)⁻¹·e(u)``, ``J`` the Jacobian of ``T`` — so the offset turns,
scales (and follows the face's proportions) with the query. Pixels the exemplar did not move are
copied bit for bit.

Body edits are measured here too (:func:`estimate_body_motion`: the same flow, over the person
outside the face region, only when :func:`changed_off_face` finds changed pixels there) but are
not carried by the landmark correspondence: they are fitted as body operations
(:func:`mirrorppr_cli.explain.explain_body`) and re-planned on the query's own body.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .errors import InputError
from .face_frame import FaceFrame
from .io import to_uint8
from .landmark_mirror import MIRROR
from .metrics.pixel import changed_mask
from .ops.compose import thinned
from .warp import Box, blend_into, grid_nodes, interpolate_planes, mls_similarity, remap_xy

#: Flow magnitude (px) below which an exemplar pixel counts as unmoved.
STILL_PX = 0.1
#: Motion counts only where it explains at least this share of the local before/after
#: difference (measured: ≥ 0.65 inside real edits, ≤ 0.57 for JPEG re-encoding noise).
MIN_EXPLAINED = 0.6
EXPLAIN_SIGMA = 3.0
#: Edits are looked for within the landmarks' hull grown by this (face units).
FACE_MARGIN = 0.3
#: Correspondence handles: landmarks thinned to this spacing (face units).
HANDLE_SPACING = 0.05
#: Node spacing (px) of the query-side correspondence grid.
GRID = 4
#: "This is a before/after of one photo": the two agree outside the face (a retouch reshapes
#: the face and body; a different photo differs everywhere), as the correlation of their
#: coarse grey levels there (:func:`photo_likeness`). Re-encoding, tone changes and body
#: edits keep it above 0.9; two photos of one person, even from one shoot, fall far below.
MIN_PHOTO_LIKENESS = 0.8
#: Where too little of the photo lies outside the face (a tight face crop), the landmarks
#: decide: their median shift (face units). A strong edit of several features moves a
#: minority of the 478 points; a different photo moves most of them.
MAX_LANDMARK_SHIFT = 0.15
#: Largest motion (face units, 99th percentile) of a structural retouch.
MAX_EDIT = 0.5
#: The face's motion is measured with the face unit (eye distance) at most this many pixels:
#: the field is smoothed over 0.03 units anyway (SMOOTH_SIGMA: ≥ 3.8 px here), while the flow's
#: cost grows with the face's area (a 24 MP portrait's face box: ~1.5 MP). Measured against
#: full size: selfaug dev face pairs 45.938 → 45.935 dB, recall 0.647 → 0.644; 40
#: official-generator dev items 34.256 → 34.231 dB, recall 0.214 → 0.210; the face step of the
#: survey's large faces (units 150-180 px) 0.4-0.6 → 0.3 s.
FLOW_UNIT_PX = 128.0
#: Side (px) of the coarse images :func:`photo_likeness` compares, and the share of them that
#: must lie outside the face region for the comparison to count.
LIKENESS_SIDE = 96
LIKENESS_MIN_SHARE = 0.05


@dataclass(frozen=True)
class Edit:
    """The measured edit of an exemplar pair.

    Attributes:
        flow: ``(h, w, 2)`` float32 backward offsets over ``box`` of the *after* image.
        weight: ``(h, w)`` float32 in [0, 1]: where the edit acts (0 = untouched).
        box: region of the exemplar image holding every moved pixel.
        points: ``(478, 2)`` exemplar landmarks (on *before*).
        max_motion_px: largest offset, for reports.
        appearance: see below.
    """

    flow: np.ndarray
    weight: np.ndarray
    box: Box
    points: np.ndarray
    max_motion_px: float
    #: :func:`face_patch` of the exemplar's *before*: tells a mirrored query of the same
    #: photo or person (None: not known, never mirrored).
    appearance: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.box.empty

    @cached_property
    def handles(self) -> np.ndarray:
        """Indices of the correspondence handles (:func:`_correspondence_handles` of
        ``points``), computed once for every query the edit is carried to."""
        return _correspondence_handles(self.points)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


#: Flow passes: each re-estimates the residual after warping by the flow so far (DIS alone
#: under-reads sub-pixel motion; measured recall of the true field 0.81 → 0.85 at 512², 0.89 →
#: 0.91 at 1024² with three passes). Two passes save 18 ms of a 1024² exemplar but cost a
#: median 0.45 dB per item on the real-face SimFace-style bench (41 of 100 items worse by more
#: than 0.5 dB, up to 3.3 dB), though their mean end-point error on synthetic edits is the same.
FLOW_PASSES = 3
#: Gradient-descent iterations of DIS's patch search in the passes after the first (the
#: medium preset's 25 in the first): they refine a sub-pixel residual. 12 saves ~5 ms of a
#: 1024² exemplar; on the real-face SimFace-style bench (100 items) the mean PSNR went from
#: 49.908 to 49.893 dB (per item −0.035 ± 0.027, median −0.02; 1 item better and 3 worse by
#: more than 0.5 dB), edit recall 0.9300 → 0.9296, the edit's end-point error +0.002 px.
#: A patch stride of 4 in those passes (−1.6 dB) or a first pass at half resolution (−0.2 dB)
#: cost far more.
REFINING_DESCENT_ITERATIONS = 12


def _flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)``: where each ``source`` pixel is found in ``target``.

    OpenCV's DIS (medium preset, finest pyramid level 0), refined over :data:`FLOW_PASSES`.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    src, tgt = _grey(source), _grey(target)
    height, width = src.shape
    grid = np.dstack(np.meshgrid(np.arange(width), np.arange(height))).astype(np.float32)
    flow = np.zeros((height, width, 2), np.float32)
    for k in range(FLOW_PASSES):
        if k == 1:
            dis.setGradientDescentIterations(REFINING_DESCENT_ITERATIONS)
        maps = grid + flow
        moved = cv2.remap(tgt, maps[..., 0], maps[..., 1], cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
        flow += dis.calc(src, moved, None)
    return flow


def estimate_edit(
    before: np.ndarray, after: np.ndarray, before_points: np.ndarray, after_points: np.ndarray,
    *, name: str = "exemplar", face: FaceWindow | None = None,
) -> Edit:
    """Measure the edit between ``before`` and ``after`` (``(H, W, 3)`` uint8 RGB, one photo).

    ``face``: :func:`face_window` of ``before_points``, when the caller already has it.
    Raises InputError when the two are not a before/after of one photo of one person.
    """
    if before.shape != after.shape:
        raise InputError(
            f"{name}: before {before.shape[1]}×{before.shape[0]} and after "
            f"{after.shape[1]}×{after.shape[0]} differ in size; give a before/after of one photo"
        )
    unit = FaceFrame.from_points(before_points).unit
    face = face or face_window(before_points, before.shape[:2])
    appearance = face_patch(before, before_points)  # tells mirrored queries, body edits too
    likeness = photo_likeness(before, after, face)
    shift = float(np.median(np.linalg.norm(after_points - before_points, axis=1)))
    if likeness is not None and likeness < MIN_PHOTO_LIKENESS:
        raise InputError(
            f"{name}: before and after differ outside the face (correlation {likeness:.2f}); "
            "this is not a before/after of one photo; give the same photo before and after "
            "the retouch"
        )
    if likeness is None and shift > MAX_LANDMARK_SHIFT * unit:
        raise InputError(
            f"{name}: the faces in before and after are {shift:.0f} px apart and too little "
            "of the photo is outside the face to compare; this is not a before/after of one "
            "photo of one person"
        )
    # The face engine edits faces: look for motion only around the face (re-encoding noise
    # elsewhere, e.g. a JPEG export of "after", is not an edit); work inside that window.
    window, region, pad = face.window, face.region, face.pad
    changed = changed_mask(before[window.slices()], after[window.slices()]) & region
    if not changed.any():
        return _no_edit(before_points, appearance)
    rows, cols = np.nonzero(changed)
    inner = Box(int(max(cols.min() - pad, 0)), int(max(rows.min() - pad, 0)),
                int(min(cols.max() + pad + 1, window.width)),
                int(min(rows.max() + pad + 1, window.height)))
    region = region[inner.slices()]
    box = Box(window.x0 + inner.x0, window.y0 + inner.y0, window.x0 + inner.x1,
              window.y0 + inner.y1)
    b, a = before[box.slices()], after[box.slices()]
    scale = min(1.0, FLOW_UNIT_PX / unit)
    if scale < 1.0:  # measured at the flow scale (see FLOW_UNIT_PX), returned at full size
        size = (max(1, round(box.width * scale)), max(1, round(box.height * scale)))
        b, a = (cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in (b, a))
        region = cv2.resize(region.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    flow = _flow(a, b)
    magnitude = np.linalg.norm(flow, axis=-1)
    moving = region & (magnitude >= STILL_PX) & (_explained(a, b, flow) >= MIN_EXPLAINED)
    if not moving.any():
        return _no_edit(before_points, appearance)
    if np.percentile(magnitude[moving], 99) > MAX_EDIT * unit * scale:
        raise InputError(
            f"{name}: the edit moves pixels by more than half the eye distance; this is not a "
            "structural retouch of one photo"
        )
    field, weight = smooth_motion(flow, moving, a, region, unit * scale, max(1, round(pad * scale)))
    if not weight.any():
        return _no_edit(before_points, appearance)
    if scale < 1.0:
        size = (box.width, box.height)
        field, weight = _with_weight(
            cv2.resize(field, size, interpolation=cv2.INTER_LINEAR) / np.float32(scale))
    return Edit(field, weight, box, before_points,
                float(np.linalg.norm(field, axis=-1).max()), appearance)


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
    """``(field, weight)``: a smooth, fold-free version of the measured ``flow``.

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
    spread = np.linalg.norm(flow - median, axis=-1)
    trusted_motion = moving & (spread <= SPIKE_PX + 0.25 * np.linalg.norm(median, axis=-1))
    grey = _grey(image).astype(np.float32)
    energy = cv2.Sobel(grey, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(grey, cv2.CV_32F, 0, 1) ** 2
    energy = cv2.GaussianBlur(energy, (0, 0), sigma)
    still_trust = energy / (energy + TEXTURE_ENERGY)
    magnitude = np.linalg.norm(flow, axis=-1)
    still = region & ~moving & (magnitude < STILL_PX)
    trust = np.where(trusted_motion, 1.0, np.where(still, still_trust, 0.0)).astype(np.float32)
    values = flow * trusted_motion[..., None]  # a still pixel contributes a zero
    numerator = cv2.GaussianBlur(values * trust[..., None], (0, 0), sigma)
    denominator = cv2.GaussianBlur(trust, (0, 0), sigma)
    # Full value where the evidence is dense; falling to zero where it thins out.
    confidence = _smoothstep(np.clip(denominator / EVIDENCE_FULL, 0.0, 1.0))
    field = numerator * (confidence / np.maximum(denominator, 1e-6))[..., None]
    taper = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 2 * sigma) * _border_taper(
        region.shape, max(pad / 2.0, 1.0))
    field *= taper[..., None]
    return _with_weight(_unfolded(field, sigma))


def _with_weight(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(field, weight)``: ``weight`` 1 where ``field`` moves a pixel by at least
    :data:`MIN_OFFSET_PX`, tapering with the field, 0 (and the field 0) below."""
    reach = np.linalg.norm(field, axis=-1)
    weight = np.clip(reach / (4 * MIN_OFFSET_PX), 0.0, 1.0)
    weight[reach < MIN_OFFSET_PX] = 0.0
    field[weight == 0] = 0.0
    return np.ascontiguousarray(field, np.float32), weight.astype(np.float32)


def _border_taper(shape: tuple[int, int], width: float) -> np.ndarray:
    """``(h, w)`` float32: 0 on the box's border rising smoothly to 1 at ``width`` px in."""
    ys = np.minimum(np.arange(shape[0]), np.arange(shape[0])[::-1]).astype(np.float32)
    xs = np.minimum(np.arange(shape[1]), np.arange(shape[1])[::-1]).astype(np.float32)
    ramp = lambda d: _smoothstep(np.clip(d / width, 0.0, 1.0))  # noqa: E731
    return np.outer(ramp(ys), ramp(xs)).astype(np.float32)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """``(h, w)``: det of the Jacobian of ``u ↦ u + field(u)`` (``field`` ``(h, w, 2)`` px,
    ``(x, y)`` order; central differences). ≤ 0 where the map folds over."""
    dxdx = np.gradient(field[..., 0], axis=1)
    dxdy = np.gradient(field[..., 0], axis=0)
    dydx = np.gradient(field[..., 1], axis=1)
    dydy = np.gradient(field[..., 1], axis=0)
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
    support = _nonzero_box(field) if support is None else support
    if support.empty:  # a zero field folds nowhere
        return field
    for k in range(UNFOLD_PASSES):
        window = _grown(support, 2, shape)  # beyond it the field and its gradient are zero
        folded = _folded(field[window.slices()])
        if not folded.any():
            return field
        field, changed = _unfold_pass(field, folded, window, sigma, k)
        support = _union(support, changed)
    window = _grown(support, 2, shape)
    return field * _fold_free_scale(field[window.slices()])


def _folded(field: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where the backward map of ``field`` ``(h, w, 2)`` folds or is too
    steep (:data:`MIN_JACOBIAN_DET`, :data:`MAX_FIELD_GRADIENT`)."""
    return (jacobian_determinant(field) < MIN_JACOBIAN_DET) | _steep(field)


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
    changed = _grown(folds, reach + _gaussian_radius(sigma), shape)
    crop = _grown(changed, _gaussian_radius(wide), shape)
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


def _gaussian_radius(sigma: float) -> int:
    """An upper bound (px) of the half-width of OpenCV's Gaussian kernel for ``sigma`` on a
    float image (its size is ``round(8σ + 1) | 1``): beyond it a blur reads nothing."""
    return int(np.ceil(4.0 * sigma)) + 1


def _nonzero_box(field: np.ndarray) -> Box:
    """The smallest box holding every pixel where ``field`` (``(h, w)`` or ``(h, w, K)``) is not
    zero; an empty box when there is none."""
    live = _nonzero(field)
    if not live.any():
        return Box(0, 0, 0, 0)
    x, y, w, h = cv2.boundingRect(live.view(np.uint8))
    return Box(x, y, x + w, y + h)


def _nonzero(field: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where any component of ``field`` (``(h, w)`` or ``(h, w, K)``) is not
    zero (NumPy's ``any`` over a short last axis is slow)."""
    if field.ndim == 2:
        return field != 0
    live = field[..., 0] != 0
    for c in range(1, field.shape[2]):
        live |= field[..., c] != 0
    return live


def _grown(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` px on every side, clipped to an image of ``shape``; an
    empty box stays empty."""
    if box.empty:
        return box
    height, width = shape
    return Box(max(box.x0 - margin, 0), max(box.y0 - margin, 0), min(box.x1 + margin, width),
               min(box.y1 + margin, height))


def _union(a: Box, b: Box) -> Box:
    """The smallest box holding ``a`` and ``b`` (either may be empty)."""
    if a.empty:
        return b
    if b.empty:
        return a
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


#: Smoothing scales above this many pixels are worked at a reduced resolution that brings
#: them down to it (:func:`_unfolded_coarse`, :func:`body_confinement`): OpenCV's Gaussian
#: costs in proportion to its width, and on a 24 MP query a body's smoothing scale is ~30 px
#: (the carry took 22 s of CPU; the fields are smooth on that scale, so nothing is lost).
WORK_SIGMA_PX = 4.0


def _unfolded_coarse(field: np.ndarray, sigma: float, support: Box | None = None) -> np.ndarray:
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


def _steep(field: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where a component of ``field`` changes by more than
    :data:`MAX_FIELD_GRADIENT` px per pixel."""
    steep = np.zeros(field.shape[:2], bool)
    for c in range(2):
        for axis in (0, 1):
            steep |= np.abs(np.gradient(field[..., c], axis=axis)) > MAX_FIELD_GRADIENT
    return steep


def _fold_free_scale(field: np.ndarray) -> float:
    """The largest factor ≤ 1 (in steps of 0.8) at which ``field`` keeps its Jacobian
    determinant ≥ :data:`MIN_JACOBIAN_DET`."""
    scale = 1.0
    while scale > 0.05 and jacobian_determinant(field * scale).min() < MIN_JACOBIAN_DET:
        scale *= 0.8
    return scale


def photo_likeness(before: np.ndarray, after: np.ndarray, face: FaceWindow) -> float | None:
    """Correlation in [-1, 1] of ``before`` and ``after`` (``(H, W, 3)`` uint8, one size)
    outside the face region, on coarse grey levels (:data:`LIKENESS_SIDE` px); None when less
    than :data:`LIKENESS_MIN_SHARE` of the image lies outside it, or it is flat."""
    height, width = before.shape[:2]
    scale = LIKENESS_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = [cv2.resize(_grey(im), size, interpolation=cv2.INTER_AREA).astype(np.float64)
             for im in (before, after)]
    inside = cv2.resize(face.mask((height, width)).astype(np.float32), size,
                        interpolation=cv2.INTER_AREA) > 0
    outside = ~cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if outside.mean() < LIKENESS_MIN_SHARE:
        return None
    b, a = (im[outside] - im[outside].mean() for im in small)
    norm = float(np.sqrt((b * b).sum() * (a * a).sum()))
    if norm < 1e-6 * outside.sum():
        return None
    return float((b * a).sum() / norm)


@dataclass(frozen=True)
class FaceWindow:
    """Where face edits are looked for: ``window``, the box around the face; ``region``,
    ``(h, w)`` bool over it, the face region (:func:`_face_region`); ``pad``, px."""

    window: Box
    region: np.ndarray
    pad: int

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The face region as an ``(H, W)`` bool mask of the whole image."""
        out = np.zeros(shape, bool)
        out[self.window.slices()] = self.region
        return out


def face_window(points: np.ndarray, shape: tuple[int, int]) -> FaceWindow:
    """The :class:`FaceWindow` of a face with landmarks ``points`` in an image of ``shape``."""
    unit = FaceFrame.from_points(points).unit
    height, width = shape
    pad = max(16, int(0.1 * unit))
    reach = FACE_MARGIN * unit + pad
    lo = np.floor(points.min(axis=0) - reach).astype(int)
    hi = np.ceil(points.max(axis=0) + reach).astype(int) + 1
    window = Box(int(max(lo[0], 0)), int(max(lo[1], 0)), int(min(hi[0], width)),
                 int(min(hi[1], height)))
    region = _face_region(points - [window.x0, window.y0], unit, (window.height, window.width))
    return FaceWindow(window, region, pad)


def _no_edit(points: np.ndarray, appearance: np.ndarray | None = None) -> Edit:
    return Edit(np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32),
                Box(0, 0, 0, 0), points, 0.0, appearance)


def _face_region(points: np.ndarray, unit: float, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)``: the landmarks' convex hull grown by :data:`FACE_MARGIN` face units.

    The hull is filled and dilated within its own box grown by the dilation's radius (the rest
    stays False): the dilation's cost follows the face, not the window around it (a 24 MP
    portrait's window is several megapixels, the kernel ~100 px wide).
    """
    out = np.zeros(shape, bool)
    hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
    grow = int(round(FACE_MARGIN * unit)) | 1
    x, y, w, h = cv2.boundingRect(hull)
    height, width = shape
    x0, y0 = max(x - grow, 0), max(y - grow, 0)
    x1, y1 = min(x + w + grow, width), min(y + h + grow, height)
    if x1 <= x0 or y1 <= y0:
        return out
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, hull - [x0, y0], 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))
    grown = _dilated_runs(mask, kernel)
    out[y0:y1, x0:x1] = (cv2.dilate(mask, kernel) > 0) if grown is None else grown
    return out


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(has, first, last)`` per row of ``mask`` ``(h, w)``: whether it holds a non-zero
    pixel, the first and last one's column; None unless every such row is one run."""
    live = mask != 0
    has = live.any(axis=1)
    first = np.argmax(live, axis=1)
    last = mask.shape[1] - 1 - np.argmax(live[:, ::-1], axis=1)
    if np.any(live.sum(axis=1)[has] != (last - first + 1)[has]):
        return None
    return has, first, last


def _dilated_runs(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray | None:
    """``cv2.dilate(mask, kernel) > 0`` (anchor at the kernel's centre, nothing beyond the
    edges) for a ``mask`` ``(h, w)`` whose rows are single runs (a filled convex polygon) and
    a ``kernel`` whose rows are too (an ellipse), as one run per output row: the union of the
    mask's runs, each widened by the kernel row that reaches it. None when a union is not one
    run, or either is not made of runs (the caller dilates then).

    Its cost is rows × kernel rows, where OpenCV's grows with pixels × kernel size.
    """
    runs, kruns = _row_runs(mask), _row_runs(kernel)
    if runs is None or kruns is None:
        return None
    has, first, last = runs
    k_has, k_first, k_last = kruns
    height, width = mask.shape
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    rows = np.nonzero(k_has)[0]
    source = np.arange(height)[:, None] + (rows - cy)[None, :]  # (h, kernel rows)
    inside = (source >= 0) & (source < height)
    source = np.clip(source, 0, height - 1)
    valid = inside & has[source]
    lo = first[source] - (k_last[rows] - cx)[None, :]
    hi = last[source] - (k_first[rows] - cx)[None, :]
    lo, hi = np.maximum(lo, 0), np.minimum(hi, width - 1)
    valid &= lo <= hi
    lo = np.where(valid, lo, width)
    hi = np.where(valid, hi, -1)
    order = np.argsort(lo, axis=1, kind="stable")
    lo_sorted = np.take_along_axis(lo, order, axis=1)
    reach = np.maximum.accumulate(np.take_along_axis(hi, order, axis=1), axis=1)
    gap = (lo_sorted[:, 1:] > reach[:, :-1] + 1) & (lo_sorted[:, 1:] < width)
    if gap.any():
        return None
    out = np.zeros((height, width), bool)
    start, stop = lo.min(axis=1), hi.max(axis=1)
    for y in np.nonzero(valid.any(axis=1))[0]:
        out[y, start[y] : stop[y] + 1] = True
    return out


def _explained(after: np.ndarray, before: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Share of the local before/after difference that the flow explains, ``(h, w)`` ≤ 1.

    ``1 − SSD(after, before warped by flow) / SSD(after, before)`` in a Gaussian window: near
    1 where pixels really moved, near 0 where the difference is noise (re-encoding) that no
    motion explains — flow drifts freely there, in flat skin and background.
    """
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(before.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1],
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a = after.astype(np.float32)
    still = cv2.GaussianBlur(((a - before) ** 2).sum(axis=2), (0, 0), EXPLAIN_SIGMA)
    moved = cv2.GaussianBlur(((a - warped) ** 2).sum(axis=2), (0, 0), EXPLAIN_SIGMA)
    return 1.0 - moved / np.maximum(still, 1e-6)


#: The face patch compared to tell a mirrored query: face units around the eyes' midpoint
#: (u across, v down towards the chin), sampled every PATCH_STEP units from the face scaled to
#: a unit of PATCH_UNIT_PX (area-averaged first, so the sampling does not alias).
PATCH_U = (-1.2, 1.2)
PATCH_V = (-0.8, 1.8)
PATCH_STEP = 0.05
PATCH_UNIT_PX = 20.0
#: A query is taken as mirrored when its mirrored face patch correlates with the exemplar's by
#: at least MIRROR_MIN and by MIRROR_MARGIN more than the unmirrored one: only then is there
#: evidence (the same photo or person, lit from the mirrored side) rather than a coin toss
#: between two near-symmetric faces.
MIRROR_MIN = 0.5
MIRROR_MARGIN = 0.15


def _grey_of(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 grey levels of pixels of any supported dtype and channel count."""
    pixels = to_uint8(image)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    if pixels.shape[2] < 3:
        return np.ascontiguousarray(pixels[..., 0])
    return _grey(pixels[..., :3])


def face_patch(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(nv, nu)`` float32 grey levels of ``image`` (``(H, W, C)``, uint8 or float in [0, 1])
    in the face frame of ``points`` (``(478, 2)`` ``(x, y)`` px), high-passed and normalised
    (zero mean, unit norm): what :func:`is_mirrored` compares."""
    frame = FaceFrame.from_points(points)
    us = np.arange(PATCH_U[0], PATCH_U[1] + 1e-9, PATCH_STEP)
    vs = np.arange(PATCH_V[0], PATCH_V[1] + 1e-9, PATCH_STEP)
    local = np.stack(np.meshgrid(us, vs), axis=-1)
    where = frame.to_image(local)
    grey = _grey_of(image)
    scale = min(1.0, PATCH_UNIT_PX / frame.unit)
    lo = np.floor(where.reshape(-1, 2).min(axis=0)).astype(int) - 2
    hi = np.ceil(where.reshape(-1, 2).max(axis=0)).astype(int) + 3
    height, width = grey.shape
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros(local.shape[:2], np.float32)
    crop = grey[y0:y1, x0:x1]
    size = (max(2, round(crop.shape[1] * scale)), max(2, round(crop.shape[0] * scale)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    sx, sy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    maps = ((where - [x0, y0] + 0.5) * [sx, sy] - 0.5).astype(np.float32)
    patch = cv2.remap(small, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    patch -= cv2.GaussianBlur(patch, (0, 0), 3.0)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return (patch / norm if norm > 0 else patch).astype(np.float32)


def mirror_evidence(appearance: np.ndarray, query: np.ndarray,
                    query_points: np.ndarray) -> tuple[float, float]:
    """``(direct, mirrored)``: correlation of the exemplar's face patch with the query's, and
    with the query's mirrored about its face's vertical axis (``u → −u``)."""
    patch = face_patch(query, query_points)
    return float((appearance * patch).sum()), float((appearance * patch[:, ::-1]).sum())


def is_mirrored(appearance: np.ndarray | None, query: np.ndarray,
                query_points: np.ndarray) -> bool:
    """Whether the query shows the exemplar's face mirrored (:data:`MIRROR_MIN`,
    :data:`MIRROR_MARGIN`); False without an exemplar patch."""
    if appearance is None:
        return False
    direct, mirrored = mirror_evidence(appearance, query, query_points)
    return mirrored >= MIRROR_MIN and mirrored >= direct + MIRROR_MARGIN


def _correspondence_handles(points: np.ndarray) -> np.ndarray:
    """Indices of the landmarks used as correspondence handles (thinned, same for both faces)."""
    local = FaceFrame.from_points(points).to_local(points)
    return np.asarray(thinned(local, list(range(468)), HANDLE_SPACING))


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
        radius = _gaussian_radius(sigma_nodes) if sigma_nodes >= 0.5 else 0
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
    offsets = _carried_offsets(field, field_box, ex_h, q_h, box, flip, correspondence_sigma,
                               grid, reflect) * (flip * strength)
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
    smooth = _unfolded_coarse(whole, smooth_sigma, support=part)
    moved = part if smooth is whole else _nonzero_box(smooth)
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
    support = _nonzero_box(field)
    if support.empty:
        return np.zeros(grid_nodes(box, grid).shape)
    # where the correspondence can reach the field: its support (and the pixel bilinear
    # sampling reads beyond), mapped as the query box is mapped from the field's box
    moving = Box(field_box.x0 + support.x0 - 1, field_box.y0 + support.y0 - 1,
                 field_box.x0 + support.x1 + 1, field_box.y0 + support.y1 + 1)
    within = _grown(_query_box(moving, ex_h, q_h, (box.y1, box.x1), reflect),
                    int(np.ceil(REACH_SIGMAS * sigma)), (box.y1, box.x1))
    within = Box(max(within.x0, box.x0), max(within.y0, box.y0), within.x1, within.y1)
    if not within.empty:
        mapped, exact = _correspondence(box, q_h, ex_h, flip, sigma, grid, within=within)
        sampled = _sample(field, field_box, mapped)
        sampled[~exact] = 0.0
        live = _nonzero(sampled)
        ring = 2 * REACH_RING_NODES + 1
        edge = cv2.dilate((~exact).astype(np.uint8), np.ones((ring, ring), np.uint8)) > 0
        if not np.any(live & edge):
            return sampled[..., :2] @ _similarity_inverse(ex_h, q_h).T
    mapped, _ = _correspondence(box, q_h, ex_h, flip, sigma, grid)
    sampled = _sample(field, field_box, mapped)
    return sampled[..., :2] @ _similarity_inverse(ex_h, q_h).T


def _reached_box(offsets: np.ndarray, grid: int, box: Box) -> Box:
    """The pixels of ``box`` (in its own coordinates) that the separable cubic interpolation
    (:func:`~mirrorppr_cli.warp.interpolate_planes`) of node values ``offsets``
    ``(ny, nx, K)``, ``grid`` px apart, can make non-zero; an empty box when every node is zero.

    Pixel ``i`` lies between nodes ``⌊i/grid⌋`` and the next and reads two nodes either side
    (the ghost nodes beyond the ends are made of the two end nodes), so only pixels with a
    non-zero node among ``⌊i/grid⌋ − 1 … ⌊i/grid⌋ + 2`` can be non-zero.
    """
    live = _nonzero(offsets)
    rows, cols = np.any(live, axis=1), np.any(live, axis=0)
    if not rows.any():
        return Box(0, 0, 0, 0)
    r0, r1 = int(np.argmax(rows)), len(rows) - 1 - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - 1 - int(np.argmax(cols[::-1]))
    return Box(max(grid * (c0 - 2), 0), max(grid * (r0 - 2), 0),
               min(grid * (c1 + 2), box.width), min(grid * (r1 + 2), box.height))


# --------------------------------------------------------------------------------------------
# Body motion: measured like the face's, outside the face; carried by the body catalog
# (explain.explain_body, retouch_job.apply_exemplar), not by the landmark correspondence.

#: Body motion is looked for on the exemplar's person (the mask of *before*) grown by this many
#: body units (shoulder distances): a body operation also moves the background beside the
#: outline, by up to the outline's move, across a band up to 3× that move wide (at strength 100
#: a move of at most 0.06 body units: a band of 0.18; see ops/body_catalog.py).
BODY_MARGIN = 0.25
#: Smoothing scale of measured body motion (body units): a body edit reshapes a limb, the
#: waist or the shoulders as a whole.
BODY_SMOOTH_SIGMA = 0.015
#: Pose landmarks mirrored (MediaPipe pose labels left and right by image side in a mirrored
#: photo, as the face mesh does): the nose is its own mirror, each left point its right one.
POSE_MIRROR = np.array([0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20,
                        19, 22, 21, 24, 23, 26, 25, 28, 27, 30, 29, 32, 31], dtype=np.intp)


@dataclass(frozen=True)
class BodyMotion:
    """The measured body edit of an exemplar pair: same conventions as :class:`Edit`.

    Attributes:
        flow: ``(h, w, 2)`` float32 backward offsets over ``box`` of the *after* image
            (``after(u) = before(u + flow(u))``), 0 where ``weight`` is 0.
        weight: ``(h, w)`` float32 in [0, 1]: where motion was measured (0 = unmoved).
        box: region of the exemplar image holding every changed pixel of the body region.
        region: ``(h, w)`` bool over ``box``: the body region (person grown by
            :data:`BODY_MARGIN`, without the face region).
        max_motion_px: largest offset, for reports.
    """

    flow: np.ndarray
    weight: np.ndarray
    box: Box
    region: np.ndarray
    max_motion_px: float
    #: The measured motion as a smooth, fold-free field (:func:`smooth_motion`) over ``box``:
    #: what is carried into a query beyond the fitted body operations. None: not made.
    smooth: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.box.empty or not self.weight.any()

    @staticmethod
    def none() -> BodyMotion:
        return BodyMotion(np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32),
                          Box(0, 0, 0, 0), np.zeros((0, 0), bool), 0.0)


#: Off the face, a pixel counts as changed when its luma difference, averaged over 3×3 pixels,
#: exceeds this (grey levels). Re-encoding an exported "after" changes most pixels, by at most
#: 7–8 levels in any channel and ≤ 4 on a 3×3 average (the nine real professional survey
#: pairs), while a body edit moves outlines: 100–250 levels on some pixels.
CHANGE_NOISE = 6.0
#: ... and belongs to a connected run of at least this many such pixels.
MIN_CHANGE_AREA = 24


def changed_off_face(before: np.ndarray, after: np.ndarray,
                     face: FaceWindow) -> np.ndarray | None:
    """``(H, W)`` bool: the pixels that differ between ``before`` and ``after`` (``(H, W, 3)``
    uint8) by more than re-encoding noise (:data:`CHANGE_NOISE`) outside the face region,
    where :func:`estimate_edit` does not look; None when there are none.

    The test that keeps the face-only path fast (a few ms at 2 MP: a difference and a box
    filter, no flow and no body detector when nothing but noise changed).
    """
    diff = cv2.absdiff(np.ascontiguousarray(before), np.ascontiguousarray(after))
    if cv2.countNonZero(diff.reshape(diff.shape[0], -1)) == 0:
        return None
    # Luma: JPEG's chroma subsampling errs by more on saturated edges, and moves nothing.
    luma = cv2.absdiff(_grey(before), _grey(after)) if before.ndim == 3 else diff
    changed = cv2.blur(luma.astype(np.float32), (3, 3)) > CHANGE_NOISE
    changed[face.window.slices()] &= ~face.region
    if not changed.any():
        return None
    # A moved outline changes a connected run of pixels; re-encoding errors on busy texture
    # pass the threshold only in scattered specks.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), 8)
    large = stats[:, cv2.CC_STAT_AREA] >= MIN_CHANGE_AREA
    large[0] = False
    if not large.any():
        return None
    return large[labels]


def body_confinement(person: np.ndarray, unit: float, face: FaceWindow,
                     sigma: float) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: where carried body motion may move a query's pixels —
    its person (``person``, ``(H, W)`` bool; body unit ``unit`` px) grown by
    :data:`BODY_MARGIN`, off its face region (``face``), tapered over ``sigma`` px. The
    exemplar's body motion is measured in the same region of the exemplar
    (:func:`estimate_body_motion`): motion a loose correspondence puts into the query's
    background or onto its face is not an edit of its body."""
    height, width = person.shape
    factor = min(1.0, WORK_SIGMA_PX / max(sigma, 0.5))
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    shrink = lambda m: cv2.resize(m.astype(np.float32), size,  # noqa: E731
                                  interpolation=cv2.INTER_AREA) > 0.5
    small_person = shrink(person) if factor < 1 else person
    face_mask = face.mask(person.shape)
    small_face = shrink(face_mask) if factor < 1 else face_mask
    region = cv2.distanceTransform((~small_person).astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) <= BODY_MARGIN * unit * factor
    region &= ~small_face
    taper = cv2.GaussianBlur(region.astype(np.float32), (0, 0), max(sigma * factor, 0.5))
    confine = np.minimum(taper * 2.0, 1.0) * region  # full value a sigma or so inside
    if factor < 1:
        confine = cv2.resize(confine, (width, height), interpolation=cv2.INTER_LINEAR)
        confine[face.window.slices()][face.region] = 0.0  # the face stays exactly untouched
    return confine.astype(np.float32)


def estimate_body_motion(before: np.ndarray, after: np.ndarray, person: np.ndarray,
                         unit: float, face: FaceWindow, changed: np.ndarray) -> BodyMotion:
    """Measure the body motion between ``before`` and ``after`` (``(H, W, 3)`` uint8).

    ``person``: ``(H, W)`` bool person mask of ``before``; ``unit``: its body unit (px);
    ``face``: :func:`face_window` of ``before``; ``changed``: :func:`changed_off_face`. The flow
    (:func:`_flow`, as for the face) is kept where it is real: on the person grown by
    :data:`BODY_MARGIN`, off the face, at least :data:`STILL_PX` and explaining at least
    :data:`MIN_EXPLAINED` of the local difference.
    """
    # The person grown by BODY_MARGIN body units (a Euclidean distance: linear in the image
    # size, where a dilation by so large a disc costs seconds).
    region = cv2.distanceTransform((~person).astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) <= BODY_MARGIN * unit
    region &= ~face.mask(region.shape)
    moved = changed & region
    if not moved.any():
        return BodyMotion.none()
    height, width = before.shape[:2]
    pad = max(16, int(0.05 * unit))
    rows, cols = np.nonzero(moved)
    box = Box(int(max(cols.min() - pad, 0)), int(max(rows.min() - pad, 0)),
              int(min(cols.max() + pad + 1, width)), int(min(rows.max() + pad + 1, height)))
    b, a = before[box.slices()], after[box.slices()]
    flow = _flow(a, b)
    magnitude = np.linalg.norm(flow, axis=-1)
    inside = region[box.slices()]
    weight = inside & (magnitude >= STILL_PX) & (_explained(a, b, flow) >= MIN_EXPLAINED)
    weight = cv2.GaussianBlur(weight.astype(np.float32), (5, 5), 0) * inside
    if not weight.any():
        return BodyMotion.none()
    smooth, _ = smooth_motion(flow, weight > 0.5, a, inside, unit, pad,
                              sigma=max(BODY_SMOOTH_SIGMA * unit, MIN_SMOOTH_PX))
    flow = flow * (weight > 0)[..., None]
    return BodyMotion(flow.astype(np.float32), weight.astype(np.float32), box, inside,
                      float(np.linalg.norm(flow, axis=-1).max()), smooth)
