"""Measure what an exemplar pair's retouch moved: the face :class:`Edit` and the
:class:`BodyMotion` off the face.

The face edit is the smoothed backward flow from *after* to *before* inside the face window,
after checks that the pair is one photograph (:func:`photo_likeness`, landmark shift) and the
edit is plausible (:data:`MAX_EDIT`). Body edits are measured with the same flow over the person
outside the face region, only when :func:`changed_off_face` finds changed pixels there; they are
fitted as body operations (:func:`mirrorppr_cli.geometric.fit.explain_body`) and carried or
re-planned on the query's own body. Conventions: :mod:`mirrorppr_cli.geometric`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..errors import InputError
from ..metrics.pixel import changed_mask
from ..ops.compose import thinned
from .box import Box
from .face import FACE_MARGIN, FaceWindow, face_patch, face_window
from .face_frame import FaceFrame
from .field import (
    MIN_SMOOTH_PX,
    SMOOTH_SIGMA,
    WORK_SIGMA_PX,
    region_taper,
    smooth_motion,
    smooth_motion_and_confidence,
    smoothstep,
    with_weight,
)
from .flow import STILL_PX, dense_flow, explained, grey, lengths

#: Motion counts only where it explains at least this share of the local before/after
#: difference (measured: ≥ 0.65 inside real edits, ≤ 0.57 for JPEG re-encoding noise).
MIN_EXPLAINED = 0.6
#: Correspondence handles: landmarks thinned to this spacing (face units).
HANDLE_SPACING = 0.05
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


def photo_likeness(before: np.ndarray, after: np.ndarray, face: FaceWindow) -> float | None:
    """Correlation in [-1, 1] of ``before`` and ``after`` (``(H, W, 3)`` uint8, one size)
    outside the face region, on coarse grey levels (:data:`LIKENESS_SIDE` px); None when less
    than :data:`LIKENESS_MIN_SHARE` of the image lies outside it, or it is flat."""
    height, width = before.shape[:2]
    scale = LIKENESS_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = [cv2.resize(grey(im), size, interpolation=cv2.INTER_AREA).astype(np.float64)
             for im in (before, after)]
    region = np.zeros((height, width), np.float32)  # face.mask() as float32, made as such
    region[face.window.slices()] = face.region
    inside = cv2.resize(region, size, interpolation=cv2.INTER_AREA) > 0
    outside = ~cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if outside.mean() < LIKENESS_MIN_SHARE:
        return None
    b, a = (im[outside] - im[outside].mean() for im in small)
    norm = float(np.sqrt((b * b).sum() * (a * a).sum()))
    if norm < 1e-6 * outside.sum():
        return None
    return float((b * a).sum() / norm)


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
    #: ``(h, w)`` float32 in [0, 1] over ``box``, smooth: how much the measurement says at
    #: each pixel (:func:`~mirrorppr_cli.geometric.field.smooth_motion_and_confidence`); for
    #: :func:`measured_support` when the edit is measured, not saved with it (None: not known).
    confidence: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.box.empty

    @cached_property
    def handles(self) -> np.ndarray:
        """Indices of the correspondence handles (:func:`correspondence_handles` of
        ``points``), computed once for every query the edit is carried to."""
        return correspondence_handles(self.points)


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
    flow = dense_flow(a, b)
    magnitude = lengths(flow)
    moving = region & (magnitude >= STILL_PX) & (explained(a, b, flow) >= MIN_EXPLAINED)
    if not moving.any():
        return _no_edit(before_points, appearance)
    if np.percentile(magnitude[moving], 99) > MAX_EDIT * unit * scale:
        raise InputError(
            f"{name}: the edit moves pixels by more than half the eye distance; this is not a "
            "structural retouch of one photo"
        )
    field, weight, confidence = smooth_motion_and_confidence(
        flow, moving, a, region, unit * scale, max(1, round(pad * scale)))
    if not weight.any():
        return _no_edit(before_points, appearance)
    if scale < 1.0:
        size = (box.width, box.height)
        field, weight = with_weight(
            cv2.resize(field, size, interpolation=cv2.INTER_LINEAR) / np.float32(scale))
        confidence = cv2.resize(confidence, size, interpolation=cv2.INTER_LINEAR)
    return Edit(field, weight, box, before_points,
                float(lengths(field).max()), appearance, confidence)


def measured_support(edit: Edit, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32 in [0, 1] over ``edit.box``: where :func:`estimate_edit` measured
    something — moving or textured still pixels (``edit.confidence``, when known) within the
    exemplar's face region (of ``edit.points`` in an image of ``shape``), the region tapered as
    :func:`~mirrorppr_cli.geometric.field.smooth_motion` tapers the field (Gaussian of 2·σ,
    σ the smoothing scale; to zero at the box's border), worked at the flow scale
    (:data:`FLOW_UNIT_PX`).

    Smooth by construction: what is multiplied by it stays a smooth field (a per-pixel mask,
    e.g. "where the field is non-zero", would cut it with a step).
    """
    box = edit.box
    if box.empty:
        return np.zeros((0, 0), np.float32)
    face = face_window(edit.points, shape)
    window = face.window
    region = face.region[box.y0 - window.y0 : box.y1 - window.y0,
                         box.x0 - window.x0 : box.x1 - window.x0]
    unit = FaceFrame.from_points(edit.points).unit
    scale = min(1.0, FLOW_UNIT_PX / unit)
    size = (max(1, round(box.width * scale)), max(1, round(box.height * scale)))
    small = cv2.resize(region.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    taper = region_taper(small > 0, max(SMOOTH_SIGMA * unit, MIN_SMOOTH_PX) * scale,
                         face.pad * scale)
    if scale < 1.0:
        taper = cv2.resize(taper, (box.width, box.height), interpolation=cv2.INTER_LINEAR)
    if edit.confidence is not None:
        taper = taper * edit.confidence
    return np.clip(taper, 0.0, 1.0).astype(np.float32)


def _no_edit(points: np.ndarray, appearance: np.ndarray | None = None) -> Edit:
    return Edit(np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32),
                Box(0, 0, 0, 0), points, 0.0, appearance)


def correspondence_handles(points: np.ndarray) -> np.ndarray:
    """Indices of the landmarks used as correspondence handles (thinned, same for both faces)."""
    local = FaceFrame.from_points(points).to_local(points)
    return np.asarray(thinned(local, list(range(468)), HANDLE_SPACING))


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
#: The 3×3 average exceeds :data:`CHANGE_NOISE` exactly where the 3×3 sum of the (integer)
#: luma differences exceeds this: OpenCV's float box filter of integer levels gives the sum
#: (exact in float) over 9, which is 6.0 exactly for a sum of 54 (tests/test_exact_speedups.py
#: compares the two), so the integer sum tells the same pixels without a float image.
CHANGE_SUM = int(9 * CHANGE_NOISE)


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
    luma = cv2.absdiff(grey(before), grey(after)) if before.ndim == 3 else diff
    changed = cv2.boxFilter(luma, cv2.CV_16U, (3, 3), normalize=False) > CHANGE_SUM
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

#: Carried body motion keeps its full value from this many σ inside the edge of the region
#: it may move (:func:`body_confinement`), rising from 0 on the edge (a smoothstep of the
#: distance: no step, also in the region's concave corners).
FULL_CONFINEMENT_SIGMAS = 1.65


def body_confinement(person: np.ndarray, unit: float, face_points: np.ndarray,
                     sigma: float) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1], smooth: where carried body motion may move a query's
    pixels — its person (``person``, ``(H, W)`` bool; body unit ``unit`` px) grown by
    :data:`BODY_MARGIN`, rising from 0 on that region's edge to 1 at
    :data:`FULL_CONFINEMENT_SIGMAS` ``sigma`` px inside; and off its face: 0 on the face mesh's hull (``face_points``,
    ``(478, 2)`` px), rising to 1 across the margin band of its face region (:func:`face_window`).

    The exemplar's body motion is measured in the same region of the exemplar
    (:func:`estimate_body_motion`): motion a loose correspondence puts into the query's
    background or onto its face is not an edit of its body. The carried field is multiplied
    by this, so a step here is a step in the field: the face region's edge is where the
    measured face and body motions hand over (each tapered to about half there), and a
    confinement cut to 0 on it tore rim-lit jaws; one rising from 0 on it dropped half the
    edit there (survey q02's jaw and neck: recall 0.65 → 0.57 on its selfaug items).
    """
    height, width = person.shape
    factor = min(1.0, WORK_SIGMA_PX / max(sigma, 0.5))
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    small_person = (cv2.resize(person.astype(np.float32), size, interpolation=cv2.INTER_AREA)
                    > 0.5) if factor < 1 else person
    region = cv2.distanceTransform((~small_person).astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) <= BODY_MARGIN * unit * factor
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    confine = smoothstep(np.clip(inside / max(FULL_CONFINEMENT_SIGMAS * sigma * factor, 1.0),
                                  0.0, 1.0))
    # off the face: 0 on the mesh's hull, 1 from the face region's edge on
    band = max(FACE_MARGIN * FaceFrame.from_points(face_points).unit / 2.0, 1.0) * factor
    hull = np.zeros(region.shape, np.uint8)
    corners = cv2.convexHull(((face_points + 0.5) * factor - 0.5).astype(np.float32))
    cv2.fillConvexPoly(hull, np.round(corners).astype(np.int32), 1)
    from_hull = cv2.distanceTransform(1 - hull, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    confine *= smoothstep(np.clip(from_hull / band, 0.0, 1.0))
    if factor < 1:
        confine = cv2.resize(confine, (width, height), interpolation=cv2.INTER_LINEAR)
        hull = np.zeros((height, width), np.uint8)
        cv2.fillConvexPoly(hull, np.round(cv2.convexHull(
            face_points.astype(np.float32))).astype(np.int32), 1)
    confine[hull > 0] = 0.0  # the face itself stays exactly untouched
    return confine.astype(np.float32)


def estimate_body_motion(before: np.ndarray, after: np.ndarray, person: np.ndarray,
                         unit: float, face: FaceWindow, changed: np.ndarray) -> BodyMotion:
    """Measure the body motion between ``before`` and ``after`` (``(H, W, 3)`` uint8).

    ``person``: ``(H, W)`` bool person mask of ``before``; ``unit``: its body unit (px);
    ``face``: :func:`face_window` of ``before``; ``changed``: :func:`changed_off_face`. The flow
    (:func:`dense_flow`, as for the face) is kept where it is real: on the person grown by
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
    flow = dense_flow(a, b)
    magnitude = lengths(flow)
    inside = region[box.slices()]
    weight = inside & (magnitude >= STILL_PX) & (explained(a, b, flow) >= MIN_EXPLAINED)
    weight = cv2.GaussianBlur(weight.astype(np.float32), (5, 5), 0) * inside
    if not weight.any():
        return BodyMotion.none()
    smooth, _ = smooth_motion(flow, weight > 0.5, a, inside, unit, pad,
                              sigma=max(BODY_SMOOTH_SIGMA * unit, MIN_SMOOTH_PX))
    flow = flow * (weight > 0)[..., None]
    return BodyMotion(flow.astype(np.float32), weight.astype(np.float32), box, inside,
                      float(lengths(flow).max()), smooth)
