"""The face's working window and the mirror test.

:class:`FaceWindow`: the part of an image that holds the face (landmark hull grown by
:data:`FACE_MARGIN` face units) — where face motion is measured and checked. ``is_mirrored``
decides, from appearance, whether a query shows the exemplar's face mirrored (a flipped photo),
so that an edit of the left eye lands on the same eye. Points are ``(x, y)`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..io import to_uint8
from .box import Box
from .face_frame import FaceFrame
from .flow import grey

#: Edits are looked for within the landmarks' hull grown by this (face units).
FACE_MARGIN = 0.3


@dataclass(frozen=True)
class FaceWindow:
    """Where face edits are looked for: ``window``, the box around the face; ``region``,
    ``(h, w)`` bool over it, the face region (:func:`_face_region`); ``pad``, px."""

    window: Box
    region: np.ndarray
    pad: int

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The face region as an ``(H, W)`` bool mask of the whole image."""
        out = np.zeros(shape, bool)
        out[self.window.slices()] = self.region
        return out


def face_window(points: np.ndarray, shape: tuple[int, int]) -> FaceWindow:
    """The :class:`FaceWindow` of a face with landmarks ``points`` in an image of ``shape``."""
    unit = FaceFrame.from_points(points).unit
    height, width = shape
    pad = max(16, int(0.1 * unit))
    reach = FACE_MARGIN * unit + pad
    lo = np.floor(points.min(axis=0) - reach).astype(int)
    hi = np.ceil(points.max(axis=0) + reach).astype(int) + 1
    window = Box(int(max(lo[0], 0)), int(max(lo[1], 0)), int(min(hi[0], width)),
                 int(min(hi[1], height)))
    region = _face_region(points - [window.x0, window.y0], unit, (window.height, window.width))
    return FaceWindow(window, region, pad)


def _face_region(points: np.ndarray, unit: float, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)``: the landmarks' convex hull grown by :data:`FACE_MARGIN` face units.

    The hull is filled and dilated within its own box grown by the dilation's radius (the rest
    stays False): the dilation's cost follows the face, not the window around it (a 24 MP
    portrait's window is several megapixels, the kernel ~100 px wide).
    """
    out = np.zeros(shape, bool)
    hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
    grow = int(round(FACE_MARGIN * unit)) | 1
    x, y, w, h = cv2.boundingRect(hull)
    height, width = shape
    x0, y0 = max(x - grow, 0), max(y - grow, 0)
    x1, y1 = min(x + w + grow, width), min(y + h + grow, height)
    if x1 <= x0 or y1 <= y0:
        return out
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, hull - [x0, y0], 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))
    grown = _dilated_runs(mask, kernel)
    out[y0:y1, x0:x1] = (cv2.dilate(mask, kernel) > 0) if grown is None else grown
    return out


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(has, first, last)`` per row of ``mask`` ``(h, w)``: whether it holds a non-zero
    pixel, the first and last one's column; None unless every such row is one run."""
    live = mask != 0
    has = live.any(axis=1)
    first = np.argmax(live, axis=1)
    last = mask.shape[1] - 1 - np.argmax(live[:, ::-1], axis=1)
    if np.any(live.sum(axis=1)[has] != (last - first + 1)[has]):
        return None
    return has, first, last


def _dilated_runs(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray | None:
    """``cv2.dilate(mask, kernel) > 0`` (anchor at the kernel's centre, nothing beyond the
    edges) for a ``mask`` ``(h, w)`` whose rows are single runs (a filled convex polygon) and
    a ``kernel`` whose rows are too (an ellipse), as one run per output row: the union of the
    mask's runs, each widened by the kernel row that reaches it. None when a union is not one
    run, or either is not made of runs (the caller dilates then).

    Its cost is rows × kernel rows, where OpenCV's grows with pixels × kernel size.
    """
    runs, kruns = _row_runs(mask), _row_runs(kernel)
    if runs is None or kruns is None:
        return None
    has, first, last = runs
    k_has, k_first, k_last = kruns
    height, width = mask.shape
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    rows = np.nonzero(k_has)[0]
    source = np.arange(height)[:, None] + (rows - cy)[None, :]  # (h, kernel rows)
    inside = (source >= 0) & (source < height)
    source = np.clip(source, 0, height - 1)
    valid = inside & has[source]
    lo = first[source] - (k_last[rows] - cx)[None, :]
    hi = last[source] - (k_first[rows] - cx)[None, :]
    lo, hi = np.maximum(lo, 0), np.minimum(hi, width - 1)
    valid &= lo <= hi
    lo = np.where(valid, lo, width)
    hi = np.where(valid, hi, -1)
    order = np.argsort(lo, axis=1, kind="stable")
    lo_sorted = np.take_along_axis(lo, order, axis=1)
    reach = np.maximum.accumulate(np.take_along_axis(hi, order, axis=1), axis=1)
    gap = (lo_sorted[:, 1:] > reach[:, :-1] + 1) & (lo_sorted[:, 1:] < width)
    if gap.any():
        return None
    out = np.zeros((height, width), bool)
    start, stop = lo.min(axis=1), hi.max(axis=1)
    for y in np.nonzero(valid.any(axis=1))[0]:
        out[y, start[y] : stop[y] + 1] = True
    return out


#: The face patch compared to tell a mirrored query: face units around the eyes' midpoint
#: (u across, v down towards the chin), sampled every PATCH_STEP units from the face scaled to
#: a unit of PATCH_UNIT_PX (area-averaged first, so the sampling does not alias).
PATCH_U = (-1.2, 1.2)
PATCH_V = (-0.8, 1.8)
PATCH_STEP = 0.05
PATCH_UNIT_PX = 20.0
#: A query is taken as mirrored when its mirrored face patch correlates with the exemplar's by
#: at least MIRROR_MIN and by MIRROR_MARGIN more than the unmirrored one: only then is there
#: evidence (the same photo or person, lit from the mirrored side) rather than a coin toss
#: between two near-symmetric faces.
MIRROR_MIN = 0.5
MIRROR_MARGIN = 0.15


def _grey_of(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 grey levels of pixels of any supported dtype and channel count."""
    pixels = to_uint8(image)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    if pixels.shape[2] < 3:
        return np.ascontiguousarray(pixels[..., 0])
    return grey(pixels[..., :3])


def face_patch(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(nv, nu)`` float32 grey levels of ``image`` (``(H, W, C)``, uint8 or float in [0, 1])
    in the face frame of ``points`` (``(478, 2)`` ``(x, y)`` px), high-passed and normalised
    (zero mean, unit norm): what :func:`is_mirrored` compares."""
    frame = FaceFrame.from_points(points)
    us = np.arange(PATCH_U[0], PATCH_U[1] + 1e-9, PATCH_STEP)
    vs = np.arange(PATCH_V[0], PATCH_V[1] + 1e-9, PATCH_STEP)
    local = np.stack(np.meshgrid(us, vs), axis=-1)
    where = frame.to_image(local)
    scale = min(1.0, PATCH_UNIT_PX / frame.unit)
    lo = np.floor(where.reshape(-1, 2).min(axis=0)).astype(int) - 2
    hi = np.ceil(where.reshape(-1, 2).max(axis=0)).astype(int) + 3
    height, width = image.shape[:2]
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros(local.shape[:2], np.float32)
    crop = _grey_of(image[y0:y1, x0:x1])  # grey is per pixel: the crop's, not the image's
    size = (max(2, round(crop.shape[1] * scale)), max(2, round(crop.shape[0] * scale)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    sx, sy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    maps = ((where - [x0, y0] + 0.5) * [sx, sy] - 0.5).astype(np.float32)
    patch = cv2.remap(small, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    patch -= cv2.GaussianBlur(patch, (0, 0), 3.0)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return (patch / norm if norm > 0 else patch).astype(np.float32)


def mirror_evidence(appearance: np.ndarray, query: np.ndarray,
                    query_points: np.ndarray) -> tuple[float, float]:
    """``(direct, mirrored)``: correlation of the exemplar's face patch with the query's, and
    with the query's mirrored about its face's vertical axis (``u → −u``)."""
    patch = face_patch(query, query_points)
    return float((appearance * patch).sum()), float((appearance * patch[:, ::-1]).sum())


def is_mirrored(appearance: np.ndarray | None, query: np.ndarray,
                query_points: np.ndarray) -> bool:
    """Whether the query shows the exemplar's face mirrored (:data:`MIRROR_MIN`,
    :data:`MIRROR_MARGIN`); False without an exemplar patch."""
    if appearance is None:
        return False
    direct, mirrored = mirror_evidence(appearance, query, query_points)
    return mirrored >= MIRROR_MIN and mirrored >= direct + MIRROR_MARGIN
