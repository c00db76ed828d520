"""Hostile and unlucky inputs (issue 22): one bad item never stops a batch; ``-o`` names what
is written; damaged JPEGs are refused; only regular files are read; refused weight files exit
5; interrupted batches resume with ``--skip-existing``; stderr holds the tool's lines only."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

import mirrorppr_cli.apply_job as apply_job
import mirrorppr_cli.retouch_job as retouch_job
from mirrorppr_cli import io as mio
from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import InputError, MissingWeightsError
from mirrorppr_cli.io import read as io_read

runner = CliRunner()
SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real console entry point in a child process (its stderr is what a user sees)."""
    return subprocess.run([sys.executable, "-m", "mirrorppr_cli", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("astro") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def astro_jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --------------------------------------------------------------------------- #
# 1. one item's unexpected exception never stops the batch
# --------------------------------------------------------------------------- #


def _raising_for(real, name: str):
    def read(path, *args, **kwargs):
        if Path(path).name == name:
            raise RuntimeError("simulated crash\nwith a second line")
        return real(path, *args, **kwargs)
    return read


def test_apply_batch_goes_on_after_an_unexpected_exception(astro_png, tmp_path, monkeypatch):
    folder = tmp_path / "shoot"
    folder.mkdir()
    for name in ("a_crash.png", "b.png", "c.png"):  # the crashing item comes first
        (folder / name).write_bytes(astro_png.read_bytes())
    monkeypatch.setattr(apply_job, "read_image", _raising_for(apply_job.read_image, "a_crash.png"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["apply", str(folder), "--op", "eye_resize=30", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in out.iterdir()) == ["b_retouched.png", "c_retouched.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a_crash.png" in errors[0] and "RuntimeError" in errors[0]
    assert "Traceback" not in result.output
    # --json: the item is failed with exit code 1, the others ok
    result = runner.invoke(app, ["apply", str(folder), "--op", "eye_resize=30", "-o",
                                 str(tmp_path / "out2"), "--json"])
    assert result.exit_code == 1
    items = {Path(i["input"]).name: i for i in json.loads(result.stdout)["items"]}
    assert items["a_crash.png"]["status"] == "failed" and items["a_crash.png"]["exit_code"] == 1
    assert items["b.png"]["status"] == items["c.png"]["status"] == "ok"


def test_retouch_batch_goes_on_after_an_unexpected_exception(astro_png, tmp_path, monkeypatch):
    folder = tmp_path / "queries"
    folder.mkdir()
    for name in ("a_crash.png", "b.png"):
        (folder / name).write_bytes(astro_png.read_bytes())
    monkeypatch.setattr(retouch_job, "read_image",
                        _raising_for(retouch_job.read_image, "a_crash.png"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["retouch", "--ex", str(astro_png), str(astro_png),
                                 "--query", str(folder), "-o", str(out), "--no-check"])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["b_retouched.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a_crash.png" in errors[0]


# --------------------------------------------------------------------------- #
# 2. -o DIR/ is a folder; -o NAME must name a format written
# --------------------------------------------------------------------------- #


def test_trailing_slash_names_a_new_folder(astro_png, tmp_path):
    out = tmp_path / "new"
    result = runner.invoke(app, ["apply", str(astro_png), "--op", "eye_resize=30",
                                 "-o", f"{out}{os.sep}"])
    assert result.exit_code == 0, result.output
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["astronaut_retouched.png"]
    out = tmp_path / "new2"
    result = runner.invoke(app, ["retouch", "--ex", str(astro_png), str(astro_png), "--query",
                                 str(astro_png), "-o", f"{out}/", "--no-check"])
    assert result.exit_code == 0, result.output
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["astronaut_retouched.png"]


@pytest.mark.parametrize("name, extra, words", [
    ("x.gif", [], "cannot write .gif files"),
    ("result", [], "without an image suffix"),
    ("x.jpg", ["--format", "png"], "the name says JPEG but --format says PNG"),
])
def test_output_name_must_name_the_format_written(astro_png, tmp_path, name, extra, words):
    target = tmp_path / name
    for command in (["apply", str(astro_png), "--op", "eye_resize=30"],
                    ["retouch", "--ex", str(astro_png), str(astro_png), "--query",
                     str(astro_png)]):
        result = runner.invoke(app, [*command, "-o", str(target), *extra])
        assert result.exit_code == 2, result.output
        assert words in result.stderr and len(result.stderr.splitlines()) == 1
        assert "--format" in words or (".png" in result.stderr and ".webp" in result.stderr)
        assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_file_without_an_image_suffix_gets_its_formats(tmp_path, astro_png):
    source = tmp_path / "portrait"  # a PNG without a suffix
    source.write_bytes(astro_png.read_bytes())
    result = runner.invoke(app, ["apply", str(source), "--op", "eye_resize=30"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "portrait_retouched.png"
    with Image.open(written) as image:
        assert image.format == "PNG"


# --------------------------------------------------------------------------- #
# 3. damaged JPEGs are refused; frames beyond the first are named
# --------------------------------------------------------------------------- #


def test_jpeg_cut_short_with_an_end_marker_is_refused(tmp_path, astro_jpeg_bytes):
    path = tmp_path / "cut.jpg"
    path.write_bytes(astro_jpeg_bytes[: len(astro_jpeg_bytes) // 2] + b"\xff\xd9")
    with pytest.raises(InputError, match=r"truncated or corrupt \(libjpeg: Corrupt JPEG data") as info:
        mio.read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _flipped_jpeg_pillow_refuses_opencv_decodes(jpeg: bytes) -> bytes:
    sos = jpeg.index(b"\xff\xda")
    for seed in range(400):
        rng = np.random.default_rng(seed)
        mutated = bytearray(jpeg)
        for at in rng.integers(sos + 20, len(jpeg) - 2, 4):
            mutated[int(at)] ^= int(rng.integers(1, 256))
        mutated = bytes(mutated)
        try:
            with Image.open(io.BytesIO(mutated)) as image:
                image.load()
            continue
        except Exception:  # noqa: BLE001 - Pillow refuses it: the case wanted
            pass
        if cv2.imdecode(np.frombuffer(mutated, np.uint8), cv2.IMREAD_COLOR) is not None:
            return mutated
    raise AssertionError("no such mutant found")


def test_byte_flipped_jpeg_the_fast_path_would_decode_is_refused(tmp_path, astro_jpeg_bytes):
    path = tmp_path / "flipped.jpg"
    path.write_bytes(_flipped_jpeg_pillow_refuses_opencv_decodes(astro_jpeg_bytes))
    with pytest.raises(InputError, match="truncated or corrupt"):
        mio.read_image(path)


def test_damaged_cmyk_jpeg_is_refused_too(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).convert("CMYK").save(buffer, "JPEG", quality=90)
    blob = buffer.getvalue()
    path = tmp_path / "cmyk_cut.jpg"
    path.write_bytes(blob[: len(blob) // 2] + b"\xff\xd9")
    with pytest.raises(InputError, match=r"truncated or corrupt \(libjpeg: Corrupt JPEG data"):
        mio.read_image(path)


def test_damaged_jpeg_through_the_cli_exits_3_with_one_line(tmp_path, astro_jpeg_bytes):
    """Exit 3, and stderr is the tool's one line: libjpeg's own warning does not leak."""
    path = tmp_path / "cut.jpg"
    path.write_bytes(astro_jpeg_bytes[: len(astro_jpeg_bytes) // 2] + b"\xff\xd9")
    proc = _cli("apply", str(path), "--op", "eye_resize=30", "-o", str(tmp_path / "o.jpg"))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error:") and "cut.jpg" in proc.stderr
    assert "truncated or corrupt (libjpeg: Corrupt JPEG data" in proc.stderr
    assert not (tmp_path / "o.jpg").exists()
    # --verbose shows what libjpeg said
    proc = _cli("apply", str(path), "--op", "eye_resize=30", "-o", str(tmp_path / "o.jpg"),
                "--verbose")
    assert proc.returncode == 3 and "Corrupt JPEG data" in proc.stderr


@pytest.mark.skipif(not SHARED_FACES.is_dir(), reason="shared/faces not present")
def test_real_jpegs_are_not_taken_for_damaged():
    jpegs = sorted(SHARED_FACES.rglob("*.jpg"))
    assert len(jpegs) >= 20
    for path in jpegs:
        assert mio.read_image(path).width > 0


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(np.roll(data.astronaut(), 20 * k, axis=1)) for k in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, ext, kind", [("PNG", "png", "frames"), ("WEBP", "webp", "frames"),
                                            ("TIFF", "tif", "pages")])
def test_several_frames_are_said(tmp_path, fmt, ext, kind):
    path = tmp_path / f"multi.{ext}"
    path.write_bytes(_animated(fmt))
    picture = mio.read_image(path)
    assert picture.frames == 3
    assert mio.frames_note(picture.frames, picture.format) .startswith(
        f"used the first of 3 {kind}")
    result = runner.invoke(app, ["apply", str(path), "--op", "eye_resize=30", "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["items"][0]["notes"]
    assert notes and f"used the first of 3 {kind}" in notes[0]
    single = tmp_path / f"single.{ext}"
    Image.fromarray(data.astronaut()).save(single, fmt)
    assert mio.read_image(single).frames == 1


# --------------------------------------------------------------------------- #
# 7. --ex (and every input) must be a regular file
# --------------------------------------------------------------------------- #


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("command", ["explain", "retouch"])
def test_a_fifo_as_exemplar_is_refused_without_hanging(astro_png, tmp_path, command):
    fifo = tmp_path / "before.png"
    os.mkfifo(fifo)
    args = ["--ex", str(fifo), str(astro_png)]
    if command == "retouch":
        args += ["--query", str(astro_png), "-o", str(tmp_path / "out") + "/"]
    proc = _cli(command, *args, timeout=60)  # a hang fails the test here
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {fifo}: is a named pipe (FIFO), not a "
                                                "regular file; pass an image file"]


def _limit_memory() -> None:  # a child that reads /dev/zero without bound dies early
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.skipif(not os.path.exists("/dev/zero") or os.name != "posix",
                    reason="no /dev/zero")
@pytest.mark.parametrize("role", [0, 1])
def test_dev_zero_as_exemplar_is_refused(astro_png, tmp_path, role):
    pair = [str(astro_png), str(astro_png)]
    pair[role] = "/dev/zero"
    proc = _cli("explain", "--ex", *pair, timeout=60, preexec_fn=_limit_memory)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: /dev/zero: is a character device, not a regular file; pass an image file"]


def test_reading_is_bounded_by_the_pixel_limit(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.truncate(1000 * io_read._MAX_BYTES_PER_PIXEL + io_read._MAX_OVERHEAD_BYTES + 10)
    with pytest.raises(InputError, match="file is larger than"):
        mio.read_image(big, max_pixels=1000)


# --------------------------------------------------------------------------- #
# 8. refused weight files: exit 5, one line naming the file
# --------------------------------------------------------------------------- #


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_malicious_mae_bin_is_missing_weights_naming_the_file(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mirrorppr_cli.model.weights import load_mae

    folder = tmp_path / "mae"
    config = transformers.ViTMAEConfig(hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64,
                                       image_size=32, patch_size=16)
    config.save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _RunsCode()}, protocol=2))

    class Cfg:
        hidden_size, patch_size = 32, 16

    with pytest.raises(MissingWeightsError) as info:
        load_mae(str(folder), Cfg)
    message = str(info.value)
    assert str(folder / "pytorch_model.bin") in message and "refused" in message
    assert "\n" not in message and info.value.exit_code == 5


def test_malicious_lpips_checkpoint_fails_the_up_front_check(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("lpips")
    from mirrorppr_cli.metrics import perceptual

    (tmp_path / "vgg16.ckpt").write_bytes(pickle.dumps({"x": _RunsCode()}))
    monkeypatch.setenv(perceptual.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        perceptual.check_lpips("vgg")
    assert str(tmp_path / "vgg16.ckpt") in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 5


# --------------------------------------------------------------------------- #
# 10. interrupted batches: --skip-existing, stale temporaries
# --------------------------------------------------------------------------- #


def test_skip_existing_resumes_a_batch_and_removes_only_stale_temporaries(astro_png, tmp_path):
    folder = tmp_path / "shoot"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(astro_png.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    # what a batch killed after a.png left: a's output, a temporary of b's
    first = runner.invoke(app, ["apply", str(folder / "a.png"), "--op", "eye_resize=30",
                                "-o", str(out / "a_retouched.png")])
    assert first.exit_code == 0
    stale = out / ".b_retouched.png.0123abcd.part"
    stale.write_bytes(b"half a png")
    keep = [out / ".b_retouched.png.notes.part", out / ".other.png.0123abcd.part",
            out / "b_retouched.png.0123abcd.part"]  # not the tool's names for this run
    for path in keep:
        path.write_bytes(b"the user's")
    again = runner.invoke(app, ["apply", str(folder), "--op", "eye_resize=30", "-o", str(out)])
    assert again.exit_code == 1 and "exists" in again.stderr  # without --skip-existing
    assert not stale.exists()  # removed all the same: this run's own temporary
    (out / "b_retouched.png").unlink()  # as if killed again before b was written
    stale.write_bytes(b"half a png")
    resumed = runner.invoke(app, ["apply", str(folder), "--op", "eye_resize=30", "-o", str(out),
                                  "--skip-existing", "--json"])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["summary"]["ok"] == 1 and report["summary"]["skipped"] == 1
    assert report["summary"]["removed_temporaries"] == [str(stale)]
    status = {Path(i["input"]).name: i["status"] for i in report["items"]}
    assert status == {"a.png": "skipped", "b.png": "ok"}
    assert all(path.read_bytes() == b"the user's" for path in keep)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")
                  and not p.name.endswith(".part")) == ["a_retouched.png", "b_retouched.png"]
    assert not stale.exists()
    # all done: nothing to measure, nothing to write, exit 0 (retouch too)
    done = runner.invoke(app, ["retouch", "--ex", str(astro_png), str(astro_png), "--query",
                               str(folder), "-o", str(out), "--skip-existing", "--suffix",
                               "_retouched"])
    assert done.exit_code == 0 and "2 skipped" in done.stdout
    both = runner.invoke(app, ["apply", str(folder), "--op", "eye_resize=30", "-o", str(out),
                               "--skip-existing", "--force"])
    assert both.exit_code == 2


def test_a_temporary_being_written_is_not_removed(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    dest = tmp_path / "x.png"
    temp = tmp_path / ".x.png.00ff00ff.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer
        assert mio.remove_stale_temporaries([dest]) == []
        assert temp.exists()
    finally:
        os.close(fd)
    assert mio.remove_stale_temporaries([dest]) == [temp]
    assert not temp.exists()


# --------------------------------------------------------------------------- #
# stderr is the tool's
# --------------------------------------------------------------------------- #


def test_a_normal_run_prints_nothing_on_stderr(astro_png, tmp_path):
    proc = _cli("apply", str(astro_png), "--op", "eye_resize=30", "--op", "shoulder_width=20",
                "-o", str(tmp_path / "o.png"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip().endswith("o.png")


def test_a_batch_of_damaged_files_prints_only_the_tools_lines(tmp_path):
    """libjpeg's "Corrupt JPEG data" and libtiff's LZW warnings (printed by the libraries
    themselves, straight to file descriptor 2) never reach the user: stderr has one line per
    failed item, each the tool's."""
    from test_fuzz_inputs import CASES

    folder = tmp_path / "damaged"
    folder.mkdir()
    chosen = [c for c in CASES if c.name.endswith(("_lzw.tif", "_rgb.jpg", "_grey.jpg",
                                                     "_progressive.jpg"))]
    assert len(chosen) >= 30
    for case in chosen:
        (folder / case.name).write_bytes(case.data)
    proc = _cli("apply", str(folder), "--op", "eye_resize=30", "-o", str(tmp_path / "out"),
                timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith(("error: ", "note: ")) for line in lines), lines
    written, failed = map(int, re.search(r"(\d+) written, (\d+) failed", proc.stdout).groups())
    assert failed == sum(line.startswith("error: ") for line in lines)
    assert written + failed == len(chosen)


def test_png_whose_image_data_pillow_would_decode_wrongly_is_refused(tmp_path):
    """Pillow stops inflating once it has every row and never checks IDAT's CRC: bytes
    changed in the image data can decode into wrong pixels without an error."""
    buffer = io.BytesIO()
    original = data.astronaut()[:128, :128]
    Image.fromarray(original).save(buffer, "PNG")
    blob = buffer.getvalue()
    start = blob.index(b"IDAT") + 4
    for seed in range(400):
        rng = np.random.default_rng(seed)
        mutated = bytearray(blob)
        # zeros over a run of the compressed data, as a damaged disk block leaves
        at, run = int(rng.integers(start, len(blob) - 300)), int(rng.integers(16, 200))
        mutated[at:at + run] = bytes(run)
        try:
            with Image.open(io.BytesIO(bytes(mutated))) as image:
                pixels = np.asarray(image.convert("RGB"))
        except Exception:  # noqa: BLE001 - refused by Pillow: not the case wanted
            continue
        if not np.array_equal(pixels, original):
            break
    else:
        raise AssertionError("no such mutant found")
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(mutated))
    with pytest.raises(InputError, match=r"truncated or corrupt \(a PNG image data checksum"):
        mio.read_image(path)


def test_pillows_log_records_do_not_reach_stderr(tmp_path):
    """Pillow logs some refusals at ERROR ("More samples per pixel than can be decoded"),
    which Python's last-resort handler would print beside the tool's own line."""
    import struct

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()[:64, :64]).save(buffer, "TIFF")
    tiff = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for k in range(struct.unpack_from("<H", tiff, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", tiff, entry)[0] == 277:  # SamplesPerPixel
            struct.pack_into("<HIH", tiff, entry + 2, 3, 1, 2048)
    path = tmp_path / "samples.tif"
    path.write_bytes(bytes(tiff))
    proc = _cli("apply", str(path), "--op", "eye_resize=30", "-o", f"{tmp_path / 'out'}/")
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error:")


def test_progressive_jpeg_cut_at_a_scan_boundary_is_refused(tmp_path):
    """Valid syntax, no libjpeg warning, a blurred picture: its scans stop early."""
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90, progressive=True)
    blob = buffer.getvalue()
    scans = [m.start() for m in re.finditer(rb"\xff\xda", blob)]
    assert len(scans) > 3
    path = tmp_path / "whole.jpg"
    path.write_bytes(blob)
    assert mio.read_image(path).width == 512
    for cut in scans[1:]:
        path.write_bytes(blob[:cut] + b"\xff\xd9")
        with pytest.raises(InputError, match="progressive JPEG scans stop"):
            mio.read_image(path)
