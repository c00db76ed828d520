"""The similarity-MLS warp core: :mod:`mirrorppr_cli.geometric.mls`.

Tolerances are stated next to each assertion with the value measured when the test was written
(numpy 1.26 / OpenCV 4.11, x86-64). Tests marked ``xfail(strict=True)`` pin down a documented
property that the current code does not have (see each ``reason``); they turn into failures
once the code is fixed, so that the marker gets removed.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirrorppr_cli.geometric.box import Box
from mirrorppr_cli.geometric.mls import (
    DEFAULT_GRID,
    LocalWarp,
    apply_local_warp,
    fast_path_bound,
    feather_mask,
    inverse_map_exact,
    inverse_map_fast,
    mls_similarity,
    pixel_grid,
    remap,
)
from mirrorppr_cli.ops import CATALOG, OpRequest, plan_warp

# --------------------------------------------------------------------------------------------
# helpers


def _spread_points(rng, n, low, high, min_sep, tries=4000):
    """Up to ``n`` points uniform in ``[low, high)²``, pairwise at least ``min_sep`` apart."""
    pts: list[np.ndarray] = []
    for _ in range(tries):
        if len(pts) == n:
            break
        c = rng.uniform(low, high, 2)
        if all(np.hypot(*(c - p)) >= min_sep for p in pts):
            pts.append(c)
    return np.array(pts)


def _min_pair_distance(pts):
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min()


def _random_similarity(rng):
    """``(scale, S)``: S(x) = scale·R(θ)·x + t, scale in [0.25, 4], any θ, |t| ≤ 1000 px."""
    scale = float(10 ** rng.uniform(-0.6, 0.6))
    theta = rng.uniform(-np.pi, np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shift = rng.uniform(-1000, 1000, 2)
    return scale, lambda x: scale * np.asarray(x, np.float64) @ rot.T + shift


def _perp(x):
    """``(x, y)^⊥ = (−y, x)``, on the last axis."""
    return np.stack([-x[..., 1], x[..., 0]], axis=-1)


def _mls_reference(v, p, q, alpha):
    """Similarity MLS straight from Schaefer et al. (2006), eqs. for ``f_s``: real 2×2 algebra.

    Per point: ``w_i = 1/|p_i − v|^(2α)``, weighted centroids ``p*``, ``q*``, ``p̂ = p − p*``,
    ``q̂ = q − q*``, ``μ_s = Σ w_i |p̂_i|²``,
    ``A_i = w_i [p̂_i; −p̂_i^⊥] [v − p*; −(v − p*)^⊥]^T`` and ``f(v) = Σ q̂_i A_i / μ_s + q*``.
    No complex numbers: independent of the module's closed form.
    """
    v = np.asarray(v, np.float64)
    out = np.empty_like(v)
    for k, x in enumerate(v):
        d2 = np.sum((p - x) ** 2, axis=1)
        if np.any(d2 == 0):
            out[k] = q[np.argmin(d2)]
            continue
        w = d2 ** (-alpha)
        p_star = w @ p / w.sum()
        q_star = w @ q / w.sum()
        p_hat = p - p_star
        q_hat = q - q_star
        mu_s = np.sum(w * np.sum(p_hat**2, axis=1))
        r = x - p_star
        mat_v = np.stack([r, -_perp(r)])  # rows: v − p*, −(v − p*)^⊥
        mat_p = np.stack([p_hat, -_perp(p_hat)], axis=1)  # (N, 2, 2), rows: p̂_i, −p̂_i^⊥
        a_mats = w[:, None, None] * np.einsum("iab,cb->iac", mat_p, mat_v)
        out[k] = np.einsum("ia,iab->b", q_hat, a_mats) / mu_s + q_star
    return out


def _random_handles(rng, extent=512.0):
    n = int(rng.integers(3, 41))
    p = _spread_points(rng, n, 0, extent, min_sep=0.5)
    q = p + rng.normal(0, rng.uniform(0.5, 20), p.shape)
    return p, q


# --------------------------------------------------------------------------------------------
# 1–3: identity, interpolation, equivariance (alpha = 1, the value every warp in the tool uses)

EXTENTS = (10.0, 512.0, 4096.0)  # a tiny crop, the astronaut, a large photo


def test_identity_handles_map_every_point_to_itself():
    rng = np.random.default_rng(1)
    worst = 0.0
    for trial in range(60):
        extent = EXTENTS[trial % 3]
        p = rng.uniform(0, extent, (int(rng.integers(2, 60)), 2))
        v = rng.uniform(-0.2 * extent, 1.2 * extent, (400, 2))
        worst = max(worst, np.abs(mls_similarity(v, p, p) - v).max())
    # measured 1.1e-11 px (coordinates up to ~5000 px).
    assert worst <= 1e-9


def test_control_points_are_interpolated_exactly():
    rng = np.random.default_rng(2)
    worst = 0.0
    for trial in range(60):
        extent = EXTENTS[trial % 3]
        p = _spread_points(rng, int(rng.integers(2, 50)), 0, extent, min_sep=0.5)
        q = p + rng.normal(0, rng.uniform(0.1, 50), p.shape)
        worst = max(worst, np.abs(mls_similarity(p, p, q) - q).max())
    # measured 8e-10 px (handles ≥ 0.5 px apart, displacements up to ~150 px).
    assert worst <= 1e-6


def test_mls_is_equivariant_under_a_global_similarity():
    rng = np.random.default_rng(3)
    worst_equi = worst_global = 0.0
    for _ in range(100):
        p, q = _random_handles(rng, extent=600.0)
        v = rng.uniform(-100, 700, (300, 2))
        scale, sim = _random_similarity(rng)
        lhs = mls_similarity(sim(v), sim(p), sim(q))
        rhs = sim(mls_similarity(v, p, q))
        worst_equi = max(worst_equi, np.abs(lhs - rhs).max() / scale)
        # q = S(p) for every handle: the deformation is S everywhere.
        worst_global = max(
            worst_global, np.abs(mls_similarity(v, p, sim(p)) - sim(v)).max() / scale
        )
    # measured 1.4e-11 and 1.5e-11 (per unit of scale).
    assert worst_equi <= 1e-6
    assert worst_global <= 1e-6


# --------------------------------------------------------------------------------------------
# 4: agreement with an independent implementation of the paper's equations


def _test_points(rng, p, n_uniform=150, n_near=40):
    """Uniform points over (and beyond) the handles, plus points 1e-3…1 px from handles."""
    lo, hi = p.min(axis=0) - 64, p.max(axis=0) + 64
    uniform = rng.uniform(lo, hi, (n_uniform, 2))
    ang = rng.uniform(0, 2 * np.pi, n_near)
    dist = 10 ** rng.uniform(-3, 0, n_near)
    near = p[rng.integers(0, len(p), n_near)] + dist[:, None] * np.stack(
        [np.cos(ang), np.sin(ang)], axis=1
    )
    return np.concatenate([uniform, near])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_mls_matches_reference_implementation(alpha):
    rng = np.random.default_rng(4)
    worst = 0.0
    for _ in range(12):
        p, q = _random_handles(rng)
        v = _test_points(rng, p)
        worst = max(
            worst, np.abs(mls_similarity(v, p, q, alpha) - _mls_reference(v, p, q, alpha)).max()
        )
    # measured 7e-9 px (alpha 1) and 3.4e-8 px (alpha 0.5), worst at points 1e-3 px off a handle.
    assert worst <= 1e-4


def test_mls_matches_reference_implementation_alpha_2_away_from_handles():
    """alpha = 2 at points ≥ 0.5 px from every handle (closer, see the xfail test below)."""
    rng = np.random.default_rng(5)
    worst = 0.0
    for _ in range(12):
        p, q = _random_handles(rng)
        v = _test_points(rng, p, n_near=0)
        v = v[np.linalg.norm(v[:, None] - p[None], axis=-1).min(axis=1) >= 0.5]
        worst = max(
            worst, np.abs(mls_similarity(v, p, q, 2.0) - _mls_reference(v, p, q, 2.0)).max()
        )
    # measured 1.1e-9 px.
    assert worst <= 1e-4


@pytest.mark.xfail(
    strict=True,
    reason="mls_similarity loses precision near a handle for alpha > 1: the expanded sums "
    "(Σw|a|² − s0|a*|², Σw·b·conj(a) − …) cancel catastrophically when one weight dominates; "
    "measured 0.05 px off at 0.01 px from a handle (coordinates ≤ 512), up to 0.7 px at ~4000 px",
)
def test_mls_matches_reference_implementation_alpha_2_near_handles():
    rng = np.random.default_rng(6)
    p = rng.uniform(0, 512, (20, 2))
    q = p + rng.normal(0, 10, p.shape)
    ang = rng.uniform(0, 2 * np.pi, 200)
    v = p[rng.integers(0, 20, 200)] + 0.01 * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    assert np.abs(mls_similarity(v, p, q, 2.0) - _mls_reference(v, p, q, 2.0)).max() <= 1e-4


@pytest.mark.xfail(
    strict=True,
    reason="for alpha < 1 the weight at a handle is capped at _EPS_SQ**-alpha (1e6 for 0.5), "
    "and |v − p|² computed by expansion is not 0 there: f(p_i) misses q_i by up to 1.5e-3 px",
)
def test_control_points_are_interpolated_exactly_alpha_half():
    rng = np.random.default_rng(2)
    worst = 0.0
    for trial in range(60):
        extent = EXTENTS[trial % 3]
        p = _spread_points(rng, int(rng.integers(2, 50)), 0, extent, min_sep=0.5)
        q = p + rng.normal(0, rng.uniform(0.1, 50), p.shape)
        worst = max(worst, np.abs(mls_similarity(p, p, q, 0.5) - q).max())
    assert worst <= 1e-6


def test_reference_implementation_sanity():
    """The reference itself: a pure translation and a pure rotation are reproduced."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 100, (6, 2))
    v = rng.uniform(0, 100, (20, 2))
    np.testing.assert_allclose(
        _mls_reference(v, p, p + [3.0, -2.0], 1.0), v + [3.0, -2.0], atol=1e-9
    )
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(_mls_reference(v, p, p @ rot.T, 1.0), v @ rot.T, atol=1e-9)


# --------------------------------------------------------------------------------------------
# 5: inverse map conventions


def test_pixel_grid_puts_pixel_centres_at_integers():
    box = Box(13, 7, 50, 31)
    grid = pixel_grid(box)
    assert grid.shape == (24, 37, 2) and grid.dtype == np.float64
    assert grid[0, 0].tolist() == [13.0, 7.0]  # (x, y) of row 0, col 0
    assert grid[5, 9].tolist() == [22.0, 12.0]  # row r, col c → (x0 + c, y0 + r)
    # cv2.remap samples with the same convention: the full-frame grid reproduces the image.
    img = np.random.default_rng(0).integers(0, 256, (31, 50, 3), dtype=np.uint8)
    assert np.array_equal(remap(img, pixel_grid(Box.full(31, 50))), img)


def test_inverse_map_exact_shape_and_convention():
    rng = np.random.default_rng(8)
    box = Box(-5, 20, 93, 61)
    target = rng.uniform(0, 100, (12, 2))
    shift = np.array([2.5, -1.25])
    inv = inverse_map_exact(box, target + shift, target)  # content moves by −shift
    assert inv.shape == (box.height, box.width, 2) and inv.dtype == np.float64
    # The output pixel at (x, y) samples the input at (x, y) + shift, x first.
    np.testing.assert_allclose(inv, pixel_grid(box) + shift, atol=1e-9)


def test_zero_displacement_gives_the_pixel_grid():
    rng = np.random.default_rng(9)
    box = Box(13, 7, 213, 157)
    worst_exact = worst_fast = 0.0
    for _ in range(20):
        pts = rng.uniform(0, 300, (int(rng.integers(2, 40)), 2))
        worst_exact = max(
            worst_exact, np.abs(inverse_map_exact(box, pts, pts) - pixel_grid(box)).max()
        )
        worst_fast = max(
            worst_fast, np.abs(inverse_map_fast(box, pts, pts) - pixel_grid(box)).max()
        )
    # Not bit-exact: the closed form rounds (measured 8e-12 exact, 2.4e-12 fast).
    assert worst_exact <= 1e-9
    assert worst_fast <= 1e-9


def test_fast_map_equals_exact_map_for_a_global_similarity():
    rng = np.random.default_rng(10)
    worst = 0.0
    for _ in range(30):
        target = rng.uniform(0, 300, (int(rng.integers(2, 30)), 2))
        _, sim = _random_similarity(rng)
        x0, y0 = (int(c) for c in rng.integers(-20, 50, 2))
        box = Box(x0, y0, x0 + int(rng.integers(1, 230)), y0 + int(rng.integers(1, 230)))
        exact = inverse_map_exact(box, sim(target), target)
        for grid in sorted({3, 4, 8, 12, DEFAULT_GRID}):
            fast = inverse_map_fast(box, sim(target), target, grid=grid)
            assert fast.shape == exact.shape
            worst = max(worst, np.abs(fast - exact).max())
    # Cubic convolution with linearly extrapolated end nodes reproduces affine maps; measured
    # 6.4e-11 px (maps reach ~5000 px).
    assert worst <= 1e-9


def test_fast_map_of_an_empty_box():
    assert inverse_map_fast(Box(5, 5, 5, 9), np.zeros((2, 2)), np.ones((2, 2))).shape == (4, 0, 2)


# --------------------------------------------------------------------------------------------
# 6: the fast path against the exact map

N_CATALOG_SETS = 40


@pytest.fixture(scope="module")
def catalog_fast_deviation(astronaut_512, astronaut_512_points):
    """``{grid: [(worst |fast − exact| px, fast_path_bound px), …]}`` over catalog warps.

    Seeded random sets of the kind the tool produces: 1–8 distinct operations at strengths
    uniform in [−100, 100], planned with ``plan_warp`` on the astronaut's real landmarks,
    evaluated over the warp's feather box (the mask is 1 wherever the worst deviations are).
    """
    rng = np.random.default_rng(2024)
    names = list(CATALOG)
    result: dict[int, list[tuple[float, float]]] = {g: [] for g in sorted({4, 8, 12, DEFAULT_GRID})}
    for _ in range(N_CATALOG_SETS):
        chosen = rng.choice(names, size=int(rng.integers(1, 9)), replace=False)
        requests = [OpRequest(str(n), float(rng.uniform(-100, 100))) for n in chosen]
        warp = plan_warp(astronaut_512_points, requests)
        _, box = feather_mask(astronaut_512.shape[:2], warp.polygons, warp.feather_px)
        exact = inverse_map_exact(box, warp.source, warp.target)
        bound = fast_path_bound(warp.source, warp.target)
        for grid, rows in result.items():
            fast = inverse_map_fast(box, warp.source, warp.target, grid=grid)
            rows.append((float(np.linalg.norm(fast - exact, axis=-1).max()), bound))
    return result


def test_fast_path_bound_on_catalog_warps(catalog_fast_deviation):
    over = [(dev, bound) for dev, bound in catalog_fast_deviation[DEFAULT_GRID] if dev > bound]
    assert not over, (
        f"{len(over)} sets over fast_path_bound, worst {max(d / b for d, b in over):.2f}×"
    )


@pytest.mark.parametrize(
    ("grid", "measured"),
    # Measured worst |fast − exact| over the fixture's 40 sets (astronaut at 512², inter-ocular
    # distance 43 px); 300 other sets reached 5.2 / 5.7 / 6.1 px.
    [(4, 4.573), (8, 4.225), (12, 6.098)],
)
def test_fast_path_deviation_on_catalog_warps_does_not_grow(catalog_fast_deviation, grid, measured):
    """Regression guard while the stated bound does not hold: measured worst + 25 %."""
    worst = max(dev for dev, _ in catalog_fast_deviation[grid])
    assert worst <= 1.25 * measured


def _smooth_displacements(rng, pts, ratio=0.3):
    """Displacements whose pairwise differences are at most ``ratio`` × the points' distance.

    A random smooth field (three plane waves) or, every other time, i.i.d. noise; either is
    rescaled so that the largest ``|d_i − d_j| / |p_i − p_j|`` equals ``ratio`` exactly.
    """
    if rng.random() < 0.5:
        k = rng.uniform(0.01, 0.3, (3, 2)) * rng.choice([-1, 1], (3, 2))
        phase = rng.uniform(0, 2 * np.pi, 3)
        amp = rng.normal(0, 1, (3, 2))
        disp = sum(amp[j] * np.sin(pts @ k[j] + phase[j])[:, None] for j in range(3))
    else:
        disp = rng.normal(0, 1, pts.shape)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    worst = (np.linalg.norm(disp[:, None] - disp[None], axis=-1) / dist).max()
    return disp * (ratio / worst)


def _synthetic_fast_deviation(grid, trials=30, seed=11):
    """Worst |fast − exact| (px) over random smooth sets: handles ≥ ``grid`` px apart."""
    rng = np.random.default_rng(seed)
    box = Box(37, -11, 37 + 200, -11 + 200)
    worst = 0.0
    for _ in range(trials):
        target = _spread_points(rng, 60, 0, 160, min_sep=grid, tries=300) + [57.0, 9.0]
        source = target + _smooth_displacements(rng, target) + rng.normal(0, 3, 2)
        # Both handle sets ≥ grid apart: drop one point of each too-close source pair (the
        # displacement condition only gets easier on a subset).
        while _min_pair_distance(source) < grid:
            d = np.linalg.norm(source[:, None] - source[None], axis=-1)
            np.fill_diagonal(d, np.inf)
            drop = np.unravel_index(d.argmin(), d.shape)[0]
            source, target = np.delete(source, drop, 0), np.delete(target, drop, 0)
        exact = inverse_map_exact(box, source, target)
        fast = inverse_map_fast(box, source, target, grid=grid)
        worst = max(worst, float(np.linalg.norm(fast - exact, axis=-1).max()))
    return worst


@pytest.mark.parametrize(
    ("grid", "measured"),
    # Measured worst over the 30 seeded sets (60 sets of another seed: 0.44 / 1.31 / 1.99 px).
    [(4, 0.474), (8, 1.145), (12, 1.935)],
)
def test_fast_path_deviation_on_smooth_synthetic_warps(grid, measured):
    """Handles ≥ grid px apart, displacement differences ≤ 0.3 × distance: measured + 25 %."""
    assert _synthetic_fast_deviation(grid) <= 1.25 * measured


# --------------------------------------------------------------------------------------------
# 7: feather_mask


def _hull_distances(points, hull):
    """Signed distance of ``points`` (M, 2) to a convex polygon: > 0 inside, < 0 outside."""
    hull = np.asarray(hull, np.float64)
    a, b = hull, np.roll(hull, -1, axis=0)
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1)
    seg = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)
    cross = ab[None, :, 0] * ap[..., 1] - ab[None, :, 1] * ap[..., 0]
    inside = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    return np.where(inside, seg, -seg)


def _union_distance(points, polygons):
    hulls = [cv2.convexHull(np.asarray(p, np.float32)).reshape(-1, 2) for p in polygons]
    return np.max([_hull_distances(points, h) for h in hulls], axis=0)


def _random_feather_case(rng):
    feather = float(rng.uniform(3, 30))
    polygons = [
        rng.uniform(40, 160, (int(rng.integers(3, 12)), 2)) for _ in range(rng.integers(1, 3))
    ]
    radius = max(3, int(np.ceil(feather)) | 1) // 2
    return feather, polygons, radius


def test_feather_mask_values_and_support():
    rng = np.random.default_rng(12)
    worst_excess = 0.0
    for _ in range(80):
        feather, polygons, radius = _random_feather_case(rng)
        mask, box = feather_mask((200, 220), polygons, feather)
        assert mask.dtype == np.float32 and mask.shape == (box.height, box.width)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        dist = _union_distance(pixel_grid(box).reshape(-1, 2), polygons).reshape(mask.shape)
        # The blur kernel has square support (radius in x and y), the hull is rasterised with
        # anti-aliased edges (≤ 1.5 px): at depth ≥ r·√2 + 2 every kernel tap sees a full hull
        # pixel, at that distance outside none sees a lit one.
        reach = radius * np.sqrt(2) + 2
        assert np.all(mask[dist >= reach] >= 1 - 1e-6)
        assert np.all(mask[dist <= -reach] == 0.0)
        worst_excess = max(worst_excess, -dist[mask > 0].min() - radius)
    # Tighter, measured: non-zero at most 3.23 px beyond hull + kernel radius (radius ≤ 15).
    assert worst_excess <= 4.0


def _full_frame_mask(shape, polygons, feather):
    """The mask computed on the whole frame, without the box optimisation."""
    ksize = max(3, int(np.ceil(feather)) | 1)
    canvas = np.zeros(shape, np.uint8)
    for poly in polygons:
        hull = cv2.convexHull(np.asarray(poly, np.float32).reshape(-1, 1, 2)).reshape(-1, 2)
        cv2.fillConvexPoly(canvas, np.round(hull * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    full = cv2.GaussianBlur(
        canvas.astype(np.float32) / 255, (ksize, ksize), 0, borderType=cv2.BORDER_CONSTANT
    )
    full[full < 1e-4] = 0
    return full


def test_feather_box_contains_every_nonzero_pixel():
    rng = np.random.default_rng(13)
    shape = (200, 220)
    for _ in range(40):
        feather, polygons, _ = _random_feather_case(rng)
        mask, box = feather_mask(shape, polygons, feather)
        full = _full_frame_mask(shape, polygons, feather)
        outside = np.ones(shape, bool)
        outside[box.slices()] = False
        assert not np.any(full[outside]), "non-zero mask outside the returned box"
        np.testing.assert_allclose(mask, full[box.slices()], atol=1e-6)


def test_feather_mask_clips_box_to_the_image():
    mask, box = feather_mask((100, 120), [np.array([[-30.0, -20], [60, 10], [20, 70]])], 11)
    assert (box.x0, box.y0) == (0, 0) and box.x1 <= 120 and box.y1 <= 100
    assert mask.shape == (box.height, box.width)
    assert mask[0, 0] > 0.3  # (0, 0) is deep inside the hull (how the image edge fades is open)


# --------------------------------------------------------------------------------------------
# 8: apply_local_warp


def _bump_warp(centre, radius=30.0, push=(3.0, -2.0), feather=9.0):
    """Moving points on a small circle pushed by ``push``, anchors on a circle twice as big."""
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    moving = centre + 0.4 * radius * ring
    anchors = centre + radius * ring
    source = np.concatenate([moving, anchors])
    target = np.concatenate([moving + push, anchors])
    return LocalWarp(source=source, target=target, polygons=[anchors], feather_px=feather)


@pytest.mark.parametrize("method", ["fast", "exact"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4, 5])
def test_pixels_outside_the_feathered_region_are_bit_identical(dtype, channels, method):
    rng = np.random.default_rng(14)
    top = np.iinfo(dtype).max
    img = rng.integers(0, top, (90, 130, channels), dtype=dtype, endpoint=True)
    warp = _bump_warp(np.array([70.0, 40.0]))
    out = apply_local_warp(img, warp, method=method)
    assert out.shape == img.shape and out.dtype == img.dtype
    mask, box = feather_mask(img.shape[:2], warp.polygons, warp.feather_px)
    full = np.zeros(img.shape[:2], np.float32)
    full[box.slices()] = mask
    assert np.array_equal(out[full == 0], img[full == 0])
    assert (full == 0).sum() > 0.5 * full.size  # the check covers most of the image
    assert np.any(out[full > 0] != img[full > 0])  # and the warp did something
    # Inside: the warped pixels where the mask is 1, mask·warped + (1 − mask)·input between
    # (±1 grey level: the module blends in float32).
    inverse = (inverse_map_fast if method == "fast" else inverse_map_exact)(
        box, warp.source, warp.target
    )
    warped = remap(img, inverse).astype(np.int64)
    before = img[box.slices()].astype(np.int64)
    after = out[box.slices()].astype(np.int64)
    inner = mask >= 1.0
    assert inner.sum() > 1000
    assert np.array_equal(after[inner], warped[inner])
    expected = np.rint(before + mask[..., None].astype(np.float64) * (warped - before))
    assert np.abs(after - expected).max() <= 1


def test_identity_warp_returns_an_equal_copy():
    img = np.random.default_rng(15).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pts = np.array([[10.0, 10], [30, 12], [20, 30]])
    for warp in (
        LocalWarp(source=pts, target=pts.copy(), polygons=[pts], feather_px=7),
        LocalWarp(source=pts, target=pts + 2, polygons=[], feather_px=7),
    ):
        out = apply_local_warp(img, warp)
        assert out is not img and np.array_equal(out, img)


def test_unknown_method_is_rejected():
    img = np.zeros((60, 60, 3), np.uint8)
    with pytest.raises(ValueError):
        apply_local_warp(img, _bump_warp(np.array([30.0, 30.0])), method="cubic")


def test_exact_and_fast_warps_agree_on_a_smooth_warp(astronaut_512):
    """Handles 24 px apart, a 3 px Gaussian push (σ 40 px): |fast − exact| map ≤ 0.083 px."""
    centre = np.array([240.0, 140.0])
    g = np.arange(-96, 97, 24.0)
    handles = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    handles = handles[np.linalg.norm(handles, axis=1) <= 100] + centre
    push = 3 * np.exp(-((handles - centre) ** 2).sum(1) / (2 * 40**2))[:, None] * [0.8, 0.6]
    warp = LocalWarp(source=handles, target=handles + push, polygons=[handles], feather_px=15)
    exact = apply_local_warp(astronaut_512, warp, method="exact").astype(int)
    fast = apply_local_warp(astronaut_512, warp, method="fast").astype(int)
    assert np.any(exact != astronaut_512)
    diff = np.abs(exact - fast)
    # measured: max 4 grey levels, mean 0.0012.
    assert diff.max() <= 8
    assert diff.mean() <= 0.02


def test_inverse_map_fast_on_a_lattice_and_where_needed():
    """rows/cols give the full map's values at those pixels; `needed` skips nodes that reach
    no needed pixel and leaves the map exact at needed pixels."""
    from mirrorppr_cli.geometric.box import Box
    from mirrorppr_cli.geometric.mls import inverse_map_fast

    rng = np.random.default_rng(3)
    src = rng.uniform(40, 200, (30, 2))
    dst = src + rng.normal(0, 2, src.shape)
    box = Box(17, 23, 240, 211)
    full = inverse_map_fast(box, src, dst)
    rows, cols = np.arange(2, box.height, 3), np.arange(1, box.width, 5)
    part = inverse_map_fast(box, src, dst, rows=rows, cols=cols)
    np.testing.assert_allclose(part, full[np.ix_(rows, cols)], atol=1e-9)
    needed = np.zeros((box.height, box.width), bool)
    needed[60:90, 100:130] = True
    sparse = inverse_map_fast(box, src, dst, needed=needed)
    np.testing.assert_allclose(sparse[needed], full[needed], atol=1e-9)
    assert np.abs(sparse - full).max() > 0.01  # far from the needed pixels, nodes were skipped


def test_mls_with_shared_fixed_handles_equals_mls_of_each_whole_set():
    """mls_similarity_shared sums the shared fixed handles once; each set's result is
    mls_similarity of its whole handle set (up to the sums' rounding)."""
    from mirrorppr_cli.geometric.mls import mls_similarity_shared

    rng = np.random.default_rng(11)
    fixed = rng.uniform(0, 300, (40, 2))
    moving = rng.uniform(50, 250, (12, 2))
    sets = [(moving, moving + rng.normal(0, 3, moving.shape)),
            (moving[:5] + 1.0, moving[:5] - rng.normal(0, 3, (5, 2))),
            (np.empty((0, 2)), np.empty((0, 2)))]  # the fixed handles alone: identity
    v = rng.uniform(-10, 310, (37, 29, 2))
    outs = mls_similarity_shared(v, fixed, sets)
    assert len(outs) == 3
    for (a, b), out in zip(sets, outs, strict=True):
        assert out.shape == v.shape
        reference = mls_similarity(v, np.concatenate([a, fixed]), np.concatenate([b, fixed]))
        np.testing.assert_allclose(out, reference, atol=1e-9)
    np.testing.assert_allclose(outs[2], v, atol=1e-9)
    with pytest.raises(ValueError):
        mls_similarity_shared(v, fixed[:1], [(np.empty((0, 2)), np.empty((0, 2)))])


def test_interpolation_planes_are_the_channels_of_the_interpolated_map():
    """interpolate_planes (K, h, w) = interpolate_nodes (h, w, K) moved, = the separable cubic
    convolution of each channel; nodes' values are reproduced at node pixels."""
    from mirrorppr_cli.geometric.mls import (
        _cubic_weights,
        grid_nodes,
        interpolate_nodes,
        interpolate_planes,
    )

    rng = np.random.default_rng(5)
    box = Box(3, 8, 3 + 57, 8 + 41)
    ny, nx = grid_nodes(box, 4).shape[:2]
    values = rng.normal(size=(ny, nx, 3))
    planes = interpolate_planes(box, 4, values)
    assert planes.shape == (3, box.height, box.width)
    assert all(p.flags.c_contiguous for p in planes)
    wx, wy = _cubic_weights(box.width, 4, nx), _cubic_weights(box.height, 4, ny)
    for k in range(3):
        np.testing.assert_allclose(planes[k], wy @ values[..., k] @ wx.T, atol=1e-12)
        np.testing.assert_allclose(planes[k][::4, ::4], values[: -(-box.height // 4),
                                                              : -(-box.width // 4), k], atol=1e-12)
    np.testing.assert_array_equal(np.moveaxis(planes, 0, -1), interpolate_nodes(box, 4, values))
    rows, cols = np.array([0, 5, 40]), np.array([2, 3, 56])
    np.testing.assert_allclose(interpolate_planes(box, 4, values, rows, cols),
                               planes[:, rows][:, :, cols], atol=1e-12)
