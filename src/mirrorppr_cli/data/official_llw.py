"""The official LLW data generator's warp evaluation and blending, re-implemented.

What is re-implemented: how the paper authors' released generator (SJTU-DENG-Lab/MirrorPPR,
``mirrorppr/data/llw_face_editor.py`` at commit 42f1200; read, not copied) turns one
operation's control points into an edited image. Its behaviour, as read there and in
``/work/shared/notes/facts.md`` §2:

* **Inverse map on a coarse grid.** Similarity MLS (α = 1) from the *target* control points to
  the *source* ones, evaluated only at the nodes ``linspace(0, w, w // 30 + 1)`` ×
  ``linspace(0, h, h // 30 + 1)`` (its default ``grid_size`` is 30 px), then up-sampled to
  the full frame with ``cv2.resize`` (bilinear). ``cv2.resize`` registers node ``k`` at pixel
  ``(k + 0.5)·w/n − 0.5`` while the node was evaluated at ``k·w/(n − 1)``: the map is
  shifted by up to about half a cell (≈ 15 px) even where nothing moves. That shift is part
  of the official behaviour and is kept here on purpose (:func:`official_upsample`).
* **Full-frame remap**, bilinear (``cv2.remap``; the official call leaves the border mode at
  OpenCV's default, constant black).
* **Mask**: the filled convex hull of each landmark group of the operation, blurred by a
  Gaussian whose kernel is ``int(0.05 · min(h, w))`` rounded up to odd (``blur_ratio`` 0.05,
  σ from the kernel size), as float32 in [0, 1] (:func:`official_blur_ksize`).
* **Blend** in float32, ``warped·m + image·(1 − m)``, converted back with ``astype(uint8)``
  (truncation, not rounding). Where ``m`` is 0 the image is unchanged.
* **Several operations are applied one after the other**, each with its own warp and mask,
  and the landmarks are detected again on the intermediate image before each operation
  (:func:`official_generate`).
* **Strength**: the released code has no random strength sampler. Operations are passed as
  ``name:strength`` (the README's example: ``eye_resize:100,nose_alar:-100``) and a missing
  strength defaults to 100; the paper lists 16 *directed* operations (8 types × 2
  directions). :data:`OFFICIAL_STRENGTH` is therefore full strength, ±100.

What is *not* the official one here: which landmarks move where (control points and mask
polygons) comes from this project's catalog (:func:`mirrorppr_cli.ops.plan_warp`), its own
re-implementation of the eight official operations; the landmarks are the project's float
coordinates (the official code truncates them to integers).

Two users: ``benchmarks/bench_warp.py`` times and measures :func:`official_apply` with its
defaults (the catalog's feather width, replicated border, rounding), and
``mirrorppr build-dataset --benchmark simface --generator official`` makes ground truth with
:func:`official_generate` (every official setting above).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..geometric.mls import LocalWarp, mls_similarity

#: The official grid's node spacing in px (``grid_size`` 30 in its default parameters).
OFFICIAL_NODE_SPACING = 30
#: The official mask's Gaussian kernel, as a fraction of the image's short side.
OFFICIAL_BLUR_RATIO = 0.05
#: Strength magnitude of every official operation (direction ±, see the module docstring).
OFFICIAL_STRENGTH = 100.0


def official_nodes(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The official grid's node coordinates: ``linspace(0, w, w // 30 + 1)`` and the same in y."""
    height, width = shape
    xs = np.linspace(0, width, width // OFFICIAL_NODE_SPACING + 1)
    ys = np.linspace(0, height, height // OFFICIAL_NODE_SPACING + 1)
    return xs, ys


def official_upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(ny, nx, 2)`` node values → ``(h, w, 2)`` float32 with ``cv2.resize`` (INTER_LINEAR)."""
    height, width = shape
    coarse = coarse.astype(np.float32)
    return np.stack(
        [
            cv2.resize(coarse[..., k], (width, height), interpolation=cv2.INTER_LINEAR)
            for k in range(2)
        ],
        axis=-1,
    )


def official_inverse_map(shape: tuple[int, int], warp: LocalWarp) -> np.ndarray:
    """The official generator's inverse map: MLS at the ~30 px nodes, resized bilinearly.

    Returns ``(h, w, 2)`` float32 input ``(x, y)`` over the full frame.
    """
    gx, gy = np.meshgrid(*official_nodes(shape))
    coarse = mls_similarity(np.stack([gx, gy], axis=-1), warp.target, warp.source)
    return official_upsample(coarse, shape)


def official_blur_ksize(shape: tuple[int, int]) -> int:
    """The official mask blur's kernel size: ``int(0.05 · min(h, w))``, made odd (at least 1)."""
    ksize = int(min(shape) * OFFICIAL_BLUR_RATIO)
    return ksize + 1 if ksize % 2 == 0 else ksize


def official_mask(shape: tuple[int, int], warp: LocalWarp, ksize: int | None = None) -> np.ndarray:
    """The official generator's mask: filled convex hulls blurred over the full frame.

    Returns ``(h, w)`` float32 in [0, 1]. ``ksize``: the Gaussian kernel size (odd); None:
    ``warp.feather_px`` rounded up to odd (at least 3), as in
    :func:`mirrorppr_cli.geometric.mls.feather_mask` (what ``benchmarks/bench_warp.py`` compares);
    the official generator's own size is :func:`official_blur_ksize`.
    """
    canvas = np.zeros(shape, np.uint8)
    for poly in warp.polygons:
        hull = cv2.convexHull(np.round(np.asarray(poly)).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, 255)
    if ksize is None:
        ksize = max(3, int(np.ceil(warp.feather_px)) | 1)
    return cv2.GaussianBlur(canvas, (ksize, ksize), 0).astype(np.float32) / 255.0


def official_apply(
    pixels: np.ndarray, warp: LocalWarp, *, ksize: int | None = None, truncate: bool = False,
    border: int = cv2.BORDER_REPLICATE,
) -> np.ndarray:
    """The official approach end to end: full-frame map, remap, mask and float32 blend.

    The defaults are those ``benchmarks/bench_warp.py`` measures (mask kernel from
    ``warp.feather_px``, replicated border, rounding to nearest). The official generator's
    own settings: ``ksize=official_blur_ksize(shape), truncate=True,
    border=cv2.BORDER_CONSTANT`` (see :func:`official_generate`). Pixels where the mask is 0
    are returned unchanged either way.
    """
    shape = pixels.shape[:2]
    inverse = official_inverse_map(shape, warp)
    warped = cv2.remap(
        pixels,
        inverse[..., 0],
        inverse[..., 1],
        cv2.INTER_LINEAR,
        borderMode=border,
    )
    alpha = official_mask(shape, warp, ksize)[..., None]
    if truncate:  # the official order of operations, all in float32, then astype(uint8)
        mixed = warped * alpha + pixels * (1.0 - alpha)
        return mixed.astype(np.uint8)
    mixed = warped.astype(np.float32) * alpha + pixels.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def official_generate(pixels: np.ndarray, points: np.ndarray, requests, *,
                      detect=None) -> tuple[np.ndarray, dict]:
    """Apply ``requests`` the way the official generator does: one operation at a time.

    Each operation is planned with :func:`~mirrorppr_cli.ops.plan_warp` on the current
    landmarks and applied with :func:`official_apply` at the official settings (kernel
    :func:`official_blur_ksize`, constant border, truncation); before every operation after
    the first, the landmarks are detected again on the intermediate image (``detect``:
    ``rgb → (478, 2) points or None``; default the largest face of
    :func:`~mirrorppr_cli.geometric.landmarks.find_faces`). When that detection finds nothing, the
    previous landmarks are used (the official code stops instead) and it is counted.

    Args:
        pixels: ``(H, W, 3)`` uint8 RGB.
        points: ``(478, 2)`` landmarks of ``pixels``.
        requests: :class:`~mirrorppr_cli.ops.OpRequest` list, applied in order.

    Returns:
        ``(edited, info)``; ``info``: ``{"redetect_failed": int}``.
    """
    from ..ops import plan_warp

    if detect is None:
        from ..geometric.landmarks import find_faces

        def detect(rgb):
            faces = find_faces(rgb)
            return faces[0].points if faces else None

    current = np.ascontiguousarray(pixels)
    ksize = official_blur_ksize(current.shape[:2])
    failed = 0
    for k, request in enumerate(requests):
        if k > 0:
            found = detect(current)
            if found is None:
                failed += 1
            else:
                points = found
        warp = plan_warp(points, [request])
        if warp.is_identity:
            continue
        current = official_apply(current, warp, ksize=ksize, truncate=True,
                                 border=cv2.BORDER_CONSTANT)
    return current, {"redetect_failed": failed}
