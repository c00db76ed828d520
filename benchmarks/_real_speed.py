"""``bench_retouch.py --real DIR``: speed and memory on real before/after JPEG pairs.

Every measurement runs in a child process, so that the current source tree and a baseline tree
(``--baseline TREE``, e.g. a git worktree of an earlier commit) are measured by the same code,
interleaved pair by pair (the order alternates) so that drift of the machine touches both alike:

* ``cold``: ``mirrorppr retouch --ex B A --query Q -o OUT --force`` as a new process (the
  current tree through the installed ``mirrorppr`` script, the baseline through
  ``python -m mirrorppr_cli``); its wall time, CPU time (user + system, from ``os.wait4``) and
  peak RSS (``ru_maxrss``);
* ``warm``: in one child, after a warm-up exemplar + query (MediaPipe's graphs started, caches
  filled, as in a batch): ``load_exemplar(before, after, mode="hybrid")`` (reading included)
  and ``retouch_file(exemplar, query, dest, force=True)`` (reading, detection, writing
  included), each ``repeats`` times; medians of CPU time (``time.process_time``, all threads)
  and wall time;
* ``peak``: peak RSS of a fresh child that measures one exemplar and retouches one query;
* ``big``: one query (by default the one nearest 3:2, as a 6000×4000 frame; ``--big-pair``)
  upscaled to ~24 MP, sides in its own ratio (bicubic, JPEG q95, in a temporary folder): a further
  query on it with a warm exemplar (after a 2 MP warm-up query), and the peak RSS of a fresh
  child that measures the exemplar and retouches the 24 MP query.

Both trees' ``src/`` and ``backends/`` are copied to a temporary folder at the start (unless
``--no-snapshot``): the checkout may be edited while the benchmark runs. Their commit and
uncommitted files are recorded. Children import the (copied) tree under test through
``PYTHONPATH=TREE/src:SHIM`` where ``SHIM`` holds a link ``mirrorppr_backends ->
TREE/backends`` (pyproject maps that package to ``backends/``);
``PYTHONPATH`` comes before the editable install's finder, and every child reports the files
it imported, which are checked against the tree. One thread: ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENCV_FOR_THREADS_NUM`` (which sets
OpenCV's pool in the ``mirrorppr`` process too) are 1, and the Python children also call
``cv2.setNumThreads(1)``. MediaPipe's graphs start their own threads (8 seen; its Python
solutions offer no setting for them); CPU time counts all threads. Peak RSS is ``ru_maxrss``
of the child alone (``os.wait4``), in MB of 10^6 bytes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENCV_FOR_THREADS_NUM": "1"}

#: Targets from the issue; printed beside the results, never enforced.
TARGETS = {
    "exemplar_cpu_s": (0.5, "exemplar of a 2 MP JPEG pair ≤ 0.5 s CPU (median over pairs)"),
    "query_cpu_s": (0.15, "each further 2 MP query ≤ 0.15 s CPU (median over pairs)"),
    "big_query_cpu_s": (1.5, "24 MP further query ≤ 1.5 s CPU"),
    "peak_mb": (400.0, "peak RSS ≤ 400 MB at 2 MP (largest over pairs, exemplar + query child)"),
}

# The code a Python child runs: argv[1] is a JSON job; the last stdout line is a JSON result.
CHILD = r"""
import json, os, statistics, sys, time
job = json.loads(sys.argv[1])
import cv2
cv2.setNumThreads(1)
import mirrorppr_backends
import mirrorppr_cli
try:
    from mirrorppr_cli.memory import keep_freed_memory
    keep_freed_memory()  # as the `mirrorppr` command does at start-up
except ImportError:
    pass
from pathlib import Path
from mirrorppr_cli.retouch_job import load_exemplar, retouch_file

def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - c0, time.perf_counter() - w0

before, after, query = (Path(p) for p in job["pair"])
dest = Path(job["dest"])
out = {"cli_file": mirrorppr_cli.__file__, "backends_file": mirrorppr_backends.__file__,
       "cv2_threads": cv2.getNumThreads()}
kind = job["kind"]
if kind == "warm":
    ex = load_exemplar(before, after, mode="hybrid")
    retouch_file(ex, query, dest, force=True)
    exc, exw, qc, qw = [], [], [], []
    for _ in range(job["repeats"]):
        ex, c, w = timed(lambda: load_exemplar(before, after, mode="hybrid"))
        exc.append(c); exw.append(w)
        _, c, w = timed(lambda: retouch_file(ex, query, dest, force=True))
        qc.append(c); qw.append(w)
    out.update(exemplar_cpu_s=exc, exemplar_wall_s=exw, query_cpu_s=qc, query_wall_s=qw)
elif kind == "big":
    ex = load_exemplar(before, after, mode="hybrid")
    retouch_file(ex, query, dest, force=True)
    big = Path(job["big"])
    bc, bw = [], []
    for _ in range(job["repeats"]):
        _, c, w = timed(lambda: retouch_file(ex, big, dest, force=True))
        bc.append(c); bw.append(w)
    out.update(big_cpu_s=bc, big_wall_s=bw)
elif kind == "peak":
    ex = load_exemplar(before, after, mode="hybrid")
    retouch_file(ex, Path(job.get("big") or query), dest, force=True)
else:
    raise SystemExit(f"unknown job {kind!r}")
out["threads_seen"] = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
print(json.dumps(out))
"""

CHECK = r"""
import json, importlib.metadata as md
import mirrorppr_cli, mirrorppr_cli.cli, mirrorppr_cli.retouch_job
warp = [e for e in md.entry_points(group="mirrorppr.backends") if e.name == "warp"][0].load()
import sys
print(json.dumps({"cli_file": mirrorppr_cli.__file__,
                  "backends_file": sys.modules[warp.__module__].__file__}))
"""


class Tree:
    """A source tree under test and how its children are started.

    With ``snapshot`` its ``src/`` and ``backends/`` are copied into ``scratch`` first and the
    children import the copy, so edits made to the tree while the benchmark runs (other people
    work in the same checkout) do not mix code states within one run.
    """

    def __init__(self, label: str, root: Path, scratch: Path, installed: bool,
                 snapshot: bool = True) -> None:
        self.label, self.root = label, root.resolve()
        if not (self.root / "src" / "mirrorppr_cli" / "__main__.py").is_file():
            raise SystemExit(f"{root}: no src/mirrorppr_cli/__main__.py")
        if not (self.root / "backends" / "__init__.py").is_file():
            raise SystemExit(f"{root}: no backends/ (the mirrorppr_backends package)")
        self.source = self.root
        if snapshot:
            self.source = scratch / f"snap-{label}"
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            for part in ("src", "backends"):
                shutil.copytree(self.root / part, self.source / part, ignore=ignore)
        shim = scratch / f"shim-{label}"
        shim.mkdir()
        (shim / "mirrorppr_backends").symlink_to(self.source / "backends",
                                                 target_is_directory=True)
        self.env = {**os.environ, **THREAD_ENV,
                    "PYTHONPATH": os.pathsep.join([str(self.source / "src"), str(shim)])}
        script = Path(sys.executable).with_name("mirrorppr")
        # The current tree runs the installed console script (what users run; PYTHONPATH comes
        # before its editable finder); a baseline runs `python -m mirrorppr_cli`.
        self.cli = ([str(script)] if installed and script.is_file()
                    else [sys.executable, "-m", "mirrorppr_cli"])
        self.scratch = scratch
        self.provenance = git_state(self.root)

    def verify(self, reported: dict) -> None:
        """Fail unless the child imported this tree's mirrorppr_cli and mirrorppr_backends."""
        for key, folder in (("cli_file", self.source / "src" / "mirrorppr_cli"),
                            ("backends_file", self.source / "backends")):
            path = Path(os.path.realpath(reported[key]))
            if Path(os.path.realpath(folder)) not in path.parents:
                raise SystemExit(f"{self.label}: child imported {path}, not from {folder}")


def git_state(root: Path) -> dict:
    """The tree's commit and its uncommitted changes under src/ and backends/ (read-only git)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = git("status", "--porcelain", "--", "src", "backends")
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted": changed.splitlines() if changed else []}


def run_child(argv: list[str], env: dict, cwd: Path) -> dict:
    """Run ``argv``; return wall, CPU (user + sys) and peak RSS of that child alone, and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    result = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
              "peak_mb": usage.ru_maxrss * 1024 / 1e6, "rc": proc.returncode}
    if proc.returncode != 0:
        result["error"] = (stderr or stdout)[-2000:]
    else:
        last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        if last.startswith("{"):
            result["child"] = json.loads(last)
    return result


def python_job(tree: Tree, job: dict) -> dict:
    result = run_child([sys.executable, "-c", CHILD, json.dumps(job)], tree.env, tree.scratch)
    if "child" in result:
        tree.verify(result["child"])
    return result


def find_pairs(folder: Path, wanted: list[str] | None) -> dict[str, tuple[Path, Path, Path]]:
    pairs = {}
    for source in sorted(folder.glob("survey-q*-example-source.jpg")):
        name = re.match(r"survey-(q\d+)-", source.name).group(1)
        files = (source, folder / f"survey-{name}-example-retouched.jpg",
                 folder / f"survey-{name}-query-source.jpg")
        if all(f.is_file() for f in files) and (not wanted or name in wanted):
            pairs[name] = files
    missing = sorted(set(wanted or []) - set(pairs))
    if missing:
        raise SystemExit(f"{folder}: no complete pair for {', '.join(missing)}")
    if not pairs:
        raise SystemExit(f"{folder}: no survey-qNN-example-source/-retouched/query-source.jpg")
    return pairs


def closest_to_3_2(pairs: dict[str, tuple[Path, Path, Path]]) -> str:
    """The pair whose query's side ratio is nearest 3:2 (a 24 MP camera frame is 6000×4000)."""
    import cv2

    def off(name: str) -> float:
        h, w = cv2.imread(str(pairs[name][2]), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape[:2]
        return abs(max(w, h) / min(w, h) - 1.5)
    return min(pairs, key=off)


def make_big(query: Path, dest: Path, megapixels: float = 24.0) -> tuple[int, int]:
    """Upscale ``query`` (bicubic) to about ``megapixels``; write JPEG quality 95 to ``dest``."""
    import cv2

    img = cv2.imread(str(query), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    scale = (megapixels * 1e6 / (w * h)) ** 0.5
    size = (round(w * scale), round(h * scale))
    big = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
    if not cv2.imwrite(str(dest), big, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise SystemExit(f"could not write {dest}")
    return size


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure_pair(tree: Tree, name: str, files: tuple[Path, Path, Path], step: str,
                 repeats: int, cold_repeats: int) -> dict:
    """One measurement step (cold, peak or warm) of one pair on one tree."""
    dest = tree.scratch / f"out-{tree.label}-{name}.jpg"
    if step == "cold":
        before, after, query = files
        runs = [run_child(tree.cli + ["retouch", "--ex", str(before), str(after), "--query",
                                      str(query), "-o", str(dest), "--force"],
                          tree.env, tree.scratch) for _ in range(cold_repeats)]
        ok = [r for r in runs if r["rc"] == 0]
        if not ok:
            return {"cold_error": runs[-1].get("error")}
        return {"cold_wall_s": _median([r["wall_s"] for r in ok]),
                "cold_cpu_s": _median([r["cpu_s"] for r in ok]),
                "cold_peak_mb": max(r["peak_mb"] for r in ok)}
    job = {"pair": [str(f) for f in files], "dest": str(dest)}
    if step == "peak":
        r = python_job(tree, {**job, "kind": "peak"})
        return {"peak_error": r["error"]} if r["rc"] else {"peak_mb": r["peak_mb"]}
    r = python_job(tree, {**job, "kind": "warm", "repeats": repeats})
    if r["rc"]:
        return {"warm_error": r["error"]}
    c = r["child"]
    return {"exemplar_cpu_s": _median(c["exemplar_cpu_s"]),
            "exemplar_wall_s": _median(c["exemplar_wall_s"]),
            "query_cpu_s": _median(c["query_cpu_s"]), "query_wall_s": _median(c["query_wall_s"]),
            "warm_child_peak_mb": r["peak_mb"], "cv2_threads": c["cv2_threads"],
            "threads_seen": c["threads_seen"],
            "exemplar_cpu_runs_s": c["exemplar_cpu_s"], "query_cpu_runs_s": c["query_cpu_s"]}


COLUMNS = [("exemplar_cpu_s", "ex CPU s", 3), ("exemplar_wall_s", "ex wall s", 3),
           ("query_cpu_s", "query CPU s", 3), ("query_wall_s", "query wall s", 3),
           ("cold_wall_s", "cold wall s", 2), ("cold_cpu_s", "cold CPU s", 2),
           ("peak_mb", "peak MB", 0), ("cold_peak_mb", "cold peak MB", 0)]


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(title: str, rows: dict[str, dict], ratio: bool = False) -> None:
    print(f"\n{title}")
    print(f"{'pair':7s}" + "".join(f"{head:>13s}" for _, head, _ in COLUMNS))
    for name, row in rows.items():
        print(f"{name:7s}" + "".join(f"{_fmt(row.get(key), 3 if ratio else d):>13s}"
                                     for key, _, d in COLUMNS))


def run_real(folder: Path, *, baseline: Path | None, pairs: list[str] | None, repeats: int,
             cold_repeats: int, big_repeats: int, big_pair: str | None, out: Path,
             snapshot: bool = True) -> int:
    chosen = find_pairs(folder, pairs)
    current_root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        scratch = Path(tmp)
        trees = [Tree("current", current_root, scratch, installed=True, snapshot=snapshot)]
        if baseline is not None:
            if baseline.resolve() == current_root:
                raise SystemExit("--baseline is the current tree")
            trees.append(Tree("baseline", baseline, scratch, installed=False, snapshot=snapshot))
        info = {}
        for tree in trees:
            check = run_child([sys.executable, "-c", CHECK], tree.env, scratch)
            if check["rc"]:
                raise SystemExit(f"{tree.label}: import check failed:\n{check['error']}")
            tree.verify(check["child"])
            info[tree.label] = {"root": str(tree.root), "cli": tree.cli, **tree.provenance,
                                "imported_from": str(tree.source) if snapshot else "the tree",
                                **{k: os.path.realpath(v) for k, v in check["child"].items()}}
            state = tree.provenance
            print(f"{tree.label:8s} {tree.root} (commit {state['commit']}, "
                  f"{len(state['uncommitted'])} uncommitted file(s) in src/ backends/"
                  f"{', snapshot copied at start' if snapshot else ', live'}): mirrorppr_cli "
                  f"from {info[tree.label]['cli_file']}, warp backend from "
                  f"{info[tree.label]['backends_file']}; CLI: "
                  f"{' '.join(Path(a).name if a == sys.executable else a for a in tree.cli)}")
        # Warm-up, untimed: byte-compile the trees, page in the models and the photos.
        first = next(iter(chosen.values()))
        for tree in trees:
            measure_pair(tree, "warmup", first, "cold", 1, 1)

        results: dict[str, dict[str, dict]] = {t.label: {} for t in trees}
        for k, (name, files) in enumerate(chosen.items()):
            order = trees if k % 2 == 0 else trees[::-1]
            for step in ("cold", "peak", "warm"):
                for tree in order:
                    t0 = time.perf_counter()
                    results[tree.label].setdefault(name, {}).update(
                        measure_pair(tree, name, files, step, repeats, cold_repeats))
                    print(f"  {name} {step:4s} {tree.label:8s} {time.perf_counter() - t0:6.1f} s",
                          file=sys.stderr, flush=True)
            for tree in trees:
                for key in [e for e in results[tree.label][name] if e.endswith("_error")]:
                    print(f"{tree.label} {name} {key}: {results[tree.label][name][key]}",
                          file=sys.stderr)

        big_name = big_pair or closest_to_3_2(chosen)
        if big_name not in chosen:
            raise SystemExit(f"--big-pair {big_name}: not among the pairs")
        big_path = scratch / f"{big_name}-query-24mp.jpg"
        size = make_big(chosen[big_name][2], big_path)
        big: dict[str, dict] = {t.label: {"pair": big_name, "size": list(size)} for t in trees}
        job = {"pair": [str(f) for f in chosen[big_name]], "big": str(big_path)}
        for k, step in enumerate(("big", "peak")):
            for tree in (trees if k % 2 == 0 else trees[::-1]):
                dest = str(scratch / f"big-{tree.label}.jpg")
                r = python_job(tree, {**job, "dest": dest, "kind": step, "repeats": big_repeats})
                if r["rc"]:
                    big[tree.label][f"{step}_error"] = r["error"]
                    print(f"{tree.label} 24 MP {step}: {r['error']}", file=sys.stderr)
                elif step == "big":
                    big[tree.label].update(query_cpu_s=_median(r["child"]["big_cpu_s"]),
                                           query_wall_s=_median(r["child"]["big_wall_s"]))
                else:
                    big[tree.label]["peak_mb"] = r["peak_mb"]

    keys = [key for key, _, _ in COLUMNS]
    for label in results:
        rows = results[label]
        rows_median = {key: _median([rows[p].get(key) for p in chosen]) for key in keys}
        rows_max_peak = max((rows[p].get("peak_mb") or 0.0 for p in chosen), default=None)
        results[label] = {"pairs": rows, "median": rows_median, "max_peak_mb": rows_max_peak}
    ratios = {}
    if baseline is not None:
        cur, base = results["current"], results["baseline"]

        def ratio(a, b):
            return a / b if a is not None and b else None

        ratios = {name: {key: ratio(cur["pairs"][name].get(key), base["pairs"][name].get(key))
                         for key in keys} for name in chosen}
        ratios["median"] = {key: ratio(cur["median"][key], base["median"][key]) for key in keys}
        ratios["24 MP"] = {key: ratio(big["current"].get(key), big["baseline"].get(key))
                           for key in ("query_cpu_s", "query_wall_s", "peak_mb")}

    for label, res in results.items():
        print_table(f"{label} ({info[label]['root']}): warm medians of {repeats}, "
                    f"cold median of {cold_repeats}; MB = 10^6 bytes",
                    {**res["pairs"], "median": res["median"]})
    if ratios:
        print_table("ratio current / baseline (< 1: current faster or smaller)",
                    {k: v for k, v in ratios.items() if k != "24 MP"}, ratio=True)
    print()
    for label, b in big.items():
        print(f"24 MP query ({b['pair']} upscaled to {b['size'][0]}×{b['size'][1]}), {label:8s}: "
              f"CPU {_fmt(b.get('query_cpu_s'), 2)} s, wall {_fmt(b.get('query_wall_s'), 2)} s "
              f"(median of {big_repeats}); peak of exemplar + 24 MP query child "
              f"{_fmt(b.get('peak_mb'), 0)} MB")
    if ratios:
        r = ratios["24 MP"]
        print(f"24 MP ratio current / baseline: CPU {_fmt(r['query_cpu_s'], 3)}, "
              f"wall {_fmt(r['query_wall_s'], 3)}, peak {_fmt(r['peak_mb'], 3)}")

    cur = results["current"]
    values = {"exemplar_cpu_s": cur["median"]["exemplar_cpu_s"],
              "query_cpu_s": cur["median"]["query_cpu_s"],
              "big_query_cpu_s": big["current"].get("query_cpu_s"),
              "peak_mb": cur["max_peak_mb"]}
    verdicts = {}
    print("\ntargets (current tree; informative, never enforced):")
    for key, (limit, text) in TARGETS.items():
        value = values[key]
        verdicts[key] = None if value is None else value <= limit
        word = "n/a" if value is None else ("met" if value <= limit else "NOT met")
        print(f"  {text:75s} {_fmt(value, 3):>9s}  {word}")

    report = {"mode": "real", "folder": str(folder), "pairs": list(chosen),
              "repeats": repeats, "cold_repeats": cold_repeats, "big_repeats": big_repeats,
              "threads_env": THREAD_ENV, "trees": info, "results": results, "big": big,
              "ratios_current_over_baseline": ratios,
              "targets": {k: {"limit": v[0], "text": v[1], "value": values[k],
                              "met": verdicts[k]} for k, v in TARGETS.items()},
              "units": "seconds; MB = 10^6 bytes (ru_maxrss KiB * 1024 / 1e6)",
              "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"JSON written to {out}")
    return 0
