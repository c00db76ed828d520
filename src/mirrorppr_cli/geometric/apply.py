"""Apply a measured :class:`~mirrorppr_cli.geometric.measure.Exemplar` to one query's pixels.

Face edits are carried in the exemplar's mode; body edits are re-planned on the query's own
detected body (its body frame: the edit scales with the query's shoulder width and follows its
mirroring and rotation), or carried through the face and pose landmarks as measured. A query
without a detectable body, or without the body part an operation edits, keeps its face edit;
what was skipped is said in the notes. :func:`sampling_map` gives the same edit as an inverse
map ``(H, W, 2)`` float32 ``(x, y)`` (for exports).
"""

from __future__ import annotations

import numpy as np

from ..io import as_rgb8
from ..ops import OpRequest, plan_warp
from ..ops.request import clip_strength
from ..subject import Subject
from .carry import transfer
from .face import is_mirrored
from .field import fold_free_local_warp
from .fit import (
    BodyExplanation,
    BodyResidual,
)
from .measure import Exemplar


def apply_exemplar(exemplar: Exemplar, pixels: np.ndarray, points: np.ndarray,
                   strength: float = 1.0, *, rgb: np.ndarray | None = None,
                   notes: list[str] | None = None,
                   review: list[str] | None = None,
                   mirrored: bool | None = None,
                   subject: Subject | None = None, in_place: bool = False) -> np.ndarray:
    """The query's new pixels.

    flow: the measured motion carried over through the landmark correspondence; catalog: the
    fitted catalog operations re-planned on the query's own landmarks; hybrid: catalog, then
    the motion the catalog does not explain carried over as in flow mode. Then, in every mode,
    the fitted body operations re-planned on the query's own body (:func:`apply_body_edit`).

    ``rgb``: the query as ``(H, W, 3)`` uint8 RGB for the body detector (default: made from
    ``pixels``); ``notes``: gets what was skipped of the body edit, and why; ``review``: gets
    why the frame should be looked at (:func:`carry_body_residual`); ``mirrored``: whether the
    query shows the exemplar's face mirrored (default: told from ``pixels``); ``subject``: the
    query's detections, shared with other passes over it (default: detected here);
    ``in_place``: ``pixels`` may be changed and returned (the caller owns them; ``rgb`` is then
    required: the body detector must see the query, not a half-edited image).
    """
    if in_place and rgb is None:
        raise ValueError("apply_exemplar: in_place needs rgb")
    if mirrored is None:
        mirrored = is_mirrored(exemplar.edit.appearance, pixels, points)
    if exemplar.explanation is None:
        out = transfer(exemplar.edit, pixels, points, strength=strength, mirrored=mirrored,
                       in_place=in_place)
    else:
        requests = [OpRequest(r.name, clip_strength(r.strength * strength))
                    for r in exemplar.explanation.ops]
        out = (fold_free_local_warp(pixels, plan_warp(points, requests), in_place=in_place)
               if requests else pixels if in_place else pixels.copy())
        if exemplar.residual is not None:
            out = transfer(exemplar.residual, out, points, strength=strength, in_place=True,
                           mirrored=mirrored)
    has_ops = exemplar.body is not None and bool(exemplar.body.ops)
    if (has_ops or exemplar.body_residual is not None) and strength != 0:
        out = apply_body_edit(exemplar.body, out, pixels if rgb is None else rgb, strength,
                              notes=notes, residual=exemplar.body_residual, mirrored=mirrored,
                              face_points=points, review=review, subject=subject)
    return out


def sampling_map(exemplar: Exemplar, rgb: np.ndarray, points: np.ndarray,
                 strength: float = 1.0, *, mirrored: bool | None = None,
                 subject: Subject | None = None) -> np.ndarray:
    """``(H, W, 2)`` float32: for every pixel of the retouched query, the query position
    ``(x, y)`` (px, pixel centres at integers) it takes its colour from — the inverse map of
    :func:`apply_exemplar` on the query ``rgb`` (``(H, W, 3)`` uint8) with landmarks
    ``points``. Untouched pixels map to themselves.

    Made by retouching an image of coordinates with the very same steps: every step resamples
    bilinearly (exact for coordinates) and moves or copies pixels (the catalog operations'
    feather too: it scales their offsets, it mixes no colours).
    ``mirrored``, ``subject``: as the retouch itself found them (default: found again).
    """
    height, width = rgb.shape[:2]
    coords = np.empty((height, width, 2), np.float32)  # two channels: every step is channel-wise
    coords[..., 0] = np.arange(width, dtype=np.float32)
    coords[..., 1] = np.arange(height, dtype=np.float32)[:, None]
    if mirrored is None:
        mirrored = is_mirrored(exemplar.edit.appearance, rgb, points)
    moved = apply_exemplar(exemplar, coords, points, strength, rgb=rgb, mirrored=mirrored,
                           subject=subject, in_place=True)
    return np.ascontiguousarray(moved, dtype=np.float32)


def apply_body_edit(fit: BodyExplanation | None, pixels: np.ndarray, rgb: np.ndarray,
                    strength: float = 1.0, *, notes: list[str] | None = None,
                    name: str = "query", residual: BodyResidual | None = None,
                    mirrored: bool = False, face_points: np.ndarray | None = None,
                    review: list[str] | None = None,
                    subject: Subject | None = None) -> np.ndarray:
    """``pixels`` with the fitted body operations planned on the body detected in ``rgb``
    (the same image, for the detector; it may be ``pixels`` itself).

    No body found, or an operation's part not visible: that is skipped (a note says so), the
    pixels are returned as they are; the face edit already made stays. Pixels the body warp
    does not reach are bit-identical. ``face_points``: the query's face mesh, for carrying
    ``residual`` (:func:`carry_body_residual`); ``subject``: where the body is asked for
    (detected once per query whatever the passes; default: detected here in ``rgb``).
    """
    from ..ops.body_catalog import get_body_operation
    from ..ops.body_plan import apply_body_warp, plan_body_warp
    from .body import NoPersonError

    notes = [] if notes is None else notes
    requests = [OpRequest(r.name, clip_strength(r.strength * strength)) for r in (fit.ops if fit else [])]
    wanted = ", ".join(f"{r.name} {r.strength:+.0f}" for r in requests) or "measured motion"
    subject = subject or Subject(as_rgb8(rgb), name)
    try:
        body = subject.body()
    except NoPersonError as error:
        notes.append(f"body edit not applied ({wanted}): {error}")
        return pixels.copy()
    out = pixels
    if requests:
        warp = plan_body_warp(body, requests, strict=False)
        done = {stage.name for stage in warp.stages}
        for r in requests:
            if r.name not in done:
                op = get_body_operation(r.name)
                notes.append(f"{r.name} {r.strength:+.0f} not applied: no {op.region} to edit "
                             f"in the {name} (needs {op.needs})")
        out = apply_body_warp(pixels, warp)
    if residual is not None:
        out = carry_body_residual(residual, out, body, strength, mirrored=mirrored, notes=notes,
                                  in_place=out is not pixels, face_points=face_points,
                                  review=review)
    return out if out is not pixels else pixels.copy()


#: Pose landmarks that anchor the body correspondence (shoulders, elbows, wrists, hips, knees,
#: ankles and the face points: whatever both bodies show).
MIN_BODY_HANDLES = 3
#: Carried body motion of which less than this share lands on the query's person (off its
#: face) is reported: the correspondence put the rest where the query has no body.
MIN_KEPT_BODY_MOTION = 0.7


def carry_body_residual(residual: BodyResidual, pixels: np.ndarray, body, strength: float,
                        *, mirrored: bool = False, notes: list[str] | None = None,
                        in_place: bool = False,
                        face_points: np.ndarray | None = None,
                        review: list[str] | None = None) -> np.ndarray:
    """``pixels`` with the exemplar's residual body motion carried onto the query's ``body``
    (mirrored for a mirrored query): through the face meshes (``face_points``, the query's)
    while the query's pose agrees with them, else through the pose landmarks both show
    (:mod:`mirrorppr_cli.geometric.body_correspondence`). Motion that lands off the query's person or
    on its face is left out (:func:`~mirrorppr_cli.geometric.motion.body_confinement`); when that is
    more than ``1 −`` :data:`MIN_KEPT_BODY_MOTION` of it, ``review`` is told."""
    from .body_correspondence import CHECK_JOINTS, POSE_AGREEMENT, face_handles, pose_disagreement
    from .carry import POSE_MIRROR, carry_field
    from .field import MIN_SMOOTH_PX
    from .motion import body_confinement

    q_points = body.points[POSE_MIRROR] if mirrored else body.points
    q_seen = np.array([body.seen(int(j)) for j in (POSE_MIRROR if mirrored else range(33))])
    both = np.nonzero(q_seen & (residual.visibility >= 0.5))[0]
    if len(both) < MIN_BODY_HANDLES:
        if notes is not None:
            notes.append("the body motion the operations do not name was not carried: too few "
                         "body landmarks seen in both the exemplar and the query")
        return pixels if in_place else pixels.copy()
    unit = body.frame.unit
    ex_h, q_h = residual.points[both], q_points[both]
    if face_points is not None and residual.face_points is not None:
        checked = np.intersect1d(both, CHECK_JOINTS)
        if pose_disagreement(residual.face_points, face_points, residual.points, q_points,
                             checked, unit, mirrored) <= POSE_AGREEMENT:
            ex_h, q_h = face_handles(residual.face_points, face_points, mirrored)
    smooth = max(0.015 * unit, MIN_SMOOTH_PX)
    confine = None
    if face_points is not None:
        confine = body_confinement(body.person, unit, face_points, 3 * smooth)
    report: dict = {}
    out = carry_field(residual.flow, residual.box, ex_h, q_h, pixels, reflect=mirrored,
                      strength=strength, correspondence_sigma=0.05 * unit, smooth_sigma=smooth,
                      in_place=in_place, confine=confine, report=report)
    if review is not None and report.get("kept", 1.0) < MIN_KEPT_BODY_MOTION:
        review.append(f"{100 * (1 - report['kept']):.0f} % of the carried body motion fell off "
                     "the query's person or onto its face and was left out; look at the frame "
                     "before it ships")
    return out
