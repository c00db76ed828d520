"""Cheaper ways of computing parts of an exemplar's measurement give the same bytes.

Each speed-up of :func:`~mirrorppr_cli.geometric.measure.measure_exemplar`'s helpers (a norm
without numpy's strided reduction, an integer box sum for a float one, a grey crop for a crop
of the grey image, sets for numpy's sorted set operations…) is compared here with the
computation written out as it was before, for identical values (bytes, not a tolerance).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirrorppr_cli.geometric import face as geo_face
from mirrorppr_cli.geometric import field as geo_field
from mirrorppr_cli.geometric import motion as geo_motion
from mirrorppr_cli.geometric.box import Box
from mirrorppr_cli.geometric.face import FaceWindow
from mirrorppr_cli.geometric.flow import grey, lengths
from mirrorppr_cli.geometric.mls import LocalWarp, _cubic_weights, grid_nodes, mls_similarity


def _same(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()


def _vectors(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    out = np.concatenate([rng.standard_normal(shape) * s for s in (1e-6, 1.0, 1e3)], axis=0)
    out = out.astype(dtype)
    out[::5, ::3] = 0.0
    out[::7, ::2, 0] = -0.0
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lengths_are_numpys_norm(dtype):
    rng = np.random.default_rng(0)
    vectors = _vectors(rng, (40, 70, 2), dtype)
    _same(lengths(vectors), np.linalg.norm(vectors, axis=-1))
    _same(lengths(vectors[3:, 5:]), np.linalg.norm(vectors[3:, 5:], axis=-1))  # a view


def _with_weight_before(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reach = np.linalg.norm(field, axis=-1)
    weight = np.clip(reach / (4 * geo_field.MIN_OFFSET_PX), 0.0, 1.0)
    weight[reach < geo_field.MIN_OFFSET_PX] = 0.0
    field[weight == 0] = 0.0
    return np.ascontiguousarray(field, np.float32), weight.astype(np.float32)


def test_with_weight_is_as_before():
    rng = np.random.default_rng(1)
    field = (rng.standard_normal((60, 80, 2)) * 0.05).astype(np.float32)
    field[10:20, 10:30] = -0.0
    got, want = geo_field.with_weight(field.copy()), _with_weight_before(field.copy())
    for a, b in zip(got, want, strict=True):
        _same(a, b)


def _cubic_weights_before(n_pixels: int, grid: int, n_nodes: int) -> np.ndarray:
    positions = np.arange(n_pixels) / grid
    base = np.floor(positions).astype(np.int64)
    frac = positions - base
    mat = np.zeros((len(positions), n_nodes), dtype=np.float64)
    rows = np.arange(len(positions))
    for offset in (-1, 0, 1, 2):
        s = np.abs(frac - offset)
        w = np.where(s <= 1, 1.5 * s**3 - 2.5 * s**2 + 1,
                     np.where(s < 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, 0.0))
        idx = base + offset
        below, above = idx < 0, idx > n_nodes - 1
        inside = ~(below | above)
        np.add.at(mat, (rows[inside], idx[inside]), w[inside])
        if n_nodes >= 2:
            np.add.at(mat, (rows[below], np.zeros(below.sum(), np.int64)), 2 * w[below])
            np.add.at(mat, (rows[below], np.ones(below.sum(), np.int64)), -w[below])
            np.add.at(mat, (rows[above], np.full(above.sum(), n_nodes - 1)), 2 * w[above])
            np.add.at(mat, (rows[above], np.full(above.sum(), n_nodes - 2)), -w[above])
        else:
            np.add.at(mat, (rows[~inside], np.zeros((~inside).sum(), np.int64)), w[~inside])
    return mat


def test_cubic_weights_are_np_add_ats():
    for grid in (1, 2, 3, 4, 7):
        for n_pixels in [*range(1, 40), 257, 1001]:
            nodes = (n_pixels - 1) // grid + 2
            for n_nodes in {nodes, 1, 2, 3}:
                _same(_cubic_weights.__wrapped__(n_pixels, grid, n_nodes),
                      _cubic_weights_before(n_pixels, grid, n_nodes))


def test_grid_nodes_are_the_meshgrids():
    for box in (Box(0, 0, 1, 1), Box(3, 5, 400, 300), Box(10, 10, 11, 97)):
        for grid in (1, 3, 4, 8):
            nx, ny = (box.width - 1) // grid + 2, (box.height - 1) // grid + 2
            gx, gy = np.meshgrid(box.x0 + grid * np.arange(nx, dtype=np.float64),
                                 box.y0 + grid * np.arange(ny, dtype=np.float64))
            _same(grid_nodes(box, grid), np.stack([gx, gy], axis=-1))


def test_folded_is_the_determinant_or_steepness():
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:90, 0:120].astype(np.float32)
    field = np.zeros((90, 120, 2), np.float32)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 120), rng.uniform(0, 90), rng.uniform(4, 30)
        bump = np.exp(-(((xs - cx) / r) ** 2 + ((ys - cy) / r) ** 2)).astype(np.float32)
        field += bump[..., None] * rng.uniform(-1.5, 1.5, 2).astype(np.float32) * r
    steep = np.zeros(field.shape[:2], bool)
    for c in range(2):
        for axis in (0, 1):
            steep |= np.abs(np.gradient(field[..., c], axis=axis)) > geo_field.MAX_FIELD_GRADIENT
    want = (geo_field.jacobian_determinant(field) < geo_field.MIN_JACOBIAN_DET) | steep
    assert want.any() and not want.all()
    _same(geo_field._folded(field), want)
    _same(geo_field._steep(field), steep)


def test_change_sum_threshold_is_the_float_box_filters():
    """A 3×3 integer sum over CHANGE_SUM marks the pixels whose float 3×3 mean exceeds
    CHANGE_NOISE, borders (reflected) included, sums at the threshold included."""
    assert geo_motion.CHANGE_SUM == 9 * geo_motion.CHANGE_NOISE  # a whole number of levels
    rng = np.random.default_rng(4)
    level = int(geo_motion.CHANGE_NOISE)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        if trial % 3 == 0:
            luma = rng.integers(0, 256, (h, w))
        elif trial % 3 == 1:
            luma = rng.integers(0, 2 * level + 1, (h, w))  # sums around the threshold
        else:
            luma = np.full((h, w), level)
            luma[rng.random((h, w)) < 0.2] = rng.integers(0, 2 * level)
        luma = luma.astype(np.uint8)
        want = cv2.blur(luma.astype(np.float32), (3, 3)) > geo_motion.CHANGE_NOISE
        got = cv2.boxFilter(luma, cv2.CV_16U, (3, 3), normalize=False) > geo_motion.CHANGE_SUM
        _same(got, want)


def _face(shape: tuple[int, int]) -> FaceWindow:
    h, w = shape
    window = Box(w // 4, h // 5, 3 * w // 4, 4 * h // 5)
    yy, xx = np.mgrid[0 : window.height, 0 : window.width]
    region = ((xx - window.width / 2) / (window.width / 2.5)) ** 2 + (
        (yy - window.height / 2) / (window.height / 2.5)) ** 2 <= 1
    return FaceWindow(window, region, 16)


def _pair(rng: np.random.Generator, shape=(240, 320)) -> tuple[np.ndarray, np.ndarray]:
    before = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3)).astype(np.uint8), (0, 0), 2)
    after = before.copy()
    noise = rng.integers(-3, 4, after.shape)
    after = np.clip(after.astype(int) + noise, 0, 255).astype(np.uint8)
    after[20:60, 10:40] = np.roll(before[20:60, 10:40], 3, axis=1)  # an edit off the face
    after[150:153, 280:283] = 255  # a speck, below the area
    return before, after


def _changed_off_face_before(before, after, face):
    diff = cv2.absdiff(np.ascontiguousarray(before), np.ascontiguousarray(after))
    if cv2.countNonZero(diff.reshape(diff.shape[0], -1)) == 0:
        return None
    luma = cv2.absdiff(grey(before), grey(after))
    changed = cv2.blur(luma.astype(np.float32), (3, 3)) > geo_motion.CHANGE_NOISE
    changed[face.window.slices()] &= ~face.region
    if not changed.any():
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), 8)
    large = stats[:, cv2.CC_STAT_AREA] >= geo_motion.MIN_CHANGE_AREA
    large[0] = False
    if not large.any():
        return None
    return large[labels]


def test_changed_off_face_and_photo_likeness_are_as_before():
    rng = np.random.default_rng(5)
    before, after = _pair(rng)
    face = _face(before.shape[:2])
    got, want = geo_motion.changed_off_face(before, after, face), _changed_off_face_before(
        before, after, face)
    assert want is not None and want.any()
    _same(got, want)
    assert geo_motion.changed_off_face(before, before.copy(), face) is None

    height, width = before.shape[:2]
    scale = geo_motion.LIKENESS_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    want_inside = cv2.resize(face.mask((height, width)).astype(np.float32), size,
                             interpolation=cv2.INTER_AREA) > 0
    region = np.zeros((height, width), np.float32)
    region[face.window.slices()] = face.region
    _same(cv2.resize(region, size, interpolation=cv2.INTER_AREA) > 0, want_inside)


def _face_patch_before(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """:func:`face_patch` as it was: the crop taken from the whole image's grey levels."""
    from mirrorppr_cli.geometric.face_frame import FaceFrame

    frame = FaceFrame.from_points(points)
    us = np.arange(geo_face.PATCH_U[0], geo_face.PATCH_U[1] + 1e-9, geo_face.PATCH_STEP)
    vs = np.arange(geo_face.PATCH_V[0], geo_face.PATCH_V[1] + 1e-9, geo_face.PATCH_STEP)
    where = frame.to_image(np.stack(np.meshgrid(us, vs), axis=-1))
    whole = geo_face._grey_of(image)
    scale = min(1.0, geo_face.PATCH_UNIT_PX / frame.unit)
    lo = np.floor(where.reshape(-1, 2).min(axis=0)).astype(int) - 2
    hi = np.ceil(where.reshape(-1, 2).max(axis=0)).astype(int) + 3
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], whole.shape[1]), min(hi[1], whole.shape[0])
    crop = whole[y0:y1, x0:x1]
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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_face_patch_greys_only_its_crop(dtype):
    """The patch from the grey levels of its crop is the patch from the whole image's."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (300, 260, 3)).astype(np.uint8)
    if dtype == np.uint16:
        image = image.astype(np.uint16) * 257 + rng.integers(0, 257, image.shape).astype(
            np.uint16)
    for lo, hi in ((60, 200), (0, 120), (150, 299)):  # inside, and over two edges
        points = np.stack([rng.uniform(lo, hi, 478) * 260 / 300, rng.uniform(lo, hi, 478)],
                          axis=1)
        _same(geo_face.face_patch(image, points), _face_patch_before(image, points))


def _inverse_maps_before(nodes: np.ndarray, warps: list[LocalWarp]) -> list[np.ndarray]:
    from mirrorppr_cli.geometric.mls import mls_similarity_shared

    def keys_of(points):
        return np.ascontiguousarray(points, np.float64).view(np.dtype((np.void, 16))).ravel()

    still = [np.all(w.source == w.target, axis=1) for w in warps]
    keys = [keys_of(w.source) for w in warps]
    fixed_keys = [k[s] for k, s in zip(keys, still, strict=True)]
    if any(len(np.unique(k)) < len(k) for k in fixed_keys):
        return [mls_similarity(nodes, w.target, w.source) for w in warps]
    common = fixed_keys[0]
    for k in fixed_keys[1:]:
        common = np.intersect1d(common, k)
    shared = [s & np.isin(k, common) for k, s in zip(keys, still, strict=True)]
    fixed = warps[0].source[shared[0]]
    sets = [(w.target[~mine], w.source[~mine]) for w, mine in zip(warps, shared, strict=True)]
    return mls_similarity_shared(nodes, fixed.reshape(-1, 2), sets)


def test_inverse_maps_share_the_same_handles_as_before():
    """The handles found fixed in every warp (sets of row bytes) are those numpy's sorted set
    operations found: the same maps, bit for bit — repeated and signed-zero points too."""
    from mirrorppr_cli.geometric.fit import _inverse_maps_at

    rng = np.random.default_rng(7)
    fixed = rng.uniform(0, 200, (30, 2))
    fixed[0] = [-0.0, 5.0]
    fixed[1] = [0.0, 5.0]  # equal to fixed[0] as numbers, not as bytes
    moving = rng.uniform(50, 150, (6, 2))
    nodes = rng.uniform(0, 200, (9, 11, 2))
    for repeat in (False, True):
        extra = fixed[2:5] if repeat else np.empty((0, 2))
        sources = [np.concatenate([moving, fixed, extra]),
                   np.concatenate([moving[::-1], fixed[3:], extra[:1]]),
                   np.concatenate([fixed[::2], moving])]
        warps = [LocalWarp(src, src.copy(), [src], 5.0) for src in sources]
        for w, shift in zip(warps, (2.0, -3.0, 1.0), strict=True):
            w.target[np.isin(w.source[:, 0], moving[:, 0])] += shift
        for chosen in (warps[:2], warps):
            got, want = _inverse_maps_at(nodes, chosen), _inverse_maps_before(nodes, chosen)
            for a, b in zip(got, want, strict=True):
                _same(a, b)
