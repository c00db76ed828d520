"""Kill campaign for ``mirrorppr build-dataset --workers 2`` (issue 22; not part of CI).

Each trial starts the build in a fresh folder, sends SIGKILL to the *main* process only (as
a crash, the OOM killer or ``kill -9 PID`` would) at a seeded random moment of its run, and
then checks:

* after the kill: every process the build started (pool workers, multiprocessing's resource
  tracker) is gone within ``--grace`` seconds; how long that took; the hidden ``.part``
  temporary files the kill left (a kill mid-write leaves one);
* after running the same command again (the resume, ``--workers 2``): exit 0; every file
  byte-identical to an uninterrupted reference build; every sample (source, pair index) in
  the manifest exactly once, every key once; every tar member decodable (images with
  Pillow, JSON with ``json``); no ``.part`` file anywhere; no process of the resume left.

Sources: six variants of scikit-image's astronaut (public domain), as in tests/test_dataset.py,
or ``--faces DIR``. ``--slow-fsync S`` runs the builds through tests/_dataset_helpers.py,
which sleeps S seconds before every ``fsync``, so that more kills land while a shard is being
written. Linux only (processes are found through ``/proc``).

    .venv/bin/python benchmarks/kill_campaign_dataset.py --kills 20 --seed 0 \\
        --json kill_campaign.json

To compare with another checkout, put its packages first on ``PYTHONPATH``: the builds run as
``python -m mirrorppr_cli`` and inherit it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SETTINGS = ("--size", "384", "--pairs", "2", "--augment", "2", "--shard-size", "1",
            "--seed", "7")
PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parents[1]
#: Seconds every fsync sleeps (``--slow-fsync``); 0: the real command line.
SLOW_FSYNC = {"seconds": 0.0}


# ------------------------------------------------------------------ sources


def make_faces(folder: Path) -> Path:
    """Six usable single-face portraits from scikit-image's astronaut."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    a = cv2.resize(data.astronaut(), (512, 512), interpolation=cv2.INTER_AREA)

    def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
        h, w = rgb.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
        return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)

    canvas = np.full((700, 900, 3), 90, np.uint8)
    canvas[100:612, 300:812] = a
    variants = {"astronaut.png": a, "mirrored.png": a[:, ::-1], "rot5.png": rotate(a, 5),
                "rotm8.png": rotate(a, -8),
                "scaled.png": cv2.resize(a, (400, 400), interpolation=cv2.INTER_AREA),
                "canvas.png": canvas}
    for name, rgb in variants.items():
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / name)
    return folder


# ------------------------------------------------------------------ processes


def group_processes(pgid: int) -> list[dict]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            rss_pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
        if pgrp != pgid or state == "Z":
            continue
        role = ("resource tracker" if "resource_tracker" in cmdline
                else "worker" if "multiprocessing" in cmdline else "main")
        found.append({"pid": int(entry), "ppid": ppid, "role": role,
                      "rss_mb": round(rss_pages * PAGE / 2**20, 1)})
    return found


def wait_group_gone(pgid: int, grace: float) -> tuple[float | None, list[dict]]:
    """Seconds until no live process of ``pgid`` is left (None if some outlived ``grace``),
    and the survivors (then killed, so that the campaign goes on cleanly)."""
    start = time.monotonic()
    while True:
        left = group_processes(pgid)
        if not left:
            return time.monotonic() - start, []
        if time.monotonic() - start > grace:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return None, left
        time.sleep(0.05)


# ------------------------------------------------------------------ outputs


def files(out: Path) -> dict[str, bytes]:
    """Every visible file under ``out`` (hidden temporaries excluded), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def part_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.part"))


def check_outputs(out: Path, reference: dict[str, bytes]) -> list[str]:
    """Problems of a finished build, compared with the reference; [] when it is right."""
    problems = []
    got = files(out)
    if sorted(got) != sorted(reference):
        problems.append(f"files differ: missing {sorted(set(reference) - set(got))}, "
                        f"extra {sorted(set(got) - set(reference))}")
    problems += [f"{name}: bytes differ" for name in sorted(set(got) & set(reference))
                 if got[name] != reference[name]]
    manifest = [json.loads(line) for line in got.get("manifest.jsonl", b"").decode().splitlines()]
    keys = [m["key"] for m in manifest]
    samples = Counter((m["source"], m["pair_index"]) for m in manifest)
    ref_manifest = reference["manifest.jsonl"].decode().splitlines()
    if len(keys) != len(set(keys)) or len(keys) != len(ref_manifest):
        problems.append(f"manifest: {len(keys)} keys, {len(set(keys))} distinct, "
                        f"reference {len(ref_manifest)}")
    if any(n != 1 for n in samples.values()):
        problems.append(f"samples not exactly once: {[s for s, n in samples.items() if n != 1]}")
    members = 0
    for tar_path in sorted((out / "shards").glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                members += 1
                try:
                    if member.name.endswith((".png", ".jpg")):
                        with Image.open(io.BytesIO(data)) as im:
                            im.load()
                    elif member.name.endswith(".json"):
                        json.loads(data)
                except Exception as error:  # noqa: BLE001 - any decoding failure is a finding
                    problems.append(f"{tar_path.name}/{member.name}: {error}")
    if members == 0:
        problems.append("no tar members")
    parts = part_files(out)
    if parts:
        problems.append(f"temporary files left: {parts}")
    return problems


# ------------------------------------------------------------------ the campaign


def command(faces: Path, out: Path, workers: int) -> list[str]:
    cli = ([str(REPO / "tests" / "_dataset_helpers.py")] if SLOW_FSYNC["seconds"]
           else ["-m", "mirrorppr_cli"])
    return [sys.executable, *cli, "build-dataset", "--faces", str(faces),
            "--out", str(out), "--workers", str(workers), *SETTINGS]


def environment() -> dict[str, str]:
    return {**os.environ, "MIRRORPPR_TEST_FSYNC_DELAY": str(SLOW_FSYNC["seconds"])}


def run_to_end(faces: Path, out: Path, workers: int, grace: float) -> dict:
    start = time.monotonic()
    proc = subprocess.Popen(command(faces, out, workers), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, env=environment())
    _, stderr = proc.communicate()
    seconds = time.monotonic() - start
    gone_after, survivors = wait_group_gone(proc.pid, grace)
    return {"rc": proc.returncode, "seconds": round(seconds, 2),
            "stderr_tail": stderr.decode(errors="replace")[-400:] if proc.returncode else "",
            "left_after_s": None if gone_after is None else round(gone_after, 2),
            "survivors": survivors}


def trial(index: int, moment: float, faces: Path, work: Path, workers: int, grace: float,
          reference: dict[str, bytes], after_shards: int | None = None) -> dict:
    """One kill and its resume; the kill comes ``moment`` seconds after the start, or with
    ``after_shards``, ``moment`` seconds after that many shards are done."""
    out = work / f"trial-{index:02d}"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(command(faces, out, workers), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=environment())
    start = time.monotonic()
    if after_shards:
        while (len(list((out / "shards").glob("shard-*.json"))) < after_shards
               and proc.poll() is None):
            time.sleep(0.005)
        moment += time.monotonic() - start
    while time.monotonic() - start < moment and proc.poll() is None:
        time.sleep(0.005)
    result: dict = {"trial": index, "kill_at_s": round(moment, 3)}
    if proc.poll() is not None:
        result["finished_before_kill"] = True
        at_kill = []
    else:
        at_kill = group_processes(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only
    proc.wait()
    result["shards_done_at_kill"] = len(list((out / "shards").glob("shard-*.json")))
    result["processes_at_kill"] = Counter(p["role"] for p in at_kill)
    result["worker_rss_mb_at_kill"] = [p["rss_mb"] for p in at_kill if p["role"] != "main"]
    gone_after, survivors = wait_group_gone(proc.pid, grace)
    result["orphans_gone_after_s"] = None if gone_after is None else round(gone_after, 2)
    result["orphans_after_grace"] = [f"{p['role']} {p['rss_mb']} MB" for p in survivors]
    result["parts_after_kill"] = len(part_files(out)) if out.exists() else 0
    result["summary_after_kill"] = (out / "summary.json").exists()
    resume = run_to_end(faces, out, workers, grace)
    result["resume_rc"], result["resume_s"] = resume["rc"], resume["seconds"]
    result["resume_left_processes"] = [p["role"] for p in resume["survivors"]]
    problems = [] if resume["rc"] == 0 else [f"resume exit {resume['rc']}: {resume['stderr_tail']}"]
    problems += check_outputs(out, reference) if resume["rc"] == 0 else []
    if survivors:
        problems.append(f"processes outlived the kill by {grace} s: {result['orphans_after_grace']}")
    if resume["survivors"]:
        problems.append(f"processes outlived the resume: {result['resume_left_processes']}")
    result["problems"] = problems
    result["ok"] = not problems
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faces", type=Path, help="Source portraits (default: astronaut variants).")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="Seconds the build's processes may take to end after the kill.")
    parser.add_argument("--window", type=float, nargs=2, default=(0.02, 0.9),
                        metavar=("FROM", "TO"), help="Kill moments, as fractions of the "
                        "reference build's duration (default 0.02 0.9).")
    parser.add_argument("--after-shards", action="store_true",
                        help="Draw a number of finished shards (0 to all) and a delay of up to "
                        "--delay s instead: kills land in every phase, finalize included, "
                        "however fast this machine runs the build.")
    parser.add_argument("--delay", type=float, default=1.5)
    parser.add_argument("--slow-fsync", type=float, default=0.0,
                        help="Seconds every fsync sleeps (kills land mid-write more often).")
    parser.add_argument("--workdir", type=Path, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--json", type=Path, help="Write every trial's record here.")
    args = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        parser.error("Linux only: processes are found through /proc")
    SLOW_FSYNC["seconds"] = args.slow_fsync
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    faces = args.faces or make_faces(work / "faces")

    ref_out = work / "reference"
    shutil.rmtree(ref_out, ignore_errors=True)
    ref = run_to_end(faces, ref_out, args.workers, args.grace)
    if ref["rc"] != 0:
        print(f"reference build failed (exit {ref['rc']}): {ref['stderr_tail']}")
        return 2
    reference = files(ref_out)
    reference_problems = check_outputs(ref_out, reference)
    samples = len(reference["manifest.jsonl"].decode().splitlines())
    print(f"reference: {ref['seconds']} s with --workers {args.workers}, "
          f"{sum(n.endswith('.tar') for n in reference)} shards, {samples} pairs; "
          f"processes gone {ref['left_after_s']} s after exit"
          + (f"; PROBLEMS {reference_problems}" if reference_problems else ""))

    # Moments are drawn over the reference build's duration; a build that ends before its
    # moment (runs vary) is checked all the same, and another moment is drawn, until --kills
    # kills have landed.
    rng = random.Random(args.seed)
    records = []
    print(f"{'#':>2} {'kill s':>7} {'shards':>6} {'procs at kill':<40} {'gone s':>6} "
          f"{'.part':>5} {'resume s':>8}  result")
    i = 0
    while sum(not r.get("finished_before_kill") for r in records) < args.kills \
            and i < 3 * args.kills:
        if args.after_shards:
            after = rng.randint(0, sum(n.endswith(".tar") for n in reference))
            r = trial(i, rng.uniform(0, args.delay), faces, work, args.workers, args.grace,
                      reference, after_shards=after)
            r["after_shards"] = after
        else:
            moment = rng.uniform(*args.window) * ref["seconds"]
            r = trial(i, moment, faces, work, args.workers, args.grace, reference)
        i += 1
        records.append(r)
        procs = ", ".join(f"{n} {role}" for role, n in sorted(r["processes_at_kill"].items()))
        if r.get("finished_before_kill"):
            procs = "(finished before the kill)"
        gone = "-" if r["orphans_gone_after_s"] is None else f"{r['orphans_gone_after_s']:.2f}"
        print(f"{r['trial']:>2} {r['kill_at_s']:>7.2f} {r['shards_done_at_kill']:>6} {procs:<40} "
              f"{gone:>6} {r['parts_after_kill']:>5} {r['resume_s']:>8.2f}  "
              + ("ok" if r["ok"] else "FAIL: " + "; ".join(r["problems"])[:300]), flush=True)

    killed = [r for r in records if not r.get("finished_before_kill")]
    gone = [r["orphans_gone_after_s"] for r in killed if r["orphans_gone_after_s"] is not None]
    summary = {
        "kills": len(killed),
        "finished_before_kill": len(records) - len(killed),
        "ok": sum(r["ok"] for r in records),
        "orphans_outliving_grace": sum(bool(r["orphans_after_grace"]) for r in killed),
        "max_seconds_to_no_process": max(gone) if gone else None,
        "kills_leaving_part_files": sum(r["parts_after_kill"] > 0 for r in killed),
        "kills_with_workers_running": sum("worker" in r["processes_at_kill"] for r in killed),
        "kills_after_a_shard_was_done": sum(0 < r["shards_done_at_kill"] for r in killed),
        "reference_seconds": ref["seconds"],
        "seed": args.seed,
        "slow_fsync_s": args.slow_fsync,
        "window": None if args.after_shards else list(args.window),
        "after_shards_delay_s": args.delay if args.after_shards else None,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "trials": records}, indent=1,
                                        default=dict) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["ok"] == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
