"""Similarity Moving-Least-Squares warping (Schaefer et al. 2006) and feathered blending.

Conventions used throughout this module:

* Points are ``(x, y)`` in pixels, ``x`` to the right and ``y`` down, with pixel *centres* at
  integer coordinates: pixel ``(row=r, col=c)`` is the point ``(x=c, y=r)``. This is what
  ``cv2.remap`` samples.
* Arrays of points have shape ``(..., 2)`` and dtype float64 unless stated.
* An *inverse map* gives, for each pixel of the output image, the ``(x, y)`` position in the
  input image to sample. The LLW generator of the paper warps this way: the MLS deformation
  is fitted from the *target* control points (where features end up, in the output) to the
  *source* control points (where they are, in the input) and evaluated at output pixels.

Two evaluations of the inverse map are provided: :func:`inverse_map_exact` (the deformation
evaluated at every pixel, the reference) and :func:`inverse_map_fast` (evaluated on a coarse
grid of nodes ``grid`` pixels apart and interpolated with separable cubic convolution).
:func:`fast_path_bound` states how far the fast map may be from the exact one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .box import Box

#: Default node spacing of the fast path, in output pixels.
DEFAULT_GRID = 4

#: The fast path's worst deviation from the exact map, as a fraction of the largest
#: control-point displacement: see :func:`fast_path_bound`.
FAST_PATH_RELATIVE_BOUND = 1.5


def fast_path_bound(source_points: np.ndarray, target_points: np.ndarray) -> float:
    """Worst deviation in px of :func:`inverse_map_fast` (default grid) from the exact map.

    The similarity-MLS field varies on the scale of the spacing between control points
    (2–8 px between MediaPipe landmarks on faces 40–200 px wide), so a 4 px grid cannot follow
    it exactly next to moving landmarks; where composed operations push two landmarks almost
    onto each other the exact map itself folds, and the fast map smooths the fold. Measured
    over 150 random catalog combinations (1–8 ops, strengths uniform in ±100) on a 512² and a
    1024² portrait: worst deviation 1.02× and 1.16× the largest displacement, 95th percentile
    0.63× and 0.46×; typical single operations at ±60 deviate 0.2–0.4× (0.67 px for
    ``eye_resize=60`` at 1024²); the mean deviation is 0.01–0.05 px. Farther than 8 px from
    every control point the deviation is below 0.05 px. Use ``method="exact"`` when every pixel
    must follow the reference map.
    """
    disp = np.asarray(target_points, np.float64) - np.asarray(source_points, np.float64)
    return FAST_PATH_RELATIVE_BOUND * float(np.linalg.norm(disp, axis=-1).max(initial=0.0))


# Distances below this (in px²) count as "on a control point": keeps weights finite there.
_EPS_SQ = 1e-12
# Evaluate at most this many (point, handle) pairs at once, to bound memory.
_CHUNK_PAIRS = 65_536


def mls_similarity(
    v: np.ndarray, handles_from: np.ndarray, handles_to: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    """Evaluate the similarity-MLS deformation that takes ``handles_from`` to ``handles_to``.

    Args:
        v: points to deform, shape ``(..., 2)``, ``(x, y)``.
        handles_from: control points in the domain of ``v``, shape ``(N, 2)``, N ≥ 2.
        handles_to: where each control point goes, shape ``(N, 2)``.
        alpha: weight fall-off, ``w_i = |handles_from_i − v|^(−2·alpha)``. The tool uses 1
            (the paper's value); others work, but within ~0.1 px of a handle the expanded
            sums below lose precision for them.

    Returns:
        The deformed points, shape ``v.shape``, float64.

    At a point ``v`` the deformation is the best similarity (rotation + uniform scale +
    translation) in the weighted least-squares sense. Writing points as complex numbers, that
    similarity is ``f(v) = c·(v − a*) + b*`` with weighted centroids ``a*``, ``b*`` of the
    two handle sets and ``c = Σ w·b̂·conj(â) / Σ w·|â|²`` — the closed form of Schaefer et al.'s
    ``Σ q̂ (1/μ_s) A_i`` written with complex arithmetic. ``f`` interpolates the handles.
    """
    src, dst = _handles(handles_from, handles_to)
    if len(src) < 2:
        raise ValueError("handles must both have shape (N, 2) with N >= 2")
    return mls_similarity_shared(v, np.empty((0, 2)), [(src, dst)], alpha)[0]


def mls_similarity_shared(
    v: np.ndarray, fixed: np.ndarray, sets: list[tuple[np.ndarray, np.ndarray]],
    alpha: float = 1.0,
) -> list[np.ndarray]:
    """:func:`mls_similarity` of ``v`` for several handle sets that share fixed handles.

    Set ``k`` is the handles ``fixed`` (``(F, 2)``, points that map to themselves) plus
    ``sets[k] = (handles_from, handles_to)`` (``(N_k, 2)`` each; F + N_k ≥ 2). The fixed
    handles' part of the weighted sums is computed once for every set: the fit's fields of one
    operation at + and − strength share most of their anchors. Equal to
    ``mls_similarity(v, [from_k; fixed], [to_k; fixed])`` up to floating-point rounding of the
    sums' order (≈ 1e-13 px).
    """
    fixed = np.asarray(fixed, np.float64).reshape(-1, 2)
    sets = [_handles(a, b) for a, b in sets]
    if any(len(fixed) + len(a) < 2 for a, _ in sets):
        raise ValueError("every handle set needs at least 2 handles with the fixed ones")
    pts = np.asarray(v, dtype=np.float64)
    # Work relative to the handles' mean: keeps the expanded sums below well conditioned.
    origin = np.concatenate([fixed, *(a for a, _ in sets)]).mean(axis=0)
    flat = pts.reshape(-1, 2) - origin
    shared = _mls_terms(fixed, fixed, origin) if len(fixed) else None
    terms = [_mls_terms(a, b, origin) for a, b in sets]
    rows = _point_rows(flat)
    outs = [np.empty(len(flat), dtype=np.complex128) for _ in sets]
    step = max(1, _CHUNK_PAIRS // max(len(fixed), *(len(a) for a, _ in sets), 1))
    for start in range(0, len(flat), step):
        part = slice(start, start + step)
        base = None if shared is None else _mls_sums(rows[part], *shared, alpha)
        for (coeffs, consts), out in zip(terms, outs, strict=True):
            sums = _mls_sums(rows[part], coeffs, consts, alpha) if len(consts) else 0.0
            out[part] = _mls_solve(sums if base is None else base + sums, flat[part])
    return [np.stack([o.real, o.imag], axis=-1).reshape(pts.shape) for o in outs]


def _handles(handles_from, handles_to) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(handles_from, dtype=np.float64)
    dst = np.asarray(handles_to, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError("handles must both have shape (N, 2) with N >= 2")
    return src, dst


def _mls_terms(src: np.ndarray, dst: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Per-handle constants of the closed form, with ``src`` centred at ``origin``:
    ``(coeffs (4, N), consts (N, 8))``.

    Every centred sum the closed form needs is a weighted sum of per-handle constants:
    Σw, Σw·a, Σw·b, Σw·b·conj(a), Σw·|a|² → one (M×N)·(N×8) matrix product; and
    |v − a|² = |v|² − 2·v·a + |a|² is one too: ``[x, y, 1, |v|²]·coeffs``.
    """
    a = (src[:, 0] - origin[0]) + 1j * (src[:, 1] - origin[1])
    b = dst[:, 0] + 1j * dst[:, 1]
    ba = b * np.conj(a)
    consts = np.stack(
        [np.ones(len(a)), a.real, a.imag, b.real, b.imag, ba.real, ba.imag, np.abs(a) ** 2], axis=1
    )
    coeffs = np.stack([-2 * a.real, -2 * a.imag, np.abs(a) ** 2, np.ones(len(a))], axis=0)
    return coeffs, consts


def _point_rows(flat: np.ndarray) -> np.ndarray:
    """``[x, y, 1, |v|²]`` per centred point ``(M, 2)`` → ``(M, 4)``."""
    rows = np.empty((len(flat), 4))
    rows[:, :2] = flat
    rows[:, 2] = 1.0
    rows[:, 3] = (flat**2).sum(axis=1)
    return rows


def _mls_sums(rows: np.ndarray, coeffs: np.ndarray, consts: np.ndarray,
              alpha: float) -> np.ndarray:
    """The weighted sums ``(M, 8)`` of :func:`_mls_terms`'s constants at the points ``rows``."""
    d2 = rows @ coeffs
    np.maximum(d2, _EPS_SQ, out=d2)
    w = d2 ** (-alpha) if alpha != 1.0 else np.reciprocal(d2, out=d2)
    return w @ consts


def _mls_solve(sums: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """The deformed points (complex, absolute) from the sums at the centred points ``flat``."""
    s0, sar, sai, sbr, sbi, sbar, sbai, saa = sums.T
    a_star = (sar + 1j * sai) / s0
    b_star = (sbr + 1j * sbi) / s0
    num = (sbar + 1j * sbai) - s0 * b_star * np.conj(a_star)
    den = saa - s0 * np.abs(a_star) ** 2
    c = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    z = flat[:, 0] + 1j * flat[:, 1]
    return c * (z - a_star) + b_star


def pixel_grid(box: Box) -> np.ndarray:
    """``(x, y)`` coordinates of every pixel centre in ``box``, shape ``(h, w, 2)`` float64."""
    xs = np.arange(box.x0, box.x1, dtype=np.float64)
    ys = np.arange(box.y0, box.y1, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1)


def inverse_map_exact(
    box: Box, source_points: np.ndarray, target_points: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    """Exact inverse map over ``box``: for each output pixel, where to sample the input.

    Args:
        box: output pixels to evaluate.
        source_points: control points in the input image, ``(N, 2)`` ``(x, y)``.
        target_points: where they must appear in the output, ``(N, 2)``.

    Returns:
        ``(box.height, box.width, 2)`` float64 input coordinates ``(x, y)``.
    """
    return mls_similarity(pixel_grid(box), target_points, source_points, alpha)


@lru_cache(maxsize=64)
def _cubic_weights(n_pixels: int, grid: int, n_nodes: int) -> np.ndarray:
    """Interpolation matrix ``(n_pixels, n_nodes)`` for cubic convolution (Keys, a=−0.5).

    Pixel ``i`` sits at ``i / grid`` in node units (node k at k). Nodes beyond the ends are linearly
    extrapolated from the two end nodes, so the scheme reproduces linear functions exactly
    everywhere and cubics in the interior.
    """
    positions = np.arange(n_pixels) / grid
    base = np.floor(positions).astype(np.int64)
    frac = positions - base
    mat = np.zeros((len(positions), n_nodes), dtype=np.float64)
    rows = np.arange(len(positions))
    for offset in (-1, 0, 1, 2):
        s = np.abs(frac - offset)
        w = np.where(
            s <= 1,
            1.5 * s**3 - 2.5 * s**2 + 1,
            np.where(s < 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, 0.0),
        )
        idx = base + offset
        # Ghost nodes: node −1 = 2·n0 − n1, node n = 2·n_{n−1} − n_{n−2}.
        below = idx < 0
        above = idx > n_nodes - 1
        inside = ~(below | above)
        # Each statement adds to every (row, node) at most once (one entry per pixel row):
        # the sums np.add.at would make, in the same order, without its slow unbuffered loop.
        mat[rows[inside], idx[inside]] += w[inside]
        if n_nodes >= 2:
            mat[rows[below], 0] += 2 * w[below]
            mat[rows[below], 1] += -w[below]
            mat[rows[above], n_nodes - 1] += 2 * w[above]
            mat[rows[above], n_nodes - 2] += -w[above]
        else:
            mat[rows[~inside], 0] += w[~inside]
    mat.flags.writeable = False
    return mat


def inverse_map_fast(
    box: Box,
    source_points: np.ndarray,
    target_points: np.ndarray,
    alpha: float = 1.0,
    grid: int = DEFAULT_GRID,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse map over ``box`` from a coarse grid of exact evaluations.

    The displacement ``map(v) − v`` is evaluated exactly at nodes ``(x0 + i·grid, y0 + j·grid)``
    (node centres coincide with pixel centres: no half-pixel shift) and interpolated to every
    pixel with separable cubic convolution, done as two small matrix products.

    Returns the same shape and convention as :func:`inverse_map_exact`, as float64. With
    ``rows``/``cols`` (pixel offsets from the box's corner, ascending), only the lattice
    ``(y0 + rows) × (x0 + cols)`` is returned, ``(len(rows), len(cols), 2)``: the same values
    as the full map at those pixels, for a fraction of the interpolation's cost.

    ``needed`` (bool ``(box.height, box.width)``, e.g. where a feather mask is > 0): only
    nodes whose cubic support reaches a needed pixel are evaluated; the map is exact at needed
    pixels and merely finite elsewhere (the skipped nodes' displacement is taken as 0).
    """
    rows = np.arange(max(box.height, 0)) if rows is None else np.asarray(rows, np.int64)
    cols = np.arange(max(box.width, 0)) if cols is None else np.asarray(cols, np.int64)
    if box.empty or not len(rows) or not len(cols):
        return np.zeros((len(rows), len(cols), 2))
    return np.moveaxis(_inverse_planes_fast(box, source_points, target_points, alpha, grid,
                                            rows, cols, needed), 0, -1)


def _inverse_planes_fast(box: Box, source_points: np.ndarray, target_points: np.ndarray,
                         alpha: float, grid: int, rows: np.ndarray, cols: np.ndarray,
                         needed: np.ndarray | None) -> np.ndarray:
    """:func:`inverse_map_fast` as planes ``(2, len(rows), len(cols))``: ``x`` then ``y``."""
    nodes = grid_nodes(box, grid)
    if needed is None:
        disp = mls_similarity(nodes, target_points, source_points, alpha) - nodes  # (ny, nx, 2)
    else:
        live = nodes_reaching(needed, grid, nodes.shape[:2])
        disp = np.zeros_like(nodes)
        disp[live] = mls_similarity(nodes[live], target_points, source_points, alpha) - nodes[live]
    planes = interpolate_planes(box, grid, disp, rows, cols)
    planes[0] += (box.x0 + cols).astype(np.float64)[None, :]
    planes[1] += (box.y0 + rows).astype(np.float64)[:, None]
    return planes


def nodes_reaching(needed: np.ndarray, grid: int, node_shape: tuple[int, int]) -> np.ndarray:
    """Bool ``node_shape``: nodes of :func:`grid_nodes` with a weight on some ``needed`` pixel.

    A node's cubic weight is non-zero on pixels less than ``2·grid`` away in x and in y (the
    end nodes also carry the ghost nodes' weights, which reach no farther), so a node counts
    when the needed mask, dilated by ``2·grid − 1`` (Chebyshev), covers it; nodes past the
    box's far edge are read at the edge, which only adds nodes.
    """
    side = 4 * grid - 1
    near = cv2.dilate(needed.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    ny, nx = node_shape
    ys = np.minimum(grid * np.arange(ny), needed.shape[0] - 1)
    xs = np.minimum(grid * np.arange(nx), needed.shape[1] - 1)
    return near[np.ix_(ys, xs)]


def grid_nodes(box: Box, grid: int) -> np.ndarray:
    """Nodes ``(x0 + i·grid, y0 + j·grid)`` covering ``box`` (one beyond each end), ``(ny, nx, 2)``."""
    nx = (box.width - 1) // grid + 2
    ny = (box.height - 1) // grid + 2
    nodes = np.empty((ny, nx, 2))  # filled by broadcasting: meshgrid and stack copy twice
    nodes[..., 0] = box.x0 + grid * np.arange(nx, dtype=np.float64)
    nodes[..., 1] = (box.y0 + grid * np.arange(ny, dtype=np.float64))[:, None]
    return nodes


def interpolate_nodes(box: Box, grid: int, values: np.ndarray, rows: np.ndarray | None = None,
                      cols: np.ndarray | None = None) -> np.ndarray:
    """Values at :func:`grid_nodes` ``(ny, nx, K)`` → every pixel of ``box`` ``(h, w, K)``, or
    only the pixels at offsets ``rows`` × ``cols`` from its corner.

    Separable cubic convolution (:func:`interpolate_planes`); the result is a channel-last
    view of its planes.
    """
    return np.moveaxis(interpolate_planes(box, grid, values, rows, cols), 0, -1)


def interpolate_planes(box: Box, grid: int, values: np.ndarray, rows: np.ndarray | None = None,
                       cols: np.ndarray | None = None) -> np.ndarray:
    """:func:`interpolate_nodes` as planes: ``(K, h, w)``, each plane contiguous.

    Two matrix products: rows for every channel at once, then columns per channel (on
    contiguous operands: a strided one makes numpy leave BLAS).
    """
    ny, nx, channels = values.shape
    wx = _cubic_weights(box.width, grid, nx)  # (w, nx)
    wy = _cubic_weights(box.height, grid, ny)  # (h, ny)
    if cols is not None:
        wx = wx[cols]
    if rows is not None:
        wy = wy[rows]
    along_y = (wy @ np.ascontiguousarray(values).reshape(ny, nx * channels))
    along_y = np.ascontiguousarray(along_y.reshape(-1, nx, channels).transpose(2, 0, 1))
    wxt = np.ascontiguousarray(wx.T)
    out = np.empty((channels, wy.shape[0], wx.shape[0]))
    for k in range(channels):
        np.matmul(along_y[k], wxt, out=out[k])
    return out


def feather_mask(
    shape: tuple[int, int], polygons: list[np.ndarray], feather_px: float
) -> tuple[np.ndarray, Box]:
    """Feathered mask: union of the polygons' convex hulls, blurred by a Gaussian.

    Args:
        shape: ``(H, W)`` of the image.
        polygons: each ``(K, 2)`` ``(x, y)`` points; their convex hulls are filled.
        feather_px: Gaussian kernel size in pixels (rounded up to odd); σ follows OpenCV's
            rule for that size. The kernel has finite support, so the mask is exactly 0
            farther than the kernel's half-diagonal (plus the 1 px anti-aliased hull edge)
            from the hulls.

    Returns:
        ``(mask, box)``: ``mask`` float32 in [0, 1] of shape ``(box.height, box.width)``, the
        part of the full-image mask inside ``box``; the mask is exactly 0 outside ``box``.
    """
    height, width = shape
    ksize = max(3, int(np.ceil(feather_px)) | 1)
    radius = ksize // 2
    pts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polygons])
    x0 = max(int(np.floor(pts[:, 0].min())) - radius - 1, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - radius - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + radius + 2, width)
    y1 = min(int(np.ceil(pts[:, 1].max())) + radius + 2, height)
    box = Box(x0, y0, x1, y1)
    if box.empty:
        return np.zeros((0, 0), np.float32), Box(0, 0, 0, 0)
    # Rasterise with a margin of `radius` so the blur inside `box` sees every hull pixel
    # near it; hull parts beyond the image edge count as inside the hull (the mask does not
    # fade at the frame's edge).
    pad = radius
    canvas = np.zeros((box.height + 2 * pad, box.width + 2 * pad), np.uint8)
    shift = np.array([x0 - pad, y0 - pad], np.float64)
    hulls = [cv2.convexHull(np.asarray(poly, np.float32).reshape(-1, 1, 2)).reshape(-1, 2)
             for poly in polygons]
    corners = np.round((np.concatenate(hulls) - shift) * 16).astype(np.int32)  # 1/16 px
    for hull in np.split(corners, np.cumsum([len(h) for h in hulls])[:-1]):
        cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_AA, shift=4)
    blurred = cv2.GaussianBlur(
        canvas.astype(np.float32) / 255.0, (ksize, ksize), 0, borderType=cv2.BORDER_CONSTANT
    )
    mask = np.clip(blurred[pad : pad + box.height, pad : pad + box.width], 0.0, 1.0)
    mask[mask < 1e-4] = 0.0
    return mask, box


def remap(pixels: np.ndarray, inverse_map: np.ndarray) -> np.ndarray:
    """Sample ``pixels`` (``(H, W, C)`` uint8/uint16/float32) bilinearly at ``inverse_map``.

    ``inverse_map`` is ``(h, w, 2)`` absolute input ``(x, y)``; returns ``(h, w, C)``.
    Positions outside the input replicate the border. OpenCV quantises sampling positions
    to 1/32 px, far below what a retouch can show.
    """
    maps = inverse_map.astype(np.float32)
    return remap_xy(pixels, maps[..., 0], maps[..., 1])


def remap_xy(pixels: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """:func:`remap` with the map as two ``(h, w)`` planes, ``x`` and ``y`` (float32 is what
    OpenCV uses; others are converted)."""
    map_x = np.ascontiguousarray(map_x, np.float32)
    map_y = np.ascontiguousarray(map_y, np.float32)
    parts = []
    for start in range(0, pixels.shape[2], 4):  # cv2.remap handles at most 4 channels
        chunk = np.ascontiguousarray(pixels[..., start : start + 4])
        out = cv2.remap(chunk, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        parts.append(out.reshape(out.shape[0], out.shape[1], -1))
    return np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0]


def blend_into(
    pixels: np.ndarray, warped: np.ndarray, mask: np.ndarray, box: Box, *,
    in_place: bool = False,
) -> np.ndarray:
    """``pixels`` with ``box`` replaced by ``mask·warped + (1 − mask)·pixels``.

    Pixels where ``mask == 0`` (and all pixels outside ``box``) are copied bit-for-bit.
    Returns a new array of ``pixels``' shape and dtype, or ``pixels`` itself, changed, with
    ``in_place``.

    For 8- and 16-bit integer pixels (and ``warped`` of their type) the mix is computed only
    where ``0 < mask < 1`` (the feather): where ``mask == 1`` it is ``warped`` itself (exact in
    float32), which is copied.
    """
    out = pixels if in_place else pixels.copy()
    region = out[box.slices()]
    if (np.issubdtype(pixels.dtype, np.integer) and pixels.dtype.itemsize <= 2
            and warped.dtype == pixels.dtype):
        np.copyto(region, warped, where=(mask == 1.0)[..., None])
        rows, cols = np.nonzero((mask > 0) & (mask != 1.0))
        if len(rows):
            region[rows, cols] = _mixed(region[rows, cols], warped[rows, cols],
                                        mask[rows, cols][:, None], pixels.dtype)
        return out
    base = region.astype(np.float32)
    mixed = warped.astype(np.float32)  # region + mask·(warped − region), in place
    mixed -= base
    mixed *= mask[..., None]
    mixed += base
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        np.rint(mixed, out=mixed)
        np.clip(mixed, info.min, info.max, out=mixed)
    np.copyto(region, mixed.astype(pixels.dtype), where=(mask > 0)[..., None])
    return out


def _mixed(base: np.ndarray, warped: np.ndarray, mask: np.ndarray, dtype) -> np.ndarray:
    """``base + mask·(warped − base)`` in float32 (``(N, C)`` integer pixels, ``mask``
    ``(N, 1)``), rounded and clipped to ``dtype``: :func:`blend_into`'s mix, operation for
    operation."""
    mixed = warped.astype(np.float32)
    mixed -= base.astype(np.float32)
    mixed *= mask
    mixed += base.astype(np.float32)
    info = np.iinfo(dtype)
    np.rint(mixed, out=mixed)
    np.clip(mixed, info.min, info.max, out=mixed)
    return mixed.astype(dtype)


@dataclass(frozen=True)
class LocalWarp:
    """A warp confined to a feathered region: control points plus the region they shape.

    Attributes:
        source: ``(N, 2)`` control points in the input image, ``(x, y)`` px.
        target: ``(N, 2)`` where they must appear in the output.
        polygons: each ``(K, 2)``; the union of their convex hulls, feathered, is where the
            warp shows. Empty: the warp is the identity.
        feather_px: Gaussian feather kernel size in pixels.
    """

    source: np.ndarray
    target: np.ndarray
    polygons: list[np.ndarray]
    feather_px: float

    @property
    def is_identity(self) -> bool:
        return not self.polygons or bool(np.all(self.source == self.target))


#: How :func:`apply_local_warp` fades a warp out over its feather: ``"colours"`` mixes the
#: warped and the unwarped pixels by the mask (the LLW data generator's behaviour, kept for
#: the datasets); ``"offsets"`` moves each pixel by the mask times its offset, never mixing
#: two places (a retouch: where the feather crosses an edge that the warp moves far, a colour
#: mix shows the edge twice, a ghost; :func:`~mirrorppr_cli.geometric.field.
#: fold_free_local_warp` also repairs fold-overs).
FEATHERS = ("colours", "offsets")


def apply_local_warp(
    pixels: np.ndarray, warp: LocalWarp, *, method: str = "fast", grid: int = DEFAULT_GRID,
    in_place: bool = False, feather: str = "colours",
) -> np.ndarray:
    """Warp ``pixels`` (``(H, W, C)``, any dtype cv2 can remap) inside the feathered region.

    ``method``: ``"fast"`` (coarse grid, within :func:`fast_path_bound`) or ``"exact"``.
    ``feather``: one of :data:`FEATHERS` (``"offsets"``: :func:`feathered_offsets` applied by
    :func:`apply_offsets`). Pixels outside the feathered region are returned bit-identical.
    ``in_place``:
    ``pixels`` itself is changed and returned (no whole-image copy; the caller owns it).
    """
    if feather not in FEATHERS:
        raise ValueError(f"feather must be one of {FEATHERS}, not {feather!r}")
    if feather == "offsets":  # the map's offset from each pixel, scaled by the mask
        offsets, moving, box = feathered_offsets(pixels.shape[:2], warp, method=method,
                                                 grid=grid)
        if box.empty:
            return pixels if in_place else pixels.copy()
        return apply_offsets(pixels, offsets, moving, box, in_place=in_place)
    if warp.is_identity or len(warp.source) < 2:
        return pixels if in_place else pixels.copy()
    mask, box = feather_mask(pixels.shape[:2], warp.polygons, warp.feather_px)
    if box.empty:
        return pixels if in_place else pixels.copy()
    map_x, map_y = _warp_planes(warp, mask, box, method, grid)
    warped = remap_xy(pixels, map_x, map_y)
    return blend_into(pixels, warped, mask, box, in_place=in_place)


def _warp_planes(warp: LocalWarp, mask: np.ndarray, box: Box, method: str,
                 grid: int) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` ``(h, w)``: the warp's inverse map over ``box`` (``method``: see
    :func:`apply_local_warp`; the fast path only where ``mask`` is not zero)."""
    if method == "exact":
        map_x, map_y = np.moveaxis(inverse_map_exact(box, warp.source, warp.target), -1, 0)
        return map_x, map_y
    if method == "fast":
        return tuple(_inverse_planes_fast(box, warp.source, warp.target, 1.0, grid,
                                          np.arange(box.height), np.arange(box.width),
                                          mask > 0))
    raise ValueError(f"unknown warp method {method!r}")


def _feathered(map_x: np.ndarray, map_y: np.ndarray, mask: np.ndarray, box: Box) -> np.ndarray:
    """``(h, w, 2)`` float32: the map's offsets from the pixels of ``box``, times ``mask``."""
    cols = (box.x0 + np.arange(box.width, dtype=np.float32))[None, :]
    rows = (box.y0 + np.arange(box.height, dtype=np.float32))[:, None]
    return np.dstack([mask * (map_x - cols), mask * (map_y - rows)]).astype(np.float32)


def feathered_offsets(shape: tuple[int, int], warp: LocalWarp, *, method: str = "fast",
                      grid: int = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray, Box]:
    """``(offsets, moving, box)``: the backward offsets ``(h, w, 2)`` float32 ``(dx, dy)`` px
    of ``warp`` on an image of ``shape`` ``(H, W)``, times its feather mask, over the mask's
    ``box``, and ``moving`` ``(h, w)`` bool, where the mask is not zero — what
    :func:`apply_local_warp` moves with ``feather="offsets"``. An empty box for the identity."""
    if warp.is_identity or len(warp.source) < 2:
        return np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), bool), Box(0, 0, 0, 0)
    mask, box = feather_mask(shape, warp.polygons, warp.feather_px)
    if box.empty:
        return np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), bool), box
    map_x, map_y = _warp_planes(warp, mask, box, method, grid)
    return _feathered(map_x, map_y, mask, box), mask > 0, box


def apply_offsets(pixels: np.ndarray, offsets: np.ndarray, moving: np.ndarray, box: Box, *,
                  in_place: bool = False) -> np.ndarray:
    """``pixels`` with the ``moving`` pixels of ``box`` (``(h, w)`` bool) sampled at their
    position plus ``offsets`` ``(h, w, 2)`` (backward, ``(dx, dy)`` px); every other pixel
    copied bit for bit (moved or copied, never mixed)."""
    cols = (box.x0 + np.arange(box.width, dtype=np.float32))[None, :]
    rows = (box.y0 + np.arange(box.height, dtype=np.float32))[:, None]
    warped = remap_xy(pixels, cols + offsets[..., 0], rows + offsets[..., 1])
    return blend_into(pixels, warped, moving.astype(np.float32), box, in_place=in_place)
