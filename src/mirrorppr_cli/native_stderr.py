"""File descriptor 2 and the native libraries that write to it.

libjpeg (inside OpenCV), libtiff (inside Pillow), TFLite, MediaPipe and absl print straight to
file descriptor 2, not through Python's ``sys.stderr``: warnings about damaged data, start-up
notices, sometimes from their own threads after the call that started them has returned.
Three tools here, all holding :data:`LOCK` while fd 2 is swapped, so that two threads never
interleave their swaps (which could leave fd 2 pointing at a scratch file for good):

* :func:`silenced` — fd 2 goes to ``/dev/null`` while a block runs (MediaPipe graphs);
* :func:`captured` — fd 2 goes to a scratch file while a block runs and what was written is
  handed back (libjpeg's "Corrupt JPEG data" warnings: see :mod:`mirrorppr_cli.io`); it is
  then passed on to fd 2 as it would have been;
* :func:`keep_for_the_tool` — the CLI's normal runs: fd 2 goes to ``/dev/null`` for good and
  Python's ``sys.stderr`` (the tool's own messages, tracebacks) to a copy of the real stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

LOCK = threading.RLock()
#: At most this much of what a block wrote to fd 2 is handed back by :func:`captured`.
MAX_CAPTURED = 64 * 1024

_scratch: int | None = None  # fd of the scratch file used by `captured`
_scratch_file = None  # keeps a TemporaryFile (where memfd_create is missing) open


def _after_fork_in_child() -> None:
    """A forked child gets fresh state: its parent's lock may be held by a thread that does
    not exist in the child, and the scratch file's offset is shared with the parent."""
    global LOCK, _scratch, _scratch_file
    LOCK = threading.RLock()
    _scratch, _scratch_file = None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _dup_fd2() -> int | None:
    """A copy of fd 2, or None when fd 2 is closed."""
    try:
        return os.dup(2)
    except OSError:
        return None


def _restore_fd2(saved: int | None) -> None:
    if saved is None:
        with contextlib.suppress(OSError):
            os.close(2)
        return
    os.dup2(saved, 2)
    os.close(saved)


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Send fd 2 to ``/dev/null`` while the block runs."""
    with LOCK:
        _flush_python_stderr()
        saved = _dup_fd2()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            _restore_fd2(saved)
            os.close(devnull)


class Captured:
    """What the block of :func:`captured` wrote to fd 2 (set when the block ends)."""

    text: bytes = b""


def _scratch_fd() -> int:
    global _scratch, _scratch_file
    if _scratch is None:
        if hasattr(os, "memfd_create"):
            _scratch = os.memfd_create("mirrorppr-fd2", getattr(os, "MFD_CLOEXEC", 0))
        else:  # pragma: no cover - not Linux
            _scratch_file = tempfile.TemporaryFile()
            _scratch = _scratch_file.fileno()
    return _scratch


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Send fd 2 to a scratch file while the block runs; yields a :class:`Captured` whose
    ``text`` holds what was written (the first :data:`MAX_CAPTURED` bytes) once the block
    ends. That text is then written to fd 2, where it would have gone (``/dev/null`` in the
    CLI's normal runs)."""
    result = Captured()
    with LOCK:
        _flush_python_stderr()
        scratch = _scratch_fd()
        os.ftruncate(scratch, 0)
        os.lseek(scratch, 0, os.SEEK_SET)
        saved = _dup_fd2()
        os.dup2(scratch, 2)
        try:
            yield result
        finally:
            _restore_fd2(saved)
            os.lseek(scratch, 0, os.SEEK_SET)
            result.text = os.read(scratch, MAX_CAPTURED)
            os.ftruncate(scratch, 0)
            if result.text:
                with contextlib.suppress(OSError):
                    os.write(2, result.text)


_kept: int | None = None  # the real stderr's fd while `keep_for_the_tool` is in force


def keep_for_the_tool() -> None:
    """From now on fd 2 goes to ``/dev/null`` and Python's ``sys.stderr`` to a copy of the
    real stderr: native libraries' notices and warnings no longer reach the user, the tool's
    own lines (and a traceback, should one happen) do. For the CLI's process only: child
    processes inherit a silent fd 2 (multiprocessing children also inherit ``sys.stderr``
    when forked). :func:`give_back_to_native` undoes it (``--verbose``)."""
    global _kept
    if _kept is not None:
        return
    with LOCK:
        _flush_python_stderr()
        kept = _dup_fd2()
        if kept is None:
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        os.set_inheritable(kept, False)
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        sys.stderr = open(kept, "w", buffering=1, encoding=encoding,  # noqa: SIM115
                          errors="backslashreplace", closefd=False)
        _kept = kept


def give_back_to_native() -> None:
    """Undo :func:`keep_for_the_tool`: fd 2 is the real stderr again, for everyone."""
    global _kept
    if _kept is None:
        return
    with LOCK:
        _flush_python_stderr()
        os.dup2(_kept, 2)
        sys.stderr = sys.__stderr__
        _kept = None


def quiet_libraries() -> None:
    """Normal runs keep stderr for the tool's own lines: native libraries' output (libjpeg's
    and libtiff's warnings, TFLite's and absl's notices, some from their own threads) goes to
    /dev/null; Python warnings are not shown (unless -W or $PYTHONWARNINGS asks for them), nor
    libraries' log records (Pillow logs "More samples per pixel than can be decoded" at
    ERROR, which Python's last-resort handler would print)."""
    import logging
    import warnings

    keep_for_the_tool()
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())
