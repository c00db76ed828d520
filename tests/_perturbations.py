"""Variants of an image for tests: imperceptible ones (detector/tracker jitter) and a query
framed differently from its exemplar."""

from __future__ import annotations

import cv2
import numpy as np


def perturbations(image: np.ndarray):
    """Yield ``(variant, shift)``: two noisy copies (σ = 1 grey level, no shift) and two
    half-pixel translations; ``shift`` is the ``(x, y)`` px the variant was moved by."""
    rng = np.random.default_rng(0)
    for _ in range(2):
        noisy = np.clip(image + rng.normal(0, 1.0, image.shape), 0, 255).astype(np.uint8)
        yield noisy, np.zeros(2)
    for shift in ((0.5, 0.0), (0.0, 0.5)):
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        moved = cv2.warpAffine(
            image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        yield moved, np.array(shift)


def rotate_on_canvas(rgb: np.ndarray) -> np.ndarray:
    """Rotated 12°, scaled 0.8, off-centre on a larger grey canvas (1.3 × 1.2 the size)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.8)
    m[:, 2] += [0.15 * w, 0.10 * h]
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (int(1.3 * w), int(1.2 * h)),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(40, 40, 40))
