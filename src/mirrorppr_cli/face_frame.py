"""The face's own coordinate frame, built from its 478 landmarks.

Local coordinates ``(u, v)`` are measured from the midpoint of the two eye centres, in units
of the inter-ocular distance (eye centre to eye centre): ``u`` along the line from the eye
on the image's left to the eye on the image's right, ``v`` perpendicular to it, pointing
towards the chin. Edits expressed in this frame transfer across position, scale and in-plane
rotation; ``v`` is oriented by the chin, so a mirrored photo still gets a proper frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import regions


@dataclass(frozen=True)
class FaceFrame:
    """``origin`` (2,), unit axes ``u`` and ``v`` (2,) in image ``(x, y)``, ``unit`` in px."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    unit: float

    @staticmethod
    def from_points(points: np.ndarray) -> FaceFrame:
        """Frame of a face from its ``(478, 2)`` landmarks ``(x, y)`` in pixels."""
        right = points[list(regions.RIGHT_EYE_CONTOUR)].mean(axis=0)
        left = points[list(regions.LEFT_EYE_CONTOUR)].mean(axis=0)
        if right[0] > left[0]:
            right, left = left, right
        axis = left - right
        unit = float(np.hypot(*axis))
        if unit <= 0:
            raise ValueError("degenerate landmarks: both eyes at the same place")
        u = axis / unit
        origin = (right + left) / 2
        v = np.array([-u[1], u[0]])
        if np.dot(points[regions.CHIN] - origin, v) < 0:
            v = -v
        return FaceFrame(origin=origin, u=u, v=v, unit=unit)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Image ``(..., 2)`` ``(x, y)`` px → local ``(..., 2)`` ``(u, v)`` face units."""
        rel = np.asarray(points, np.float64) - self.origin
        return np.stack([rel @ self.u, rel @ self.v], axis=-1) / self.unit

    def to_image(self, local: np.ndarray) -> np.ndarray:
        """Local ``(..., 2)`` ``(u, v)`` face units → image ``(..., 2)`` ``(x, y)`` px."""
        loc = np.asarray(local, np.float64) * self.unit
        return self.origin + loc[..., :1] * self.u + loc[..., 1:] * self.v
