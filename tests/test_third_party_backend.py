"""A backend defined outside the project plugs into `retouch`, `apply`, `explain` and `bench`
through the backend protocol alone (mirrorppr_cli.backend), with no change to the CLI.

The test backend transfers the exemplar's mean colour change (a global tone edit): simple,
exact to check, and nothing like the geometric engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli import backend as backend_module
from mirrorppr_cli.backend import Backend, RetouchSettings, register_backend
from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import UsageError
from mirrorppr_cli.io import image_from_array, read_image, write_image
from mirrorppr_cli.result import Result

runner = CliRunner()


class ToneBackend:
    """Adds the exemplar's mean per-channel change to the query."""

    name = "tone"
    summary = "mean colour change of the exemplar, added to the query"
    capabilities = frozenset({"retouch", "ops", "explain"})
    options = frozenset()

    def availability(self):
        return True, "numpy"

    def prepare(self, status=None):
        pass

    def input_note(self, path: Path, max_pixels=None):
        return None

    def measure(self, before: Path, after: Path, *, max_pixels=None, on_stage=None):
        b, a = (read_image(p).rgb8().astype(np.int16) for p in (before, after))
        return np.round((a - b).reshape(-1, 3).mean(0)).astype(np.int16)

    def retouch(self, before, after, query):
        offset = np.round((after.astype(np.int16) - before).reshape(-1, 3).mean(0))
        return np.clip(query.astype(np.int16) + offset.astype(np.int16), 0, 255).astype(np.uint8)

    def retouch_file(self, edit, source: Path, dest: Path, settings: RetouchSettings):
        picture = read_image(source)
        pixels = np.clip(picture.rgb8().astype(np.int16) + edit, 0, 255).astype(np.uint8)
        written = write_image(image_from_array(pixels), dest, force=settings.force,
                              format=settings.output_format)
        return Result(input=str(source), output=str(written))

    def edit_summary(self, edit):
        return {"tone_offset": [int(v) for v in edit]}

    def explain(self, before, after, *, max_pixels=None, on_stage=None):
        offset = self.measure(before, after)
        return {"ops": [{"name": "tone_shift", "strength": float(offset.mean())}],
                "explained": 1.0, "mean_motion_px": 0.0, "body": None, "notes": []}

    def apply_ops(self, pixels, face_points, requests):
        x0, y0 = face_points.min(0).astype(int)
        x1, y1 = face_points.max(0).astype(int)
        out = pixels.copy()
        lift = int(sum(r.strength for r in requests) / 10)
        out[y0:y1, x0:x1] = np.clip(out[y0:y1, x0:x1].astype(np.int16) + lift, 0, 255)
        return out

    def apply_body_ops(self, pixels, requests, *, name="image"):
        raise UsageError(f"backend 'tone' has no body operations ({name})")


@pytest.fixture()
def tone(monkeypatch):
    monkeypatch.setattr(backend_module, "_registered", {})
    register_backend("tone", ToneBackend)
    return ToneBackend


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tone")
    before = data.astronaut()
    after = np.clip(before.astype(np.int16) + [12, -5, 3], 0, 255).astype(np.uint8)
    query = np.ascontiguousarray(np.fliplr(before)[40:, 20:])
    paths = {}
    for name, pixels in (("before", before), ("after", after), ("query", query)):
        paths[name] = root / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return paths


def test_it_satisfies_the_protocol(tone):
    assert isinstance(ToneBackend(), Backend)
    assert "tone" in backend_module.backend_names()


def test_retouch_runs_it(tone, files, tmp_path):
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["retouch", "--backend", "tone", "--ex", str(files["before"]),
                                 str(files["after"]), "--query", str(files["query"]), "-o",
                                 str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    before, after = (np.asarray(Image.open(files[k])).astype(int) for k in ("before", "after"))
    offset = np.round((after - before).reshape(-1, 3).mean(0)).astype(int)
    assert report["summary"]["tone_offset"] == offset.tolist()
    assert abs(offset - [12, -5, 3]).max() <= 1  # (clipped at 0 and 255 here and there)
    query = np.asarray(Image.open(files["query"])).astype(int)
    expected = np.clip(query + offset, 0, 255)
    assert np.array_equal(np.asarray(Image.open(out)), expected)


@pytest.mark.parametrize("option, capability", [
    (["--strength", "0.5"], "--strength"), (["--workers", "2"], "--workers"),
    (["--only", "face"], "--only"), (["--export", "npy"], "--export"),
    (["--mode", "flow"], "takes no --mode")])
def test_what_it_cannot_do_is_refused_by_capability(tone, files, tmp_path, option, capability):
    result = runner.invoke(app, ["retouch", "--backend", "tone", "--ex", str(files["before"]),
                                 str(files["after"]), "--query", str(files["query"]), "-o",
                                 str(tmp_path / "x.png"), *option])
    assert result.exit_code == 2 and capability in result.output, result.output
    assert not (tmp_path / "x.png").exists()


def test_apply_and_explain_run_it(tone, files, tmp_path):
    out = tmp_path / "applied.png"
    result = runner.invoke(app, ["apply", "--backend", "tone", str(files["query"]), "--op",
                                 "eye_resize=50", "-o", str(out)])
    assert result.exit_code == 0, result.output
    changed = np.any(np.asarray(Image.open(out)) != np.asarray(Image.open(files["query"])), -1)
    assert 0 < changed.mean() < 0.5  # the face box only
    body = runner.invoke(app, ["apply", "--backend", "tone", str(files["query"]), "--op",
                               "shoulder_width=50", "-o", str(tmp_path / "b.png")])
    assert body.exit_code == 2 and "no body operations" in body.output
    explained = runner.invoke(app, ["explain", "--backend", "tone", "--ex",
                                    str(files["before"]), str(files["after"]), "--json"])
    assert explained.exit_code == 0, explained.output
    (op,) = json.loads(explained.stdout)["ops"]
    assert op["name"] == "tone_shift" and op["strength"] == pytest.approx(10 / 3, abs=0.5)
    table = runner.invoke(app, ["explain", "--backend", "tone", "--ex", str(files["before"]),
                                str(files["after"])])
    assert table.exit_code == 0 and "tone_shift" in table.output


def test_bench_scores_it(tone, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.fromarray(data.astronaut()).save(faces / "a.png")
    Image.fromarray(np.fliplr(data.astronaut()).copy()).save(faces / "b.png")
    built = runner.invoke(app, ["build-dataset", "--benchmark", "simface", "--faces", str(faces),
                                "--out", str(tmp_path / "set"), "--combos", "2", "--size",
                                "256"])
    assert built.exit_code == 0, built.output
    result = runner.invoke(app, ["bench", str(tmp_path / "set"), "--backend", "tone",
                                 "--metrics", "psnr", "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert summaries["tone"]["valid_pixel_samples"] == 2
    assert summaries["tone"]["average_psnr"] is not None
