"""The operation catalog: one declarative entry per named operation.

An operation moves groups of landmarks by a *rule* (scale about a centre, or shift along a
face axis), measured in the face's own frame (:mod:`mirrorppr_cli.geometric.face_frame`), so the same
strength means the same relative change on any face. Landmarks in a ring around the moving
points are anchors: they stay where they are, so the warp stays local.

Strength ``s`` is in [−100, 100]; its sign is the direction (``+`` = the ``plus`` meaning).
Scales follow the official LLW generator: factor ``1 + 0.25·s/100`` when enlarging and
``1 + 0.20·s/100`` when shrinking (``gain``).

The first eight entries (:data:`SIMULATED_OPS`) are the official generator's operations, which
the simulated training subset samples; the others complete the paper's professional catalog
(face shape, brows, eyes, nose and mouth). Their gains are chosen so that strength 100 is a
strong but plausible retouch, moving features by 3–8 % of the inter-ocular distance like the
first eight; each entry states its own. Contour operations (face shape, jaw, chin, temples)
also hold a *halo* of fixed points just outside the face oval, so the background next to the
moved contour follows it and the warp fades out within the halo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..geometric import regions as R
from ..geometric.face_frame import FaceFrame
from .request import MAX_STRENGTH


@dataclass(frozen=True)
class Scale:
    """Scale each moving group about a centre, along the listed face axes.

    ``about``: landmark indices whose mean is the centre (``None``: each group's own mean).
    ``axes``: ``"uv"`` (uniform), ``"u"`` (across the face) or ``"v"`` (along it).
    ``gain``: relative size change at strength +100 and −100 (as positive numbers).

    ``ramp``: ``(v0, v1)`` face units: each point moves by a share of its scaled move that
    rises linearly from 0 at ``v ≤ v0`` to 1 at ``v ≥ v1`` (its ``v`` in the face frame:
    0 at the eyes, ≈ 1.7 at the chin); ``None``: every point moves fully.
    """

    axes: str = "uv"
    about: tuple[int, ...] | None = None
    gain: tuple[float, float] = (0.25, 0.20)
    ramp: tuple[float, float] | None = None

    def move(self, groups: list[np.ndarray], about: np.ndarray | None, t: float) -> list[np.ndarray]:
        factor = 1.0 + (self.gain[0] if t > 0 else self.gain[1]) * t
        mask = np.array(["u" in self.axes, "v" in self.axes])
        out = []
        for g in groups:
            centre = g.mean(axis=0) if about is None else about.mean(axis=0)
            scaled = centre + (g - centre) * factor
            moved = np.where(mask, scaled, g)
            if self.ramp is not None:
                v0, v1 = self.ramp
                share = np.clip((g[:, 1] - v0) / (v1 - v0), 0.0, 1.0)[:, None]
                moved = g + share * (moved - g)
            out.append(moved)
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
        halo: face units; ``> 0``: fixed points this far outside the face oval, beside each
            moving oval landmark and its two oval neighbours (contour operations: the
            background next to the contour moves with it, and stops within the halo).
        hull: the region the warp shows in (feathered): ``"op"``, the convex hull of all the
            moving points and anchors; ``"point"``, the union of one hull per moving point over
            its anchors within ``ring[1]``, its chain neighbours and its halo points (stays
            local for two-sided and curved groups: nothing farther from a moving point than
            ``ring[1]``, or ``halo`` + the oval's landmark spacing, plus the feather).
        chains: ordered runs of moving landmarks along a contour. The warp gets extra handles
            between consecutive ones (see :data:`~mirrorppr_cli.ops.compose.CHAIN_SPACING`),
            displaced by linear interpolation, so the contour moves as a smooth curve instead
            of bulging at each landmark and lagging between them.
    """

    name: str
    region: str
    plus: str
    minus: str
    moving: tuple[tuple[int, ...], ...]
    rule: Scale | Shift
    fixed: tuple[int, ...] = ()
    ring: tuple[float, float] = (0.15, 0.35)
    halo: float = 0.0
    hull: str = "op"
    chains: tuple[tuple[int, ...], ...] = ()

    def moving_indices(self) -> np.ndarray:
        """Indices of every moving landmark, group by group, ``(K,)``."""
        return np.concatenate([np.asarray(g, np.int64) for g in self.moving])

    def targets(self, points: np.ndarray, frame: FaceFrame, strength: float,
                local: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(moving_idx (K,), targets (K, 2) px)``: where ``strength`` (in [−100, 100]) moves
        the moving landmarks of the face ``points`` (``(478, 2)`` ``(x, y)`` px); the anchors
        are :meth:`anchors`. ``local``: ``frame.to_local(points)``, when the caller has it."""
        t = float(strength) / MAX_STRENGTH
        local = frame.to_local(points) if local is None else local
        groups = [local[list(g)] for g in self.moving]
        about = None if self.rule_about is None else local[list(self.rule_about)]
        moved = self.rule.move(groups, about, t)
        return self.moving_indices(), frame.to_image(np.concatenate(moved))

    @property
    def rule_about(self) -> tuple[int, ...] | None:
        return getattr(self.rule, "about", None)

    def anchors(self, local: np.ndarray, moving_idx: np.ndarray,
                distances: np.ndarray | None = None) -> np.ndarray:
        """Anchor indices: the ring around the moving points plus ``fixed``.

        ``distances``: :func:`pairwise_distances` of ``local``, when the caller has it.
        """
        is_moving = np.zeros(len(local), bool)
        is_moving[moving_idx] = True
        candidates = _MESH[~is_moving[_MESH]]  # sorted, as MESH is
        if distances is None:
            distances = pairwise_distances(local)
        dist = distances[moving_idx].min(axis=0)[candidates]  # symmetric: rows are columns
        inner, outer = self.ring
        chosen = np.zeros(len(local), bool)
        chosen[np.asarray(self.fixed, np.int64)] = True
        chosen[moving_idx] = False
        chosen[candidates[(dist >= inner) & (dist <= outer)]] = True
        return np.flatnonzero(chosen)

    def halo_points(self, points: np.ndarray, frame: FaceFrame) -> np.ndarray:
        """The halo's fixed points ``(H, 2)`` px (none when ``halo`` is 0)."""
        if self.halo <= 0:
            return np.empty((0, 2))
        return frame.to_image(_halo(frame.to_local(points), self.moving_indices(), self.halo))

    def polygons(self, points: np.ndarray, frame: FaceFrame, moving_idx: np.ndarray,
                 anchor_idx: np.ndarray, distances: np.ndarray | None = None) -> list[np.ndarray]:
        """The polygons ``(K, 2)`` px whose convex hulls, feathered, bound the warp (``hull``)."""
        if self.hull == "op":
            parts = [points[np.concatenate([moving_idx, anchor_idx])]]
            if self.halo > 0:
                parts.append(self.halo_points(points, frame))
            return [np.concatenate(parts)]
        local = frame.to_local(points)
        if distances is None:
            distances = pairwise_distances(local)
        near = distances[np.ix_(anchor_idx, moving_idx)]
        halo = frame.to_image(_oval_halo(local, self.halo)) if self.halo > 0 else None
        neighbours: dict[int, set[int]] = {}
        for chain in self.chains:
            for a, b in zip(chain[:-1], chain[1:], strict=True):
                neighbours.setdefault(a, set()).add(b)
                neighbours.setdefault(b, set()).add(a)
        oval = {m: k for k, m in enumerate(R.FACE_OVAL_RING)} if halo is not None else {}
        out = []
        for k, m in enumerate(moving_idx.tolist()):
            poly = [points[[m, *sorted(neighbours.get(m, ()))]],
                    points[anchor_idx[near[:, k] <= self.ring[1]]]]
            if m in oval:  # the halo beside it and its two oval neighbours (_halo_positions)
                at = oval[m]
                poly.append(halo[sorted({(at - 1) % len(oval), at, (at + 1) % len(oval)})])
            out.append(np.concatenate(poly).astype(np.float64))
        return out


_MESH = np.asarray(R.MESH)


def _halo(local: np.ndarray, moving: np.ndarray, distance: float) -> np.ndarray:
    """Points ``distance`` face units outside the face oval, local ``(H, 2)``: one beside each
    oval landmark among ``moving`` and beside each of their neighbours along the oval."""
    positions = _halo_positions(moving)
    if len(positions) == 0:
        return np.empty((0, 2))
    return _oval_halo(local, distance)[positions]


def _halo_positions(moving: np.ndarray) -> np.ndarray:
    """Sorted oval positions (indices into ``FACE_OVAL_RING``) of ``moving``'s oval landmarks
    and of their neighbours along the oval."""
    ring = np.asarray(R.FACE_OVAL_RING)
    on_oval = np.flatnonzero(np.isin(ring, moving))
    return np.unique(np.concatenate([on_oval - 1, on_oval, on_oval + 1]) % len(ring))


def _oval_halo(local: np.ndarray, distance: float) -> np.ndarray:
    """The halo point beside every oval landmark, in ``FACE_OVAL_RING`` order, ``(n, 2)``:
    ``distance`` along the outward normal of the chord between its two neighbours."""
    ring = np.asarray(R.FACE_OVAL_RING)
    at = local[ring]
    tangent = np.roll(at, -1, axis=0) - np.roll(at, 1, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(tangent, axis=1), 1e-9)[:, None]
    inward = np.sum(normal * (at - at.mean(axis=0)), axis=1) < 0
    normal[inward] *= -1
    return at + distance * normal


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` Euclidean distances between the points ``a`` ``(N, 2)`` and ``b``
    ``(M, 2)``, in float64.

    SciPy's ``cdist`` gives the same numbers (``sqrt(dx² + dy²)``, summed in that order; tested)
    but importing ``scipy.spatial`` costs every process ~0.4 s of CPU and ~22 MB, which a
    retouch that needs no fit (``apply``, a saved edit, a batch worker) need not pay."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    return np.sqrt(dx * dx + dy * dy)


def pairwise_distances(local: np.ndarray) -> np.ndarray:
    """``(N, N)`` distances between the landmarks ``local`` ``(N, 2)`` (face units)."""
    return distances(local, local)


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
        # ---- the rest of the paper's catalog. Displacements quoted at strength 100, in face
        # units (inter-ocular distances; 0.05 ≈ 4 px on a face 87 px between the eyes).
        # Face shape: the silhouette below mouth level scaled across the face about the
        # midline, ×1.15 / ×0.85, with a share rising from 0 at v = 0.5 to 1 at v = 1.5: the
        # lower jaw moves most (≈ 0.09 beside the chin), the cheeks hardly.
        Operation(
            "face_shape", "face shape", "round the face", "sharpen the face (V shape)",
            moving=(R.LOWER_FACE_CONTOUR,),
            rule=Scale("u", about=R.FACE_MIDLINE, gain=(0.15, 0.15), ramp=(0.5, 1.5)),
            ring=(0.3, 0.5), halo=0.3, hull="point", chains=(R.LOWER_FACE_CONTOUR,),
        ),
        # Jaw angle: the gonial region of the silhouette shifted outward (square) or inward
        # (sharpen), 0.05 across the face.
        Operation(
            "jawline", "face shape", "square the jawline", "sharpen the jawline",
            moving=(R.RIGHT_JAW_ANGLE, R.LEFT_JAW_ANGLE),
            rule=Shift("u", 0.05, outward=True),
            ring=(0.25, 0.45), halo=0.3, hull="point",
            chains=(R.RIGHT_JAW_ANGLE, R.LEFT_JAW_ANGLE),
        ),
        # Chin: its lowest silhouette points and the mesh above them moved 0.06 down (longer)
        # or up (shorter); the lower lip and the jaw stay.
        Operation(
            "chin_length", "face shape", "lengthen the chin", "shorten the chin",
            moving=(R.CHIN_REGION,),
            rule=Shift("v", 0.06),
            ring=(0.25, 0.45), halo=0.3, hull="point", chains=(R.CHIN_REGION[:5],),
        ),
        # Temples: the silhouette beside the forehead moved 0.05 outward (fill) or inward.
        Operation(
            "temples", "face shape", "fill the temples", "depress the temples",
            moving=(R.RIGHT_TEMPLE, R.LEFT_TEMPLE),
            rule=Shift("u", 0.05, outward=True),
            halo=0.3, hull="point", chains=(R.RIGHT_TEMPLE, R.LEFT_TEMPLE),
        ),
        # Brows: each brow moved 0.05 away from the midline (or towards it) …
        Operation(
            "eyebrow_distance", "eyebrows", "increase eyebrow distance",
            "decrease eyebrow distance",
            moving=(R.RIGHT_BROW, R.LEFT_BROW),
            rule=Shift("u", 0.05, outward=True),
            fixed=R.GLABELLA, hull="point", chains=R.BROW_CONTOURS,
        ),
        # … or 0.06 up (or down); the eyes and the forehead stay.
        Operation(
            "eyebrow_height", "eyebrows", "raise eyebrows", "lower eyebrows",
            moving=(R.RIGHT_BROW, R.LEFT_BROW),
            rule=Shift("v", -0.06),
            hull="point", chains=R.BROW_CONTOURS,
        ),
        # Brow thickness: each upper/lower contour pair scaled along v about its own midpoint,
        # ×1.6 / ×0.5 (a brow ≈ 0.07 thick gains or loses ≈ 0.02 on each edge).
        Operation(
            "eyebrow_thickness", "eyebrows", "thicken eyebrows", "thin eyebrows",
            moving=R.BROW_PAIRS,
            rule=Scale("v", gain=(0.6, 0.5)),
            hull="point", chains=R.BROW_CONTOURS,
        ),
        # Eye opening: each eye contour scaled along v about its centre, ×1.3 / ×0.75.
        Operation(
            "eye_height", "eyes", "open the eyes (taller)", "narrow the eye opening",
            moving=(R.RIGHT_EYE_CONTOUR, R.LEFT_EYE_CONTOUR),
            rule=Scale("v", gain=(0.3, 0.25)),
            hull="point",
        ),
        # Eye width: each eye contour scaled across the face about its centre, ×1.2 / ×0.85.
        Operation(
            "eye_width", "eyes", "widen the eyes", "narrow the eyes",
            moving=(R.RIGHT_EYE_CONTOUR, R.LEFT_EYE_CONTOUR),
            rule=Scale("u", gain=(0.2, 0.15)),
            hull="point",
        ),
        # Eye position: both eyes (with the irises) moved 0.05 up or down; brows stay.
        Operation(
            "eye_position", "eyes", "move eyes up", "move eyes down",
            moving=(R.RIGHT_EYE, R.LEFT_EYE),
            rule=Shift("v", -0.05),
            hull="point",
        ),
        # Nose size: the nose below its root scaled about the mid-bridge (195), ×1.2 / ×0.85:
        # the tip moves ≈ 0.07 along the face, each ala ≈ 0.06 across it.
        Operation(
            "nose_resize", "nose", "enlarge nose", "shrink nose",
            moving=(R.NOSE_WHOLE,),
            rule=Scale("uv", about=(195,), gain=(0.2, 0.15)),
            fixed=(168, 6, 197),
            ring=(0.12, 0.3), hull="point",
        ),
        # Nose tip: the lobule scaled about its centre, ×1.4 / ×0.7.
        Operation(
            "nose_tip", "nose", "enlarge the nose tip", "refine (shrink) the nose tip",
            moving=(R.NOSE_TIP_REGION,),
            rule=Scale("uv", gain=(0.4, 0.3)),
            ring=(0.12, 0.3), hull="point",
        ),
        # Mouth corners: the corner and its nearest lip points moved 0.05 up (raise) or down.
        Operation(
            "mouth_corners", "mouth", "raise mouth corners", "lower mouth corners",
            moving=(R.RIGHT_MOUTH_CORNER, R.LEFT_MOUTH_CORNER),
            rule=Shift("v", -0.05),
            ring=(0.15, 0.3), hull="point",
        ),
        # Mouth width: the lips scaled across the face about their centre, ×1.2 / ×0.85.
        Operation(
            "mouth_width", "mouth", "widen mouth", "narrow mouth",
            moving=(R.LIPS,),
            rule=Scale("u", gain=(0.2, 0.15)),
            hull="point",
        ),
    )
}

#: The official LLW generator's eight operations, in catalog order: what the simulated
#: training subset (``build-dataset --subset simulated``) samples.
SIMULATED_OPS: tuple[str, ...] = (
    "eye_resize", "eye_distance", "nose_bridge", "nose_alar", "nose_length", "mouth_position",
    "lip_thickness", "mouth_resize",
)


def get_operation(name: str) -> Operation:
    """The catalog entry called ``name``; a UsageError listing the valid names otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UsageError(
            f"unknown operation {name!r}; choose from: {', '.join(CATALOG)} "
            "(see `mirrorppr ops`)"
        ) from None
