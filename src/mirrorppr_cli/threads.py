"""Thread pools of the numerical libraries, for the command line tool's processes.

numpy's OpenBLAS starts one helper thread per further core when numpy loads, and a helper
spins while it waits for work. The tool's matrix products are small (landmark fits, the
moving-least-squares sums of a coarse grid), so the helpers never shortened a run; they only
burnt CPU. Measured on the 2-core VM with real survey pairs, OpenBLAS's default pool against
one thread, same outputs: exemplar q20 1.87 → 1.30 s of CPU
(wall 1.30 → 1.18 s), q16 3.18 → 2.44 s (wall 2.13 → 2.12 s); a further query 0.47 → 0.32 s
of CPU at the same wall time; a 24 MP query 2.2 → 1.9 s of CPU, wall 1.5–1.7 s either way. In
a batch with workers they also took CPU from the other processes. OpenCV's pool, which does
shorten runs, is left alone here, and so are OpenMP's and MKL's (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``): torch reads them, and ``train``, ``bench``'s LPIPS and the neural
backends on a CPU need its threads.

Only the CLI and the batch's worker processes call this; importing the package changes
nothing.
"""

from __future__ import annotations

import os
import sys

#: Read once, when OpenBLAS loads (with numpy); numpy's wheels bundle OpenBLAS.
BLAS_THREAD_VARIABLE = "OPENBLAS_NUM_THREADS"


def single_threaded_blas() -> bool:
    """Ask numpy's OpenBLAS for one thread, unless the user set :data:`BLAS_THREAD_VARIABLE`.

    Effective only before numpy is imported; returns whether it was in time."""
    os.environ.setdefault(BLAS_THREAD_VARIABLE, "1")
    return "numpy" not in sys.modules
