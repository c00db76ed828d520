"""The command line end to end on scikit-image's astronaut (public domain)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli.cli import app

runner = CliRunner()


def _run(*args: str, cwd: Path | None = None):
    old = Path.cwd()
    if cwd:
        os.chdir(cwd)
    try:
        return runner.invoke(app, list(args))
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_console_script_end_to_end(astronaut_png, tmp_path):
    """The installed `mirrorppr` script: several ops at once, JSON report, local change only."""
    out = tmp_path / "out.png"
    proc = subprocess.run(
        [sys.executable, "-m", "mirrorppr_cli", "apply", str(astronaut_png),
         "--op", "eye_resize=40", "--op", "nose_alar=-30", "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    item = report["items"][0]
    assert item["status"] == "ok" and report["summary"] == {"ok": 1, "failed": 0, "workers": 1}
    assert [o["name"] for o in item["ops"]] == ["eye_resize", "nose_alar"]
    before = np.asarray(Image.open(astronaut_png))
    after = np.asarray(Image.open(out))
    changed = np.any(before != after, axis=-1)
    assert item["changed_pixels"] == int(changed.sum()) > 500
    rows, cols = np.nonzero(changed)
    x0, y0, x1, y1 = item["face_box"]
    # Every changed pixel lies near the face; the rest of the frame is bit-identical.
    assert cols.min() > x0 - 40 and cols.max() < x1 + 40
    assert rows.min() > y0 - 40 and rows.max() < y1 + 40
    assert proc.stderr == ""  # no native log noise


def test_ops_lists_the_catalog_as_json():
    result = _run("ops", "--json")
    assert result.exit_code == 0
    names = [row["name"] for row in json.loads(result.stdout)["operations"]]
    # the official generator's eight first, then the rest of the professional catalog
    assert names[:8] == ["eye_resize", "eye_distance", "nose_bridge", "nose_alar", "nose_length",
                         "mouth_position", "lip_thickness", "mouth_resize"]
    face = ["face_shape", "jawline", "chin_length", "temples", "eyebrow_distance",
            "eyebrow_height", "eyebrow_thickness", "eye_height", "eye_width", "eye_position",
            "nose_resize", "nose_tip", "mouth_corners", "mouth_width"]
    assert [n for n in names if n in face] == face


def test_backends_lists_warp_from_entry_points():
    result = _run("backends", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["warp"]["available"] and "retouch" in rows["warp"]["jobs"]


def test_train_without_a_stage_shows_its_stages():
    result = _run("train")
    assert result.exit_code in (0, 2)
    assert "extractor" in result.output and "joint" in result.output


@pytest.mark.parametrize(
    "op, message",
    [("eyes=40", "unknown operation"), ("eye_resize=400", "between -100 and 100"),
     ("eye_resize", "NAME=STRENGTH")],
)
def test_bad_ops_exit_2(astronaut_png, tmp_path, op, message):
    result = _run("apply", str(astronaut_png), "--op", op, "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o.png").exists()


def test_existing_output_needs_force(astronaut_png, tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    result = _run("apply", str(astronaut_png), "--op", "eye_resize=40", "-o", str(out))
    assert result.exit_code == 4 and "--force" in result.output
    assert out.read_bytes() == b"keep me"
    result = _run("apply", str(astronaut_png), "--op", "eye_resize=40", "-o", str(out), "--force")
    assert result.exit_code == 0
    assert Image.open(out).size == (512, 512)


def test_batch_folder_reports_bad_items_and_goes_on(astronaut_png, tmp_path):
    folder = tmp_path / "shoot"
    folder.mkdir()
    (folder / "a.png").write_bytes(astronaut_png.read_bytes())
    Image.fromarray(np.fliplr(data.astronaut()).copy()).save(folder / "b.jpg")
    (folder / "c.jpg").write_bytes((folder / "b.jpg").read_bytes()[:2000])  # truncated
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(folder / "d.png")  # no face
    out = tmp_path / "out"
    result = _run("apply", str(folder), "--op", "mouth_resize=30", "-o", str(out), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    status = {Path(i["input"]).name: i["status"] for i in report["items"]}
    assert status == {"a.png": "ok", "b.jpg": "ok", "c.jpg": "failed", "d.png": "failed"}
    errors = {Path(i["input"]).name: i["error"] for i in report["items"] if i["error"]}
    assert "truncated" in errors["c.jpg"] or "corrupt" in errors["c.jpg"]
    assert "no face" in errors["d.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a_retouched.png", "b_retouched.jpg"]


def test_glob_input(astronaut_png, tmp_path):
    for name in ("x1.png", "x2.png"):
        (tmp_path / name).write_bytes(astronaut_png.read_bytes())
    result = _run("apply", str(tmp_path / "x*.png"), "--op", "eye_distance=50",
                  "-o", str(tmp_path / "o"), "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x1_retouched.png",
                                                                  "x2_retouched.png"]


def test_face_index_out_of_range(astronaut_png, tmp_path):
    result = _run("apply", str(astronaut_png), "--op", "eye_resize=40", "--face", "3",
                  "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 3 and "1 face(s)" in result.output


def test_pixel_limit(astronaut_png, tmp_path):
    result = _run("apply", str(astronaut_png), "--op", "eye_resize=40", "--max-pixels", "1000",
                  "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 3 and "--max-pixels" in result.output
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK"])
def test_colour_modes_are_kept(tmp_path, mode):
    rgb = data.astronaut()
    if mode == "RGBA":
        alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
        img, name = Image.fromarray(np.dstack([rgb, alpha])), "in.png"
    elif mode == "L":
        img, name = Image.fromarray(rgb).convert("L"), "in.png"
    else:
        img, name = Image.fromarray(rgb).convert("CMYK"), "in.jpg"
    img.save(tmp_path / name)
    result = _run("apply", str(tmp_path / name), "--op", "eye_resize=60", "--json")
    assert result.exit_code == 0, result.output
    written = Image.open(json.loads(result.stdout)["items"][0]["output"])
    assert written.mode == mode
    if mode == "RGBA":
        before = np.asarray(img)[..., 3]
        after = np.asarray(written)[..., 3]
        # alpha is warped with the colours, so it stays a horizontal ramp almost everywhere
        assert np.mean(before == after) > 0.97


def test_16_bit_png_stays_16_bit(tmp_path):
    import cv2

    rgb16 = data.astronaut().astype(np.uint16) * 257 + 3
    cv2.imwrite(str(tmp_path / "in16.png"), rgb16[..., ::-1])
    result = _run("apply", str(tmp_path / "in16.png"), "--op", "eye_resize=60", "--json")
    assert result.exit_code == 0, result.output
    out = cv2.imread(json.loads(result.stdout)["items"][0]["output"], cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (512, 512, 3)
    same = np.all(out[..., ::-1] == rgb16, axis=-1)
    assert 0.9 < same.mean() < 1.0  # edited locally, untouched elsewhere at 16-bit precision


def test_demo_runs_on_the_builtin_portrait(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = _run("apply", "--demo", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "astronaut_retouched.png").size == (512, 512)


def test_retouch_demo_runs_the_main_job(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = _run("retouch", "--demo", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    assert item["status"] == "ok" and item["changed_pixels"] > 500
    query = np.asarray(Image.open(item["input"]))
    out = np.asarray(Image.open(tmp_path / "astronaut_query_retouched.png"))
    assert out.shape == query.shape and np.array_equal(out[:100], query[:100])


def test_the_demo_runs_twice_and_leaves_only_its_output(tmp_path):
    """The README's first command, twice: exit 0 both times (the second leaves the demo's own
    output and says so), nothing but that output in the folder, no temporary folder left."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "work").mkdir()
    command = [sys.executable, "-m", "mirrorppr_cli", "retouch", "--demo"]
    first = subprocess.run(command, cwd=tmp_path / "work", env=env, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    made = (tmp_path / "work" / "astronaut_query_retouched.png").read_bytes()
    second = subprocess.run(command, cwd=tmp_path / "work", env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0 and "skipped" in second.stdout + second.stderr, second.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["astronaut_query_retouched.png"]
    assert (tmp_path / "work" / "astronaut_query_retouched.png").read_bytes() == made
    assert not list((tmp_path / "tmp").iterdir())


def test_rough_edges_of_retouch_queries(astronaut_png, tmp_path):
    """`--query a b` (and a glob the shell expanded) are all queries; `--ex A --query Q` names
    the real mistake; `-o x.jpg` with two queries is refused, nothing written."""
    second = tmp_path / "second.png"
    second.write_bytes(Path(astronaut_png).read_bytes())
    ex = ["--ex", str(astronaut_png), str(astronaut_png)]
    both = _run("retouch", *ex, "--query", str(astronaut_png), str(second),
                "-o", str(tmp_path / "out") + "/", "--json", cwd=tmp_path)
    assert both.exit_code == 0, both.output
    assert len(json.loads(both.stdout)["items"]) == 2
    one = _run("retouch", "--ex", str(astronaut_png), "--query", str(second), cwd=tmp_path)
    assert one.exit_code == 2 and "--ex takes two files, BEFORE AFTER" in one.output
    file_out = _run("retouch", *ex, "--query", str(astronaut_png), str(second),
                    "-o", str(tmp_path / "x.jpg"), cwd=tmp_path)
    assert file_out.exit_code == 2 and "give a folder" in file_out.output
    assert not (tmp_path / "x.jpg").exists()


COMMANDS_WITH_HELP = [["retouch"], ["apply"], ["explain"], ["build-dataset"], ["bench"], ["ops"],
                      ["backends"], ["convert-weights"], ["train", "extractor"],
                      ["train", "joint"], ["review"]]


@pytest.mark.parametrize("command", COMMANDS_WITH_HELP, ids=" ".join)
def test_help_shows_words_not_python_types(command):
    """`--help` names values as a person reads them (FILE, N, BEFORE AFTER), never as Python
    annotations (`<list[str]>`, `<Path,Path>`, `<bool>`)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    python_types = [line for line in result.output.splitlines()
                    if any(t in line for t in ("<list", "<bool>", "<int", "<str>", "<float",
                                                "<path>", "<Path"))]
    assert python_types == []
    if command == ["retouch"]:
        assert "BEFORE AFTER" in result.output and "FILE|DIR|GLOB" in result.output


def test_the_cli_starts_without_the_heavy_libraries():
    """`mirrorppr --help` and every verb's registration import no MediaPipe, OpenCV or torch:
    they load when a command needs them (start-up 0.15 s instead of 1.6-2.3 s)."""
    import subprocess
    import sys

    code = ("import sys, mirrorppr_cli.cli; "
            "print(sorted(m for m in ('mediapipe', 'cv2', 'torch', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
