"""Batches in worker processes (`--workers N`): the same bytes as one process, reports in the
plan's order, a failing file reported while the others are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mirrorppr_cli.batch import run_batch, worker_count
from mirrorppr_cli.errors import InputError
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp


def test_worker_count_defaults_to_this_process():
    assert worker_count(None, 500) == 1
    assert worker_count(3, 2) == 2 and worker_count(1, 50) == 1 and worker_count(2, 50) == 2


class _Report:
    def __init__(self, input, status="ok", error=None, exit_code=0, output=None):
        self.input, self.status, self.error, self.exit_code = input, status, error, exit_code


def _work(src: Path, dest: Path):
    if src.name == "bad":
        raise InputError(f"{src}: unreadable")
    if src.name == "crash":
        raise ZeroDivisionError("boom")
    return _Report(str(src))


def test_failures_become_reports_and_the_batch_goes_on():
    plan = [(Path(n), Path(n + ".out")) for n in ("a", "bad", "crash", "b")]
    outcomes = sorted(run_batch(plan, _work, _Report, workers=1))
    assert [o[0] for o in outcomes] == [0, 1, 2, 3]
    assert [o[1].status for o in outcomes] == ["ok", "failed", "failed", "ok"]
    assert outcomes[1][1].exit_code == 3 and outcomes[1][2] == "bad: unreadable"
    assert outcomes[2][1].exit_code == 1 and "ZeroDivisionError" in outcomes[2][2]
    assert isinstance(outcomes[2][3], ZeroDivisionError)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, astronaut_512, astronaut_512_points):
    """An exemplar pair and a folder of five queries (turned, scaled, mirrored) plus one file
    that is not an image."""
    root = tmp_path_factory.mktemp("shoot")
    before = np.ascontiguousarray(astronaut_512)
    after = apply_local_warp(before, plan_warp(astronaut_512_points,
                                               [OpRequest("eye_resize", 60)]))
    Image.fromarray(before).save(root / "before.png")
    Image.fromarray(after).save(root / "after.png")
    queries = root / "queries"
    queries.mkdir()
    for i, (angle, scale) in enumerate([(0, 1.0), (5, 0.9), (-6, 1.1), (3, 0.8), (0, 1.2)]):
        turn = cv2.getRotationMatrix2D((256, 256), angle, scale)
        source = np.fliplr(before).copy() if i % 2 else before
        query = cv2.warpAffine(source, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
        Image.fromarray(query).save(queries / f"q{i}.jpg", quality=92)
    (queries / "q9_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def _retouch(shoot: Path, out: Path, workers: int) -> tuple[int, dict, int]:
    """``(exit code, JSON report, the mirrorppr process's pid)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrorppr_cli", "retouch", "--ex", str(shoot / "before.png"),
         str(shoot / "after.png"), "--query", str(shoot / "queries"), "-o", f"{out}/",
         "--workers", str(workers), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout, _ = proc.communicate(timeout=600)
    return proc.returncode, json.loads(stdout), proc.pid


def test_two_workers_write_the_bytes_one_process_writes(shoot, tmp_path):
    code_1, report_1, _ = _retouch(shoot, tmp_path / "one", 1)
    code_2, report_2, parent = _retouch(shoot, tmp_path / "two", 2)
    assert code_1 == code_2 == 1  # the broken file failed; the batch went on
    assert report_1["summary"]["workers"] == 1 and report_2["summary"]["workers"] == 2
    inputs = [Path(item["input"]).name for item in report_2["items"]]
    assert inputs == sorted(inputs)  # reports in the plan's order
    assert [i["status"] for i in report_2["items"]] == ["ok"] * 5 + ["failed"]
    assert "q9_broken.jpg" in report_2["items"][-1]["error"]
    # really other processes: each report says which worker wrote it, never the run's own
    pids = {item["extra"]["worker_pid"] for item in report_2["items"] if item["status"] == "ok"}
    assert 1 <= len(pids) <= 2 and parent not in pids and os.getpid() not in pids
    assert all("worker_pid" not in item["extra"] for item in report_1["items"])
    written = sorted((tmp_path / "one").iterdir())
    assert len(written) == 5
    for path in written:
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name
