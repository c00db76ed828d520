"""Carrying part of an edit (`retouch --only`, `--ops`) and `apply --ops-file` (explain's JSON).

Exemplar: the astronaut with its eyes enlarged and its shoulders narrowed (catalog face and
body operations); query: the astronaut mirrored and scaled 0.8×.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import InputError, UsageError
from mirrorppr_cli.geometric.apply import apply_exemplar
from mirrorppr_cli.geometric.body import detect_body
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.measure import measure_exemplar
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.ops.body_plan import apply_body_ops
from mirrorppr_cli.selection import parse_op_names, read_ops_file, select_parts

runner = CliRunner()


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(np.asarray(a) != np.asarray(b), axis=-1)


@pytest.fixture(scope="module")
def pair(astronaut_512, astronaut_512_points):
    before = np.ascontiguousarray(astronaut_512)
    after = apply_local_warp(before, plan_warp(astronaut_512_points,
                                               [OpRequest("eye_resize", 60)]))
    after = apply_body_ops(after, detect_body(before), [OpRequest("shoulder_width", -60)],
                           strict=False)
    return before, after


@pytest.fixture(scope="module")
def query(astronaut_512):
    q = cv2.resize(np.ascontiguousarray(np.fliplr(astronaut_512)), None, fx=0.8, fy=0.8,
                   interpolation=cv2.INTER_AREA)
    return q, find_faces(q)[0].points


@pytest.fixture(scope="module")
def measured(pair):
    return {mode: measure_exemplar(*pair, mode=mode) for mode in ("catalog", "hybrid")}


def _face_box(points: np.ndarray, shape, grow: float = 0.3) -> np.ndarray:
    """Mask of the face's landmark box grown by ``grow`` of its size."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    gx, gy = grow * (x1 - x0), grow * (y1 - y0)
    mask = np.zeros(shape[:2], bool)
    mask[max(int(y0 - gy), 0):int(y1 + gy), max(int(x0 - gx), 0):int(x1 + gx)] = True
    return mask


@pytest.mark.parametrize("mode", ["catalog", "hybrid"])
def test_only_face_and_only_body_split_the_edit(measured, query, mode):
    """--only face moves nothing off the face; --only body nothing on it; both did move."""
    q, points = query
    whole = apply_exemplar(measured[mode], q, points)
    face_part = apply_exemplar(select_parts(measured[mode], only="face")[0], q, points)
    body_part = apply_exemplar(select_parts(measured[mode], only="body")[0], q, points)
    face = _face_box(points, q.shape)
    assert _changed(face_part, q)[face].sum() > 100 and not _changed(face_part, q)[~face].any()
    assert _changed(body_part, q)[~face].sum() > 100
    eyes = _face_box(points[[33, 133, 362, 263]], q.shape, grow=0.5)
    assert not _changed(body_part, q)[eyes].any()
    assert _changed(whole, q).sum() >= max(_changed(face_part, q).sum(),
                                           _changed(body_part, q).sum())


def test_ops_keeps_only_the_named_operations(measured, query):
    q, points = query
    exemplar, notes = select_parts(measured["hybrid"], ops=("shoulder_width", "nose_alar"))
    assert [r.name for r in exemplar.explanation.ops] == [] and exemplar.residual is None
    assert [r.name for r in exemplar.body.ops] == ["shoulder_width"]
    assert any("nose_alar not in this exemplar's edit" in n for n in notes)
    out = apply_exemplar(exemplar, q, points)
    eyes = _face_box(points[[33, 133, 362, 263]], q.shape, grow=0.5)
    assert not _changed(out, q)[eyes].any()
    assert _changed(out, q).sum() > 100


def test_ops_refuses_flow_mode_and_unknown_names(pair):
    flow = measure_exemplar(*pair, mode="flow")
    with pytest.raises(UsageError, match="--mode hybrid"):
        select_parts(flow, ops=("eye_resize",))
    with pytest.raises(UsageError, match="unknown operation eye_resise"):
        parse_op_names("eye_resize, eye_resise")
    assert parse_op_names("eye_resize, shoulder_width,eye_resize") == ("eye_resize",
                                                                       "shoulder_width")
    with pytest.raises(UsageError, match="face or body"):
        select_parts(flow, only="legs")


def test_explain_json_feeds_apply(pair, query, tmp_path):
    """`explain --json > ops.json; apply --ops-file ops.json` = `apply --op …` with the same
    operations (face and body)."""
    before, after = pair
    paths = {}
    for name, pixels in (("before", before), ("after", after), ("query", query[0])):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    explained = runner.invoke(app, ["explain", "--ex", str(paths["before"]),
                                    str(paths["after"]), "--json"])
    assert explained.exit_code == 0, explained.output
    ops_file = tmp_path / "ops.json"
    ops_file.write_text(explained.stdout)
    data = json.loads(explained.stdout)
    named = [*data["ops"], *data["body"]["ops"]]
    assert {"eye_resize", "shoulder_width"} <= {e["name"] for e in named}
    from_file = runner.invoke(app, ["apply", str(paths["query"]), "--ops-file", str(ops_file),
                                    "-o", str(tmp_path / "a.png")])
    assert from_file.exit_code == 0, from_file.output
    by_hand = runner.invoke(app, ["apply", str(paths["query"]), "-o", str(tmp_path / "b.png"),
                                  *[f"--op={e['name']}={e['strength']:.4f}" for e in named]])
    assert by_hand.exit_code == 0, by_hand.output
    a = np.asarray(Image.open(tmp_path / "a.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b.png")))
    assert _changed(a, query[0]).sum() > 100


@pytest.mark.parametrize("text, message", [
    ("not json", "not a JSON file"),
    ('{"ops": [{"name": "eye_resize"}]}', "expected `mirrorppr explain --json`"),
    ('{"ops": []}', "names no operation"),
    ('[{"name": "eye_resize", "strength": 400}]', "between -100 and 100"),
    ('[{"name": "eyes_big", "strength": 40}]', "eyes_big"),
])
def test_bad_ops_files_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "ops.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_ops_file(path)


def test_only_and_ops_on_the_command_line(tmp_path, pair, query):
    before, after = pair
    paths = {}
    for name, pixels in (("before", before), ("after", after), ("query", query[0])):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    ex = ["--ex", str(paths["before"]), str(paths["after"]), "--query", str(paths["query"])]
    result = runner.invoke(app, ["retouch", *ex, "-o", str(tmp_path / "face.png"), "--only",
                                 "face", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert "body" not in summary
    out = np.asarray(Image.open(tmp_path / "face.png"))
    assert not _changed(out, query[0])[~_face_box(query[1], out.shape)].any()
    result = runner.invoke(app, ["retouch", *ex, "-o", str(tmp_path / "eyes.png"), "--ops",
                                 "eye_resize", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert [o["name"] for o in summary["catalog"]["ops"]] == ["eye_resize"]
    bad = runner.invoke(app, ["retouch", *ex, "-o", str(tmp_path / "x.png"), "--only", "legs"])
    assert bad.exit_code == 2 and "face or body" in bad.output
