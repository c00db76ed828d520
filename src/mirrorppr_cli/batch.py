"""Run one job over a batch of files, in this process or in worker processes.

A job is a picklable callable ``work(src, dest) -> report`` (:class:`RetouchWork`,
:class:`ApplyWork`): the exemplar is measured once, in the parent, and each worker reads the
measured edit once, with its first file. Workers can be started before the job exists
(:class:`Workers`), so that they are ready when it is. Every item yields a report: an item
that fails — with the tool's own error or any other exception — becomes a "failed" report
naming the file, and the batch goes on. Reports come back in the order of the plan whatever
the order the workers finish in, and a worker's output bytes are those of a sequential run
(the same functions on the same inputs).

``workers`` = N means N processes retouch: this one and N − 1 started for the batch. This
process has everything imported and the detectors built already, so it works from the first
file; a forked worker has the imports too, a spawned one spends ~2 s of CPU on them (while
the exemplar is measured, when the workers were started before it). Files are handed out
one at a time to whichever process is free (each started worker has at most two handed to
it and not yet finished).

Workers are forked while this process runs a single thread (before MediaPipe's graphs
start theirs: a fork copies only the forking thread, and another's locks would stay locked
in the child), so that they start with its imports; spawned otherwise (:func:`start_method`).
They end with the parent (:func:`~mirrorppr_cli.data.workers.die_with_parent`).
Each process runs one file at a time on one core: OpenCV is set to one thread in the workers
and, while they run, in this process; OpenBLAS runs one thread in every process of the tool
(:mod:`mirrorppr_cli.threads`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import MirrorError

#: ``(plan index, report, message to print or None, the exception for --verbose or None)``
Outcome = tuple[int, object, str | None, BaseException | None]

#: A default run (no ``--workers``) uses every core only for a batch of at least this many
#: files; a shorter one runs in this process alone. What a second process can win is small on
#: a short batch: before the first query this process spends ~3 s importing and measuring the
#: exemplar, which no worker shares (a forked worker waits meanwhile), the worker's first file
#: starts MediaPipe's graphs again, and one process already keeps a core busy with its
#: threads. Measured on the quiet 2-core VM, 2.7 MP queries, two (forked) processes against
#: one (``python benchmarks/bench_workers.py --queries 4,8,16,32,96 --repeats 3``, medians):
#: 4 queries 0.94×, 8 queries 1.08×, 16 queries 1.22×, 32 queries 1.31×, 96 queries 1.57×.
MIN_BATCH_FOR_WORKERS = 8

#: Files handed to a started worker and not yet finished, at most: the one it runs and the
#: next, so that it never waits for this process (busy with a file of its own) to send one.
WORKER_PREFETCH = 2


def available_cores() -> int:
    """Cores this process may run on (``os.process_cpu_count``, its CPU affinity where that
    is missing), at least 1."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return max(count() or 1, 1)
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def worker_count(requested: int | None, items: int) -> int:
    """Processes for ``items`` files: ``requested``, or by default every core
    (:func:`available_cores`) for a batch of :data:`MIN_BATCH_FOR_WORKERS` files or more and
    this process alone for a shorter one (and on one core); never more than the items."""
    if requested is None:
        requested = available_cores() if items >= MIN_BATCH_FOR_WORKERS else 1
    return max(1, min(requested, items))


def unexpected_failure(src: Path, error: BaseException, verbose: bool) -> str:
    """One line for an item that failed with an exception that is not the tool's own."""
    text = " ".join(str(error).split())
    text = text if len(text) <= 240 else text[:237] + "…"
    where = "" if verbose else "; --verbose shows where"
    return (f"{src}: failed unexpectedly ({type(error).__name__}{': ' + text if text else ''})"
            f"; please report it{where}")


def run_item(work: Callable, report_type: type, src: Path, dest: Path, *,
             verbose: bool = False) -> tuple[object, str | None, BaseException | None]:
    """``(report, error line or None, unexpected exception or None)`` for one file."""
    try:
        return work(src, dest), None, None
    except MirrorError as error:
        text = str(error) if str(src) in str(error) else f"{src}: {error}"  # named
        return (report_type(input=str(src), status="failed", error=text,
                            exit_code=error.exit_code), text, None)
    except Exception as error:  # noqa: BLE001 - one item's crash must not stop the rest
        message = unexpected_failure(src, error, verbose)
        return (report_type(input=str(src), status="failed", error=message, exit_code=1),
                message, error)


def _mark_process(report: object) -> None:
    """Say in the report which process wrote it (``extra["worker_pid"]``)."""
    if isinstance(getattr(report, "extra", None), dict):
        report.extra["worker_pid"] = os.getpid()


# ------------------------------------------------------------------ worker processes

def start_method() -> str:
    """How to start workers: ``"fork"`` while this process runs one thread (Linux: one entry
    in ``/proc/self/task``), ``"spawn"`` otherwise.

    A forked worker starts with this process's imports (numpy, OpenCV, MediaPipe, the
    backend: ~2 s of CPU a spawned one spends first). Forking is safe only while no other
    thread runs, native ones included (OpenCV's pool, MediaPipe's graphs, OpenBLAS's
    helpers): the child gets the memory of their locks but not the threads that would release
    them. The CLI starts its workers after the backend's imports and before anything starts a
    thread; a process that has (a test, a batch started after detections) spawns."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: no way to count native threads here
        return "spawn"
    return "fork" if threads == 1 else "spawn"


class Workers:
    """``count`` worker processes, started now, before their job exists: forked, a worker has
    this process's imports; spawned (:func:`start_method`), its imports (~2 s of CPU: numpy,
    OpenCV, MediaPipe, the backend's modules, from unpickling ``preload``, e.g. the backend)
    overlap with what this process does meanwhile (measuring the exemplar) instead of
    delaying the worker's first file. The job comes later, with :meth:`use` (pickled once,
    to a file in a private temporary folder that each worker reads when its first file
    arrives; the folder goes with :meth:`close`).

    A context manager: leaving it shuts the workers down (after the files in hand when the
    block ended normally; at once, ending them, when it ended with an exception)."""

    def __init__(self, count: int, *, preload: object = None, verbose: bool = False) -> None:
        import pickle
        from concurrent.futures import ProcessPoolExecutor

        self.count = max(count, 0)
        self.pool = None
        self.start_method = start_method()
        self._job_file: Path | None = None
        self._processes: list = []
        if self.count:
            import sys

            for stream in (sys.stdout, sys.stderr):  # a forked child would write them again
                stream.flush()
            running = set(multiprocessing.active_children())
            self.pool = ProcessPoolExecutor(
                self.count, mp_context=multiprocessing.get_context(self.start_method),
                initializer=_start_worker,
                initargs=(os.getpid(), pickle.dumps(preload), verbose))
            for _ in range(self.count):  # spawn: each submission starts one; fork: the first all
                self.pool.submit(os.getpid)
            # the executor keeps its processes private; these are the ones it just started
            self._processes = list(set(multiprocessing.active_children()) - running)

    def use(self, work: Callable, report_type: type) -> Path:
        """The job the workers run from now on: the file that holds it."""
        import pickle
        import tempfile

        if self._job_file is None:
            self._job_file = Path(tempfile.mkdtemp(prefix="mirrorppr-job-")) / "job.pickle"
        self._job_file.write_bytes(pickle.dumps((work, report_type)))
        return self._job_file

    def close(self, *, at_once: bool = False) -> None:
        """Shut the workers down: after the files in hand, or ``at_once`` (ended)."""
        if self.pool is not None:
            if at_once:  # an error, or Ctrl-C: a worker still importing is not waited for
                self.pool.shutdown(wait=False, cancel_futures=True)
                for process in self._processes:
                    process.terminate()
                for process in self._processes:
                    process.join()
            else:
                self.pool.shutdown(wait=True)
            self.pool = None
        if self._job_file is not None:
            import shutil

            shutil.rmtree(self._job_file.parent, ignore_errors=True)
            self._job_file = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.close(at_once=kind is not None)


def _start_worker(parent: int, preload: bytes, verbose: bool) -> None:
    """Pool initializer. ``preload`` is pickled: in a spawned worker, unpickling it imports
    numpy, OpenCV, MediaPipe and the backend's modules, so it is unpickled here, after the
    worker is tied to its parent and its thread pools are limited, not with the initializer's
    arguments (a forked worker has them imported already)."""
    from .data.workers import die_with_parent

    die_with_parent(parent)
    from .threads import single_threaded_blas

    single_threaded_blas()  # before numpy loads, below
    import pickle

    import cv2

    cv2.setNumThreads(1)  # the workers share the cores; OpenCV's own pool would oversubscribe
    if not verbose:
        from .native_stderr import quiet_libraries

        quiet_libraries()
    pickle.loads(preload)


#: This worker's job, ``(job file, work, report type)``, read when its first file came.
_worker_job: tuple[Path, Callable, type] | None = None


def _run_in_worker(job_file: Path, verbose: bool, index: int, src: Path, dest: Path) -> Outcome:
    global _worker_job
    if _worker_job is None or _worker_job[0] != job_file:
        import pickle

        _worker_job = (job_file, *pickle.loads(job_file.read_bytes()))
    _, work, report_type = _worker_job
    report, message, error = run_item(work, report_type, src, dest, verbose=verbose)
    if error is not None:  # the exception may not pickle; its text is in the message
        error = RuntimeError(f"{type(error).__name__}: {error}")
    _mark_process(report)
    return index, report, message, error


def run_batch(plan: list[tuple[Path, Path]], work: Callable, report_type: type, *,
              workers: int | Workers = 1, verbose: bool = False) -> Iterator[Outcome]:
    """Outcomes of ``work`` on every ``(src, dest)`` of ``plan`` as they finish (the caller
    orders them by index). ``workers``: processes, this one included (N > 1: N − 1 are
    started here and shut down after the batch), or :class:`Workers` started earlier (this
    process works beside them; their owner shuts them down)."""
    if isinstance(workers, Workers):
        if workers.count and len(plan) > 1:
            yield from _run_shared(plan, work, report_type, workers, verbose)
            return
    elif workers > 1 and len(plan) > 1:
        with Workers(min(workers, len(plan)) - 1, verbose=verbose) as started:
            yield from _run_shared(plan, work, report_type, started, verbose)
        return
    for index, (src, dest) in enumerate(plan):
        yield (index, *run_item(work, report_type, src, dest, verbose=verbose))


def _run_shared(plan: list[tuple[Path, Path]], work: Callable, report_type: type,
                workers: Workers, verbose: bool) -> Iterator[Outcome]:
    """``plan`` in this process and the started ``workers``, each taking the next file when
    it is free. A worker that dies (killed, out of memory) fails the files it held, with a
    message that says so; the rest of the batch is done here."""
    import queue
    import threading
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    import cv2

    todo = deque(enumerate(plan))
    lock = threading.Lock()
    finished: queue.SimpleQueue = queue.SimpleQueue()  # the workers' outcomes
    sent = received = 0
    job_file = workers.use(work, report_type)
    pool = workers.pool

    def fail(index: int, src: Path, error: BaseException) -> None:
        if isinstance(error, BrokenProcessPool):
            message = (f"{src}: a worker process ended unexpectedly (killed or out of "
                       "memory?); run again with --skip-existing")
        else:  # e.g. an outcome that does not pickle
            message = unexpected_failure(src, error, verbose)
        finished.put((index, report_type(input=str(src), status="failed", error=message,
                                         exit_code=1), message, error))

    def send() -> None:
        """The next file to the workers, if one is left and they still run."""
        nonlocal sent
        with lock:
            if not todo:
                return
            index, (src, dest) = todo.popleft()
            try:
                future = pool.submit(_run_in_worker, job_file, verbose, index, src, dest)
            except (BrokenProcessPool, RuntimeError):  # broken, or shutting down
                todo.appendleft((index, (src, dest)))  # this process does it
                return
            sent += 1
        future.add_done_callback(lambda done: arrived(done, index, src))

    def arrived(done, index: int, src: Path) -> None:  # on the pool's thread
        error = done.exception()
        if error is None:
            finished.put(done.result())
        else:
            fail(index, src, error)
        send()

    for _ in range(workers.count * WORKER_PREFETCH):
        send()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # this process is one of the workers now
    try:
        while True:
            while True:  # what the workers finished meanwhile
                try:
                    outcome = finished.get_nowait()
                except queue.Empty:
                    break
                received += 1
                yield outcome
            with lock:
                if not todo:
                    break
                index, (src, dest) = todo.popleft()
            report, message, error = run_item(work, report_type, src, dest, verbose=verbose)
            _mark_process(report)
            yield index, report, message, error
        while True:
            with lock:  # nothing is left to send: ``sent`` is final
                if received >= sent:
                    break
            received += 1
            yield finished.get()
    finally:
        cv2.setNumThreads(threads)


# ------------------------------------------------------------------ the jobs


@dataclass(frozen=True)
class RetouchWork:
    """``retouch``'s job on one query: the backend, the edit it measured, the run's settings
    (:class:`~mirrorppr_cli.backend.RetouchSettings`)."""

    backend: object
    edit: object
    settings: object

    def __call__(self, src: Path, dest: Path):
        return self.backend.retouch_file(self.edit, src, dest, self.settings)


@dataclass(frozen=True)
class ApplyWork:
    """``apply``'s job on one image: named operations, the backend (picklable: the warp
    backend holds its options only) and the options of the run."""

    requests: tuple = ()
    backend: object = None
    face_index: int | None = None
    force: bool = False
    output_format: str | None = None
    max_pixels: int | None = None
    exports: tuple[str, ...] = ()
    review_dir: Path | None = None

    def __call__(self, src: Path, dest: Path):
        from .apply_job import apply_ops_to_file

        return apply_ops_to_file(src, dest, list(self.requests), self.backend,
                                 face_index=self.face_index, force=self.force,
                                 output_format=self.output_format, max_pixels=self.max_pixels,
                                 exports=self.exports, review_dir=self.review_dir)
