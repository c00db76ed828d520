"""Run one job over a batch of files, in this process or in worker processes.

A job is a picklable callable ``work(src, dest) -> report`` (:class:`RetouchWork`,
:class:`ApplyWork`): the exemplar is measured once, in the parent, and each worker receives
the measured edit once, when it starts. Every item yields a report: an item that fails — with
the tool's own error or any other exception — becomes a "failed" report naming the file, and
the batch goes on. Reports come back in the order of the plan whatever the order the workers
finish in, and a worker's output bytes are those of a sequential run (the same functions on
the same inputs).

Workers are spawned (not forked: MediaPipe's graphs run threads that a fork would copy
half-way) and end with the parent (:func:`~mirrorppr_cli.data.workers.die_with_parent`).
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


def worker_count(requested: int | None, items: int) -> int:
    """Processes for ``items`` files: ``requested`` (default 1: this process alone), never
    more than the items.

    Not one per core by default: one process already keeps ~1.5 of 2 cores busy (OpenCV's and
    MediaPipe's threads), and a spawned worker costs ~2 s of CPU before its first file
    (imports, MediaPipe's graphs). Measured with ``benchmarks/bench_workers.py`` on the 2-core
    VM: 32 queries of 2.7 MP took 6.7 s in one process, 9.4 s in two workers (0.71×)."""
    return max(1, min(1 if requested is None else requested, items))


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


# ------------------------------------------------------------------ worker processes

_worker_job: tuple[Callable, type, bool] | None = None


def _start_worker(parent: int, work: Callable, report_type: type, verbose: bool) -> None:
    from .data.workers import die_with_parent

    die_with_parent(parent)
    import cv2

    cv2.setNumThreads(1)  # the workers share the cores; OpenCV's own pool would oversubscribe
    if not verbose:
        from .native_stderr import quiet_libraries

        quiet_libraries()
    global _worker_job
    _worker_job = (work, report_type, verbose)


def _run_in_worker(index: int, src: Path, dest: Path) -> Outcome:
    work, report_type, verbose = _worker_job
    report, message, error = run_item(work, report_type, src, dest, verbose=verbose)
    if error is not None:  # the exception may not pickle; its text is in the message
        error = RuntimeError(f"{type(error).__name__}: {error}")
    if isinstance(getattr(report, "extra", None), dict):
        report.extra["worker_pid"] = os.getpid()
    return index, report, message, error


def _star(args):
    return _run_in_worker(*args)


def run_batch(plan: list[tuple[Path, Path]], work: Callable, report_type: type, *,
              workers: int = 1, verbose: bool = False) -> Iterator[Outcome]:
    """Outcomes of ``work`` on every ``(src, dest)`` of ``plan`` as they finish (workers > 1:
    in that many spawned processes; the caller orders them by index)."""
    if workers <= 1:
        for index, (src, dest) in enumerate(plan):
            yield (index, *run_item(work, report_type, src, dest, verbose=verbose))
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker,
                      initargs=(os.getpid(), work, report_type, verbose)) as pool:
        tasks = [(index, src, dest) for index, (src, dest) in enumerate(plan)]
        yield from pool.imap_unordered(_star, tasks, chunksize=1)


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
