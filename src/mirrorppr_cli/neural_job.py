"""``retouch`` with a neural backend: exemplar files + query file → retouched file.

The neural engine re-renders the query at the official output size (sides floored to
multiples of 16), in 8-bit RGB. The written file keeps the query's format and EXIF; its ICC
profile is kept only for RGB queries (an RGB result cannot carry a CMYK or grey profile).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError
from .io import Picture, read_image, write_image
from .result import Result


@dataclass
class NeuralEdit:
    """An exemplar pair as the neural engine uses it: its pixels (``(H, W, 3)`` uint8 RGB)
    and, once the first query is retouched, its condition tokens on the device (the engine's
    ``(cond, mask)``), kept here so that a batch computes them once."""

    before: np.ndarray
    after: np.ndarray
    condition: tuple | None = field(default=None, repr=False, compare=False)


def read_exemplar(before: Path, after: Path, *, max_pixels: int | None = None) -> NeuralEdit:
    """The exemplar pair read from files, conditioning not yet computed."""
    return NeuralEdit(np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8()),
                      np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8()))


def neural_retouch_file(backend, edit: NeuralEdit, source: Path,
                        dest: Path, *, force: bool = False, output_format: str | None = None,
                        max_pixels: int | None = None) -> Result:
    """Retouch the query ``source`` with ``backend``; write ``dest`` atomically."""
    start = time.perf_counter()
    if not force and dest.exists():
        raise OutputError(f"{dest}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    query = np.ascontiguousarray(picture.rgb8())
    result = backend.apply(edit, query)
    icc = picture.icc_profile if picture.mode in ("RGB", "RGBA") else None
    out = Picture(np.ascontiguousarray(result), "RGB", picture.format, icc, picture.exif, source)
    written = write_image(out, dest, force=force, format=output_format)
    same = result.shape == query.shape
    changed = int(np.any(result != query, axis=-1).sum()) if same else result.shape[0] * result.shape[1]
    return Result(
        input=str(source), output=str(written), changed_pixels=changed,
        seconds=round(time.perf_counter() - start, 4),
        extra={"backend": backend.name, "size": [int(result.shape[1]), int(result.shape[0])]},
    )
