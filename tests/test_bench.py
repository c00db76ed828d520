"""`mirrorppr bench` end to end on a tiny SimFace-style benchmark built by build-dataset."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
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
    """`mirrorppr bench ARGS`, scoring the unchanged query only unless ARGS name a backend
    (the default backend is scored by default: test_default_backend_is_scored_by_default)."""
    backend = [] if "--backend" in args else ["--backend", "none"]
    return runner.invoke(app, ["bench", *args, *backend])


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


def _without_truth(benchmark: Path, root: Path) -> Path:
    """``benchmark``'s items without their ground truth (as a set of real pairs is), at ``root``."""
    items = json.loads((benchmark / "dataset.json").read_text())
    for item in items:
        item.pop("pair2_edited")
    shutil.copytree(benchmark / "images", root / "images")
    (root / "dataset.json").write_text(json.dumps(items))
    return root


def test_items_without_ground_truth_report_what_changed(benchmark, tmp_path):
    real = _without_truth(benchmark, tmp_path / "real")
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


def test_default_backend_is_scored_by_default(benchmark, tmp_path):
    """`bench DIR` with no --backend scores the default backend (warp) beside the unchanged
    query; `--backend none` scores the unchanged query alone."""
    result = runner.invoke(app, ["bench", str(benchmark), "--metrics", "psnr", "--out",
                                 str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"identity", "warp"}
    alone = runner.invoke(app, ["bench", str(benchmark), "--metrics", "psnr", "--out",
                                str(tmp_path / "r2"), "--json", "--backend", "none"])
    assert alone.exit_code == 0, alone.output
    assert set(json.loads(alone.stdout)) == {"identity"}


def test_items_without_ground_truth_report_face_similarity_to_the_query(benchmark, tmp_path):
    """A real pair has no truth: the face is compared with the query's own (1 unchanged)."""
    real = _without_truth(benchmark, tmp_path / "real")
    result = _bench(str(real), "--backend", "warp", "--metrics", "face,artefacts",
                    "--face-model", "dlib", "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert summaries["identity"]["average_query_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < summaries["warp"]["average_query_similarity"] <= 1.0
    assert summaries["warp"]["average_artefact_blobs"] is not None


# ---------------------------------------------------- hostile and unlucky benchmarks (#22)


def _copy_bench(benchmark: Path, root: Path, items) -> Path:
    """A benchmark folder at ``root`` with ``benchmark``'s images and ``items`` (a list, or
    the raw text of dataset.json)."""
    shutil.copytree(benchmark / "images", root / "images")
    (root / "dataset.json").write_text(items if isinstance(items, str) else json.dumps(items))
    return root


def _one_line_error(result) -> str:
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(("change", "words"), [
    (lambda items: [items[0], 5], ("item 1", "not a number")),
    (lambda items: [items[0], "images/x.png"], ("item 1", "not a string")),
    (lambda items: [items[0], {**items[1], "pair1_origin": 3}], ("item 1", "pair1_origin")),
    (lambda items: [{**items[0], "pair1_edited": None}], ("item 0", "pair1_edited", "null")),
    (lambda items: [{**items[0], "pair2_origin": ["a.png"]}], ("item 0", "pair2_origin")),
    (lambda items: [{**items[0], "pair2_edited": 7}], ("item 0", "pair2_edited")),
    (lambda items: [{**items[0], "edit_instruction": {"a": [[[]]]}}],
     ("item 0", "edit_instruction")),
    (lambda items: "[" * 100_000 + "]" * 100_000, ("nested too deeply",)),
], ids=["number-item", "string-item", "number-path", "null-path", "list-path", "number-truth",
        "object-instruction", "deep-nesting"])
def test_malformed_dataset_json_exits_3_naming_the_item_and_the_key(benchmark, tmp_path,
                                                                    change, words):
    items = json.loads((benchmark / "dataset.json").read_text())
    root = _copy_bench(benchmark, tmp_path / "b", change(items))
    out = tmp_path / "report"
    result = _bench(str(root), "--metrics", "psnr", "--out", str(out))
    assert result.exit_code == 3, result.output
    line = _one_line_error(result)
    assert all(w in line for w in words), line
    assert not out.exists()


def test_unreadable_and_unscorable_items_are_reported_and_the_rest_scored(benchmark, tmp_path):
    """An unreadable query, a ground truth smaller than its query and 8×8 images: those
    items are reported (in results.json and on stderr), every other item is scored, exit 1."""
    items = json.loads((benchmark / "dataset.json").read_text())
    root = _copy_bench(benchmark, tmp_path / "b", [])
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    Image.open(root / items[2]["pair2_edited"]).resize((40, 40)).save(root / "images/small.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "tiny.png")
    tiny = {k: "images/tiny.png" for k in ("pair1_origin", "pair1_edited", "pair2_origin",
                                            "pair2_edited")}
    entries = [{**items[0], "pair2_origin": "images/broken.png"}, items[1],
               {**items[2], "pair2_edited": "images/small.png"}, {**items[0], **tiny}]
    (root / "dataset.json").write_text(json.dumps(entries))
    out = tmp_path / "report"
    result = _bench(str(root), "--oracle", "--metrics", "psnr,ssim,edit,artefacts",
                    "--out", str(out), "--json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["failed_items"]) == ["0", "2", "3"]
    assert "broken.png" in saved["failed_items"]["0"]
    assert "40×40" in saved["failed_items"]["2"] and "8×8" in saved["failed_items"]["3"]
    for index in (0, 2, 3):
        assert f"item {index}:" in result.stderr
    identity = saved["methods"]["identity"]
    assert identity["summary"]["total_samples"] == 4
    assert identity["summary"]["valid_pixel_samples"] == 1  # item 1, scored as usual
    assert [r["item"] for r in identity["rows"] if not r.get("failed")] == [1]
    assert saved["methods"]["oracle"]["summary"]["average_psnr"] == 100.0
    assert "could not be scored" in (out / "results.md").read_text()
    page = (out / "report.html").read_text()
    assert all((out / s).is_file() for s in re.findall(r'<img src="([^"]+)"', page))
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_failed_run_leaves_no_partial_report(benchmark, tmp_path, monkeypatch):
    """The report is built aside and moved into --out once complete: a run that fails while
    writing it (here: the disk is full at report.html) leaves no report and no new folder,
    and over an earlier report (--force) leaves that one as it was."""
    from mirrorppr_cli.bench import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "report"
    monkeypatch.setattr(report, "html_report", disk_full)
    result = _bench(str(benchmark), "--metrics", "psnr", "--out", str(out))
    assert result.exit_code == 4 and "No space left" in _one_line_error(result)
    assert not out.exists()

    monkeypatch.undo()
    assert _bench(str(benchmark), "--metrics", "psnr", "--out", str(out)).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(report, "html_report", disk_full)
    result = _bench(str(benchmark), "--oracle", "--metrics", "psnr", "--out", str(out), "--force")
    assert result.exit_code == 4
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_killed_runs_staging_folder_is_removed_by_the_next(benchmark, tmp_path):
    out = tmp_path / "report"
    stale = out / ".bench-999999999-abc.part"  # above any pid Linux hands out: its run is gone
    (stale / "report_images").mkdir(parents=True)
    (stale / "report_images" / "0000_query.jpg").write_bytes(b"partial")
    assert _bench(str(benchmark), "--metrics", "psnr", "--out", str(out)).exit_code == 0
    assert not stale.exists() and (out / "results.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_killed_but_unreaped_runs_staging_folder_is_removed(benchmark, tmp_path):
    """A run killed a moment ago may still be a zombie (its parent has not reaped it): it
    answers kill(pid, 0) but runs no more, and its folder goes too."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        time.sleep(0.5)  # not waited for: a zombie
        out = tmp_path / "report"
        stale = out / f".bench-{child.pid}-abc.part"
        stale.mkdir(parents=True)
        assert _bench(str(benchmark), "--metrics", "psnr", "--out", str(out)).exit_code == 0
        assert not stale.exists()
    finally:
        child.wait()


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_paths_outside_the_benchmark_folder_are_refused(benchmark, tmp_path, how):
    items = json.loads((benchmark / "dataset.json").read_text())
    secret = tmp_path / "secret.png"
    shutil.copy(benchmark / items[0]["pair2_origin"], secret)
    root = _copy_bench(benchmark, tmp_path / "b", [])
    if how == "symlink":
        (root / "images" / "link.png").symlink_to(secret)
    query = {"dotdot": "../secret.png", "absolute": str(secret), "symlink": "images/link.png"}
    (root / "dataset.json").write_text(json.dumps([{**items[0], "pair2_origin": query[how]}]))
    out = tmp_path / "report"
    result = _bench(str(root), "--metrics", "psnr", "--out", str(out))
    assert result.exit_code == 3, result.output
    line = _one_line_error(result)
    assert "item 0" in line and "pair2_origin" in line and "--allow-outside-root" in line
    assert not out.exists()
    allowed = _bench(str(root), "--metrics", "psnr", "--out", str(out), "--allow-outside-root")
    assert allowed.exit_code == 0, allowed.output
    assert (out / "report_images" / "0000_query.jpg").is_file()


def test_links_inside_the_folder_and_a_hub_cache_snapshot_are_read(benchmark, tmp_path):
    """Symlinks that stay inside the benchmark are fine; so is the Hugging Face cache's
    layout, where a snapshot's files link to ../../blobs of the same repository."""
    items = json.loads((benchmark / "dataset.json").read_text())
    repo = tmp_path / "datasets--x--y"
    snapshot = repo / "snapshots" / "0123abc"
    (snapshot / "images").mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in (benchmark / "images").iterdir():
        shutil.copy(name, repo / "blobs" / name.name)
        (snapshot / "images" / name.name).symlink_to(Path("../../..") / "blobs" / name.name)
    (snapshot / "dataset.json").write_text(json.dumps(items))
    result = _bench(str(snapshot), "--metrics", "psnr", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", ["no items", "no item of the split"])
def test_an_empty_benchmark_exits_3(benchmark, tmp_path, case):
    if case == "no items":
        root, extra = _copy_bench(benchmark, tmp_path / "b", []), []
    else:  # the fixture's three items are all in the dev split
        root, extra = benchmark, ["--split", "heldout"]
    out = tmp_path / "report"
    result = _bench(str(root), "--metrics", "psnr", "--out", str(out), *extra)
    assert result.exit_code == 3, result.output
    assert "nothing to score" in _one_line_error(result)
    assert not out.exists()
