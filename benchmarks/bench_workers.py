"""``retouch --workers N`` against one process on the same batch, in the same run, for a short
and a long batch.

A batch of 2.7 MP JPEG queries (scikit-image's astronaut, public domain, upscaled to 1632² and
turned, scaled and mirrored: a different frame each; or the queries of real pairs, ``--real
DIR`` of ``*_before``/``*_after`` files, repeated to the count) and one exemplar pair (the
astronaut with its eyes enlarged) are written to a temporary folder; then for each batch length
of ``--queries`` (the first files of the largest batch) ``mirrorppr retouch --ex … --query DIR
-o OUT/ --workers W`` runs as a new process for W = 1 and W = ``--workers`` (default: the cores
this process may use, what a long batch gets without ``--workers``), alternating,
``--repeats`` times. Reported per length: the median wall time of each and their ratio (the
speed-up against one worker; also of the best runs, the least disturbed on a shared machine),
the CPU time of the whole process tree (``os.wait4`` of the command, which includes its
waited-for workers) and the cores it kept busy on average (CPU ÷ wall), how many processes a
run without ``--workers`` would use, and whether both wrote the same bytes. The load average
before and after is printed too: on a machine shared with other jobs the wall times (and so
the ratio) say little, the CPU times more.

    python benchmarks/bench_workers.py --queries 32,96 --workers 2 --repeats 3
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


def _first(queries: Path, count: int, folder: Path) -> Path:
    """A folder of the first ``count`` queries (links to the files)."""
    folder.mkdir()
    for path in sorted(queries.iterdir())[:count]:
        os.link(path, folder / path.name)
    return folder


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


def _median(runs: list[dict]) -> dict:
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores_busy": round(cpu / wall, 2),
            "best_wall_s": round(min(r["wall_s"] for r in runs), 2),
            "walls_s": [round(r["wall_s"], 2) for r in runs]}


def main() -> None:
    from mirrorppr_cli.batch import available_cores, worker_count

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", default="32,96",
                        help="batch lengths, comma-separated (default 32,96)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes to compare with one (default: the cores available)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", type=Path, help="folder of *_before/*_after real pairs")
    args = parser.parse_args()
    lengths = sorted({int(n) for n in args.queries.split(",")})
    many = args.workers or available_cores()
    if many < 2:
        sys.exit("one core: nothing to compare (give --workers 2 to measure anyway)")
    load_before = os.getloadavg()
    batches = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp)
        pair = (_real_batch(folder, args.real, lengths[-1]) if args.real
                else _astronaut_batch(folder, lengths[-1]))
        for length in lengths:
            queries = _first(folder / "queries", length, folder / f"queries{length}")
            runs: dict[int, list[dict]] = {1: [], many: []}
            for repeat in range(args.repeats):
                order = [1, many] if repeat % 2 == 0 else [many, 1]
                for workers in order:
                    runs[workers].append(_run(pair, queries, folder / f"out{workers}", workers))
            one_out, many_out = folder / "out1", folder / f"out{many}"
            same = (sorted(p.name for p in one_out.iterdir())
                    == sorted(p.name for p in many_out.iterdir())) and all(
                (one_out / p.name).read_bytes() == p.read_bytes() for p in many_out.iterdir())
            one, several = _median(runs[1]), _median(runs[many])
            batches.append({
                "queries": length, "one_process": one,
                f"workers_{many}": {**several, "workers_used": runs[many][0]["workers_used"]},
                "speedup": round(one["wall_s"] / several["wall_s"], 2),
                "speedup_best": round(one["best_wall_s"] / several["best_wall_s"], 2),
                "cpu_ratio": round(several["cpu_s"] / one["cpu_s"], 2),
                "default_workers": worker_count(None, length), "same_bytes": same,
            })
    result = {
        "source": str(args.real or "astronaut 1632² (2.7 MP)"), "cores": available_cores(),
        "repeats": args.repeats,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "batches": batches,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
