"""Speed of ``mirrorppr retouch`` (warp backend) on a 1024² query, one core.

Run from the repository root::

    python benchmarks/bench_retouch.py [--repeats N] [--out PATH]

Measured in one process, after a warm-up (MediaPipe's graphs started once, as in a batch):

* ``first query``: everything one ``retouch`` call does for one query — read the exemplar pair
  and the query (PNG), landmarks of all three, the edit estimate (optical flow), the
  correspondence and warp, and writing the output PNG;
* ``further query``: what each additional query of a batch sharing the exemplar costs (read,
  landmarks, correspondence + warp, write);
* the split of both by stage: io, landmarks, edit estimate, transfer (correspondence + warp).

Targets from issue #5: ≤ 250 ms for one query and ≤ 100 ms for each further query.
The exemplar is the astronaut (1024², bicubic) with three catalog operations; the queries are
the same portrait mirrored and rotated/scaled, so their faces differ in place and size.
Results: a table and JSON (``--out``, default ``bench-results/retouch.json``).
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

from mirrorppr_cli.io import read_image, with_pixels, write_image  # noqa: E402
from mirrorppr_cli.landmarks import find_faces  # noqa: E402
from mirrorppr_cli.ops import OpRequest, plan_warp  # noqa: E402
from mirrorppr_cli.transfer import estimate_edit, transfer  # noqa: E402
from mirrorppr_cli.warp import apply_local_warp  # noqa: E402

TARGET_FIRST_MS, TARGET_FURTHER_MS = 250.0, 100.0


def make_inputs(folder: Path) -> tuple[Path, Path, list[Path]]:
    """Exemplar pair and two queries at 1024², written as PNG."""
    img = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    points = find_faces(img)[0].points
    ops = [OpRequest("eye_resize", 60), OpRequest("nose_alar", -50), OpRequest("mouth_resize", 40)]
    after = apply_local_warp(img, plan_warp(points, ops))
    rotated = cv2.warpAffine(img, cv2.getRotationMatrix2D((512, 512), 8, 0.85), (1024, 1024),
                             borderMode=cv2.BORDER_REFLECT)
    paths = {"before": img, "after": after, "q1": np.fliplr(img).copy(), "q2": rotated}
    for name, pixels in paths.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder / "before.png", folder / "after.png", [folder / "q1.png", folder / "q2.png"]


class Clock:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - self.last) * 1000
        self.last = now


def retouch_one(before: Path, after: Path, query: Path, out: Path, edit=None):
    """The retouch job's steps, timed; returns ``(stage ms, edit)``."""
    clock = Clock()
    if edit is None:
        b = np.ascontiguousarray(read_image(before).rgb8())
        a = np.ascontiguousarray(read_image(after).rgb8())
        clock.lap("io")
        bp, ap = find_faces(b)[0].points, find_faces(a)[0].points
        clock.lap("landmarks")
        edit = estimate_edit(b, a, bp, ap)
        clock.lap("edit estimate")
    picture = read_image(query)
    clock.lap("io")
    qp = find_faces(picture.rgb8())[0].points
    clock.lap("landmarks")
    pixels = transfer(edit, picture.pixels, qp)
    clock.lap("transfer")
    write_image(with_pixels(picture, pixels), out, force=True)
    clock.lap("io")
    return clock.stages, edit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("bench-results/retouch.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before, after, queries = make_inputs(folder)
        retouch_one(before, after, queries[0], folder / "warm.png")  # start the graphs
        first, further = [], []
        for k in range(args.repeats):
            stages, edit = retouch_one(before, after, queries[k % 2], folder / "o1.png")
            first.append(stages)
            stages, _ = retouch_one(before, after, queries[(k + 1) % 2], folder / "o2.png", edit)
            further.append(stages)

    def summarise(runs: list[dict]) -> dict:
        totals = [sum(r.values()) for r in runs]
        names = sorted({s for r in runs for s in r})
        return {"median_ms": statistics.median(totals), "min_ms": min(totals),
                "stages_median_ms": {s: statistics.median(r.get(s, 0.0) for r in runs)
                                     for s in names}}

    report = {"first_query": summarise(first), "further_query": summarise(further),
              "targets_ms": {"first": TARGET_FIRST_MS, "further": TARGET_FURTHER_MS},
              "repeats": args.repeats, "threads": 1}
    for key, target in (("first_query", TARGET_FIRST_MS), ("further_query", TARGET_FURTHER_MS)):
        r = report[key]
        split = ", ".join(f"{s} {v:.1f}" for s, v in r["stages_median_ms"].items())
        verdict = "PASS" if r["median_ms"] <= target else "FAIL"
        print(f"{key:14s} median {r['median_ms']:7.1f} ms (min {r['min_ms']:.1f}) "
              f"target ≤ {target:.0f} ms {verdict}   [{split}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
