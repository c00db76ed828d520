"""explain: a measured edit read back as catalog operations; retouch --mode catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.explain import explain
from mirrorppr_cli.landmarks import find_faces
from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.transfer import estimate_edit
from mirrorppr_cli.warp import apply_local_warp

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
    # the mouth (lower middle of the face) changed, the rest of the frame did not
    assert changed.sum() > 300 and rows.min() > 120 and np.all(out[:100] == query[:100])


def test_nothing_edited_explains_nothing(astronaut_512, astronaut_512_points):
    image = np.asarray(astronaut_512)
    edit = estimate_edit(image, image.copy(), astronaut_512_points, astronaut_512_points)
    result = explain(edit, image.shape[:2])
    assert result.ops == [] and result.explained == 0.0
