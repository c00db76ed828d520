"""Self-augmentation (paper §3.4, appendix A.3): one random spatial transform applied to both
images of a pair, so the query pair carries exactly the exemplar's operation.

Conventions: pixel centres at integers, points ``(x, y)``. An :class:`Augmentation` maps
source pixels to output pixels by one affine matrix: rotate about the image centre, mirror
horizontally, crop, scale to the output size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: Rotation choices in degrees (counter-clockwise), as the official pipeline.
ROTATIONS = tuple(range(-15, 16, 5))
#: Crop area as a fraction of the image area, and crop aspect ratio (w/h) ranges.
CROP_SCALE = (0.55, 1.0)
ASPECT = (1 / 3, 3.0)
#: Output sides are multiples of this.
SIDE_MULTIPLE = 16


@dataclass(frozen=True)
class Augmentation:
    """A recorded augmentation; enough to regenerate the query pair exactly.

    Attributes:
        rotation_deg: counter-clockwise rotation about the source centre.
        flip: mirror left↔right after rotating.
        crop: ``(x0, y0, width, height)`` in edge coordinates of the rotated, mirrored frame
            (same size as the source).
        out_size: ``(width, height)`` of the output, multiples of 16.
    """

    rotation_deg: float
    flip: bool
    crop: tuple[float, float, float, float]
    out_size: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> Augmentation:
        return Augmentation(
            float(data["rotation_deg"]),
            bool(data["flip"]),
            tuple(float(v) for v in data["crop"]),
            tuple(int(v) for v in data["out_size"]),
        )


def _frame_matrix(size: tuple[int, int], rotation_deg: float, flip: bool) -> np.ndarray:
    """3×3 matrix: source pixel → pixel of the rotated (about the centre) and mirrored frame."""
    width, height = size
    centre = ((width - 1) / 2, (height - 1) / 2)
    rot = np.vstack([cv2.getRotationMatrix2D(centre, rotation_deg, 1.0), [0, 0, 1]])
    if flip:
        rot = np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]]) @ rot
    return rot


def matrix(aug: Augmentation, size: tuple[int, int]) -> np.ndarray:
    """2×3 affine: source pixel ``(x, y)`` → output pixel, for a source of ``size`` (w, h)."""
    x0, y0, cw, ch = aug.crop
    ow, oh = aug.out_size
    sx, sy = ow / cw, oh / ch
    crop = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1]])
    return (crop @ _frame_matrix(size, aug.rotation_deg, aug.flip))[:2]


def transform_points(points: np.ndarray, aug: Augmentation, size: tuple[int, int]) -> np.ndarray:
    """Source points ``(..., 2)`` → their positions in the augmented output."""
    m = matrix(aug, size)
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def apply_augmentation(pixels: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Augment ``pixels`` (``(H, W, C)``); borders uncovered by the rotation are mirrored."""
    height, width = pixels.shape[:2]
    m = matrix(aug, (width, height))
    flags = cv2.INTER_AREA if min(aug.out_size[0] / aug.crop[2], 1) < 0.75 else cv2.INTER_LINEAR
    if flags == cv2.INTER_AREA:
        # warpAffine has no area filter: pre-shrink, then warp with bilinear sampling.
        factor = aug.out_size[0] / aug.crop[2] / 0.9
        small = cv2.resize(pixels, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        # cv2.resize samples with the factor it was given (not the rounded size ratio):
        # pixel-centre convention x_s = (x + 0.5)·f − 0.5
        pre = np.array(
            [[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]]
        )
        m = (np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(pre))[:2]
        pixels = small
    out = cv2.warpAffine(
        pixels, m, aug.out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    return out.reshape(aug.out_size[1], aug.out_size[0], -1)


def output_size(aspect: float, area: int) -> tuple[int, int]:
    """``(w, h)`` with ``w/h ≈ aspect``, ``w·h ≈ area``, both multiples of 16 (at least 16)."""
    w = max(SIDE_MULTIPLE, round(math.sqrt(area * aspect) / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    h = max(SIDE_MULTIPLE, round(math.sqrt(area / aspect) / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    return int(w), int(h)


def _face_box(
    face_points: np.ndarray, size: tuple[int, int], rotation: float, flip: bool,
    margin: float, *, clip: bool,
) -> tuple[float, float, float, float] | None:
    """Face box with margin, in edge coordinates of the rotated, mirrored frame.

    ``clip=False``: ``None`` when the box leaves the frame; ``clip=True``: clipped to it.
    """
    width, height = size
    frame = _frame_matrix(size, rotation, flip)
    face = face_points @ frame[:2, :2].T + frame[:2, 2]
    fx0, fy0 = face.min(axis=0) + 0.5
    fx1, fy1 = face.max(axis=0) + 0.5
    pad_x, pad_y = margin * (fx1 - fx0), margin * (fy1 - fy0)
    box = (fx0 - pad_x, fy0 - pad_y, fx1 + pad_x, fy1 + pad_y)
    if clip:
        return max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height)
    inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
    return box if inside else None


def sample_augmentation(
    rng: np.random.Generator,
    size: tuple[int, int],
    face_points: np.ndarray,
    out_area: int,
    margin: float = 0.1,
) -> Augmentation:
    """A random augmentation whose crop contains the whole face.

    Args:
        size: source ``(width, height)``.
        face_points: ``(N, 2)`` source landmarks of the face to keep.
        out_area: output area in pixels (e.g. 1024²).
        margin: extra room around the face box, as a fraction of its size.
    """
    width, height = size
    flip = bool(rng.random() < 0.5)
    # Only rotations that keep the whole face (with its margin) inside the rotated frame.
    fitting = [r for r in ROTATIONS if _face_box(face_points, size, r, flip, margin, clip=False)
               is not None]
    rotation = float(rng.choice(fitting)) if fitting else 0.0
    fx0, fy0, fx1, fy1 = _face_box(face_points, size, rotation, flip, margin, clip=True)
    scale = float(rng.uniform(*CROP_SCALE))
    aspect = float(rng.uniform(*ASPECT))
    cw = min(math.sqrt(scale * width * height * aspect), float(width))
    ch = min(math.sqrt(scale * width * height / aspect), float(height))
    cw, ch = max(cw, fx1 - fx0), max(ch, fy1 - fy0)  # never cut the face
    # keep the aspect ratio within bounds after growing to fit the face (and the frame)
    cw = min(max(cw, ch * ASPECT[0]), float(width))
    ch = min(max(ch, cw / ASPECT[1]), float(height))
    cw = max(min(cw, ch * ASPECT[1]), fx1 - fx0)
    ch = max(min(ch, cw / ASPECT[0]), fy1 - fy0)
    x0 = float(rng.uniform(max(0.0, fx1 - cw), max(min(fx0, width - cw), max(0.0, fx1 - cw))))
    y0 = float(rng.uniform(max(0.0, fy1 - ch), max(min(fy0, height - ch), max(0.0, fy1 - ch))))
    return Augmentation(
        rotation, flip, (round(x0, 3), round(y0, 3), round(cw, 3), round(ch, 3)),
        output_size(cw / ch, out_area),
    )
