"""Process-wide memory tuning for the command line tool.

glibc's malloc hands blocks above its mmap threshold (128 KiB, raised dynamically up to the
largest freed block) straight from the kernel and gives freed heap memory back when more than
its trim threshold sits at the top. Each reuse then faults the pages in again: on the
development VM a 1024² retouch spent ~15–20 ms of ~240 on such page faults (image decoding,
optical-flow buffers, the fit's temporaries). Keeping freed memory for reuse removes that; the
price is that the process keeps its peak memory until it exits, which suits a command that
processes images and ends.

Freed memory is only reused within the malloc arena it came from, and glibc gives each thread
that allocates an arena of its own (up to 8 per core). MediaPipe's graphs run on their own
threads, so their image copies, masks and tensors (~120 MB for the pose graph) sat in three or
more thread arenas whose free space the main thread's arrays never reused. With one arena
(:data:`ARENA_MAX`) for all threads, a 2 MP exemplar + query with a body edit peaks 11-23 MB
lower (survey pair q24: 457 → 439 MB); the threads take turns on its lock, which cost nothing
measurable (the main thread waits while a graph runs).

Only the CLI (and the speed benchmark, which stands in for it) call this; importing the
package changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: Blocks up to this size come from malloc's heap (glibc accepts at most 32 MiB here on every
#: version); larger ones (a 4K RGB image is 36 MB) are still mapped and unmapped per use.
MMAP_THRESHOLD = 32 << 20
#: Freed memory at the heap's top is given back only beyond this.
TRIM_THRESHOLD = 512 << 20
#: malloc arenas: one, shared by all threads (see the module docstring).
ARENA_MAX = 1

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse, in one arena (see the module
    docstring). Call it before MediaPipe's graphs start: threads that already hold an arena
    keep it.

    Returns True when all three settings took effect; False on other C libraries (macOS, Windows,
    musl), where nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all([mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                mallopt(_M_ARENA_MAX, ARENA_MAX)])
