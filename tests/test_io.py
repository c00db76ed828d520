"""Tests for mirrorppr_cli.io: reading, metadata, conversions and atomic writing.

All fixtures are generated in tmp_path from skimage's astronaut or synthetic
arrays.  Where possible the expected values come from an independent decoder
or encoder (Pillow, OpenCV, a hand-written PNG) rather than from io itself.
"""

from __future__ import annotations

import errno
import os
import struct
import warnings
import zlib
from importlib.util import find_spec
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import ImageCms, ImageOps, JpegImagePlugin
from skimage import data as skdata

from mirrorppr_cli import io as mio
from mirrorppr_cli.errors import InputError, OutputError, UsageError
from mirrorppr_cli.io import (
    DEFAULT_MAX_PIXELS,
    Picture,
    exif_orientation,
    exif_with_orientation_reset,
    image_from_array,
    read_image,
    with_pixels,
    write_image,
)
from mirrorppr_cli.io import read as io_read
from mirrorppr_cli.io import write as io_write

CMYK_ICC = b"synthetic-cmyk-profile-" * 20  # io never parses profiles, only carries them


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    """An 80x60 (H x W) non-square, non-symmetric RGB uint8 crop of the astronaut."""
    return np.ascontiguousarray(skdata.astronaut()[40:200:2, 150:270:2])


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    """A real sRGB ICC profile built by LittleCMS (offline)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_exif(orientation: int | None, make: str = "TestCam") -> bytes:
    """EXIF bytes (with the Exif prefix) holding Make and, optionally, Orientation."""
    exif = PIL.Image.Exif()
    exif[271] = make
    if orientation is not None:
        exif[274] = orientation
    return exif.tobytes()


def stored_for(visual: np.ndarray, orientation: int) -> np.ndarray:
    """The array a camera stores so that ``orientation`` displays ``visual`` (EXIF spec)."""
    inverse = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, 1),  # displayed rotated 90 cw -> stored 90 ccw
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, -1),
    }
    return np.ascontiguousarray(inverse[orientation](visual))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png16(pixels: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """Hand-built 16-bit PNG (independent of io): C=1 grey, 2 LA, 3 RGB, 4 RGBA."""
    h, w, c = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    if icc:
        chunks.append(png_chunk(b"iCCP", b"prof\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    chunks += [png_chunk(b"IDAT", zlib.compress(raw)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def png_ihdr(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from PNG bytes."""
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, ctype


def cv2_read_rgb16(path: Path) -> np.ndarray:
    """Independent 16-bit decoder: OpenCV, BGR(A) -> RGB(A)."""
    raw = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    return raw[..., [2, 1, 0]] if raw.shape[2] == 3 else raw[..., [2, 1, 0, 3]]


def leftovers(folder: Path) -> list[str]:
    """Names of temporary files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# --------------------------------------------------------------------------- #
# orientation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_png_all_values(tmp_path: Path, astro: np.ndarray, orientation: int) -> None:
    stored = stored_for(astro, orientation)
    path = tmp_path / f"o{orientation}.png"
    PIL.Image.fromarray(stored).save(path, exif=make_exif(orientation))

    img = read_image(path)

    assert img.pixels.shape == astro.shape
    np.testing.assert_array_equal(img.pixels, astro)
    assert img.pixels.flags.c_contiguous
    assert exif_orientation(img.exif) == 1
    # second oracle: Pillow's own transpose agrees with our spec table
    with PIL.Image.open(path) as pil:
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(pil)), astro)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_jpeg_all_values(tmp_path: Path, orientation: int) -> None:
    # 8x8 flat blocks keep JPEG error tiny, so a wrong transform is obvious
    rng = np.random.default_rng(orientation)
    blocks = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    visual = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
    path = tmp_path / f"o{orientation}.jpg"
    PIL.Image.fromarray(stored_for(visual, orientation)).save(
        path, quality=100, subsampling=0, exif=make_exif(orientation)
    )

    img = read_image(path)

    assert img.pixels.shape == visual.shape
    assert np.abs(img.pixels.astype(int) - visual).mean() < 2
    assert exif_orientation(img.exif) == 1
    exif = PIL.Image.Exif()
    exif.load(img.exif)
    assert exif[274] == 1 and exif[271] == "TestCam"


@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
def test_orientation_16bit_png(tmp_path: Path, orientation: int) -> None:
    rng = np.random.default_rng(0)
    visual = rng.integers(0, 65536, (7, 11, 3), dtype=np.uint16)
    path = tmp_path / "o16.png"
    path.write_bytes(make_png16(stored_for(visual, orientation), exif=make_exif(orientation)))

    img = read_image(path)

    assert img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, visual)
    assert exif_orientation(img.exif) == 1


@pytest.mark.parametrize("orientation", [2, 6, 8])
def test_orientation_tiff(tmp_path: Path, astro: np.ndarray, orientation: int) -> None:
    path = tmp_path / "o.tif"
    exif = PIL.Image.Exif()
    exif[274] = orientation
    PIL.Image.fromarray(stored_for(astro, orientation)).save(
        path, exif=exif, compression="tiff_lzw"
    )

    img = read_image(path)

    np.testing.assert_array_equal(img.pixels, astro)  # applied exactly once


def test_orientation_16bit_tiff(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(1)
    visual = rng.integers(0, 65536, (5, 9, 3), dtype=np.uint16)
    path = tmp_path / "o16.tif"
    tifffile.imwrite(
        path, stored_for(visual, 6), photometric="rgb", extratags=[(274, "H", 1, 6, True)]
    )

    img = read_image(path)

    assert img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, visual)


def test_exif_orientation_patch_keeps_other_bytes() -> None:
    for order, magic in (("<", b"II*\x00"), (">", b"MM\x00*")):
        ifd = struct.pack(order + "H", 2)
        ifd += struct.pack(order + "HHI", 0x010F, 2, 4) + b"Cam\x00"
        ifd += struct.pack(order + "HHIHH", 0x0112, 3, 1, 6, 0)
        tiff = magic + struct.pack(order + "I", 8) + ifd + b"\x00\x00\x00\x00"
        exif = b"Exif\x00\x00" + tiff

        assert exif_orientation(exif) == 6
        patched = exif_with_orientation_reset(exif)
        assert patched is not None and exif_orientation(patched) == 1
        changed = [i for i, (a, b) in enumerate(zip(exif, patched, strict=True)) if a != b]
        assert len(changed) == 1  # only the low byte of the value moved 6 -> 1
    assert exif_orientation(b"Exif\x00\x00garbage") == 1
    assert exif_with_orientation_reset(b"Exif\x00\x00garbage") == b"Exif\x00\x00garbage"
    assert exif_orientation(None) == 1


# --------------------------------------------------------------------------- #
# modes and bit depths
# --------------------------------------------------------------------------- #


def test_rgba_alpha_bit_exact_through_read_write(tmp_path: Path, astro: np.ndarray) -> None:
    alpha = np.tile(np.arange(astro.shape[1], dtype=np.uint8) * 4, (astro.shape[0], 1))
    alpha[0, 0], alpha[-1, -1] = 0, 255
    rgba = np.dstack([astro, alpha])
    src = tmp_path / "a.png"
    PIL.Image.fromarray(rgba).save(src)

    img = read_image(src)
    out = write_image(img, tmp_path / "b.png")

    assert img.mode == "RGBA" and img.pixels.shape[2] == 4
    with PIL.Image.open(out) as back:
        assert back.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(back), rgba)


def test_grey_l_round_trip(tmp_path: Path, astro: np.ndarray) -> None:
    grey = astro[..., 1].copy()
    src = tmp_path / "g.png"
    PIL.Image.fromarray(grey).save(src)

    img = read_image(src)
    back = read_image(write_image(img, tmp_path / "g2.png"))

    assert img.mode == "L" and img.pixels.shape == (*grey.shape, 1)
    np.testing.assert_array_equal(back.pixels[..., 0], grey)
    np.testing.assert_array_equal(img.rgb8(), np.dstack([grey] * 3))


def test_grey16_png_round_trip_with_icc(tmp_path: Path, srgb_icc: bytes) -> None:
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 65536, (9, 13), dtype=np.uint16)
    grey[0, 0], grey[0, 1] = 0, 65535
    src = tmp_path / "g16.png"
    src.write_bytes(make_png16(grey[..., None], icc=srgb_icc))

    img = read_image(src)
    out = write_image(img, tmp_path / "g16b.png")

    assert img.mode == "L" and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels[..., 0], grey)
    assert img.icc_profile == srgb_icc
    assert png_ihdr(out.read_bytes())[2:] == (16, 0)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), grey)
    assert read_image(out).icc_profile == srgb_icc


@pytest.mark.parametrize("channels", [3, 4])
def test_colour16_png_round_trip_with_icc_and_exif(
    tmp_path: Path, srgb_icc: bytes, channels: int
) -> None:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (10, 14, channels), dtype=np.uint16)
    src = tmp_path / "c16.png"
    src.write_bytes(make_png16(pixels, icc=srgb_icc, exif=make_exif(1)))

    img = read_image(src)
    out = write_image(img, tmp_path / "c16b.png")

    assert img.pixels.dtype == np.uint16 and img.mode == ("RGB", "RGBA")[channels - 3]
    np.testing.assert_array_equal(img.pixels, pixels)
    assert img.icc_profile == srgb_icc
    data = out.read_bytes()
    assert png_ihdr(data)[2] == 16
    np.testing.assert_array_equal(cv2_read_rgb16(out), pixels)  # independent decoder
    with PIL.Image.open(out) as pil:  # independent metadata parser
        assert pil.info["icc_profile"] == srgb_icc
        assert pil.getexif()[271] == "TestCam"
    again = read_image(out)
    np.testing.assert_array_equal(again.pixels, pixels)
    assert again.icc_profile == srgb_icc
    expected8 = ((pixels[..., :3].astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(img.rgb8(), expected8)


def test_grey_alpha16_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 65536, (6, 8, 2), dtype=np.uint16)
    src = tmp_path / "la16.png"
    src.write_bytes(make_png16(pixels))

    img = read_image(src)
    back = read_image(write_image(img, tmp_path / "la16b.png"))

    assert img.mode == "LA" and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, pixels)
    np.testing.assert_array_equal(back.pixels, pixels)
    assert back.mode == "LA"


def test_palette_png(tmp_path: Path, astro: np.ndarray) -> None:
    pal = PIL.Image.fromarray(astro).quantize(colors=16)
    plain, transparent = tmp_path / "p.png", tmp_path / "pt.png"
    pal.save(plain)
    pal.save(transparent, transparency=3)

    img = read_image(plain)
    timg = read_image(transparent)

    assert img.mode == "RGB"
    np.testing.assert_array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    assert timg.mode == "RGBA"
    index = np.asarray(pal)
    np.testing.assert_array_equal(timg.pixels[..., 3] == 0, index == 3)
    np.testing.assert_array_equal(timg.pixels[..., :3], np.asarray(pal.convert("RGB")))


def test_one_bit_and_grey_transparency(tmp_path: Path) -> None:
    bits = (np.indices((6, 9)).sum(axis=0) % 2).astype(bool)
    PIL.Image.fromarray(bits).save(tmp_path / "b.png")
    grey = np.arange(54, dtype=np.uint8).reshape(6, 9)
    PIL.Image.fromarray(grey).save(tmp_path / "t.png", transparency=7)

    one = read_image(tmp_path / "b.png")
    keyed = read_image(tmp_path / "t.png")

    assert one.mode == "L"
    np.testing.assert_array_equal(one.pixels[..., 0], bits.astype(np.uint8) * 255)
    assert keyed.mode == "LA"
    np.testing.assert_array_equal(keyed.pixels[..., 1] == 0, grey == 7)


def test_int_and_float_modes(tmp_path: Path) -> None:
    ints = np.arange(60, dtype=np.int32).reshape(6, 10) * 1000
    floats = np.linspace(0, 1, 60, dtype=np.float32).reshape(6, 10)
    PIL.Image.fromarray(ints).save(tmp_path / "i.tif")
    PIL.Image.fromarray(floats).save(tmp_path / "f.tif")

    i_img = read_image(tmp_path / "i.tif")
    f_img = read_image(tmp_path / "f.tif")

    assert i_img.mode == "L" and i_img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(i_img.pixels[..., 0], ints)
    np.testing.assert_array_equal(f_img.pixels[..., 0], np.round(floats * 65535).astype(np.uint16))


def test_tiff_round_trip_with_icc(tmp_path: Path, astro: np.ndarray, srgb_icc: bytes) -> None:
    src = tmp_path / "a.tif"
    PIL.Image.fromarray(astro).save(src, icc_profile=srgb_icc)

    img = read_image(src)
    back = read_image(write_image(img, tmp_path / "b.tiff"))

    assert img.format == "TIFF" and img.icc_profile == srgb_icc
    np.testing.assert_array_equal(back.pixels, astro)
    assert back.icc_profile == srgb_icc


def test_tiff16_rgb_round_trip(tmp_path: Path, srgb_icc: bytes) -> None:
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 65536, (7, 12, 3), dtype=np.uint16)
    src = tmp_path / "c16.tif"
    tifffile.imwrite(src, pixels, photometric="rgb", iccprofile=srgb_icc)

    img = read_image(src)
    out = write_image(img, tmp_path / "c16b.tif")

    assert img.pixels.dtype == np.uint16 and img.mode == "RGB"
    np.testing.assert_array_equal(img.pixels, pixels)
    np.testing.assert_array_equal(tifffile.imread(out), pixels)
    assert read_image(out).icc_profile == srgb_icc


# --------------------------------------------------------------------------- #
# CMYK
# --------------------------------------------------------------------------- #


@pytest.fixture
def cmyk_jpeg(tmp_path: Path, astro: np.ndarray) -> tuple[Path, np.ndarray]:
    cmyk = PIL.Image.fromarray(astro).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95, subsampling=0, icc_profile=CMYK_ICC)
    return path, np.asarray(cmyk)


def test_cmyk_jpeg_reads_as_cmyk(cmyk_jpeg: tuple[Path, np.ndarray], astro: np.ndarray) -> None:
    path, cmyk = cmyk_jpeg

    img = read_image(path)

    assert img.mode == "CMYK" and img.pixels.shape == (*astro.shape[:2], 4)
    assert img.pixels.dtype == np.uint8
    assert img.icc_profile == CMYK_ICC
    assert np.abs(img.pixels.astype(int) - cmyk).mean() < 3  # not inverted
    assert np.abs(img.rgb8().astype(int) - astro).mean() < 3


def test_cmyk_jpeg_write_read_keeps_cmyk_and_icc(
    tmp_path: Path, cmyk_jpeg: tuple[Path, np.ndarray]
) -> None:
    img = read_image(cmyk_jpeg[0])

    back = read_image(write_image(img, tmp_path / "again.jpg"))

    assert back.mode == "CMYK"
    assert back.icc_profile == CMYK_ICC
    assert np.abs(back.pixels.astype(int) - img.pixels).mean() < 2


def test_cmyk_to_png_becomes_rgb_without_cmyk_profile(
    tmp_path: Path, cmyk_jpeg: tuple[Path, np.ndarray]
) -> None:
    img = read_image(cmyk_jpeg[0])

    back = read_image(write_image(img, tmp_path / "rgb.png"))

    assert back.mode == "RGB"
    assert back.icc_profile is None
    np.testing.assert_array_equal(back.pixels, img.rgb8())


def test_cmyk_jpeg_without_adobe_marker_is_not_inverted(
    tmp_path: Path, cmyk_jpeg: tuple[Path, np.ndarray]
) -> None:
    data = cmyk_jpeg[0].read_bytes()
    start = data.index(b"Adobe") - 4
    length = struct.unpack(">H", data[start + 2 : start + 4])[0]
    stripped = tmp_path / "noadobe.jpg"
    stripped.write_bytes(data[:start] + data[start + 2 + length :])
    with PIL.Image.open(stripped) as pil:
        assert "adobe" not in pil.info
        pillow_view = np.asarray(pil.convert("CMYK"))

    img = read_image(stripped)

    # Pillow always assumes Adobe-inverted data; without the marker the
    # samples are straight, so io must undo Pillow's inversion.
    np.testing.assert_array_equal(img.pixels, 255 - pillow_view)


# --------------------------------------------------------------------------- #
# metadata on JPEG -> JPEG, and encoder settings
# --------------------------------------------------------------------------- #


def test_jpeg_icc_and_exif_kept(tmp_path: Path, astro: np.ndarray, srgb_icc: bytes) -> None:
    src = tmp_path / "in.jpg"
    PIL.Image.fromarray(stored_for(astro, 6)).save(
        src, quality=95, icc_profile=srgb_icc, exif=make_exif(6, "Hasselblad")
    )

    img = read_image(src)
    out = write_image(img, tmp_path / "out.jpg")

    assert img.icc_profile == srgb_icc
    assert img.pixels.shape == astro.shape
    with PIL.Image.open(out) as pil:
        assert pil.info["icc_profile"] == srgb_icc
        assert pil.info["exif"] == img.exif  # byte-for-byte
        assert pil.getexif()[274] == 1
        assert pil.getexif()[271] == "Hasselblad"
        with PIL.Image.open(src) as source_pil:  # the source's own chroma subsampling is kept
            assert JpegImagePlugin.get_sampling(pil) == JpegImagePlugin.get_sampling(source_pil)
        reference = BytesIO()
        PIL.Image.fromarray(astro).save(reference, "JPEG", quality=95)
        assert pil.quantization == PIL.Image.open(reference).quantization
    with PIL.Image.open(src) as source:
        original = source.info["exif"]
    diff = [i for i, (a, b) in enumerate(zip(original, img.exif, strict=True)) if a != b]
    assert len(diff) == 1  # only the orientation value changed


def test_jpeg_quality_parameter(tmp_path: Path, astro: np.ndarray) -> None:
    img = image_from_array(astro)
    low = write_image(img, tmp_path / "low.jpg", jpeg_quality=40)
    high = write_image(img, tmp_path / "high.jpg")
    assert low.stat().st_size < high.stat().st_size
    with pytest.raises(UsageError):
        write_image(img, tmp_path / "bad.jpg", jpeg_quality=0)


# --------------------------------------------------------------------------- #
# format choice and conversions on write
# --------------------------------------------------------------------------- #


def test_format_from_suffix_argument_and_source(tmp_path: Path, astro: np.ndarray) -> None:
    img = image_from_array(astro)
    jpeg_source = Picture(img.pixels, "RGB", format="JPEG")

    by_suffix = write_image(img, tmp_path / "x.JPEG")
    by_argument = write_image(img, tmp_path / "y.png", format="webp")
    by_source = write_image(jpeg_source, tmp_path / "z.out")

    for path, expected in ((by_suffix, "JPEG"), (by_argument, "WEBP"), (by_source, "JPEG")):
        with PIL.Image.open(path) as pil:
            assert pil.format == expected
    with pytest.raises(OutputError, match="GIF"):
        write_image(Picture(img.pixels, "RGB", format="GIF"), tmp_path / "z.gif")
    with pytest.raises(UsageError):
        write_image(img, tmp_path / "w.png", format="heic")


def test_too_large_for_format(tmp_path: Path) -> None:
    wide = image_from_array(np.zeros((1, 16_384, 3), np.uint8))

    with pytest.raises(OutputError, match="too large for WEBP"):
        write_image(wide, tmp_path / "wide.webp")
    assert list(tmp_path.iterdir()) == []
    assert read_image(write_image(wide, tmp_path / "wide.png")).width == 16_384


def test_rgba_to_jpeg_composites_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 8:, 3] = 255  # right half opaque red-ish, left half fully transparent

    back = read_image(write_image(image_from_array(rgba), tmp_path / "flat.jpg"))

    assert back.mode == "RGB"
    assert np.abs(back.pixels[:, :4].astype(int) - 255).max() <= 3
    assert np.abs(back.pixels[:, 12:].astype(int) - [200, 0, 0]).max() <= 3


def test_16bit_to_jpeg_and_grey_to_webp(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb16 = rng.integers(0, 65536, (8, 8, 3), dtype=np.uint16)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)

    jpeg = read_image(write_image(image_from_array(rgb16), tmp_path / "a.jpg", jpeg_quality=100))
    webp = read_image(write_image(image_from_array(grey), tmp_path / "g.webp"))

    assert jpeg.pixels.dtype == np.uint8 and jpeg.mode == "RGB"
    assert np.abs(jpeg.pixels.astype(int) - image_from_array(rgb16).rgb8()).mean() < 8
    assert webp.mode == "RGB"


def test_webp_keeps_alpha_and_exif(tmp_path: Path, astro: np.ndarray) -> None:
    rgba = np.dstack([astro, np.full(astro.shape[:2], 128, np.uint8)])
    img = Picture(rgba, "RGBA", exif=make_exif(1, "WebCam"))

    out = write_image(img, tmp_path / "a.webp")

    back = read_image(out)
    assert back.mode == "RGBA"
    assert np.abs(back.pixels[..., 3].astype(int) - 128).max() <= 2
    with PIL.Image.open(out) as pil:
        assert pil.getexif()[271] == "WebCam"


_OUT_MODE = {  # source mode -> mode read back, per output format
    "JPEG": {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"},
    "PNG": {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"},
    "TIFF": {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK"},
    "WEBP": {"L": "RGB", "LA": "RGBA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"},
    "BMP": {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "CMYK": "RGB"},
}
_FAMILY = {"L": "grey", "LA": "grey", "RGB": "rgb", "RGBA": "rgb", "CMYK": "cmyk"}


@pytest.mark.parametrize("fmt", list(_OUT_MODE))
@pytest.mark.parametrize(
    ("mode", "dtype"),
    [("L", np.uint8), ("L", np.uint16), ("LA", np.uint8), ("LA", np.uint16),
     ("RGB", np.uint8), ("RGB", np.uint16), ("RGBA", np.uint8), ("RGBA", np.uint16),
     ("CMYK", np.uint8)],
)  # fmt: skip
def test_every_mode_can_be_written_to_every_format(
    tmp_path: Path, fmt: str, mode: str, dtype: type, srgb_icc: bytes
) -> None:
    rng = np.random.default_rng(0)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, (6, 7, channels), dtype=dtype)
    img = Picture(pixels, mode, icc_profile=srgb_icc, exif=make_exif(1))

    back = read_image(write_image(img, tmp_path / "out", format=fmt))

    expected_mode = _OUT_MODE[fmt][mode]
    assert back.mode == expected_mode
    lossless = fmt in ("PNG", "TIFF") and expected_mode == mode
    tiff16 = ("L", "RGB", "RGBA") if find_spec("tifffile") else ("L",)
    keeps_16 = fmt == "PNG" or (fmt == "TIFF" and mode in tiff16)
    if lossless and (dtype == np.uint8 or keeps_16):
        assert back.pixels.dtype == dtype
        np.testing.assert_array_equal(back.pixels, pixels)
    else:
        assert back.pixels.dtype == np.uint8 or keeps_16
    same_family = _FAMILY[expected_mode] == _FAMILY[mode]
    assert (back.icc_profile == srgb_icc) == (same_family and fmt != "BMP")
    assert (back.exif is not None) == (fmt in ("JPEG", "PNG", "WEBP"))


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16]),
        shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 3, 4])),
    )
)
def test_png_round_trip_property(pixels: np.ndarray) -> None:
    img = image_from_array(pixels)

    data = mio.encode_image(img, "png")

    with PIL.Image.open(BytesIO(data)) as pil:
        assert pil.format == "PNG"
    decoded = io_read._decode(Path("mem.png"), data, DEFAULT_MAX_PIXELS)
    assert decoded.mode == img.mode
    np.testing.assert_array_equal(decoded.pixels, pixels)


# --------------------------------------------------------------------------- #
# picture helpers
# --------------------------------------------------------------------------- #


def test_rgb8_conversions_and_read_only(astro: np.ndarray) -> None:
    grey16 = np.array([[0, 128, 129, 65535]], np.uint16)
    img = image_from_array(grey16)
    rgb = img.rgb8()
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0, 1, 255])
    assert not rgb.flags.writeable
    rgba = image_from_array(np.dstack([astro, np.zeros(astro.shape[:2], np.uint8)]))
    np.testing.assert_array_equal(rgba.rgb8(), astro)


def test_image_from_array_and_with_pixels(astro: np.ndarray, srgb_icc: bytes) -> None:
    img = Picture(astro.copy(), "RGB", "JPEG", srgb_icc, make_exif(1), Path("x.jpg"))

    changed = with_pixels(img, 255 - astro)

    assert (changed.format, changed.icc_profile, changed.exif, changed.source) == (
        img.format, img.icc_profile, img.exif, img.source,
    )  # fmt: skip
    np.testing.assert_array_equal(changed.pixels, 255 - astro)
    assert (changed.height, changed.width) == astro.shape[:2]
    with pytest.raises(ValueError, match="new pixels must be"):
        with_pixels(img, astro[:10])
    with pytest.raises(ValueError, match="new pixels must be"):
        with_pixels(img, astro.astype(np.uint16))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        image_from_array(astro.astype(np.float32))
    with pytest.raises(ValueError, match="needs 4 channels"):
        Picture(astro, "CMYK")
    assert image_from_array(astro[..., 0]).mode == "L"


# --------------------------------------------------------------------------- #
# pixel limit
# --------------------------------------------------------------------------- #


def test_pixel_limit_rejects_before_decoding(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    PIL.Image.fromarray(astro).save(path)
    decoded: list[str] = []
    real_load = PIL.ImageFile.ImageFile.load

    def spy_load(self: PIL.ImageFile.ImageFile) -> object:
        decoded.append("pillow")
        return real_load(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", spy_load)
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: decoded.append("cv2"))

    with pytest.raises(InputError) as info:
        read_image(path, max_pixels=100)

    message = str(info.value)
    assert "60x80" in message and "--max-pixels" in message and "MIRRORPPR_MAX_PIXELS" in message
    assert str(path) in message
    assert decoded == []


def test_pixel_limit_huge_header_only_png(tmp_path: Path) -> None:
    # Header claims 100000 x 100000 but carries almost no data: decoding would
    # fail as "truncated", so the size message proves we stopped at the header.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    data += png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)

    with pytest.raises(InputError, match=r"100000x100000.*--max-pixels"):
        read_image(path)


def test_pixel_limit_env_and_argument(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    PIL.Image.fromarray(astro).save(path)

    monkeypatch.setenv("MIRRORPPR_MAX_PIXELS", "4000")
    with pytest.raises(InputError, match="limit 4,000"):
        read_image(path)
    assert read_image(path, max_pixels=4800).pixels.shape == astro.shape  # argument wins

    monkeypatch.setenv("MIRRORPPR_MAX_PIXELS", "lots")
    with pytest.raises(UsageError, match="MIRRORPPR_MAX_PIXELS"):
        read_image(path)
    with pytest.raises(UsageError):
        read_image(path, max_pixels=0)


def test_limit_above_pillow_default_is_honoured(tmp_path: Path) -> None:
    # 9500 x 9500 = 90.25 M pixels: over Pillow's own ~89.5 M warning level,
    # under our default limit, so it must load (the warning is not raised).
    width = height = 9500
    assert width * height > PIL.Image.MAX_IMAGE_PIXELS
    raw = bytes((width + 1) * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    data += png_chunk(b"IDAT", zlib.compress(raw, 1)) + png_chunk(b"IEND", b"")
    path = tmp_path / "big.png"
    path.write_bytes(data)

    img = read_image(path)

    assert img.pixels.shape == (height, width, 1)
    with pytest.raises(InputError, match="limit"):
        read_image(path, max_pixels=90_000_000)


def test_pillow_globals_restored(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    PIL.Image.fromarray(astro).save(path)
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:-200])
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 12_345_678)
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    filters = list(warnings.filters)

    read_image(path)
    for bad, limit in ((path, 10), (cut, None)):
        with pytest.raises(InputError):  # truncated still rejected despite the global
            read_image(bad, max_pixels=limit)

    assert PIL.Image.MAX_IMAGE_PIXELS == 12_345_678
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True
    assert warnings.filters == filters


def test_pillow_bomb_guard_is_active_while_decoding(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Second line of defence: with our header check disabled, Pillow's own
    # check (set to our limit, warning turned into an error) must still stop it.
    path = tmp_path / "a.tif"
    PIL.Image.fromarray(astro).save(path)
    monkeypatch.setattr(io_read, "_check_pixel_limit", lambda *args: None)

    with pytest.raises(InputError, match="too large"):
        read_image(path, max_pixels=3000)


# --------------------------------------------------------------------------- #
# unusable inputs
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path: Path, astro: np.ndarray, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    PIL.Image.fromarray(astro).save(full)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(InputError, match="truncated or corrupt") as info:
        read_image(cut)

    assert str(cut) in str(info.value)


def test_truncated_and_corrupt_16bit_png(tmp_path: Path) -> None:
    pixels = np.random.default_rng(4).integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    data = make_png16(pixels)
    cut, flipped = tmp_path / "cut16.png", tmp_path / "bad16.png"
    cut.write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    flipped.write_bytes(bytes(corrupt))

    for path in (cut, flipped):
        with pytest.raises(InputError, match="truncated or corrupt"):
            read_image(path)


def test_corrupt_png_crc(tmp_path: Path, astro: np.ndarray) -> None:
    path = tmp_path / "crc.png"
    PIL.Image.fromarray(astro).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(InputError, match=r"crc\.png: image is truncated or corrupt"):
        read_image(path)


def test_empty_text_missing_and_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()

    cases = {
        empty: "empty",
        text: "not a readable image",
        tmp_path / "missing.jpg": "no such file",
        folder: "is a folder",
    }
    for path, words in cases.items():
        with pytest.raises(InputError) as info:
            read_image(path)
        message = str(info.value)
        assert words in message and str(path) in message and "\n" not in message
        assert info.value.exit_code == 3


def test_other_formats_are_refused(tmp_path: Path, astro: np.ndarray) -> None:
    gif = tmp_path / "anim.gif"
    PIL.Image.fromarray(astro).save(gif)
    eps = tmp_path / "vector.jpg"  # would make Pillow run Ghostscript if tried
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")

    for path in (gif, eps):
        with pytest.raises(InputError, match="not a readable image"):
            read_image(path)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    PIL.Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)

    real_open = os.open

    def denied(file: object, flags: int, *args: object, **kwargs: object) -> int:
        if os.fspath(file) == str(path):  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)

    with pytest.raises(InputError, match="permission denied"):
        read_image(path)


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root ignores file modes")
def test_permission_denied_real(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    PIL.Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            read_image(path)
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------- #
# writing: no-clobber, force, atomicity
# --------------------------------------------------------------------------- #


def test_no_clobber_leaves_existing_file(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"precious")

    def not_called(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("encoded although the destination exists")

    monkeypatch.setattr(io_write, "encode_image", not_called)
    with pytest.raises(OutputError, match="exists; pass --force to overwrite") as info:
        write_image(image_from_array(astro), dest)

    assert dest.read_bytes() == b"precious"
    assert info.value.exit_code == 4
    assert leftovers(tmp_path) == []


def test_force_overwrites(tmp_path: Path, astro: np.ndarray) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"old")

    result = write_image(image_from_array(astro), dest, force=True)

    assert result == dest
    np.testing.assert_array_equal(read_image(dest).pixels, astro)
    assert leftovers(tmp_path) == []


def test_creates_parent_folders_and_rejects_folder_destination(
    tmp_path: Path, astro: np.ndarray
) -> None:
    dest = tmp_path / "a" / "b" / "out.jpg"

    assert write_image(image_from_array(astro), dest) == dest
    assert dest.is_file()
    with pytest.raises(OutputError, match="is a folder"):
        write_image(image_from_array(astro), tmp_path / "a", force=True, format="png")


def test_temp_file_is_hidden_part_in_destination_folder(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_image(image_from_array(astro), tmp_path / "out.png")

    names = seen[0]
    assert len(names) == 1 and names[0].startswith(".out.png.") and names[0].endswith(".part")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize(
    ("target", "error"),
    [("fsync", OSError(errno.EIO, "I/O error")), ("link", OSError(errno.EIO, "I/O error")),
     ("fsync", KeyboardInterrupt())],
)  # fmt: skip
def test_failure_mid_write_leaves_nothing(
    tmp_path: Path,
    astro: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    error: BaseException,
) -> None:
    def boom(*args: object) -> None:
        raise error

    dest = tmp_path / "sub" / "out.png"
    monkeypatch.setattr(os, target, boom)

    expected = OutputError if isinstance(error, OSError) else type(error)
    with pytest.raises(expected):
        write_image(image_from_array(astro), dest)

    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_failed_replace_with_force_keeps_old_file(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"old")

    def boom(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match="No space left"):
        write_image(image_from_array(astro), dest, force=True)

    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_encoder_failure_creates_nothing(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(io_write, "encode_image", broken)
    dest = tmp_path / "new" / "out.png"

    with pytest.raises(OutputError, match="could not encode"):
        write_image(image_from_array(astro), dest)

    assert not dest.parent.exists()


def test_race_file_appearing_before_link_is_not_clobbered(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out.png"
    real_link = os.link

    def racing_link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        Path(dst).write_bytes(b"someone else's")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(OutputError, match="exists"):
        write_image(image_from_array(astro), dest)

    assert dest.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == []


def test_fallback_when_hard_links_unsupported(
    tmp_path: Path, astro: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = write_image(image_from_array(astro), tmp_path / "out.png")

    np.testing.assert_array_equal(read_image(dest).pixels, astro)
    assert leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="exists"):
        write_image(image_from_array(astro), dest)


@pytest.mark.parametrize("kind", ["ycbcr", "grey", "progressive", "444", "exif_rotated"])
def test_jpeg_fast_path_matches_pillow(tmp_path: Path, astro: np.ndarray, kind: str) -> None:
    """JPEGs decoded by OpenCV (the fast path) have Pillow's pixels, mode and orientation."""
    image = PIL.Image.fromarray(astro)
    options: dict = {"quality": 90}
    if kind == "grey":
        image = image.convert("L")
    elif kind == "progressive":
        options["progressive"] = True
    elif kind == "444":
        options["subsampling"] = 0
    elif kind == "exif_rotated":
        exif = PIL.Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    path = tmp_path / "a.jpg"
    image.save(path, **options)
    data = path.read_bytes()
    with PIL.Image.open(BytesIO(data)) as opened:
        assert io_read._decode_jpeg_fast(path, opened, data) is not None  # the fast path is taken
        expected = np.asarray(ImageOps.exif_transpose(opened).convert(opened.mode))
    picture = mio.read_image(path)
    assert picture.mode == ("L" if kind == "grey" else "RGB")
    np.testing.assert_array_equal(picture.pixels.reshape(expected.shape), expected)


def test_jpeg_fast_path_never_passes_truncated_files(tmp_path: Path, astro: np.ndarray) -> None:
    """A JPEG cut short is refused by the fast path or left to Pillow, which refuses it."""
    data = BytesIO()
    PIL.Image.fromarray(astro).save(data, "JPEG", quality=90)
    cut = data.getvalue()[: len(data.getvalue()) * 2 // 3]
    with PIL.Image.open(BytesIO(cut)) as opened:
        try:
            fast = io_read._decode_jpeg_fast(tmp_path / "cut.jpg", opened, cut)
        except InputError:
            fast = None
        assert fast is None
    (tmp_path / "cut.jpg").write_bytes(cut)
    with pytest.raises(InputError, match="truncated or corrupt"):
        mio.read_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("quality", [50, 75, 85, 92, 98, 100])
def test_jpeg_quality_and_subsampling_are_read_and_kept(tmp_path, quality):
    """A JPEG re-saved by the tool keeps its own quality and chroma subsampling (so a retouch
    neither bloats nor degrades it); --quality (jpeg_quality) overrides."""
    from mirrorppr_cli.io import jpeg_settings, read_image, with_pixels, write_image

    rgb = np.asarray(skdata.astronaut())[:200, :240]
    source = tmp_path / "in.jpg"
    PIL.Image.fromarray(rgb).save(source, quality=quality, subsampling=2)
    picture = read_image(source)
    assert (picture.jpeg_quality, picture.jpeg_subsampling) == (quality, 2)
    out = write_image(with_pixels(picture, picture.pixels), tmp_path / "out.jpg")
    assert jpeg_settings(out.read_bytes()) == (quality, 2)
    with PIL.Image.open(out) as im:
        assert JpegImagePlugin.get_sampling(im) == 2
    forced = write_image(picture, tmp_path / "forced.jpg", jpeg_quality=60)
    assert jpeg_settings(forced.read_bytes())[0] == 60
    png = tmp_path / "in.png"
    PIL.Image.fromarray(rgb).save(png)
    assert read_image(png).jpeg_quality is None
