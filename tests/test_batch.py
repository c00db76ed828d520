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

from mirrorppr_cli import batch
from mirrorppr_cli.batch import MIN_BATCH_FOR_WORKERS, run_batch, worker_count
from mirrorppr_cli.errors import InputError
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp


def test_worker_count_default_is_every_core_for_a_long_batch(monkeypatch):
    monkeypatch.setattr(batch, "available_cores", lambda: 4)
    assert worker_count(None, 500) == 4 and worker_count(None, MIN_BATCH_FOR_WORKERS) == 4
    assert worker_count(None, MIN_BATCH_FOR_WORKERS - 1) == 1  # too short to pay a start-up
    monkeypatch.setattr(batch, "available_cores", lambda: 1)
    assert worker_count(None, 500) == 1
    assert worker_count(3, 2) == 2 and worker_count(1, 50) == 1 and worker_count(2, 50) == 2


def test_available_cores_is_this_process_s_share():
    assert 1 <= batch.available_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert batch.available_cores() == len(os.sched_getaffinity(0))


class _Report:
    def __init__(self, input, status="ok", error=None, exit_code=0, output=None):
        self.input, self.status, self.error, self.exit_code = input, status, error, exit_code


def _work(src: Path, dest: Path):
    if src.name == "bad":
        raise InputError(f"{src}: unreadable")
    if src.name == "crash":
        raise ZeroDivisionError("boom")
    if src.name == "die" and os.environ.get("BATCH_TEST_PARENT") != str(os.getpid()):
        os._exit(9)  # a worker killed mid-file (never the test's own process)
    report = _Report(str(src))  # where it ran, and with how many threads
    report.pid, report.opencv_threads = os.getpid(), cv2.getNumThreads()
    report.openblas = os.environ.get("OPENBLAS_NUM_THREADS")
    return report


def test_failures_become_reports_and_the_batch_goes_on():
    plan = [(Path(n), Path(n + ".out")) for n in ("a", "bad", "crash", "b")]
    outcomes = sorted(run_batch(plan, _work, _Report, workers=1))
    assert [o[0] for o in outcomes] == [0, 1, 2, 3]
    assert [o[1].status for o in outcomes] == ["ok", "failed", "failed", "ok"]
    assert outcomes[1][1].exit_code == 3 and outcomes[1][2] == "bad: unreadable"
    assert outcomes[2][1].exit_code == 1 and "ZeroDivisionError" in outcomes[2][2]
    assert isinstance(outcomes[2][3], ZeroDivisionError)


def test_workers_share_the_batch_with_this_process(monkeypatch):
    """``workers=2``: this process and one spawned worker take the files; failures are reports
    there too; the worker runs one OpenCV and one OpenBLAS thread, this process one OpenCV
    thread while the batch runs and its own count again after it."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    names = ["a", "bad", "crash", "b", "c", "d", "e", "f"]
    plan = [(Path(n), Path(n + ".out")) for n in names]
    threads = cv2.getNumThreads()
    outcomes = sorted(run_batch(plan, _work, _Report, workers=2), key=lambda o: o[0])
    assert cv2.getNumThreads() == threads
    assert [o[0] for o in outcomes] == list(range(len(names)))
    assert [o[1].status for o in outcomes] == [
        "failed" if n in ("bad", "crash") else "ok" for n in names]
    assert outcomes[1][2] == "bad: unreadable" and "ZeroDivisionError" in outcomes[2][2]
    ok = [o[1] for o in outcomes if o[1].status == "ok"]
    assert {r.opencv_threads for r in ok} == {1}
    spawned = [r for r in ok if r.pid != os.getpid()]
    assert spawned, "the worker was handed files before this process took the rest"
    assert {r.pid for r in spawned} == {spawned[0].pid}  # one started worker
    assert {r.openblas for r in spawned} == {"1"}


def test_a_worker_that_dies_fails_its_files_and_the_batch_ends(monkeypatch):
    """A started worker that dies (killed, out of memory) must not hang the batch: the files
    it held fail with a message that says so, this process does the rest."""
    monkeypatch.setenv("BATCH_TEST_PARENT", str(os.getpid()))
    names = ["die", "a", "b", "c", "d"]  # the first files go to the worker
    plan = [(Path(n), Path(n + ".out")) for n in names]
    outcomes = sorted(run_batch(plan, _work, _Report, workers=2), key=lambda o: o[0])
    assert [o[0] for o in outcomes] == list(range(len(names)))
    assert outcomes[0][1].status == "failed"
    assert "worker process ended unexpectedly" in outcomes[0][2]
    done_here = [o[1] for o in outcomes if o[1].status == "ok"]
    assert done_here and all(r.pid == os.getpid() for r in done_here)


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
    # the run's own process and one started worker: each report says which process wrote
    # it, and the worker wrote some (it is handed files before the run takes any itself)
    pids = {item["extra"]["worker_pid"] for item in report_2["items"] if item["status"] == "ok"}
    assert len(pids - {parent}) == 1 and os.getpid() not in pids
    assert all("worker_pid" not in item["extra"] for item in report_1["items"])
    written = sorted((tmp_path / "one").iterdir())
    assert len(written) == 5
    for path in written:
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


class _Preload:
    """Unpickled in each started worker: it leaves a file named after the worker's pid."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __setstate__(self, state):
        self.__dict__.update(state)
        (self.folder / f"ready-{os.getpid()}").touch()


def test_workers_start_and_import_before_their_job_exists(tmp_path):
    """``Workers`` starts its processes at once (they unpickle ``preload``, i.e. import the
    backend, while this process measures the exemplar); the job comes later, is read from a
    private temporary file, and that file's folder goes when the workers close."""
    import time

    with batch.Workers(1, preload=_Preload(tmp_path)) as workers:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("ready-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = list(tmp_path.glob("ready-*"))
        assert len(ready) == 1 and ready[0].name != f"ready-{os.getpid()}"
        plan = [(Path(n), Path(n + ".out")) for n in "abcdef"]
        outcomes = sorted(run_batch(plan, _work, _Report, workers=workers), key=lambda o: o[0])
        assert [o[1].status for o in outcomes] == ["ok"] * 6
        spawned = {o[1].pid for o in outcomes} - {os.getpid()}
        assert spawned == {int(ready[0].name.removeprefix("ready-"))}
        job_folder = workers._job_file.parent
        assert job_folder.is_dir() and oct(job_folder.stat().st_mode & 0o777) == "0o700"
    assert not job_folder.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc")
def test_an_error_before_the_job_closes_the_workers(tmp_path):
    """A run that fails before its job exists (e.g. a refused exemplar) ends its started
    workers at once, still starting as they are: none outlives the block."""
    with pytest.raises(InputError), batch.Workers(2, preload=_Preload(tmp_path)) as workers:
        assert len(workers._processes) == 2
        raise InputError("refused exemplar")
    assert not [p.pid for p in workers._processes if _running(p.pid)]


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended; ``Process.is_alive`` can say True
    for one the executor's own thread reaped first)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


FORK_PROBE = """
import os, sys, threading
from pathlib import Path
from mirrorppr_cli import batch
import xml.dom.minidom  # noqa: F401 - imported here only: a forked worker has it, a spawned one not

class Report:
    def __init__(self, input, status="ok", error=None, exit_code=0, output=None):
        self.input, self.status, self.error, self.exit_code = input, status, error, exit_code

def work(src, dest):
    report = Report(str(src))
    report.pid, report.inherited = os.getpid(), "xml.dom.minidom" in sys.modules
    return report

print(batch.start_method())
with batch.Workers(1) as workers:
    outcomes = list(batch.run_batch([(Path(n), Path(n)) for n in "abcdefgh"], work, Report,
                                    workers=workers))
started = [o[1] for o in outcomes if o[1].pid != os.getpid()]
print(workers.start_method, len(started) > 0, all(r.inherited for r in started))
release = threading.Event()
thread = threading.Thread(target=release.wait)
thread.start()
print(batch.start_method())
release.set()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_workers_are_forked_while_one_thread_runs_and_spawned_after():
    """A single-threaded process forks its workers (they start with its imports); once a
    second thread runs, forking is unsafe and workers are spawned."""
    done = subprocess.run([sys.executable, "-c", FORK_PROBE], capture_output=True, text=True,
                          timeout=300, check=True)
    lines = done.stdout.split("\n")
    assert lines[0] == "fork"
    assert lines[1] == "fork True True"  # a started worker ran files, with the parent's imports
    assert lines[2] == "spawn"
