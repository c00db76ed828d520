"""Explain a measured edit in catalog terms: which named operations, at which strengths.

Each catalog operation, at strength ±``BASIS_STRENGTH``, gives a displacement field on the
exemplar (the inverse map of its warp minus the identity, feathered as applied). The measured
edit (backward optical flow, :class:`~mirrorppr_cli.geometric.motion.Edit`) is sampled on a grid over
the region the edit and the operations cover — at a resolution set by the face, not the file
(:data:`FIT_UNIT_PX`) — and fitted in three steps:

1. *Selection*: forward selection picks the operations, one at a time, each the one whose
   addition to a non-negative least-squares fit (scipy's NNLS) of the chosen fields lowers the
   residual most, while that is worth it (:data:`MIN_GAIN`, :data:`LOCAL_GAIN`). The catalog
   holds near-sums (eye_resize ≈ eye_height + eye_width, mouth_resize ≈ mouth_width + a
   vertical scale, nose_resize ≈ nose_alar + nose_length + …) that a fit of every field at
   once splits an edit among; selection names the one operation that explains it.
2. *Linear fit*: NNLS over the chosen fields; a strength is ``BASIS_STRENGTH·(c₊ − c₋)``.
3. *Refinement*: Gauss–Newton steps on the strengths against the field of the composed warp
   itself (:data:`REFINE`).

How much of the measured motion (squared) the fitted operations explain is reported.

Body operations (:data:`~mirrorppr_cli.ops.body_catalog.BODY_CATALOG`) are fitted the same way
(:func:`explain_body`) to the body motion measured outside the face
(:func:`~mirrorppr_cli.geometric.motion.estimate_body_motion`): each operation's field is that of
:func:`~mirrorppr_cli.ops.body_plan.plan_body_warp` on the exemplar's own body at
±``BASIS_STRENGTH`` — the warp's sampling map minus the identity, i.e. the same backward
convention as the measured flow (``after(x) = before(x + d(x))``, ``(x, y)`` px) and as the
face fields; operations whose part is not visible in the exemplar are left out. The face fit
is unchanged by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..ops import CATALOG, OpRequest, plan_warp
from ..ops.body_catalog import BODY_CATALOG, BodyPartNotVisible
from ..ops.body_plan import plan_body_warp
from .body import Body
from .box import Box, intersection, relative
from .face_frame import FaceFrame
from .field import fold_free_offsets
from .flow import lengths
from .mls import (
    DEFAULT_GRID,
    LocalWarp,
    feather_mask,
    grid_nodes,
    interpolate_nodes,
    mls_similarity,
    mls_similarity_shared,
    nodes_reaching,
    pixel_grid,
)
from .motion import BodyMotion, Edit, measured_support

#: Sampling step (px) of the fit grid, and strengths weaker than this are dropped.
FIT_STEP = 3
MIN_STRENGTH = 5.0
#: An operation is chosen if adding it lowers the squared residual by at least ``MIN_GAIN``
#: of the squared motion and by ``LOCAL_GAIN`` of what is left of it where the operation acts
#: (where its fields exceed ``SUPPORT_FRACTION`` of their largest value) …
MIN_GAIN = 0.003
LOCAL_GAIN = 0.25
SUPPORT_FRACTION = 0.1
#: … or, for a small feature's operation named beside large edits (an eye's height beside the
#: face's shape), by ``SMALL_GAIN·MIN_GAIN`` of the whole and ``SMALL_LOCAL_GAIN`` locally.
#: Operations that only fit a part of an edit outside the catalog (a brow tilt: the best,
#: eyebrow_height, gains 10 % overall but 0.11 locally) stay unnamed, and go to the hybrid
#: mode's residual, which carries them better. Measured on the composed edits of
#: tests/test_explain.py: applied operations gain 0.3–99.7 % overall and 0.83–1.0 locally;
#: others picked on the way (at most 1.4 % and 0.69) refine to below ``MIN_STRENGTH`` and are
#: dropped. On 30 simulated benchmark items (1–8 of the official operations each), 142 of 152
#: applied operations are named, 10 other names appear (near-equivalent decompositions:
#: eye_width for eye_resize beside eye_distance, mouth_width for mouth_resize, …).
SMALL_GAIN = 0.05
SMALL_LOCAL_GAIN = 0.5
#: Gauss–Newton steps refining the strengths against the composed warp's own field (fields of
#: several operations, or of one at another strength, are not exactly the linear mix the NNLS
#: assumes). Measured on the edits of tests/test_explain.py: read-back strengths 79–117 % of
#: the applied ones with, 64–104 % and one more operation named without.
REFINE = 3
#: Strength of the fields fitted (±): real retouches are mostly moderate, and a field at ±100
#: describes a weaker edit less well (strain-limited anchors differ, MLS is not linear).
BASIS_STRENGTH = 50.0
#: The fit runs at a resolution where the face unit (inter-ocular distance) is at most this
#: many px (:func:`_at_fit_scale`): its cost grows with the face's area in pixels (a close-up
#: at 4K has a unit of 600 px or more), and beyond this its results do not change. It keeps the
#: fit's lattice within 0.025 face units and the warp's nodes within 0.035: sampled more
#: coarsely (unit 48–96 px), the greedy selection named other operations on real faces
#: (SimFace-style bench, 100 items: 48.2 dB against 49.9 at full resolution).
FIT_UNIT_PX = 128.0
#: Fixed-point steps of :func:`residual_edit`.
RESIDUAL_STEPS = 2
#: A residual whose largest offset is below this (px) is not carried: it cannot be seen.
RESIDUAL_MIN_PX = 0.25


@dataclass(frozen=True)
class Explanation:
    """Fitted operations (strongest first) and the share of the motion they explain."""

    ops: list[OpRequest]
    explained: float
    motion_px: float

    def to_dict(self) -> dict:
        return {
            "ops": [{"name": r.name, "strength": r.strength} for r in self.ops],
            "explained": round(self.explained, 4),
            "mean_motion_px": round(self.motion_px, 4),
        }

    def describe(self) -> str:
        parts = [f"{r.name} {r.strength:+.0f}" for r in self.ops] or ["no catalog operation"]
        return f"{', '.join(parts)} (explains {100 * self.explained:.0f} % of the motion)"


@dataclass(frozen=True)
class BodyExplanation(Explanation):
    """Fitted body operations (:data:`~mirrorppr_cli.ops.body_catalog.BODY_CATALOG`), the share
    of the measured *body* motion they explain, and the operations not fitted because their
    body part is not visible in the exemplar."""

    not_visible: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**super().to_dict(), "not_visible": list(self.not_visible)}

    def describe(self) -> str:
        parts = [f"{r.name} {r.strength:+.0f}" for r in self.ops] or ["no body operation"]
        return f"{', '.join(parts)} (explains {100 * self.explained:.0f} % of the body motion)"


def _field(points: np.ndarray, requests: list[OpRequest], shape: tuple[int, int],
           box: Box, step: int = 1, cache: dict | None = None) -> np.ndarray:
    """Backward displacement of operations, as applied (feathered), at the pixels
    ``(box.x0 + step·i, box.y0 + step·j)``: ``(⌈h/step⌉, ⌈w/step⌉, 2)``; ``step`` 1 is every
    pixel of ``box``, :data:`FIT_STEP` the fit's lattice (the same values, evaluated only there).

    ``cache``: a dict shared by calls on the same face, image shape and box (one fit): keeps
    what does not depend on the strengths (operation layouts, feather masks).
    """
    return _fields(points, [requests], shape, box, step, cache)[0]


def _fields(points: np.ndarray, variants: list[list[OpRequest]], shape: tuple[int, int],
            box: Box, step: int = 1, cache: dict | None = None) -> list[np.ndarray]:
    """:func:`_field` of each request list in ``variants``, lists of the same operations at
    other strengths (one feathered region; e.g. an operation at + and − strength). They are
    evaluated on the same MLS nodes, and the sums over the fixed handles their warps share
    are computed once (:func:`~mirrorppr_cli.geometric.mls.mls_similarity_shared`)."""
    cache = {} if cache is None else cache
    layouts = cache.setdefault("layouts", {})
    warps = [plan_warp(points, requests, layouts) for requests in variants]
    outs = [np.zeros((-(-box.height // step), -(-box.width // step), 2)) for _ in variants]
    live = [k for k, warp in enumerate(warps) if not warp.is_identity]
    if not live:
        return outs
    # The feathered region depends only on which operations act, not on their strengths.
    acting = {tuple(sorted(r.name for r in variants[k] if r.strength != 0)) for k in live}
    if len(acting) > 1:
        raise ValueError(f"variants must act with the same operations, not {sorted(acting)}")
    key = ("mask", acting.pop())
    if key not in cache:
        cache[key] = feather_mask(shape, warps[live[0]].polygons, warps[live[0]].feather_px)
    mask, mbox = cache[key]
    inter = intersection(box, mbox)
    if inter.empty:
        return outs
    # Lattice indices inside `inter`, and their pixel offsets from its corner.
    ix = np.arange(-(-(inter.x0 - box.x0) // step), -(-(inter.x1 - box.x0) // step))
    iy = np.arange(-(-(inter.y0 - box.y0) // step), -(-(inter.y1 - box.y0) // step))
    if not len(ix) or not len(iy):
        return outs
    cols, rows = box.x0 + step * ix - inter.x0, box.y0 + step * iy - inter.y0
    m = mask[np.ix_(inter.y0 - mbox.y0 + rows, inter.x0 - mbox.x0 + cols)][..., None]
    nodes = grid_nodes(inter, DEFAULT_GRID)
    # Only nodes whose cubic support reaches a lattice pixel the feather mask keeps are
    # evaluated (the others' weight there is exactly 0; elsewhere the mask zeroes the field).
    needed = np.zeros((inter.height, inter.width), bool)
    needed[np.ix_(rows, cols)] = m[..., 0] > 0
    reaching = nodes_reaching(needed, DEFAULT_GRID, nodes.shape[:2])
    maps = _inverse_maps_at(nodes[reaching], [warps[k] for k in live])
    for k, mapped in zip(live, maps, strict=True):
        offsets = np.zeros_like(nodes)
        offsets[reaching] = mapped - nodes[reaching]
        disp = interpolate_nodes(inter, DEFAULT_GRID, offsets, rows, cols)
        outs[k][iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] = disp * m
    return outs


def _row_keys(points: np.ndarray) -> list[bytes]:
    """One hashable key per ``(x, y)`` row: its 16 bytes, ``N`` of them."""
    return np.ascontiguousarray(points, np.float64).view(np.dtype((np.void, 16))).ravel().tolist()


def _inverse_maps_at(nodes: np.ndarray, warps: list[LocalWarp]) -> list[np.ndarray]:
    """Each warp's inverse map (the MLS from its targets to its sources) at ``nodes``
    ``(..., 2)``; the fixed handles (source = target) that every warp has are summed once."""
    if len(warps) == 1:
        return [mls_similarity(nodes, warps[0].target, warps[0].source)]
    still = [np.all(w.source == w.target, axis=1) for w in warps]
    keys = [_row_keys(w.source) for w in warps]
    # Sets of the keys (a few hundred handles): the byte-wise matches numpy's unique,
    # intersect1d and isin of the void rows made, without their sorts.
    fixed_keys = [[key for key, fixed in zip(k, s.tolist(), strict=True) if fixed]
                  for k, s in zip(keys, still, strict=True)]
    if any(len(set(k)) < len(k) for k in fixed_keys):  # a point fixed twice: no sharing
        return [mls_similarity(nodes, w.target, w.source) for w in warps]
    common = set(fixed_keys[0]).intersection(*fixed_keys[1:])
    shared = [s & np.fromiter((key in common for key in k), bool, len(k))
              for k, s in zip(keys, still, strict=True)]
    fixed = warps[0].source[shared[0]]
    sets = [(w.target[~mine], w.source[~mine]) for w, mine in zip(warps, shared, strict=True)]
    return mls_similarity_shared(nodes, fixed.reshape(-1, 2), sets)


def explain(edit: Edit, shape: tuple[int, int], names: Sequence[str] | None = None,
            min_gain: float = MIN_GAIN) -> Explanation:
    """Fit catalog strengths to ``edit`` (measured on an image of ``shape`` ``(H, W)``).

    ``names``: the operations to fit (default: the whole catalog). ``min_gain``: see
    :data:`MIN_GAIN`; 0 fits every operation at once (plain NNLS).
    """
    if edit.empty:
        return Explanation([], 0.0, 0.0)
    moving = lengths(edit.flow)
    motion_px = float(moving[moving > 0].mean()) if moving.any() else 0.0
    edit, shape = _at_fit_scale(edit, shape)  # the fit's resolution; motion_px stays in px
    box = edit.box
    sl = (slice(0, box.height, FIT_STEP), slice(0, box.width, FIT_STEP))
    target = edit.flow[sl].reshape(-1).astype(np.float64)
    columns, labels, cache = [], [], {}
    for name in CATALOG if names is None else names:
        signs = (1.0, -1.0)
        fields = _fields(edit.points, [[OpRequest(name, BASIS_STRENGTH * s)] for s in signs],
                         shape, box, FIT_STEP, cache)
        for sign, field in zip(signs, fields, strict=True):
            columns.append(field.reshape(-1))
            labels.append((name, sign))
    basis = np.stack(columns, axis=1)

    def composed(st: dict[str, float]) -> np.ndarray:
        return _field(edit.points, [OpRequest(n, v) for n, v in st.items()], shape, box,
                      FIT_STEP, cache).reshape(-1)

    fitted = _fit(basis, target, labels, composed, min_gain)
    if fitted is None:
        return Explanation([], 0.0, 0.0)
    ops, explained = fitted
    return Explanation(ops, float(explained), motion_px)


def _at_fit_scale(edit: Edit, shape: tuple[int, int]) -> tuple[Edit, tuple[int, int]]:
    """``(edit, image shape)`` resampled so that the face unit is at most :data:`FIT_UNIT_PX`.

    The catalog's fields are defined in face units and similarity MLS commutes with scaling,
    so the strengths a fit finds do not depend on the resolution it runs at, while its cost
    grows with the face's area in pixels. Landmarks map pixel centre to pixel centre
    (``(p + ½)·s − ½``); offsets scale by ``s`` per axis; the flow is box-filtered over the
    footprint of a fit pixel, then sampled at fit pixel centres.
    """
    unit = FaceFrame.from_points(edit.points).unit
    if unit <= FIT_UNIT_PX:
        return edit, shape
    height, width = shape
    size = (max(1, round(width * FIT_UNIT_PX / unit)), max(1, round(height * FIT_UNIT_PX / unit)))
    scale = np.array([size[0] / width, size[1] / height])
    box = Box(int(np.floor(edit.box.x0 * scale[0])), int(np.floor(edit.box.y0 * scale[1])),
              min(int(np.ceil(edit.box.x1 * scale[0])), size[0]),
              min(int(np.ceil(edit.box.y1 * scale[1])), size[1]))
    # The measured edit, zero-padded (it is zero outside its box), box-filtered.
    k = max(1, int(round(1.0 / float(scale.min()))))
    pad = k + 2
    padded = cv2.copyMakeBorder(np.dstack([edit.flow, edit.weight]).astype(np.float32),
                                pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    smooth = cv2.blur(padded, (k, k), borderType=cv2.BORDER_CONSTANT)
    # Fit pixel u sits at image x = (u + ½)/s − ½; in `padded`, at x − (edit.box.x0 − pad).
    # (cv2.blur centres an even kernel half a pixel early: k // 2 − (k − 1)/2 corrects it.)
    origin = (np.array([box.x0, box.y0]) + 0.5) / scale - 0.5 - (
        np.array([edit.box.x0, edit.box.y0]) - pad) + (k // 2 - (k - 1) / 2)
    to_source = np.array([[1 / scale[0], 0.0, origin[0]], [0.0, 1 / scale[1], origin[1]]])
    part = cv2.warpAffine(smooth, to_source, (box.width, box.height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    flow = part[..., :2] * scale.astype(np.float32)
    points = (edit.points + 0.5) * scale - 0.5
    return (Edit(np.ascontiguousarray(flow), np.ascontiguousarray(part[..., 2]), box, points,
                 edit.max_motion_px * float(scale.max())), (size[1], size[0]))


def _fit(
    basis: np.ndarray, target: np.ndarray, labels: list[tuple[str, float]],
    composed: Callable[[dict[str, float]], np.ndarray], min_gain: float,
    refine_from: float = 0.0,
) -> tuple[list[OpRequest], float] | None:
    """``(operations strongest first, explained share)`` fitted to ``target``; None when there
    is no motion. ``basis``: one column per ``labels`` entry ``(name, ±1)``, the operation's
    field at ±BASIS_STRENGTH; ``composed(strengths)``: the field of several operations planned
    together (for :func:`_refine`). Selection, NNLS and refinement as the module describes;
    a fit that explains less than ``refine_from`` before refinement is not refined."""
    total = float(np.sum(target**2))
    if total <= 0:
        return None
    coef = np.zeros(len(labels))
    chosen = _select(basis, target, min_gain)
    if chosen:
        from scipy.optimize import nnls  # on first use: ~0.5 s and ~34 MB to import

        coef[chosen], _ = nnls(basis[:, chosen], target)
    residual = float(np.sum((basis @ coef - target) ** 2))
    strengths: dict[str, float] = {}
    for (name, sign), c in zip(labels, coef, strict=True):
        strengths[name] = strengths.get(name, 0.0) + sign * BASIS_STRENGTH * c
    strengths = {n: float(np.clip(v, -100, 100)) for n, v in strengths.items()
                 if abs(v) >= MIN_STRENGTH}
    if REFINE and strengths and 1.0 - residual / total >= refine_from:
        strengths, residual = _refine(composed, target, basis, labels, strengths)
        weak = [n for n, v in strengths.items() if abs(v) < MIN_STRENGTH]
        if weak:
            strengths = {n: v for n, v in strengths.items() if n not in weak}
            residual = float(np.sum((composed(strengths) - target) ** 2))
    explained = 1.0 - residual / total
    ops = [OpRequest(n, round(v, 1)) for n, v in strengths.items()]
    ops.sort(key=lambda r: -abs(r.strength))
    return ops, float(explained)


def _refine(
    field: Callable[[dict[str, float]], np.ndarray], target: np.ndarray, basis: np.ndarray,
    labels: list[tuple[str, float]], strengths: dict[str, float],
) -> tuple[dict[str, float], float]:
    """``(strengths, squared residual)`` after Gauss–Newton steps against the *composed* field
    (``field``: all the operations planned together), each operation's field at
    ±BASIS_STRENGTH, divided by it, standing for its derivative; a step is kept only if it
    lowers the residual."""
    column = {label: k for k, label in enumerate(labels)}
    best = dict(strengths)
    rest = target - field(best)
    best_res = float(rest @ rest)
    for _ in range(REFINE):
        names = list(best)
        jac = np.stack([basis[:, column[(n, 1.0 if best[n] >= 0 else -1.0)]] / BASIS_STRENGTH
                        * (1.0 if best[n] >= 0 else -1.0) for n in names], axis=1)
        step, *_ = np.linalg.lstsq(jac, rest, rcond=None)
        trial = {n: float(np.clip(best[n] + d, -100, 100))
                 for n, d in zip(names, step, strict=True)}
        trial_rest = target - field(trial)
        res = float(trial_rest @ trial_rest)
        if res >= best_res:
            break
        best, best_res, rest = trial, res, trial_rest
    return best, best_res


def _select(basis: np.ndarray, target: np.ndarray, min_gain: float) -> list[int]:
    """Columns of ``basis`` (pairs: an operation's + and − fields) chosen for the fit.

    Forward selection: repeatedly add the operation whose NNLS refit, with those already
    chosen, lowers the squared residual most, among those that lower it enough, overall
    (``min_gain``) and where the operation acts (see :data:`MIN_GAIN`). ``min_gain`` ≤ 0:
    every operation whose fields are not zero.
    """
    norms = np.linalg.norm(basis, axis=0)
    live = [k for k in range(0, basis.shape[1], 2) if norms[k] > 0 or norms[k + 1] > 0]
    if min_gain <= 0:
        return [c for k in live for c in (k, k + 1)]
    gram = basis.T @ basis
    proj = basis.T @ target
    total = float(target @ target)
    reach = np.maximum(np.abs(basis[:, 0::2]), np.abs(basis[:, 1::2]))
    # where each operation acts, as columns of 0/1: the residual there for all at once
    acts = (reach > SUPPORT_FRACTION * reach.max(axis=0)).astype(np.float64)

    from scipy.optimize import nnls  # on first use: ~0.5 s and ~34 MB to import

    def fit(cols: list[int]) -> tuple[np.ndarray, float]:
        g = gram[np.ix_(cols, cols)] + 1e-9 * total * np.eye(len(cols))
        factor = np.linalg.cholesky(g)  # g = L·Lᵀ: ‖Ax − b‖² = ‖Lᵀx − L⁻¹Aᵀb‖² + const
        x, _ = nnls(factor.T, np.linalg.solve(factor, proj[cols]))
        return x, total - 2 * float(proj[cols] @ x) + float(x @ g @ x)

    chosen: list[int] = []
    rest, current = target, total
    while True:
        trials = []
        rest_there = (rest**2) @ acts
        for k in live:
            if k in chosen:
                continue
            gain = current - fit([*chosen, k, k + 1])[1]
            local = gain / max(float(rest_there[k // 2]), 1e-12)
            if (gain >= min_gain * total and local >= LOCAL_GAIN) or (
                gain >= SMALL_GAIN * min_gain * total and local >= SMALL_LOCAL_GAIN
            ):
                trials.append((gain, k))
        if not trials:
            return chosen
        gain, k = max(trials)
        chosen += [k, k + 1]
        x, current = fit(chosen)
        rest = target - basis[:, chosen] @ x


def residual_edit(edit: Edit, explanation: Explanation, shape: tuple[int, int]) -> Edit:
    """What the fitted catalog operations leave of ``edit``, as an edit applied after them.

    Backward maps compose, not add: the edit takes an output pixel ``x`` from ``x + t(x)``;
    the operations (field ``f``) followed by a residual ``r`` take it from
    ``x + r(x) + f(x + r(x))``. ``r = t − f(x + r)`` is solved by fixed-point steps from
    ``r = t − f(x)`` (:data:`RESIDUAL_STEPS`).
    """
    if edit.empty or not explanation.ops:
        return edit
    fitted = _applied_field(edit.points, explanation.ops, shape, edit.box)
    grid = np.stack(np.meshgrid(np.arange(edit.box.width, dtype=np.float32),
                                np.arange(edit.box.height, dtype=np.float32)), axis=-1)
    rest = edit.flow - fitted
    for _ in range(RESIDUAL_STEPS):
        where = grid + rest
        at = cv2.remap(fitted, where[..., 0], where[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        rest = edit.flow - at
    # Where the measurement says something (moving or textured still pixels, in the region
    # where motion was looked for; smooth): there the measured field is the edit (a trusted
    # zero included: where the operations move textured pixels the exemplar kept still, the
    # residual takes that back); on flat pixels that hide motion, the operations alone. Cut
    # by the field's own weight (1 where it moves ≥ 1/16 px), the residual jumped from −f to
    # 0 within a pixel where the operations reach past the measured motion: a step of up to
    # 3 px that tore rim-lit jaw contours of other people (survey q17 on biden).
    rest = rest * measured_support(edit, shape)[..., None]
    reach = lengths(rest)
    if reach.max() < RESIDUAL_MIN_PX:  # what the catalog leaves is below visibility: catalog only
        return Edit(np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32),
                    Box(0, 0, 0, 0), edit.points, 0.0, edit.appearance)
    return Edit(rest, edit.weight, edit.box, edit.points, float(reach.max()), edit.appearance,
                edit.confidence)


def _applied_field(points: np.ndarray, requests: list[OpRequest], shape: tuple[int, int],
                   box: Box) -> np.ndarray:
    """``(h, w, 2)`` float32 over ``box``: the backward offsets of ``requests`` planned on
    ``points`` as a retouch applies them (:func:`~mirrorppr_cli.geometric.field.
    fold_free_offsets`: smoothed and fold-free, unlike the fit's raw fields), zero where they
    do not move pixels."""
    out = np.zeros((box.height, box.width, 2), np.float32)
    offsets, moving, wbox = fold_free_offsets(shape, plan_warp(points, requests))
    inter = intersection(box, wbox)
    if wbox.empty or inter.empty:
        return out
    part = relative(inter, wbox)
    out[relative(inter, box)] = offsets[part] * moving[part][..., None]
    return out


def _body_field(body: Body, requests: list[OpRequest], box: Box, *,
                strict: bool = False) -> np.ndarray:
    """Backward displacement ``(h, w, 2)`` over ``box`` of body operations planned on ``body``
    (the composed sampling map of :func:`plan_body_warp` minus the identity, confinement
    included): the convention of the measured flow and of :func:`_field`."""
    warp = plan_body_warp(body, requests, strict=strict)
    out = np.zeros((box.height, box.width, 2))
    if warp.is_identity:
        return out
    wb = warp.box
    inter = intersection(box, wb)
    if inter.empty:
        return out
    out[relative(inter, box)] = (
        warp.sample_map[relative(inter, wb)] - pixel_grid(inter)
    )
    return out


def explain_body(motion: BodyMotion, body: Body, min_gain: float = MIN_GAIN, *,
                 refine_from: float = 0.0) -> BodyExplanation:
    """Fit body-operation strengths to ``motion`` (:func:`~mirrorppr_cli.geometric.
    motion.estimate_body_motion`), planned on the exemplar's own ``body`` (its *before*).

    As :func:`explain` for the face: each operation's field at ±:data:`BASIS_STRENGTH`,
    forward selection, NNLS, refinement against the composed warp. Only operations whose
    part is visible in the exemplar are fitted (the others are listed in ``not_visible``); the
    fit uses the body region's samples only (outside it the flow is not measured).
    ``refine_from``: a fit explaining less than this share before the refinement is returned
    unrefined (a caller that only uses fits that name the edit saves the composed plans).
    """
    if motion.empty:
        return BodyExplanation([], 0.0, 0.0)
    box = motion.box
    sl = (slice(0, box.height, FIT_STEP), slice(0, box.width, FIT_STEP))
    rows = np.repeat(motion.region[sl].reshape(-1), 2)
    target = motion.flow[sl].reshape(-1).astype(np.float64)[rows]
    columns, labels, hidden = [], [], []
    for name in BODY_CATALOG:
        fields = []
        for sign in (1.0, -1.0):
            try:
                fields.append(_body_field(body, [OpRequest(name, BASIS_STRENGTH * sign)], box,
                                          strict=True))
            except BodyPartNotVisible:
                break
        if len(fields) < 2:
            hidden.append(name)
            continue
        for sign, field in zip((1.0, -1.0), fields, strict=True):
            columns.append(field[sl].reshape(-1)[rows])
            labels.append((name, sign))
    moving = lengths(motion.flow)
    motion_px = float(moving[moving > 0].mean()) if moving.any() else 0.0
    if not columns:
        return BodyExplanation([], 0.0, motion_px, tuple(hidden))
    basis = np.stack(columns, axis=1)

    def composed(st: dict[str, float]) -> np.ndarray:
        return _body_field(body, [OpRequest(n, v) for n, v in st.items()], box)[sl].reshape(-1)[rows]

    fitted = _fit(basis, target, labels, composed, min_gain, refine_from)
    if fitted is None:
        return BodyExplanation([], 0.0, 0.0, tuple(hidden))
    ops, explained = fitted
    return BodyExplanation(ops, explained, motion_px, tuple(hidden))


#: A body fit that explains at least this share of the body motion names the edit: nothing
#: more is carried (measured: catalog body edits are explained at 0.98-0.996; the real
#: professional body edits of the survey at 0.30-0.53).
NAMED_BODY_EDIT = 0.9
#: Refinement against the composed warp raises a body fit's explained share by a hundredth or
#: two (the catalog body edits of tests/test_body_transfer.py: linear fit 0.973-0.978, refined
#: 0.981-0.990); a linear fit this far below
#: :data:`NAMED_BODY_EDIT` cannot name the edit and is not refined where only naming fits count.
REFINE_MARGIN = 0.2


@dataclass(frozen=True)
class BodyResidual:
    """The body motion the fitted body operations do not explain, carried into a query through
    the pose landmarks (:func:`mirrorppr_cli.geometric.apply.apply_body_edit`).

    Attributes:
        flow: ``(h, w, 2)`` float32 backward offsets over ``box``, smooth and fold-free, in the
            pixels of the image the body was measured on (the body fit scale).
        box: where ``flow`` lies, in those pixels.
        points: ``(33, 2)`` the exemplar's pose landmarks ``(x, y)`` there.
        visibility: ``(33,)`` their MediaPipe visibilities.
        max_motion_px: the largest offset (those pixels).
        face_points: ``(478, 2)`` the exemplar's face mesh there (None: carried through the
            pose landmarks only).
    """

    flow: np.ndarray
    box: Box
    points: np.ndarray
    visibility: np.ndarray
    max_motion_px: float
    face_points: np.ndarray | None = None


def body_residual(motion: BodyMotion, fit: BodyExplanation, body: Body) -> BodyResidual | None:
    """What the body operations ``fit`` (planned on ``body``) leave of the smooth measured
    body motion, composed as :func:`residual_edit` composes the face's; None when nothing
    visible (largest offset below :data:`RESIDUAL_MIN_PX`) is left, nothing was measured, or
    the operations explain at least :data:`NAMED_BODY_EDIT` of it (the rest is then the
    measurement's and the planning's noise, not an edit)."""
    if motion.empty or motion.smooth is None or (fit.ops and fit.explained >= NAMED_BODY_EDIT):
        return None
    target = motion.smooth.astype(np.float32)
    box = motion.box
    if fit.ops:
        fitted = _body_field(body, list(fit.ops), box).astype(np.float32)
        grid = np.stack(np.meshgrid(np.arange(box.width, dtype=np.float32),
                                    np.arange(box.height, dtype=np.float32)), axis=-1)
        rest = target - fitted
        for _ in range(RESIDUAL_STEPS):
            where = grid + rest
            at = cv2.remap(fitted, where[..., 0], where[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            rest = target - at
        # where the measurement says nothing, the residual is not made up
        rest *= (lengths(target) > 0)[..., None]
    else:
        rest = target
    reach = float(lengths(rest).max())
    if reach < RESIDUAL_MIN_PX:
        return None
    return BodyResidual(np.ascontiguousarray(rest, np.float32), box, body.points.copy(),
                        body.visibility.copy(), reach)
