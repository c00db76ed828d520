"""Backends: swappable engines discovered through the ``mirrorppr.backends`` entry points.

A backend is a class with a ``name``, a one-line ``summary``, ``capabilities`` (what jobs it
can run: ``"ops"`` for parametric catalog operations, later ``"retouch"``) and methods for
those jobs. Third-party packages add backends by declaring an entry point in that group.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import UsageError
from .ops import OpRequest

ENTRY_POINT_GROUP = "mirrorppr.backends"
DEFAULT_BACKEND = "warp"


@runtime_checkable
class Backend(Protocol):
    name: str
    summary: str
    capabilities: frozenset[str]

    def apply_ops(
        self, pixels: np.ndarray, face_points: np.ndarray, requests: list[OpRequest]
    ) -> np.ndarray:
        """Apply catalog operations to one face of ``pixels`` (``(H, W, C)``)."""
        ...


def backend_names() -> list[str]:
    """Names of every installed backend, sorted."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_backend(name: str, **options) -> Backend:
    """Instantiate the backend registered as ``name``."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(backend_names()) or "none (is mirrorppr installed?)"
        raise UsageError(f"unknown backend {name!r}; installed backends: {known}")
    return matches[0].load()(**options)


def require(backend: Backend, capability: str) -> None:
    """UsageError unless ``backend`` can run ``capability`` jobs."""
    if capability not in backend.capabilities:
        raise UsageError(
            f"backend {backend.name!r} cannot run {capability!r} jobs "
            f"(it can: {', '.join(sorted(backend.capabilities))})"
        )
