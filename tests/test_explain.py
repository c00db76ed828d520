"""explain: a measured edit read back as catalog operations; retouch --mode catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.geometric.fit import explain
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.geometric.motion import estimate_edit
from mirrorppr_cli.ops import OpRequest, plan_warp

runner = CliRunner()
CASES = [
    [OpRequest("eye_resize", 42), OpRequest("nose_alar", -30)],
    [OpRequest("mouth_position", 60)],
    [OpRequest("lip_thickness", -50), OpRequest("eye_distance", 40), OpRequest("nose_length", 70)],
    # the professional catalog's other operations, each beside others
    [OpRequest("face_shape", -60), OpRequest("eye_height", 50)],
    [OpRequest("eyebrow_height", 60), OpRequest("mouth_width", -50), OpRequest("nose_tip", -60)],
    [OpRequest("jawline", 60), OpRequest("chin_length", -50), OpRequest("temples", 60)],
    [OpRequest("eye_width", 60), OpRequest("nose_resize", -60), OpRequest("mouth_corners", 60)],
    [OpRequest("eyebrow_distance", -60), OpRequest("eyebrow_thickness", 60),
     OpRequest("eye_position", 60)],
]


def _explained(image, points, ops):
    after = apply_local_warp(image, plan_warp(points, ops))
    edit = estimate_edit(image, after, points, find_faces(after)[0].points)
    return explain(edit, image.shape[:2])


@pytest.mark.parametrize("ops", CASES, ids=lambda ops: "+".join(o.name for o in ops))
def test_explain_recovers_names_signs_and_rough_strengths(astronaut_1024, astronaut_1024_points, ops):
    result = _explained(astronaut_1024, astronaut_1024_points, ops)
    found = {r.name: r.strength for r in result.ops}
    for op in ops:
        assert op.name in found, result.describe()
        assert np.sign(found[op.name]) == np.sign(op.strength)
        # measured: strengths read back at 80–116 % of the applied ones
        assert 0.5 * abs(op.strength) <= abs(found[op.name]) <= 1.2 * abs(op.strength)
    # operations that were not applied stay weak (measured: none named); the catalog explains
    # most of the motion
    assert all(abs(s) < 15 for n, s in found.items() if n not in {o.name for o in ops})
    assert result.explained > 0.85  # measured 0.91–1.00


def test_explain_cli_and_catalog_mode(astronaut_512, astronaut_512_points, tmp_path):
    after = apply_local_warp(astronaut_512, plan_warp(astronaut_512_points,
                                                      [OpRequest("mouth_resize", 70)]))
    Image.fromarray(np.asarray(astronaut_512)).save(tmp_path / "before.png")
    Image.fromarray(after).save(tmp_path / "after.png")
    query = np.fliplr(np.asarray(astronaut_512)).copy()
    Image.fromarray(query).save(tmp_path / "q.png")
    result = runner.invoke(app, ["explain", "--ex", str(tmp_path / "before.png"),
                                 str(tmp_path / "after.png"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ops"][0]["name"] == "mouth_resize" and report["ops"][0]["strength"] > 35
    result = runner.invoke(app, ["retouch", "--ex", str(tmp_path / "before.png"),
                                 str(tmp_path / "after.png"), "--query", str(tmp_path / "q.png"),
                                 "-o", str(tmp_path / "out.png"), "--mode", "catalog", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["mode"] == "catalog" and summary["catalog"]["ops"][0]["name"] == "mouth_resize"
    out = np.asarray(Image.open(tmp_path / "out.png"))
    changed = np.any(out != query, axis=-1)
    rows, cols = np.nonzero(changed)
    # the mouth (lower middle of the face) changed, the rest of the frame did not (the
    # feather moves pixels by a fraction of the warp's offset: the change reaches row 120;
    # 121 when the feather mixed colours, which rounded the faintest mixes away)
    assert changed.sum() > 300 and rows.min() > 110 and np.all(out[:100] == query[:100])


def test_nothing_edited_explains_nothing(astronaut_512, astronaut_512_points):
    image = np.asarray(astronaut_512)
    edit = estimate_edit(image, image.copy(), astronaut_512_points, astronaut_512_points)
    result = explain(edit, image.shape[:2])
    assert result.ops == [] and result.explained == 0.0


# --- the fit's resolution (issue #5 speed): fit scale, lattice evaluation ------------------------


def test_fit_scale_resamples_a_linear_field_exactly(astronaut_1024_points):
    """_at_fit_scale: pixel centre → pixel centre, offsets × s, no half-pixel shift (a linear
    field must come out as the same linear field in fit pixels)."""
    from mirrorppr_cli.geometric.box import Box
    from mirrorppr_cli.geometric.face_frame import FaceFrame
    from mirrorppr_cli.geometric.fit import FIT_UNIT_PX, _at_fit_scale
    from mirrorppr_cli.geometric.motion import Edit

    points = (astronaut_1024_points + 0.5) * 3 - 0.5  # the astronaut at 3072²
    side = 3072
    assert FaceFrame.from_points(points).unit > FIT_UNIT_PX  # it does resample
    box = Box(900, 450, 1800, 1200)
    yy, xx = np.mgrid[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32)
    flow = np.dstack([0.01 * xx + 1, -0.02 * yy + 3]).astype(np.float32)
    small, shape = _at_fit_scale(Edit(flow, np.ones(flow.shape[:2], np.float32), box, points,
                                      5.0), (side, side))
    s = np.array([shape[1] / side, shape[0] / side])
    assert FaceFrame.from_points(small.points).unit == pytest.approx(FIT_UNIT_PX, rel=0.01)
    v, u = np.mgrid[small.box.y0 : small.box.y1, small.box.x0 : small.box.x1]
    x, y = (u + 0.5) / s[0] - 0.5, (v + 0.5) / s[1] - 0.5
    expected = np.dstack([(0.01 * x + 1) * s[0], (-0.02 * y + 3) * s[1]])
    inner = (slice(4, -4), slice(4, -4))  # the box's edge blends with the zeros around it
    assert np.abs(small.flow - expected)[inner].max() < 1e-3  # measured 1.6e-4


def test_explain_does_not_depend_on_the_image_resolution(astronaut_1024, astronaut_1024_points):
    """The same edit on the same photo at 1024² and 2048² reads back at the same strengths:
    the fit runs at a resolution set by the face (at 2048² the face unit is 174 px, above
    FIT_UNIT_PX), not by the file."""
    import cv2

    ops = [OpRequest("eye_resize", 50), OpRequest("mouth_width", -40)]
    small = _explained(astronaut_1024, astronaut_1024_points, ops)
    big_image = cv2.resize(np.asarray(astronaut_1024), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    big = _explained(big_image, find_faces(big_image)[0].points, ops)
    a = {r.name: r.strength for r in small.ops}
    b = {r.name: r.strength for r in big.ops}
    for op in ops:
        assert abs(a[op.name] - b[op.name]) <= 0.1 * abs(op.strength), (a, b)


def test_field_on_the_fit_lattice_equals_the_full_field_subsampled(astronaut_1024_points):
    from mirrorppr_cli.geometric.box import Box
    from mirrorppr_cli.geometric.fit import FIT_STEP, _field

    box = Box(333, 160, 571, 371)  # odd offsets: the lattice does not start on a node
    for ops in ([OpRequest("eye_resize", 50)], [OpRequest("jawline", -60),
                                                OpRequest("nose_alar", 40)]):
        full = _field(astronaut_1024_points, ops, (1024, 1024), box)
        cache: dict = {}
        lattice = _field(astronaut_1024_points, ops, (1024, 1024), box, FIT_STEP, cache)
        again = _field(astronaut_1024_points, ops, (1024, 1024), box, FIT_STEP, cache)
        assert np.abs(full)[::FIT_STEP, ::FIT_STEP].max() > 0.5
        np.testing.assert_allclose(lattice, full[::FIT_STEP, ::FIT_STEP], atol=1e-9)
        np.testing.assert_array_equal(again, lattice)  # cached parts give the same field


def test_fields_of_an_operation_at_both_signs_equal_its_fields_alone(astronaut_512_points):
    """The fit evaluates an operation's + and − fields together (shared nodes, fixed handles
    summed once): the same fields as one at a time; lists that act with other operations are
    refused."""
    from mirrorppr_cli.geometric.box import Box
    from mirrorppr_cli.geometric.fit import FIT_STEP, _field, _fields

    x0, y0 = np.floor(astronaut_512_points.min(axis=0)).astype(int) - 20
    x1, y1 = np.ceil(astronaut_512_points.max(axis=0)).astype(int) + 20
    box = Box(int(x0), int(y0), int(x1), int(y1))
    for name in ("eye_resize", "nose_bridge", "lip_thickness", "jawline", "eyebrow_height"):
        variants = [[OpRequest(name, 50.0)], [OpRequest(name, -50.0)], [OpRequest(name, 0.0)]]
        together = _fields(astronaut_512_points, variants, (512, 512), box, FIT_STEP, {})
        for requests, field in zip(variants, together, strict=True):
            alone = _field(astronaut_512_points, requests, (512, 512), box, FIT_STEP)
            np.testing.assert_allclose(field, alone, atol=1e-9)
        assert np.abs(together[0]).max() > 0.5 and not together[2].any()
    with pytest.raises(ValueError):
        _fields(astronaut_512_points, [[OpRequest("eye_resize", 50.0)],
                                       [OpRequest("nose_alar", 50.0)]], (512, 512), box, 3, {})


def test_inverse_maps_share_fixed_handles_even_when_repeated():
    """Warps whose fixed handles repeat (a point fixed twice) or differ: each inverse map is
    still the MLS of its own whole handle set."""
    from mirrorppr_cli.geometric.fit import _inverse_maps_at
    from mirrorppr_cli.geometric.mls import LocalWarp, mls_similarity

    rng = np.random.default_rng(2)
    fixed = rng.uniform(0, 200, (20, 2))
    moving = rng.uniform(50, 150, (6, 2))
    nodes = rng.uniform(0, 200, (9, 11, 2))
    for repeat in (False, True):
        extra = fixed[:3] if repeat else np.empty((0, 2))
        first = np.concatenate([moving, fixed, extra])  # sources
        second = np.concatenate([moving, fixed[2:], extra[:1]])
        warps = [LocalWarp(src, src.copy(), [src], 5.0) for src in (first, second)]
        for w, shift in zip(warps, (2.0, -3.0), strict=True):
            w.target[:6] += shift  # the moving handles move
        maps = _inverse_maps_at(nodes, warps)
        for w, got in zip(warps, maps, strict=True):
            np.testing.assert_allclose(got, mls_similarity(nodes, w.target, w.source), atol=1e-9)
