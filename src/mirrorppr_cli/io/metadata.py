"""Metadata byte surgery: EXIF orientation, PNG chunks, the settings a JPEG was saved with.

* EXIF bytes are kept in the JPEG APP1 payload form, starting with
  ``b"Exif\\0\\0"`` followed by a TIFF header; they are patched in place, never
  re-serialised (maker notes and sub-IFD offsets stay intact).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from io import BytesIO

import numpy as np
import PIL.Image

_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
# The settings a JPEG was saved with
# --------------------------------------------------------------------------- #


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
