"""The geometric engine: landmark-guided similarity-MLS warping on the CPU, no weights."""

from __future__ import annotations

import numpy as np

from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.warp import DEFAULT_GRID, apply_local_warp


class WarpBackend:
    """Landmark-guided local warping (the paper's LLW), fast coarse-grid path by default."""

    name = "warp"
    summary = "landmark-guided similarity-MLS warping on the CPU (no weights needed)"
    capabilities = frozenset({"ops"})

    def __init__(self, method: str = "fast", grid: int = DEFAULT_GRID) -> None:
        if method not in ("fast", "exact"):
            raise ValueError(f"unknown warp method {method!r}")
        self.method = method
        self.grid = grid

    def apply_ops(
        self, pixels: np.ndarray, face_points: np.ndarray, requests: list[OpRequest]
    ) -> np.ndarray:
        """Compose ``requests`` on the face with ``face_points`` into one warp and apply it."""
        warp = plan_warp(face_points, requests)
        return apply_local_warp(pixels, warp, method=self.method, grid=self.grid)
