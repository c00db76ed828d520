"""Kill campaign for ``mirrorppr apply`` and ``mirrorppr retouch`` batches (issue 22; not CI).

Each trial starts a batch of ``--images`` small portraits in a fresh output folder as a child
process (``python -m mirrorppr_cli``), sends it SIGKILL at a seeded random moment of its run
(uniform over 0 … 1.1 × an uninterrupted run's duration), and then checks:

* after the kill: which outputs exist (each must decode: writes are atomic), how many hidden
  ``.part`` temporaries the kill left, and that no process of the batch is left (looked up
  through ``/proc`` by a marker in its environment);
* after running the same command again with ``--skip-existing``: exit 0; the outputs that
  existed reported as skipped, the others written; every expected output exactly once (no
  other file), decodable, byte-identical to an uninterrupted reference run's; no ``.part``
  temporary left (the resume removes the ones the killed run left: they are its own outputs');
  no process left.

Every other trial runs the killed batch with a slow ``fsync`` (``--slow-fsync`` seconds before
each, patched into the child), so that more kills land while an output is being written and
leave a ``.part`` behind. Sources: scikit-image's astronaut (public domain), mirrored, shifted,
scaled and cropped, PNG and JPEG. Linux only (``/proc``)::

    .venv/bin/python benchmarks/kill_campaign.py --kills 20 --seed 0

Results: a markdown table and JSON (``--out``, default ``bench-results/kill_campaign``). To
measure another checkout, put its ``src`` and ``backends`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _campaign_report import write_summary

REPO = Path(__file__).resolve().parents[1]
MARKER = "MIRRORPPR_KILL_CAMPAIGN"
#: Runs the CLI in the child, ``os.fsync`` slowed by argv[1] seconds (0: unchanged).
CHILD = """
import os, sys, time
delay = float(sys.argv.pop(1))
if delay > 0:
    real = os.fsync
    def slow(fd):
        time.sleep(delay)
        return real(fd)
    os.fsync = slow
sys.argv[0] = "mirrorppr"
from mirrorppr_cli.cli import main
main()
"""


def make_inputs(folder: Path, count: int) -> tuple[Path, Path, Path]:
    """``count`` query portraits in ``folder/queries`` and an exemplar pair."""
    from skimage import data

    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.geometric.mls import apply_local_warp
    from mirrorppr_cli.io import image_from_array, write_image
    from mirrorppr_cli.ops import OpRequest, plan_warp

    base = data.astronaut()
    queries = folder / "queries"
    queries.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(count):
        image = np.fliplr(base) if k % 2 else base
        scale = 0.55 + 0.1 * (k % 4)
        turn = cv2.getRotationMatrix2D((256, 256), float(rng.uniform(-8, 8)), scale * 1.6)
        image = cv2.warpAffine(np.ascontiguousarray(image), turn, (512, 512),
                               borderMode=cv2.BORDER_REFLECT)
        side = int(256 + 32 * (k % 5))
        image = np.ascontiguousarray(cv2.resize(image, (side, side),
                                                interpolation=cv2.INTER_AREA))
        ext = "jpg" if k % 3 == 0 else "png"
        write_image(image_from_array(image), queries / f"q{k:02d}.{ext}")
    before = cv2.resize(base, (384, 384), interpolation=cv2.INTER_AREA)
    after = apply_local_warp(before, plan_warp(find_faces(before)[0].points,
                                               [OpRequest("eye_resize", 50)]))
    ex_before = write_image(image_from_array(before), folder / "ex_before.png")
    ex_after = write_image(image_from_array(np.ascontiguousarray(after)),
                           folder / "ex_after.png")
    return queries, ex_before, ex_after


def command(kind: str, queries: Path, out: Path, exemplar: tuple[Path, Path]) -> list[str]:
    if kind == "apply":
        return ["apply", str(queries), "--op", "eye_resize=30", "--op", "nose_alar=-20",
                "-o", str(out)]
    return ["retouch", "--ex", str(exemplar[0]), str(exemplar[1]), "--query", str(queries),
            "-o", str(out)]


def start(args: list[str], token: str, slow_fsync: float) -> subprocess.Popen:
    env = {**os.environ, MARKER: token}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(slow_fsync), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def marked_processes(token: str) -> list[int]:
    """Processes whose environment carries ``MARKER=token`` (the batch and anything it
    started, wherever it was reparented)."""
    found = []
    needle = f"{MARKER}={token}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def decodes(path: Path) -> bool:
    from mirrorppr_cli.errors import MirrorError
    from mirrorppr_cli.io import read_image

    try:
        read_image(path)
    except MirrorError:
        return False
    return True


def parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part")) \
        if folder.exists() else []


def trial(kind: str, k: int, rng: random.Random, setup: dict, reference: dict,
          slow_fsync: float) -> dict:
    out = setup["root"] / f"{kind}-{k:02d}"
    args = command(kind, setup["queries"], out, setup["exemplar"])
    token = f"{kind}-{k}-{os.getpid()}-{time.monotonic_ns()}"
    delay = rng.uniform(0.0, 1.1 * reference["seconds"] * (1.6 if slow_fsync else 1.0))
    proc = start(args, token, slow_fsync)
    began = time.monotonic()
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    ran = time.monotonic() - began
    time.sleep(0.2)
    after_kill = {
        "outputs": sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if out.exists() else [],
        "parts": parts(out),
        "processes": marked_processes(token),
    }
    undecodable = [n for n in after_kill["outputs"] if not decodes(out / n)]
    resume_token = token + "-resume"
    resume = start([*args, "--skip-existing", "--json"], resume_token, 0.0)
    stdout, stderr = resume.communicate(timeout=600)
    time.sleep(0.1)
    report = json.loads(stdout) if stdout.strip().startswith("{") else {}
    expected = reference["outputs"]
    final = sorted(p.name for p in out.iterdir()) if out.exists() else []
    visible = [n for n in final if not n.startswith(".")]
    status = {Path(i["input"]).name: i["status"] for i in report.get("items", [])}
    skipped_ok = all(status.get(src) == "skipped" for src, dst in setup["pairs"]
                     if dst in after_kill["outputs"])
    identical = all((out / n).read_bytes() == (reference["folder"] / n).read_bytes()
                    for n in expected if (out / n).exists())
    result = {
        "command": kind, "trial": k, "slow_fsync_s": slow_fsync, "killed": killed,
        "killed_after_s": round(ran, 2), "outputs_before_kill": len(after_kill["outputs"]),
        "parts_left_by_kill": len(after_kill["parts"]),
        "processes_after_kill": len(after_kill["processes"]),
        "undecodable_after_kill": undecodable,
        "resume_exit": resume.returncode,
        "resume_skipped": report.get("summary", {}).get("skipped"),
        "resume_written": report.get("summary", {}).get("ok"),
        "removed_temporaries": len(report.get("summary", {}).get("removed_temporaries", [])),
        "skipped_as_expected": skipped_ok,
        "outputs_exactly_once": visible == expected and len(final) == len(expected),
        "all_decode": all(decodes(out / n) for n in visible),
        "byte_identical": identical,
        "parts_after_resume": parts(out),
        "processes_after_resume": len(marked_processes(token) + marked_processes(resume_token)),
    }
    result["ok"] = (result["resume_exit"] == 0 and result["outputs_exactly_once"]
                    and result["all_decode"] and result["byte_identical"]
                    and not result["parts_after_resume"] and not result["undecodable_after_kill"]
                    and result["processes_after_resume"] == 0
                    and result["processes_after_kill"] == 0 and skipped_ok)
    if not result["ok"]:
        result["stderr"] = stderr[-800:]
    shutil.rmtree(out, ignore_errors=True)
    return result


def markdown(summary: dict) -> str:
    lines = [f"Kill campaign: {summary['images']} images a batch, seed {summary['seed']}, "
             f"{summary['seconds']:.0f} s", "",
             "| command | trials | killed | kill left .part | outputs before kill (mean) | "
             "resume exit 0 | every output once, decodes, identical | .part after resume | "
             "processes left | all checks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, rows in summary["by_command"].items():
        n = len(rows)
        lines.append(
            f"| {kind} | {n} | {sum(r['killed'] for r in rows)} | "
            f"{sum(r['parts_left_by_kill'] > 0 for r in rows)} | "
            f"{np.mean([r['outputs_before_kill'] for r in rows]):.1f} | "
            f"{sum(r['resume_exit'] == 0 for r in rows)} | "
            f"{sum(r['outputs_exactly_once'] and r['all_decode'] and r['byte_identical'] for r in rows)} | "  # noqa: E501
            f"{sum(bool(r['parts_after_resume']) for r in rows)} | "
            f"{sum(r['processes_after_kill'] + r['processes_after_resume'] > 0 for r in rows)} | "
            f"{sum(r['ok'] for r in rows)}/{n} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="trials per command")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-fsync", type=float, default=0.3)
    parser.add_argument("--commands", default="apply,retouch")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "kill_campaign")
    args = parser.parse_args()

    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mirrorppr-kills-"))
    rng = random.Random(args.seed)
    queries, ex_before, ex_after = make_inputs(root / "inputs", args.images)
    sources = sorted(p.name for p in queries.iterdir())
    by_command = {}
    try:
        for kind in args.commands.split(","):
            ref_out = root / f"{kind}-reference"
            t = time.monotonic()
            proc = start(command(kind, queries, ref_out, (ex_before, ex_after)), "ref", 0.0)
            _, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise SystemExit(f"reference {kind} run failed: {err}")
            outputs = sorted(p.name for p in ref_out.iterdir())
            reference = {"seconds": time.monotonic() - t, "outputs": outputs, "folder": ref_out}
            pairs = [(s, f"{Path(s).stem}_retouched{Path(s).suffix}") for s in sources]
            assert sorted(d for _, d in pairs) == outputs, (pairs, outputs)
            setup = {"root": root, "queries": queries, "exemplar": (ex_before, ex_after),
                     "pairs": pairs}
            rows = []
            for k in range(args.kills):
                row = trial(kind, k, rng, setup, reference, args.slow_fsync if k % 2 else 0.0)
                rows.append(row)
                print(f"{kind} {k}: killed after {row['killed_after_s']} s, "
                      f"{row['outputs_before_kill']} done, {row['parts_left_by_kill']} .part; "
                      f"resume exit {row['resume_exit']}, ok={row['ok']}",
                      file=sys.stderr, flush=True)
            by_command[kind] = rows
            by_command[kind + ":reference_s"] = round(reference["seconds"], 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {"seed": args.seed, "images": args.images, "slow_fsync_s": args.slow_fsync,
               "seconds": round(time.monotonic() - began, 1),
               "by_command": {k: v for k, v in by_command.items() if not k.endswith("_s")},
               "reference_seconds": {k.split(":")[0]: v for k, v in by_command.items()
                                     if k.endswith("_s")}}
    write_summary(args.out, summary, markdown)


if __name__ == "__main__":
    main()
