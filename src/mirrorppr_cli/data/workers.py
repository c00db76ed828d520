"""Worker processes that end with the process that started them.

A pool worker waits for work on a pipe its parent writes to; when the parent is killed
(SIGKILL, the OOM killer) nothing closes that pipe, and the workers (and multiprocessing's
resource tracker, which lives until every holder of its pipe has exited) would stay for
ever. :func:`die_with_parent` is the pool initializer that prevents it. This module imports
nothing heavy: a spawned worker unpickles the initializer, and so imports this module, before
anything else of the project (MediaPipe takes seconds), so that it is armed at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: Linux ``prctl`` option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Seconds between checks of the parent, where the kernel cannot be asked to signal.
PARENT_POLL_S = 0.5


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker as soon as ``parent`` (the process that started it)
    is gone, killed with SIGKILL included. An idle worker would otherwise wait for work
    forever, and the resource tracker with it (it lives until every holder of its pipe,
    workers included, has exited).

    Linux: the kernel sends this worker SIGKILL when the parent dies (``prctl``
    ``PR_SET_PDEATHSIG``; strictly, when the parent's thread that started the worker ends:
    :func:`~mirrorppr_cli.data.build.run_local` starts and waits for its pool on one
    thread). Elsewhere, or if ``prctl`` is refused, a daemon thread checks ``os.getppid()``
    every :data:`PARENT_POLL_S` seconds (an orphan is adopted by another process). Either
    way, a parent that died before this ran is noticed here. (Windows keeps a dead parent's
    id in ``getppid()``: there the check does nothing; the project's builds run on Linux.)
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent",
                         daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
