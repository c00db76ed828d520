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
class AxisFrame:
    """A similarity frame: ``origin`` (2,), unit axes ``u`` and ``v`` (2,) in image ``(x, y)``,
    ``unit`` in px. Shared by the face frame (eyes) and the body frame (shoulders)."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    unit: float

    @classmethod
    def between(cls, a: np.ndarray, b: np.ndarray, *, v_towards: np.ndarray | None = None,
                v_away_from: np.ndarray | None = None, what: str = "points"):
        """Frame with ``u`` from the image-left to the image-right of ``a``, ``b``, origin at
        their midpoint, unit their distance; ``v`` ⟂ ``u``, oriented towards ``v_towards``
        (or away from ``v_away_from``)."""
        if a[0] > b[0]:
            a, b = b, a
        axis = b - a
        unit = float(np.hypot(*axis))
        if not unit > 0:
            raise ValueError(f"degenerate landmarks: both {what} at the same place")
        u = axis / unit
        origin = (a + b) / 2
        v = np.array([-u[1], u[0]])
        if v_towards is not None and np.dot(v_towards - origin, v) < 0:
            v = -v
        if v_away_from is not None and np.dot(v_away_from - origin, v) > 0:
            v = -v
        return cls(origin=origin, u=u, v=v, unit=unit)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Image ``(..., 2)`` ``(x, y)`` px → local ``(..., 2)`` ``(u, v)`` frame units."""
        rel = np.asarray(points, np.float64) - self.origin
        return np.stack([rel @ self.u, rel @ self.v], axis=-1) / self.unit

    def to_image(self, local: np.ndarray) -> np.ndarray:
        """Local ``(..., 2)`` ``(u, v)`` frame units → image ``(..., 2)`` ``(x, y)`` px."""
        return self.origin + self.vectors_to_image(local)

    def vectors_to_local(self, vectors: np.ndarray) -> np.ndarray:
        """Image displacements ``(..., 2)`` px → frame displacements in frame units."""
        vec = np.asarray(vectors, np.float64)
        return np.stack([vec @ self.u, vec @ self.v], axis=-1) / self.unit

    def vectors_to_image(self, local: np.ndarray) -> np.ndarray:
        """Frame displacements ``(..., 2)`` frame units → image displacements px."""
        loc = np.asarray(local, np.float64) * self.unit
        return loc[..., :1] * self.u + loc[..., 1:] * self.v


@dataclass(frozen=True)
class FaceFrame(AxisFrame):
    """The face frame: eye-centre midpoint, inter-ocular unit, ``v`` towards the chin."""

    @classmethod
    def from_points(cls, points: np.ndarray) -> FaceFrame:
        """Frame of a face from its ``(478, 2)`` landmarks ``(x, y)`` in pixels."""
        right = points[list(regions.RIGHT_EYE_CONTOUR)].mean(axis=0)
        left = points[list(regions.LEFT_EYE_CONTOUR)].mean(axis=0)
        return cls.between(right, left, v_towards=points[regions.CHIN], what="eyes")
