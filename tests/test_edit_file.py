"""An edit saved with --save-edit and applied again gives the same pixels, bit for bit; a file
that is not such an edit is refused (exit 3) saying what is wrong."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from mirrorppr_cli.edit_file import load_edit, save_edit
from mirrorppr_cli.errors import InputError, OutputError
from mirrorppr_cli.geometric.apply import apply_exemplar
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.measure import measure_exemplar
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp


@pytest.fixture(scope="module")
def saved(astronaut_512, astronaut_512_points, tmp_path_factory):
    before = np.asarray(astronaut_512)
    after = apply_local_warp(before, plan_warp(astronaut_512_points,
                                               [OpRequest("eye_resize", 50),
                                                OpRequest("nose_alar", -40)]))
    exemplar = measure_exemplar(before, after, mode="hybrid")
    path = save_edit(exemplar, "hybrid", tmp_path_factory.mktemp("edit") / "edit.json")
    return exemplar, path


@pytest.fixture(scope="module")
def query(astronaut_512):
    q = np.ascontiguousarray(np.fliplr(np.asarray(astronaut_512))[40:, 20:])
    return q, find_faces(q)[0].points


def test_saved_edit_reapplies_bit_for_bit(saved, query):
    exemplar, path = saved
    loaded, mode = load_edit(path)
    q, points = query
    assert mode == "hybrid" and loaded.shape == exemplar.shape
    assert loaded.explanation.ops == exemplar.explanation.ops
    original = apply_exemplar(exemplar, q, points, 0.8)
    again = apply_exemplar(loaded, q, points, 0.8)
    assert np.any(original != q) and np.array_equal(original, again)


def test_body_edits_survive_the_round_trip(astronaut_512, tmp_path):
    """The body residual (flow, pose points, face mesh) comes back exactly."""
    from test_body_transfer import _lift_shoulder

    from mirrorppr_cli.geometric.body import detect_body

    before = np.asarray(astronaut_512)
    exemplar = measure_exemplar(before, _lift_shoulder(before, detect_body(before), 12))
    assert exemplar.body_residual is not None
    loaded, _ = load_edit(save_edit(exemplar, "hybrid", tmp_path / "body.json"))
    for name in ("flow", "points", "visibility", "face_points"):
        assert np.array_equal(getattr(loaded.body_residual, name),
                              getattr(exemplar.body_residual, name))
    assert loaded.body_residual.box == exemplar.body_residual.box
    assert loaded.notes == exemplar.notes and loaded.body.ops == exemplar.body.ops


def test_an_existing_file_is_not_overwritten_without_force(saved, tmp_path):
    exemplar, path = saved
    target = tmp_path / "e.json"
    target.write_text("mine")
    with pytest.raises(OutputError, match="--force"):
        save_edit(exemplar, "hybrid", target)
    assert target.read_text() == "mine"
    save_edit(exemplar, "hybrid", target, force=True)
    assert load_edit(target)[1] == "hybrid"


def _packed(values: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(values).tobytes())).decode()


def _mutations(value: dict):
    """(label, mutate(dict) -> dict or bytes, expected message part)."""
    def set_path(keys, new):
        def mutate(v):
            node = v
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = new
            return v
        return mutate

    flow = value["edit"]["flow"]
    h, w, _ = flow["shape"]
    yield "not json", lambda v: b"\x89PNG not json", "not JSON"
    yield "a list", lambda v: [1, 2, 3], "format"
    yield "foreign format", set_path(["format"], "photoshop"), "format"
    yield "future version", set_path(["version"], 99), "version 99"
    yield "older version", set_path(["version"], 1), "version 1"
    yield "unknown mode", set_path(["mode"], "magic"), "mode"
    yield "shape of strings", set_path(["shape"], ["a", "b"]), "shape"
    yield "box outside", set_path(["edit", "box"], [0, 0, 10**6, 10**6]), "not inside"
    yield "flow shape", set_path(["edit", "flow", "shape"], [h, w, 3]), "expected"
    yield "huge array", set_path(["edit", "flow", "shape"], [10**5, 10**5, 2]), "expected"
    yield "bad dtype", set_path(["edit", "flow", "dtype"], "object"), "dtype"
    yield "not base64", set_path(["edit", "flow", "zlib_base64"], "%%%"), "base64"
    yield "short data", set_path(["edit", "flow", "zlib_base64"],
                                 _packed(np.zeros(5, np.float32))), "expected"
    yield "inflation bomb", set_path(["edit", "flow", "zlib_base64"],
                                     _packed(np.zeros(h * w * 2 * 50, np.float32))), "expected"
    nan = np.zeros((h, w, 2), np.float32)
    nan[0, 0, 0] = np.nan
    yield "not finite", set_path(["edit", "flow", "zlib_base64"], _packed(nan)), "finite"
    yield "unknown op", set_path(["explanation", "ops"],
                                 [{"name": "rm -rf", "strength": 10}]), "unknown operation"
    yield "strength", set_path(["explanation", "ops"],
                               [{"name": "eye_resize", "strength": 1e9}]), "strength"
    yield "nan number", set_path(["edit", "max_motion_px"], "NaN"), "number"
    yield "deep nesting", lambda v: ("[" * 100000 + "]" * 100000).encode(), ""


@pytest.mark.parametrize("case", range(18))
def test_malformed_edit_files_are_refused_saying_why(saved, tmp_path, case):
    _, path = saved
    value = json.loads(Path(path).read_text())
    label, mutate, message = list(_mutations(value))[case]
    bad = mutate(value)
    target = tmp_path / f"{case}.json"
    target.write_bytes(bad if isinstance(bad, bytes) else json.dumps(bad).encode())
    with pytest.raises(InputError) as info:
        load_edit(target)
    text = str(info.value)
    assert str(target) in text and "\n" not in text and message in text, (label, text)


def test_not_a_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such edit file"):
        load_edit(tmp_path)
    with pytest.raises(InputError, match="no such edit file"):
        load_edit(tmp_path / "missing.json")


def test_cli_measure_once_save_then_apply_the_saved_edit(astronaut_512, astronaut_512_points,
                                                         tmp_path):
    """`retouch --ex B A --save-edit e.json` (no query), then `retouch --edit e.json --query Q`
    writes the same bytes as measuring and applying in one run; --export writes the map."""
    from PIL import Image
    from typer.testing import CliRunner

    from mirrorppr_cli.cli import app

    runner = CliRunner()
    before = np.asarray(astronaut_512)
    after = apply_local_warp(before, plan_warp(astronaut_512_points,
                                               [OpRequest("nose_length", 60)]))
    Image.fromarray(before).save(tmp_path / "b.png")
    Image.fromarray(after).save(tmp_path / "a.png")
    Image.fromarray(np.ascontiguousarray(np.fliplr(before))).save(tmp_path / "q.png")
    ex = ["--ex", str(tmp_path / "b.png"), str(tmp_path / "a.png")]
    saved = runner.invoke(app, ["retouch", *ex, "--save-edit", str(tmp_path / "e.json")])
    assert saved.exit_code == 0, saved.output
    assert (tmp_path / "e.json").is_file() and not (tmp_path / "q_retouched.png").exists()
    direct = runner.invoke(app, ["retouch", *ex, "--query", str(tmp_path / "q.png"),
                                 "-o", str(tmp_path / "direct.png")])
    again = runner.invoke(app, ["retouch", "--edit", str(tmp_path / "e.json"), "--query",
                                str(tmp_path / "q.png"), "-o", str(tmp_path / "again.png"),
                                "--export", "npy"])
    assert direct.exit_code == 0 and again.exit_code == 0, (direct.output, again.output)
    assert (tmp_path / "direct.png").read_bytes() == (tmp_path / "again.png").read_bytes()
    assert np.load(tmp_path / "again.map.npy").shape == before.shape[:2] + (2,)
    both = runner.invoke(app, ["retouch", *ex, "--edit", str(tmp_path / "e.json"),
                               "--query", str(tmp_path / "q.png")])
    assert both.exit_code == 2 and "--edit replaces --ex" in both.output
    (tmp_path / "bad.json").write_text('{"format": "mirrorppr-edit", "version": 1}')
    bad = runner.invoke(app, ["retouch", "--edit", str(tmp_path / "bad.json"), "--query",
                              str(tmp_path / "q.png"), "-o", str(tmp_path / "bad.png")])
    assert bad.exit_code == 3 and "not a usable mirrorppr edit file" in bad.output
    assert not (tmp_path / "bad.png").exists()
