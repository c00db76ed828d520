"""``retouch --workers N`` against one process on the same batch, in the same run.

A batch of ``--queries`` 2 MP JPEG queries (scikit-image's astronaut, public domain, upscaled to
1632² and turned, scaled and mirrored: a different frame each; or the queries of real pairs,
``--real DIR`` of ``*_before``/``*_after`` files, repeated to the count) and one exemplar pair
(the astronaut with its eyes enlarged) are written to a temporary folder; then ``mirrorppr
retouch --ex … --query DIR -o OUT/ --workers W`` runs as a new process for W = 1 and W =
``--workers``, alternating, ``--repeats`` times. Reported: the median wall time of each, their
ratio (the speed-up), the CPU time of the whole process tree (``os.wait4`` of the command, which
includes its waited-for workers) and whether both wrote the same bytes.

    python benchmarks/bench_workers.py --queries 32 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _astronaut_batch(folder: Path, count: int) -> tuple[Path, Path]:
    from skimage import data

    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import OpRequest, plan_warp

    base = cv2.resize(data.astronaut(), (1632, 1632), interpolation=cv2.INTER_CUBIC)
    after = apply_local_warp(base, plan_warp(find_faces(base)[0].points,
                                             [OpRequest("eye_resize", 50)]))
    Image.fromarray(base).save(folder / "before.png")
    Image.fromarray(after).save(folder / "after.png")
    queries = folder / "queries"
    queries.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        turn = cv2.getRotationMatrix2D((816, 816), rng.uniform(-8, 8), rng.uniform(0.85, 1.15))
        source = np.ascontiguousarray(np.fliplr(base)) if i % 2 else base
        frame = cv2.warpAffine(source, turn, (1632, 1632), borderMode=cv2.BORDER_REFLECT)
        Image.fromarray(frame).save(queries / f"q{i:03d}.jpg", quality=92)
    return folder / "before.png", folder / "after.png"


def _real_batch(folder: Path, pairs: Path, count: int) -> tuple[Path, Path]:
    befores = sorted(p for p in pairs.iterdir() if "_before" in p.stem)
    if not befores:
        sys.exit(f"{pairs}: no *_before files")
    queries = folder / "queries"
    queries.mkdir()
    for i in range(count):
        source = befores[(i + 1) % len(befores)]
        shutil.copy(source, queries / f"q{i:03d}{source.suffix.lower()}")
    before = befores[0]
    after = next(p for p in pairs.iterdir() if p.stem == before.stem.replace("_before", "_after"))
    return before, after


def _run(pair: tuple[Path, Path], queries: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "mirrorppr_cli", "retouch", "--ex", *map(str, pair),
               "--query", str(queries), "-o", f"{out}/", "--workers", str(workers), "--json",
               "--no-check"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    summary = json.loads(stdout)["summary"]
    if summary["failed"]:
        sys.exit(f"{summary['failed']} queries failed with --workers {workers}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "workers_used": summary["workers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", type=Path, help="folder of *_before/*_after real pairs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp)
        pair = (_real_batch(folder, args.real, args.queries) if args.real
                else _astronaut_batch(folder, args.queries))
        runs: dict[int, list[dict]] = {1: [], args.workers: []}
        for repeat in range(args.repeats):
            order = [1, args.workers] if repeat % 2 == 0 else [args.workers, 1]
            for workers in order:
                runs[workers].append(_run(pair, folder / "queries", folder / f"out{workers}",
                                          workers))
        same = all((folder / "out1" / p.name).read_bytes() == p.read_bytes()
                   for p in (folder / f"out{args.workers}").iterdir())
    one = statistics.median(r["wall_s"] for r in runs[1])
    many = statistics.median(r["wall_s"] for r in runs[args.workers])
    result = {
        "queries": args.queries, "source": str(args.real or "astronaut 1632² (2.7 MP)"),
        "cores": len(os.sched_getaffinity(0)),
        "one_process": {"wall_s": round(one, 2), "cpu_s": round(statistics.median(
            r["cpu_s"] for r in runs[1]), 2)},
        f"workers_{args.workers}": {"wall_s": round(many, 2), "cpu_s": round(statistics.median(
            r["cpu_s"] for r in runs[args.workers]), 2),
            "workers_used": runs[args.workers][0]["workers_used"]},
        "speedup": round(one / many, 2),
        "same_bytes": same,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
