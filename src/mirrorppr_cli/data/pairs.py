"""One source portrait → retouched pairs and their self-augmented query pairs.

Two subsets: *simulated* (:func:`make_samples`: the official generator's eight face
operations on near-frontal portraits) and *professional* (:func:`make_professional_samples`:
1–7 operations of the full 27-operation catalog, face and body, on half- and full-body
portraits of one person). Both write the same tar member layout.
"""

from __future__ import annotations

import io as _io
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..geometric.landmarks import find_faces
from ..geometric.mls import apply_local_warp, mls_similarity, pixel_grid
from ..io import read_image
from ..ops import plan_warp
from .augment import SIDE_MULTIPLE, apply_augmentation, sample_augmentation, transform_points
from .filters import FaceFilter, body_reject_reason, reject_reason
from .sampling import MAX_OPS, professional_catalog, sample_ops, sample_professional_ops, sample_rng


@dataclass(frozen=True)
class PairSettings:
    """What to make of each source. ``area``: pixels of the standardised pair and of each
    augmented view (the paper uses ≈1 MP: 1024²)."""

    pairs: int = 1
    augmentations: int = 4
    area: int = 1024 * 1024
    image_format: str = "png"
    face_filter: FaceFilter = field(default_factory=FaceFilter)
    max_ops: int = MAX_OPS  # simulated pairs: 1 … max_ops operations


@dataclass
class SourceResult:
    """Samples made from one source (shard members and records), or why it was skipped."""

    source: str
    records: list[dict] = field(default_factory=list)
    members: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: str | None = None


def standard_size(width: int, height: int, area: int) -> tuple[int, int]:
    """``(w, h)`` of area ≈ ``area`` with the source's aspect, both multiples of 16."""
    scale = math.sqrt(area / (width * height))
    w = max(SIDE_MULTIPLE, round(width * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    h = max(SIDE_MULTIPLE, round(height * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    return int(w), int(h)


def standardise(rgb: np.ndarray, area: int) -> np.ndarray:
    """Resize ``rgb`` (``(H, W, 3)`` uint8) to :func:`standard_size`."""
    w, h = standard_size(rgb.shape[1], rgb.shape[0], area)
    if (w, h) == (rgb.shape[1], rgb.shape[0]):
        return rgb.copy()
    shrink = w * h < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def encode(pixels: np.ndarray, image_format: str) -> bytes:
    """Deterministic PNG (or JPEG q95 4:4:4) bytes of ``(H, W, 3)`` uint8 RGB."""
    buf = _io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if image_format == "png":
        img.save(buf, "PNG", compress_level=1)  # ~5x faster than level 6, ~13 % larger
    else:
        img.save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def source_key(source: str) -> str:
    """A shard-safe key for a source path: its stem (dots replaced) plus a CRC of the path."""
    stem = Path(source).stem.replace(".", "_")
    return f"{stem}-{zlib.crc32(source.encode()):08x}"


def _r(points: np.ndarray) -> list:
    return np.round(points, 3).tolist()


def pair_record(key: str, source: str, index: int, size: tuple[int, int], requests,
                points: np.ndarray, warp) -> dict:
    """The manifest record of one pair (augmentations are added by :func:`record_augmentation`).

    Landmarks of the edited image: control points exactly, the rest through the forward MLS
    deformation (a sub-pixel estimate).
    """
    edited_points = mls_similarity(points, warp.source, warp.target)
    return {
        "key": key,
        "source": source,
        "pair_index": index,
        "size": list(size),
        "ops": [{"name": r.name, "strength": r.strength} for r in requests],
        "landmarks": _r(points),
        "landmarks_edited": _r(edited_points),
        "control_source": _r(warp.source),
        "control_target": _r(warp.target),
        "augmentations": [],
    }


def record_augmentation(record: dict, aug, points: np.ndarray, size: tuple[int, int]) -> None:
    """Add one view's parameters and its landmarks to a pair record."""
    record["augmentations"].append(aug.to_dict())
    record.setdefault("augmented_landmarks", []).append(_r(transform_points(points, aug, size)))


def _standard_source(faces_dir: Path, source: str,
                     settings: PairSettings) -> tuple[np.ndarray, list, str | None]:
    """``(standardised RGB, faces found, why the source is skipped or None)``."""
    rgb = standardise(np.ascontiguousarray(read_image(faces_dir / source).rgb8()), settings.area)
    faces = find_faces(rgb)
    return rgb, faces, reject_reason(faces, settings.face_filter,
                                     math.sqrt(rgb.shape[0] * rgb.shape[1]))


def make_samples(faces_dir: Path, source: str, seed: int, settings: PairSettings) -> SourceResult:
    """Every pair and augmented view of one source, fully determined by ``(seed, source)``."""
    result = SourceResult(source)
    rgb, faces, result.skipped = _standard_source(faces_dir, source, settings)
    if result.skipped:
        return result
    points = faces[0].points
    size = (rgb.shape[1], rgb.shape[0])
    base = source_key(source)
    for j in range(settings.pairs):
        rng = sample_rng(seed, source, j)
        requests = sample_ops(rng, settings.max_ops)
        warp = plan_warp(points, requests)
        edited = apply_local_warp(rgb, warp)
        key = f"{base}-p{j:03d}"
        record = pair_record(key, source, j, size, requests, points, warp)
        _add_views(result, record, rgb, edited, points, points, (seed, source, j), settings)
    return result


def _add_views(result: SourceResult, record: dict, rgb: np.ndarray, edited: np.ndarray,
               points: np.ndarray, keep: np.ndarray, ids: tuple[int, str, int],
               settings: PairSettings) -> None:
    """Encode the pair and its ``settings.augmentations`` self-augmented views (each crop
    keeps every point of ``keep``), record the views, append the sample to ``result``."""
    seed, source, j = ids
    key, ext, size = record["key"], settings.image_format, (rgb.shape[1], rgb.shape[0])
    members = [(f"{key}.src.{ext}", encode(rgb, ext)), (f"{key}.tgt.{ext}", encode(edited, ext))]
    for k in range(settings.augmentations):
        aug = sample_augmentation(sample_rng(seed, source, j, stream=k + 1), size, keep, settings.area)
        record_augmentation(record, aug, points, size)
        members.append((f"{key}.a{k:02d}_src.{ext}", encode(apply_augmentation(rgb, aug), ext)))
        members.append(
            (f"{key}.a{k:02d}_tgt.{ext}", encode(apply_augmentation(edited, aug), ext))
        )
    result.records.append(record)
    # WebDataset reads a sample's files as one contiguous run of members
    result.members.append((f"{key}.json", json.dumps(record, sort_keys=True).encode()))
    result.members.extend(members)


# --------------------------------------------------------------------------- professional

#: Moving outline points of a body operation that move at least this far (px) are kept
#: inside every augmented view's crop, with the face, so each view shows the whole edit.
KEEP_MOVE_PX = 1.0


def visible_body_ops(body) -> list[str]:
    """The body operations (body-catalog order) whose part ``body`` shows: at full strength
    some of the person's outline moves (:meth:`BodyOperation.controls` does not raise
    :class:`~mirrorppr_cli.ops.body_catalog.BodyPartNotVisible`)."""
    from ..ops.body_catalog import BODY_CATALOG, MAX_STRENGTH, BodyPartNotVisible

    shown = []
    for name, op in BODY_CATALOG.items():
        try:
            op.controls(body, MAX_STRENGTH)
        except BodyPartNotVisible:
            continue
        shown.append(name)
    return shown


def body_forward(points: np.ndarray, warp) -> np.ndarray:
    """Where ``points`` (``(N, 2)`` px of the body warp's input) lie in its output.

    The body warp is a sampling map (output pixel → input position), identity outside
    :meth:`BodyWarp.changed`; points there stay put, others are found by fixed-point
    iteration on the bilinearly sampled map.
    """
    out = np.array(points, np.float64)
    if warp.is_identity or len(out) == 0:
        return out
    box = warp.box
    offset = warp.sample_map.astype(np.float64) - pixel_grid(box)

    def shift(q: np.ndarray) -> np.ndarray:
        x = np.clip(q[:, 0] - box.x0, 0, box.width - 1.000001)
        y = np.clip(q[:, 1] - box.y0, 0, box.height - 1.000001)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, box.width - 1), np.minimum(y0 + 1, box.height - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        d = ((1 - fy) * ((1 - fx) * offset[y0, x0] + fx * offset[y0, x1])
             + fy * ((1 - fx) * offset[y1, x0] + fx * offset[y1, x1]))
        inside = ((q[:, 0] >= box.x0 - 1) & (q[:, 0] <= box.x1) & (q[:, 1] >= box.y0 - 1)
                  & (q[:, 1] <= box.y1))
        return np.where(inside[:, None], d, 0.0)

    q = out.copy()
    for _ in range(30):
        q = out - shift(q)  # output q samples input q + shift(q), which should be ``out``
    return q


def professional_record(key: str, source: str, index: int, size: tuple[int, int],
                        face_requests, face_warp, body, body_requests, body_warp,
                        points: np.ndarray) -> dict:
    """The manifest record of one professional pair.

    ``ops``: the operations the edited image shows (face ops in catalog order, then the body
    ops the body warp realised); ``ops_skipped``: sampled body ops the warp could not apply
    (``not_visible``: their part's outline is not in view or would not move), absent from
    the image. ``landmarks_edited``: face landmarks through the face warp (MLS forward
    estimate) then the body warp (its sampling map inverted by fixed-point iteration; body
    warps leave the face zone untouched, so this is normally the identity). ``body_ops``: per realised body op,
    its largest outline move and the box of pixels it may change.
    """
    applied = {stage.name: stage for stage in body_warp.stages}
    shown = [r for r in body_requests if r.name in applied]
    if face_warp is not None:
        record = pair_record(key, source, index, size, [*face_requests, *shown], points,
                             face_warp)
        face_edited = mls_similarity(points, face_warp.source, face_warp.target)
    else:  # body operations only: no face control points
        record = {
            "key": key, "source": source, "pair_index": index, "size": list(size),
            "ops": [{"name": r.name, "strength": r.strength} for r in shown],
            "landmarks": _r(points), "control_source": [], "control_target": [],
            "augmentations": [],
        }
        face_edited = points
    record["landmarks_edited"] = _r(body_forward(face_edited, body_warp))
    record["subset"] = "professional"
    record["ops_skipped"] = [
        {"name": r.name, "strength": r.strength, "reason": "not_visible"}
        for r in body_requests if r.name not in applied
    ]
    record["body_ops"] = [
        {"name": st.name, "strength": st.strength, "max_shift_px": round(st.max_shift_px, 3),
         "box": [st.box.x0, st.box.y0, st.box.x1, st.box.y1]}
        for st in body_warp.stages
    ]
    record["body_landmarks"] = _r(body.points)
    record["body_visibility"] = np.round(body.visibility, 3).tolist()
    return record


def make_professional_samples(faces_dir: Path, source: str, seed: int,
                              settings: PairSettings) -> SourceResult:
    """Professional-subset pairs of one source, fully determined by ``(seed, source)``.

    Filters (paper A.1), in order: the face filter (``no_face``, ``several_faces``,
    ``face_too_small``, ``head_pose``: exactly one usable face), then a body must be found
    (``no_body``), be the face's (``face_body_mismatch``) and show an elbow or a hip
    (``close_up``). Each pair samples 1–7 operations
    (:func:`~mirrorppr_cli.data.sampling.sample_professional_ops`) among the 22 face ops and
    the body ops whose part is visible (:func:`visible_body_ops`); face ops are applied with
    ``plan_warp``/``apply_local_warp``, then body ops with the body warp (non-strict: an op
    that still cannot act is recorded in ``ops_skipped``, not in ``ops``; a pair left with
    no operation at all is not written).
    """
    from ..geometric.body import NoPersonError, detect_body
    from ..ops.body_catalog import BODY_CATALOG
    from ..ops.body_plan import apply_body_warp, plan_body_warp

    result = SourceResult(source)
    rgb, faces, result.skipped = _standard_source(faces_dir, source, settings)
    if result.skipped:
        return result
    try:
        body = detect_body(rgb, name=source)
    except (NoPersonError, ValueError):
        result.skipped = "no_body"
        return result
    reason = body_reject_reason(faces[0], body)
    if reason:
        result.skipped = reason
        return result
    points = faces[0].points
    size = (rgb.shape[1], rgb.shape[0])
    shown = set(visible_body_ops(body))
    available = [n for n in professional_catalog() if n not in BODY_CATALOG or n in shown]
    base = source_key(source)
    for j in range(settings.pairs):
        requests = sample_professional_ops(sample_rng(seed, source, j), available)
        face_requests = [r for r in requests if r.name not in BODY_CATALOG]
        body_requests = [r for r in requests if r.name in BODY_CATALOG]
        face_warp = plan_warp(points, face_requests) if face_requests else None
        edited = apply_local_warp(rgb, face_warp) if face_warp is not None else rgb.copy()
        body_warp = plan_body_warp(body, body_requests, strict=False)
        if not face_requests and not body_warp.stages:
            continue  # every sampled op was a body op that could not act: no edit to learn
        edited = apply_body_warp(edited, body_warp)
        key = f"{base}-p{j:03d}"
        record = professional_record(key, source, j, size, face_requests, face_warp, body,
                                     body_requests, body_warp, points)
        keep = [points]
        for stage in body_warp.stages:
            src, dst = stage.source[: stage.moving], stage.target[: stage.moving]
            moved = np.linalg.norm(dst - src, axis=1) >= KEEP_MOVE_PX
            keep += [src[moved], dst[moved]]
        _add_views(result, record, rgb, edited, points, np.concatenate(keep), (seed, source, j),
                   settings)
    return result
