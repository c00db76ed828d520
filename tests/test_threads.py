"""The CLI's processes run numpy's BLAS on one thread (``mirrorppr_cli.threads``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs the console-script entry point with a command that imports numpy and prints the
# OpenBLAS variable and how many threads numpy's import started.
PROBE = """
import os, sys
import mirrorppr_cli.cli as cli

def probe():
    before = len(os.listdir("/proc/self/task"))
    import numpy  # noqa: F401
    print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")) - before,
          os.environ.get("OMP_NUM_THREADS", "unset"))

cli.app = probe
cli.main()
"""


def _probe(env_overrides: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_overrides)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.split()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_the_cli_starts_no_blas_helper_threads():
    variable, started, omp = _probe({})
    assert variable == "1"
    assert started == "0"
    assert omp == "unset"  # torch's OpenMP pool (train, LPIPS, neural backends) is left alone


def test_a_users_own_setting_is_kept():
    variable, _, _ = _probe({"OPENBLAS_NUM_THREADS": "3"})
    assert variable == "3"


def test_too_late_once_numpy_is_loaded():
    code = ("import numpy, os; from mirrorppr_cli.threads import single_threaded_blas; "
            "print(single_threaded_blas())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, env={k: v for k, v in os.environ.items()
                                                       if k != "OPENBLAS_NUM_THREADS"})
    assert done.stdout.strip() == "False"
