"""`mirrorppr bench` end to end on a tiny SimFace-style benchmark built by build-dataset."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli.cli import app

runner = CliRunner()
FAST = "psnr,ssim,edit"  # LPIPS and face similarity have their own tests


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    faces = tmp_path_factory.mktemp("faces")
    rgb = data.astronaut()
    Image.fromarray(rgb).save(faces / "a.png")
    Image.fromarray(np.fliplr(rgb).copy()).save(faces / "b.png")
    out = tmp_path_factory.mktemp("bench") / "simface"
    result = runner.invoke(app, ["build-dataset", "--benchmark", "simface", "--faces", str(faces),
                                 "--out", str(out), "--combos", "3", "--size", "256"])
    assert result.exit_code == 0, result.output
    return out


def _bench(*args: str):
    return runner.invoke(app, ["bench", *args])


def test_identity_and_oracle_behave_as_they_must(benchmark, tmp_path):
    out = tmp_path / "report"
    result = _bench(str(benchmark), "--oracle", "--metrics", FAST, "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    identity, oracle = summaries["identity"], summaries["oracle"]
    assert identity["total_samples"] == identity["valid_pixel_samples"] == 3
    assert identity["average_edit_recall"] == pytest.approx(0.0, abs=1e-6)
    assert 20 < identity["average_psnr"] < 60 and identity["average_ssim"] < 1.0
    assert oracle["average_psnr"] == 100.0 and oracle["average_ssim"] == pytest.approx(1.0)
    assert oracle["average_edit_recall"] == pytest.approx(1.0)
    saved = json.loads((out / "results.json").read_text())
    official = {"total_samples", "valid_pixel_samples", "average_psnr", "average_ssim",
                "average_lpips", "valid_identity_samples", "average_identity_similarity_edited"}
    assert official <= set(saved["methods"]["identity"]["summary"])
    assert len(saved["methods"]["oracle"]["rows"]) == 3
    assert "| identity |" in (out / "results.md").read_text()


def test_html_report_shows_every_image(benchmark, tmp_path):
    out = tmp_path / "report"
    assert _bench(str(benchmark), "--metrics", FAST, "--out", str(out)).exit_code == 0
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    # per item: exemplar before/after, query, truth, identity prediction and its difference map
    assert len(sources) == 3 * 6
    assert all((out / s).is_file() and (out / s).stat().st_size > 500 for s in sources)


def test_predictions_folder_is_scored_and_missing_items_are_counted(benchmark, tmp_path):
    items = json.loads((benchmark / "dataset.json").read_text())
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(benchmark / items[0]["pair2_edited"], preds / "0000.png")  # perfect
    shutil.copy(benchmark / items[1]["pair2_origin"], preds / "0001.png")  # unchanged
    out = tmp_path / "report"
    result = _bench(str(benchmark), "--predictions", str(preds), "--metrics", FAST,
                    "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["predictions:preds"]
    assert summary["total_samples"] == 3 and summary["valid_pixel_samples"] == 2
    assert summary["average_edit_recall"] == pytest.approx(0.5, abs=1e-6)
    rows = json.loads((out / "results.json").read_text())["methods"]["predictions:preds"]["rows"]
    assert rows[2]["error"] and "no prediction for item 2" in rows[2]["error"]


def test_existing_report_needs_force_and_bad_inputs_fail_clearly(benchmark, tmp_path):
    out = tmp_path / "report"
    assert _bench(str(benchmark), "--metrics", "psnr", "--out", str(out)).exit_code == 0
    again = _bench(str(benchmark), "--metrics", "psnr", "--out", str(out))
    assert again.exit_code == 4 and "--force" in again.output
    assert _bench(str(benchmark), "--metrics", "psnr", "--out", str(out), "--force").exit_code == 0
    missing = _bench(str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2"))
    assert missing.exit_code == 3 and "dataset.json" in missing.output
    assert _bench("proportrait500").exit_code == 2
    assert _bench(str(benchmark), "--metrics", "psnr,fid").exit_code == 2
    unknown = _bench(str(benchmark), "--backend", "nope", "--out", str(tmp_path / "r3"))
    assert unknown.exit_code == 2 and "unknown backend" in unknown.output


def test_warp_backend_is_scored_beside_the_baseline(benchmark, tmp_path):
    result = _bench(str(benchmark), "--backend", "warp", "--metrics", FAST,
                    "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    warp, identity = summaries["warp"], summaries["identity"]
    assert warp["valid_pixel_samples"] == 3
    # the tiny 256² set is hard for flow and landmarks alike; still clearly better than nothing
    assert warp["average_edit_recall"] > 0.3
    assert warp["average_psnr"] > identity["average_psnr"]


def test_simface100_offline_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = _bench("simface100", "--out", str(tmp_path / "r"))
    assert result.exit_code == 5
    assert "SJTU-DENG-Lab/SimFace-100" in result.output


def test_face_similarity_is_reported_with_its_model_name(benchmark, tmp_path):
    out = tmp_path / "report"
    result = _bench(str(benchmark), "--oracle", "--metrics", "face", "--face-model", "dlib",
                    "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert summaries["oracle"]["average_identity_similarity_edited"] == pytest.approx(1.0, abs=1e-6)
    assert summaries["oracle"]["valid_identity_samples"] == 3
    assert 0.9 < summaries["identity"]["average_identity_similarity_edited"] < 1.0
    assert "substitute, not ArcFace" in summaries["identity"]["face_model"]
    assert "substitute, not ArcFace" in (out / "results.md").read_text()


def test_items_without_ground_truth_report_what_changed(benchmark, tmp_path):
    items = json.loads((benchmark / "dataset.json").read_text())
    for item in items:
        item.pop("pair2_edited")
    real = tmp_path / "real"
    shutil.copytree(benchmark / "images", real / "images")
    (real / "dataset.json").write_text(json.dumps(items))
    out = tmp_path / "report"
    result = _bench(str(real), "--backend", "warp", "--oracle", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    warp = summaries["warp"]
    assert warp["valid_pixel_samples"] == 0 and warp["average_psnr"] is None
    assert 0 < warp["average_changed_fraction"] < 0.2
    assert summaries["identity"]["average_changed_fraction"] == 0.0
    rows = json.loads((out / "results.json").read_text())["methods"]["oracle"]["rows"]
    assert all("no ground truth" in r["error"] for r in rows)
    assert "difference to query (no ground truth)" in (out / "report.html").read_text()
