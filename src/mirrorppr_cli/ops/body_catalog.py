"""Body operations: one declarative entry per named edit (what moves, by how much).

Every operation moves points of the person's outline (:attr:`mirrorppr_cli.geometric.body.Body.contour`,
sampled every 0.02 body units) along their outward normal or along a body-frame axis, by a
*profile* that is 0 at the ends of the body part and 1 in its middle, so the moved stretch of
outline blends into the still part. Body units are shoulder distances (see
:class:`mirrorppr_cli.geometric.body.BodyFrame`); strength ``s`` in [−100, 100] scales the move linearly
(``t = s/100``), its sign is the direction (``+`` = the ``plus`` meaning), and ``gain`` is the
amount at ``|s| = 100`` for (+, −).

Control points of the similarity-MLS warp (:func:`mirrorppr_cli.geometric.mls.mls_similarity`, α = 1,
evaluated on the fast path's coarse grid):

* moving: the outline samples with a non-zero profile (the inside of the body follows them
  through the MLS interpolation);
* fixed: the rest of the outline within :data:`RING` body units of a moving sample, points on the
  part's skeleton (limb axis, torso midline, neck) so the bones stay put while the flesh around
  them widens or narrows, and a ring of points just outside the confinement band (below).

Planning them into one confined warp: :mod:`mirrorppr_cli.ops.body_plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, UsageError
from ..geometric import body as B
from ..geometric.body import Body
from .request import MAX_STRENGTH

#: Outline samples that do not move but lie within this many body units of a moving one are
#: fixed control points.
RING = 0.4
#: Outline moves are smoothed along the outline by a Gaussian of this σ (body units), so that
#: their directions turn gently at the outline's corners (elbows, hems).
SMOOTH_UNITS = 0.04
#: Outline moves fade to 0 near where the outline meets the image's edge (the person is cut
#: there): none within BORDER_FADE[0] body units of such points, full beyond BORDER_FADE[1]
#: body units or BORDER_FADE_PER_SHIFT × the largest move, whichever is farther.
BORDER_FADE = (0.02, 0.1)
BORDER_FADE_PER_SHIFT = 4.0


class BodyPartNotVisible(InputError):
    """The body part an operation edits is not visible in the image."""


def smoothstep(x: np.ndarray | float, a: float, b: float) -> np.ndarray:
    """0 below ``a``, 1 above ``b``, ``3s² − 2s³`` between (C¹)."""
    s = np.clip((np.asarray(x, np.float64) - a) / (b - a), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


@dataclass
class _Moves:
    """What one rule produces on one body: in body units from a rule's ``move`` (before
    :func:`_to_image`), in image pixels after.

    ``contour_shift``: ``(K, 2)`` displacement of every outline sample (0 = not moved);
    ``skeleton``: ``(S, 2)`` fixed interior points.
    """

    contour_shift: np.ndarray
    skeleton: list[np.ndarray] = field(default_factory=list)


def _shoulders(body: Body) -> list[float]:
    """The side of each seen shoulder: −1 = the image's left, +1 = its right."""
    local = body.frame.to_local(body.points[[B.LEFT_SHOULDER, B.RIGHT_SHOULDER]])
    return [
        float(np.sign(local[k, 0]))
        for k, j in enumerate((B.LEFT_SHOULDER, B.RIGHT_SHOULDER))
        if body.seen(j)
    ]


def _local_contour(body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Outline samples and their outward normals in the body frame (units; unit normals)."""
    frame = body.frame
    pts = frame.to_local(body.contour.points)
    nrm = np.stack([body.contour.normals @ frame.u, body.contour.normals @ frame.v], axis=-1)
    return pts, nrm


@dataclass(frozen=True)
class ShoulderLift:
    """Raise (+) or lower (−) each shoulder's cap: the top of the shoulder from the neck out
    to the tip, and the outer side of the shoulder down to mid upper arm.

    The lift grows from 0 at ``|u| = neck`` to full at ``|u| = tip`` (body units), and on the
    outer side fades from full at ``v = 0`` to 0 at ``v = fade``. Fixed: the neck base, the
    chest and the upper arm below the fade.
    """

    neck: float = 0.18
    tip: float = 0.42
    fade: float = 0.45

    def move(self, body: Body, amount: float) -> _Moves:
        pts, nrm = _local_contour(body)
        shift = np.zeros_like(pts)
        moves = _Moves(shift)
        for side in _shoulders(body):
            su, v = side * pts[:, 0], pts[:, 1]
            band = (v > -0.5) & (v < 0.55) & ~body.contour.on_border
            up = nrm[:, 1] < -0.3
            outer = (side * nrm[:, 0] > 0.5) & (su > 0.4)
            w = smoothstep(su, self.neck, self.tip) * (1.0 - smoothstep(v, 0.0, self.fade))
            w = np.where(band & (up | outer) & (su > 0.1), w, 0.0)
            shift[:, 1] -= amount * w
            moves.skeleton += [np.array([side * 0.15, 0.4]), np.array([side * 0.55, 0.85])]
        moves.skeleton.append(np.array([0.0, -0.12]))
        return _to_image(body, moves)


@dataclass(frozen=True)
class ShoulderShift:
    """Move each shoulder's cap sideways, outward (+) or inward (−), along the shoulder line.

    The shift grows from 0 at ``|u| = inner`` to full at ``|u| = outer`` and fades downwards from
    ``v = fade[0]`` to 0 at ``v = fade[1]``. Fixed: the neck, the sternum and the arm below
    the fade.
    """

    inner: float = 0.3
    outer: float = 0.45
    fade: tuple[float, float] = (0.25, 0.65)

    def move(self, body: Body, amount: float) -> _Moves:
        pts, nrm = _local_contour(body)
        shift = np.zeros_like(pts)
        moves = _Moves(shift)
        for side in _shoulders(body):
            su, v = side * pts[:, 0], pts[:, 1]
            band = (v > -0.45) & (v < self.fade[1]) & ~body.contour.on_border
            w = smoothstep(su, self.inner, self.outer) * (1.0 - smoothstep(v, *self.fade))
            shift[:, 0] += side * amount * np.where(band, w, 0.0)
            moves.skeleton += [np.array([side * 0.12, 0.45]), np.array([side * 0.5, 1.0])]
        moves.skeleton += [np.array([0.0, -0.15]), np.array([0.0, 0.4])]
        return _to_image(body, moves)


ARMS = (
    (B.RIGHT_SHOULDER, B.RIGHT_ELBOW, B.RIGHT_WRIST),
    (B.LEFT_SHOULDER, B.LEFT_ELBOW, B.LEFT_WRIST),
)
LEGS = ((B.RIGHT_HIP, B.RIGHT_KNEE, B.RIGHT_ANKLE), (B.LEFT_HIP, B.LEFT_KNEE, B.LEFT_ANKLE))


def _seen_chain(body: Body, chain: tuple[int, ...]) -> list[int]:
    """The leading joints of ``chain`` that are all seen (empty when fewer than two)."""
    seen = []
    for j in chain:
        if not body.seen(j):
            break
        seen.append(j)
    return seen if len(seen) >= 2 else []


def _chain_geometry(pts: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, ...]:
    """For points ``(K, 2)`` and a polyline ``(J, 2)``: distance to it, arc parameter σ
    (segment index + fraction), the unit radial direction (from the nearest axis point to the
    point) and the unit direction of the nearest segment."""
    best = np.full(len(pts), np.inf)
    sigma = np.zeros(len(pts))
    radial = np.zeros_like(pts)
    axis = np.zeros_like(pts)
    for k in range(len(joints) - 1):
        a, b = joints[k], joints[k + 1]
        ab = b - a
        length2 = float(ab @ ab)
        if length2 <= 0:
            continue
        f = np.clip((pts - a) @ ab / length2, 0.0, 1.0)
        foot = a + f[:, None] * ab
        rel = pts - foot
        dist = np.linalg.norm(rel, axis=1)
        closer = dist < best
        best = np.where(closer, dist, best)
        sigma = np.where(closer, k + f, sigma)
        radial[closer] = rel[closer] / np.maximum(dist[closer, None], 1e-12)
        axis[closer] = ab / math.sqrt(length2)
    return best, sigma, radial, axis


def _chains(body: Body, chains) -> list[np.ndarray]:
    return [
        body.frame.to_local(body.points[c]) for c in (_seen_chain(body, ch) for ch in chains) if c
    ]


@dataclass(frozen=True)
class LimbWidth:
    """Widen (``outward=+1``) or narrow each limb along its bones (shoulder→elbow→wrist,
    hip→knee→ankle): outline samples within ``reach`` body units of the bone polyline, facing
    away from it, move along their normal by ``amount × their distance to the bone`` (a
    fraction of the local half-width). The profile along the bone (σ: 0 at the first joint, 1 at
    the second, …) rises over ``[start, start + ramp]`` and falls to 0 at ``end_gap`` before
    the last seen joint. Fixed: points on the bones.

    ``chains``: the limbs, each a tuple of pose landmark indices; a limb is used from its
    first joint as far as its joints are seen (at least two).
    """

    chains: tuple[tuple[int, ...], ...]
    reach: float
    outward: float = 1.0
    start: float = 0.15
    ramp: float = 0.25
    end_gap: float = 0.1

    def move(self, body: Body, amount: float) -> _Moves:
        pts, nrm = _local_contour(body)
        shift = np.zeros_like(pts)
        moves = _Moves(shift)
        limbs = _chains(body, self.chains)
        if not limbs:
            return _to_image(body, moves)
        geo = [_chain_geometry(pts, joints) for joints in limbs]
        nearest = np.argmin(np.stack([g[0] for g in geo]), axis=0)
        for k, joints in enumerate(limbs):
            dist, sigma, radial, _ = geo[k]
            end = len(joints) - 1 - self.end_gap
            profile = smoothstep(sigma, self.start, self.start + self.ramp)
            profile *= 1.0 - smoothstep(sigma, end - self.ramp, end)
            facing = np.sum(nrm * radial, axis=1) >= 0.6
            ok = (nearest == k) & (dist <= self.reach) & facing & ~body.contour.on_border
            mag = self.outward * amount * np.minimum(dist, self.reach) * profile
            shift += np.where(ok, mag, 0.0)[:, None] * nrm
            moves.skeleton += list(_sample_polyline(joints, 0.05))
        return _to_image(body, moves)


@dataclass(frozen=True)
class WaistWidth:
    """Narrow (+, with ``outward=−1``) or widen the waist: outline samples on the torso's
    sides between ``window[0]`` and ``window[3]`` of the way from the shoulder line to the hip
    line (full effect between ``window[1]`` and ``window[2]``) move along their normal by
    ``amount × their distance to the torso midline``. Samples on the arms (within ``arm_reach``
    of an arm bone and facing away from it) are left alone. Fixed: the torso midline and the
    hip landmarks.
    """

    window: tuple[float, float, float, float] = (0.42, 0.6, 0.8, 0.98)
    outward: float = -1.0
    arm_reach: float = 0.3

    def move(self, body: Body, amount: float) -> _Moves:
        pts, nrm = _local_contour(body)
        shift = np.zeros_like(pts)
        moves = _Moves(shift)
        if not (body.seen(B.LEFT_HIP) and body.seen(B.RIGHT_HIP)):
            return _to_image(body, moves)
        hips = body.frame.to_local(body.points[[B.LEFT_HIP, B.RIGHT_HIP]])
        mid = hips.mean(axis=0)
        torso = float(np.hypot(*mid))
        if torso <= 0:
            return _to_image(body, moves)
        down = mid / torso
        across = np.array([down[1], -down[0]])
        if across[0] < 0:
            across = -across
        h = pts @ down / torso
        lateral = pts @ across
        outward_side = np.sign(lateral) * (nrm @ across) >= 0.6
        on_arm = np.zeros(len(pts), bool)
        for joints in _chains(body, ARMS):
            dist, _, radial, _ = _chain_geometry(pts, joints)
            on_arm |= (dist <= self.arm_reach) & (np.sum(nrm * radial, axis=1) >= 0.3)
        a, b, c, d = self.window
        profile = smoothstep(h, a, b) * (1.0 - smoothstep(h, c, d))
        ok = outward_side & ~on_arm & ~body.contour.on_border & (np.abs(lateral) <= 1.0)
        mag = self.outward * amount * np.abs(lateral) * profile
        shift += np.where(ok, mag, 0.0)[:, None] * nrm
        moves.skeleton += [h_ * mid for h_ in np.arange(0.2, 1.15, 0.1)]
        moves.skeleton += list(hips)
        return _to_image(body, moves)


def _sample_polyline(joints: np.ndarray, spacing: float) -> np.ndarray:
    out = [joints[0]]
    for a, b in zip(joints[:-1], joints[1:], strict=True):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing)))
        out += [a + (b - a) * (i / n) for i in range(1, n + 1)]
    return np.asarray(out)


def _to_image(body: Body, moves: _Moves) -> _Moves:
    """``moves`` from body-frame units (shifts, skeleton) to image pixels."""
    frame = body.frame
    return _Moves(
        contour_shift=frame.vectors_to_image(moves.contour_shift),
        skeleton=[frame.to_image(p) for p in moves.skeleton],
    )


@dataclass(frozen=True)
class Controls:
    """One operation's control points on one body (image pixels).

    ``keys``: the outline sample index of each moving point; ``source``/``shift``: ``(K, 2)``;
    ``anchors``: ``(A, 2)`` fixed points.
    """

    keys: list[int]
    source: np.ndarray
    shift: np.ndarray
    anchors: np.ndarray


@dataclass(frozen=True)
class BodyOperation:
    """A named body edit.

    Attributes:
        name: identifier on the command line (``waist_slim``).
        region: the body part it changes.
        plus / minus: what positive / negative strengths do.
        rule: how the outline moves (:class:`ShoulderLift`, :class:`ShoulderShift`,
            :class:`LimbWidth`, :class:`WaistWidth`).
        gain: ``(at +100, at −100)`` as positive numbers: body units for the shoulder rules,
            a fraction of the local half-width for the width rules.
        needs: what must be visible, for error messages.
    """

    name: str
    region: str
    plus: str
    minus: str
    rule: ShoulderLift | ShoulderShift | LimbWidth | WaistWidth
    gain: tuple[float, float]
    needs: str

    def controls(self, body: Body, strength: float) -> Controls:
        """Moving outline samples (and landmarks) with their shifts, and the fixed points.

        Raises:
            BodyPartNotVisible: nothing of the part is on the person's outline.
        """
        t = float(strength) / MAX_STRENGTH
        amount = t * (self.gain[0] if t > 0 else self.gain[1])
        moves = self.rule.move(body, amount)
        contour = body.contour.points
        moves.contour_shift = _settled(body, moves.contour_shift)
        size = np.linalg.norm(moves.contour_shift, axis=1)
        moving = np.flatnonzero(size > 1e-9)
        if len(moving) == 0:
            raise BodyPartNotVisible(
                f"{self.name}: no {self.region} outline to edit in this image (needs {self.needs})"
            )
        keys = moving.tolist()
        source = contour[moving]
        shift = moves.contour_shift[moving]
        still = np.flatnonzero(size <= 1e-9)
        ring = RING * body.frame.unit
        near = min_distance(contour[still], source) <= ring
        skeleton = np.asarray(moves.skeleton).reshape(-1, 2)
        anchors = np.concatenate([contour[still[near]], skeleton])
        return Controls(keys=keys, source=source, shift=shift, anchors=anchors)


def _settled(body: Body, shift: np.ndarray) -> np.ndarray:
    """Outline moves smoothed along the outline (:data:`SMOOTH_UNITS`) and faded near the
    image's edge (:data:`BORDER_FADE`)."""
    contour = body.contour
    unit = body.frame.unit
    spacing = max(2.0, B.CONTOUR_SPACING * unit)
    sigma = SMOOTH_UNITS * unit / spacing
    out = shift.copy()
    if sigma >= 0.5:
        radius = int(np.ceil(2.5 * sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        for a, b in contour.segments:
            padded = np.pad(shift[a:b], ((radius, radius), (0, 0)), mode="wrap")
            for c in range(2):
                out[a:b, c] = np.convolve(padded[:, c], taps, mode="valid")
    out[np.abs(out) < 1e-9] = 0.0
    if contour.on_border.any() and out.any():
        near = min_distance(contour.points, contour.points[contour.on_border])
        largest = float(np.linalg.norm(out, axis=1).max())
        inner = BORDER_FADE[0] * unit
        outer = inner + max(BORDER_FADE[1] * unit, BORDER_FADE_PER_SHIFT * largest)
        out *= smoothstep(near, inner, outer)[:, None]
    return out


def min_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distance from each of ``points`` to the nearest of ``others`` (inf if none)."""
    if len(others) == 0 or len(points) == 0:
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    step = max(1, 2_000_000 // len(others))
    for i in range(0, len(points), step):
        d = points[i : i + step, None, :] - others[None, :, :]
        out[i : i + step] = np.sqrt((d**2).sum(-1).min(axis=1))
    return out


BODY_CATALOG: dict[str, BodyOperation] = {
    op.name: op
    for op in (
        BodyOperation(
            "shoulder_square",
            "shoulders",
            "squarer shoulders (raise the tips)",
            "more sloped shoulders (lower the tips)",
            rule=ShoulderLift(),
            gain=(0.06, 0.06),
            needs="a shoulder and its outline against the background",
        ),
        BodyOperation(
            "shoulder_width",
            "shoulders",
            "broaden shoulders",
            "narrow shoulders",
            rule=ShoulderShift(),
            gain=(0.05, 0.05),
            needs="a shoulder and its outline against the background",
        ),
        BodyOperation(
            "arm_thickness",
            "arms",
            "thicken arms",
            "slim arms",
            rule=LimbWidth(ARMS, reach=0.3, outward=1.0),
            gain=(0.2, 0.2),
            needs="shoulder and elbow landmarks and the arm's edge against the background",
        ),
        BodyOperation(
            "leg_slim",
            "legs",
            "slim legs",
            "widen legs",
            rule=LimbWidth(LEGS, reach=0.4, outward=-1.0, start=0.1),
            gain=(0.15, 0.15),
            needs="hip and knee landmarks and the leg's edge against the background",
        ),
        BodyOperation(
            "waist_slim",
            "waist",
            "slim waist",
            "widen waist",
            rule=WaistWidth(),
            gain=(0.12, 0.12),
            needs="both hips and the torso's sides against the background, clear of the arms",
        ),
    )
}


def get_body_operation(name: str) -> BodyOperation:
    """The body catalog entry called ``name``; a UsageError listing the valid names otherwise."""
    try:
        return BODY_CATALOG[name]
    except KeyError:
        raise UsageError(
            f"unknown body operation {name!r}; choose from: {', '.join(BODY_CATALOG)}"
        ) from None


def is_body_operation(name: str) -> bool:
    return name in BODY_CATALOG
