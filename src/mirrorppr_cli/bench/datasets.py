"""Benchmarks in the official layout: ``ROOT/dataset.json``, a list of items with
``pair1_origin``, ``pair1_edited`` (exemplar pair), ``pair2_origin`` (query) and
``pair2_edited`` (ground truth), paths relative to ROOT. An item without ``pair2_edited``
(real retouching pairs, where nobody knows the query's ideal result) is scored for what the
method changed only.

Items may carry ``split`` (``dev`` or ``heldout``; written by ``mirrorppr build-dataset
--benchmark simface|selfaug``): :func:`load_benchmark` can keep one split only.

The file is checked before anything is read (:func:`check_items`, by hand: the schema is
small): every item an object, the three image keys non-empty path strings (relative), the
truth a string or null, ``edit_instruction`` and ``split`` strings. A path that leads outside
the benchmark folder (``..``, absolute, or a symlink out of it) is refused unless the caller
allows it (``bench --allow-outside-root``); a Hugging Face cache snapshot counts its repository
folder as inside (its files are symlinks into ``../../blobs``).

Names: ``simface100`` is looked up in the Hugging Face cache (dataset repository
``SJTU-DENG-Lab/SimFace-100``) and downloaded with ``huggingface-hub`` when online;
``proportrait500`` is not public and is read from ``--data DIR``.
"""

from __future__ import annotations

import json
import os
import stat
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
                f"(`hf download {SIMFACE_REPO} --repo-type dataset`) or pass the "
                "folder holding its dataset.json as DATASET"
            ) from None
    try:
        return Path(snapshot_download(SIMFACE_REPO, repo_type="dataset"))
    except Exception as error:  # noqa: BLE001 - offline, or the hub refused
        raise MissingWeightsError(
            f"SimFace-100 could not be downloaded ({type(error).__name__}); run "
            f"`hf download {SIMFACE_REPO} --repo-type dataset` where the hub is "
            "reachable, or pass the folder holding its dataset.json as DATASET"
        ) from None


def resolve_root(dataset: str, data: Path | None, *, allow_download: bool = True) -> tuple[str, Path]:
    """``(name, root folder)`` for a dataset name or path."""
    if dataset == "simface100":
        return dataset, (data or _simface_root(allow_download))
    if dataset == "proportrait500":
        if data is None:
            raise UsageError(
                "proportrait500 is not public (the paper's 500 professional combinations, made by "
                "its authors with a commercial retouching API; ask them for it): pass --data DIR, "
                "a folder in the official layout (DIR/dataset.json); for real pairs of your own, "
                "`mirrorppr build-dataset --benchmark selfaug --pairs DIR` makes one"
            )
        return dataset, data
    path = Path(dataset)
    root = path.parent if path.name == "dataset.json" else path
    return root.name or str(root), root


def load_benchmark(dataset: str, data: Path | None = None, limit: int | None = None,
                   *, allow_download: bool = True, split: str | None = None,
                   allow_outside_root: bool = False) -> Benchmark:
    """Read and check ``dataset.json`` (InputError, exit 3, naming the item and the key).

    Every item is checked against the schema first (:func:`check_items`); the kept items'
    paths must lie inside the benchmark folder (unless ``allow_outside_root``) and be regular
    files. ``split``: ``dev`` or ``heldout`` keeps the items of that split only (their indices
    stay those of ``dataset.json``; ``limit`` then counts within the split) and names the
    benchmark ``NAME-SPLIT``; None or ``all`` keeps every item. Asking for a split of a
    dataset whose items carry none is a UsageError. No item left is no error here (``bench``
    refuses it).
    """
    if split not in (None, *SPLITS):
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    split = None if split == "all" else split
    name, root = resolve_root(dataset, data, allow_download=allow_download)
    index_file = root / "dataset.json"
    if not index_file.is_file():
        raise InputError(f"{index_file}: not found; DATASET must be a folder with dataset.json")
    entries = read_index(index_file)
    check_items(entries, index_file)
    indexed = list(enumerate(entries))
    if split is not None:
        if not any("split" in e for e in entries):
            raise UsageError(f"--split {split}: the items of {index_file} carry no split (only "
                             "benchmarks built by `mirrorppr build-dataset` do); use --split all")
        indexed = [(i, e) for i, e in indexed if e.get("split") == split]
        name = f"{name}-{split}"
    inside = None if allow_outside_root else _real(containment_root(root))
    items = []
    for i, entry in indexed[:limit] if limit else indexed:
        paths: list[Path | None] = []
        for key in (*KEYS, TRUTH_KEY):
            if not entry.get(key):  # only the truth may be absent (check_items)
                paths.append(None)
                continue
            path = root / entry[key]
            if inside is not None:
                _check_inside(path, entry[key], inside, f"{index_file}: item {i}: {key}")
            _check_file(path, f"{index_file}: item {i}: {key}")
            paths.append(path)
        items.append(Item(i, *paths, instruction=entry.get("edit_instruction") or "",
                          split=entry.get("split")))
    return Benchmark(name, root, items)


def read_index(index_file: Path) -> list:
    """The item list of an official-layout ``dataset.json``; InputError when it is not one."""
    try:
        entries = json.loads(index_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{index_file}: not valid JSON ({error})") from None
    except RecursionError:
        raise InputError(f"{index_file}: not a benchmark index (nested too deeply)") from None
    if not isinstance(entries, list):
        raise InputError(f"{index_file}: expected a list of items")
    return entries


def _kind(value) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def check_items(entries: list, index_file: Path) -> None:
    """InputError (exit 3, one line naming the item's index and the key) unless every entry
    is an object whose ``pair1_origin``, ``pair1_edited`` and ``pair2_origin`` are non-empty
    path strings, whose ``pair2_edited`` is one, null or empty (no ground truth), and whose
    ``edit_instruction`` and ``split`` are strings or null where present. Other keys are
    free (the official files carry more)."""
    for i, entry in enumerate(entries):
        where = f"{index_file}: item {i}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be an object with {', '.join(KEYS)}, "
                             f"not {_kind(entry)}")
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}")
        for key in (*KEYS, TRUTH_KEY):
            value = entry.get(key)
            if key == TRUTH_KEY and value in (None, ""):
                continue
            if not isinstance(value, str) or not value:
                raise InputError(f"{where}: {key} must be a file path (a non-empty string), "
                                 f"not {'an empty string' if value == '' else _kind(value)}")
            if "\0" in value:
                raise InputError(f"{where}: {key} holds a NUL character")
        for key in ("edit_instruction", "split"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: {key} must be a string, not {_kind(value)}")


def containment_root(root: Path) -> Path:
    """The folder a benchmark's files must lie in: ``root``, or for a Hugging Face cache
    snapshot (``…/snapshots/REV``, files linked into ``…/blobs``) its repository folder."""
    parent = root.parent
    if parent.name == "snapshots" and (parent.parent / "blobs").is_dir():
        return parent.parent
    return root


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{path}: cannot be resolved ({error})") from None


def _check_inside(path: Path, written: str, inside: Path, where: str) -> None:
    """InputError unless ``path`` (``written`` in the index: relative, ``..`` or absolute)
    resolves, symlinks followed, to a place inside ``inside``."""
    if not _real(path).is_relative_to(inside):
        raise InputError(f"{where} {written!r} leads outside the benchmark folder {inside}; "
                         "pass --allow-outside-root to read it")


def _check_file(path: Path, where: str) -> None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise InputError(f"{where}: {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{where}: {path} is not a regular file")
