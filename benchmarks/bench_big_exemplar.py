"""Time and memory of one `mirrorppr retouch` on large re-encoded JPEG exemplars (issue #22.4).

Run from the repository root::

    python benchmarks/bench_big_exemplar.py [--sides 4096,10000] [--out DIR]

For each side S it makes, from scikit-image's public-domain astronaut (upscaled bicubically to
S × S): *before* (JPEG q95), *after* = before with ``eye_resize +40, nose_alar −40`` and then
re-saved as JPEG q90 (so every off-face pixel differs by re-encoding noise, the normal export
of a retouch), and a 2048² query (the astronaut mirrored, JPEG q92). Then it runs
``mirrorppr retouch --ex before after --query q -o out.jpg`` in a child process and reports
its CPU seconds (user + system) and peak RSS (the child's ``ru_maxrss``), then measures the
exemplar alone in this process (``exemplar_cpu_s``). Targets: a 4096²
pair ≤ 5 s of CPU and ≤ 1 GB; a 100 MP pair within 4 GB (or refused up front).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def make_pair(side: int, folder: Path) -> tuple[Path, Path, Path]:
    from skimage import data

    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import OpRequest, plan_warp

    rgb = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(rgb, (1024, 1024), interpolation=cv2.INTER_AREA)
    points = find_faces(small)[0].points * (side / 1024.0)  # landmarks found at 1 MP, scaled
    after = apply_local_warp(rgb, plan_warp(points, [OpRequest("eye_resize", 40),
                                                     OpRequest("nose_alar", -40)]))
    before_path, after_path, query_path = (folder / f"{n}{side}.jpg" for n in ("b", "a", "q"))
    cv2.imwrite(str(before_path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(after_path), after[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    query = cv2.resize(np.ascontiguousarray(rgb[:, ::-1]), (2048, 2048),
                       interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(query_path), query[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return before_path, after_path, query_path


def run_child(before: Path, after: Path, query: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "mirrorppr_cli", "retouch", "--ex", str(before),
               str(after), "--query", str(query), "-o", str(out), "--force", "--json"]
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return {"exit": done.returncode, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            # ru_maxrss of the children is the largest child so far (KiB on Linux)
            "peak_mb": round(usage.ru_maxrss * 1024 / 1e6), "stderr": done.stderr[-300:]}


def exemplar_cpu(before: Path, after: Path) -> float:
    """CPU seconds of measuring the exemplar alone (reading included), in this process with
    the detectors already started."""
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.retouch_job import load_exemplar

    find_faces(np.zeros((64, 64, 3), np.uint8))
    start = time.process_time()
    load_exemplar(before, after)
    return round(time.process_time() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="4096,10000")
    parser.add_argument("--out", type=Path, default=Path("bench-results/big_exemplar.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for side in (int(s) for s in args.sides.split(",")):
            before, after, query = make_pair(side, folder)
            results[f"{side}x{side}"] = run_child(before, after, query, folder / "out.jpg")
            results[f"{side}x{side}"]["exemplar_cpu_s"] = exemplar_cpu(before, after)
            print(side, {k: v for k, v in results[f"{side}x{side}"].items() if k != "stderr"},
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"JSON written to {args.out}")


if __name__ == "__main__":
    main()
