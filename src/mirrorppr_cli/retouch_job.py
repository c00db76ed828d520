"""The ``retouch`` job: measure an exemplar pair's edit once, apply it to query files.

Face edits are measured in the face window and carried in the mode chosen (flow, catalog,
hybrid). Body edits (outside the face, on the person) are measured only when the exemplar
changed pixels there (a cheap exact comparison first: the face-only path stays as fast), fitted
as body-catalog operations on the exemplar's own body, and in every mode re-planned on the
query's own detected body (its body frame: the edit scales with the query's shoulder width and
follows its mirroring and rotation). A query without a detectable body, or without the body
part an operation edits, keeps its face edit; what was skipped is said in the report's notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .errors import OutputError
from .explain import (
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
from .io import as_rgb8, output_quality, read_image, with_pixels, write_image
from .landmarks import find_faces, mesh_face_at, select_face
from .metrics.pixel import changed_mask
from .ops import OpRequest, plan_warp
from .ops.request import clip_strength
from .subject import Subject
from .transfer import (
    Edit,
    FaceWindow,
    changed_off_face,
    estimate_body_motion,
    estimate_edit,
    face_window,
    is_mirrored,
    transfer,
)
from .warp import apply_local_warp

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


def apply_exemplar(exemplar: Exemplar, pixels: np.ndarray, points: np.ndarray,
                   strength: float = 1.0, *, rgb: np.ndarray | None = None,
                   notes: list[str] | None = None,
                   review: list[str] | None = None,
                   mirrored: bool | None = None,
                   subject: Subject | None = None) -> np.ndarray:
    """The query's new pixels.

    flow: the measured motion carried over through the landmark correspondence; catalog: the
    fitted catalog operations re-planned on the query's own landmarks; hybrid: catalog, then
    the motion the catalog does not explain carried over as in flow mode. Then, in every mode,
    the fitted body operations re-planned on the query's own body (:func:`apply_body_edit`).

    ``rgb``: the query as ``(H, W, 3)`` uint8 RGB for the body detector (default: made from
    ``pixels``); ``notes``: gets what was skipped of the body edit, and why; ``review``: gets
    why the frame should be looked at (:func:`carry_body_residual`); ``mirrored``: whether the
    query shows the exemplar's face mirrored (default: told from ``pixels``); ``subject``: the
    query's detections, shared with other passes over it (default: detected here).
    """
    if mirrored is None:
        mirrored = is_mirrored(exemplar.edit.appearance, pixels, points)
    if exemplar.explanation is None:
        out = transfer(exemplar.edit, pixels, points, strength=strength, mirrored=mirrored)
    else:
        requests = [OpRequest(r.name, clip_strength(r.strength * strength))
                    for r in exemplar.explanation.ops]
        out = apply_local_warp(pixels, plan_warp(points, requests)) if requests else pixels.copy()
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
    bilinearly (exact for coordinates) and moves or copies pixels, except the catalog
    operations' feathered edge, where a colour mix becomes a coordinate mix (resampling the
    query through the map there differs from the output by a grey level or so).
    ``mirrored``, ``subject``: as the retouch itself found them (default: found again).
    """
    height, width = rgb.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    coords = np.dstack([xs, ys])  # two channels: every step is channel-wise
    if mirrored is None:
        mirrored = is_mirrored(exemplar.edit.appearance, rgb, points)
    moved = apply_exemplar(exemplar, coords, points, strength, rgb=rgb, mirrored=mirrored,
                           subject=subject)
    return np.ascontiguousarray(moved, dtype=np.float32)


def _named(ops) -> str:
    return ", ".join(f"{r.name} {r.strength:+.0f}" for r in ops)


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
    from .body import NoPersonError
    from .ops.body_catalog import apply_body_warp, get_body_operation, plan_body_warp

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
    (:mod:`mirrorppr_cli.body_correspondence`). Motion that lands off the query's person or
    on its face is left out (:func:`~mirrorppr_cli.transfer.body_confinement`); when that is
    more than ``1 −`` :data:`MIN_KEPT_BODY_MOTION` of it, ``review`` is told."""
    from .body_correspondence import (
        CHECK_JOINTS,
        POSE_AGREEMENT,
        face_handles,
        pose_disagreement,
    )
    from .transfer import MIN_SMOOTH_PX, POSE_MIRROR, body_confinement, carry_field

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
        confine = body_confinement(body.person, unit, face_window(face_points, body.shape),
                                   3 * smooth)
    report: dict = {}
    out = carry_field(residual.flow, residual.box, ex_h, q_h, pixels, reflect=mirrored,
                      strength=strength, correspondence_sigma=0.05 * unit, smooth_sigma=smooth,
                      in_place=in_place, confine=confine, report=report)
    if review is not None and report.get("kept", 1.0) < MIN_KEPT_BODY_MOTION:
        review.append(f"{100 * (1 - report['kept']):.0f} % of the carried body motion fell off "
                     "the query's person or onto its face and was left out; look at the frame "
                     "before it ships")
    return out


@dataclass
class RetouchReport:
    """What happened to one query; serialised as-is by ``--json``."""

    input: str
    output: str | None = None
    status: str = "ok"
    error: str | None = None
    exit_code: int = 0
    faces_found: int = 0
    face: int | None = None
    changed_pixels: int = 0
    strength: float = 1.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Why the written frame should be looked at before it ships (empty: nothing found).
    review: list[str] = field(default_factory=list)
    #: Files written beside the output (``--export``).
    exports: list[str] = field(default_factory=list)
    #: The JPEG/WebP quality the output was written at (the source's unless --quality).
    quality: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


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
        return Exemplar(edit, before.shape[:2], body=body, notes=notes, body_residual=body_rest)
    stage("naming the operations")
    explanation = explain(edit, before.shape[:2])
    residual = residual_edit(edit, explanation, before.shape[:2]) if mode == "hybrid" else None
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


def load_exemplar(before: Path, after: Path, *, mode: str = "hybrid",
                  max_pixels: int | None = None,
                  on_stage: Callable[[str], None] | None = None) -> Exemplar:
    """Read an exemplar pair from files and measure it (``on_stage``: see
    :func:`measure_exemplar`)."""
    if on_stage:
        on_stage("reading the exemplar")
    b = np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8())
    a = np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8())
    return measure_exemplar(b, a, mode=mode, name=f"{before.name} → {after.name}",
                            on_stage=on_stage)


def retouch_file(
    exemplar: Exemplar, source: Path, dest: Path, *, strength: float = 1.0,
    face_index: int | None = None, force: bool = False, output_format: str | None = None,
    max_pixels: int | None = None, check: bool = True, exports: tuple[str, ...] = (),
    quality: int | None = None,
    keep: Callable[[np.ndarray, np.ndarray, Callable[[], np.ndarray]], None] | None = None,
) -> RetouchReport:
    """Apply ``exemplar`` to the query ``source``; write ``dest`` atomically; errors propagate.

    ``check``: look for artefacts in the result (:func:`review_reasons`); what is found is in
    the report's ``review`` (the frame is written: the retoucher decides). ``exports``: kinds
    of :mod:`mirrorppr_cli.exports` written beside ``dest`` (the edit as a map, layers…).
    ``keep``: called after writing with the query and the result (``(H, W, 3)`` uint8 RGB)
    and a function that returns the inverse map (:func:`sampling_map`), e.g. for a review
    page."""
    from .exports import MAP_KINDS, encode_exports, export_paths, write_exports

    start = time.perf_counter()
    for path in [dest, *export_paths(dest, exports)]:
        if not force and path.exists():
            raise OutputError(f"{path}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    points, chosen, found = face_points(picture.rgb8(), face_index, str(source))
    notes: list[str] = []
    doubts: list[str] = []
    subject = Subject(picture.rgb8(), str(source))
    mirrored = is_mirrored(exemplar.edit.appearance, subject.rgb, points)
    pixels = apply_exemplar(exemplar, picture.pixels, points, strength, rgb=subject.rgb,
                            notes=notes, review=doubts, mirrored=mirrored, subject=subject)
    result = with_pixels(picture, pixels)
    review = (review_reasons(picture.rgb8(), result.rgb8()) + doubts) if check else []
    encoded = []
    inverse_map = None
    if exports:  # made before anything is written: a failure leaves no output behind
        if MAP_KINDS & set(exports):
            inverse_map = sampling_map(exemplar, subject.rgb, points, strength,
                                       mirrored=mirrored, subject=subject)
        encoded = encode_exports(exports, inverse_map, picture.pixels, pixels, dest)
    written = write_image(result, dest, force=force, format=output_format, jpeg_quality=quality)
    exported = write_exports(encoded, force=force)
    if keep is not None:
        keep(picture.rgb8(), result.rgb8(),
             lambda: inverse_map if inverse_map is not None else sampling_map(
                 exemplar, subject.rgb, points, strength, mirrored=mirrored, subject=subject))
    lossy = written.suffix.lower() in (".jpg", ".jpeg", ".jpe", ".webp")
    return RetouchReport(
        input=str(source), output=str(written), faces_found=found, face=chosen,
        changed_pixels=int(np.count_nonzero(changed_mask(pixels, picture.pixels))),
        strength=strength, seconds=round(time.perf_counter() - start, 4), notes=notes,
        review=review, exports=[str(p) for p in exported],
        quality=output_quality(picture, quality) if lossy else None,
    )


#: A written frame is flagged for review when the artefact check finds more than this many
#: new impulse-like blobs (the metric gives 0 on the nine real professional retouches and
#: on JPEG re-encoding; its one false positive on 33 catalog warps was a single blob).
REVIEW_BLOBS = 1


def review_reasons(query: np.ndarray, output: np.ndarray) -> list[str]:
    """Why ``output`` (the retouched ``query``, both ``(H, W, 3)`` uint8 RGB) may be damaged:
    new impulse-like blobs (dots, ringed spots) or torn contours the query does not have."""
    from .metrics.artefacts import new_blobs

    blobs = new_blobs(query, output)
    reasons = []
    if blobs.count > REVIEW_BLOBS:
        where = ", ".join(f"({x}, {y})" for x, y, _, _ in blobs.boxes[:4])
        reasons.append(f"{blobs.count} new dot-like blobs the query does not have, e.g. at "
                       f"x, y = {where}; look at the frame before it ships")
    if blobs.long_components:
        reasons.append(f"{blobs.long_components} new high-contrast streaks or torn contours; "
                       "look at the frame before it ships")
    return reasons
