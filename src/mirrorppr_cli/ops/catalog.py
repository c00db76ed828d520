"""The operation catalog: one declarative entry per named operation.

An operation moves groups of landmarks by a *rule* (scale about a centre, or shift along a
face axis), measured in the face's own frame (:mod:`mirrorppr_cli.face_frame`), so the same
strength means the same relative change on any face. Landmarks in a ring around the moving
points are anchors: they stay where they are, so the warp stays local.

Strength ``s`` is in [−100, 100]; its sign is the direction (``+`` = the ``plus`` meaning).
Scales follow the official LLW generator: factor ``1 + 0.25·s/100`` when enlarging and
``1 + 0.20·s/100`` when shrinking (``gain``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import regions as R
from ..errors import UsageError
from ..face_frame import FaceFrame

MAX_STRENGTH = 100.0


@dataclass(frozen=True)
class Scale:
    """Scale each moving group about a centre, along the listed face axes.

    ``about``: landmark indices whose mean is the centre (``None``: each group's own mean).
    ``axes``: ``"uv"`` (uniform), ``"u"`` (across the face) or ``"v"`` (along it).
    ``gain``: relative size change at strength +100 and −100 (as positive numbers).
    """

    axes: str = "uv"
    about: tuple[int, ...] | None = None
    gain: tuple[float, float] = (0.25, 0.20)

    def move(self, groups: list[np.ndarray], about: np.ndarray | None, t: float) -> list[np.ndarray]:
        factor = 1.0 + (self.gain[0] if t > 0 else self.gain[1]) * t
        mask = np.array(["u" in self.axes, "v" in self.axes])
        out = []
        for g in groups:
            centre = g.mean(axis=0) if about is None else about.mean(axis=0)
            scaled = centre + (g - centre) * factor
            out.append(np.where(mask, scaled, g))
        return out


@dataclass(frozen=True)
class Shift:
    """Shift every moving group along a face axis by ``distance`` face units at strength +100.

    ``outward``: along ``u``, each group moves away from the face's midline (towards it for
    negative strengths), by the side it is on.
    """

    axis: str
    distance: float
    outward: bool = False

    def move(self, groups: list[np.ndarray], about: np.ndarray | None, t: float) -> list[np.ndarray]:
        k = 0 if self.axis == "u" else 1
        out = []
        for g in groups:
            sign = np.sign(g[:, 0].mean()) if self.outward else 1.0
            moved = g.copy()
            moved[:, k] += sign * self.distance * t
            out.append(moved)
        return out


@dataclass(frozen=True)
class Operation:
    """A named structural edit.

    Attributes:
        name: identifier used on the command line (``eye_resize``).
        region: the facial region it changes.
        plus / minus: what positive / negative strengths do.
        moving: groups of landmark indices moved together by ``rule``.
        rule: how the groups move.
        fixed: landmarks explicitly held in place (in addition to the anchor ring).
        ring: ``(inner, outer)`` face units: landmarks this far from the nearest moving point
            are anchors.
    """

    name: str
    region: str
    plus: str
    minus: str
    moving: tuple[tuple[int, ...], ...]
    rule: Scale | Shift
    fixed: tuple[int, ...] = ()
    ring: tuple[float, float] = (0.15, 0.35)

    def control_points(
        self, points: np.ndarray, frame: FaceFrame, strength: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Moving landmarks, their targets, and the anchor landmarks for one face.

        Args:
            points: ``(478, 2)`` landmarks ``(x, y)`` px.
            frame: the face's frame.
            strength: in [−100, 100].

        Returns:
            ``(moving_idx (K,), targets (K, 2) px, anchor_idx (A,))``.
        """
        t = float(strength) / MAX_STRENGTH
        local = frame.to_local(points)
        groups = [local[list(g)] for g in self.moving]
        about = None if self.rule_about is None else local[list(self.rule_about)]
        moved = self.rule.move(groups, about, t)
        moving_idx = np.concatenate([np.asarray(g, np.int64) for g in self.moving])
        targets = frame.to_image(np.concatenate(moved))
        return moving_idx, targets, self.anchors(local, moving_idx)

    @property
    def rule_about(self) -> tuple[int, ...] | None:
        return getattr(self.rule, "about", None)

    def anchors(self, local: np.ndarray, moving_idx: np.ndarray) -> np.ndarray:
        """Anchor indices: the ring around the moving points plus ``fixed``."""
        candidates = np.setdiff1d(np.asarray(R.MESH), moving_idx)
        dist = np.linalg.norm(
            local[candidates, None, :] - local[None, moving_idx, :], axis=-1
        ).min(axis=1)
        inner, outer = self.ring
        ring = candidates[(dist >= inner) & (dist <= outer)]
        fixed = np.setdiff1d(np.asarray(self.fixed, np.int64), moving_idx)
        return np.union1d(ring, fixed)


CATALOG: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "eye_resize", "eyes", "enlarge eyes", "shrink eyes",
            moving=(R.RIGHT_EYE, R.LEFT_EYE),
            rule=Scale("uv"),
        ),
        Operation(
            "eye_distance", "eyes", "increase eye distance", "decrease eye distance",
            moving=(R.RIGHT_EYE, R.LEFT_EYE),
            rule=Shift("u", 0.06, outward=True),
            fixed=R.NOSE_BRIDGE_MIDLINE,
        ),
        Operation(
            "nose_bridge", "nose", "widen nose bridge", "narrow nose bridge",
            moving=(R.RIGHT_BRIDGE_SIDE, R.LEFT_BRIDGE_SIDE),
            rule=Scale("u", about=R.NOSE_BRIDGE_MIDLINE, gain=(0.5, 0.4)),
            fixed=R.NOSE_BRIDGE_MIDLINE,
            ring=(0.12, 0.3),
        ),
        Operation(
            "nose_alar", "nose", "widen nasal alae", "narrow nasal alae",
            moving=(R.RIGHT_ALA, R.LEFT_ALA),
            rule=Scale("u", about=R.NOSE_MIDLINE),
            fixed=R.NOSE_TIP,
            ring=(0.12, 0.3),
        ),
        Operation(
            "nose_length", "nose", "lengthen nose", "shorten nose",
            moving=(R.NOSE_LOWER,),
            rule=Shift("v", 0.08),
            fixed=R.NOSE_BRIDGE_MIDLINE[:2],
            ring=(0.12, 0.3),
        ),
        Operation(
            "mouth_position", "mouth", "move mouth upward", "move mouth downward",
            moving=(R.LIPS,),
            rule=Shift("v", -0.08),
        ),
        Operation(
            "lip_thickness", "mouth", "plump lips", "thin lips",
            moving=(R.LIPS_UPPER_OUTER, R.LIPS_LOWER_OUTER),
            rule=Scale("v", about=R.MOUTH_CORNERS + R.LIPS_INNER, gain=(0.5, 0.4)),
            fixed=R.LIPS_INNER + R.MOUTH_CORNERS,
            ring=(0.15, 0.3),
        ),
        Operation(
            "mouth_resize", "mouth", "enlarge mouth", "shrink mouth",
            moving=(R.LIPS,),
            rule=Scale("uv"),
        ),
    )
}


def get_operation(name: str) -> Operation:
    """The catalog entry called ``name``; a UsageError listing the valid names otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UsageError(
            f"unknown operation {name!r}; choose from: {', '.join(CATALOG)} "
            "(see `mirrorppr ops`)"
        ) from None
