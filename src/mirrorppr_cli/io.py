"""Reading and writing images: pixels, colour space and metadata, safely.

Conventions used throughout this module:

* Pixels are ``numpy`` arrays of shape ``(H, W, C)``, C-contiguous, dtype
  ``uint8`` or ``uint16``, in the file's own colour space (see `Picture`).
* EXIF orientation is applied on reading: ``pixels`` are upright and the
  returned EXIF says orientation 1, so writers never rotate anything.
* EXIF bytes are kept in the JPEG APP1 payload form, starting with
  ``b"Exif\\0\\0"`` followed by a TIFF header.
* User-facing failures raise `InputError` (reading) or `OutputError`
  (writing) with a one-line message that names the file and says what to do.
  Programming errors (wrong array shape or dtype) raise ``ValueError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageFile
from PIL import UnidentifiedImageError, features

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from mirrorppr_cli import native_stderr
from mirrorppr_cli.errors import InputError, OutputError, UsageError

DEFAULT_MAX_PIXELS = 150_000_000
MAX_PIXELS_ENV = "MIRRORPPR_MAX_PIXELS"

MODES = ("L", "LA", "RGB", "RGBA", "CMYK")
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}
_FAMILY = {"L": "grey", "LA": "grey", "RGB": "rgb", "RGBA": "rgb", "CMYK": "cmyk"}

# Only these Pillow decoders are tried (camera "MPO" files open through JPEG):
# fewer parsers exposed to untrusted files, and never EPS (Ghostscript).
READABLE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")
WRITABLE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
_FORMAT_ALIASES = {
    "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "tif": "TIFF",
    "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP",
}  # fmt: skip
#: Output file suffixes and the format each names (".jpg" → "JPEG", ...).
SUFFIX_FORMAT = {f".{alias}": fmt for alias, fmt in _FORMAT_ALIASES.items()}
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"BM", "BMP"))
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383}  # libjpeg and libwebp limits
_JPEG_MAX_MARKER = 65_533  # bytes in one JPEG marker segment (EXIF must fit in one)

_EXIF_PREFIX = b"Exif\x00\x00"
#: zlib level of PNG output: 1 encodes a 1 MP portrait ~5× faster than Pillow's default 6
#: for ~10–15 % more bytes; PNG stays lossless either way.
PNG_LEVEL = 1
_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow keeps its decompression-bomb limit and LOAD_TRUNCATED_IMAGES in module
# globals, and the warnings filter list is global too.  read_image changes them
# only while it holds this lock and always restores them.
_PILLOW_LOCK = threading.Lock()


# --------------------------------------------------------------------------- #
# The image value
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Picture:
    """An image in its own colour space, plus the metadata worth keeping.

    ``pixels`` is ``(H, W, C)``, C-contiguous, ``uint8`` or ``uint16``:
    C=1 grey ("L", 8- or 16-bit), C=2 grey+alpha ("LA"), C=3 "RGB",
    C=4 "RGBA" or "CMYK" (CMYK is always ``uint8``, 0 = no ink).
    Alpha is straight (not premultiplied).  ``format`` is the Pillow format
    name of the source ("PNG" for arrays); ``exif`` has orientation 1.
    ``frames``: how many frames or pages the source file holds (animated PNG
    and WebP, multi-page TIFF); only the first is in ``pixels``.
    """

    pixels: np.ndarray
    mode: str
    format: str = "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source: Path | None = None
    frames: int = 1
    #: The source JPEG's quality, estimated from its quantisation table, and its chroma
    #: subsampling (Pillow's 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0); None: not a JPEG.
    jpeg_quality: int | None = None
    jpeg_subsampling: int | None = None

    def __post_init__(self) -> None:
        _check_pixels(self.pixels, self.mode)

    @property
    def height(self) -> int:
        """Number of rows (H)."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Number of columns (W)."""
        return int(self.pixels.shape[1])

    @property
    def has_alpha(self) -> bool:
        """True for "LA" and "RGBA"."""
        return self.mode in ("LA", "RGBA")

    def rgb8(self) -> np.ndarray:
        """Return a read-only ``(H, W, 3)`` ``uint8`` RGB array for detectors.

        Grey is replicated, alpha dropped (not composited), 16-bit values are
        rounded to ``round(v / 257)``, CMYK goes through Pillow's simple
        conversion (no ICC).  May share memory with ``pixels`` when those are
        already RGB ``uint8``; copy it before modifying.
        """
        pixels = to_uint8(self.pixels)
        if self.mode == "CMYK":
            rgb = _cmyk_to_rgb(pixels)
        elif self.mode in ("L", "LA"):
            rgb = np.repeat(pixels[..., :1], 3, axis=2)
        else:
            rgb = pixels[..., :3]
        view = np.ascontiguousarray(rgb).view()
        view.flags.writeable = False
        return view


Image = Picture  # the name used by the module contract; Picture avoids PIL clashes


def _check_pixels(pixels: object, mode: str) -> None:
    """Raise ``ValueError`` unless ``pixels`` is a valid array for ``mode``."""
    if mode not in _CHANNELS:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3:
        raise ValueError("pixels must be a numpy array of shape (H, W, C)")
    if pixels.shape[2] != _CHANNELS[mode]:
        raise ValueError(f"mode {mode} needs {_CHANNELS[mode]} channels, got {pixels.shape[2]}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, not {pixels.dtype}")
    if mode == "CMYK" and pixels.dtype != np.uint8:
        raise ValueError("CMYK pixels must be uint8")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError("pixels must have at least one row and one column")
    if not pixels.flags.c_contiguous:
        raise ValueError("pixels must be C-contiguous (use np.ascontiguousarray)")


def image_from_array(rgb: np.ndarray) -> Picture:
    """Wrap an array as a `Picture` with no metadata and format "PNG".

    Accepts ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 2)`` grey+alpha,
    ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, dtype ``uint8`` or ``uint16``.
    The array is copied only if it is not C-contiguous.
    """
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected (H, W) or (H, W, 1..4) pixels, got shape {array.shape}")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Picture(np.ascontiguousarray(array), mode)


def with_pixels(img: Picture, pixels: np.ndarray) -> Picture:
    """Return a copy of ``img`` (same mode and metadata) holding new ``pixels``.

    ``pixels`` must have exactly the shape and dtype of ``img.pixels``.
    """
    if pixels.shape != img.pixels.shape or pixels.dtype != img.pixels.dtype:
        raise ValueError(
            f"new pixels must be {img.pixels.shape} {img.pixels.dtype}, "
            f"got {pixels.shape} {pixels.dtype}"
        )
    return Picture(
        np.ascontiguousarray(pixels), img.mode, img.format, img.icc_profile, img.exif, img.source,
        img.frames, img.jpeg_quality, img.jpeg_subsampling,
    )


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Return ``uint8`` pixels: unchanged if already 8-bit, else ``round(v / 257)``."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Convert ``(H, W, 4)`` uint8 CMYK to ``(H, W, 3)`` uint8 RGB (Pillow, no ICC)."""
    h, w = cmyk.shape[:2]
    pil = PIL.Image.frombytes("CMYK", (w, h), np.ascontiguousarray(cmyk).tobytes())
    return np.asarray(pil.convert("RGB")).copy()


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """Return the pixel limit: ``max_pixels``, else $MIRRORPPR_MAX_PIXELS, else the default."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            max_pixels = 0
        if max_pixels <= 0:
            raise UsageError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; "
                "fix or unset it"
            )
        return max_pixels
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise UsageError(f"--max-pixels must be a positive whole number, not {max_pixels!r}")
    return max_pixels


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Picture:
    """Read an image file into an upright `Picture` in its own colour space.

    Grey, grey+alpha, RGB, RGBA and CMYK are kept; 1-bit becomes "L"; palette
    images become "RGB" (or "RGBA" when the palette has transparency); 16-bit
    grey, RGB and RGBA PNG/TIFF stay 16-bit; 32-bit int ("I") and float ("F")
    grey become 16-bit "L".  The pixel count is checked against ``max_pixels``
    (see `resolve_max_pixels`) from the header, before anything is decoded.
    Raises `InputError` naming the file for anything that cannot be used.
    """
    file = Path(path)
    limit = resolve_max_pixels(max_pixels)
    data = _read_file_bytes(file, limit)
    decoded = _decode(file, data, limit)
    pixels, exif = decoded.pixels, _normalise_exif(decoded.exif)
    if not decoded.oriented:
        pixels = apply_orientation(pixels, exif_orientation(exif))
    return Picture(
        pixels=np.ascontiguousarray(pixels),
        mode=decoded.mode,
        format=decoded.format,
        icc_profile=decoded.icc_profile or None,
        exif=exif_with_orientation_reset(exif),
        source=file,
        frames=decoded.frames,
        **dict(zip(("jpeg_quality", "jpeg_subsampling"),
                   jpeg_settings(data) if decoded.format == "JPEG" else (None, None),
                   strict=True)),
    )


#: The JPEG standard's example luminance quantisation table (Annex K), which the IJG encoder
#: (libjpeg, Pillow, OpenCV, most cameras' and editors' exports) scales by the quality.
_IJG_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16,
                  24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109,
                  103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120,
                  101, 72, 92, 95, 98, 112, 100, 103, 99)


def jpeg_settings(data: bytes) -> tuple[int | None, int | None]:
    """``(quality, subsampling)`` a JPEG file was saved with: :func:`estimate_jpeg_quality`
    and Pillow's chroma subsampling code (0 4:4:4, 1 4:2:2, 2 4:2:0; None if other)."""
    from PIL import JpegImagePlugin

    try:
        with PIL.Image.open(BytesIO(data), formats=["JPEG"]) as im:
            table = list(im.quantization.get(0, ()))
            sampling = JpegImagePlugin.get_sampling(im)
    except Exception:  # not a JPEG, or a header Pillow cannot parse: no estimate
        return None, None
    return estimate_jpeg_quality(table), (sampling if sampling in (0, 1, 2) else None)


def estimate_jpeg_quality(table: list[int]) -> int | None:
    """The IJG quality (1–100) a JPEG was saved at, from its first quantisation ``table``
    (64 values, any order): the table's sum against the standard table's gives the IJG scale
    factor, which maps back to the quality (exact for IJG encoders: 50, 75, …, 98 read back as
    themselves). None for a table that is not 64 values."""
    if len(table) != 64:
        return None
    if max(table) <= 1:
        return 100
    scale = 100.0 * sum(table) / sum(_IJG_LUMINANCE)
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def frames_note(frames: int, format: str) -> str | None:
    """The line to tell the user when a file of ``format`` holds several ``frames`` or pages
    (only the first is used: `Picture.frames`, `header_info`), else None."""
    if frames <= 1 or format not in _MULTI:
        return None
    kind = "pages" if format == "TIFF" else "frames"
    return f"used the first of {frames} {kind} (the file is {_MULTI[format]})"


_MULTI = {"PNG": "an animated PNG", "WEBP": "an animated WebP", "TIFF": "a multi-page TIFF"}


def header_size(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file as stored, read from its header (nothing decoded).

    EXIF orientation is not applied (a quarter turn swaps the two). The same checks as
    `read_image` that need no decoding: `InputError` for a missing, empty or unreadable file,
    a header that is not an image, no pixels, or more than ``max_pixels``.
    """
    width, height, _, _ = header_info(path, max_pixels=max_pixels)
    return width, height


def header_info(path: str | os.PathLike[str], *, max_pixels: int | None = None
                ) -> tuple[int, int, int, str]:
    """``(width, height, frames, format)`` from an image file's header, with the checks of
    `header_size`; ``frames`` counts the frames or pages (animated PNG and WebP, multi-page
    TIFF; 1 otherwise), see `frames_note`."""
    file = Path(path)
    limit = resolve_max_pixels(max_pixels)
    data = _read_file_bytes(file, limit)
    with _pillow_guarded() as set_pillow_limit:
        set_pillow_limit(None)
        im = _open_header(file, data)
        try:
            _check_pixel_limit(file, im.size, limit)
            fmt = "JPEG" if im.format == "MPO" else str(im.format)
            return int(im.size[0]), int(im.size[1]), _frame_count(im, fmt), fmt
        finally:
            im.close()


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The format an image file's first bytes name ("JPEG", "PNG", "TIFF", "WEBP", "BMP"), or
    None (not a regular file, unreadable, or no known signature). Reads 16 bytes, never
    blocks (a FIFO is not read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 16)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


#: Bytes per pixel of the largest uncompressed layout read (16-bit RGBA): with the pixel
#: limit, it bounds how much of a file is worth reading (see `_read_file_bytes`).
_MAX_BYTES_PER_PIXEL = 8
_MAX_OVERHEAD_BYTES = 64 * 1024 * 1024  # metadata, thumbnails, a second MPO image, ...

_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


def _read_file_bytes(file: Path, limit: int | None = None) -> bytes:
    """Return the whole file, or raise `InputError` saying why it cannot be read.

    Regular files only: a FIFO would block, a device such as ``/dev/zero`` would be read
    without end. The file is opened without blocking and checked on the open descriptor
    (no window between the check and the read). At most ``limit`` pixels' worth of bytes
    (`_MAX_BYTES_PER_PIXEL` each, plus `_MAX_OVERHEAD_BYTES`) are read: a larger file cannot
    be an image within the pixel limit.
    """
    if file.is_dir():
        raise InputError(f"{file}: is a folder, not an image file; pass an image file")
    max_bytes = resolve_max_pixels(limit) * _MAX_BYTES_PER_PIXEL + _MAX_OVERHEAD_BYTES
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(file, flags | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                what = next((f"is {name}, not" for test, name in _NOT_REGULAR
                             if test(info.st_mode)), "is not")
                raise InputError(f"{file}: {what} a regular file; pass an image file")
            if info.st_size > max_bytes:  # refused below, unread
                data = b""
                too_large = True
            else:
                data = handle.read(info.st_size + 1)  # +1: did it grow (or not say its size)?
                if len(data) > info.st_size:
                    data += handle.read(max_bytes + 1 - len(data))
                too_large = len(data) > max_bytes
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no such file; check the path") from exc
    except PermissionError as exc:
        raise InputError(f"{file}: permission denied; check the file's permissions") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{file}: is a folder, not an image file; pass an image file") from exc
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or exc}); check the file") from exc
    except MemoryError as exc:
        raise InputError(f"{file}: not enough memory to read this file") from exc
    if too_large:
        raise InputError(
            f"{file}: file is larger than {max_bytes:,} bytes, more than an image within the "
            f"pixel limit needs; raise the limit with --max-pixels or {MAX_PIXELS_ENV} if you "
            "trust this file"
        )
    if not data:
        raise InputError(f"{file}: file is empty; re-export or re-copy the image")
    return data


@dataclass
class _Decoded:
    """Raw decoder output before orientation: pixels ``(H, W, C)`` as stored."""

    pixels: np.ndarray
    mode: str
    format: str
    icc_profile: bytes | None
    exif: bytes | None
    oriented: bool  # True when the decoder already applied the orientation (TIFF)
    frames: int = 1  # frames or pages in the file (animated PNG/WebP, multi-page TIFF)


@contextlib.contextmanager
def _pillow_guarded() -> Iterator[Callable[[int | None], None]]:
    """Hold the Pillow lock with truncated loading off, bomb warnings as errors and Pillow's
    other warnings silenced.

    Yields a setter for Pillow's ``MAX_IMAGE_PIXELS`` (None while only the
    header is parsed; our limit while decoding).  All globals are restored.
    """
    with _PILLOW_LOCK:
        saved_limit = PIL.Image.MAX_IMAGE_PIXELS
        saved_truncated = PIL.ImageFile.LOAD_TRUNCATED_IMAGES

        def set_limit(limit: int | None) -> None:
            PIL.Image.MAX_IMAGE_PIXELS = limit

        try:
            PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False
            with warnings.catch_warnings():
                warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
                # Pillow's notes on damaged metadata it read around ("Corrupt EXIF data",
                # "Truncated File Read"): the image is used or refused on its own merits.
                warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
                yield set_limit
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = saved_limit
            PIL.ImageFile.LOAD_TRUNCATED_IMAGES = saved_truncated


def _decode(file: Path, data: bytes, limit: int) -> _Decoded:
    """Parse the header, enforce ``limit``, then decode; errors become `InputError`."""
    with _pillow_guarded() as set_pillow_limit:
        set_pillow_limit(None)  # our own check below gives the clearer message
        im = _open_header(file, data)
        try:
            _check_pixel_limit(file, im.size, limit)
            set_pillow_limit(limit)
            return _decode_opened(file, im, data)
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            raise InputError(_too_large_message(file, None, limit)) from exc
        except MemoryError as exc:
            raise InputError(
                f"{file}: not enough memory to decode this image; free memory or shrink the image"
            ) from exc
        except InputError:
            raise
        except Exception as exc:  # any decoder failure on bad data: never leak raw errors
            raise InputError(f"{file}: image is truncated or corrupt; re-export it") from exc
        finally:
            im.close()


def _open_header(file: Path, data: bytes) -> PIL.Image.Image:
    """Open lazily (header only) or raise `InputError` for non-images."""
    try:
        return PIL.Image.open(BytesIO(data), formats=READABLE_FORMATS)
    except UnidentifiedImageError as exc:
        raise InputError(
            f"{file}: not a readable image (unsupported format or damaged); "
            "pass a JPEG, PNG, TIFF, WebP or BMP file"
        ) from exc
    except Exception as exc:  # plugins raise SyntaxError, struct.error, ... on bad headers
        raise InputError(f"{file}: image header is truncated or corrupt; re-export it") from exc


def _too_large_message(file: Path, size: tuple[int, int] | None, limit: int) -> str:
    """One-line message for an image over the pixel limit."""
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (
        f"{file}: image is too large ({what}, limit {limit:,}); "
        f"raise the limit with --max-pixels or {MAX_PIXELS_ENV} if you trust this file"
    )


def _check_pixel_limit(file: Path, size: tuple[int, int], limit: int) -> None:
    """Raise `InputError` when ``width * height`` (from the header) exceeds ``limit``."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{file}: image has no pixels ({width}x{height}); re-export it")
    if width * height > limit:
        raise InputError(_too_large_message(file, size, limit))


def _decode_opened(file: Path, im: PIL.Image.Image, data: bytes) -> _Decoded:
    """Decode an opened image with Pillow, or with OpenCV for 16-bit colour."""
    fmt = "JPEG" if im.format == "MPO" else str(im.format)
    is_tiff = fmt == "TIFF"
    if _needs_opencv(im, data):
        pixels, mode = _decode_opencv(file, data)
        exif = im.info.get("exif") or (_png_exif_chunk(data) if fmt == "PNG" else None)
    elif (fast := _decode_jpeg_fast(file, im, data)) is not None:
        pixels, mode = fast
        exif = im.info.get("exif")
    else:
        if fmt == "JPEG":
            _check_jpeg_intact(file, data)  # Pillow does not tell damaged data (see there)
        elif fmt == "PNG":
            _check_png_intact(file, data)
        im.load()
        pixels, mode = _pillow_to_array(file, im)
        exif = im.info.get("exif")
        if fmt == "JPEG" and mode == "CMYK" and "adobe" not in im.info:
            # Pillow assumes Adobe's inverted CMYK (and writes it, with the
            # Adobe marker, so our own files round-trip).  Without the marker
            # the samples are straight, so undo Pillow's inversion.
            pixels = 255 - pixels
    return _Decoded(
        pixels=pixels,
        mode=mode,
        format=fmt,
        icc_profile=im.info.get("icc_profile"),
        exif=None if is_tiff else exif,
        oriented=is_tiff,  # Pillow and OpenCV both apply the TIFF orientation tag
        frames=_frame_count(im, fmt),
    )


def _frame_count(im: PIL.Image.Image, fmt: str) -> int:
    """Frames (animated PNG and WebP) or pages (TIFF) in an opened file; 1 when it cannot be
    told (a damaged chain of TIFF pages after the first: the first was read)."""
    if fmt not in _MULTI:
        return 1
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - counting is for a note only
        return 1


def _needs_opencv(im: PIL.Image.Image, data: bytes) -> bool:
    """True for 16-bit colour PNG/TIFF, which Pillow would truncate to 8 bits.

    Checked with Pillow 13: 48/64-bit PNGs open as "RGB"/"RGBA" 8-bit, and
    16-bit grey+alpha PNGs as "RGBA" 8-bit.  16-bit grey ("I;16") is exact.
    """
    if im.format == "PNG" and len(data) >= 26 and data[:8] == _PNG_SIGNATURE:
        bit_depth, colour_type = data[24], data[25]
        return bit_depth == 16 and colour_type in (2, 4, 6)
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA"):
        bits = getattr(im, "tag_v2", {}).get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(int(b) > 8 for b in bits)
    return False


#: libjpeg's warnings that mean the pixels are not what the file meant to hold: entropy-coded
#: data damaged, cut short or out of order (libjpeg decodes on and fills the rest with grey
#: or garbage). Pillow and OpenCV both treat them as warnings, so a damaged file decodes
#: "successfully". Not in the list, as they leave the pixels intact: "Unknown Adobe color
#: transform code", "unknown JFIF revision number", "Corrupt JPEG data: bad ICC marker".
_JPEG_DAMAGE = re.compile(
    rb"Corrupt JPEG data(?!: bad ICC marker)[^\n]*|Premature end of JPEG file"
    rb"|Inconsistent progression sequence[^\n]*|Invalid SOS parameters for sequential JPEG"
)


def _refuse_damaged_jpeg(file: Path, messages: bytes) -> None:
    """`InputError` naming libjpeg's first damage warning in ``messages``, if any."""
    found = _JPEG_DAMAGE.search(messages)
    if found is not None:
        what = found.group(0).decode("ascii", "replace").strip()
        raise InputError(f"{file}: image is truncated or corrupt (libjpeg: {what}); "
                         "re-export or re-copy it")


#: A JPEG marker that ends entropy-coded data: 0xFF then anything but a stuffed zero, a
#: restart marker (RST0-7) or a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _check_progressive_complete(file: Path, data: bytes) -> None:
    """`InputError` when a progressive JPEG's scans stop before every coefficient of every
    component was sent at full precision.

    A progressive file cut short at a scan boundary (with an end marker appended, or a
    download that stopped there) is valid JPEG syntax: libjpeg decodes it without a warning,
    into a blurred or blocky picture. The scan headers say what was sent (read here, the
    entropy-coded data is skipped, not decoded).
    """
    pos, end = 2, len(data)
    components: list[int] = []
    final: dict[tuple[int, int], int] = {}  # (component, coefficient) → lowest Al sent
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return  # not where a marker should be: libjpeg judges such a file
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        body = data[pos + 4:pos + 2 + length]
        if marker in _JPEG_SOF and len(body) >= 6:
            components = [body[6 + 3 * k] for k in range(body[5]) if 6 + 3 * k < len(body)]
        pos += 2 + length
        if marker == 0xDA and body:
            count = body[0]
            ids = [body[1 + 2 * k] for k in range(count) if 1 + 2 * k < len(body)]
            if len(body) < 1 + 2 * count + 3:
                return
            ss, se, al = body[1 + 2 * count], body[2 + 2 * count], body[3 + 2 * count] & 0x0F
            for component in ids:
                for k in range(ss, min(se, 63) + 1):
                    final[(component, k)] = min(final.get((component, k), 99), al)
            found = _JPEG_MARKER.search(data, pos)
            pos = found.start() if found else end
    missing = [key for key in ((c, k) for c in components for k in range(64))
               if final.get(key, 99) != 0]
    if components and missing:
        raise InputError(f"{file}: image is truncated or corrupt (its progressive JPEG scans "
                         "stop before the full picture); re-export or re-copy it")


def _decode_jpeg_fast(file: Path, im: PIL.Image.Image, data: bytes
                      ) -> tuple[np.ndarray, str] | None:
    """An 8-bit RGB or grey JPEG decoded by OpenCV, or None (then Pillow decodes it).

    Both use libjpeg-turbo with the same settings (bit-identical pixels on this project's 39
    test JPEGs) but OpenCV is ~3× faster at 1024². libjpeg's warnings are read from file
    descriptor 2 while it decodes (:func:`mirrorppr_cli.native_stderr.captured`): a warning
    that the data is damaged (`_JPEG_DAMAGE`: a file cut short with an end marker appended,
    flipped bytes in the entropy-coded data) refuses the file, `InputError`. A file OpenCV
    cannot decode at all (cut short without an end marker) goes to Pillow, which refuses it.
    CMYK and anything unusual stay with Pillow too.
    """
    if im.format != "JPEG" or im.mode not in ("RGB", "L"):
        return None
    if im.info.get("progressive"):
        _check_progressive_complete(file, data)
    flags = cv2.IMREAD_IGNORE_ORIENTATION | (
        cv2.IMREAD_COLOR if im.mode == "RGB" else cv2.IMREAD_GRAYSCALE)
    with native_stderr.captured() as messages:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    _refuse_damaged_jpeg(file, messages.text)
    if decoded is None or decoded.dtype != np.uint8 or decoded.shape[1::-1] != im.size:
        return None
    if im.mode == "L":
        return decoded[:, :, np.newaxis], "L"
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "RGB"


def _check_jpeg_intact(file: Path, data: bytes) -> None:
    """`InputError` when libjpeg warns that a JPEG Pillow is about to decode is damaged.

    Pillow's decoder drops libjpeg's warnings, so the entropy-coded data is decoded once more
    by OpenCV at ⅛ scale (every coefficient is still read, the inverse transform is cheap)
    and its warnings are read. Used for what `_decode_jpeg_fast` leaves to Pillow (CMYK).
    """
    _check_progressive_complete(file, data)
    with native_stderr.captured() as messages:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    _refuse_damaged_jpeg(file, messages.text)


def _check_png_intact(file: Path, data: bytes) -> None:
    """`InputError` when a PNG's image data (its IDAT chunks) fails its CRC-32.

    Pillow checks the CRCs of the chunks it parses itself but hands IDAT to zlib unchecked,
    and stops inflating once it has every row (zlib's own checksum at the stream's end is
    never read): damaged image data decodes "successfully" into wrong pixels; so can an IDAT
    chunk the end of the file cuts short. A file that lacks only its trailer (the last CRC,
    IEND) is still read, as before; other chunks cut short are left to Pillow.
    """
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        end = pos + 8 + length
        if kind == b"IDAT" and end > len(data):
            raise InputError(f"{file}: image is truncated or corrupt (its PNG image data is "
                             "cut short); re-export or re-copy it")
        if end + 4 > len(data) or kind == b"IEND":
            return
        if kind == b"IDAT" and zlib.crc32(memoryview(data)[pos + 4:end]) != struct.unpack(
                ">I", data[end:end + 4])[0]:
            raise InputError(f"{file}: image is truncated or corrupt (a PNG image data "
                             "checksum does not match); re-export or re-copy it")
        pos = end + 4


def _decode_opencv(file: Path, data: bytes) -> tuple[np.ndarray, str]:
    """Decode 16-bit colour with OpenCV; returns RGB/RGBA/LA ``uint16`` pixels.

    Pillow's ``verify()`` runs first (chunk CRCs, truncation) so that OpenCV
    is only handed complete files.
    """
    checker = PIL.Image.open(BytesIO(data), formats=READABLE_FORMATS)
    size = checker.size
    checker.verify()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if (
        decoded is None
        or decoded.dtype != np.uint16
        or decoded.ndim != 3
        or decoded.shape[1::-1] != size
    ):
        raise InputError(f"{file}: 16-bit image could not be decoded; re-export it")
    if decoded.shape[2] == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "RGB"
    if decoded.shape[2] == 4 and data[:8] == _PNG_SIGNATURE and data[25] == 4:
        # OpenCV expands grey+alpha to BGRA; keep it grey+alpha.
        return np.ascontiguousarray(decoded[:, :, [0, 3]]), "LA"
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), "RGBA"
    raise InputError(f"{file}: unsupported 16-bit channel layout; convert it to RGB")


def _pillow_to_array(file: Path, im: PIL.Image.Image) -> tuple[np.ndarray, str]:
    """Convert a loaded Pillow image to ``(H, W, C)`` pixels and one of `MODES`."""
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:
        im, mode = im.convert(mode + "A"), mode + "A"  # tRNS colour key -> real alpha
    elif mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode in ("P", "PA"):
        mode = "RGBA" if mode == "PA" or im.has_transparency_data else "RGB"
        im = im.convert(mode)
    elif mode in ("RGBX", "RGBa", "La"):
        mode = {"RGBX": "RGB", "RGBa": "RGBA", "La": "LA"}[mode]
        im = im.convert(mode)
    elif mode in ("YCbCr", "HSV", "LAB"):
        im, mode = im.convert("RGB"), "RGB"
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)[:, :, np.newaxis], "L"
    if mode == "I":
        return _int_to_uint16(np.array(im))[:, :, np.newaxis], "L"
    if mode == "F":
        return _float_to_uint16(np.array(im))[:, :, np.newaxis], "L"
    if mode not in _CHANNELS:
        raise InputError(f"{file}: unsupported colour mode {mode}; convert it to RGB first")
    pixels = np.array(im, dtype=np.uint8)
    return (pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels), mode


def _int_to_uint16(values: np.ndarray) -> np.ndarray:
    """32-bit integer grey -> uint16: kept if in 0..65535, else min-max stretched."""
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 65535:
        return values.astype(np.uint16)
    span = max(high - low, 1)
    return np.round((values.astype(np.float64) - low) * (65535 / span)).astype(np.uint16)


def _float_to_uint16(values: np.ndarray) -> np.ndarray:
    """Float grey -> uint16: 0..1 scaled by 65535, other ranges min-max stretched.

    NaN and infinities become 0.
    """
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        scaled = finite * 65535.0
    else:
        scaled = (finite - low) * (65535.0 / max(high - low, 1e-12))
    return np.clip(np.round(scaled), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- #
# EXIF orientation
# --------------------------------------------------------------------------- #


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Return stored ``(H, W, C)`` pixels turned upright for EXIF ``orientation`` 1..8.

    Orientation says how to display the stored rows: 2 mirror, 3 rotate 180,
    4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
    counter-clockwise.  Unknown values are treated as 1.  May return a view.
    """
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return pixels if transform is None else transform(pixels)


def _normalise_exif(raw: bytes | None) -> bytes | None:
    """Return EXIF as ``b"Exif\\0\\0" + TIFF``; None if absent or unrecognised."""
    if not raw or not isinstance(raw, bytes):
        return None
    if raw.startswith(_EXIF_PREFIX):
        return raw
    if raw[:4] in (b"II*\x00", b"MM\x00*"):  # WebP/PNG style: bare TIFF structure
        return _EXIF_PREFIX + raw
    return None


def _find_orientation(exif: bytes) -> tuple[int, str, int] | None:
    """Locate the orientation entry in IFD0 of EXIF bytes (with the Exif prefix).

    Returns ``(absolute offset of the value field, struct byte order, TIFF
    type)`` or None when there is no usable entry or the structure is broken.
    """
    base = len(_EXIF_PREFIX)
    tiff = exif[base:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return None
    count = struct.unpack(order + "H", tiff[ifd : ifd + 2])[0]
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            return None
        tag, kind, n = struct.unpack(order + "HHI", tiff[entry : entry + 8])
        if tag == _ORIENTATION_TAG:
            return (base + entry + 8, order, kind) if kind in (3, 4) and n >= 1 else None
    return None


def exif_orientation(exif: bytes | None) -> int:
    """Return the EXIF orientation (1..8) stored in ``exif``; 1 if absent or invalid."""
    found = _find_orientation(exif) if exif else None
    if found is None or exif is None:
        return 1
    offset, order, kind = found
    value = struct.unpack_from(order + ("H" if kind == 3 else "I"), exif, offset)[0]
    return int(value) if 1 <= value <= 8 else 1


def exif_with_orientation_reset(exif: bytes | None) -> bytes | None:
    """Return ``exif`` with its orientation set to 1, every other byte unchanged.

    Patching in place (rather than re-serialising) keeps maker notes and
    sub-IFD offsets intact.
    """
    found = _find_orientation(exif) if exif else None
    if found is None or exif is None:
        return exif
    offset, order, kind = found
    patched = bytearray(exif)
    struct.pack_into(order + ("H" if kind == 3 else "I"), patched, offset, 1)
    return bytes(patched)


# --------------------------------------------------------------------------- #
# PNG chunk helpers (16-bit PNG with iCCP/eXIf)
# --------------------------------------------------------------------------- #


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(type, body)`` for each chunk of a PNG byte string."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """Serialise one PNG chunk: length, type, body, CRC-32 of type+body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_exif_chunk(data: bytes) -> bytes | None:
    """Return the body of the first eXIf chunk of a PNG, if any."""
    return next((body for kind, body in _png_chunks(data) if kind == b"eXIf"), None)


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR of an encoded PNG.

    Needed because OpenCV writes 16-bit RGB(A) PNG but no colour profile, and
    Pillow cannot write 48/64-bit PNG at all; no offline library does both.
    Colour chunks that would contradict the profile (sRGB, gAMA, cHRM) are
    dropped, as the PNG spec requires when iCCP is present.
    """
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif.removeprefix(_EXIF_PREFIX))
    skip = {b"iCCP", b"eXIf"} | ({b"sRGB", b"gAMA", b"cHRM"} if icc else set())
    out = [_PNG_SIGNATURE]
    for kind, body in _png_chunks(png):
        if kind not in skip:
            out.append(_png_chunk(kind, body))
        if kind == b"IHDR":
            out.append(extra)
    return b"".join(out)


def _encode_png16_raw(pixels: np.ndarray, colour_type: int) -> bytes:
    """Minimal 16-bit PNG encoder (filter 0) for layouts OpenCV cannot write (grey+alpha)."""
    h, w, _ = pixels.shape
    rows = pixels.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"".join(
        [_PNG_SIGNATURE, _png_chunk(b"IHDR", header),
         _png_chunk(b"IDAT", zlib.compress(raw, PNG_LEVEL)), _png_chunk(b"IEND", b"")]
    )  # fmt: skip


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #


def normalise_format(name: str) -> str:
    """Map "jpg", ".JPEG", "tif", "png", ... to a Pillow format name in `WRITABLE_FORMATS`."""
    key = name.strip().lstrip(".").lower()
    if key in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[key]
    raise UsageError(f"unknown image format {name!r}; use jpeg, png, tiff, webp or bmp")


def _choose_format(dest: Path, fmt: str | None, source_format: str) -> str:
    """Output format: explicit ``fmt``, else the destination suffix, else the source's."""
    if fmt:
        return normalise_format(fmt)
    suffix = dest.suffix.lstrip(".").lower()
    if suffix in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[suffix]
    source = "JPEG" if source_format == "MPO" else source_format.upper()
    if source in WRITABLE_FORMATS:
        return source
    raise OutputError(
        f"{dest}: cannot write {source} files; name the output .jpg, .png, .tif or .webp"
    )


def _tifffile_available() -> bool:
    """True when ``tifffile`` (used for 16-bit colour TIFF) can be imported."""
    try:
        import tifffile  # noqa: F401, PLC0415 - optional, only probed
    except ImportError:
        return False
    return True


def _keeps_16bit(fmt: str, mode: str) -> bool:
    """Whether ``fmt`` output keeps 16-bit samples for ``mode``."""
    if fmt == "PNG":
        return True
    if fmt == "TIFF":  # 16-bit grey+alpha TIFF is not readable by Pillow: write 8-bit
        return mode == "L" or (mode in ("RGB", "RGBA") and _tifffile_available())
    return False


def _flatten_on_white(pixels: np.ndarray) -> np.ndarray:
    """Composite ``uint8`` pixels whose last channel is straight alpha over white."""
    alpha = pixels[..., -1:].astype(np.uint32)
    colour = pixels[..., :-1].astype(np.uint32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _prepare(img: Picture, fmt: str) -> tuple[np.ndarray, str, bytes | None, bytes | None]:
    """Convert ``img`` to what ``fmt`` can store; returns pixels, mode, ICC, EXIF.

    16-bit -> 8-bit where unsupported; CMYK -> RGB outside JPEG/TIFF; alpha
    composited on white for JPEG/BMP; grey -> RGB for WebP.  The ICC profile
    is kept only if the colour family (grey/RGB/CMYK) is unchanged.
    """
    pixels, mode = img.pixels, img.mode
    if pixels.dtype == np.uint16 and not _keeps_16bit(fmt, mode):
        pixels = to_uint8(pixels)
    if mode == "CMYK" and fmt not in ("JPEG", "TIFF"):
        pixels, mode = _cmyk_to_rgb(pixels), "RGB"
    if mode in ("LA", "RGBA") and fmt in ("JPEG", "BMP"):
        pixels, mode = _flatten_on_white(to_uint8(pixels)), mode[:-1]
    if mode in ("L", "LA") and fmt == "WEBP":
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
        mode = "RGB" if mode == "L" else "RGBA"
    same_family = _FAMILY[mode] == _FAMILY[img.mode]
    icc = img.icc_profile if same_family and fmt != "BMP" else None
    exif = exif_with_orientation_reset(img.exif) if fmt in ("JPEG", "PNG", "WEBP") else None
    if fmt == "JPEG" and exif and len(exif) > _JPEG_MAX_MARKER:
        exif = None  # cannot fit in one APP1 segment; dropping beats failing
    return np.ascontiguousarray(pixels), mode, icc, exif


def _to_pillow(pixels: np.ndarray, mode: str) -> PIL.Image.Image:
    """Build a Pillow image from ``(H, W, C)`` pixels (16-bit only for grey)."""
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        return PIL.Image.frombytes("I;16", (w, h), pixels.astype("<u2").tobytes())
    return PIL.Image.frombytes(mode, (w, h), pixels.tobytes())


def _encode_png(pixels: np.ndarray, mode: str, icc: bytes | None, exif: bytes | None) -> bytes:
    """Lossless PNG; 16-bit colour goes through OpenCV plus our own iCCP/eXIf chunks."""
    if pixels.dtype == np.uint16 and mode != "L":
        if mode == "LA":
            encoded = _encode_png16_raw(pixels, colour_type=4)
        else:
            code = cv2.COLOR_RGB2BGR if mode == "RGB" else cv2.COLOR_RGBA2BGRA
            ok, buf = cv2.imencode(
                ".png", cv2.cvtColor(pixels, code), [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]
            )
            if not ok:
                raise RuntimeError("OpenCV could not encode the PNG")
            encoded = buf.tobytes()
        return _png_with_metadata(encoded, icc, exif)
    out = BytesIO()
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    if exif:
        options["exif"] = exif
    _to_pillow(pixels, mode).save(out, "PNG", compress_level=PNG_LEVEL, **options)
    return out.getvalue()


def _encode_tiff(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """16-bit RGB/RGBA TIFF via tifffile (zlib, straight alpha), keeping the ICC profile.

    Pillow cannot write 48/64-bit TIFF; tifffile ships with scikit-image and
    is imported only here (without it, `_keeps_16bit` makes TIFF output 8-bit).
    """
    import tifffile  # noqa: PLC0415 - optional dependency

    extra = ["unassalpha"] if pixels.shape[2] == 4 else None
    out = BytesIO()
    tifffile.imwrite(
        out, pixels, photometric="rgb", extrasamples=extra, compression="zlib", iccprofile=icc
    )
    return out.getvalue()


def _encode_pillow(
    pixels: np.ndarray,
    mode: str,
    fmt: str,
    icc: bytes | None,
    exif: bytes | None,
    quality: int,
    subsampling: int = 0,
) -> bytes:
    """Encode 8-bit pixels (and 16-bit grey TIFF) with Pillow."""
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=subsampling)
        if exif:
            options["exif"] = exif
    elif fmt == "WEBP":
        options.update(quality=quality, method=4)
        if exif:
            options["exif"] = exif.removeprefix(_EXIF_PREFIX)  # WebP stores bare TIFF
    elif fmt == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_lzw"
    out = BytesIO()
    _to_pillow(pixels, mode).save(out, fmt, **options)
    return out.getvalue()


def encode_image(img: Picture, format: str, *, jpeg_quality: int = 95,
                 jpeg_subsampling: int = 0) -> bytes:
    """Encode ``img`` as ``format`` (see `normalise_format`) fully in memory.

    Converts what the format cannot store (see `_prepare`).  JPEG uses
    ``jpeg_quality`` and 4:4:4 chroma; WebP is lossy at the same quality;
    PNG and TIFF are lossless.  Raises `OutputError` when the image is too
    big for the format; other encoder errors propagate (`write_image` wraps them).
    """
    fmt = normalise_format(format)
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"JPEG quality must be between 1 and 100, not {jpeg_quality}")
    side = _MAX_SIDE.get(fmt)
    if side is not None and max(img.width, img.height) > side:
        raise OutputError(
            f"image is {img.width}x{img.height}, too large for {fmt} (at most {side} px a side); "
            "write PNG or TIFF instead"
        )
    pixels, mode, icc, exif = _prepare(img, fmt)
    if fmt == "PNG":
        return _encode_png(pixels, mode, icc, exif)
    if fmt == "TIFF" and pixels.dtype == np.uint16 and mode != "L":
        return _encode_tiff(pixels, icc)
    return _encode_pillow(pixels, mode, fmt, icc, exif, jpeg_quality, jpeg_subsampling)


# --------------------------------------------------------------------------- #
# Writing files atomically
# --------------------------------------------------------------------------- #


def write_image(
    img: Picture,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    format: str | None = None,
    jpeg_quality: int | None = None,
) -> Path:
    """Encode ``img`` and write it atomically to ``path``; return the final path.

    ``jpeg_quality`` (JPEG and WebP): default the source's own (``img.jpeg_quality``), else 95;
    JPEG keeps the source's chroma subsampling (4:4:4 for other sources).

    Format: ``format``, else the path suffix (.jpg .jpeg .png .tif .tiff .webp
    .bmp), else the source format.  Without ``force`` an existing file is
    never replaced (`OutputError`), even if it appears while writing.  On any
    failure no temporary or partial file is left behind.  Missing parent
    folders are created.
    """
    dest = Path(path)
    fmt = _choose_format(dest, format, img.format)
    _check_destination(dest, force=force)
    try:
        data = encode_image(img, fmt, jpeg_quality=output_quality(img, jpeg_quality),
                            jpeg_subsampling=img.jpeg_subsampling or 0)
    except (OutputError, UsageError) as exc:
        raise type(exc)(f"{dest}: {exc}") from exc
    except Exception as exc:  # encoder failure on our own pixels
        raise OutputError(f"{dest}: could not encode as {fmt} ({exc}); try another format") from exc
    return _atomic_write(data, dest, force=force)


def output_quality(img: Picture, requested: int | None = None) -> int:
    """The JPEG/WebP quality an output of ``img`` is written at: ``requested``, else the
    source JPEG's (so a re-save does not bloat or degrade it), else 95."""
    if requested is not None:
        return requested
    return img.jpeg_quality if img.jpeg_quality is not None else 95


def _check_destination(dest: Path, *, force: bool) -> None:
    """Fail early (before encoding) if ``dest`` is a folder, or exists without ``force``."""
    if dest.is_dir():
        raise OutputError(f"{dest}: is a folder; give a file name for the output")
    if not force and os.path.lexists(dest):
        raise OutputError(f"{dest}: exists; pass --force to overwrite")


def _atomic_write(data: bytes, dest: Path, *, force: bool) -> Path:
    """Write ``data`` to a hidden ``.part`` file beside ``dest``, fsync, move into place.

    The ``.part`` file is locked (``flock``) from just after its creation until it has been
    moved into place, so that `remove_stale_temporaries` can tell a temporary that a killed
    run left (no lock) from one being written (locked).
    """
    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot create the output folder ({exc.strerror or exc}); "
            "check the path and permissions"
        ) from exc
    try:
        fd, temp = _create_temp(dest)
        try:
            try:
                _lock_temp(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                _move_into_place(temp, dest, force=force)
            finally:
                os.close(fd)
        finally:
            _remove_quietly(temp)  # already gone after os.replace; a link leaves it
    except OSError as exc:
        raise OutputError(
            f"{dest}: cannot write ({exc.strerror or exc}); check free space and permissions"
        ) from exc
    _fsync_folder(folder)
    return dest


#: The temporaries `_create_temp` names: ``.<output name>.<8 hex digits>.part``.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.part")
#: Where ``flock`` is missing, a temporary this old (seconds) is taken to be stale.
_STALE_WITHOUT_LOCKS_S = 3600.0


def _lock_temp(fd: int) -> None:
    """Hold an exclusive ``flock`` on a temporary while it is written (released on close or
    when the process dies). Best effort: file systems without locks are written all the same."""
    if fcntl is None:
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temporaries(outputs: list[Path] | tuple[Path, ...]) -> list[Path]:
    """Delete the ``.part`` temporaries that `write_image` left beside ``outputs`` in a run that
    was killed, and return them.

    Only files named exactly as `_create_temp` names the temporaries of one of ``outputs``
    (``.<name>.<8 hex digits>.part``), regular files (not links), that no live writer holds
    locked (see `_atomic_write`; without ``flock``: older than an hour). Nothing else in the
    folder is looked at; errors leave a file where it is.
    """
    by_folder: dict[Path, set[str]] = {}
    for output in outputs:
        by_folder.setdefault(Path(output).parent, set()).add(Path(output).name)
    removed = []
    for folder, names in by_folder.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry)
            if match is not None and match["name"] in names and _remove_if_stale(folder / entry):
                removed.append(folder / entry)
    return sorted(removed)


def _remove_if_stale(path: Path) -> bool:
    """Delete ``path`` if it is a regular file no writer holds; True if it was deleted."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        if fcntl is None:  # pragma: no cover - not POSIX
            import time  # noqa: PLC0415

            if time.time() - info.st_mtime < _STALE_WITHOUT_LOCKS_S:
                return False
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live writer holds it
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _create_temp(dest: Path) -> tuple[int, Path]:
    """Create a new hidden ``.<name>.<random>.part`` file beside ``dest``; return (fd, path).

    Created with mode 0o666 so that the umask applies as for a normal file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(16):
        temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "could not create a unique temporary file")


_LINK_UNSUPPORTED = {
    errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP,
    errno.EXDEV, errno.ENOSYS, errno.EMLINK,
}  # fmt: skip


def _move_into_place(temp: Path, dest: Path, *, force: bool) -> None:
    """Move ``temp`` to ``dest``: replace with ``force``, else never clobber.

    No-clobber uses ``os.link`` (fails atomically if ``dest`` exists); where
    hard links are unsupported it falls back to a rename that Windows refuses
    to do over an existing file, or on POSIX a checked ``os.replace`` (which
    leaves a tiny race window only on such filesystems).
    """
    if force:
        os.replace(temp, dest)
        return
    exists = OutputError(f"{dest}: exists; pass --force to overwrite")
    try:
        os.link(temp, dest)
        return
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        if exc.errno not in _LINK_UNSUPPORTED:
            raise
    try:
        if os.name == "nt":
            os.rename(temp, dest)
        elif os.path.lexists(dest):
            raise exists
        else:
            os.replace(temp, dest)
    except FileExistsError:
        raise exists from None


def _remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; ignore errors (used in cleanup only)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _fsync_folder(folder: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable (POSIX)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
