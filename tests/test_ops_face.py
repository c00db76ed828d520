"""The face-shape, brow, eye, nose and mouth operations of the professional catalog, end to end.

Each operation is applied at strength ±60 to the astronaut upscaled to 1024² (inter-ocular
distance 87 px) and the output is re-measured, in the face frame of the ORIGINAL landmarks, in
face units (inter-ocular distances), as an absolute change from the unedited face:

* by where the image content went: a small patch around each landmark of the quantity is
  tracked from input to output (normalised cross-correlation, sub-pixel), and the quantity is
  computed from the tracked positions. This works for every operation but eyebrow thickness
  (a 21 px patch holds both edges of a 6 px brow), measured by the width of the brows' dark
  band instead;
* where MediaPipe's re-detected landmarks register the change, by them as well; where they
  are known not to (the mesh regresses the temples, the nose tip and the brow edges from the
  whole face), a strict xfail states the measured numbers.

Each change must have the named sign and exceed a floor (about half of what was measured when
the test was written, listed next to it) and 3× the jitter of the same quantity under
imperceptible perturbations of the input (σ = 1 grey-level noise; for re-detection also
half-pixel shifts). Pixels farther from the operation's moving landmarks than its reach
(ring, halo, feather) must be bit-identical.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _perturbations import perturbations

from mirrorppr_cli.geometric import regions as R
from mirrorppr_cli.geometric.face_frame import FaceFrame
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import (
    apply_local_warp,
    feather_mask,
    inverse_map_exact,
    pixel_grid,
)
from mirrorppr_cli.ops import CATALOG, SIMULATED_OPS, OpRequest, plan_warp
from mirrorppr_cli.ops.compose import FEATHER_FACE_UNITS

#: The operations beyond the official generator's eight, in catalog order.
FACE_OPS = [
    "face_shape", "jawline", "chin_length", "temples", "eyebrow_distance", "eyebrow_height",
    "eyebrow_thickness", "eye_height", "eye_width", "eye_position", "nose_resize", "nose_tip",
    "mouth_corners", "mouth_width",
]

# --------------------------------------------------------------------------------------------
# measured quantities (face units)

#: Upper / lower eyelid points facing each other across each eye.
LIDS = ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373))
#: Eye corners (outer, inner) of each eye.
EYE_CORNERS = ((33, 133), (263, 362))
#: The lower jaw on each side, beside the chin (where face_shape moves most).
RIGHT_LOWER_JAW = (149, 150, 136, 172)
LEFT_LOWER_JAW = (378, 379, 365, 397)


def _mean(local: np.ndarray, idx, axis: int) -> float:
    return float(local[list(idx), axis].mean())


def quantities(points: np.ndarray, frame: FaceFrame) -> dict[str, float]:
    """Averaged quantities of a face, in the face units of ``frame``."""
    loc = frame.to_local(points)
    eyes_v = _mean(loc, R.RIGHT_EYE_CONTOUR + R.LEFT_EYE_CONTOUR, 1)
    brows = R.RIGHT_BROW + R.LEFT_BROW
    # u grows towards the image's right: the subject's left features have the larger u.
    return {
        "lower_jaw_width": _mean(loc, LEFT_LOWER_JAW, 0) - _mean(loc, RIGHT_LOWER_JAW, 0),
        "jaw_angle_width": _mean(loc, R.LEFT_JAW_ANGLE, 0) - _mean(loc, R.RIGHT_JAW_ANGLE, 0),
        "chin_below_lips": _mean(loc, R.CHIN_REGION[:5], 1) - _mean(loc, R.LIPS_LOWER_OUTER, 1),
        "temple_width": _mean(loc, R.LEFT_TEMPLE, 0) - _mean(loc, R.RIGHT_TEMPLE, 0),
        "brow_distance": _mean(loc, R.LEFT_BROW, 0) - _mean(loc, R.RIGHT_BROW, 0),
        "brows_above_eyes": eyes_v - _mean(loc, brows, 1),
        "eye_height": float(np.mean([loc[lo, 1] - loc[up, 1] for up, lo in LIDS])),
        "eye_width": float(np.mean([abs(loc[a, 0] - loc[b, 0]) for a, b in EYE_CORNERS])),
        "nose_below_eyes": _mean(loc, R.NOSE_TIP, 1) - eyes_v,
        "alar_width": _mean(loc, R.LEFT_ALA, 0) - _mean(loc, R.RIGHT_ALA, 0),
        "tip_width": float(loc[275, 0] - loc[45, 0] + loc[274, 0] - loc[44, 0]) / 2,
        "corners_below_lip_centre": _mean(loc, R.MOUTH_CORNERS, 1) - _mean(loc, (0, 17), 1),
        "mouth_width": float(np.linalg.norm(loc[R.MOUTH_CORNERS[1]] - loc[R.MOUTH_CORNERS[0]])),
    }


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def track(before: np.ndarray, after: np.ndarray, points: np.ndarray, half=10, search=12):
    """Where the content around each point went: ``(N, 2)`` px, by normalised cross-correlation
    of the (2·half+1)² patch of ``before`` over a ±``search`` px window of ``after``, refined
    with a parabola through the peak."""
    g0, g1 = _grey(before), _grey(after)

    def vertex(a, b, c):
        curv = a - 2 * b + c
        return 0.5 * (a - c) / curv if curv < 0 else 0.0

    shifts = []
    for x, y in np.round(points).astype(int):
        tpl = g0[y - half : y + half + 1, x - half : x + half + 1]
        reach = half + search
        win = g1[y - reach : y + reach + 1, x - reach : x + reach + 1]
        score = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
        j, i = np.unravel_index(score.argmax(), score.shape)
        dx = vertex(*score[j, i - 1 : i + 2]) if 0 < i < score.shape[1] - 1 else 0.0
        dy = vertex(*score[j - 1 : j + 2, i]) if 0 < j < score.shape[0] - 1 else 0.0
        shifts.append((i + dx - search, j + dy - search))
    return np.array(shifts)


def tracked_points(before: np.ndarray, after: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (the 468 mesh points) moved to where their content went."""
    moved = np.array(points, np.float64)
    moved[:468] += track(before, after, moved[:468])
    return moved


def brow_width(image: np.ndarray, points: np.ndarray, frame: FaceFrame) -> float:
    """Mean width (face units) of the brows' dark band: along ``v`` through each upper/lower
    brow point pair, ±0.06 beyond them, the darkness (profile maximum − grey) summed and divided
    by its peak (the equivalent width of the valley; stretching the brow ×k makes it ×k)."""
    grey = _grey(image)
    loc = frame.to_local(points)
    widths = []
    for upper, lower in R.BROW_PAIRS:
        u = (loc[upper, 0] + loc[lower, 0]) / 2
        lo, hi = sorted((loc[upper, 1], loc[lower, 1]))
        vs = np.linspace(lo - 0.06, hi + 0.06, 61)
        line = frame.to_image(np.stack([np.full_like(vs, u), vs], axis=1)).astype(np.float32)
        profile = cv2.remap(grey, line[None, :, 0], line[None, :, 1], cv2.INTER_LINEAR)[0]
        darkness = profile.max() - profile
        widths.append(darkness.sum() / darkness.max() * (vs[1] - vs[0]))
    return float(np.mean(widths))


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def face(astronaut_1024, astronaut_1024_points):
    """``(image, points, frame, baseline quantities)`` of the unedited portrait."""
    frame = FaceFrame.from_points(astronaut_1024_points)
    return astronaut_1024, astronaut_1024_points, frame, quantities(astronaut_1024_points, frame)


@pytest.fixture(scope="module")
def jitter(face):
    """Largest absolute change of each quantity under perturbations, by method."""
    image, points, frame, base = face
    worst = {"redetected": dict.fromkeys(base, 0.0), "tracked": dict.fromkeys(base, 0.0),
             "brow_width": 0.0}
    width = brow_width(image, points, frame)
    for variant, shift in perturbations(image):
        redetected = find_faces(variant)[0].points - shift
        for key, value in quantities(redetected, frame).items():
            worst["redetected"][key] = max(worst["redetected"][key], abs(value - base[key]))
        if not shift.any():  # tracking and brow widths compare pixels at the same place
            moved = quantities(tracked_points(image, variant, points), frame)
            for key, value in moved.items():
                worst["tracked"][key] = max(worst["tracked"][key], abs(value - base[key]))
            change = brow_width(variant, points, frame) / width - 1
            worst["brow_width"] = max(worst["brow_width"], abs(change))
    return worst


@pytest.fixture(scope="module")
def edited(face):
    """``edited(name, strength)`` → ``(warp, output image)``, cached."""
    image, points, _, _ = face
    cache: dict[tuple[str, float], tuple] = {}

    def run(name: str, strength: float):
        key = (name, float(strength))
        if key not in cache:
            warp = plan_warp(points, [OpRequest(name, strength)])
            cache[key] = (warp, apply_local_warp(image, warp))
        return cache[key]

    return run


@pytest.fixture(scope="module")
def redetect(edited):
    """``redetect(name, strength)`` → the output's re-detected landmarks, cached."""
    cache: dict[tuple[str, float], np.ndarray] = {}

    def run(name: str, strength: float):
        key = (name, float(strength))
        if key not in cache:
            cache[key] = find_faces(edited(name, strength)[1])[0].points
        return cache[key]

    return run


# --------------------------------------------------------------------------------------------
# each operation moves the image content the way its name says (tracked patches)

# (operation, strength, quantity, expected sign, floor on |change| (face units), measured)
TRACKED = [
    ("face_shape", -60, "lower_jaw_width", -1, 0.04, -0.0833),
    ("face_shape", 60, "lower_jaw_width", +1, 0.04, 0.0843),
    ("jawline", -60, "jaw_angle_width", -1, 0.025, -0.0499),
    ("jawline", 60, "jaw_angle_width", +1, 0.025, 0.0506),
    ("chin_length", -60, "chin_below_lips", -1, 0.015, -0.0335),
    ("chin_length", 60, "chin_below_lips", +1, 0.015, 0.0328),
    ("temples", -60, "temple_width", -1, 0.024, -0.0479),
    ("temples", 60, "temple_width", +1, 0.024, 0.0474),
    ("eyebrow_distance", -60, "brow_distance", -1, 0.023, -0.0462),
    ("eyebrow_distance", 60, "brow_distance", +1, 0.022, 0.0442),
    ("eyebrow_height", -60, "brows_above_eyes", -1, 0.011, -0.0223),
    ("eyebrow_height", 60, "brows_above_eyes", +1, 0.012, 0.0248),
    ("eye_height", -60, "eye_height", -1, 0.0015, -0.0033),
    ("eye_height", 60, "eye_height", +1, 0.0035, 0.0070),
    ("eye_width", -60, "eye_width", -1, 0.009, -0.0188),
    ("eye_width", 60, "eye_width", +1, 0.013, 0.0268),
    ("eye_position", -60, "nose_below_eyes", -1, 0.012, -0.0251),
    ("eye_position", 60, "nose_below_eyes", +1, 0.012, 0.0254),
    ("nose_resize", -60, "alar_width", -1, 0.02, -0.0435),
    ("nose_resize", 60, "alar_width", +1, 0.025, 0.0538),
    ("nose_resize", -60, "nose_below_eyes", -1, 0.01, -0.0208),
    ("nose_resize", 60, "nose_below_eyes", +1, 0.014, 0.0282),
    ("nose_tip", -60, "tip_width", -1, 0.003, -0.0062),
    ("nose_tip", 60, "tip_width", +1, 0.006, 0.0136),
    ("mouth_corners", -60, "corners_below_lip_centre", +1, 0.011, 0.0235),
    ("mouth_corners", 60, "corners_below_lip_centre", -1, 0.011, -0.0230),
    ("mouth_width", -60, "mouth_width", -1, 0.035, -0.0695),
    ("mouth_width", 60, "mouth_width", +1, 0.038, 0.0769),
]


@pytest.mark.parametrize(
    ("name", "strength", "quantity", "sign", "floor", "measured"),
    TRACKED,
    ids=[f"{e[0]}={e[1]:+d}-{e[2]}" for e in TRACKED],
)
def test_operation_moves_the_image_content(
    face, jitter, edited, name, strength, quantity, sign, floor, measured
):
    """The quantity computed where each landmark's content went: 62–93 % of the intended
    change, 49–52 % for eye width and 15–33 % for eye height and the nose tip, whose landmarks
    move 1–3 px with fixed content within a patch's width (the intended changes are 0.02–0.12
    face units)."""
    image, points, frame, base = face
    _, out = edited(name, strength)
    change = quantities(tracked_points(image, out, points), frame)[quantity] - base[quantity]
    noise = jitter["tracked"][quantity]
    assert sign * change > max(floor, 3 * noise), (
        f"{name}={strength}: tracked {quantity} changed by {change:+.4f} (measured "
        f"{measured:+.4f}, jitter {noise:.4f})"
    )


# (strength, expected sign, floor on |relative change|, measured)
THICKNESS = [(-60, -1, 0.02, -0.043), (60, +1, 0.04, 0.083)]


@pytest.mark.parametrize(("strength", "sign", "floor", "measured"), THICKNESS,
                         ids=[f"eyebrow_thickness={t[0]:+d}" for t in THICKNESS])
def test_eyebrow_thickness_changes_the_width_of_the_brows(face, jitter, edited, strength, sign,
                                                         floor, measured):
    """Brow thickness by the width of the brows' dark band. The operation stretches the band
    between MediaPipe's upper and lower brow contours ×0.7 / ×1.36; the astronaut's thin brows
    lie along the lower contour, where the stretch is partial (±100: −6 % / +14 %)."""
    image, points, frame, _ = face
    _, out = edited("eyebrow_thickness", strength)
    change = brow_width(out, points, frame) / brow_width(image, points, frame) - 1
    assert sign * change > max(floor, 3 * jitter["brow_width"]), (
        f"eyebrow_thickness={strength}: brow width changed by {change:+.3f} (measured "
        f"{measured:+.3f}, jitter {jitter['brow_width']:.4f})"
    )


# --------------------------------------------------------------------------------------------
# … and, where MediaPipe's re-detection registers it, the re-detected landmarks agree

# (operation, strength, quantity, expected sign, floor on |change| (face units), measured)
REDETECTED = [
    ("face_shape", -60, "lower_jaw_width", -1, 0.012, -0.0255),
    ("face_shape", 60, "lower_jaw_width", +1, 0.012, 0.0259),
    ("jawline", -60, "jaw_angle_width", -1, 0.012, -0.0236),
    ("jawline", 60, "jaw_angle_width", +1, 0.012, 0.0239),
    ("chin_length", -60, "chin_below_lips", -1, 0.005, -0.0112),
    ("chin_length", 60, "chin_below_lips", +1, 0.009, 0.0190),
    ("eyebrow_distance", -60, "brow_distance", -1, 0.013, -0.0271),
    ("eyebrow_distance", 60, "brow_distance", +1, 0.01, 0.0203),
    ("eyebrow_height", -60, "brows_above_eyes", -1, 0.012, -0.0242),
    ("eyebrow_height", 60, "brows_above_eyes", +1, 0.012, 0.0241),
    ("eye_height", -60, "eye_height", -1, 0.005, -0.0100),
    ("eye_height", 60, "eye_height", +1, 0.005, 0.0107),
    ("eye_position", -60, "nose_below_eyes", -1, 0.009, -0.0182),
    ("eye_position", 60, "nose_below_eyes", +1, 0.016, 0.0333),
    ("nose_resize", 60, "nose_below_eyes", +1, 0.012, 0.0252),
    ("mouth_corners", -60, "corners_below_lip_centre", +1, 0.014, 0.0283),
    ("mouth_corners", 60, "corners_below_lip_centre", -1, 0.02, -0.0401),
    ("mouth_width", -60, "mouth_width", -1, 0.04, -0.0871),
    ("mouth_width", 60, "mouth_width", +1, 0.04, 0.0850),
]


@pytest.mark.parametrize(
    ("name", "strength", "quantity", "sign", "floor", "measured"),
    REDETECTED,
    ids=[f"{e[0]}={e[1]:+d}-{e[2]}" for e in REDETECTED],
)
def test_operation_effect_on_redetected_landmarks(
    face, jitter, redetect, name, strength, quantity, sign, floor, measured
):
    _, _, frame, base = face
    change = quantities(redetect(name, strength), frame)[quantity] - base[quantity]
    noise = jitter["redetected"][quantity]
    assert sign * change > max(floor, 3 * noise), (
        f"{name}={strength}: {quantity} changed by {change:+.4f} (measured {measured:+.4f}, "
        f"jitter {noise:.4f})"
    )


# Measured (re-detected, face units; jitter in brackets) where the mesh does not follow:
# temples −60 / +60 → −0.009 / +0.017 (0.012), intended ∓0.060 / tracked ∓0.048;
# eyebrow_thickness → +0.001 / +0.000 (0.001), intended −0.020 / +0.025;
# nose_tip → −0.000 / +0.000 (0.002), intended −0.032 / +0.042; nose_resize −60 → alar width
# +0.005 (wrong way; 0.008), intended −0.057. (eye_width, ±0.013 against a jitter of 0.005,
# and nose_resize +60, alar width +0.017 against 0.008, register weakly: measured by tracking.)
NOT_REDETECTED = [
    ("temples", -60, "temple_width", -1),
    ("temples", 60, "temple_width", +1),
    ("eyebrow_thickness", -60, "brow_thickness", -1),
    ("eyebrow_thickness", 60, "brow_thickness", +1),
    ("nose_tip", -60, "tip_width", -1),
    ("nose_tip", 60, "tip_width", +1),
    ("nose_resize", -60, "alar_width", -1),
]


@pytest.mark.xfail(
    strict=True,
    reason="re-detected MediaPipe landmarks do not register temples, eyebrow_thickness, "
    "nose_tip or nose_resize −60 on the alae (changes within jitter or of the wrong sign); "
    "see the tracked tests",
)
@pytest.mark.parametrize(("name", "strength", "quantity", "sign"), NOT_REDETECTED,
                         ids=[f"{e[0]}={e[1]:+d}" for e in NOT_REDETECTED])
def test_operations_the_mesh_does_not_follow(face, jitter, redetect, name, strength, quantity,
                                             sign):
    _, _, frame, base = face
    if quantity == "brow_thickness":
        def thickness(points):
            loc = frame.to_local(points)
            return (_mean(loc, R.RIGHT_BROW_LOWER + R.LEFT_BROW_LOWER, 1)
                    - _mean(loc, R.RIGHT_BROW_UPPER + R.LEFT_BROW_UPPER, 1))
        change = thickness(redetect(name, strength)) - thickness(face[1])
        noise = 0.001
    else:
        change = quantities(redetect(name, strength), frame)[quantity] - base[quantity]
        noise = jitter["redetected"][quantity]
    assert sign * change > 3 * noise


# --------------------------------------------------------------------------------------------
# locality and regularity


def _reach(name: str) -> float:
    """Face units from the nearest moving landmark beyond which the warp shows nowhere: the
    per-point hull (anchors within ``ring[1]``, halo points beside the point's oval neighbours,
    ≤ 0.25 away) plus the feather's half-width."""
    op = CATALOG[name]
    hull = max(op.ring[1], op.halo + 0.25 if op.halo else 0.0)
    return hull + FEATHER_FACE_UNITS / 2 + 0.02


ALL_FACE_EDITS = [(name, s) for name in FACE_OPS for s in (-60, 60)]


@pytest.mark.parametrize(("name", "strength"), ALL_FACE_EDITS,
                         ids=[f"{n}={s:+d}" for n, s in ALL_FACE_EDITS])
def test_pixels_beyond_the_operations_reach_are_untouched(face, edited, name, strength):
    image, points, frame, _ = face
    _, out = edited(name, strength)
    moving = np.concatenate([np.asarray(g) for g in CATALOG[name].moving])
    reach = _reach(name) * frame.unit
    far = np.ones(image.shape[:2], np.uint8)
    for x, y in points[moving]:
        cv2.circle(far, (round(x), round(y)), round(reach), 0, -1)
    far = far.astype(bool)
    changed = np.any(out != image, axis=-1)
    assert changed.sum() > 300
    assert not np.any(changed & far), (
        f"{name}={strength}: {int(np.sum(changed & far))} px changed farther than "
        f"{_reach(name):.2f} face units from the moving landmarks"
    )


@pytest.mark.parametrize("name", FACE_OPS)
def test_full_strength_warps_do_not_fold(face, name):
    """At ±100 the applied displacement (inverse map − identity, × the feather mask) keeps the
    map one-to-one with bounded stretch: its Jacobian determinant stays within [0.2, 3] (the
    operations' own scales reach ×0.5 … ×1.6; measured 0.28–2.46, and 0.25–2.35 for the
    official eight)."""
    image, points, _, _ = face
    for strength in (-100.0, 100.0):
        warp = plan_warp(points, [OpRequest(name, strength)])
        mask, box = feather_mask(image.shape[:2], warp.polygons, warp.feather_px)
        inverse = inverse_map_exact(box, warp.source, warp.target)
        disp = (inverse - pixel_grid(box)) * mask[..., None]
        dx_dx, dx_dy = np.gradient(disp[..., 0], axis=1) + 1, np.gradient(disp[..., 0], axis=0)
        dy_dx, dy_dy = np.gradient(disp[..., 1], axis=1), np.gradient(disp[..., 1], axis=0) + 1
        det = dx_dx * dy_dy - dx_dy * dy_dx
        assert 0.2 < det.min() and det.max() < 3.0, (name, strength, det.min(), det.max())


def test_halo_points_lie_outside_the_face(face):
    """Contour operations hold fixed points outside the face oval, none inside it."""
    _, points, frame, _ = face
    oval = points[list(R.FACE_OVAL_RING)].astype(np.float32)
    for name in FACE_OPS:
        op = CATALOG[name]
        halo = op.halo_points(points, frame)
        assert (len(halo) > 0) == (op.halo > 0), name
        for x, y in halo:
            assert cv2.pointPolygonTest(oval, (float(x), float(y)), True) < -0.2 * frame.unit


def test_all_operations_compose_into_one_warp(face):
    """All 22 face operations at once: one warp, every moving landmark displaced by the sum of
    what each operation asks of it, and a fold-free map."""
    image, points, frame, _ = face
    names = [*SIMULATED_OPS, *FACE_OPS]
    requests = [OpRequest(n, 40.0 if k % 2 == 0 else -40.0) for k, n in enumerate(names)]
    warp = plan_warp(points, requests)
    expected: dict[int, np.ndarray] = {}
    for req in requests:
        idx, targets = CATALOG[req.name].targets(points, frame, req.strength)
        for i, t in zip(idx.tolist(), targets, strict=True):
            expected[i] = expected.get(i, 0.0) + (t - points[i])
    moving = sorted(expected)
    np.testing.assert_allclose(warp.source[: len(moving)], points[moving], atol=1e-9)
    np.testing.assert_allclose(warp.target[: len(moving)] - warp.source[: len(moving)],
                               np.array([expected[i] for i in moving]), atol=1e-9)
    out = apply_local_warp(image, warp)
    assert np.any(out != image)
