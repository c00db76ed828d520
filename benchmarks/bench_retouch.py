"""Speed of ``mirrorppr retouch`` (warp backend) on a 1024² query, one core.

Run from the repository root::

    python benchmarks/bench_retouch.py [--repeats N] [--out PATH]

Measured in one process, after a warm-up (MediaPipe's graphs started once, as in a batch),
with malloc keeping freed memory as the ``mirrorppr`` command does (``mirrorppr_cli.memory``):

* ``first query``: everything one ``retouch`` call does for one query — read the exemplar pair
  and the query (PNG), landmarks of all three, the edit estimate (optical flow), the
  correspondence and warp, and writing the output PNG;
* ``further query``: what each additional query of a batch sharing the exemplar costs (read,
  landmarks, correspondence + warp, write);
* the split of both by stage: io, exemplar (landmarks, flow, catalog fit), landmarks (query),
  transfer (correspondence + warp);
* for the default mode (hybrid) with PNG and with JPEG (quality 95) files, and for flow mode.

Targets from issue #5: ≤ 250 ms for one query and ≤ 100 ms for each further query.
The exemplar is the astronaut (1024², bicubic) with three catalog operations; the queries are
the same portrait mirrored and rotated/scaled, so their faces differ in place and size.
Results: a table and JSON (``--out``, default ``bench-results/retouch.json``).

With ``--real DIR`` it measures instead real before/after JPEG pairs (the survey's
``survey-qNN-example-source.jpg``, ``-example-retouched.jpg``, ``-query-source.jpg``), each in
child processes: a cold ``mirrorppr retouch`` process (wall, CPU, peak RSS), a warm exemplar
and further queries (CPU and wall, medians of ``--repeats``), the peak RSS of one exemplar +
one query, and a further query on a ~24 MP upscaled query. ``--baseline TREE`` measures another
source tree (e.g. ``git worktree add /tmp/wt-base COMMIT``) interleaved with this one and prints
ratios current/baseline; ``--pairs q20,q27`` limits the pairs. JSON: ``--out``, default
``bench-results/retouch_real.json``. Details: ``benchmarks/_real_speed.py``::

    python benchmarks/bench_retouch.py --real DIR [--baseline TREE] [--pairs q20,q27] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from mirrorppr_cli.geometric.apply import apply_exemplar  # noqa: E402
from mirrorppr_cli.geometric.landmarks import find_faces  # noqa: E402
from mirrorppr_cli.geometric.measure import measure_exemplar  # noqa: E402
from mirrorppr_cli.geometric.mls import apply_local_warp  # noqa: E402
from mirrorppr_cli.io import read_image, with_pixels, write_image  # noqa: E402
from mirrorppr_cli.memory import keep_freed_memory  # noqa: E402
from mirrorppr_cli.ops import OpRequest, plan_warp  # noqa: E402

TARGET_FIRST_MS, TARGET_FURTHER_MS = 250.0, 100.0


def make_inputs(folder: Path, ext: str) -> tuple[Path, Path, list[Path]]:
    """Exemplar pair and two queries at 1024², written as ``ext`` (png or jpg, quality 95)."""
    img = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    points = find_faces(img)[0].points
    ops = [OpRequest("eye_resize", 60), OpRequest("nose_alar", -50), OpRequest("mouth_resize", 40)]
    after = apply_local_warp(img, plan_warp(points, ops))
    rotated = cv2.warpAffine(img, cv2.getRotationMatrix2D((512, 512), 8, 0.85), (1024, 1024),
                             borderMode=cv2.BORDER_REFLECT)
    paths = {"before": img, "after": after, "q1": np.fliplr(img).copy(), "q2": rotated}
    for name, pixels in paths.items():
        Image.fromarray(pixels).save(folder / f"{name}.{ext}", quality=95)
    return (folder / f"before.{ext}", folder / f"after.{ext}",
            [folder / f"q1.{ext}", folder / f"q2.{ext}"])


class Clock:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - self.last) * 1000
        self.last = now


def retouch_one(before: Path, after: Path, query: Path, out: Path, exemplar=None, mode="hybrid"):
    """The retouch job's steps (default mode), timed; returns ``(stage ms, exemplar)``.

    "exemplar" = landmarks of both exemplar images, the flow, and (catalog/hybrid) the
    catalog fit; "transfer" = the query-side correspondence and warp.
    """
    clock = Clock()
    if exemplar is None:
        b = np.ascontiguousarray(read_image(before).rgb8())
        a = np.ascontiguousarray(read_image(after).rgb8())
        clock.lap("io")
        exemplar = measure_exemplar(b, a, mode=mode)
        clock.lap("exemplar")
    picture = read_image(query)
    clock.lap("io")
    qp = find_faces(picture.rgb8())[0].points
    clock.lap("landmarks")
    pixels = apply_exemplar(exemplar, picture.pixels, qp)
    clock.lap("transfer")
    write_image(with_pixels(picture, pixels), out, force=True)
    clock.lap("io")
    return clock.stages, exemplar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default bench-results/retouch.json, with --real "
                        "bench-results/retouch_real.json)")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="measure the real JPEG pairs in DIR (child processes) instead")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="with --real: also measure this source tree, interleaved")
    parser.add_argument("--pairs", help="with --real: comma-separated pair names (q20,q27)")
    parser.add_argument("--cold-repeats", type=int, default=1,
                        help="with --real: cold processes per pair and tree (median)")
    parser.add_argument("--big-repeats", type=int, default=1,
                        help="with --real: 24 MP queries timed per tree (median)")
    parser.add_argument("--big-pair", help="with --real: the pair whose query is upscaled "
                        "to 24 MP (default: the query nearest 3:2)")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="with --real: import the trees in place instead of copying their "
                        "src/ and backends/ at the start")
    args = parser.parse_args()
    if min(args.repeats, args.cold_repeats, args.big_repeats) < 1:
        parser.error("repeats must be at least 1")
    if args.real is not None:
        from _real_speed import run_real  # benchmarks/ is sys.path[0] when run as a script

        wanted = [p.strip() for p in args.pairs.split(",") if p.strip()] if args.pairs else None
        # absolute: the children run in a scratch folder
        return run_real(args.real.resolve(), baseline=args.baseline and args.baseline.resolve(),
                        pairs=wanted, repeats=args.repeats,
                        cold_repeats=args.cold_repeats, big_repeats=args.big_repeats,
                        big_pair=args.big_pair, snapshot=not args.no_snapshot,
                        out=args.out or Path("bench-results/retouch_real.json"))
    if args.baseline or args.pairs or args.big_pair or args.no_snapshot:
        parser.error("--baseline, --pairs, --big-pair and --no-snapshot need --real")
    args.out = args.out or Path("bench-results/retouch.json")
    cv2.setNumThreads(1)
    keep_freed_memory()  # as `mirrorppr` does at start-up (mirrorppr_cli.memory)
    runs: dict[str, tuple[list, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, ext in (("hybrid", "png"), ("hybrid", "jpg"), ("flow", "png")):
            folder = Path(tmp) / f"{mode}-{ext}"
            folder.mkdir()
            before, after, queries = make_inputs(folder, ext)
            retouch_one(before, after, queries[0], folder / f"warm.{ext}", mode=mode)  # warm-up
            first, further = [], []
            for k in range(args.repeats):
                stages, ex = retouch_one(before, after, queries[k % 2], folder / f"o1.{ext}",
                                         mode=mode)
                first.append(stages)
                stages, _ = retouch_one(before, after, queries[(k + 1) % 2],
                                        folder / f"o2.{ext}", ex, mode=mode)
                further.append(stages)
            runs[f"{mode} {ext}"] = (first, further)

    def summarise(runs: list[dict]) -> dict:
        totals = [sum(r.values()) for r in runs]
        names = sorted({s for r in runs for s in r})
        return {"median_ms": statistics.median(totals), "min_ms": min(totals),
                "stages_median_ms": {s: statistics.median(r.get(s, 0.0) for r in runs)
                                     for s in names}}

    report = {"runs": {name: {"first_query": summarise(a), "further_query": summarise(b)}
                       for name, (a, b) in runs.items()},
              "targets_ms": {"first": TARGET_FIRST_MS, "further": TARGET_FURTHER_MS},
              "repeats": args.repeats, "threads": 1}
    for name, result in report["runs"].items():
        for key, target in (("first_query", TARGET_FIRST_MS), ("further_query", TARGET_FURTHER_MS)):
            r = result[key]
            split = ", ".join(f"{s} {v:.1f}" for s, v in r["stages_median_ms"].items())
            verdict = "PASS" if r["median_ms"] <= target else "FAIL"
            print(f"{name:11s} {key:14s} median {r['median_ms']:7.1f} ms (min {r['min_ms']:.1f}) "
                  f"target ≤ {target:.0f} ms {verdict}   [{split}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
