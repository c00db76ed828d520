"""Work restricted to where it can change something (#19, speed) gives what the whole
computation gives.

Each speed-up of the retouch path works on a part of an image or a field (the pixels a warp
moves, the folds of a field, the box of a face or of a person) instead of the whole. Each test
here computes the result both ways — the restricted way the code now takes, and the whole
computation written out as it was before — and asks for the same values.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirrorppr_cli.geometric import body as B
from mirrorppr_cli.geometric import carry as geo_carry
from mirrorppr_cli.geometric import face as geo_face
from mirrorppr_cli.geometric import field as geo_field
from mirrorppr_cli.geometric.box import Box
from mirrorppr_cli.geometric.carry import carry_field
from mirrorppr_cli.geometric.mls import apply_local_warp, blend_into
from mirrorppr_cli.geometric.motion import estimate_edit
from mirrorppr_cli.metrics import artefacts as A
from mirrorppr_cli.metrics.pixel import changed_mask
from mirrorppr_cli.ops import OpRequest, plan_warp

# ---------------------------------------------------------------------------------------------
# Unfolding a field: each pass only where the folds are


def _unfolded_whole(field: np.ndarray, sigma: float) -> np.ndarray:
    """The unfolding passes over the whole field (the implementation before the passes were
    restricted to the folds' neighbourhood)."""
    for k in range(geo_field.UNFOLD_PASSES):
        folded = (geo_field.jacobian_determinant(field) < geo_field.MIN_JACOBIAN_DET) | geo_field._steep(field)
        if not folded.any():
            return field
        reach = int(np.ceil(2 * sigma * (k + 1))) | 1
        near = cv2.dilate(folded.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))).astype(np.float32)
        mix = np.clip(cv2.GaussianBlur(near, (0, 0), sigma) * 2.0, 0.0, 1.0)[..., None]
        blurred = cv2.GaussianBlur(field, (0, 0), 2 * sigma * (k + 1))
        field = field + mix * (blurred - field)
    return field * geo_field._fold_free_scale(field)


def _bumps(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """``(h, w, 2)`` float32: radial Gaussian bumps, strong enough to fold, zero far away."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w, 2), np.float32)
    for _ in range(count):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 50)
        amp = rng.uniform(-1.6, 1.6, size=2) * r
        bump = np.exp(-(((xs - cx) / r) ** 2 + ((ys - cy) / r) ** 2)).astype(np.float32)
        field += np.dstack([amp[0] * bump * (xs - cx) / r, amp[1] * bump * (ys - cy) / r])
    field[np.abs(field) < 1e-3] = 0.0
    return field


def test_unfolding_near_the_folds_equals_unfolding_the_whole_field():
    rng = np.random.default_rng(1)
    folding = 0
    for _ in range(24):
        field = _bumps(rng, (240, 320), int(rng.integers(1, 4)))
        sigma = float(rng.uniform(1.5, 4.0))
        folding += bool(geo_field._folded(field).any())
        whole = _unfolded_whole(field.copy(), sigma)
        np.testing.assert_array_equal(geo_field._unfolded(field.copy(), sigma), whole)
    assert folding >= 12  # most of these fields fold: the passes ran


def test_unfolding_leaves_the_field_alone_when_nothing_folds():
    field = _bumps(np.random.default_rng(2), (100, 120), 1) * 0.01
    assert not geo_field._folded(field).any()
    assert geo_field._unfolded(field, 2.0) is field
    zero = np.zeros((50, 60, 2), np.float32)
    assert geo_field._unfolded(zero, 2.0) is zero


# ---------------------------------------------------------------------------------------------
# Carrying a field: the correspondence where the field reaches, the rest where it moves


@pytest.fixture(scope="module")
def carried_edit(astronaut_1024, astronaut_1024_points):
    """A measured catalog edit of the astronaut at 1024² and a query: the same face rotated by
    8° and scaled by 0.85."""
    before, points = np.asarray(astronaut_1024), np.asarray(astronaut_1024_points)
    after = apply_local_warp(before, plan_warp(points, [OpRequest("eye_resize", 60),
                                                        OpRequest("mouth_resize", 40)]))
    from mirrorppr_cli.geometric.landmarks import find_faces

    edit = estimate_edit(before, after, points, find_faces(after)[0].points)
    query = cv2.warpAffine(before, cv2.getRotationMatrix2D((512, 512), 8, 0.85), (1024, 1024),
                           borderMode=cv2.BORDER_REFLECT)
    return edit, query, find_faces(query)[0].points


def _carry(edit, query, q_points, **kwargs):
    handles = edit.handles
    return carry_field(edit.flow, edit.box, edit.points[handles], q_points[handles], query,
                       correspondence_sigma=6.0, smooth_sigma=kwargs.pop("smooth_sigma", 3.0),
                       **kwargs)


@pytest.mark.parametrize("smooth_sigma", [3.0, 9.0])  # fine and coarse unfolding
def test_carrying_where_the_field_reaches_equals_carrying_over_the_whole_box(
        carried_edit, monkeypatch, smooth_sigma):
    edit, query, q_points = carried_edit
    calls = []
    real = geo_carry._correspondence
    monkeypatch.setattr(geo_carry, "_correspondence",
                        lambda *a, **k: calls.append(k.get("within")) or real(*a, **k))
    restricted = _carry(edit, query, q_points, smooth_sigma=smooth_sigma)
    assert len(calls) == 1 and calls[0] is not None  # one evaluation, a restricted one
    assert np.any(restricted != query)
    monkeypatch.setattr(geo_carry, "REACH_SIGMAS", 1e6)  # the reach covers the whole box
    np.testing.assert_array_equal(_carry(edit, query, q_points, smooth_sigma=smooth_sigma),
                                  restricted)


def test_a_field_reaching_the_edge_of_its_region_is_carried_over_the_whole_box(
        carried_edit, monkeypatch):
    """When the carried motion comes near the edge of the region where the correspondence was
    evaluated (here made too small), it is evaluated over the whole box: the same result."""
    edit, query, q_points = carried_edit
    whole = _carry(edit, query, q_points)
    calls = []
    real = geo_carry._correspondence
    monkeypatch.setattr(geo_carry, "_correspondence",
                        lambda *a, **k: calls.append(k.get("within")) or real(*a, **k))
    monkeypatch.setattr(geo_carry, "REACH_SIGMAS", -5.0)  # shrinks the region inside the motion
    np.testing.assert_array_equal(_carry(edit, query, q_points), whole)
    assert len(calls) == 2 and calls[0] is not None and calls[1] is None


def test_carried_offsets_reach_only_the_pixels_next_to_moving_nodes():
    """``_reached_box``: the pixels the cubic interpolation of node values can make non-zero;
    outside it the interpolated field is exactly zero."""
    from mirrorppr_cli.geometric.mls import interpolate_planes

    box = Box(0, 0, 97, 83)
    values = np.zeros((83 // 4 + 2, 97 // 4 + 2, 2))
    values[7:9, 10, 0] = 1.5
    values[8, 12, 1] = -0.5
    part = geo_carry._reached_box(values, 4, box)
    planes = interpolate_planes(box, 4, values)
    outside = np.ones((83, 97), bool)
    outside[part.slices()] = False
    assert np.all(planes[:, outside] == 0) and np.any(planes[:, ~outside] != 0)
    assert geo_carry._reached_box(np.zeros_like(values), 4, box).empty


# ---------------------------------------------------------------------------------------------
# The face region: dilated in its own box, row by row


def _face_region_whole(points: np.ndarray, unit: float, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 1)
    grow = int(round(geo_face.FACE_MARGIN * unit)) | 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))) > 0


def test_face_region_equals_the_dilation_of_the_whole_window(astronaut_512_points):
    rng = np.random.default_rng(3)
    cases = [(np.asarray(astronaut_512_points), 70.0, (512, 512))]
    for _ in range(60):  # polygons partly outside the image, units from 1 to 200 px
        shape = (int(rng.integers(20, 300)), int(rng.integers(20, 300)))
        cases.append((rng.uniform(-40, 340, size=(int(rng.integers(3, 30)), 2)),
                      float(rng.uniform(1, 200)), shape))
    for points, unit, shape in cases:
        np.testing.assert_array_equal(geo_face._face_region(points, unit, shape),
                                      _face_region_whole(points, unit, shape))


def test_row_run_dilation_equals_opencv_or_declines():
    rng = np.random.default_rng(4)
    done = 0
    for k in range(90):
        mask = np.zeros((int(rng.integers(5, 150)), int(rng.integers(5, 150))), np.uint8)
        corners = rng.uniform(-30, 180, size=(int(rng.integers(3, 9)), 2)).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(corners), 1)
        side = int(rng.integers(1, 40)) | 1
        shape = (cv2.MORPH_ELLIPSE, cv2.MORPH_RECT, cv2.MORPH_CROSS)[k % 3]
        kernel = cv2.getStructuringElement(shape, (side, side))
        grown = geo_face._dilated_runs(mask, kernel)
        if grown is not None:
            done += 1
            np.testing.assert_array_equal(grown, cv2.dilate(mask, kernel) > 0)
    assert done >= 70
    two_runs = np.zeros((9, 20), np.uint8)
    two_runs[4, 2:5] = two_runs[4, 12:15] = 1  # one row, two runs: not for this method
    assert geo_face._dilated_runs(two_runs, np.ones((3, 3), np.uint8)) is None


# ---------------------------------------------------------------------------------------------
# The person mask: its main parts, worked in their box


def _main_components_whole(prob, points, vis):
    binary = (prob > B.MASK_THRESHOLD).astype(np.uint8)
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    if count <= 2:
        return prob
    height, width = binary.shape
    keep = set()
    for i in range(11, B.N_POSE_POINTS):
        if vis[i] < B.MIN_VISIBILITY:
            continue
        x, y = np.rint(points[i]).astype(int)
        if 0 <= x < width and 0 <= y < height and labels[y, x] > 0:
            keep.add(int(labels[y, x]))
    if not keep:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = {int(np.argmax(sizes))}
    kept = np.isin(labels, sorted(keep)).astype(np.uint8)
    near = cv2.dilate(kept, np.ones((5, 5), np.uint8)) > 0
    near &= ~((labels > 0) & (kept == 0))
    return np.where(near, prob, 0.0).astype(np.float32)


def test_main_components_equal_the_whole_image_computation():
    rng = np.random.default_rng(5)
    for k in range(40):
        shape = (int(rng.integers(30, 250)), int(rng.integers(30, 250)))
        noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0),
                                 float(rng.uniform(1, 6)))
        prob = np.clip((noise - noise.mean()) * 8 + 0.4, 0, 1).astype(np.float32)
        points = rng.uniform(-10, max(shape) + 10, size=(33, 2))
        vis = np.zeros(33) if k % 5 == 0 else rng.random(33)  # no landmark: the largest part
        expected = _main_components_whole(prob.copy(), points, vis)
        np.testing.assert_array_equal(B._main_components(prob.copy(), points, vis), expected)


# ---------------------------------------------------------------------------------------------
# Blending: the mix only in the feather


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_blend_mixes_only_the_feather_and_copies_the_rest(dtype, channels):
    rng = np.random.default_rng(6)
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top, size=(60, 70, channels), endpoint=True).astype(dtype)
    warped = rng.integers(0, top, size=(40, 50, channels), endpoint=True).astype(dtype)
    mask = rng.choice([0.0, 1.0, 0.5, 1e-4, 0.9999], size=(40, 50)).astype(np.float32)
    some = rng.random((40, 50)) < 0.3
    mask[some] = rng.random(int(some.sum())).astype(np.float32)
    box = Box(5, 7, 55, 47)
    expected = pixels.copy()
    region = expected[box.slices()]
    mixed = warped.astype(np.float32)
    mixed -= region.astype(np.float32)
    mixed *= mask[..., None]
    mixed += region.astype(np.float32)
    mixed = np.clip(np.rint(mixed), 0, top)
    np.copyto(region, mixed.astype(dtype), where=(mask > 0)[..., None])
    np.testing.assert_array_equal(blend_into(pixels, warped, mask, box), expected)


# ---------------------------------------------------------------------------------------------
# The artefact check: grey levels only in the changed box; responses as saturating bytes


def test_artefact_check_region_equals_the_whole_frame_comparison(astronaut_512):
    query = np.asarray(astronaut_512)
    output = query.copy()
    output[300:303, 200:203] = 250  # a planted speckle
    output[100:110, 400:405, 2] ^= 1  # a change of blue only: the grey levels may not change
    box, q_grey, o_grey = A._grey_region(query, output, A.MARGIN_PX)
    whole_q, whole_o = A.to_grey8(query), A.to_grey8(output)
    assert box == A._changed_box(whole_q, whole_o, A.MARGIN_PX)
    np.testing.assert_array_equal(q_grey, whole_q[box])
    np.testing.assert_array_equal(o_grey, whole_o[box])
    assert A._grey_region(query, query.copy(), A.MARGIN_PX) is None
    assert A.new_blobs(query, output).count == 1


def test_impulse_responses_as_bytes_equal_the_float_responses(astronaut_512):
    grey = A.to_grey8(np.asarray(astronaut_512))
    for k in A.MEDIAN_SIZES:
        signed = grey.astype(np.float32) - cv2.medianBlur(grey, k).astype(np.float32)
        bright, dark = A._responses(grey, k)
        np.testing.assert_array_equal(bright.astype(np.float32), np.maximum(signed, 0.0))
        np.testing.assert_array_equal(dark.astype(np.float32), np.maximum(-signed, 0.0))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_changed_mask_equals_any_channel_differing(channels):
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, size=(40, 50, channels), dtype=np.uint8)
    b = a.copy()
    hit = rng.random((40, 50)) < 0.1
    b[hit, int(rng.integers(channels))] ^= 1
    np.testing.assert_array_equal(changed_mask(a, b), np.any(a != b, axis=-1))


# ---------------------------------------------------------------------------------------------
# Catalog fields of the fit: only the nodes a kept lattice pixel reads


def test_fit_fields_from_the_nodes_that_matter_equal_all_nodes(astronaut_512_points,
                                                                 monkeypatch):
    from mirrorppr_cli.geometric import fit as E

    points = np.asarray(astronaut_512_points)
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 20
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 20
    box = Box(int(x0), int(y0), int(x1), int(y1))
    variants = [[OpRequest("eye_resize", 50.0)], [OpRequest("eye_resize", -50.0)]]
    restricted = E._fields(points, variants, (512, 512), box, E.FIT_STEP)
    monkeypatch.setattr(E, "nodes_reaching", lambda needed, grid, shape: np.ones(shape, bool))
    every = E._fields(points, variants, (512, 512), box, E.FIT_STEP)
    for a, b in zip(restricted, every, strict=True):
        assert np.any(a != 0)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Body operations: the weight in the seeds' box, the map only where the weight is not zero


def _weight_whole(body, source, shift, reach, margin):
    """``W_person · W_region · W_face`` over the whole image, then its box (as before)."""
    from mirrorppr_cli.ops import body_plan as C

    height, width = body.shape
    unit = body.frame.unit
    person = 1.0 - C.smoothstep(body.outside_distance, reach, reach + margin)
    size = np.linalg.norm(shift, axis=1)
    significant = size >= C.REGION_SEED * size.max()
    seeds = np.concatenate([source[significant], (source + shift)[significant]])
    canvas = np.full((height, width), 255, np.uint8)
    idx = np.rint(seeds).astype(int)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < width) & (idx[:, 1] >= 0) & (idx[:, 1] < height)
    canvas[idx[ok, 1], idx[ok, 0]] = 0
    if not ok.any():
        return np.zeros((0, 0), np.float32), Box(0, 0, 0, 0)
    near = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    region = 1.0 - C.smoothstep(near, C.REGION_INNER * unit, C.REGION_OUTER * unit)
    weight = (person * region * C._face_guard(body)).astype(np.float32)
    weight[weight < 1e-4] = 0.0
    ys, xs = np.nonzero(weight > 0)
    if len(xs) == 0:
        return np.zeros((0, 0), np.float32), Box(0, 0, 0, 0)
    box = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return np.ascontiguousarray(weight[box.slices()]), box


def test_body_plans_from_the_weighted_part_equal_the_whole_image_plans(monkeypatch):
    from test_body_ops import figure_scene

    from mirrorppr_cli.ops import body_plan as C

    _, mask, points, vis = figure_scene()
    body = B.Body.from_landmarks(points, vis, mask)
    requests = [[OpRequest(name, s)] for name in C.BODY_CATALOG for s in (60.0, -100.0)]
    requests.append([OpRequest(name, 40.0) for name in C.BODY_CATALOG])  # composed
    fast = [C.plan_body_warp(body, r, strict=False) for r in requests]
    monkeypatch.setattr(C, "_weight", _weight_whole)
    real = C.inverse_map_fast
    monkeypatch.setattr(C, "inverse_map_fast",
                        lambda *a, needed=None, **k: real(*a, **k))  # every node
    whole = [C.plan_body_warp(body, r, strict=False) for r in requests]
    assert sum(not w.is_identity for w in whole) >= 8
    for a, b in zip(fast, whole, strict=True):
        assert a.box == b.box
        np.testing.assert_array_equal(a.weight, b.weight)
        # the same up to the MLS sums' rounding over fewer nodes
        np.testing.assert_allclose(a.sample_map, b.sample_map, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_changed_mask_by_bands_equals_the_whole_comparison(dtype):
    """Tall images are compared band by band (64 rows), only differing bands per channel:
    changes on band edges, in the last short band, and none at all are all found."""
    from mirrorppr_cli.metrics.pixel import CHANGED_BAND_ROWS

    rng = np.random.default_rng(11)
    a = rng.integers(0, 200, size=(5 * CHANGED_BAND_ROWS - 21, 37, 3)).astype(dtype)
    assert not changed_mask(a, a.copy()).any()
    b = a.copy()
    for row in (0, CHANGED_BAND_ROWS - 1, CHANGED_BAND_ROWS, 3 * CHANGED_BAND_ROWS + 5,
                a.shape[0] - 1):
        b[row, int(rng.integers(37)), int(rng.integers(3))] += 1
    got = changed_mask(a, b)
    np.testing.assert_array_equal(got, np.any(a != b, axis=-1))
    assert got.sum() == 5
