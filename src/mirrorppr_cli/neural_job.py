"""``retouch`` with a neural backend: exemplar files + query file → retouched file.

The neural engine re-renders the query at the official output size (sides floored to
multiples of 16), in 8-bit RGB. The written file keeps the query's format and EXIF; its ICC
profile is kept only for RGB queries (an RGB result cannot carry a CMYK or grey profile).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import OutputError
from .io import Picture, read_image, write_image
from .retouch_job import RetouchReport


def read_exemplar_rgb(before: Path, after: Path, *, max_pixels: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The exemplar pair as ``(H, W, 3)`` uint8 RGB arrays."""
    return (np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8()),
            np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8()))


def neural_retouch_file(backend, before: np.ndarray, after: np.ndarray, source: Path,
                        dest: Path, *, force: bool = False, output_format: str | None = None,
                        max_pixels: int | None = None) -> RetouchReport:
    """Retouch the query ``source`` with ``backend``; write ``dest`` atomically."""
    start = time.perf_counter()
    if not force and dest.exists():
        raise OutputError(f"{dest}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    query = np.ascontiguousarray(picture.rgb8())
    result = backend.retouch(before, after, query)
    icc = picture.icc_profile if picture.mode in ("RGB", "RGBA") else None
    out = Picture(np.ascontiguousarray(result), "RGB", picture.format, icc, picture.exif, source)
    written = write_image(out, dest, force=force, format=output_format)
    same = result.shape == query.shape
    changed = int(np.any(result != query, axis=-1).sum()) if same else result.shape[0] * result.shape[1]
    return RetouchReport(
        input=str(source), output=str(written), changed_pixels=changed,
        seconds=round(time.perf_counter() - start, 4),
        extra={"backend": backend.name, "size": [int(result.shape[1]), int(result.shape[0])]},
    )
