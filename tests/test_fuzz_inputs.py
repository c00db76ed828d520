"""A seeded fuzz harness for the image readers and the detectors behind them.

A few hundred damaged and degenerate files — truncated, bytes flipped in the header and in the
data, wrong extensions, empty, random bytes (bare, and behind a real format's magic number),
huge sizes declared in the header, 1×N, N×1, 2×2, and every colour mode the reader takes
(palette, grey+alpha, CMYK, 16-bit grey and colour, 1-bit) — go through:

* the query role, in process: ``apply_ops_to_file`` (read, size check, face or body detector,
  warp, atomic write), as ``mirrorppr apply`` runs it;
* the exemplar role, in process: the CLI's header check (``check_detectable_file``), then
  ``load_exemplar`` (read both, face detector and mesh, edit measurement);
* a handful through the real CLI in child processes (``apply`` and ``retouch``).

What must hold: nothing but the tool's own errors (:class:`MirrorError` subclasses; no other
exception, no traceback); never a success on garbage (random bytes, truncated data and huge
declared sizes are :class:`InputError`, exit 3); nothing left in the output folder when a run
fails. Same :data:`SEED`, same cases.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from mirrorppr_backends.warp import WarpBackend
from PIL import Image
from skimage import data

from mirrorppr_cli.apply_job import apply_ops_to_file
from mirrorppr_cli.errors import InputError, MirrorError
from mirrorppr_cli.geometric.landmarks import (
    MAX_DETECT_SIDE,
    _run,
    check_detectable,
    detect_face_boxes,
)
from mirrorppr_cli.inputs import check_detectable_file
from mirrorppr_cli.io import read_image
from mirrorppr_cli.ops import OpRequest
from mirrorppr_cli.retouch_job import load_exemplar

SEED = 1616
#: Mutants of each kind per base image.
TRUNCATIONS, HEADER_FLIPS, DATA_FLIPS = 3, 5, 4
#: Cases also run through the real CLI (child processes, two at a time).
CLI_CASES = 10
#: How an image the detectors cannot take is refused.
UNDETECTABLE = re.compile(r"\d+×\d+ pixels is too (small|thin|large) for the face and body")


@dataclass(frozen=True)
class Case:
    """One file to feed the tool: ``garbage`` ones must be refused with InputError."""

    name: str
    data: bytes
    garbage: bool


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bases() -> dict[str, bytes]:
    """Valid files (a 64×56 crop of the astronaut's face) in every format and mode read."""
    face = np.ascontiguousarray(cv2.resize(data.astronaut()[40:232, 130:322], (64, 56),
                                           interpolation=cv2.INTER_AREA))
    rgb = Image.fromarray(face)
    bases = {f"rgb.{ext}": _encode(rgb, fmt) for fmt, ext in
             (("JPEG", "jpg"), ("PNG", "png"), ("TIFF", "tif"), ("WEBP", "webp"), ("BMP", "bmp"))}
    bases.update({
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True),
        "grey.jpg": _encode(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "cmyk.tif": _encode(rgb.convert("CMYK"), "TIFF"),
        "lzw.tif": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "grey.png": _encode(rgb.convert("L"), "PNG"),
        "la.png": _encode(rgb.convert("LA"), "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "palette.bmp": _encode(rgb.convert("P"), "BMP"),
        "bilevel.png": _encode(rgb.convert("1"), "PNG"),
        "i16.png": _encode(Image.fromarray(face[..., 1].astype(np.uint16) * 257), "PNG"),
        "lossless.webp": _encode(rgb, "WEBP", lossless=True),
    })
    ok, png16 = cv2.imencode(".png", np.ascontiguousarray(face[..., ::-1]).astype(np.uint16) * 257)
    assert ok
    bases["rgb16.png"] = png16.tobytes()
    return bases


def _degenerate(rng: np.random.Generator) -> list[Case]:
    """Valid files the detectors cannot use: too small or too thin (exit 3)."""
    cases = []
    for w, h in ((1, 1), (2, 2), (15, 15), (1, 3000), (3000, 1), (1, 10000), (10000, 1),
                 (12, 400), (400, 12), (64, 8000)):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        fmt, ext = ("PNG", "png") if (w * h) % 2 else ("JPEG", "jpg")
        if max(w, h) > 4000:
            fmt, ext = "PNG", "png"  # past WebP's and near JPEG's limits
        cases.append(Case(f"degenerate_{w}x{h}.{ext}", _encode(Image.fromarray(pixels), fmt),
                          garbage=False))
    return cases


def _huge_headers() -> list[Case]:
    """Headers that declare far more pixels than the default limit allows."""
    ihdr = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))
    bmp_header = struct.pack("<2sIHHI", b"BM", 0, 0, 0, 54)
    bmp_info = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 0, 0, 0, 0)
    bmp = bmp_header + bmp_info + b"\0" * 64
    jpeg = bytearray(_encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5: sof + 9] = struct.pack(">HH", 65_000, 65_000)  # height, width
    tiff = bytearray(_encode(Image.new("L", (8, 8)), "TIFF"))  # little-endian ("II")
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for k in range(struct.unpack_from("<H", tiff, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", tiff, entry)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HII", tiff, entry + 2, 4, 1, 300_000)
    return [Case("huge.png", png, True), Case("huge.bmp", bmp, True),
            Case("huge.jpg", bytes(jpeg), True), Case("huge.tif", bytes(tiff), True)]


def _flip(rng: np.random.Generator, blob: bytes, lo: int, hi: int, count: int) -> bytes:
    mutated = bytearray(blob)
    for at in rng.integers(lo, max(lo + 1, hi), count):
        mutated[int(at)] ^= int(rng.integers(1, 256))
    return bytes(mutated)


def make_cases(seed: int = SEED) -> list[Case]:
    """Every case, in a fixed order: the same seed gives the same bytes."""
    rng = np.random.default_rng(seed)
    bases = _bases()
    cases = [Case(f"base_{name}", blob, False) for name, blob in bases.items()]
    for name, blob in bases.items():
        stem, ext = name.rsplit(".", 1)
        # Truncated inside the data: a file that lacks only its trailer (PNG's IEND chunk and
        # last CRC, JPEG's end-of-image marker) still holds every pixel and may be read.
        for k in range(TRUNCATIONS):
            cut = int(rng.integers(1, len(blob) - max(32, len(blob) // 10)))
            cases.append(Case(f"truncated{k}_{stem}.{ext}", blob[:cut], True))
        for k in range(HEADER_FLIPS):
            flipped = _flip(rng, blob, 0, min(64, len(blob)), int(rng.integers(1, 4)))
            cases.append(Case(f"headerflip{k}_{stem}.{ext}", flipped, False))
        for k in range(DATA_FLIPS):
            flipped = _flip(rng, blob, min(64, len(blob) - 1), len(blob), int(rng.integers(1, 9)))
            cases.append(Case(f"dataflip{k}_{stem}.{ext}", flipped, False))
        wrong = {"jpg": "png", "png": "jpg", "tif": "webp", "webp": "bmp", "bmp": "tif"}[ext]
        cases.append(Case(f"wrongext_{stem}.{wrong}", blob, False))
    cases.append(Case("noext_rgb", bases["rgb.png"], False))
    cases.append(Case("empty.png", b"", True))
    for k in range(12):
        size = int(rng.integers(1, 5000))
        ext = ("png", "jpg", "tif", "webp", "bmp", "gif")[k % 6]
        cases.append(Case(f"random{k}.{ext}", rng.bytes(size), True))
    magics = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM",
              b"RIFF\x00\x10\x00\x00WEBPVP8 ")
    for k, magic in enumerate(magics):
        ext = ("png", "jpg", "tif", "tif", "bmp", "webp")[k]
        cases.append(Case(f"magic_random{k}.{ext}", magic + rng.bytes(int(rng.integers(8, 3000))),
                          True))
    cases += _degenerate(rng)
    cases += _huge_headers()
    return cases


CASES = make_cases()


def test_the_seed_fixes_the_cases():
    again = make_cases(SEED)
    assert [(c.name, c.data) for c in again] == [(c.name, c.data) for c in CASES]
    assert [c.data for c in make_cases(SEED + 1)] != [c.data for c in CASES]
    assert len(CASES) >= 200


def _write(folder: Path, case: Case) -> Path:
    path = folder / case.name
    path.write_bytes(case.data)
    return path


def _outcome(run) -> MirrorError | None:
    """None on success, the tool's own error otherwise; any other exception fails the test."""
    try:
        run()
    except MirrorError as error:
        assert "\n" not in str(error), str(error)
        return error
    return None


def test_readers_and_detectors_never_leak_and_never_pass_garbage(tmp_path):
    backend = WarpBackend()
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    refused = passed = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, case in enumerate(CASES):
            path = _write(inputs, case)
            # The query role, as `apply` runs it; face and body detectors in turn.
            op = OpRequest("shoulder_width", 30) if i % 4 == 3 else OpRequest("eye_resize", 30)
            dest = out / f"{i:04d}.png"
            error = _outcome(lambda: apply_ops_to_file(path, dest, [op], backend))  # noqa: B023
            if error is not None:
                assert not out.exists() or not any(out.iterdir()), (case.name, list(out.iterdir()))
                refused += 1
            else:
                assert dest.is_file()
                dest.unlink()
                passed += 1
            if case.garbage:
                assert isinstance(error, InputError), (case.name, error)
            # The exemplar role: the CLI's header check, then the measurement of the pair.
            ex_error = _outcome(lambda: (check_detectable_file(path),  # noqa: B023
                                         load_exemplar(path, path, mode="flow")))  # noqa: B023
            if case.garbage:
                assert isinstance(ex_error, InputError), (case.name, ex_error)
            if case.name.startswith("degenerate_"):
                for refusal in (error, ex_error):
                    assert isinstance(refusal, InputError) and UNDETECTABLE.search(str(refusal))
            path.unlink()
    # A decoder's warning would reach the user as two more lines of noise.
    ours = [w for w in caught if os.sep + "PIL" + os.sep in w.filename
            or "mirrorppr" in w.filename]
    assert not ours, [str(w.message) for w in ours]
    # The corpus is worth its name: many cases are refused, the valid ones still work.
    assert refused > len(CASES) // 3 and passed >= 10, (refused, passed)


def test_valid_bases_are_read_in_every_mode(tmp_path):
    modes = set()
    for case in CASES:
        if case.name.startswith(("base_", "wrongext_", "noext_")):
            picture = read_image(_write(tmp_path, case))
            modes.add((picture.mode, picture.pixels.dtype.name))
    assert {("RGB", "uint8"), ("L", "uint8"), ("LA", "uint8"), ("RGBA", "uint8"),
            ("CMYK", "uint8"), ("L", "uint16"), ("RGB", "uint16")} <= modes


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorppr_cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_a_handful_through_the_real_cli(tmp_path):
    """Exit 3, one error line, no traceback, an empty output folder."""
    rng = np.random.default_rng(SEED)
    refused = [c for c in CASES if c.garbage or c.name.startswith("degenerate_")]
    chosen = [refused[int(i)] for i in rng.choice(len(refused), CLI_CASES, replace=False)]
    exemplar = tmp_path / "exemplar.png"
    Image.fromarray(data.astronaut()).save(exemplar)
    runs = []
    for i, case in enumerate(chosen):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        path = _write(folder, case)
        out = folder / "out"
        if i % 2:
            args = ["retouch", "--ex", str(exemplar), str(exemplar), "--query", str(path),
                    "-o", f"{out}/"]
        else:
            args = ["apply", str(path), "--op", "eye_resize=30", "-o", f"{out}/"]
        runs.append((case, args, folder, out))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda run: _cli(run[1], run[2]), runs))
    for (case, _, _, out), proc in zip(runs, results, strict=True):
        assert proc.returncode == 3, (case.name, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, (case.name, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and case.name in errors[0], (case.name, proc.stderr)
        # nothing but the tool's lines: no decoder's or detector's own warnings (issue 22)
        assert all(line.startswith(("error: ", "measuring ")) for line in
                   proc.stderr.splitlines()), (case.name, proc.stderr)
        assert not out.exists() or not any(out.iterdir()), case.name


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("degenerate_")],
                         ids=lambda c: c.name)
def test_degenerate_images_are_named_with_their_size(case, tmp_path):
    path = _write(tmp_path, case)
    with pytest.raises(InputError, match=UNDETECTABLE):
        check_detectable_file(path)


def test_a_side_mediapipe_would_abort_on_is_refused_first(tmp_path):
    """MediaPipe aborts the process (SIGABRT) on a side of 32767 px or more: refused before."""
    assert MAX_DETECT_SIDE == 32766
    with pytest.raises(InputError, match=r"1700×32767 pixels is too large"):
        check_detectable(1700, 32767)
    tall = np.broadcast_to(np.zeros(3, np.uint8), (32767, 1700, 3))  # no memory behind it
    assert detect_face_boxes(tall) == []
    with pytest.raises(InputError, match="too large"):
        _run(None, tall)  # the backstop every graph (the pose graph too) goes through
    with pytest.raises(InputError, match="too small"):
        _run(None, np.zeros((0, 5, 3), np.uint8))
    # From the header alone: the file's pixel data is not even there.
    ihdr = struct.pack(">IIBBBBB", 1700, 32767, 8, 2, 0, 0, 0)
    path = tmp_path / "tall.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    with pytest.raises(InputError, match=r"tall.png: 1700×32767 pixels is too large"):
        check_detectable_file(path)
