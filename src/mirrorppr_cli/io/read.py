"""Reading image files: limits, sniffing, headers, decoding and the damaged-data checks.

* EXIF orientation is applied on reading: ``pixels`` are upright and the
  returned EXIF says orientation 1, so writers never rotate anything.
* The pixel count is checked against the limit (`resolve_max_pixels`) from the header,
  before anything is decoded; at most that many pixels' worth of bytes is read.
* User-facing failures raise `InputError` with a one-line message that names the file and
  says what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
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
from PIL import UnidentifiedImageError

from .. import native_stderr
from ..errors import InputError, UsageError
from .metadata import (
    _PNG_SIGNATURE,
    _normalise_exif,
    _png_exif_chunk,
    apply_orientation,
    exif_orientation,
    exif_with_orientation_reset,
    jpeg_settings,
)
from .picture import _CHANNELS, Picture

DEFAULT_MAX_PIXELS = 150_000_000
MAX_PIXELS_ENV = "MIRRORPPR_MAX_PIXELS"

# Only these Pillow decoders are tried (camera "MPO" files open through JPEG):
# fewer parsers exposed to untrusted files, and never EPS (Ghostscript).
READABLE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"BM", "BMP"))

# Pillow keeps its decompression-bomb limit and LOAD_TRUNCATED_IMAGES in module
# globals, and the warnings filter list is global too.  read_image changes them
# only while it holds this lock and always restores them.
_PILLOW_LOCK = threading.Lock()


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


#: OpenCV's flag that decodes colour straight to RGB (4.10 and later), else plain BGR.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


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
    # libjpeg-turbo writes RGB itself (IMREAD_COLOR_RGB, OpenCV ≥ 4.10): the same bytes as
    # BGR then cvtColor, on this project's 38 JPEGs, without a pass over the whole image
    # (0.17 s of a 24 MP query's 1.6 s in one profiled run)
    flags = cv2.IMREAD_IGNORE_ORIENTATION | (
        _IMREAD_RGB if im.mode == "RGB" else cv2.IMREAD_GRAYSCALE)
    with native_stderr.captured() as messages:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    _refuse_damaged_jpeg(file, messages.text)
    if decoded is None or decoded.dtype != np.uint8 or decoded.shape[1::-1] != im.size:
        return None
    if im.mode == "L":
        return decoded[:, :, np.newaxis], "L"
    if _IMREAD_RGB == cv2.IMREAD_COLOR:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "RGB"
    return decoded, "RGB"


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
