"""Seeded fault campaign for the image inputs of ``apply``, ``retouch`` and ``explain`` (issue
22; not part of CI).

Thousands of mutated and degenerate inputs — the fuzz harness's (tests/test_fuzz_inputs.py:
every format and colour mode read, truncations, byte flips in header and data, wrong
extensions, random bytes bare and behind a real magic number, huge declared sizes, images too
small or too thin) extended with files cut short with an end marker appended, inserted,
deleted and duplicated byte runs, zero-filled ranges, animated PNG/WebP and multi-page TIFF,
and special files (a FIFO, ``/dev/zero``, a folder, symlinks to those) — each go through one
role, in turn:

* ``apply``: ``apply_ops_to_file`` (read, size check, face or body detector, warp, atomic
  write), as ``mirrorppr apply`` runs it;
* ``retouch-query``: the CLI's header check, then ``retouch_file`` with a measured exemplar;
* ``ex-before`` / ``ex-after``: the header checks of both files, then ``load_exemplar`` with the
  case as the exemplar's before (after) and its undamaged original as the other;
* ``explain``: the same in catalog mode, as ``mirrorppr explain`` runs it.

They run in process in ``--workers`` child processes (spawned; each case under a watchdog of
``--timeout`` seconds: a worker that does not answer is killed and the case counted as a
hang), then a seeded sample of ``--cli-sample`` cases runs through the real command line
(``python -m mirrorppr_cli``), whose exit code must match the in-process outcome and whose
stderr must hold the tool's own lines only.

Classes (each case gets exactly one, the first that applies):

* ``hang``: no answer within ``--timeout`` s;
* ``traceback``: an exception that is not the tool's own (``MirrorError``);
* ``leftovers``: a file other than the output left in the output folder, or a ``.part``;
* ``wrong exit``: garbage accepted (random bytes, data cut short, huge declared sizes, files
  too small or thin for the detectors, special files must be refused with exit 3), or refused
  with an exit code other than 3 (input);
* ``bad message``: the tool's error spans several lines or does not name the file;
* ``accepted, altered``: accepted (exit 0), and the pixels decoded differ from the undamaged
  original's (a mutation the format cannot detect: no checksum in BMP, uncompressed TIFF or
  lossy WebP data, or a valid-but-different JPEG table);
* ``accepted, intact``: accepted, pixels as the original's (or an original: a base, a
  multi-frame file, a wrong extension);
* ``clean error``: refused with exit 3 and one line naming the file.

Peak memory: the largest resident set of any worker, and the cases during which a worker's
peak grew most. Results: JSON and a markdown table (``--out``, default
``bench-results/fault_campaign``). Linux only (FIFO, ``/dev/zero``, ``ru_maxrss`` in KiB)::

    .venv/bin/python benchmarks/fault_campaign.py --cases 10000 --seed 2222 --workers 2
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
from _campaign_report import write_summary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

ROLES = ("apply", "retouch-query", "ex-before", "ex-after", "explain")
CLASSES = ("clean error", "accepted, intact", "accepted, altered", "traceback", "wrong exit",
           "bad message", "leftovers", "hang")
#: Lines the tool itself writes on stderr.
TOOL_LINES = ("error: ", "note: ", "review: ", "measuring ")
SPECIALS = ("fifo", "dev-zero", "folder", "symlink-to-fifo", "dangling-symlink")


@dataclass
class Case:
    """One input: bytes (or a special file), what it was made from and how."""

    index: int
    name: str
    data: bytes | None  # None: a special file (``special``)
    kind: str  # the mutation
    base: str | None  # the undamaged original (a key of the bases), if any
    garbage: bool  # must be refused with exit 3
    role: str
    special: str | None = None


# --------------------------------------------------------------------------- #
# cases
# --------------------------------------------------------------------------- #


def bases() -> dict[str, bytes]:
    """The fuzz harness's bases, plus multi-frame files and a 160² crop."""
    import cv2
    from PIL import Image
    from skimage import data
    from test_fuzz_inputs import _bases, _encode

    out = dict(_bases())
    face = cv2.resize(data.astronaut()[30:270, 110:350], (160, 160), interpolation=cv2.INTER_AREA)
    out["crop160.jpg"] = _encode(Image.fromarray(face), "JPEG", quality=92)
    out["crop160.png"] = _encode(Image.fromarray(face), "PNG")
    frames = [Image.fromarray(np.roll(face, 9 * k, axis=1)) for k in range(3)]
    for fmt, ext in (("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif")):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=80)
        out[f"multi.{ext}"] = buffer.getvalue()
    return out


_END = {"jpg": b"\xff\xd9", "png": b"\x00\x00\x00\x00IEND\xaeB`\x82"}
_WRONG = {"jpg": "png", "png": "jpg", "tif": "webp", "webp": "bmp", "bmp": "tif"}
_KINDS = (("truncate", 10), ("truncate+end", 8), ("headerflip", 12), ("dataflip", 14),
          ("insert", 6), ("delete", 6), ("duplicate", 5), ("zerofill", 6), ("wrongext", 3),
          ("base", 2), ("random", 5), ("magic-random", 5), ("degenerate", 8), ("huge", 1),
          ("empty", 1), ("special", 2))


def generate(seed: int, count: int, base_bytes: dict[str, bytes]):
    """Yield ``count`` cases; the same seed gives the same cases in the same order."""
    from test_fuzz_inputs import _encode, _flip, _huge_headers

    rng = np.random.default_rng(seed)
    names = sorted(base_bytes)
    kinds = [k for k, _ in _KINDS]
    weights = np.array([w for _, w in _KINDS], float)
    weights /= weights.sum()
    huge = _huge_headers()
    magics = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM",
              b"RIFF\x00\x10\x00\x00WEBPVP8 ")
    for index in range(count):
        role = ROLES[index % len(ROLES)]
        kind = str(rng.choice(kinds, p=weights))
        base = names[int(rng.integers(len(names)))]
        blob = base_bytes[base]
        stem, ext = base.rsplit(".", 1)
        name, data, garbage, special = f"{index:05d}_{kind}_{stem}.{ext}", blob, False, None
        if kind == "truncate":
            cut = int(rng.integers(1, len(blob) - max(32, len(blob) // 10)))
            data, garbage = blob[:cut], True
        elif kind == "truncate+end":
            if ext not in _END:  # only formats with an end marker
                kind, base = "truncate", base
                cut = int(rng.integers(1, len(blob) - max(32, len(blob) // 10)))
                data, garbage = blob[:cut], True
                name = f"{index:05d}_{kind}_{stem}.{ext}"
            else:
                cut = int(rng.integers(len(blob) // 10, len(blob) * 9 // 10))
                data, garbage = blob[:cut] + _END[ext], True
        elif kind == "headerflip":
            data = _flip(rng, blob, 0, min(64, len(blob)), int(rng.integers(1, 4)))
        elif kind == "dataflip":
            data = _flip(rng, blob, min(64, len(blob) - 1), len(blob), int(rng.integers(1, 9)))
        elif kind == "insert":
            at = int(rng.integers(2, len(blob)))
            data = blob[:at] + rng.bytes(int(rng.integers(1, 17))) + blob[at:]
        elif kind == "delete":
            at = int(rng.integers(2, len(blob) - 1))
            data = blob[:at] + blob[at + int(rng.integers(1, 17)):]
        elif kind == "duplicate":
            start = int(rng.integers(0, len(blob) - 1))
            piece = blob[start:start + int(rng.integers(1, 257))]
            at = int(rng.integers(2, len(blob)))
            data = blob[:at] + piece + blob[at:]
        elif kind == "zerofill":
            start = int(rng.integers(min(64, len(blob) - 1), len(blob)))
            length = max(1, int(len(blob) * rng.uniform(0.02, 0.25)))
            data = blob[:start] + b"\0" * min(length, len(blob) - start) + blob[start + length:]
        elif kind == "wrongext":
            name = f"{index:05d}_{kind}_{stem}.{_WRONG.get(ext, 'png')}"
        elif kind == "random":
            ext = ("png", "jpg", "tif", "webp", "bmp", "gif")[int(rng.integers(6))]
            name, base = f"{index:05d}_{kind}.{ext}", None
            data, garbage = rng.bytes(int(rng.integers(1, 6000))), True
        elif kind == "magic-random":
            k = int(rng.integers(len(magics)))
            ext = ("png", "jpg", "tif", "tif", "bmp", "webp")[k]
            name, base = f"{index:05d}_{kind}.{ext}", None
            data, garbage = magics[k] + rng.bytes(int(rng.integers(8, 4000))), True
        elif kind == "degenerate":
            from PIL import Image

            short = int(rng.integers(1, 16))
            long = int(rng.integers(short, 4000)) if rng.random() < 0.5 else short
            if rng.random() < 0.5:  # or thin: more than 20:1
                short = int(rng.integers(16, 120))
                long = short * int(rng.integers(21, 40))
            w, h = (short, long) if rng.random() < 0.5 else (long, short)
            fmt, ext = (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"))[int(rng.integers(3))]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            name, base = f"{index:05d}_{kind}_{w}x{h}.{ext}", None
            data, garbage = _encode(Image.fromarray(pixels), fmt), True
        elif kind == "huge":
            pick = huge[int(rng.integers(len(huge)))]
            name, base, data, garbage = f"{index:05d}_{kind}_{pick.name}", None, pick.data, True
        elif kind == "empty":
            name, base, data, garbage = f"{index:05d}_{kind}.{ext}", None, b"", True
        elif kind == "special":
            special = SPECIALS[int(rng.integers(len(SPECIALS)))]
            name, base, data, garbage = f"{index:05d}_{special}.png", None, None, True
        if kind.startswith("truncate") and stem == "multi":
            garbage = False  # the first frame may be whole: judged by its pixels
        yield Case(index, name, data, kind, base, garbage, role, special)


# --------------------------------------------------------------------------- #
# the in-process worker
# --------------------------------------------------------------------------- #


class _Worker:
    """What a worker process keeps between cases."""

    def __init__(self, folder: Path, base_bytes: dict[str, bytes]):
        from mirrorppr_backends.warp import WarpBackend

        from mirrorppr_cli.demo import demo_retouch_inputs
        from mirrorppr_cli.io import read_image
        from mirrorppr_cli.retouch_job import load_exemplar

        self.folder = folder
        self.inputs, self.out = folder / "in", folder / "out"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.backend = WarpBackend()
        (before, after), _ = demo_retouch_inputs(folder / "demo")
        self.measured = load_exemplar(before, after)
        self.base_files: dict[str, Path] = {}
        bases_dir = folder / "bases"
        bases_dir.mkdir(exist_ok=True)
        self.base_pixels: dict[str, np.ndarray | None] = {}
        for name, blob in base_bytes.items():
            path = bases_dir / name
            path.write_bytes(blob)
            self.base_files[name] = path
            try:
                self.base_pixels[name] = read_image(path).pixels
            except Exception:  # noqa: BLE001 - a base is always readable; be safe
                self.base_pixels[name] = None
        self.partner = bases_dir / "crop160.png"

    def materialise(self, case: Case) -> Path:
        path = self.inputs / case.name
        if case.special is None:
            path.write_bytes(case.data)
        elif case.special == "fifo":
            os.mkfifo(path)
        elif case.special == "dev-zero":
            return Path("/dev/zero")
        elif case.special == "folder":
            path.mkdir()
        elif case.special == "symlink-to-fifo":
            os.mkfifo(self.inputs / "fifo-target")
            path.symlink_to(self.inputs / "fifo-target")
        elif case.special == "dangling-symlink":
            path.symlink_to(self.inputs / "nowhere")
        return path

    def clean(self) -> None:
        for folder in (self.inputs, self.out):
            shutil.rmtree(folder, ignore_errors=True)
        self.inputs.mkdir(parents=True, exist_ok=True)

    def run(self, case: Case) -> dict:
        import resource

        from mirrorppr_cli.apply_job import apply_ops_to_file
        from mirrorppr_cli.errors import InputError, MirrorError
        from mirrorppr_cli.inputs import check_detectable_file, output_suffix
        from mirrorppr_cli.io import read_image
        from mirrorppr_cli.ops import OpRequest
        from mirrorppr_cli.retouch_job import load_exemplar, retouch_file

        path = self.materialise(case)
        partner = self.base_files.get(case.base) or self.partner
        dest = self.out / f"result{output_suffix(path) if case.special is None else '.png'}"
        start = time.perf_counter()
        review = False
        outcome, error = "ok", None
        try:
            if case.role == "apply":
                op = (OpRequest("shoulder_width", 30) if case.index % 4 == 3
                      else OpRequest("eye_resize", 30))
                apply_ops_to_file(path, dest, [op], self.backend)
            elif case.role == "retouch-query":
                check_detectable_file(path)
                report = retouch_file(self.measured, path, dest)
                review = bool(report.review)
            else:
                pair = {"ex-before": (path, partner), "ex-after": (partner, path),
                        "explain": (path, partner)}[case.role]
                for member in pair:
                    check_detectable_file(member)
                load_exemplar(*pair, mode="catalog" if case.role == "explain" else "hybrid")
        except MirrorError as exc:
            outcome, error = "mirror", exc
        except Exception as exc:  # noqa: BLE001 - what the campaign looks for
            outcome, error = "exception", exc
        seconds = time.perf_counter() - start
        result = {"index": case.index, "name": case.name, "role": case.role, "kind": case.kind,
                  "base": case.base, "seconds": round(seconds, 4), "review": review,
                  "exit": 0 if outcome == "ok" else getattr(error, "exit_code", 1),
                  "error": None if error is None else f"{type(error).__name__}: {error}"[:400]}
        # what was left behind
        left = sorted(p.name for p in self.out.iterdir()) if self.out.exists() else []
        expected = [dest.name] if outcome == "ok" and case.role in ("apply", "retouch-query") \
            else []
        parts = [p.name for p in self.inputs.iterdir() if p.name.endswith(".part")]
        leftovers = [n for n in left if n not in expected] + parts
        intact = None
        if outcome == "ok":
            if case.base is not None and case.kind not in ("base", "wrongext") \
                    and case.base in self.base_pixels:
                try:
                    mine = read_image(path).pixels
                    theirs = self.base_pixels[case.base]
                    intact = bool(theirs is not None and mine.shape == theirs.shape
                                  and np.array_equal(mine, theirs))
                except MirrorError:
                    intact = False
            else:
                intact = True
            if expected and dest.exists():
                try:
                    read_image(dest)
                except MirrorError:
                    leftovers.append(f"{dest.name} (written, does not decode)")
        if outcome == "exception":
            klass = "traceback"
        elif leftovers:
            klass = "leftovers"
        elif outcome == "ok" and case.garbage:
            klass = "wrong exit"
        elif outcome == "mirror" and not isinstance(error, InputError):
            klass = "wrong exit"
        elif outcome == "mirror" and ("\n" in str(error) or not _names_file(str(error), path,
                                                                            partner)):
            klass = "bad message"
        elif outcome == "ok":
            klass = "accepted, intact" if intact else "accepted, altered"
        else:
            klass = "clean error"
        result.update(klass=klass, leftovers=leftovers,
                      maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self.clean()
        return result


def _names_file(message: str, path: Path, partner: Path) -> bool:
    """The message names the case's file (or the exemplar pair: "before → after")."""
    return any(str(p) in message or p.name in message for p in (path, partner))


def _worker_main(conn, folder: str, base_bytes: dict[str, bytes]) -> None:
    import logging
    import warnings

    from mirrorppr_cli.native_stderr import keep_for_the_tool

    keep_for_the_tool()  # libjpeg's and libtiff's warnings: as in the CLI, not shown
    warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())  # Pillow's log records, too
    worker = _Worker(Path(folder), base_bytes)
    conn.send("ready")
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(worker.run(case))


class _Pool:
    """``--workers`` spawned workers, one case each at a time, under a watchdog."""

    def __init__(self, size: int, root: Path, base_bytes: dict[str, bytes], timeout: float):
        self.ctx = mp.get_context("spawn")
        self.root, self.base_bytes, self.timeout = root, base_bytes, timeout
        self.slots = [self._start(k) for k in range(size)]

    def _start(self, k: int) -> dict:
        folder = self.root / f"worker{k}-{time.monotonic_ns()}"
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(child, str(folder),
                                                              self.base_bytes), daemon=True)
        process.start()
        child.close()
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError("a worker did not start")
        return {"k": k, "conn": parent, "process": process, "case": None, "since": 0.0,
                "folder": folder}

    def run(self, cases, on_result, deadline: float) -> int:
        """Feed ``cases`` until exhausted or ``deadline``; returns how many were run."""
        cases = iter(cases)
        done, exhausted = 0, False
        while True:
            for slot in self.slots:
                if slot["case"] is None and not exhausted:
                    case = next(cases, None) if time.monotonic() < deadline else None
                    if case is None:
                        exhausted = True
                        continue
                    slot["case"], slot["since"] = case, time.monotonic()
                    slot["conn"].send(case)
            busy = [s for s in self.slots if s["case"] is not None]
            if not busy:
                return done
            ready = wait([s["conn"] for s in busy], timeout=1.0)
            now = time.monotonic()
            for slot in busy:
                if slot["conn"] in ready:
                    try:
                        result = slot["conn"].recv()
                    except EOFError:  # the worker died (a native crash)
                        result = self._lost(slot, "worker died (native crash?)")
                    slot["case"] = None
                    result["worker"] = slot["k"]
                    on_result(result)
                    done += 1
                elif now - slot["since"] > self.timeout:
                    on_result({**self._lost(slot, f"no answer in {self.timeout:.0f} s"),
                               "worker": slot["k"]})
                    slot["case"] = None
                    done += 1

    def _lost(self, slot: dict, why: str) -> dict:
        case = slot["case"]
        slot["process"].kill()
        slot["process"].join(10)
        shutil.rmtree(slot["folder"], ignore_errors=True)
        fresh = self._start(slot["k"])
        slot.update({k: v for k, v in fresh.items() if k != "case"})
        klass = "hang" if "no answer" in why else "traceback"
        return {"index": case.index, "name": case.name, "role": case.role, "kind": case.kind,
                "base": case.base, "seconds": self.timeout, "review": False, "exit": None,
                "error": why, "klass": klass, "leftovers": [], "maxrss_mb": 0.0}

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot["conn"].send(None)
            except OSError:
                pass
            slot["process"].join(10)
            if slot["process"].is_alive():
                slot["process"].kill()


# --------------------------------------------------------------------------- #
# the command-line sample
# --------------------------------------------------------------------------- #


def run_cli_sample(sample: list[tuple[Case, dict]], root: Path) -> dict:
    """Each case through ``python -m mirrorppr_cli``; the exit code must be the in-process
    outcome's, stderr the tool's lines only, nothing left on failure."""
    from mirrorppr_cli.demo import demo_retouch_inputs

    shared = root / "cli-shared"
    (before, after), queries = demo_retouch_inputs(shared / "demo")
    query = Path(queries[0])
    base_dir = shared / "bases"
    base_dir.mkdir(parents=True, exist_ok=True)
    base_files = {}
    for case, _ in sample:
        if case.base and case.base not in base_files:
            base_files[case.base] = base_dir / case.base
            base_files[case.base].write_bytes(BASES[case.base])
    partner = base_dir / "crop160.png"
    partner.write_bytes(BASES["crop160.png"])

    def one(item):
        case, result = item
        folder = root / f"cli{case.index}"
        folder.mkdir()
        if case.special is None:
            path = folder / case.name
            path.write_bytes(case.data)
        elif case.special == "dev-zero":
            path = Path("/dev/zero")
        else:  # the other special files as the worker makes them
            path = folder / case.name
            if case.special == "fifo":
                os.mkfifo(path)
            elif case.special == "folder":
                path.mkdir()
            elif case.special == "symlink-to-fifo":
                os.mkfifo(folder / "fifo-target")
                path.symlink_to(folder / "fifo-target")
            else:
                path.symlink_to(folder / "nowhere")
        other = base_files.get(case.base, partner)
        out = folder / "out"
        args = {
            "apply": ["apply", str(path), "--op",
                      "shoulder_width=30" if case.index % 4 == 3 else "eye_resize=30",
                      "-o", f"{out}/"],
            "retouch-query": ["retouch", "--ex", str(before), str(after), "--query", str(path),
                              "-o", f"{out}/"],
            "ex-before": ["retouch", "--ex", str(path), str(other), "--query", str(query),
                          "-o", f"{out}/", "--no-check"],
            "ex-after": ["retouch", "--ex", str(other), str(path), "--query", str(query),
                         "-o", f"{out}/", "--no-check"],
            "explain": ["explain", "--ex", str(path), str(other)],
        }[case.role]
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "mirrorppr_cli", *args],
                                  capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return {"case": case.name, "role": case.role, "klass": "hang"}
        seconds = time.perf_counter() - start
        expected = result["exit"]
        if case.role == "retouch-query" and expected == 0 and result["review"]:
            expected = 7
        if case.role in ("ex-before", "ex-after") and expected == 0:
            expected = proc.returncode if proc.returncode in (0, 7) else 0
        foreign = [line for line in proc.stderr.splitlines()
                   if line.strip() and not line.startswith(TOOL_LINES)]
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        if "Traceback" in proc.stderr:
            klass = "traceback"
        elif proc.returncode not in (0, 7) and left:
            klass = "leftovers"
        elif proc.returncode != expected:
            klass = "wrong exit"
        elif foreign:
            klass = "foreign stderr"
        else:
            klass = "as in process"
        shutil.rmtree(folder, ignore_errors=True)
        return {"case": case.name, "role": case.role, "klass": klass, "exit": proc.returncode,
                "expected": expected, "seconds": round(seconds, 2),
                **({"stderr": proc.stderr[-600:]} if klass != "as in process" else {})}

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, sample))


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #


def markdown(summary: dict) -> str:
    columns = [c for c in CLASSES]
    lines = [f"Fault campaign: {summary['cases']} cases, seed {summary['seed']}, "
             f"{summary['seconds']:.0f} s on {summary['workers']} workers "
             f"({summary['rate_per_s']:.1f} cases/s); peak RSS {summary['peak_rss_mb']:.0f} MB",
             "", "| role | " + " | ".join(columns) + " | total |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for role in (*ROLES, "all"):
        counts = summary["by_role"].get(role, {}) if role != "all" else summary["classes"]
        lines.append(f"| {role} | " + " | ".join(str(counts.get(c, 0)) for c in columns)
                     + f" | {sum(counts.values())} |")
    lines += ["", "Accepted with pixels that differ from the undamaged original, by format and "
              "mutation:", "", "| format | mutation | count |", "|---|---|---:|"]
    for key, count in sorted(summary["altered_by_format_kind"].items(),
                             key=lambda kv: -kv[1]):
        fmt, kind = key.split("/", 1)
        lines.append(f"| {fmt} | {kind} | {count} |")
    cli = summary["cli_sample"]
    lines += ["", f"Command-line sample: {cli['runs']} runs; "
              + ", ".join(f"{k}: {v}" for k, v in sorted(cli["classes"].items()))]
    return "\n".join(lines) + "\n"


BASES: dict[str, bytes] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2222)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--budget-s", type=float, default=1200.0,
                        help="stop starting in-process cases after this many seconds")
    parser.add_argument("--cli-sample", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "fault_campaign")
    args = parser.parse_args()

    BASES.update(bases())
    rng = np.random.default_rng(args.seed + 1)
    sample_at = set(int(i) for i in rng.choice(args.cases, min(args.cli_sample, args.cases),
                                               replace=False))
    sampled: dict[int, Case] = {}

    def cases():
        for case in generate(args.seed, args.cases, BASES):
            if case.index in sample_at:
                sampled[case.index] = case
            yield case

    results: list[dict] = []
    root = Path(tempfile.mkdtemp(prefix="mirrorppr-faults-"))
    start = time.monotonic()
    pool = _Pool(args.workers, root, BASES, args.timeout)
    last = [start]

    def on_result(result: dict) -> None:
        results.append(result)
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            counts = Counter(r["klass"] for r in results)
            print(f"{len(results)} cases, {time.monotonic() - start:.0f} s: {dict(counts)}",
                  file=sys.stderr, flush=True)

    try:
        pool.run(cases(), on_result, start + args.budget_s)
    finally:
        pool.close()
    seconds = time.monotonic() - start
    by_index = {r["index"]: r for r in results}
    sample = [(sampled[i], by_index[i]) for i in sorted(sampled) if i in by_index]
    cli_start = time.monotonic()
    cli = run_cli_sample(sample, root)
    cli_seconds = time.monotonic() - cli_start
    shutil.rmtree(root, ignore_errors=True)

    by_role: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    altered: Counter = Counter()
    for r in results:
        by_role[r["role"]][r["klass"]] += 1
        by_kind[r["kind"]][r["klass"]] += 1
        if r["klass"] == "accepted, altered":
            fmt = (r["base"] or "?").rsplit(".", 1)[-1]
            altered[f"{fmt}/{r['kind']}"] += 1
    grown, last_peak = [], {}  # how much each case raised its worker's peak RSS
    for r in results:  # in the order they finished, per worker
        before = last_peak.get(r.get("worker"), 0.0)
        if r["maxrss_mb"]:
            if before and r["maxrss_mb"] > before:
                grown.append({"name": r["name"], "role": r["role"],
                              "peak_rise_mb": round(r["maxrss_mb"] - before, 1)})
            last_peak[r.get("worker")] = max(before, r["maxrss_mb"])
    grown.sort(key=lambda g: -g["peak_rise_mb"])
    peak_rss = max((r["maxrss_mb"] for r in results), default=0.0)
    examples = defaultdict(list)
    for r in results:
        if r["klass"] not in ("clean error", "accepted, intact") and len(examples[r["klass"]]) < 8:
            examples[r["klass"]].append({k: r[k] for k in ("name", "role", "error", "leftovers")})
    slowest = sorted(results, key=lambda r: -r["seconds"])[:5]
    summary = {
        "seed": args.seed, "cases": len(results), "asked": args.cases, "workers": args.workers,
        "seconds": round(seconds, 1), "rate_per_s": round(len(results) / max(seconds, 1e-9), 2),
        "timeout_s": args.timeout,
        "classes": dict(Counter(r["klass"] for r in results)),
        "by_role": {k: dict(v) for k, v in by_role.items()},
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "altered_by_format_kind": dict(altered),
        "peak_rss_mb": round(peak_rss, 1),
        "largest_peak_rises": grown[:5],
        "slowest_cases": [{k: r[k] for k in ("name", "role", "seconds", "klass")}
                          for r in slowest],
        "examples": dict(examples),
        "cli_sample": {"runs": len(cli), "seconds": round(cli_seconds, 1),
                       "classes": dict(Counter(c["klass"] for c in cli)),
                       "not_as_in_process": [c for c in cli if c["klass"] != "as in process"]},
    }
    write_summary(args.out, summary, markdown)


if __name__ == "__main__":
    main()

