"""The picture value: pixels in the file's own colour space, plus the metadata worth keeping.

Conventions (shared by the whole `mirrorppr_cli.io` package):

* Pixels are ``numpy`` arrays of shape ``(H, W, C)``, C-contiguous, dtype
  ``uint8`` or ``uint16``, in the file's own colour space (see `Picture`).
* Programming errors (wrong array shape or dtype) raise ``ValueError``.

The detectors (face, body) take ``(H, W, 3)`` ``uint8`` RGB: `Picture.rgb8` gives it for a
picture, `as_rgb8` for a bare pixel array.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

MODES = ("L", "LA", "RGB", "RGBA", "CMYK")
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}
_FAMILY = {"L": "grey", "LA": "grey", "RGB": "rgb", "RGBA": "rgb", "CMYK": "cmyk"}


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
        if self.mode == "CMYK":
            rgb = _cmyk_to_rgb(self.pixels)
        else:
            rgb = as_rgb8(self.pixels)
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


def as_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Return ``(H, W, 3)`` ``uint8`` RGB of any supported pixel array, for the detectors.

    ``pixels``: ``(H, W)`` or ``(H, W, C)`` with C = 1 grey, 2 grey+alpha, 3 RGB or 4 RGBA,
    ``uint8`` or ``uint16``.  Grey is replicated, alpha dropped (not composited), 16-bit
    values are rounded to ``round(v / 257)`` (`to_uint8`).  The result is C-contiguous and
    may be ``pixels`` itself (already contiguous RGB ``uint8``): copy it before modifying.
    Four channels are taken as RGBA: for CMYK use `Picture.rgb8`, which knows the mode.
    """
    p = to_uint8(pixels)
    if p.ndim == 2:
        p = p[..., None]
    if p.shape[2] < 3:
        return np.repeat(p[..., :1], 3, axis=2)
    return np.ascontiguousarray(p[..., :3])


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Convert ``(H, W, 4)`` uint8 CMYK to ``(H, W, 3)`` uint8 RGB (Pillow, no ICC)."""
    h, w = cmyk.shape[:2]
    pil = PIL.Image.frombytes("CMYK", (w, h), np.ascontiguousarray(cmyk).tobytes())
    return np.asarray(pil.convert("RGB")).copy()
