"""The geometric engine: landmark-guided similarity-MLS warping on the CPU, no weights."""

from __future__ import annotations

import numpy as np

from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.warp import DEFAULT_GRID, apply_local_warp


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """A detector view of any supported pixel array: (H, W, 3) uint8 RGB."""
    from mirrorppr_cli.io import to_uint8

    p = to_uint8(pixels)
    if p.ndim == 2:
        p = p[..., None]
    if p.shape[2] in (1, 2):
        return np.repeat(p[..., :1], 3, axis=2)
    return np.ascontiguousarray(p[..., :3])


class WarpBackend:
    """Landmark-guided local warping (the paper's LLW), fast coarse-grid path by default."""

    name = "warp"
    summary = (
        "geometric engine on the CPU, no weights: similarity-MLS catalog ops; "
        "flow-measured exemplar edits carried through landmark correspondence"
    )
    capabilities = frozenset({"ops", "retouch"})

    def __init__(self, method: str = "fast", grid: int = DEFAULT_GRID, mode: str = "hybrid") -> None:
        if method not in ("fast", "exact"):
            raise ValueError(f"unknown warp method {method!r}")
        if mode not in ("flow", "catalog", "hybrid"):
            raise ValueError(f"unknown retouch mode {mode!r}")
        self.method = method
        self.grid = grid
        self.mode = mode

    def availability(self) -> tuple[bool, str]:
        """Always: the geometric engine needs no weights and no accelerator."""
        return True, "CPU, no weights needed"

    def apply_ops(
        self, pixels: np.ndarray, face_points: np.ndarray, requests: list[OpRequest]
    ) -> np.ndarray:
        """Compose ``requests`` on the face with ``face_points`` into one warp and apply it."""
        warp = plan_warp(face_points, requests)
        return apply_local_warp(pixels, warp, method=self.method, grid=self.grid)

    def apply_body_ops(self, pixels: np.ndarray, requests: list[OpRequest], *,
                       name: str = "image") -> np.ndarray:
        """Body operations (pose + person mask, one confined warp per op) on ``pixels``;
        ``name`` names the image in errors (no person found)."""
        from mirrorppr_cli.body import detect_body
        from mirrorppr_cli.ops.body_catalog import apply_body_ops

        rgb = pixels if pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8 \
            else _rgb8(pixels)
        return apply_body_ops(pixels, detect_body(rgb, name=name), requests)

    def retouch(
        self, before: np.ndarray, after: np.ndarray, query: np.ndarray, strength: float = 1.0
    ) -> np.ndarray:
        """Measure the edit of ``before``→``after`` and apply it to ``query`` (RGB uint8 arrays)."""
        from mirrorppr_cli.retouch_job import apply_exemplar, face_points, measure_exemplar

        exemplar = measure_exemplar(before, after, mode=self.mode)
        q_points, _, _ = face_points(query, None, "query")
        return apply_exemplar(exemplar, query, q_points, strength)
