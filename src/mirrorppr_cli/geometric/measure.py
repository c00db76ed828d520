"""Measure an exemplar pair once: the :class:`Exemplar` every query of a batch is retouched with.

Face edits are measured in the face window and kept in the mode chosen (``flow``: the measured
field; ``catalog``: named operations fitted to it; ``hybrid``: the operations plus the field's
residual). Body edits (outside the face, on the person) are measured only when the exemplar
changed pixels there (a cheap exact comparison first: the face-only path stays as fast), and
fitted as body-catalog operations on the exemplar's own body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .face import FaceWindow, face_window
from .fit import (
    NAMED_BODY_EDIT,
    REFINE_MARGIN,
    BodyExplanation,
    BodyResidual,
    Explanation,
    body_residual,
    explain,
    explain_body,
    residual_edit,
)
from .landmarks import find_faces, mesh_face_at, select_face
from .motion import Edit, changed_off_face, estimate_body_motion, estimate_edit

MODES = ("flow", "catalog", "hybrid")


@dataclass(frozen=True)
class Exemplar:
    """A measured exemplar: its edit, its image shape, (catalog mode) its explanation, and (any
    mode) the body operations fitted to its body motion."""

    edit: Edit
    shape: tuple[int, int]
    explanation: Explanation | None = None
    residual: Edit | None = None  # hybrid mode: the motion the catalog does not explain
    body: BodyExplanation | None = None  # None: nothing moved outside the face
    notes: tuple[str, ...] = ()  # about the exemplar's body motion, for reports
    body_residual: BodyResidual | None = None  # hybrid, flow: body motion the ops leave


def _named(ops) -> str:
    return ", ".join(f"{r.name} {r.strength:+.0f}" for r in ops)


def face_points(rgb: np.ndarray, index: int | None, name: str) -> tuple[np.ndarray, int, int]:
    """``(points, chosen index, faces found)`` of the face to use in ``rgb``."""
    faces = find_faces(rgb)
    face = select_face(faces, index, name=name)
    return face.points, faces.index(face), len(faces)


def measure_exemplar(before: np.ndarray, after: np.ndarray, *, mode: str = "hybrid",
                     name: str = "exemplar",
                     on_stage: Callable[[str], None] | None = None) -> Exemplar:
    """Measure the edit of an exemplar pair (RGB uint8, largest face); explain it in catalog
    mode; fit body operations to what moved outside the face (any mode). ``on_stage`` is told
    what is being done, for a progress line."""
    stage = on_stage or (lambda _: None)
    stage("finding the face")
    b_points, _, _ = face_points(before, None, f"{name} (before)")
    # The after image is the same photo: mesh its face where before's is (the detectors cost
    # as much as the mesh); a pair that is not the same photo fails estimate_edit's check.
    after_face = mesh_face_at(after, b_points)
    a_points = (after_face.points if after_face is not None
                else face_points(after, None, f"{name} (after)")[0])
    face = face_window(b_points, before.shape[:2])
    stage("measuring the face edit")
    edit = estimate_edit(before, after, b_points, a_points, name=name, face=face)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    stage("measuring body edits")
    body, notes, body_rest = measure_body(before, after, b_points, name=name, face=face,
                                          mode=mode)
    if mode == "flow":
        return Exemplar(replace(edit, confidence=None), before.shape[:2], body=body, notes=notes,
                        body_residual=body_rest)
    stage("naming the operations")
    explanation = explain(edit, before.shape[:2])
    residual = residual_edit(edit, explanation, before.shape[:2]) if mode == "hybrid" else None
    # the measurement's confidence made the residual; queries need neither (nor its memory)
    edit = replace(edit, confidence=None)
    residual = residual if residual is None else replace(residual, confidence=None)
    return Exemplar(edit, before.shape[:2], explanation, residual, body, notes, body_rest)


def measure_body(before: np.ndarray, after: np.ndarray, points: np.ndarray, *,
                 name: str = "exemplar", face: FaceWindow | None = None, mode: str = "hybrid",
                 ) -> tuple[BodyExplanation | None, tuple[str, ...], BodyResidual | None]:
    """``(fitted body operations or None, notes, residual)`` for an exemplar pair whose face
    has the landmarks ``points`` (on ``before``); the residual (hybrid and flow modes) is the
    body motion the operations leave, to be carried as measured.

    None when no pixel outside the face region changed (an exact comparison, a few ms: the
    body detector and the flow run only when something did) or when what changed there is not
    motion (re-encoding noise) or no body is found in ``before``.
    """
    from .body import NoPersonError, detect_body

    face = face or face_window(points, before.shape[:2])
    changed = changed_off_face(before, after, face)
    if changed is None:
        return None, (), None
    try:
        body = detect_body(before, name=f"{name} (before)")
    except NoPersonError as error:
        return None, (f"pixels changed outside the face, but no body to measure them on "
                      f"({error}); not transferred",), None
    scale = BODY_FIT_UNIT_PX / body.frame.unit
    if scale < 1.0:  # measured and fitted at the fit scale: strengths are in body units
        before, after, body, face, changed, points = _at_body_fit_scale(
            before, after, body, points, changed, scale)
    motion = estimate_body_motion(before, after, body.person, body.frame.unit, face, changed)
    if motion.empty:
        return None, (), None
    # In catalog mode every fit is used; elsewhere only one that names the edit (below).
    fit = explain_body(motion, body, refine_from=0.0 if mode == "catalog"
                       else NAMED_BODY_EDIT - REFINE_MARGIN)
    notes: list[str] = []
    residual = None
    if mode != "catalog":
        if fit.ops and fit.explained < NAMED_BODY_EDIT:
            # The operations name part of the motion only. Re-planned on the query they land
            # where the query's outline is, the rest lands where the correspondence puts it:
            # two placements of one edit (selfaug dev body pairs: 35.0 dB this way, 36.4 dB
            # with the motion carried whole). The motion is carried whole.
            notes.append(f"the body operations ({_named(fit.ops)}) explain "
                         f"{100 * fit.explained:.0f} % of the body motion; it is carried as "
                         "measured")
            fit = replace(fit, ops=[])
        residual = body_residual(motion, fit, body)
        if residual is not None:  # the face mesh where the residual was measured
            residual = replace(residual, face_points=np.array(points, np.float64))
    if notes and residual is None:
        notes[-1] = notes[-1].replace("it is carried as measured",
                                      "it moves less than a quarter pixel: not transferred")
    if notes:
        pass
    elif not fit.ops and residual is not None:
        notes.append(f"the body motion matches no body operation; it is carried as measured "
                     f"(up to {residual.max_motion_px / min(scale, 1.0):.1f} px)")
    elif not fit.ops:
        share = float((motion.weight > 0.5).sum()) / max(int(motion.region.sum()), 1)
        notes.append(f"changes outside the face match no body operation (motion of "
                     f"{fit.motion_px:.2f} px on average over {100 * share:.1f} % of the body "
                     "region; re-encoding noise looks like this); not transferred")
    elif fit.explained < 0.5 and residual is None:
        notes.append(f"the body operations explain only {100 * fit.explained:.0f} % of the "
                     "body motion; the rest is not transferred")
    return fit, tuple(notes), residual


#: Body motion is measured and fitted with the body unit (shoulder distance) at most this many
#: pixels. Body operations are defined in body units and the similarity warps they plan
#: commute with scaling, so the fitted strengths do not depend on the resolution, while the
#: flow and the fit cost grow with the body's area (a 2 MP full-body exemplar: ~13 s at full
#: size). At 128 px a strength-100 body operation moves the outline by ~8 px, a strength-10
#: one by ~0.8 px, which the three-pass flow still reads.
BODY_FIT_UNIT_PX = 128.0


def _at_body_fit_scale(before: np.ndarray, after: np.ndarray, body, face_points_px: np.ndarray,
                       changed: np.ndarray, scale: float):
    """``(before, after, body, face window, changed, face points)`` resampled by ``scale``
    (< 1).

    Pixel centres map as ``(p + ½)·s − ½``; the person mask is resampled like the images;
    ``changed`` is the union of the changed pixels each fit pixel covers.
    """
    from .body import Body

    height, width = before.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrink = lambda im: cv2.resize(im, size, interpolation=cv2.INTER_AREA)  # noqa: E731
    small_before, small_after = shrink(before), shrink(after)
    sx, sy = size[0] / width, size[1] / height
    to_small = lambda pts: (pts + 0.5) * [sx, sy] - 0.5  # noqa: E731
    small_body = Body.from_landmarks(to_small(body.points), body.visibility, shrink(body.mask))
    small_changed = shrink(changed.astype(np.float32)) > 0
    small_points = to_small(face_points_px)
    small_face = face_window(small_points, small_before.shape[:2])
    return small_before, small_after, small_body, small_face, small_changed, small_points
