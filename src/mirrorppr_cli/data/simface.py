"""A SimFace-style cross-identity benchmark in the official layout.

``ROOT/dataset.json`` is a list of items with ``pair1_origin``, ``pair1_edited`` (the exemplar
pair), ``pair2_origin`` (the query) and ``pair2_edited`` (its ground truth), paths relative to
ROOT, plus ``edit_instruction`` (a readable list of the operations) and our ``ops``. Each item
applies one random operation combination to face-centred crops of two different source
portraits (one source file is taken to be one person).

Two generators make the edits (``generator``):

* ``catalog``: the project's own warp (:func:`~mirrorppr_cli.geometric.mls.apply_local_warp` of one
  :func:`~mirrorppr_cli.ops.plan_warp` of all the item's operations), strengths uniform in
  ±[30, 100]. A method built on the same catalog is then measured against itself.
* ``official``: the official LLW generator's behaviour (:mod:`.official_llw`): the same
  operation types, directions and identity pairs for a given seed, but every operation at
  full strength ±100 (the official code's default and examples; it has no strength sampler),
  applied one at a time with the official 30 px grid, ``cv2.resize`` up-sampling,
  full-frame remap and Gaussian-feathered hull mask, landmarks detected again between
  operations. Control points still come from the project's ``plan_warp``.

Every item carries ``split``: ``dev`` or ``heldout``, from a stable hash of the query's source
person (:func:`split_of`), so that a person's items are always in the same split.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import OutputError, UsageError
from ..geometric.landmarks import find_faces
from ..geometric.mls import apply_local_warp
from ..inputs import expand_inputs
from ..io import read_image
from ..ops import OpRequest, plan_warp
from .filters import FaceFilter, reject_reason
from .official_llw import OFFICIAL_STRENGTH, official_generate
from .pairs import encode
from .sampling import MAX_OPS, sample_ops, sample_rng
from .shards import write_atomic, write_json_atomic

#: Crop side as a multiple of the face's landmark box (FFHQ-like framing).
CROP_FACE_RATIO = 2.2
#: Edit generators of :func:`build_simface`.
GENERATORS = ("catalog", "official")
#: Share of held-out keys (persons, pairs) in :func:`split_of`: one in three.
HELDOUT_EVERY = 3


def split_of(key: str) -> str:
    """``"heldout"`` for about one key in :data:`HELDOUT_EVERY`, else ``"dev"``.

    Stable across runs, machines and seeds: the first 8 bytes of the key's SHA-256 modulo
    :data:`HELDOUT_EVERY`. ``key`` names what must never be split (a person, a pair).
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") % HELDOUT_EVERY == 0 else "dev"


@dataclass
class Identity:
    source: str
    rgb: np.ndarray
    points: np.ndarray


def face_crop(rgb: np.ndarray, points: np.ndarray, side_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop centred on the face, resized to at most ``side_out``; points mapped along.

    The square is :data:`CROP_FACE_RATIO` × the landmark box, shifted (not shrunk) to stay in
    the frame, and shrunk only when the frame is smaller. Returns ``(crop, points)``.
    """
    height, width = rgb.shape[:2]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    side = min(CROP_FACE_RATIO * max(x1 - x0, y1 - y0), width, height)
    side = int(side) // 16 * 16 if side >= 16 else int(round(side))  # sides ×16, as the official sets
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    crop = rgb[top : top + side, left : left + side]
    out = min(side_out // 16 * 16 or side_out, side)
    scale = out / side
    if out != side:
        crop = cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA)
    mapped = (points - [left, top] + 0.5) * scale - 0.5
    return np.ascontiguousarray(crop), mapped


def load_identities(faces_dir: Path, side: int, face_filter: FaceFilter) -> tuple[list[Identity], dict]:
    """Usable face crops of every portrait in ``faces_dir`` and the skipped ones with reasons."""
    identities, skipped = [], {}
    for path in expand_inputs(faces_dir):
        name = str(path.relative_to(faces_dir))
        try:
            rgb = np.ascontiguousarray(read_image(path).rgb8())
        except Exception as error:  # noqa: BLE001 - reported, never fatal
            skipped[name] = f"unreadable: {error}"
            continue
        faces = find_faces(rgb)
        reason = reject_reason(faces, face_filter, float(np.sqrt(rgb.shape[0] * rgb.shape[1])))
        if reason:
            skipped[name] = reason
            continue
        crop, _ = face_crop(rgb, faces[0].points, side)
        found = find_faces(crop)  # re-detect on the crop: the points the warp will use
        if not found:
            skipped[name] = "no_face"
            continue
        identities.append(Identity(name, crop, found[0].points))
    return identities, skipped


def describe(ops) -> str:
    return ", ".join(f"{r.name} {r.strength:+g}" for r in ops)


def build_simface(
    faces_dir: Path, out: Path, *, combos: int, seed: int, side: int = 1024,
    force: bool = False, face_filter: FaceFilter | None = None, on_item=None,
    max_ops: int = MAX_OPS, generator: str = "catalog",
) -> dict:
    """Write the benchmark; returns a summary. ``dataset.json`` is written last, atomically.

    ``max_ops``: each item applies 1 … ``max_ops`` operations (default: the official 1–8).
    ``generator``: ``catalog`` or ``official`` (see the module docstring); for one seed both
    draw the same operation types, directions and identity pairs."""
    if generator not in GENERATORS:
        raise UsageError(f"--generator must be one of {', '.join(GENERATORS)}, not {generator!r}")
    index_file = out / "dataset.json"
    if index_file.exists() and not force:
        raise OutputError(f"{index_file}: exists; pass --force to rebuild the benchmark")
    identities, skipped = load_identities(faces_dir, side, face_filter or FaceFilter())
    if len(identities) < 2:
        raise UsageError(
            f"{faces_dir}: {len(identities)} usable face(s); a cross-identity benchmark needs "
            "at least 2 (see the skipped list with --json)"
        )
    items = []
    redetect_failed = 0
    for i in range(combos):
        rng = sample_rng(seed, "simface", i)
        requests = sample_ops(rng, max_ops)
        if generator == "official":
            requests = [OpRequest(r.name, math.copysign(OFFICIAL_STRENGTH, r.strength))
                        for r in requests]
        first, second = (int(k) for k in rng.choice(len(identities), size=2, replace=False))
        item = {"edit_instruction": describe(requests),
                "ops": [{"name": r.name, "strength": r.strength} for r in requests],
                "generator": generator, "split": split_of(identities[second].source)}
        for slot, who in (("pair1", identities[first]), ("pair2", identities[second])):
            if generator == "official":
                edited, info = official_generate(who.rgb, who.points, requests)
                redetect_failed += info["redetect_failed"]
            else:
                edited = apply_local_warp(who.rgb, plan_warp(who.points, requests))
            for kind, pixels in (("origin", who.rgb), ("edited", edited)):
                rel = f"images/{i:04d}_{slot}_{kind}.png"
                write_atomic(out / rel, encode(pixels, "png"))
                item[f"{slot}_{kind}"] = rel
            item[f"{slot}_source"] = who.source
        items.append(item)
        if on_item:
            on_item(i)
    write_atomic(index_file, (json.dumps(items, indent=1) + "\n").encode())
    persons = sorted({who.source for who in identities})
    summary = {"items": len(items), "identities": len(identities),
               "skipped": skipped, "seed": seed, "side": side, "generator": generator,
               "splits": {name: sum(item["split"] == name for item in items)
                          for name in ("dev", "heldout")},
               "heldout_identities": [p for p in persons if split_of(p) == "heldout"]}
    if max_ops != MAX_OPS:
        summary["max_ops"] = max_ops
    if generator == "official":
        summary["strength"] = OFFICIAL_STRENGTH
        summary["redetect_failed"] = redetect_failed
    write_json_atomic(out / "summary.json", summary)
    return summary
