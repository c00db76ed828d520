"""Writing image files: format choice, encoders, and the atomic writer.

* Output is written to a hidden ``.part`` temporary beside the destination, fsynced and
  moved into place (`write_atomic`): a killed run never leaves a partial file, only a
  temporary that `remove_stale_temporaries` can tell from a live one.
* User-facing failures raise `OutputError` with a one-line message that names the file and
  says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import struct
import zlib
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
from PIL import features

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from ..errors import OutputError, UsageError
from .metadata import (
    _EXIF_PREFIX,
    _PNG_SIGNATURE,
    _png_chunk,
    _png_with_metadata,
    exif_with_orientation_reset,
)
from .picture import _FAMILY, Picture, _cmyk_to_rgb, to_uint8

WRITABLE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
_FORMAT_ALIASES = {
    "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "tif": "TIFF",
    "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP",
}  # fmt: skip
#: Output file suffixes and the format each names (".jpg" → "JPEG", ...).
SUFFIX_FORMAT = {f".{alias}": fmt for alias, fmt in _FORMAT_ALIASES.items()}
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383}  # libjpeg and libwebp limits
_JPEG_MAX_MARKER = 65_533  # bytes in one JPEG marker segment (EXIF must fit in one)
#: zlib level of PNG output: 1 encodes a 1 MP portrait ~5× faster than Pillow's default 6
#: for ~10–15 % more bytes; PNG stays lossless either way.
PNG_LEVEL = 1


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
    """`write_atomic` with `write_image`'s messages: `OutputError` when the folder cannot be
    created or the file cannot be written (and, without ``force``, when ``dest`` exists)."""
    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot create the output folder ({exc.strerror or exc}); "
            "check the path and permissions"
        ) from exc
    try:
        return write_atomic(dest, data, replace=force)
    except OSError as exc:
        raise OutputError(
            f"{dest}: cannot write ({exc.strerror or exc}); check free space and permissions"
        ) from exc


def write_atomic(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    ``data`` goes to a hidden ``.<name>.<8 hex digits>.part`` file beside ``path`` (mode
    0o666 less the umask, as for a normal file), is fsynced and moved into place, then the
    folder is fsynced. The ``.part`` file is locked (``flock``) from just after its creation
    until it has been moved into place, so that `remove_stale_temporaries` can tell a
    temporary that a killed run left (no lock) from one being written (locked). Missing
    parent folders are created.

    ``replace``: an existing ``path`` is replaced (atomically); else it is never overwritten,
    even if it appears while writing: `OutputError`. On any failure the temporary is removed
    and ``path`` is left as it was; file-system errors propagate as ``OSError``.
    """
    dest = Path(path)
    folder = dest.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp = _create_temp(dest)
    try:
        try:
            _lock_temp(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            _move_into_place(temp, dest, force=replace)
        finally:
            os.close(fd)
    finally:
        _remove_quietly(temp)  # already gone after os.replace; a link leaves it
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
    locked (see `write_atomic`; without ``flock``: older than an hour). Nothing else in the
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
