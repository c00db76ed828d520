"""Latency, throughput and peak memory of the neural backends (``eager``, ``compile``, ``fp8``).

Every backend runs the same model — the chosen preset's architecture with random weights (the
numbers measure execution, not quality) — in its own process, so that peak memory and compile
state are its own. ``eager`` is the baseline measured in the same run; the table gives each
backend's ratios against it, and how far its image is from eager's (same seed).

GPU, the paper's architecture at 1024² (Qwen-Image-Edit DiT, 20.4 B parameters)::

    python benchmarks/bench_backends.py --preset paper --size 1024 --steps 40 --images 3

CPU, the tiny preset (what runs on a laptop or CI)::

    python benchmarks/bench_backends.py --preset tiny --size 64 --steps 2 --images 5

Per backend: ``first`` = the first image (loading excluded; includes compile warm-up),
``latency`` = median of the further images, ``throughput`` = further images per second,
``peak memory`` = CUDA ``max_memory_allocated`` on a GPU, else the process's peak RSS.
Results: a table and JSON (``--out``, default ``bench-results/backends-PRESET.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ("eager", "compile", "fp8")


def worker(args) -> None:
    """One backend in this process: build, warm up, time; print one JSON line."""
    import numpy as np
    import torch
    from mirrorppr_backends.neural import CompileBackend, Fp8Backend, NeuralBackend

    from mirrorppr_cli.model.config import PRESETS
    from mirrorppr_cli.model.engine import NeuralEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    classes = {"eager": NeuralBackend, "compile": CompileBackend, "fp8": Fp8Backend}
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    config = PRESETS[args.preset]()
    backend = classes[args.backend](steps=args.steps, seed=123, device=device,
                                    compile_cache=args.compile_cache)
    tick = time.perf_counter()
    engine = NeuralEngine.random(config, device=device, dtype=backend.dtype(device), seed=0)
    backend.attach(engine)
    load_s = time.perf_counter() - tick
    rng = np.random.default_rng(0)
    side = args.size
    before = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    after = before.copy()
    after[side // 4: side // 2, side // 4: side // 2] //= 2
    queries = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
               for _ in range(args.images)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def run(query):
        start = time.perf_counter()
        out = backend.retouch(before, after, query)
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    first, first_s = run(queries[0])
    times = [run(q)[1] for q in queries[1:]]
    np.save(args.image_out, first)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({
        "backend": args.backend, "device": device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "mode": getattr(backend, "mode", None), "load_s": round(load_s, 3),
        "first_s": round(first_s, 4),
        "latency_s": round(statistics.median(times), 4) if times else None,
        "throughput_per_s": round(len(times) / sum(times), 4) if times else None,
        "peak_memory_bytes": int(peak),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--size", type=int, default=64, help="Query side (pixels).")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=5, help="Queries per backend (≥ 2).")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default).")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--backend", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--image-out", help=argparse.SUPPRESS)
    parser.add_argument("--compile-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        worker(args)
        return
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            image = Path(tmp) / f"{name}.npy"
            cmd = [sys.executable, __file__, "--backend", name, "--preset", args.preset,
                   "--size", str(args.size), "--steps", str(args.steps), "--images",
                   str(args.images), "--device", args.device, "--image-out", str(image),
                   "--compile-cache", str(Path(tmp) / "compile-cache"),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                rows.append({"backend": name, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["image"] = np.load(image)
            rows.append(row)
    base = next((r for r in rows if r["backend"] == "eager" and "error" not in r), None)
    for row in rows:
        if "error" in row or base is None:
            continue
        row["latency_vs_eager"] = round(row["latency_s"] / base["latency_s"], 3)
        row["memory_vs_eager"] = round(row["peak_memory_bytes"] / base["peak_memory_bytes"], 3)
        diff = np.abs(row["image"].astype(float) - base["image"].astype(float)) / 255
        row["mean_abs_diff_vs_eager"] = round(float(diff.mean()), 6)
    for row in rows:
        row.pop("image", None)
    print(f"preset {args.preset}, {args.size}², {args.steps} steps, {args.images} images")
    print(f"{'backend':8} {'first s':>8} {'latency s':>10} {'img/s':>7} {'peak MB':>9} "
          f"{'lat/eager':>9} {'mem/eager':>9} {'|Δ| vs eager':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:8} error: {r['error']}")
            continue
        print(f"{r['backend']:8} {r['first_s']:8.3f} {r['latency_s']:10.4f} "
              f"{r['throughput_per_s']:7.2f} {r['peak_memory_bytes'] / 2**20:9.0f} "
              f"{r.get('latency_vs_eager', float('nan')):9.3f} "
              f"{r.get('memory_vs_eager', float('nan')):9.3f} "
              f"{r.get('mean_abs_diff_vs_eager', float('nan')):12.6f}")
    out = args.out or Path("bench-results") / f"backends-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "size": args.size, "steps": args.steps,
                               "images": args.images, "rows": rows}, indent=1) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
