"""Body operations (:mod:`mirrorppr_cli.geometric.body`, :mod:`mirrorppr_cli.ops.body_catalog`).

Every operation and direction is re-measured on its output:

* on the astronaut (``skimage.data.astronaut()``, shipped): shoulders and the image-left upper
  arm are visible, the waist and legs are not. The output is run through ``detect_body`` again
  and the *re-detected* person mask is measured in the body frame of the original (shoulder-top
  heights, half-widths across the shoulders, upper-arm width). Each change must have the named
  sign, reach 0.4× what the plan intends (the same measure on the original mask warped by the
  plan; measured 0.47–1.20) and exceed 1.5× the jitter of the same quantity under imperceptible
  changes of the input
  (σ = 1 grey-level noise, half-pixel shifts). Re-detected pose *points* are not used as a measure:
  the shoulder landmarks move 2–5 px under those imperceptible changes (at 512²) and do not follow
  an outline edit of 10 px reliably (a joint is not an outline);
* on a synthetic standing figure (drawn here; arms apart from the torso, legs apart) for all five
  operations, waist and legs included: the output is re-segmented by colour and every body
  part's width is measured; the named part changes by the rule's amount, the others do not;
* on ``obama3.jpg`` of the shared development photos (a full-length portrait, not shipped by a
  dependency: skipped where absent), waist and legs, re-detected like the astronaut.

"Nothing outside its region": pixels where the plan's weight is 0 are bit-identical, the face
never changes, other body parts keep their measures. Background straightness: straight grid
lines behind the person (the astronaut cut out with its mask, and the figure) are measured line by
line; wherever the line is outside the confinement band it is exactly straight, inside the band it
bends by at most the outline's own move. Measured values (numpy 1.26, OpenCV 4.11, mediapipe
0.10.21, x86-64) are noted next to the assertions.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from mirrorppr_cli.errors import InputError, UsageError
from mirrorppr_cli.geometric import body as B
from mirrorppr_cli.geometric.body import Body, NoPersonError, detect_body
from mirrorppr_cli.geometric.mls import pixel_grid
from mirrorppr_cli.ops import OpRequest
from mirrorppr_cli.ops.body_catalog import BODY_CATALOG, BodyPartNotVisible, get_body_operation
from mirrorppr_cli.ops.body_plan import apply_body_ops, apply_body_warp, plan_body_warp

OBAMA3 = Path(__file__).resolve().parents[2] / "shared" / "faces" / "packages" / "obama3.jpg"

# --------------------------------------------------------------------------------------------
# measurement helpers


def ray_edges(prob: np.ndarray, starts: np.ndarray, direction, length: float) -> np.ndarray:
    """Distance from each start (inside the person) along ``direction`` to the first crossing of
    ``prob`` = 0.5 (inside → outside), sub-pixel; NaN where the ray starts outside or never
    leaves."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    step = 0.25
    s = np.arange(0.0, length, step)
    pts = np.asarray(starts, np.float64)[:, None, :] + s[None, :, None] * d
    vals = cv2.remap(
        prob.astype(np.float32),
        pts[..., 0].astype(np.float32),
        pts[..., 1].astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    out = np.full(len(pts), np.nan)
    for i, v in enumerate(vals):
        inside = v > 0.5
        if not inside[0]:
            continue
        k = int(np.argmax(~inside))
        if inside[k]:
            continue
        out[i] = s[k - 1] + step * (v[k - 1] - 0.5) / (v[k - 1] - v[k])
    return out


def _mean_edge(prob, starts, direction, length) -> float:
    found = ray_edges(prob, starts, direction, length)
    assert np.isfinite(found).sum() >= len(found) // 2, "measure rays lost the outline"
    return float(np.nanmean(found))


def shoulder_measures(prob: np.ndarray, frame: B.BodyFrame) -> dict[str, float]:
    """Heights of the shoulder tops (``top_L``/``top_R``: from v = 0.1 up to the outline, at
    |u| = 0.38–0.5) and half-widths across the shoulders (``half_L``/``half_R``: from |u| = 0.1
    out to the outline at v = 0.15–0.3), px, in the body frame ``frame``."""
    out = {}
    for side, tag in ((-1, "L"), (1, "R")):
        us = side * np.linspace(0.38, 0.5, 7)
        starts = frame.to_image(np.stack([us, np.full_like(us, 0.1)], axis=1))
        out["top_" + tag] = _mean_edge(prob, starts, -frame.v, 0.8 * frame.unit)
        vs = np.linspace(0.15, 0.3, 7)
        starts = frame.to_image(np.stack([np.full_like(vs, side * 0.1), vs], axis=1))
        out["half_" + tag] = _mean_edge(prob, starts, side * frame.u, 1.2 * frame.unit)
    return out


def limb_width(prob, joint_a, joint_b, span, sides=(1, -1), length=120.0) -> float:
    """Width of a limb at fractions ``span`` of the bone ``joint_a → joint_b``: the sum over
    ``sides`` (+1: towards the image's right, −1: its left) of the mean distance from the bone
    to the outline, perpendicular to the bone."""
    a, b = np.asarray(joint_a, np.float64), np.asarray(joint_b, np.float64)
    d = b - a
    perp = np.array([d[1], -d[0]]) / np.linalg.norm(d)
    if perp[0] < 0:
        perp = -perp
    starts = a + np.linspace(*span, 7)[:, None] * d
    return sum(_mean_edge(prob, starts, s * perp, length) for s in sides)


def torso_half_widths(prob, body_points, frame, span=(0.62, 0.78)) -> dict[str, float]:
    """Distance from the torso midline (shoulder midpoint → hip midpoint) to each side of the
    outline at fractions ``span`` of the way down."""
    hips = (body_points[B.LEFT_HIP] + body_points[B.RIGHT_HIP]) / 2
    down = hips - frame.origin
    across = np.array([-down[1], down[0]]) / np.linalg.norm(down)
    if across @ frame.u < 0:
        across = -across
    starts = frame.origin + np.linspace(*span, 9)[:, None] * down
    return {
        tag: _mean_edge(prob, starts, side * across, 1.2 * frame.unit)
        for side, tag in ((-1, "L"), (1, "R"))
    }


def jacobian_min(sample_map: np.ndarray) -> float:
    m = sample_map.astype(np.float64)
    det = np.gradient(m[..., 0], axis=1) * np.gradient(m[..., 1], axis=0) - np.gradient(
        m[..., 0], axis=0
    ) * np.gradient(m[..., 1], axis=1)
    return float(det.min())


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _perturbed(rgb: np.ndarray) -> list[np.ndarray]:
    """Imperceptible variants: σ = 1 grey-level noise, half-pixel shifts along x and y."""
    rng = np.random.default_rng(0)
    noisy = np.clip(rgb + rng.normal(0.0, 1.0, rgb.shape), 0, 255).astype(np.uint8)
    size = rgb.shape[1::-1]
    shifts = [
        cv2.warpAffine(
            rgb,
            np.float64([[1, 0, dx], [0, 1, dy]]),
            size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        for dx, dy in ((0.5, 0.0), (0.0, 0.5))
    ]
    return [noisy, *shifts]


# --------------------------------------------------------------------------------------------
# synthetic scenes

GRID_SPACING = 24
GRID_OFFSET = 5.3
BG, INK = 210.0, 40.0


def grid_background(height: int, width: int) -> np.ndarray:
    """Light grey with dark anti-aliased lines (Gaussian profile, σ = 0.7 px) at
    ``GRID_OFFSET + k·GRID_SPACING`` along both axes; ``(H, W, 3)`` float."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    half = GRID_SPACING / 2
    dx = np.abs(((xs - GRID_OFFSET + half) % GRID_SPACING) - half)
    dy = np.abs(((ys - GRID_OFFSET + half) % GRID_SPACING) - half)
    ink = np.maximum(np.exp(-0.5 * (dx / 0.7) ** 2), np.exp(-0.5 * (dy / 0.7) ** 2))
    return np.repeat((BG - (BG - INK) * ink)[..., None], 3, axis=2)


def grid_lines(n: int) -> np.ndarray:
    return GRID_OFFSET + GRID_SPACING * np.arange(int(np.ceil((n - GRID_OFFSET) / GRID_SPACING)))


def line_samples(rgb: np.ndarray, blocked: np.ndarray):
    """Centres of the grid's lines, measured across each line (darkness centroid in a window of
    ±(spacing/2 − 2) px) at every row (vertical lines) or column (horizontal lines) where the
    window is clear of ``blocked`` and of the crossing lines.

    Yields ``(axis, position0, along (n,), centre (n,))``: axis 0 = vertical lines ``x =
    position0``, 1 = horizontal.
    """
    gray_full = rgb.astype(np.float64).mean(axis=2)
    half = GRID_SPACING // 2 - 2
    for axis in (0, 1):
        gray = gray_full if axis == 0 else gray_full.T
        block = blocked if axis == 0 else blocked.T
        n_along, n_across = gray.shape
        crossing = grid_lines(n_along)
        along = np.arange(n_along)
        away = np.min(np.abs(along[:, None] - crossing[None]), axis=1) >= 3
        for x0 in grid_lines(n_across):
            lo, hi = int(np.floor(x0)) - half, int(np.floor(x0)) + half + 1
            if lo < 0 or hi > n_across:
                continue
            rows = along[away & ~block[:, lo:hi].any(axis=1)]
            if len(rows) < 8:
                continue
            ink = BG - gray[rows, lo:hi]
            centre = (ink * np.arange(lo, hi)).sum(axis=1) / ink.sum(axis=1)
            yield axis, float(x0), rows, centre


def figure_scene():
    """A standing figure (head, neck, torso with a waist, arms apart from the torso, legs
    apart) on the grid: ``(rgb uint8 (640, 480, 3), mask float32, landmarks (33, 2), vis)``.

    Drawn at 4× and area-averaged, so the mask has a sub-pixel edge; textured green so the
    output can be re-segmented by colour.
    """
    height, width, up = 640, 480, 4
    canvas = np.zeros((height * up, width * up), np.uint8)

    def px(points):
        return np.round(np.asarray(points, np.float64) * up).astype(np.int32)

    cv2.circle(canvas, tuple(px((240, 85))), 42 * up, 255, -1, cv2.LINE_AA)
    cv2.fillPoly(canvas, [px([(222, 110), (258, 110), (258, 155), (222, 155)])], 255, cv2.LINE_AA)
    torso = [
        (222, 138),
        (258, 138),
        (325, 152),
        (342, 172),
        (336, 215),
        (318, 270),
        (296, 322),
        (302, 370),
        (316, 405),
        (318, 440),
        (162, 440),
        (164, 405),
        (178, 370),
        (184, 322),
        (162, 270),
        (144, 215),
        (138, 172),
        (155, 152),
    ]
    cv2.fillPoly(canvas, [px(torso)], 255, cv2.LINE_AA)
    limbs = [
        ([(160, 172), (110, 290), (95, 400)], 21),
        ([(320, 172), (370, 290), (385, 400)], 21),
        ([(200, 420), (195, 530), (195, 630)], 28),
        ([(280, 420), (285, 530), (285, 630)], 28),
    ]
    for chain, radius in limbs:
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            cv2.line(canvas, tuple(px(a)), tuple(px(b)), 255, 2 * radius * up, cv2.LINE_AA)
        for c in chain:
            cv2.circle(canvas, tuple(px(c)), radius * up, 255, -1, cv2.LINE_AA)
    mask = cv2.resize(
        canvas.astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_AREA
    )
    points, vis = np.zeros((33, 2)), np.zeros(33)
    placed = {
        B.NOSE: (240, 95),
        B.LEFT_EYE: (255, 75),
        B.RIGHT_EYE: (225, 75),
        B.LEFT_EAR: (275, 82),
        B.RIGHT_EAR: (205, 82),
        B.MOUTH_LEFT: (250, 105),
        B.MOUTH_RIGHT: (230, 105),
        B.RIGHT_SHOULDER: (160, 165),
        B.LEFT_SHOULDER: (320, 165),
        B.RIGHT_ELBOW: (110, 290),
        B.LEFT_ELBOW: (370, 290),
        B.RIGHT_WRIST: (95, 400),
        B.LEFT_WRIST: (385, 400),
        B.RIGHT_HIP: (200, 420),
        B.LEFT_HIP: (280, 420),
        B.RIGHT_KNEE: (195, 530),
        B.LEFT_KNEE: (285, 530),
        B.RIGHT_ANKLE: (195, 625),
        B.LEFT_ANKLE: (285, 625),
    }
    for j, p in placed.items():
        points[j], vis[j] = p, 0.99
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), 2.0)
    noise /= noise.std()
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = np.sin(xs * 0.35 + ys * 0.2)
    skin = np.stack([30 + 6 * noise, 190 + 18 * noise + 8 * stripes, 40 + 6 * stripes], axis=-1)
    alpha = mask[..., None]
    rgb = alpha * skin + (1 - alpha) * grid_background(height, width)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask, points, vis


def figure_prob(rgb: np.ndarray) -> np.ndarray:
    """Re-segment the figure by colour: greenness ``G − max(R, B)`` scaled so the figure is ≈1."""
    f = rgb.astype(np.float32)
    return np.clip((f[..., 1] - np.maximum(f[..., 0], f[..., 2])) / 150.0, 0.0, 1.0)


def figure_measures(prob: np.ndarray, body: Body) -> dict[str, float]:
    """Every part of the figure: shoulder tops and half-widths, arm widths (both edges, at mid
    upper arm), waist half-widths, thigh and shin widths (both edges)."""
    p = body.points
    out = shoulder_measures(prob, body.frame)
    for tag, (a, b) in {
        "L": (B.RIGHT_SHOULDER, B.RIGHT_ELBOW),
        "R": (B.LEFT_SHOULDER, B.LEFT_ELBOW),
    }.items():
        out["arm_" + tag] = limb_width(prob, p[a], p[b], (0.7, 0.9), length=60)
    waist = torso_half_widths(prob, p, body.frame)
    out.update({"waist_" + k: v for k, v in waist.items()})
    for tag, (h, k, a) in {
        "L": (B.RIGHT_HIP, B.RIGHT_KNEE, B.RIGHT_ANKLE),
        "R": (B.LEFT_HIP, B.LEFT_KNEE, B.LEFT_ANKLE),
    }.items():
        out["thigh_" + tag] = limb_width(prob, p[h], p[k], (0.3, 0.6), length=60)
        out["shin_" + tag] = limb_width(prob, p[k], p[a], (0.3, 0.6), length=60)
    return out


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def astro():
    rgb = _frozen(data.astronaut())
    return rgb, detect_body(rgb)


def _astro_measures(prob, body) -> dict[str, float]:
    out = shoulder_measures(prob, body.frame)
    p = body.points
    # The image-left upper arm (the astronaut's right), outer edge only (her arm touches her
    # side), and the top of her head as a control.
    out["arm_L"] = limb_width(
        prob, p[B.RIGHT_SHOULDER], p[B.RIGHT_ELBOW], (0.42, 0.62), sides=(-1,), length=150
    )
    us = np.linspace(-0.1, 0.1, 5)
    starts = body.frame.to_image(np.stack([us, np.full_like(us, -0.6)], axis=1))
    out["head"] = _mean_edge(prob, starts, -body.frame.v, 1.0 * body.frame.unit)
    return out


@pytest.fixture(scope="module")
def astro_jitter(astro):
    """Largest change of each astronaut measure under imperceptible input changes."""
    rgb, body = astro
    base = _astro_measures(body.mask, body)
    worst: dict[str, float] = {k: 0.0 for k in base}
    worst.update({"top": 0.0, "half": 0.0})
    for variant in _perturbed(rgb):
        m = _astro_measures(detect_body(variant).mask, body)
        for k in base:
            worst[k] = max(worst[k], abs(m[k] - base[k]))
        for k in ("top", "half"):
            worst[k] = max(
                worst[k], abs(m[k + "_L"] + m[k + "_R"] - base[k + "_L"] - base[k + "_R"])
            )
    return worst


@pytest.fixture(scope="module")
def figure():
    rgb, mask, points, vis = figure_scene()
    return _frozen(rgb), Body.from_landmarks(points, vis, mask)


# --------------------------------------------------------------------------------------------
# detection and the body frame


def test_detect_body_and_frame(astro):
    rgb, body = astro
    frame = body.frame
    left, right = body.points[B.RIGHT_SHOULDER], body.points[B.LEFT_SHOULDER]
    assert left[0] < right[0]  # the astronaut faces the camera: her right shoulder is image-left
    assert np.allclose(frame.origin, (left + right) / 2)
    assert frame.unit == pytest.approx(np.linalg.norm(right - left))
    assert np.allclose(frame.to_local(np.stack([left, right])), [[-0.5, 0.0], [0.5, 0.0]])
    assert frame.to_local(body.points[B.NOSE])[1] < -0.4  # the head is at negative v
    pts = np.random.default_rng(0).uniform(0, 512, (20, 2))
    assert np.allclose(frame.to_image(frame.to_local(pts)), pts)
    assert body.mask.shape == rgb.shape[:2] and body.mask.dtype == np.float32
    assert 0.3 < body.person.mean() < 0.6  # measured 0.43: the suit, not the held helmet
    assert not body.contour.on_border.all() and body.contour.on_border.any()
    # Outward normals: a step along them leaves the person.
    probe = np.rint(body.contour.points + 3 * body.contour.normals).astype(int)
    keep = (probe >= 0).all(axis=1) & (probe < 512).all(axis=1) & ~body.contour.on_border
    assert (~body.person[probe[keep, 1], probe[keep, 0]]).mean() > 0.95


def test_detect_body_without_person():
    with pytest.raises(NoPersonError) as err:
        detect_body(np.full((128, 128, 3), 128, np.uint8), name="grey.png")
    assert isinstance(err.value, InputError) and "grey.png" in str(err.value)


def test_catalog_and_validation(astro):
    rgb, body = astro
    assert set(BODY_CATALOG) == {
        "shoulder_square",
        "shoulder_width",
        "arm_thickness",
        "leg_slim",
        "waist_slim",
    }
    for op in BODY_CATALOG.values():
        assert op.plus and op.minus and op.plus != op.minus
        assert all(g > 0 for g in op.gain)
    with pytest.raises(UsageError, match="choose from"):
        get_body_operation("neck_length")
    with pytest.raises(UsageError, match="between -100 and 100"):
        plan_body_warp(body, [OpRequest("waist_slim", 120)])
    # Waist and legs are not on the astronaut's outline: a clear error, or skipped.
    for name in ("leg_slim", "waist_slim"):
        with pytest.raises(BodyPartNotVisible, match=name):
            plan_body_warp(body, [OpRequest(name, 50)])
    assert plan_body_warp(body, [OpRequest("leg_slim", 50)], strict=False).is_identity
    assert np.array_equal(apply_body_ops(rgb, body, [OpRequest("arm_thickness", 0)]), rgb)


# --------------------------------------------------------------------------------------------
# re-measured effects: astronaut (re-detected)

ASTRO_CASES = {
    # op: (the measure it names, the sign of its change at +100)
    "shoulder_square": ("top", +1),
    "shoulder_width": ("half", +1),
    "arm_thickness": ("arm_L", +1),
}


@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
@pytest.mark.parametrize("name", list(ASTRO_CASES))
def test_astronaut_op_redetected(astro, astro_jitter, name, sign):
    rgb, body = astro
    key, direction = ASTRO_CASES[name]
    plan = plan_body_warp(body, [OpRequest(name, 100 * sign)])
    out = apply_body_warp(rgb, plan)

    def total(m):
        return m[key] if key in m else m[key + "_L"] + m[key + "_R"]

    base = _astro_measures(body.mask, body)
    planned = _astro_measures(apply_body_warp(body.mask, plan), body)
    redetected = _astro_measures(detect_body(out).mask, body)
    want = total(planned) - total(base)
    got = total(redetected) - total(base)
    print(
        f"{name} {sign:+d}: planned {want:+.2f} px, re-detected {got:+.2f} px, "
        f"jitter {astro_jitter[key]:.2f} px, head {redetected['head'] - base['head']:+.2f} "
        f"(jitter {astro_jitter['head']:.2f})"
    )
    assert np.sign(want) == sign * direction and abs(want) > 0.04 * body.frame.unit
    # Re-detected / planned, measured: square +1.11 −0.47, width +1.06 +1.20, arm +1.01 +0.89
    # (the segmenter follows a lowered shoulder only half-way); jitter: 3.4, 4.2, 0.34 px.
    assert np.sign(got) == np.sign(want)
    assert abs(got) >= 0.4 * abs(want)
    assert abs(got) >= 1.5 * astro_jitter[key]
    # The head's outline, re-detected, stays within its jitter (+1 px); measured ≤ 1.25 px.
    assert abs(redetected["head"] - base["head"]) <= astro_jitter["head"] + 1.0
    # Nothing outside the region: unchanged pixels where W = 0, the face untouched, the head
    # outline where it was.
    assert np.array_equal(out[~plan.changed(body.shape)], rgb[~plan.changed(body.shape)])
    assert planned["head"] == pytest.approx(base["head"], abs=1e-6)
    zone = body.face_zone()
    assert zone is not None
    centre, half_u, half_v = zone
    local = body.frame.to_local(pixel_grid(plan.box))
    inside_face = (
        np.hypot((local[..., 0] - centre[0]) / half_u, (local[..., 1] - centre[1]) / half_v) < 1
    )
    assert not (plan.weight[inside_face] > 0).any()
    if name == "arm_thickness":  # one arm: the shoulders and the other side stay
        for k in ("top_L", "top_R", "half_R"):
            assert planned[k] == pytest.approx(base[k], abs=0.05)


# --------------------------------------------------------------------------------------------
# re-measured effects: synthetic figure (re-segmented), all five operations

FIGURE_CASES = {
    # op: (measures it changes, nominal change per measure at +100 in px, measures it leaves)
    "shoulder_square": (
        ("top_L", "top_R"),
        0.06 * 160,
        ("waist_L", "waist_R", "thigh_L", "thigh_R", "shin_L", "shin_R"),
    ),
    "shoulder_width": (
        ("half_L", "half_R"),
        0.05 * 160,
        ("waist_L", "waist_R", "thigh_L", "thigh_R", "shin_L", "shin_R"),
    ),
    "arm_thickness": (
        ("arm_L", "arm_R"),
        2 * 0.2 * 21,
        ("waist_L", "waist_R", "thigh_L", "thigh_R", "shin_L", "shin_R", "top_L", "top_R"),
    ),
    "waist_slim": (
        ("waist_L", "waist_R"),
        -0.12 * 60,
        ("top_L", "top_R", "half_L", "half_R", "arm_L", "arm_R", "shin_L", "shin_R"),
    ),
    "leg_slim": (
        ("thigh_L", "thigh_R", "shin_L", "shin_R"),
        -2 * 0.15 * 28,
        ("top_L", "top_R", "half_L", "half_R", "arm_L", "arm_R", "waist_L", "waist_R"),
    ),
}


@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
@pytest.mark.parametrize("name", list(FIGURE_CASES))
def test_figure_op_remeasured(figure, name, sign):
    rgb, body = figure
    changes, nominal, keeps = FIGURE_CASES[name]
    plan = plan_body_warp(body, [OpRequest(name, 100 * sign)])
    out = apply_body_warp(rgb, plan)
    base = figure_measures(figure_prob(rgb), body)
    after = figure_measures(figure_prob(out), body)
    delta = {k: after[k] - base[k] for k in base}
    print(name, sign, {k: round(v, 2) for k, v in delta.items()})
    for k in changes:
        assert np.sign(delta[k]) == np.sign(nominal * sign), k
        assert 0.6 * abs(nominal) <= abs(delta[k]) <= 1.25 * abs(nominal), k
    for k in keeps:
        assert abs(delta[k]) <= 0.3, k
    assert np.array_equal(out[~plan.changed(body.shape)], rgb[~plan.changed(body.shape)])


def test_strength_scales_and_order_does_not_matter(figure):
    rgb, body = figure
    half = figure_measures(
        figure_prob(apply_body_ops(rgb, body, [OpRequest("waist_slim", 50)])), body
    )
    full = figure_measures(
        figure_prob(apply_body_ops(rgb, body, [OpRequest("waist_slim", 100)])), body
    )
    base = figure_measures(figure_prob(rgb), body)
    for k in ("waist_L", "waist_R"):
        ratio = (half[k] - base[k]) / (full[k] - base[k])
        assert 0.4 <= ratio <= 0.6, ratio
    a = plan_body_warp(body, [OpRequest("leg_slim", 60), OpRequest("shoulder_width", -40)])
    b = plan_body_warp(body, [OpRequest("shoulder_width", -40), OpRequest("leg_slim", 60)])
    assert np.array_equal(a.sample_map, b.sample_map)


@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
def test_no_folds(astro, figure, sign):
    """Each stage's map and their composition stay one-to-one (Jacobian > 0)."""
    for _rgb, body in (astro, figure):
        for name in BODY_CATALOG:
            try:
                plan = plan_body_warp(body, [OpRequest(name, 100 * sign)])
            except BodyPartNotVisible:
                continue
            assert jacobian_min(plan.sample_map) > 0.2, name
        every = plan_body_warp(body, [OpRequest(n, 100 * sign) for n in BODY_CATALOG], strict=False)
        print(sign, jacobian_min(every.sample_map))
        assert jacobian_min(every.sample_map) > 0.1


# --------------------------------------------------------------------------------------------
# background straightness


@pytest.fixture(scope="module")
def astro_scene(astro):
    """The astronaut cut out with her own mask and pasted on the grid."""
    rgb, body = astro
    alpha = body.mask[..., None]
    scene = alpha * rgb + (1 - alpha) * grid_background(*rgb.shape[:2])
    return _frozen(np.clip(np.rint(scene), 0, 255).astype(np.uint8)), body


STRAIGHT_CASES = [("astro", n) for n in ASTRO_CASES] + [("figure", n) for n in FIGURE_CASES]


@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
@pytest.mark.parametrize(("scene", "name"), STRAIGHT_CASES)
def test_background_lines_stay_straight(request, scene, name, sign):
    rgb, body = request.getfixturevalue("astro_scene" if scene == "astro" else "figure")
    plan = plan_body_warp(body, [OpRequest(name, 100 * sign)])
    out = apply_body_warp(rgb, plan)
    person_after = apply_body_warp(body.mask, plan)
    blocked = (
        cv2.dilate(
            ((body.mask > 0.01) | (person_after > 0.01)).astype(np.uint8), np.ones((5, 5), np.uint8)
        )
        > 0
    )
    changed = plan.changed(body.shape)
    half = GRID_SPACING // 2 - 2
    outside_dev, band_dev, residual, n_band = 0.0, 0.0, 0.0, 0
    before = line_samples(rgb, blocked)
    for (axis, x0, along, centre), (_, _, along0, centre0) in zip(
        line_samples(out, blocked), before, strict=True
    ):
        assert np.array_equal(along, along0)
        lo, hi = int(np.floor(x0)) - half, int(np.floor(x0)) + half + 1
        touched = changed[along, lo:hi] if axis == 0 else changed[lo:hi, along].T
        in_band = touched.any(axis=1)
        dev = np.abs(centre - x0)
        # Beyond the band the line is the input's, to the bit.
        assert np.array_equal(centre[~in_band], centre0[~in_band])
        if (~in_band).any():
            outside_dev = max(outside_dev, float(dev[~in_band].max()))
            fit = np.polyfit(along[~in_band], centre[~in_band], 1)
            residual = max(
                residual, float(np.abs(np.polyval(fit, along[~in_band]) - centre[~in_band]).max())
            )
        if in_band.any():
            band_dev = max(band_dev, float(dev[in_band].max()))
            n_band += int(in_band.sum())
    print(
        f"{scene} {name} {sign:+d}: beyond band dev {outside_dev:.3f} resid {residual:.3f}; "
        f"in band max bend {band_dev:.2f} px over {n_band} samples; max move "
        f"{plan.max_shift_px:.2f}, margin {plan.margin_px:.1f}"
    )
    assert outside_dev <= 0.5 and residual <= 0.5
    assert band_dev <= plan.max_shift_px + 0.5


# --------------------------------------------------------------------------------------------
# a real full-length portrait (development photo; not shipped by any dependency)


@pytest.fixture(scope="module")
def obama3():
    if not OBAMA3.exists():
        pytest.skip(f"{OBAMA3} is not on this machine")
    rgb = cv2.cvtColor(cv2.imread(str(OBAMA3)), cv2.COLOR_BGR2RGB)
    rgb = _frozen(cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    return rgb, detect_body(rgb)


def _obama_measures(prob, body) -> dict[str, float]:
    p = body.points
    out = {"waist": sum(torso_half_widths(prob, p, body.frame).values())}
    out["thigh"] = limb_width(
        prob, p[B.RIGHT_HIP], p[B.RIGHT_KNEE], (0.3, 0.6), sides=(-1,), length=250
    )
    out["thigh"] += limb_width(
        prob, p[B.LEFT_HIP], p[B.LEFT_KNEE], (0.3, 0.6), sides=(1,), length=250
    )
    sh = shoulder_measures(prob, body.frame)
    out["shoulders"] = sh["half_L"] + sh["half_R"]
    return out


@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
@pytest.mark.parametrize(("name", "key"), [("waist_slim", "waist"), ("leg_slim", "thigh")])
def test_full_length_portrait_redetected(obama3, name, key, sign):
    rgb, body = obama3
    base = _obama_measures(body.mask, body)
    jitter = {k: 0.0 for k in base}
    for variant in _perturbed(rgb):
        m = _obama_measures(detect_body(variant).mask, body)
        jitter = {k: max(jitter[k], abs(m[k] - base[k])) for k in base}
    plan = plan_body_warp(body, [OpRequest(name, 100 * sign)])
    out = apply_body_warp(rgb, plan)
    planned = _obama_measures(apply_body_warp(body.mask, plan), body)
    got = _obama_measures(detect_body(out).mask, body)
    want = planned[key] - base[key]
    change = got[key] - base[key]
    print(name, sign, "planned", round(want, 2), "re-detected", round(change, 2), "jitter", jitter)
    assert np.sign(want) == -sign  # both are "slim" for +
    assert np.sign(change) == np.sign(want) and abs(change) >= 0.5 * abs(want)
    assert abs(change) >= 1.5 * jitter[key]
    assert abs(got["shoulders"] - base["shoulders"]) <= jitter["shoulders"] + 3.0
    assert np.array_equal(out[~plan.changed(body.shape)], rgb[~plan.changed(body.shape)])


# --------------------------------------------------------------------------------------------
# wiring: `mirrorppr ops` and `mirrorppr apply` know the body operations


def test_cli_ops_lists_all_27_operations():
    import json as _json

    from typer.testing import CliRunner

    from mirrorppr_cli.cli import app

    result = CliRunner().invoke(app, ["ops", "--json"])
    names = [op["name"] for op in _json.loads(result.stdout)["operations"]]
    assert len(names) == 27 and len(set(names)) == 27
    assert set(BODY_CATALOG) <= set(names)


def test_cli_apply_body_and_face_ops_together(tmp_path):
    from typer.testing import CliRunner

    from mirrorppr_cli.cli import app

    src = tmp_path / "a.png"
    Image.fromarray(data.astronaut()).save(src)
    out = tmp_path / "b.png"
    runner = CliRunner()
    result = runner.invoke(app, ["apply", str(src), "--op", "shoulder_width=-60", "--op",
                                 "eye_resize=30", "-o", str(out)])
    assert result.exit_code == 0, result.output
    before, after = data.astronaut(), np.asarray(Image.open(out))
    changed = np.any(before != after, axis=-1)
    rows = np.where(changed.any(axis=1))[0]
    assert changed.sum() > 1000 and rows.max() > 400  # shoulders (low) and eyes (high) moved
    assert changed[:40].sum() == 0  # the top of the frame is untouched
    # a body part the photo does not show is a clear input error
    missing = runner.invoke(app, ["apply", str(src), "--op", "waist_slim=50", "-o",
                                  str(tmp_path / "c.png")])
    assert missing.exit_code == 3 and "waist" in missing.output
    assert not (tmp_path / "c.png").exists()
