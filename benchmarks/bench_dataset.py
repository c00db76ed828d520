"""Throughput of ``mirrorppr build-dataset``: local and Ray engines, and the official approach.

Run from the repository root::

    python benchmarks/bench_dataset.py [--sources K] [--augment N] [--size S]
                                       [--repeats R] [--out PATH] [--threads T]

What it measures, in one run (defaults: K = 4 sources, S = 1024, N = 4, R = 2). K defaults to 4,
not 8: at 1024² one source with 4 augmentations costs ≈ 4 s of one core (ten 1 MP PNG
encodes dominate), and 8 sources through every configuration below took 4½ minutes on a
2-core machine; 4 sources take about 2 minutes (``--sources 4 --size 512``: under 1 minute).
The 2-worker figures need both cores to themselves: other load on the machine shows up as
a spread between their repeats (compare min and median).

* Input: a temporary folder of K source portraits made from ``skimage.data.astronaut()``
  upscaled to S×S with ``cv2.INTER_CUBIC``, and variants of it so that no two sources are
  equal: mirrored, rotated (±3°/±5°), shifted crops rescaled to S×S, two of them saved at
  1.25·S and 0.8·S so the builder's standardisation resizes. PNG files, as FFHQ ships.
* The builder as the CLI runs it (``make_plan`` → ``prepare_output`` → ``run_local`` /
  ``run_ray`` → ``finalize``), area S², pairs = 1, ``--shard-size 1`` (one source per shard:
  with the CLI default of 8, K ≤ 8 sources make a single shard and a second worker idles),
  seed 0. Every measurement writes to a fresh output folder (the builder resumes otherwise)
  and runs in a fresh Python process started by this script, as a CLI invocation would: a
  cold process pays MediaPipe's graph start-up, as a real build does. The time
  reported is that of the four builder calls; interpreter start and imports are not in it.
  Configurations:

  - ``local-1``: local engine, 1 worker (in-process), ``--augment N``; and ``local-1 aug=0``,
    the pair-only figure;
  - ``local-2``: local engine, 2 worker processes;
  - ``ray-2``: ``run_ray`` with a local Ray of ``num_cpus=2``. This script calls ``ray.init``
    itself (the arguments ``run_ray`` would use), so ``run_ray`` neither starts nor stops Ray
    and start-up is timed apart: ``ray.init`` and ``ray.shutdown`` are reported on their
    own, ``ray-2 cold`` is the first build in the fresh Ray session (workers start, import
    the package and start MediaPipe), ``ray-2 warm`` a second build in the same session
    (workers reused), and ``ray-2 CLI`` = init + cold build + shutdown, what one
    ``--engine ray`` invocation costs.

  Each configuration runs ``--repeats`` times (in turn, one process per run); reported:
  median and min seconds, pairs/s (pairs actually built ÷ median seconds) and pairs/s per
  core (÷ workers).
* Where one pair's time goes: a profiling pass (in this process, after a warm-up source)
  that calls, for every source, the functions ``make_samples`` and ``build_shard`` call, in
  their order, with a clock reading between stages: read + standardise, landmarks (face
  detection, mesh, filter), plan (op sampling, ``plan_warp``, edited landmarks), warp
  (``apply_local_warp``), augmentations (sampling and ``apply_augmentation`` of both images),
  PNG encoding (every image of the pair), tar write (record JSON, ``tar_bytes``, SHA-256,
  atomic tar and sidecar writes). Median ms per stage over the sources; the one-off
  MediaPipe start-up (first ``find_faces`` in a process) is reported apart.
* Baseline, the official approach: for every source the same standardised image and
  landmarks (detected once, in the profiling pass) and the ops the builder samples for it;
  timed per pair: ``plan_warp`` + warp, once with ``apply_local_warp`` (the builder) and once
  with ``bench_warp.official_apply`` (the official LLW generator's full-frame warp),
  interleaved, ``--warp-repeats`` rounds after a warm-up. Reported: warp-stage pairs/s of
  each, the official/builder ratio of the warp alone (ratio of the summed medians, and the
  range of per-source ratios), and the full-pair throughput with the official warp in
  place of the builder's (profile total − builder warp + official warp).

Threads: ``--threads 1`` (default) pins OMP/OpenBLAS/MKL and OpenCV
(``OPENCV_FOR_THREADS_NUM``, ``cv2.setNumThreads``) to one thread before numpy is imported,
here and, through the environment, in every builder process and Ray worker, so "per core"
means one worker per core. MediaPipe's own thread pool is not pinned.

Results are printed as tables and written as JSON to ``--out`` (default
``bench-results/dataset.json``). The exit code is 0: this is a report.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENCV_THREAD_VAR = "OPENCV_FOR_THREADS_NUM"
SEED = 0
PAIRS = 1
SHARD_SIZE = 1
IMAGE_FORMAT = "png"
#: Builder configurations: name → (engine, workers, augmentations or None for --augment).
CONFIGS = {
    "local-1": ("local", 1, None),
    "local-1 aug=0": ("local", 1, 0),
    "local-2": ("local", 2, None),
    "ray-2": ("ray", 2, None),
}
PROFILE_STAGES = (
    "read+standardise",
    "landmarks",
    "plan",
    "warp",
    "augmentations",
    "png encode",
    "tar write",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (stdlib only: this runs before numpy is imported)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=int, default=4, help="source portraits (default 4)")
    parser.add_argument(
        "--augment", type=int, default=4, help="augmented query pairs per pair (default 4)"
    )
    parser.add_argument(
        "--size", type=int, default=1024, help="images have the area of SIZE² (default 1024)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per builder configuration (default 2)"
    )
    parser.add_argument(
        "--warp-repeats", type=int, default=5, help="timed rounds of the warp stage (default 5)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results/dataset.json"), help="JSON output path"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for OpenCV and BLAS/OpenMP (default 1)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one builder run
    args = parser.parse_args(argv)
    if min(args.sources, args.repeats, args.warp_repeats, args.threads) < 1:
        parser.error("--sources, --repeats, --warp-repeats and --threads must be >= 1")
    if args.augment < 0:
        parser.error("--augment must be >= 0")
    if args.size < 64:
        parser.error("--size must be >= 64")
    return args


def pin_thread_env(threads: int) -> None:
    """Set the OMP/OpenBLAS/MKL/OpenCV thread counts; only effective before numpy is imported.

    Child processes (builder runs, their workers, Ray workers) inherit them.
    """
    for var in (*THREAD_ENV_VARS, OPENCV_THREAD_VAR):
        os.environ[var] = str(threads)
    os.environ.setdefault("GLOG_minloglevel", "2")  # quieten MediaPipe's start-up logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


if __name__ == "__main__":
    ARGS = parse_args()
    pin_thread_env(ARGS.threads)

if importlib.util.find_spec("mirrorppr_cli") is None:
    sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for bench_warp

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mirrorppr_cli.data import build as B  # noqa: E402

# The rest of the package (and MediaPipe) is imported where needed: a builder run's process
# must not have started MediaPipe before run_local forks its workers.

# --------------------------------------------------------------------------- sources


def variant_specs(count: int) -> list[dict]:
    """``count`` distinct variant recipes: flip, rotation, crop ``(x0, y0, side)`` as
    fractions of the frame, and the saved side as a multiple of S."""
    base = [
        {"flip": False, "angle": 0.0, "crop": None, "scale": 1.0},
        {"flip": True, "angle": 0.0, "crop": None, "scale": 1.0},
        {"flip": False, "angle": 5.0, "crop": None, "scale": 1.0},
        {"flip": True, "angle": -5.0, "crop": None, "scale": 1.0},
        {"flip": False, "angle": 0.0, "crop": (0.05, 0.0, 0.85), "scale": 1.0},
        {"flip": True, "angle": 3.0, "crop": (0.0, 0.08, 0.9), "scale": 1.25},
        {"flip": False, "angle": -3.0, "crop": (0.1, 0.05, 0.8), "scale": 0.8},
        {"flip": True, "angle": 0.0, "crop": (0.08, 0.0, 0.88), "scale": 1.0},
    ]
    specs = []
    for i in range(count):
        spec = dict(base[i % len(base)])
        cycle = i // len(base)
        if cycle:  # later cycles: nudge the angle so every source stays distinct
            spec["angle"] = max(-5.0, min(5.0, spec["angle"] + (1.0 if cycle % 2 else -1.0)))
            spec["angle"] += 0.25 * cycle
        specs.append(spec)
    return specs


def make_variant(base: np.ndarray, spec: dict, side: int) -> np.ndarray:
    """One source (RGB uint8) from the upscaled astronaut ``base`` and a recipe."""
    img = base[:, ::-1] if spec["flip"] else base
    if spec["angle"]:
        centre = ((side - 1) / 2, (side - 1) / 2)
        rot = cv2.getRotationMatrix2D(centre, spec["angle"], 1.0)
        img = cv2.warpAffine(
            np.ascontiguousarray(img),
            rot,
            (side, side),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT_101,
        )
    if spec["crop"]:
        fx, fy, fs = spec["crop"]
        x0, y0, cs = round(fx * side), round(fy * side), round(fs * side)
        img = img[y0 : y0 + cs, x0 : x0 + cs]
    out = max(16, round(side * spec["scale"]))
    if img.shape[:2] != (out, out):
        shrink = out < img.shape[0]
        img = cv2.resize(
            np.ascontiguousarray(img),
            (out, out),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC,
        )
    return np.ascontiguousarray(img)


def write_sources(folder: Path, count: int, side: int) -> list[dict]:
    """Write ``count`` PNG sources into ``folder``; return their names and recipes."""
    from skimage import data

    base = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, spec in enumerate(variant_specs(count)):
        img = make_variant(base, spec, side)
        name = f"portrait_{i:03d}.png"
        cv2.imwrite(str(folder / name), img[..., ::-1])
        written.append({"name": name, "shape": list(img.shape[:2]), **spec})
    return written


# --------------------------------------------------------------------------- one builder run
#
# Runs in a child process: ``bench_dataset.py --child JSON``. Prints one JSON line.


def make_plan(job: dict, augment: int) -> B.BuildPlan:
    return B.make_plan(
        Path(job["faces"]),
        seed=SEED,
        pairs=PAIRS,
        augmentations=augment,
        area=job["size"] ** 2,
        image_format=IMAGE_FORMAT,
        shard_size=SHARD_SIZE,
    )


def timed_build(job: dict, out: Path, run) -> dict:
    """plan → prepare_output → ``run(plan, out, todo)`` → finalize, timed; the summary's counts."""
    start = time.perf_counter()
    plan = make_plan(job, job["augment"])
    todo = B.prepare_output(out, plan, force=False)
    if len(todo) != plan.shard_count:
        raise RuntimeError(f"{out}: not a fresh output folder")
    run(plan, out, todo)
    summary = B.finalize(plan, out)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "pairs": summary["pairs"],
        "quadruplets": summary["quadruplets"],
        "used": summary["used"],
        "sources": summary["sources"],
        "skipped": summary["skipped"],
        "failed": summary["failed_sources"],
        "shards": summary["shards"],
        "bytes": sum(p.stat().st_size for p in (out / "shards").glob("*.tar")),
        # one digest of every shard's SHA-256: equal digests = byte-identical datasets
        "digest": hashlib.sha256(
            "".join(
                json.loads(side.read_text())["tar_sha256"]
                for side in sorted((out / "shards").glob("shard-*.json"))
            ).encode()
        ).hexdigest(),
    }


def child_main(job: dict) -> dict:
    """One measurement: a local build, or a Ray session with a cold and a warm build."""
    cv2.setNumThreads(job["threads"])
    noop = lambda _index: None  # noqa: E731
    if job["engine"] == "local":
        workers = job["workers"]
        result = timed_build(
            job,
            Path(job["outs"][0]),
            lambda plan, out, todo: B.run_local(plan, out, todo, workers, noop),
        )
        return {"build": result}
    import ray

    start = time.perf_counter()
    # what run_ray passes when it starts Ray itself (local cluster, loopback only)
    ray.init(
        num_cpus=job["workers"],
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    init_s = time.perf_counter() - start
    try:
        runs = []
        for out in job["outs"]:  # run_ray sees Ray initialised: it neither starts nor stops it
            runs.append(
                timed_build(
                    job, Path(out), lambda plan, out, todo: B.run_ray(plan, out, todo, noop)
                )
            )
            if not ray.is_initialized():
                raise RuntimeError("run_ray shut down a Ray session it did not start")
    finally:
        start = time.perf_counter()
        ray.shutdown()
        shutdown_s = time.perf_counter() - start
    return {"init_s": init_s, "cold": runs[0], "warm": runs[1], "shutdown_s": shutdown_s}


def run_child(job: dict) -> dict:
    """Run one builder measurement in a fresh interpreter; return its JSON result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--threads",
        str(job["threads"]),
        "--child",
        json.dumps(job),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"builder run {job['name']} failed (rc {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    result["process_wall_s"] = wall
    return result


def measure_builds(
    faces: Path, work: Path, args: argparse.Namespace
) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    """Every configuration ``--repeats`` times, in turn; fresh output folder per build.

    Returns per-configuration lists of build results (``ray-2 cold``/``ray-2 warm`` for Ray)
    and the Ray session's init/shutdown seconds.
    """
    builds: dict[str, list[dict]] = {}
    ray_times: dict[str, list[float]] = {"init_s": [], "shutdown_s": []}
    counter = 0
    for rep in range(args.repeats):
        for name, (engine, workers, augment) in CONFIGS.items():
            outs = []
            for _ in range(2 if engine == "ray" else 1):
                counter += 1
                outs.append(str(work / f"out-{counter:03d}"))
            job = {
                "name": name,
                "engine": engine,
                "workers": workers,
                "augment": args.augment if augment is None else augment,
                "faces": str(faces),
                "size": args.size,
                "threads": args.threads,
                "outs": outs,
            }
            print(f"  [{rep + 1}/{args.repeats}] {name} ...", end=" ", flush=True)
            result = run_child(job)
            for key in ("build", "cold", "warm"):  # the process ran the whole session
                if key in result:
                    result[key]["process_wall_s"] = result["process_wall_s"]
            for out in outs:
                shutil.rmtree(out, ignore_errors=True)
            if engine == "ray":
                builds.setdefault(f"{name} cold", []).append(result["cold"])
                builds.setdefault(f"{name} warm", []).append(result["warm"])
                ray_times["init_s"].append(result["init_s"])
                ray_times["shutdown_s"].append(result["shutdown_s"])
                print(
                    f"init {result['init_s']:.1f} s, cold {result['cold']['seconds']:.1f} s, "
                    f"warm {result['warm']['seconds']:.1f} s, "
                    f"shutdown {result['shutdown_s']:.1f} s",
                    flush=True,
                )
            else:
                builds.setdefault(name, []).append(result["build"])
                print(f"{result['build']['seconds']:.1f} s", flush=True)
    return builds, ray_times


def summarise_builds(
    builds: dict[str, list[dict]], ray_times: dict[str, list[float]]
) -> dict[str, dict]:
    """Median/min seconds and pairs/s per configuration, plus the CLI-equivalent Ray figure."""
    workers = {"local-1": 1, "local-1 aug=0": 1, "local-2": 2}
    rows = {}
    for name, runs in builds.items():
        rows[name] = build_row(name, runs, workers.get(name, 2))
    cold = builds.get("ray-2 cold")
    if cold:
        cli = [
            dict(run, seconds=run["seconds"] + init + shut)
            for run, init, shut in zip(
                cold, ray_times["init_s"], ray_times["shutdown_s"], strict=True
            )
        ]
        rows["ray-2 CLI"] = build_row("ray-2 CLI", cli, 2)
    order = ["local-1", "local-1 aug=0", "local-2", "ray-2 cold", "ray-2 warm", "ray-2 CLI"]
    return {name: rows[name] for name in order if name in rows}


def build_row(name: str, runs: list[dict], workers: int) -> dict:
    seconds = [r["seconds"] for r in runs]
    median_s = statistics.median(seconds)
    pairs = runs[0]["pairs"]
    if any(r["pairs"] != pairs for r in runs):
        print(f"warning: {name}: pair counts differ between runs", file=sys.stderr)
    return {
        "workers": workers,
        "augmentations": runs[0]["quadruplets"] // max(pairs, 1),
        "pairs": pairs,
        "quadruplets": runs[0]["quadruplets"],
        "used_sources": runs[0]["used"],
        "sources": runs[0]["sources"],
        "skipped": runs[0]["skipped"],
        "failed": runs[0]["failed"],
        "shards": runs[0]["shards"],
        "tar_bytes": runs[0]["bytes"],
        "digest": runs[0]["digest"],
        "identical_across_repeats": all(r["digest"] == runs[0]["digest"] for r in runs),
        "median_s": median_s,
        "min_s": min(seconds),
        "samples_s": seconds,
        "pairs_per_s": pairs / median_s if median_s > 0 else math.nan,
        "pairs_per_s_per_core": pairs / median_s / workers if median_s > 0 else math.nan,
        "process_wall_s": [r.get("process_wall_s") for r in runs],
    }


# --------------------------------------------------------------------------- profiling pass


def gc_paused():
    """Garbage collection off inside the block: ``bench_warp``'s helper (imported late, like
    ``official_apply``, so that this script's thread pinning happens first)."""
    from bench_warp import gc_paused as paused

    return paused()


def profile_source(
    faces: Path, source: str, settings, out: Path
) -> tuple[dict[str, float], dict | None]:
    """One source through make_samples' and build_shard's steps, in order, timed per stage.

    Returns ``(ms per stage, state)``; ``state`` (standardised image, landmarks) is None when
    the face filter rejects the source.
    """
    from mirrorppr_cli.data.augment import (
        apply_augmentation,
        sample_augmentation,
    )
    from mirrorppr_cli.data.filters import reject_reason
    from mirrorppr_cli.data.pairs import (
        encode,
        pair_record,
        record_augmentation,
        source_key,
        standardise,
    )
    from mirrorppr_cli.data.sampling import sample_ops, sample_rng
    from mirrorppr_cli.data.shards import sha256, tar_bytes, write_atomic, write_json_atomic
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.io import read_image
    from mirrorppr_cli.ops import plan_warp

    ext = settings.image_format
    ms: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        ms[stage] = ms.get(stage, 0.0) + (now - mark) * 1e3
        mark = now

    rgb = standardise(np.ascontiguousarray(read_image(faces / source).rgb8()), settings.area)
    lap("read+standardise")
    found = find_faces(rgb)
    reason = reject_reason(found, settings.face_filter, math.sqrt(rgb.shape[0] * rgb.shape[1]))
    lap("landmarks")
    if reason:
        return ms, None
    points = found[0].points
    size = (rgb.shape[1], rgb.shape[0])
    key = f"{source_key(source)}-p000"
    requests = sample_ops(sample_rng(SEED, source, 0))
    warp = plan_warp(points, requests)
    record = pair_record(key, source, 0, size, requests, points, warp)
    lap("plan")
    edited = apply_local_warp(rgb, warp)
    lap("warp")
    images = [("src", rgb), ("tgt", edited)]
    for k in range(settings.augmentations):
        aug = sample_augmentation(
            sample_rng(SEED, source, 0, stream=k + 1), size, points, settings.area
        )
        record_augmentation(record, aug, points, size)
        images.append((f"a{k:02d}_src", apply_augmentation(rgb, aug)))
        images.append((f"a{k:02d}_tgt", apply_augmentation(edited, aug)))
    lap("augmentations")
    members = [(f"{key}.{tag}.{ext}", encode(pixels, ext)) for tag, pixels in images]
    lap("png encode")
    members.insert(0, (f"{key}.json", json.dumps(record, sort_keys=True).encode()))
    data = tar_bytes(members)
    tar = out / "shards" / "shard-000000.tar"
    write_atomic(tar, data)
    write_json_atomic(
        tar.with_suffix(".json"),
        {
            "shard": tar.name,
            "tar_sha256": sha256(data),
            "records": [record],
            "skipped": {},
            "failed": {},
        },
    )
    lap("tar write")
    return ms, {"rgb": rgb, "points": points, "requests": requests}


def profile_pairs(faces: Path, sources: list[str], work: Path, args) -> dict:
    """The profiling pass over every source, after a warm-up; and MediaPipe's start-up cost.

    Returns stage medians (ms per pair), per-source stage times and each source's state for
    the warp baseline.
    """
    from mirrorppr_cli.data.pairs import PairSettings, standardise
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.io import read_image

    settings = PairSettings(
        pairs=PAIRS, augmentations=args.augment, area=args.size**2, image_format=IMAGE_FORMAT
    )
    rgb = standardise(np.ascontiguousarray(read_image(faces / sources[0]).rgb8()), settings.area)
    start = time.perf_counter()
    find_faces(rgb)  # first call: MediaPipe graphs start
    first_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    find_faces(rgb)
    second_ms = (time.perf_counter() - start) * 1e3
    profile_source(faces, sources[0], settings, work / "profile-warmup")  # warm-up
    per_source: dict[str, dict[str, float]] = {}
    states: dict[str, dict] = {}
    with gc_paused():
        for i, source in enumerate(sources):
            ms, state = profile_source(faces, source, settings, work / f"profile-{i:03d}")
            if state is not None:
                per_source[source] = ms
                states[source] = state
    stages = (
        {
            stage: statistics.median(ms[stage] for ms in per_source.values())
            for stage in PROFILE_STAGES
        }
        if per_source
        else {}
    )
    totals = [sum(ms.values()) for ms in per_source.values()]
    return {
        "stage_median_ms": stages,
        "total_median_ms": statistics.median(totals) if totals else math.nan,
        "per_source_ms": per_source,
        "mediapipe_first_call_ms": first_ms,
        "find_faces_warm_ms": second_ms,
        "states": states,
    }


# --------------------------------------------------------------------------- warp baseline


def warp_baseline(states: dict[str, dict], repeats: int) -> dict:
    """Per pair ``plan_warp`` + warp: the builder's ``apply_local_warp`` against the official
    full-frame warp, on the same images, landmarks and sampled ops, interleaved."""
    from bench_warp import official_apply

    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.ops import plan_warp

    def pair_funcs(state: dict) -> dict:
        rgb, points, requests = state["rgb"], state["points"], state["requests"]
        return {
            "builder": lambda: apply_local_warp(rgb, plan_warp(points, requests)),
            "official": lambda: official_apply(rgb, plan_warp(points, requests)),
        }

    # the warp alone, with the plan outside the clock, for the stage ratio
    def warp_funcs(state: dict) -> dict:
        rgb, warp = state["rgb"], plan_warp(state["points"], state["requests"])
        return {
            "builder": lambda: apply_local_warp(rgb, warp),
            "official": lambda: official_apply(rgb, warp),
        }

    per_source = {}
    for source, state in states.items():
        timings: dict[str, list[float]] = {}
        funcs = {f"pair {k}": f for k, f in pair_funcs(state).items()}
        funcs |= {f"warp {k}": f for k, f in warp_funcs(state).items()}
        for func in funcs.values():
            func()
        with gc_paused():
            for _ in range(repeats):
                for name, func in funcs.items():
                    start = time.perf_counter()
                    func()
                    timings.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
        per_source[source] = {
            "ops": len(state["requests"]),
            **{f"{name} median_ms": statistics.median(v) for name, v in timings.items()},
        }
    rows = list(per_source.values())

    def total(key: str) -> float:
        return sum(r[key] for r in rows)

    n = len(rows)
    ratios = [r["warp official median_ms"] / r["warp builder median_ms"] for r in rows]
    return {
        "per_source": per_source,
        "pairs": n,
        "pair_builder_ms_per_pair": total("pair builder median_ms") / n,
        "pair_official_ms_per_pair": total("pair official median_ms") / n,
        "warp_builder_ms_per_pair": total("warp builder median_ms") / n,
        "warp_official_ms_per_pair": total("warp official median_ms") / n,
        "warp_stage_pairs_per_s_builder": n / total("pair builder median_ms") * 1e3,
        "warp_stage_pairs_per_s_official": n / total("pair official median_ms") * 1e3,
        "warp_ratio_official_over_builder": total("warp official median_ms")
        / total("warp builder median_ms"),
        "warp_ratio_per_source_min": min(ratios),
        "warp_ratio_per_source_max": max(ratios),
    }


# --------------------------------------------------------------------------- reporting


def environment(threads: int) -> dict:
    """Versions and thread settings, so runs can be compared."""
    import ray

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "ray": ray.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cv2_num_threads": cv2.getNumThreads(),
        "thread_env": {v: os.environ.get(v) for v in (*THREAD_ENV_VARS, OPENCV_THREAD_VAR)},
    }


def format_report(report: dict) -> str:
    """Plain-text tables: builder configurations, Ray start-up, per-pair profile, baseline."""
    cfg = report["config"]
    lines = []
    header = (
        f"{'configuration':<14} {'workers':>7} {'aug':>4} {'pairs':>5} {'median s':>9} "
        f"{'min s':>7} {'pairs/s':>8} {'pairs/s/core':>12} {'vs local-1':>10}"
    )
    lines += [header, "-" * len(header)]
    rows = report["builds"]
    ref = rows.get("local-1", {}).get("pairs_per_s")
    for name, r in rows.items():
        speed = (
            f"{r['pairs_per_s'] / ref:>9.2f}×"
            if ref and r["augmentations"] == cfg["augmentations"]
            else f"{'':>10}"
        )
        lines.append(
            f"{name:<14} {r['workers']:>7} {r['augmentations']:>4} {r['pairs']:>5} "
            f"{r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['pairs_per_s']:>8.3f} "
            f"{r['pairs_per_s_per_core']:>12.3f} {speed}"
        )
    ray = report["ray_startup"]
    if ray["init_s"]:
        lines.append(
            f"Ray start-up (median of {len(ray['init_s'])}): ray.init "
            f"{statistics.median(ray['init_s']):.2f} s, ray.shutdown "
            f"{statistics.median(ray['shutdown_s']):.2f} s; cold − warm build "
            f"{rows['ray-2 cold']['median_s'] - rows['ray-2 warm']['median_s']:.2f} s "
            "(worker start, imports, MediaPipe start-up)"
        )
    digests = {r["digest"] for r in rows.values() if r["augmentations"] == cfg["augmentations"]}
    same = len(digests) == 1 and all(r["identical_across_repeats"] for r in rows.values())
    lines.append(
        "Shards byte-identical across engines, worker counts and repeats: "
        + ("yes" if same else "NO")
    )
    bad = {
        n: (r["used_sources"], r["sources"])
        for n, r in rows.items()
        if r["used_sources"] != r["sources"]
    }
    if bad:
        lines.append(f"WARNING: sources skipped or failed: {bad}")
    prof = report["profile"]
    lines += [
        "",
        f"One pair, {cfg['augmentations']} augmentations, one core: median ms per "
        f"stage over {len(prof['per_source_ms'])} sources (profiling pass)",
    ]
    total = sum(prof["stage_median_ms"].values())
    for stage, ms in prof["stage_median_ms"].items():
        lines.append(f"  {stage:<17} {ms:>9.1f} ms  {100 * ms / total:>5.1f} %")
    lines.append(
        f"  {'sum of medians':<17} {total:>9.1f} ms  → {1e3 / total:.3f} pairs/s "
        f"(median per-source total {prof['total_median_ms']:.1f} ms)"
    )
    lines.append(
        f"  one-off MediaPipe start-up: first find_faces {prof['mediapipe_first_call_ms']:.0f} "
        f"ms, next {prof['find_faces_warm_ms']:.0f} ms"
    )
    base = report["baseline"]
    full_official = total - base["warp_builder_ms_per_pair"] + base["warp_official_ms_per_pair"]
    lines += [
        "",
        f"Warp stage per pair (same images, landmarks and sampled ops; {cfg['warp_repeats']} "
        f"rounds, mean over {base['pairs']} sources of the per-source medians)",
        f"  {'':<10} {'plan+warp ms':>12} {'pairs/s':>8} {'warp ms':>8}",
        f"  {'builder':<10} {base['pair_builder_ms_per_pair']:>12.1f} "
        f"{base['warp_stage_pairs_per_s_builder']:>8.2f} {base['warp_builder_ms_per_pair']:>8.1f}",
        f"  {'official':<10} {base['pair_official_ms_per_pair']:>12.1f} "
        f"{base['warp_stage_pairs_per_s_official']:>8.2f} "
        f"{base['warp_official_ms_per_pair']:>8.1f}",
        f"  warp alone, official / builder: {base['warp_ratio_official_over_builder']:.2f}× "
        f"(per source {base['warp_ratio_per_source_min']:.2f}–"
        f"{base['warp_ratio_per_source_max']:.2f}×)",
        f"  full pair with the official warp instead (profile − builder warp + official "
        f"warp): {full_official:.1f} ms → {1e3 / full_official:.3f} pairs/s vs builder "
        f"{1e3 / total:.3f} pairs/s ({full_official / total:.2f}×)",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Make the sources, run every measurement, print the tables, write JSON; returns 0."""
    cv2.setNumThreads(args.threads)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        faces = work / "faces"
        written = write_sources(faces, args.sources, args.size)
        sources = [w["name"] for w in written]
        print(
            f"Dataset builder benchmark: {args.sources} sources, {args.size}² area, "
            f"pairs {PAIRS}, augment {args.augment}, shard size {SHARD_SIZE}, "
            f"{args.repeats} repeats, {args.threads} thread(s) per worker"
        )
        builds, ray_times = measure_builds(faces, work, args)
        print("  profiling pass and warp baseline ...", flush=True)
        prof = profile_pairs(faces, sources, work, args)
        base = warp_baseline(prof.pop("states"), args.warp_repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "config": {
            "sources": args.sources,
            "size": args.size,
            "area": args.size**2,
            "pairs_per_source": PAIRS,
            "augmentations": args.augment,
            "shard_size": SHARD_SIZE,
            "image_format": IMAGE_FORMAT,
            "seed": SEED,
            "repeats": args.repeats,
            "warp_repeats": args.warp_repeats,
            "source_images": written,
            "timer": "time.perf_counter; builder runs each in a fresh process (imports "
            "excluded); median of repeats",
        },
        "environment": environment(args.threads),
        "builds": summarise_builds(builds, ray_times),
        "ray_startup": ray_times,
        "profile": prof,
        "baseline": base,
    }
    report["elapsed_s"] = time.perf_counter() - t_start
    print()
    print(format_report(report))
    print(f"\nTotal benchmark time {report['elapsed_s']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    if ARGS.child:
        print(json.dumps(child_main(json.loads(ARGS.child))))
        sys.exit(0)
    sys.exit(main(ARGS))
