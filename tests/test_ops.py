"""The operation catalog end to end: plan a warp on real landmarks, apply it, re-detect.

The portrait is the astronaut upscaled to 1024² (inter-ocular distance 86 px), where the
landmark jitter of MediaPipe is smaller than at 512² for every quantity below but the alar
width, and the effects are as large or larger. Quantities are
measured in the face frame of the ORIGINAL landmarks (face units: inter-ocular distances), as
relative changes from the unedited face. Each effect must exceed a fixed floor (about half of
what was measured when the test was written, listed next to it) and 3× the jitter of the same
quantity under imperceptible perturbations of the input (σ = 1 grey-level noise, half-pixel
shifts), computed in the ``jitter`` fixture.

Tests marked ``xfail(strict=True)`` state an expectation the current catalog does not meet,
with the measured numbers in their ``reason``; they fail (XPASS) once it does.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _perturbations import perturbations
from mediapipe.python.solutions import face_mesh_connections as mp_mesh

from mirrorppr_cli.errors import UsageError
from mirrorppr_cli.geometric import regions as R
from mirrorppr_cli.geometric.face_frame import FaceFrame
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp, feather_mask
from mirrorppr_cli.ops import CATALOG, SIMULATED_OPS, OpRequest, parse_op, plan_warp

# --------------------------------------------------------------------------------------------
# measurement helpers


def _ring(edges) -> list[int]:
    """The landmark indices of a closed contour, in polygon order (walked along its edges)."""
    adjacent: dict[int, list[int]] = {}
    for a, b in edges:
        adjacent.setdefault(a, []).append(b)
        adjacent.setdefault(b, []).append(a)
    assert all(len(n) == 2 for n in adjacent.values()), "not a single closed contour"
    start = min(adjacent)
    order, prev = [start], None
    while True:
        nxt = next(n for n in adjacent[order[-1]] if n != prev)
        if nxt == start:
            break
        prev = order[-1]
        order.append(nxt)
    assert len(order) == len(adjacent)
    return order


RIGHT_EYE_RING = _ring(mp_mesh.FACEMESH_RIGHT_EYE)
LEFT_EYE_RING = _ring(mp_mesh.FACEMESH_LEFT_EYE)
OUTER_LIP_RING = [
    R.MOUTH_CORNERS[0],
    *R.LIPS_UPPER_OUTER,
    R.MOUTH_CORNERS[1],
    *R.LIPS_LOWER_OUTER[::-1],
]


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _mean(local: np.ndarray, idx, axis: int) -> float:
    return float(local[list(idx), axis].mean())


def measure(points: np.ndarray, frame: FaceFrame) -> dict[str, float]:
    """Robust averaged quantities of a face, in the face units of ``frame``."""
    loc = frame.to_local(points)
    eyes_v = _mean(loc, R.RIGHT_EYE_CONTOUR + R.LEFT_EYE_CONTOUR, 1)
    right_eye = loc[list(R.RIGHT_EYE_CONTOUR)].mean(axis=0)
    left_eye = loc[list(R.LEFT_EYE_CONTOUR)].mean(axis=0)
    # u grows towards the image's right: the subject's left features have the larger u.
    return {
        "eye_area": _area(loc[RIGHT_EYE_RING]) + _area(loc[LEFT_EYE_RING]),
        "eye_distance": float(np.linalg.norm(left_eye - right_eye)),
        "bridge_width": _mean(loc, R.LEFT_BRIDGE_SIDE, 0) - _mean(loc, R.RIGHT_BRIDGE_SIDE, 0),
        "alar_width": _mean(loc, R.LEFT_ALA, 0) - _mean(loc, R.RIGHT_ALA, 0),
        "nose_tip_below_eyes": _mean(loc, R.NOSE_TIP, 1) - eyes_v,
        "lips_below_eyes": _mean(loc, R.LIPS, 1) - eyes_v,
        "lip_thickness": _mean(loc, R.LIPS_LOWER_OUTER, 1) - _mean(loc, R.LIPS_UPPER_OUTER, 1),
        "mouth_area": _area(loc[OUTER_LIP_RING]),
        "mouth_width": float(np.linalg.norm(loc[R.MOUTH_CORNERS[1]] - loc[R.MOUTH_CORNERS[0]])),
    }


def _track(before: np.ndarray, after: np.ndarray, points: np.ndarray, half=10, search=12):
    """Where the image content around each point went: (N, 2) px shifts, sub-pixel.

    Normalised cross-correlation of the (2·half+1)² patch of ``before`` around each point over
    a ±``search`` px window of ``after``, refined with a parabola through the peak.
    """
    g0 = cv2.cvtColor(np.ascontiguousarray(before), cv2.COLOR_RGB2GRAY).astype(np.float32)
    g1 = cv2.cvtColor(np.ascontiguousarray(after), cv2.COLOR_RGB2GRAY).astype(np.float32)

    def vertex(a, b, c):
        curv = a - 2 * b + c
        return 0.5 * (a - c) / curv if curv < 0 else 0.0

    shifts = []
    for x, y in np.round(points).astype(int):
        tpl = g0[y - half : y + half + 1, x - half : x + half + 1]
        win = g1[
            y - half - search : y + half + search + 1, x - half - search : x + half + search + 1
        ]
        score = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
        j, i = np.unravel_index(score.argmax(), score.shape)
        dx = vertex(*score[j, i - 1 : i + 2]) if 0 < i < score.shape[1] - 1 else 0.0
        dy = vertex(*score[j - 1 : j + 2, i]) if 0 < j < score.shape[0] - 1 else 0.0
        shifts.append((i + dx - search, j + dy - search))
    return np.array(shifts)


def _tracked_width_change(before, after, points, frame, right_idx, left_idx) -> float:
    """Change (face units) of mean-u(left group) − mean-u(right group), from tracked content."""
    du = _track(before, after, points[list(right_idx) + list(left_idx)]) @ frame.u / frame.unit
    return float(du[len(right_idx) :].mean() - du[: len(right_idx)].mean())


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def face(astronaut_1024, astronaut_1024_points):
    """``(image, points, frame, baseline quantities)`` of the unedited portrait."""
    frame = FaceFrame.from_points(astronaut_1024_points)
    return astronaut_1024, astronaut_1024_points, frame, measure(astronaut_1024_points, frame)


@pytest.fixture(scope="module")
def jitter(face):
    """Largest relative change of each quantity (and of tracked widths) under perturbations."""
    image, points, frame, base = face
    worst = dict.fromkeys(base, 0.0)
    worst["tracked_alar_width"] = worst["tracked_bridge_width"] = 0.0
    for variant, shift in perturbations(image):
        redetected = find_faces(variant)[0].points - shift
        for key, value in measure(redetected, frame).items():
            worst[key] = max(worst[key], abs(value / base[key] - 1))
        if not shift.any():  # tracking compares pixels at the same place: noise only
            for key, groups in (
                ("tracked_alar_width", (R.RIGHT_ALA, R.LEFT_ALA)),
                ("tracked_bridge_width", (R.RIGHT_BRIDGE_SIDE, R.LEFT_BRIDGE_SIDE)),
            ):
                base_key = key.removeprefix("tracked_")
                change = _tracked_width_change(image, variant, points, frame, *groups)
                worst[key] = max(worst[key], abs(change) / base[base_key])
    return worst


@pytest.fixture(scope="module")
def edited(face):
    """``edited(name, strength)`` → ``(warp, output image, re-detected points)``, cached."""
    image, points, _, _ = face
    cache: dict[tuple[str, float], tuple] = {}

    def run(name: str, strength: float):
        key = (name, float(strength))
        if key not in cache:
            warp = plan_warp(points, [OpRequest(name, strength)])
            out = apply_local_warp(image, warp)
            cache[key] = (warp, out, find_faces(out)[0].points)
        return cache[key]

    return run


# --------------------------------------------------------------------------------------------
# each operation moves the face the way its name says (re-detected landmarks)

# (operation, strength, quantity, expected sign, floor on |relative change|, measured change)
EFFECTS = [
    ("eye_resize", 60, "eye_area", +1, 0.04, 0.079),
    ("eye_resize", -60, "eye_area", -1, 0.06, -0.124),
    ("eye_distance", 60, "eye_distance", +1, 0.015, 0.029),
    ("eye_distance", -60, "eye_distance", -1, 0.03, -0.055),
    ("nose_length", 60, "nose_tip_below_eyes", +1, 0.02, 0.042),
    ("nose_length", -60, "nose_tip_below_eyes", -1, 0.02, -0.040),
    ("mouth_position", 60, "lips_below_eyes", -1, 0.02, -0.042),
    ("mouth_position", -60, "lips_below_eyes", +1, 0.02, 0.039),
    ("lip_thickness", 60, "lip_thickness", +1, 0.025, 0.035),
    ("lip_thickness", -60, "lip_thickness", -1, 0.09, -0.175),
    ("mouth_resize", 60, "mouth_area", +1, 0.075, 0.151),
    ("mouth_resize", -60, "mouth_area", -1, 0.1, -0.196),
    ("mouth_resize", 60, "mouth_width", +1, 0.06, 0.118),
    ("mouth_resize", -60, "mouth_width", -1, 0.05, -0.093),
]


@pytest.mark.parametrize(
    ("name", "strength", "quantity", "sign", "floor", "measured"),
    EFFECTS,
    ids=[f"{e[0]}={e[1]:+d}-{e[2]}" for e in EFFECTS],
)
def test_operation_effect_on_redetected_landmarks(
    face, jitter, edited, name, strength, quantity, sign, floor, measured
):
    _, _, frame, base = face
    _, _, redetected = edited(name, strength)
    change = measure(redetected, frame)[quantity] / base[quantity] - 1
    assert sign * change > max(floor, 3 * jitter[quantity]), (
        f"{name}={strength}: {quantity} changed by {change:+.3f} (measured {measured:+.3f}, "
        f"jitter {jitter[quantity]:.3f})"
    )


@pytest.mark.xfail(
    strict=True,
    reason="eye_resize=60 targets ×1.15 per eye (+32 % area) but the re-detected eye-opening "
    "area grows by 7.9 % only (jitter 1.7 %); at +100 it grows by 20.5 %",
)
def test_eye_resize_60_grows_the_eye_opening_by_more_than_15_percent(face, edited):
    _, _, frame, base = face
    _, _, redetected = edited("eye_resize", 60)
    assert measure(redetected, frame)["eye_area"] / base["eye_area"] - 1 > 0.15


# nose_alar and nose_bridge: MediaPipe's re-detected nose landmarks do not follow them.
# Measured (relative width change, re-detected): nose_alar −60 → +1.8 % (wrong way), +60 →
# +0.4 %, ±100 → +2.0 % / +1.4 % (jitter 1.3 %); nose_bridge ±60 → +0.1 % / +0.5 %, ±100 →
# −0.0 % / +0.5 % (jitter 0.8 %), while the intended changes are −12 % / +15 % and −24 % / +30 %.
# The mesh regresses the nose from the whole face; the image content does move (tracked below).
NOSE_WIDTH_OPS = [
    ("nose_alar", -60, "alar_width", -1),
    ("nose_alar", 60, "alar_width", +1),
    ("nose_bridge", -60, "bridge_width", -1),
    ("nose_bridge", 60, "bridge_width", +1),
]


@pytest.mark.xfail(
    strict=True,
    reason="re-detected MediaPipe nose landmarks do not register nose_alar / nose_bridge "
    "(measured changes within jitter or of the wrong sign); see the tracked test",
)
@pytest.mark.parametrize(
    ("name", "strength", "quantity", "sign"),
    NOSE_WIDTH_OPS,
    ids=[f"{e[0]}={e[1]:+d}" for e in NOSE_WIDTH_OPS],
)
def test_nose_width_ops_on_redetected_landmarks(
    face, jitter, edited, name, strength, quantity, sign
):
    _, _, frame, base = face
    _, _, redetected = edited(name, strength)
    change = measure(redetected, frame)[quantity] / base[quantity] - 1
    assert sign * change > 3 * jitter[quantity]


# (operation, strength, width, expected sign, floor on |relative change|, measured change)
TRACKED = [
    ("nose_alar", -60, "alar_width", -1, 0.03, -0.068),
    ("nose_alar", 60, "alar_width", +1, 0.045, 0.092),
    ("nose_bridge", -60, "bridge_width", -1, 0.015, -0.032),
    ("nose_bridge", 60, "bridge_width", +1, 0.03, 0.064),
]


@pytest.mark.parametrize(
    ("name", "strength", "quantity", "sign", "floor", "measured"),
    TRACKED,
    ids=[f"{e[0]}={e[1]:+d}" for e in TRACKED],
)
def test_nose_width_ops_move_the_image_content(
    face, jitter, edited, name, strength, quantity, sign, floor, measured
):
    """The width between the two sides' landmarks, measured where their pixels went.

    Image content around each moving landmark is tracked from input to output by template
    matching; the tracked width change is about 60 % (alae) and 13–21 % (bridge) of the
    intended one, since the warp's displacement falls off within a few px of each landmark.
    """
    image, points, frame, base = face
    _, out, _ = edited(name, strength)
    groups = {
        "alar_width": (R.RIGHT_ALA, R.LEFT_ALA),
        "bridge_width": (R.RIGHT_BRIDGE_SIDE, R.LEFT_BRIDGE_SIDE),
    }[quantity]
    change = _tracked_width_change(image, out, points, frame, *groups) / base[quantity]
    noise = jitter["tracked_" + quantity]
    assert sign * change > max(floor, 3 * noise), (
        f"{name}={strength}: tracked {quantity} changed by {change:+.3f} (measured "
        f"{measured:+.3f}, jitter {noise:.4f})"
    )


ALL_EDITS = [(name, s) for name in CATALOG for s in (-60, 60)]


@pytest.mark.parametrize(("name", "strength"), ALL_EDITS, ids=[f"{n}={s:+d}" for n, s in ALL_EDITS])
def test_operation_changes_pixels_only_inside_its_feathered_mask(face, edited, name, strength):
    image = face[0]
    warp, out, _ = edited(name, strength)
    mask, box = feather_mask(image.shape[:2], warp.polygons, warp.feather_px)
    full = np.zeros(image.shape[:2], np.float32)
    full[box.slices()] = mask
    assert out.shape == image.shape and out.dtype == image.dtype
    assert np.array_equal(out[full == 0], image[full == 0])
    assert np.any(out != image)


def test_baseline_quantities_are_sane(face, jitter):
    """The measuring instrument itself: plausible values, small jitter, ordered rings."""
    _, points, frame, base = face
    assert base["eye_distance"] == pytest.approx(1.0, abs=1e-9)  # the frame's own unit
    assert 0.05 < base["eye_area"] < 0.2 and 0.1 < base["mouth_area"] < 0.5
    assert base["bridge_width"] > 0 and base["alar_width"] > base["bridge_width"]
    assert 0 < base["nose_tip_below_eyes"] < base["lips_below_eyes"]
    assert base["lip_thickness"] > 0
    # A ring walked along its edges bounds a larger area than any other order of its points
    # would typically give; a random order of the same points gives a much smaller one.
    loc = frame.to_local(points)
    scrambled = np.random.default_rng(0).permutation(RIGHT_EYE_RING)
    assert _area(loc[RIGHT_EYE_RING]) > 1.5 * _area(loc[scrambled])
    # measured: worst jitter 1.7 % (eye area), 0.16–1.3 % for the others.
    assert max(jitter.values()) < 0.03


# --------------------------------------------------------------------------------------------
# composition, strength 0, catalog gains


def _displacements(points: np.ndarray, warp) -> dict[int, np.ndarray]:
    """``{landmark index: target − source}`` for every control point of ``warp``."""
    index = {tuple(p): i for i, p in enumerate(points.tolist())}
    assert len(index) == len(points), "landmarks must be distinct for this bookkeeping"
    rows = [index[tuple(p)] for p in warp.source.tolist()]
    assert len(set(rows)) == len(rows), "a landmark appears twice among the control points"
    return {i: warp.target[r] - warp.source[r] for r, i in enumerate(rows)}


def test_all_eight_operations_compose_into_one_warp(face):
    _, points, frame, _ = face
    requests = [
        OpRequest(name, 50.0 if k % 2 == 0 else -50.0) for k, name in enumerate(SIMULATED_OPS)
    ]
    warp = plan_warp(points, requests)
    assert len(warp.polygons) == len(SIMULATED_OPS)
    disp = _displacements(points, warp)
    expected: dict[int, np.ndarray] = {}
    for req in requests:
        idx, targets = CATALOG[req.name].targets(points, frame, req.strength)
        assert set(idx.tolist()) <= set(disp), f"{req.name}: moving points missing"
        for i, t in zip(idx.tolist(), targets, strict=True):
            expected[i] = expected.get(i, 0.0) + (t - points[i])
    # Moving landmarks get the sum over operations; every other control point is an anchor.
    for i, d in disp.items():
        np.testing.assert_allclose(d, expected.get(i, np.zeros(2)), atol=1e-9)
    assert len(set(disp) - set(expected)) > 50  # anchors are there too


def test_displacements_of_two_operations_add_up(face):
    _, points, _, _ = face
    a = _displacements(points, plan_warp(points, [OpRequest("eye_resize", 40.0)]))
    b = _displacements(points, plan_warp(points, [OpRequest("eye_distance", -70.0)]))
    both = _displacements(
        points, plan_warp(points, [OpRequest("eye_resize", 40.0), OpRequest("eye_distance", -70.0)])
    )
    eyes = R.RIGHT_EYE + R.LEFT_EYE
    # Both operations move the eyes (measured: mean 1.14 and 3.65 px per landmark)…
    assert np.mean([np.linalg.norm(a[i]) for i in eyes]) > 0.5
    assert np.mean([np.linalg.norm(b[i]) for i in eyes]) > 2.0
    # …and together each eye landmark gets the sum of the two displacements.
    for i in eyes:
        np.testing.assert_allclose(both[i], a[i] + b[i], atol=1e-9)


@pytest.mark.parametrize("name", list(CATALOG))
def test_strength_zero_is_the_identity(face, name):
    image, points, _, _ = face
    warp = plan_warp(points, [OpRequest(name, 0.0)])
    assert warp.is_identity
    assert np.array_equal(apply_local_warp(image, warp), image)
    # A zero-strength request leaves the other requests' warp unchanged.
    alone = plan_warp(points, [OpRequest("mouth_resize", 50.0)])
    mixed = plan_warp(points, [OpRequest(name, 0.0), OpRequest("mouth_resize", 50.0)])
    assert np.array_equal(alone.source, mixed.source)
    assert np.array_equal(alone.target, mixed.target)


@pytest.mark.parametrize(("strength", "factor"), [(60.0, 1.15), (-60.0, 0.88), (100.0, 1.25)])
def test_eye_resize_scales_each_eye_about_its_centre(face, strength, factor):
    """Gains of the official generator: 1 + 0.25·s/100 enlarging, 1 + 0.20·s/100 shrinking."""
    _, points, frame, _ = face
    idx, targets = CATALOG["eye_resize"].targets(points, frame, strength)
    start = 0
    for group in (R.RIGHT_EYE, R.LEFT_EYE):
        src = points[list(group)]
        centre = src.mean(axis=0)
        np.testing.assert_allclose(
            targets[start : start + len(group)], centre + factor * (src - centre), atol=1e-9
        )
        start += len(group)
    assert start == len(idx)


# --------------------------------------------------------------------------------------------
# parse_op


@pytest.mark.parametrize(
    ("text", "name", "strength"),
    [
        ("eye_resize=40", "eye_resize", 40.0),
        ("nose_alar=-30", "nose_alar", -30.0),
        (" mouth_resize = +12.5 ", "mouth_resize", 12.5),
        ("lip_thickness=100", "lip_thickness", 100.0),
        ("nose_length=-100", "nose_length", -100.0),
        ("eye_distance=0", "eye_distance", 0.0),
    ],
)
def test_parse_op_accepts(text, name, strength):
    assert parse_op(text) == OpRequest(name, strength)


@pytest.mark.parametrize(
    "text",
    [
        "eye_size=40",  # unknown operation
        "Eye_Resize=40",
        "eye_resize=101",  # out of range
        "eye_resize=-100.5",
        "eye_resize=1000000",
        "eye_resize",  # bad syntax
        "eye_resize=",
        "=40",
        "eye_resize:40",
        "eye_resize=4e1",
        "eye_resize=nan",
        "eye_resize=inf",
        "eye_resize=40=2",
        "eye_resize=40,nose_alar=10",
        "",
    ],
)
def test_parse_op_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_op(text)
    assert info.value.exit_code == 2


def test_thinned_is_the_greedy_spacing_subset():
    """thinned keeps, in order, each point no kept point is closer to than `spacing`
    (checked against the plain greedy definition, with and without precomputed distances)."""
    from mirrorppr_cli.ops.catalog import pairwise_distances
    from mirrorppr_cli.ops.compose import thinned

    rng = np.random.default_rng(7)
    for _ in range(50):
        pts = rng.random((int(rng.integers(1, 200)), 2))
        order = [int(i) for i in rng.permutation(len(pts))]
        spacing = float(rng.uniform(0.02, 0.3))
        expected: list[int] = []
        for i in order:
            if all(np.hypot(*(pts[i] - pts[j])) >= spacing for j in expected):
                expected.append(i)
        assert thinned(pts, order, spacing) == expected
        assert thinned(pts, order, spacing, pairwise_distances(pts)) == expected
    # duplicates: only the first of each is kept; spacing 0 keeps every point, in order
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert thinned(pts, [3, 2, 1, 0], 0.5) == [3, 1]
    assert thinned(pts, [3, 2, 1, 0], 0.0) == [3, 2, 1, 0]


def test_chain_handles_interpolate_between_moving_ends():
    """Handles between two moving chain neighbours: evenly spaced, at most CHAIN_SPACING
    apart (face units), each displaced by the linear interpolation of the ends' shifts;
    segments with an end that does not move get none."""
    from mirrorppr_cli.ops.compose import CHAIN_SPACING, _chain_handles

    local = np.array([[0.0, 0.0], [0.1, 0.0], [0.1, 0.05], [5.0, 5.0]])
    points = local * 80 + [100, 50]  # px: 80 px per face unit
    shift = np.array([[0.0, 2.0], [4.0, 0.0], [9.0, 9.0], [1.0, 1.0]])
    moving = np.array([True, True, False, True])
    src, moved = _chain_handles(points, local, [(0, 1), (1, 2), (1, 3)], shift, moving)
    count = int(np.ceil(0.1 / CHAIN_SPACING))  # segment 0-1: 3 parts, 2 handles
    t = np.arange(1, count)[:, None] / count
    far = int(np.ceil(np.hypot(4.9, 5.0) / CHAIN_SPACING))  # segment 1-3
    u = np.arange(1, far)[:, None] / far
    np.testing.assert_allclose(src, np.concatenate([points[0] + t * (points[1] - points[0]),
                                                    points[1] + u * (points[3] - points[1])]))
    np.testing.assert_allclose(moved, np.concatenate([shift[0] + t * (shift[1] - shift[0]),
                                                      shift[1] + u * (shift[3] - shift[1])]))
    none = _chain_handles(points, local, [(0, 2)], shift, moving)
    assert none[0].shape == (0, 2) and none[1].shape == (0, 2)


def test_plan_warp_with_a_layout_cache_plans_the_same_warp(astronaut_512_points):
    """The cache explain passes (per-operation layouts, distances, thinned anchors) changes
    nothing about the planned warp."""
    layouts: dict = {}
    for ops in ([OpRequest("eye_resize", 50)], [OpRequest("eye_resize", -50)],
                [OpRequest("jawline", 60), OpRequest("temples", 40)],
                [OpRequest("eye_resize", 50), OpRequest("nose_alar", -30)]):
        fresh = plan_warp(astronaut_512_points, ops)
        for _ in range(2):
            cached = plan_warp(astronaut_512_points, ops, layouts)
            np.testing.assert_array_equal(cached.source, fresh.source)
            np.testing.assert_array_equal(cached.target, fresh.target)
            assert len(cached.polygons) == len(fresh.polygons)
            for a, b in zip(cached.polygons, fresh.polygons, strict=True):
                np.testing.assert_array_equal(a, b)
    # one cache shared by two faces keeps them apart
    other = astronaut_512_points * [1.25, 1.0] + 7  # not a similarity: other local geometry
    ops = [OpRequest("eye_resize", 50)]
    shared, alone = plan_warp(other, ops, layouts), plan_warp(other, ops)
    np.testing.assert_array_equal(shared.source, alone.source)
    np.testing.assert_array_equal(np.concatenate(shared.polygons), np.concatenate(alone.polygons))
