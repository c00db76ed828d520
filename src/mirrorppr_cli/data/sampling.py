"""Random choices of the dataset builder, each from an explicit numpy Generator.

Every sample draws from its own generator, seeded by ``(seed, stable id of the source,
pair index)``, so a sample's bytes do not depend on worker count, order or engine.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..ops import SIMULATED_OPS, OpRequest

#: Operation count per pair: uniform on 1…8 (paper appendix A.4).
MIN_OPS, MAX_OPS = 1, 8
#: Strength magnitude: uniform on [30, 100]; weaker edits are too subtle to learn from at
#: the simulated stage (the subset has "pronounced deformations", paper §4). Sign: ±, equal odds.
STRENGTH_RANGE = (30.0, 100.0)


def sample_rng(seed: int, source_id: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for one sample: stable across runs, machines and worker layouts."""
    return np.random.default_rng([seed, zlib.crc32(source_id.encode()), index, stream])


def sample_ops(rng: np.random.Generator, max_ops: int = MAX_OPS) -> list[OpRequest]:
    """1–8 distinct base operations (types uniform), each with a random direction and strength.

    Only the official generator's eight operations (:data:`~mirrorppr_cli.ops.SIMULATED_OPS`)
    are sampled, whatever else the catalog holds.
    """
    names = list(SIMULATED_OPS)
    count = int(rng.integers(MIN_OPS, min(max_ops, len(names)) + 1))
    chosen = rng.choice(len(names), size=count, replace=False)
    requests = []
    for k in sorted(chosen.tolist()):
        magnitude = float(rng.uniform(*STRENGTH_RANGE))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        requests.append(OpRequest(names[k], round(sign * magnitude, 2)))
    return requests
