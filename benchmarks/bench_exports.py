"""What ``--export`` costs on a 24 MP query, kind by kind, against the same retouch without it.

The exemplar is the astronaut (public domain) with its eyes enlarged and mouth narrowed; the
query the astronaut upscaled to 6000×4000 (its face turned 5°). In one process, after a warm-up:
``retouch_file`` without exports, then with each kind alone and with all four, ``--repeats``
times each, alternating; CPU seconds (``time.process_time``, all threads) and wall seconds.
The cost of a kind is its run minus the run without exports, medians; then the size of
each file written (MB).

    python benchmarks/bench_exports.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
from PIL import Image

KINDS = ("stmap", "displace", "npy", "layers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from skimage import data

    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.measure import measure_exemplar
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import OpRequest, plan_warp
    from mirrorppr_cli.retouch_job import retouch_file

    cv2.setNumThreads(1)
    before = data.astronaut()
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points, [
        OpRequest("eye_resize", 50), OpRequest("mouth_resize", -40)]))
    exemplar = measure_exemplar(before, after)
    turn = cv2.getRotationMatrix2D((256, 256), 5, 1.0)
    small = cv2.warpAffine(before, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    canvas = cv2.resize(small, (4000, 4000), interpolation=cv2.INTER_CUBIC)
    query = cv2.copyMakeBorder(canvas, 0, 0, 1000, 1000, cv2.BORDER_REFLECT)  # 6000×4000
    runs = {"none": (), **{k: (k,) for k in KINDS}, "all": KINDS}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="bench-exports-") as tmp:
        folder = Path(tmp)
        Image.fromarray(query).save(folder / "q.png", compress_level=1)
        retouch_file(exemplar, folder / "q.png", folder / "warm.png", force=True)
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                cpu, wall = time.process_time(), time.perf_counter()
                retouch_file(exemplar, folder / "q.png", folder / "out.png", force=True,
                             exports=runs[name])
                times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
        sizes = {path.name.removeprefix("out."): round(path.stat().st_size / 1e6, 1)
                 for path in sorted(folder.glob("out.*")) if path.name != "out.png"}
    base_cpu = statistics.median(t[0] for t in times["none"])
    base_wall = statistics.median(t[1] for t in times["none"])
    result = {"query": "6000x4000 (24 MP)", "repeats": args.repeats,
              "retouch_without_exports": {"cpu_s": round(base_cpu, 2),
                                          "wall_s": round(base_wall, 2)},
              "export_cost": {name: {
                  "cpu_s": round(statistics.median(t[0] for t in times[name]) - base_cpu, 2),
                  "wall_s": round(statistics.median(t[1] for t in times[name]) - base_wall, 2)}
                  for name in runs if name != "none"},
              "file_mb": sizes}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
