"""The fields a retouch applies have no steps: where one part of the edit hands over to another
(named operations → measured residual, body motion → the face region left alone, a warp → its
feather), the change is spread smoothly, and no pixel is a mix of two places.

Each was a visible artefact on real photographs (survey exemplars applied to other people,
``benchmarks/crops.py --cross``): the face residual cut where the measured motion ended (a
step of up to 3 px along rim-lit jaw contours), the carried body motion cut at the face
region's edge (a step of 2 px), and the operations' feather showing a lapel tip twice. Within
one part too: the named operations' MLS moved each lip landmark more than the lip between
them (a wavy outline).
"""

from __future__ import annotations

import cv2
import numpy as np

from mirrorppr_cli.geometric.face import face_window
from mirrorppr_cli.geometric.field import (
    fold_free_local_warp,
    operation_sigma,
    unfolded_coarse,
    with_weight,
)
from mirrorppr_cli.geometric.fit import Explanation, _applied_field, residual_edit
from mirrorppr_cli.geometric.mls import (
    LocalWarp,
    apply_local_warp,
    apply_offsets,
    feathered_offsets,
)
from mirrorppr_cli.geometric.motion import Edit, body_confinement, measured_support
from mirrorppr_cli.ops import OpRequest, plan_warp


def _steepest(field: np.ndarray) -> float:
    """Largest change of either component between neighbouring pixels (px per px)."""
    return float(max(np.abs(np.diff(field[..., c], axis=a)).max() for c in (0, 1) for a in (0, 1)))


def _bump_edit(points: np.ndarray, shape: tuple[int, int], radius: float = 0.08) -> Edit:
    """An exemplar edit measured only around the mouth: a smooth downward bump of 3 px (σ
    ``radius`` × the face window's width), zero below a sixty-fourth of a pixel
    (:func:`with_weight`) elsewhere in the face window."""
    face = face_window(points, shape)
    box = face.window
    ys, xs = np.mgrid[box.y0:box.y1, box.x0:box.x1].astype(np.float32)
    centre = points[13]  # the upper lip's inner midpoint
    sigma = radius * (box.x1 - box.x0)
    bump = 3.0 * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    field, weight = with_weight(np.dstack([np.zeros_like(bump), bump]).astype(np.float32))
    return Edit(field, weight, box, points, float(np.abs(field).max()))


def test_face_residual_has_no_step_where_the_measured_motion_ends(astronaut_512,
                                                                  astronaut_512_points,
                                                                  monkeypatch):
    """An operation that reaches past the measured motion: the residual fades out smoothly at
    the measured region's edge, no steeper than the residual left whole (the operation's own
    feather) — it was cut where the measured field fell below a sixty-fourth of a pixel, a
    step (1.10 px per px here against 0.61 uncut, when the operation's raw field was the
    reference; against the smoothed field a retouch applies, 0.44 against 0.37 uncut) — and
    takes the operation's motion back where the exemplar kept still."""
    import mirrorppr_cli.geometric.fit as fit

    shape = astronaut_512.shape[:2]
    edit = _bump_edit(astronaut_512_points, shape)
    explanation = Explanation(ops=[OpRequest("face_shape", 100)], explained=0.5, motion_px=1.0)
    rest = residual_edit(edit, explanation, shape)
    with monkeypatch.context() as patch:
        patch.setattr(fit, "measured_support", lambda e, _: np.ones(e.weight.shape, np.float32))
        whole = residual_edit(edit, explanation, shape)
    assert _steepest(rest.flow) <= _steepest(whole.flow) + 0.1

    edit = _bump_edit(astronaut_512_points, shape, radius=0.05)
    explanation = Explanation(ops=[OpRequest("face_shape", 60)], explained=0.5, motion_px=1.0)
    rest = residual_edit(edit, explanation, shape)
    fitted = _applied_field(edit.points, explanation.ops, shape, edit.box)
    support = measured_support(edit, shape)
    still = (edit.weight == 0) & (support > 0.999) & (np.hypot(*np.moveaxis(fitted, -1, 0)) > 1.0)
    assert still.sum() > 100  # 422
    assert np.abs(rest.flow[still] + fitted[still]).max() < 0.5  # 0.20


def test_measured_support_is_smooth_and_zero_at_the_box_border(astronaut_512,
                                                               astronaut_512_points):
    shape = astronaut_512.shape[:2]
    edit = _bump_edit(astronaut_512_points, shape)
    support = measured_support(edit, shape)
    assert support.shape == (edit.box.height, edit.box.width)
    assert support.min() >= 0.0 and support.max() <= 1.0 and support.max() > 0.99
    assert np.abs(np.diff(support, axis=0)).max() < 0.2 and np.abs(np.diff(support, axis=1)).max() < 0.2
    assert support[0].max() == 0 and support[-1].max() == 0  # nothing left at the box's edge
    assert support[:, 0].max() == 0 and support[:, -1].max() == 0


def test_body_confinement_has_no_step(astronaut_512, astronaut_512_points):
    """The carried body field is multiplied by the confinement: it must rise from 0 on the
    person region's edge and on the face's hull (it jumped to full value on both: a step of
    the field's whole size), and be full on the face region's edge, where the measured face
    and body motions hand over."""
    shape = astronaut_512.shape[:2]
    person = np.zeros(shape, bool)
    person[300:, 60:450] = True  # shoulders and chest under the face
    person[120:300, 150:370] = True  # the neck and head
    sigma = 3.0
    confine = body_confinement(person, 100.0, astronaut_512_points, sigma)
    steps = max(np.abs(np.diff(confine, axis=a)).max() for a in (0, 1))
    assert steps < 0.5  # 0.44 at most in theory for σ = 3 px; 1.0 before
    assert confine.max() == 1.0
    face = face_window(astronaut_512_points, shape)
    region = face.mask(shape)
    edge = region & ~(np.roll(region, 1, 0) & np.roll(region, -1, 0) & np.roll(region, 1, 1)
                      & np.roll(region, -1, 1)) & person
    edge[:, :70] = edge[:, 440:] = False
    assert edge.sum() > 50 and np.median(confine[edge]) > 0.9


def test_offsets_feather_moves_pixels_and_mixes_none():
    """A warp that moves a thin line far, with its feather across the line: the colour feather
    shows the line twice (a ghost), the offset feather once, bent."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, 78:80] = 255  # a vertical line, 2 px wide
    source = np.array([[79.0, 60.0], [20.0, 10.0], [140.0, 10.0], [20.0, 110.0], [140.0, 110.0]])
    target = source.copy()
    target[0] = [91.0, 60.0]  # the line's middle pulled 12 px to the right
    polygon = np.array([[40.0, 20.0], [120.0, 20.0], [120.0, 100.0], [40.0, 100.0]])
    warp = LocalWarp(source, target, [polygon], feather_px=41.0)
    row = 20  # the polygon's edge: the feather's mask is ½ there, the line moved ~4 px

    def peaks(out: np.ndarray) -> int:
        line = out[row, :, 0].astype(int)
        return int(np.sum((line[1:-1] > 40) & (line[1:-1] >= line[:-2]) & (line[1:-1] > line[2:])))

    colours = apply_local_warp(image, warp, feather="colours")
    offsets = apply_local_warp(image, warp, feather="offsets")
    assert peaks(colours) == 2  # the line where it was, and where the warp puts it
    assert peaks(offsets) == 1
    # moved or copied: outside the feathered region both are the input, bit for bit
    assert np.array_equal(offsets[:, :20], image[:, :20])


def test_feather_name_is_checked():
    warp = LocalWarp(np.zeros((2, 2)), np.ones((2, 2)), [np.zeros((3, 2))], 5.0)
    try:
        apply_local_warp(np.zeros((8, 8, 3), np.uint8), warp, feather="blend")
    except ValueError as error:
        assert "feather" in str(error)
    else:
        raise AssertionError("an unknown feather was accepted")


def test_face_residual_leaves_the_operations_alone_where_nothing_was_measured(
        astronaut_512, astronaut_512_points):
    """Flat pixels hide motion: where the measurement's confidence is 0 the residual is 0 (the
    operations alone), where it is 1 the residual takes their motion back."""
    from dataclasses import replace

    shape = astronaut_512.shape[:2]
    edit = _bump_edit(astronaut_512_points, shape, radius=0.05)
    confidence = np.ones(edit.weight.shape, np.float32)
    half = edit.box.width // 2
    confidence[:, :half] = 0.0
    edit = replace(edit, confidence=confidence)
    explanation = Explanation(ops=[OpRequest("face_shape", 60)], explained=0.5, motion_px=1.0)
    rest = residual_edit(edit, explanation, shape)
    fitted = _applied_field(edit.points, explanation.ops, shape, edit.box)
    moved = np.hypot(*np.moveaxis(fitted, -1, 0)) > 1.0
    assert moved[:, :half].sum() > 100 and moved[:, half:].sum() > 100
    assert not rest.flow[:, :half].any()
    assert np.abs(rest.flow[:, half:][moved[:, half:]]).max() > 1.0


def test_carried_field_is_not_cut_by_a_box_guessed_too_small(monkeypatch):
    """The query box a carried field is worked in is mapped from the exemplar's; when the
    field still moves pixels on its edge (a body edit carried to another person did: 5.9 px
    on the bottom edge, a horizontal cut through her arm), the box grows until it does not."""
    import mirrorppr_cli.geometric.carry as carry
    from mirrorppr_cli.geometric.box import Box

    height, width = 200, 240
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    bump = 4.0 * np.exp(-((xs - 120) ** 2 + (ys - 100) ** 2) / (2 * 25.0 ** 2))
    field = np.dstack([bump, 0.5 * bump]).astype(np.float32)
    field[np.hypot(*np.moveaxis(field, -1, 0)) < 0.01] = 0.0
    whole = Box(0, 0, width, height)
    handles = np.array([[40.0, 40.0], [200.0, 40.0], [40.0, 160.0], [200.0, 160.0],
                        [120.0, 100.0]])
    coords = np.dstack([xs, ys]).astype(np.float32)  # the carried map, as an image

    def carried() -> np.ndarray:
        return carry.carry_field(field, whole, handles, handles, coords.copy(),
                                 correspondence_sigma=2.0, smooth_sigma=2.0) - coords

    expected = carried()
    assert np.abs(expected).max() > 3.5
    monkeypatch.setattr(carry, "_query_box",
                        lambda *a, **k: Box(60, 60, 180, 110))  # cuts through the bump
    got = carried()
    assert np.abs(got[110:]).max() > 1.0  # below the guessed box, pixels still move
    assert np.abs(got - expected).max() < 0.05
    monkeypatch.setattr(carry, "BOX_GROWTHS", 0)  # no growth: the safety ramp, never a cut
    ramped = carried()
    assert _steepest(ramped) < 0.8


def test_offsets_feather_never_folds():
    """A plan whose handles cross (a point pushed past a fixed neighbour: similarity MLS folds
    the image between them) is applied fold-free: the map's Jacobian determinant stays > 0."""
    from mirrorppr_cli.metrics.artefacts import jacobian_det

    height, width = 160, 200
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    coords = np.dstack([xs, ys])
    source = np.array([[90.0, 80.0], [110.0, 80.0], [40.0, 30.0], [160.0, 30.0], [40.0, 130.0],
                       [160.0, 130.0]])
    target = source.copy()
    target[0] = [118.0, 80.0]  # past the fixed point at x = 110
    polygon = np.array([[30.0, 20.0], [170.0, 20.0], [170.0, 140.0], [30.0, 140.0]])
    warp = LocalWarp(source, target, [polygon], feather_px=31.0)
    folded = apply_local_warp(coords, warp, feather="colours")  # coordinates: the raw map
    assert jacobian_det(folded[..., 0], folded[..., 1]).min() < 0
    safe = fold_free_local_warp(coords, warp)
    assert jacobian_det(safe[..., 0], safe[..., 1]).min() > 0.1
    assert np.abs(safe - coords).max() > 5.0  # and it still moves


def _filtered_warp(pixels: np.ndarray, warp: LocalWarp, offsets_filter) -> np.ndarray:
    """``warp``'s feathered offsets (as ``feather="offsets"`` applies them) passed through
    ``offsets_filter`` before they are applied: the references the tests compare with."""
    offsets, moving, box = feathered_offsets(pixels.shape[:2], warp)
    return apply_offsets(pixels, offsets_filter(offsets), moving, box)


#: The mouth's outer contour (MediaPipe face mesh indices), upper then lower lip.
LIP_CONTOUR = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
               146, 91, 181, 84, 17, 314, 405, 321, 375]


def _lip_field(points: np.ndarray, shape: tuple[int, int], offsets_filter=None) -> np.ndarray:
    """Backward offsets ``(H, W, 2)`` of ``mouth_resize 60`` as retouched (through a coordinate
    image), by :func:`fold_free_local_warp` or, with ``offsets_filter``, by the offset-feathered
    warp with that filter."""
    height, width = shape
    coords = np.dstack(np.meshgrid(np.arange(width, dtype=np.float32),
                                   np.arange(height, dtype=np.float32)))
    warp = plan_warp(points, [OpRequest("mouth_resize", 60)])
    if offsets_filter is None:
        moved = fold_free_local_warp(coords.copy(), warp)
    else:
        moved = _filtered_warp(coords.copy(), warp, offsets_filter)
    return moved - coords


def test_catalog_operation_moves_a_lip_without_a_bump_at_each_handle(astronaut_1024,
                                                                    astronaut_1024_points):
    """Similarity MLS moves each lip landmark by its full offset and lags between them: a
    wavy lip outline (seen at 1:1 on survey faces). As a retouch applies it, the field is
    smooth over the mouth — its largest Laplacian 0.25 px/px² (0.64 unsmoothed, a spot per
    handle) — while the mouth moves as much on average (within 3 %)."""
    shape = astronaut_1024.shape[:2]
    points = astronaut_1024_points
    applied = _lip_field(points, shape)
    sigma = operation_sigma(plan_warp(points, [OpRequest("mouth_resize", 60)]))
    raw = _lip_field(points, shape, lambda offsets: unfolded_coarse(offsets, sigma))
    hull = cv2.convexHull(points[LIP_CONTOUR].astype(np.float32)).reshape(-1, 2)
    mouth = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mouth, np.round(hull).astype(np.int32), 1)
    mouth = cv2.dilate(mouth, np.ones((21, 21), np.uint8)) > 0

    def laplacian(field):
        return np.hypot(*[cv2.Laplacian(field[..., c].astype(np.float64), cv2.CV_64F, ksize=1)
                          for c in (0, 1)])[mouth].max()

    def mean_motion(field):
        return np.hypot(field[..., 0], field[..., 1])[mouth].mean()

    assert laplacian(raw) > 0.5  # the bumps this guards against
    assert laplacian(applied) < 0.35
    assert abs(mean_motion(applied) / mean_motion(raw) - 1.0) < 0.03


def test_smoothed_offsets_keep_their_strength_up_to_the_frame():
    """Where the operations' box is the frame's edge (a face cut by it) the offsets are not
    there; smoothing must not fade the edit towards the edge (edges are reflected), at the
    working resolution and at a reduced one (large σ)."""
    from mirrorppr_cli.geometric.field import WORK_SIGMA_PX, smoothed

    uniform = np.full((80, 120, 2), 2.0, np.float32)
    for sigma in (3.0, 3 * WORK_SIGMA_PX):
        out = smoothed(uniform, sigma)
        assert out.shape == uniform.shape and out.dtype == np.float32
        assert np.abs(out - 2.0).max() < 1e-4, sigma


def test_a_repaired_fold_is_not_reopened_at_the_feathers_edge():
    """A region moved far under a narrow feather folds within the feather; the repair spreads
    the offsets beyond the feather mask (and its box). Cut there, as they were, the fold
    reopened (determinant −1.9 here; face_shape −100 on a survey face: −1.16); applied
    wherever they move a pixel by 1/64 px or more, the map stays fold-free."""
    from mirrorppr_cli.geometric.field import MIN_JACOBIAN_DET, fold_free_offsets, smoothed
    from mirrorppr_cli.metrics.artefacts import jacobian_det

    height = width = 240
    grid = np.array([[x, y] for x in (100, 120, 140) for y in (100, 120, 140)], float)
    square = np.array([[100, 100], [140, 100], [140, 140], [100, 140]], float)
    warp = LocalWarp(grid + [15.0, 0.0], grid, [square], 12.0)  # a translation by 15 px
    coords = np.dstack(np.meshgrid(np.arange(width, dtype=np.float32),
                                   np.arange(height, dtype=np.float32)))
    moved = fold_free_local_warp(coords.copy(), warp)
    assert np.abs(moved - coords).max() > 8.0  # it did move the region
    assert jacobian_det(moved[..., 0], moved[..., 1]).min() >= MIN_JACOBIAN_DET
    offsets, moving, box = fold_free_offsets((height, width), warp)
    assert box.x0 < 100 - 12 and box.x1 > 140 + 12  # beyond the feather's own reach
    # the same offsets cut where the feather mask ends (the old way) fold
    sigma = operation_sigma(warp)
    cut = _filtered_warp(coords.copy(), warp,
                         lambda o: unfolded_coarse(smoothed(o, sigma), sigma))
    assert jacobian_det(cut[..., 0], cut[..., 1]).min() < 0


def test_a_small_face_keeps_its_named_operation_when_smoothed(astronaut_512):
    """The bumps shrink with the face, and so does the smoothing: eye_resize on a 21 px face
    unit keeps 95 % of the raw warp's mean motion where it moves (78 % when the smoothing had
    a 1.5 px floor)."""
    from mirrorppr_cli.geometric.landmarks import find_faces

    small = cv2.resize(np.asarray(astronaut_512), (256, 256), interpolation=cv2.INTER_AREA)
    points = find_faces(small)[0].points
    warp = plan_warp(points, [OpRequest("eye_resize", 60)])
    coords = np.dstack(np.meshgrid(np.arange(256, dtype=np.float32),
                                   np.arange(256, dtype=np.float32)))
    sigma = operation_sigma(warp)
    raw = _filtered_warp(coords.copy(), warp, lambda o: unfolded_coarse(o, sigma)) - coords
    applied = fold_free_local_warp(coords.copy(), warp) - coords
    raw_motion, motion = np.hypot(*np.moveaxis(raw, -1, 0)), np.hypot(*np.moveaxis(applied, -1, 0))
    moving = raw_motion > 0.25 * raw_motion.max()
    assert motion[moving].mean() / raw_motion[moving].mean() > 0.9
