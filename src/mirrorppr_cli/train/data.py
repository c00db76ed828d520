"""Training quadruplets from build-dataset shards (paper §4, self-augmentation).

A quadruplet is ``(exemplar before, exemplar after, query, target)``: two *different* views of
one simulated pair (the standardised pair or one of its augmented views), so that the edit
appears at different positions, scales, rotations and mirrorings in the exemplar and the query.

Which quadruplet a training sample is depends only on ``(seed, sample index)``; a run resumed
at step ``s`` therefore sees exactly the samples an uninterrupted run would. Images come back
as float32 tensors in [0, 1], ``(3, side, side)``, letterboxed (aspect kept, grey padding) so
that every view keeps its true geometry.
"""

from __future__ import annotations

import glob
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import InputError

PAD_VALUE = 0.5


@dataclass(frozen=True)
class ImageRef:
    """Where one image lies inside a shard (byte offset and size of the member's data)."""

    shard: str
    offset: int
    size: int


@dataclass(frozen=True)
class PairViews:
    """All views of one simulated pair: ``views[i] = (before, after)``; view 0 is the base."""

    key: str
    views: tuple[tuple[ImageRef, ImageRef], ...]


def shard_files(spec: str | Path) -> list[Path]:
    """Shards named by a build folder (its ``shards/*.tar``), a single ``.tar`` or a glob."""
    path = Path(spec)
    if path.is_dir():
        found = sorted((path / "shards").glob("*.tar")) or sorted(path.glob("*.tar"))
    elif path.is_file():
        found = [path]
    else:
        found = sorted(Path(p) for p in glob.glob(str(spec)) if p.endswith(".tar"))
    if not found:
        raise InputError(f"no shards found at {spec}; run `mirrorppr build-dataset` first")
    return found


def index_shard(path: Path) -> list[PairViews]:
    """Index the pairs of one shard without decoding any image."""
    refs: dict[str, dict[str, ImageRef]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, rest = member.name.partition(".")
                role = rest.rsplit(".", 1)[0]  # src, tgt, a00_src, a00_tgt, json
                refs.setdefault(key, {})[role] = ImageRef(str(path), member.offset_data, member.size)
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"cannot read shard {path}: {exc}") from exc
    pairs = []
    for key in sorted(refs):
        roles = refs[key]
        if "src" not in roles or "tgt" not in roles:
            continue
        views = [(roles["src"], roles["tgt"])]
        k = 0
        while f"a{k:02d}_src" in roles and f"a{k:02d}_tgt" in roles:
            views.append((roles[f"a{k:02d}_src"], roles[f"a{k:02d}_tgt"]))
            k += 1
        pairs.append(PairViews(key, tuple(views)))
    return pairs


def letterbox(rgb: np.ndarray, side: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(side, side, 3)`` float32 in [0, 1]: fit, centre, grey pad."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    small = cv2.resize(rgb, (nw, nh), interpolation=interp).astype(np.float32) / 255.0
    out = np.full((side, side, 3), PAD_VALUE, np.float32)
    top, left = (side - nh) // 2, (side - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(small, 0.0, 1.0)
    return out


def read_ref(ref: ImageRef) -> np.ndarray:
    """Decode one shard member to ``(H, W, 3)`` uint8 RGB."""
    with open(ref.shard, "rb") as f:
        f.seek(ref.offset)
        data = f.read(ref.size)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class QuadrupletSource:
    """Deterministic quadruplets from shards: sample ``i`` is fixed by ``(seed, i)``."""

    def __init__(self, spec: str | Path, side: int, seed: int):
        self.pairs = [p for path in shard_files(spec) for p in index_shard(path)]
        self.pairs = [p for p in self.pairs if len(p.views) >= 2]
        if not self.pairs:
            raise InputError(f"the shards at {spec} hold no pair with at least two views; "
                             "build them with --augment 1 or more")
        self.side = side
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def choice(self, index: int) -> tuple[int, int, int]:
        """``(pair, exemplar view, query view)`` of sample ``index``; the views differ."""
        rng = np.random.default_rng([self.seed, index])
        pair = int(rng.integers(len(self.pairs)))
        ex, q = rng.choice(len(self.pairs[pair].views), size=2, replace=False)
        return pair, int(ex), int(q)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """``before, after, query, target``: ``(3, side, side)`` float32 in [0, 1]."""
        pair, ex, q = self.choice(index)
        views = self.pairs[pair].views
        images = {
            "before": views[ex][0], "after": views[ex][1],
            "query": views[q][0], "target": views[q][1],
        }
        return {name: torch.from_numpy(letterbox(read_ref(ref), self.side)).permute(2, 0, 1)
                for name, ref in images.items()}

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Stack the samples of ``indices`` into ``(B, 3, side, side)`` tensors."""
        samples = [self.sample(i) for i in indices]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class _ChunkDataset(torch.utils.data.Dataset):
    """Item ``i`` of a run's plan: the stacked tensors of one forward pass's samples."""

    def __init__(self, sources: list[QuadrupletSource], plan: list[tuple[int, tuple[int, ...]]]):
        self.sources = sources
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        stage, indices = self.plan[i]
        return self.sources[stage].batch(list(indices))


def seed_worker(seed: int, rank: int, worker_id: int) -> None:
    """Seed every RNG a loader worker could touch from the run's one seed, the process rank and
    the worker's id. The samples use none of them (sample ``i`` is fixed by ``(seed, i)``);
    this keeps any future random augmentation reproducible too."""
    import random

    value = ((seed * 1_000_003 + rank) * 1009 + worker_id) % (2 ** 32)
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def plan_loader(sources: list[QuadrupletSource], plan: list[tuple[int, tuple[int, ...]]], *,
                workers: int, seed: int, rank: int = 0, pin_memory: bool = False,
                prefetch: int = 2) -> torch.utils.data.DataLoader:
    """The batches of ``plan`` (``(stage, sample indices)`` per forward pass), in order.

    ``workers`` > 0 decodes the shards in that many background processes (torch DataLoader,
    ``prefetch`` batches ahead per worker); 0 reads them in this process. The tensors are the
    same either way: a batch depends only on its indices. The loader is iterated once per run,
    so its workers live for the whole run (persistent). It has its own generator seeded from
    ``seed``, so creating it leaves the global torch RNG (saved in checkpoints) untouched."""
    import functools

    if workers < 0:
        raise ValueError("workers must be >= 0")
    generator = torch.Generator()
    generator.manual_seed(seed)
    extra = {"prefetch_factor": prefetch, "worker_init_fn": functools.partial(seed_worker, seed, rank)
             } if workers else {}
    return torch.utils.data.DataLoader(
        _ChunkDataset(sources, plan), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=pin_memory, generator=generator, **extra)
