"""Named, parametric structural operations (the paper's LLW catalog) and their composition.

The names below are loaded on first use (PEP 562): the catalog pulls in the face landmark
regions and with them MediaPipe (~1 s), which a module that needs only :class:`OpRequest` or
the strength limit (``ops.request``) — the CLI at start-up, the review page — must not pay.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "CATALOG": "catalog", "SIMULATED_OPS": "catalog", "Operation": "catalog",
    "get_operation": "catalog", "OpRequest": "request", "parse_op": "compose",
    "plan_warp": "compose",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
