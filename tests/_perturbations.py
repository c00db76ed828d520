"""Imperceptible variants of an image, for measuring detector/tracker jitter in tests."""

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
