"""A named operation at a strength: the unit every catalog (face and body) takes."""

from __future__ import annotations

from dataclasses import dataclass

#: Strengths run from −MAX_STRENGTH to +MAX_STRENGTH; the sign is the direction. The one
#: limit of every catalog, parser, edit file and report.
MAX_STRENGTH = 100.0


@dataclass(frozen=True)
class OpRequest:
    """One named operation at one strength in [−100, 100]."""

    name: str
    strength: float


def clip_strength(strength: float) -> float:
    """``strength`` limited to ±:data:`MAX_STRENGTH` (a scaled edit may pass it)."""
    return max(-MAX_STRENGTH, min(MAX_STRENGTH, strength))
