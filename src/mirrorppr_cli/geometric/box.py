"""Pixel rectangles: :class:`Box` and the boxes of where a field is non-zero.

Convention: ``Box(x0, y0, x1, y1)`` covers columns ``[x0, x1)`` and rows ``[y0, y1)``;
``box.slices()`` indexes an ``(H, W, …)`` array as ``[rows, cols]``. Work is restricted to
such boxes wherever a result is known to be zero (or unchanged) outside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A pixel rectangle ``[x0, x1) × [y0, y1)`` in integer pixel indices."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices selecting this box from an ``(H, W, ...)`` array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @staticmethod
    def full(height: int, width: int) -> Box:
        return Box(0, 0, width, height)


def gaussian_radius(sigma: float) -> int:
    """An upper bound (px) of the half-width of OpenCV's Gaussian kernel for ``sigma`` on a
    float image (its size is ``round(8σ + 1) | 1``): beyond it a blur reads nothing."""
    return int(np.ceil(4.0 * sigma)) + 1


def nonzero_box(field: np.ndarray) -> Box:
    """The smallest box holding every pixel where ``field`` (``(h, w)`` or ``(h, w, K)``) is not
    zero; an empty box when there is none."""
    live = nonzero(field)
    if not live.any():
        return Box(0, 0, 0, 0)
    x, y, w, h = cv2.boundingRect(live.view(np.uint8))
    return Box(x, y, x + w, y + h)


def nonzero(field: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where any component of ``field`` (``(h, w)`` or ``(h, w, K)``) is not
    zero (NumPy's ``any`` over a short last axis is slow)."""
    if field.ndim == 2:
        return field != 0
    live = field[..., 0] != 0
    for c in range(1, field.shape[2]):
        live |= field[..., c] != 0
    return live


def grown(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` px on every side, clipped to an image of ``shape``; an
    empty box stays empty."""
    if box.empty:
        return box
    height, width = shape
    return Box(max(box.x0 - margin, 0), max(box.y0 - margin, 0), min(box.x1 + margin, width),
               min(box.y1 + margin, height))


def intersection(a: Box, b: Box) -> Box:
    """The pixels in both ``a`` and ``b`` (an empty box when they do not overlap)."""
    return Box(max(a.x0, b.x0), max(a.y0, b.y0), min(a.x1, b.x1), min(a.y1, b.y1))


def relative(inner: Box, outer: Box) -> tuple[slice, slice]:
    """``(rows, cols)`` slices selecting ``inner`` from an array laid over ``outer``."""
    return (slice(inner.y0 - outer.y0, inner.y1 - outer.y0),
            slice(inner.x0 - outer.x0, inner.x1 - outer.x0))


def union(a: Box, b: Box) -> Box:
    """The smallest box holding ``a`` and ``b`` (either may be empty)."""
    if a.empty:
        return b
    if b.empty:
        return a
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))
