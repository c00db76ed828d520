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


# --------------------------------------------------------------------------- professional

#: Operations per pair of the professional subset, 1…7 (paper appendix A.4, in %; they sum
#: to 100.0 and are normalised anyway).
PRO_COUNT_PERCENT: tuple[float, ...] = (0.2, 2.5, 18.2, 19.7, 20.1, 20.2, 19.1)
PRO_MAX_OPS = len(PRO_COUNT_PERCENT)
#: Share of sampled operation instances (paper appendix A.4, in %): each face operation
#: ≈ 3.4 %, each body operation ≈ 5.0 %. Used as draw weights.
PRO_FACE_WEIGHT = 3.4
PRO_BODY_WEIGHT = 5.0


def professional_catalog() -> dict[str, float]:
    """Every operation the professional subset samples (the 22 face operations in catalog
    order, then the 5 body operations in body-catalog order) with its draw weight."""
    from ..ops import CATALOG
    from ..ops.body_catalog import BODY_CATALOG

    weights = {name: PRO_FACE_WEIGHT for name in CATALOG}
    weights.update({name: PRO_BODY_WEIGHT for name in BODY_CATALOG})
    return weights


def sample_pro_count(rng: np.random.Generator) -> int:
    """An operation count in 1…7 drawn from :data:`PRO_COUNT_PERCENT` (one uniform draw)."""
    cdf = np.cumsum(PRO_COUNT_PERCENT) / sum(PRO_COUNT_PERCENT)
    return int(min(np.searchsorted(cdf, rng.random(), side="right"), PRO_MAX_OPS - 1)) + 1


def sample_professional_ops(
    rng: np.random.Generator, available: list[str] | tuple[str, ...] | None = None
) -> list[OpRequest]:
    """1–7 distinct operations of the full catalog (22 face + 5 body), strengths as
    :func:`sample_ops`.

    The count comes from :data:`PRO_COUNT_PERCENT`, whatever ``available`` holds; the
    operations are then drawn one at a time without replacement, each with probability
    proportional to its weight (:func:`professional_catalog`) among those not yet drawn.
    ``available`` (default: all 27) restricts the draw, e.g. to the body operations whose
    body part the photo shows; order does not matter. Returned in catalog order.
    """
    weights = professional_catalog()
    names = [n for n in weights if available is None or n in set(available)]
    unknown = set(available or ()) - set(weights)
    if unknown:
        raise ValueError(f"not professional-subset operations: {sorted(unknown)}")
    count = min(sample_pro_count(rng), len(names))
    pool = list(range(len(names)))
    w = np.array([weights[n] for n in names], np.float64)
    chosen: list[int] = []
    for _ in range(count):
        cdf = np.cumsum(w[pool])
        pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        chosen.append(pool.pop(min(pick, len(pool) - 1)))
    requests = []
    for k in sorted(chosen):
        magnitude = float(rng.uniform(*STRENGTH_RANGE))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        requests.append(OpRequest(names[k], round(sign * magnitude, 2)))
    return requests
