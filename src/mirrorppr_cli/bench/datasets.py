"""Benchmarks in the official layout: ``ROOT/dataset.json``, a list of items with
``pair1_origin``, ``pair1_edited`` (exemplar pair), ``pair2_origin`` (query) and
``pair2_edited`` (ground truth), paths relative to ROOT. An item without ``pair2_edited``
(real retouching pairs, where nobody knows the query's ideal result) is scored for what the
method changed only.

Items may carry ``split`` (``dev`` or ``heldout``; written by ``mirrorppr build-dataset
--benchmark simface|selfaug``): :func:`load_benchmark` can keep one split only.

Names: ``simface100`` is looked up in the Hugging Face cache (dataset repository
``SJTU-DENG-Lab/SimFace-100``) and downloaded with ``huggingface-hub`` when online;
``proportrait500`` is not public and is read from ``--data DIR``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MissingWeightsError, UsageError

SIMFACE_REPO = "SJTU-DENG-Lab/SimFace-100"
KEYS = ("pair1_origin", "pair1_edited", "pair2_origin")
TRUTH_KEY = "pair2_edited"
SPLITS = ("dev", "heldout", "all")


@dataclass(frozen=True)
class Item:
    """One benchmark item; paths are absolute."""

    index: int
    exemplar_before: Path
    exemplar_after: Path
    query: Path
    truth: Path | None
    instruction: str = ""
    split: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    root: Path
    items: list[Item]


def _simface_root(allow_download: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingWeightsError("simface100 needs huggingface-hub: pip install huggingface-hub") from None
    try:
        return Path(snapshot_download(SIMFACE_REPO, repo_type="dataset", local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached
        if not allow_download:
            raise MissingWeightsError(
                f"SimFace-100 is not in the Hugging Face cache; run once online "
                f"(`huggingface-cli download {SIMFACE_REPO} --repo-type dataset`) or pass the "
                "folder holding its dataset.json as DATASET"
            ) from None
    try:
        return Path(snapshot_download(SIMFACE_REPO, repo_type="dataset"))
    except Exception as error:  # noqa: BLE001 - offline, or the hub refused
        raise MissingWeightsError(
            f"SimFace-100 could not be downloaded ({type(error).__name__}); run "
            f"`huggingface-cli download {SIMFACE_REPO} --repo-type dataset` where the hub is "
            "reachable, or pass the folder holding its dataset.json as DATASET"
        ) from None


def resolve_root(dataset: str, data: Path | None, *, allow_download: bool = True) -> tuple[str, Path]:
    """``(name, root folder)`` for a dataset name or path."""
    if dataset == "simface100":
        return dataset, (data or _simface_root(allow_download))
    if dataset == "proportrait500":
        if data is None:
            raise UsageError(
                "proportrait500 is not public: pass --data DIR, a folder in the official layout "
                "(DIR/dataset.json)"
            )
        return dataset, data
    path = Path(dataset)
    root = path.parent if path.name == "dataset.json" else path
    return root.name or str(root), root


def load_benchmark(dataset: str, data: Path | None = None, limit: int | None = None,
                   *, allow_download: bool = True, split: str | None = None) -> Benchmark:
    """Read ``dataset.json``; every path is checked to exist (InputError naming the first missing).

    ``split``: ``dev`` or ``heldout`` keeps the items of that split only (their indices stay
    those of ``dataset.json``; ``limit`` then counts within the split) and names the benchmark
    ``NAME-SPLIT``; None or ``all`` keeps every item. Asking for a split of a dataset whose
    items carry none is a UsageError.
    """
    if split not in (None, *SPLITS):
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    split = None if split == "all" else split
    name, root = resolve_root(dataset, data, allow_download=allow_download)
    index_file = root / "dataset.json"
    if not index_file.is_file():
        raise InputError(f"{index_file}: not found; DATASET must be a folder with dataset.json")
    entries = read_index(index_file)
    indexed = list(enumerate(entries))
    if split is not None:
        if not any(isinstance(e, dict) and "split" in e for e in entries):
            raise UsageError(f"--split {split}: the items of {index_file} carry no split (only "
                             "benchmarks built by `mirrorppr build-dataset` do); use --split all")
        indexed = [(i, e) for i, e in indexed if isinstance(e, dict) and e.get("split") == split]
        name = f"{name}-{split}"
    items = []
    for i, entry in indexed[:limit] if limit else indexed:
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise InputError(f"{index_file}: item {i} lacks {', '.join(missing)}")
        paths = [root / entry[k] for k in KEYS]
        paths.append(root / entry[TRUTH_KEY] if entry.get(TRUTH_KEY) else None)
        for p in paths:
            if p is not None and not p.is_file():
                raise InputError(f"{index_file}: item {i}: {p} does not exist")
        items.append(Item(i, *paths, instruction=str(entry.get("edit_instruction", "")),
                          split=entry.get("split")))
    return Benchmark(name, root, items)


def read_index(index_file: Path) -> list:
    """The item list of an official-layout ``dataset.json``; InputError when it is not one."""
    try:
        entries = json.loads(index_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{index_file}: not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise InputError(f"{index_file}: expected a list of items")
    return entries
