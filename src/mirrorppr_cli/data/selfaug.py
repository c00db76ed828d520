"""A benchmark from REAL before/after pairs by self-augmentation (the paper's §3.4, as a test).

For each item: one real pair (before B, after F: one photograph and its retouched version)
and one random spatial augmentation A. The exemplar is (B, F) as they are, the query is A(B),
the ground truth is A(F). The ground truth is then exactly the real retoucher's edit seen in
the query's frame; nothing of this project's operation catalog made it. (It is the same
person in exemplar and query: this measures transfer across position, scale, rotation,
mirroring and framing, not across identities.)

The augmentation (:class:`View`), drawn per item from ``(seed, item index)``:

* ``scale``: log-uniform in [0.3, 3] (query pixels per exemplar pixel), lowered only when
  the output would exceed ``max_area``;
* ``rotation_deg``: uniform in [−15, 15], counter-clockwise about the image centre;
* ``flip``: horizontal mirror, probability 0.5 (after the rotation);
* ``crop``: from a close-up of the face (its landmark box plus 25 % on each side) to the full
  frame (the largest centred rectangle of the source's aspect that the rotation leaves
  fully covered, grown to hold the face box), log-uniformly in width, placed at random but
  always holding the whole face box;
* ``jpeg_quality``: uniform integer in [85, 95], the same for query and truth (each encoded
  separately, 4:2:0 chroma); PNG instead with ``image_format="png"``.

Output sides are multiples of 16 and the output area is at most ``max_area`` (4 MP by
default); the crop's size is the output size divided by ``scale`` exactly, so the scale is
exact and isotropic.

Conventions (enough to regenerate every item from its record): pixel centres at integers.
``crop = (x0, y0, w, h)`` is in edge coordinates of the rotated and mirrored frame, which
has the source's size; :func:`view_matrix` is the source → output affine. Resampling
(:func:`render`), identical for B and F: when ``scale < 1``, first ``cv2.resize`` to
``(round(W·scale), round(H·scale))`` with ``INTER_AREA`` (an area filter against aliasing),
then ``cv2.warpAffine`` with ``INTER_LINEAR`` and ``BORDER_REFLECT_101`` by the matrix
composed with the inverse of that resize (``x_small = (x + 0.5)·f − 0.5`` with
``f = small size / size`` per axis); when ``scale ≥ 1``, ``warpAffine`` of the source alone.

Pairs are found in a folder by :func:`discover_pairs`. Each item's ``split`` (``dev`` or
``heldout``) comes from a stable hash of its pair's name
(:func:`~mirrorppr_cli.data.simface.split_of`): a pair is always in one split.
"""

from __future__ import annotations

import io as _io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError, OutputError, UsageError
from ..geometric.landmarks import find_faces
from ..inputs import IMAGE_SUFFIXES
from ..io import read_image
from .pairs import encode
from .sampling import sample_rng
from .shards import write_atomic, write_json_atomic
from .simface import split_of

#: File-name endings of a pair in one folder, ``(before, after)``; matched case-insensitively
#: on the name without its extension, which must then be the same ``X``.
PAIR_ENDINGS = (
    ("-example-source", "-example-retouched"),  # the paper's survey naming
    ("-before", "-after"),
    ("_source", "_retouched"),
)
SCALE_RANGE = (0.3, 3.0)
MAX_ROTATION = 15.0
FLIP_PROBABILITY = 0.5
JPEG_QUALITY = (85, 95)
#: Default bound of the output area (4 MP); sides are multiples of :data:`SIDE_MULTIPLE`.
MAX_AREA = 2048 * 2048
SIDE_MULTIPLE = 16
#: The output's short side is grown (towards the full frame) to at least this when it can be.
MIN_SIDE = 128
#: Room around the face's landmark box in the close-up end of the crop range, per side.
FACE_MARGIN = 0.25
FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class Pair:
    """A before/after pair: ``name`` (unique, decides the split) and the two files."""

    name: str
    before: Path
    after: Path


@dataclass(frozen=True)
class View:
    """One recorded augmentation (see the module docstring for its conventions)."""

    scale: float
    rotation_deg: float
    flip: bool
    crop: tuple[float, float, float, float]
    out_size: tuple[int, int]
    jpeg_quality: int

    def to_dict(self) -> dict:
        return {"scale": self.scale, "rotation_deg": self.rotation_deg, "flip": self.flip,
                "crop": list(self.crop), "out_size": list(self.out_size),
                "jpeg_quality": self.jpeg_quality}

    @staticmethod
    def from_dict(data: dict) -> View:
        return View(float(data["scale"]), float(data["rotation_deg"]), bool(data["flip"]),
                    tuple(float(v) for v in data["crop"]),
                    tuple(int(v) for v in data["out_size"]), int(data["jpeg_quality"]))


# --------------------------------------------------------------------------- pair discovery


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _named_pairs(folder: Path, skipped: dict[str, str]) -> list[Pair]:
    """Pairs named ``X<before ending>.*`` / ``X<after ending>.*`` in ``folder`` itself."""
    found: dict[tuple[str, int], dict[str, list[Path]]] = {}
    for path in _images(folder):
        stem = path.stem
        for k, endings in enumerate(PAIR_ENDINGS):
            role = next((r for r, end in zip(("before", "after"), endings, strict=True)
                         if stem.lower().endswith(end) and len(stem) > len(end)), None)
            if role is not None:
                name = stem[: -len(endings[0 if role == "before" else 1])]
                found.setdefault((name, k), {"before": [], "after": []})[role].append(path)
                break
        else:
            skipped[path.name] = ("unmatched: not named as a pair (X-example-source / "
                                  "X-example-retouched, X-before / X-after, X_source / X_retouched)")
    pairs = []
    for (name, k), roles in sorted(found.items()):
        files = roles["before"] + roles["after"]
        if len(roles["before"]) > 1 or len(roles["after"]) > 1:
            for path in files:
                skipped[path.name] = (f"ambiguous: pair {name} has {len(roles['before'])} "
                                      f"before and {len(roles['after'])} after files")
        elif roles["before"] and roles["after"]:
            pairs.append(Pair(name, roles["before"][0], roles["after"][0]))
        else:
            other = "after" if roles["before"] else "before"
            want = name + PAIR_ENDINGS[k][1 if other == "after" else 0]
            skipped[files[0].name] = f"unmatched: no {other} file {want}.*"
    return pairs


def _subfolder_pairs(folder: Path, skipped: dict[str, str]) -> list[Pair]:
    """Pairs from ``folder/before/NAME`` and ``folder/after/NAME`` (equal file names)."""
    before_dir, after_dir = folder / "before", folder / "after"
    if not (before_dir.is_dir() and after_dir.is_dir()):
        return []
    before = {p.name: p for p in _images(before_dir)}
    after = {p.name: p for p in _images(after_dir)}
    pairs = []
    for file_name in sorted(before.keys() | after.keys()):
        if file_name in before and file_name in after:
            pairs.append(Pair(Path(file_name).stem, before[file_name], after[file_name]))
        elif file_name in before:
            skipped[f"before/{file_name}"] = f"unmatched: no after/{file_name}"
        else:
            skipped[f"after/{file_name}"] = f"unmatched: no before/{file_name}"
    return pairs


def _dataset_pairs(folder: Path, skipped: dict[str, str]) -> list[Pair]:
    """The exemplar pairs (and query/truth pairs where present) of an official dataset.json."""
    from ..bench.datasets import read_index

    entries = read_index(folder / "dataset.json")
    pairs, seen = [], set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for origin, edited in (("pair1_origin", "pair1_edited"), ("pair2_origin", "pair2_edited")):
            if not (entry.get(origin) and entry.get(edited)):
                continue
            key = (str(entry[origin]), str(entry[edited]))
            if key in seen:
                continue
            seen.add(key)
            name = Path(key[0]).with_suffix("").as_posix()
            missing = [rel for rel in key if not (folder / rel).is_file()]
            if missing:
                skipped[name] = f"missing file: {missing[0]}"
                continue
            pairs.append(Pair(name, folder / key[0], folder / key[1]))
    return pairs


def discover_pairs(folder: Path) -> tuple[list[Pair], dict[str, str]]:
    """Before/after pairs in ``folder`` and the files left out with a reason.

    * A folder holding an official ``dataset.json``: its ``pair1_origin``/``pair1_edited``
      pairs, and ``pair2_origin``/``pair2_edited`` where both are present (each distinct pair
      once; named by the origin's path without extension). Nothing else is read.
    * Otherwise, both of:
      - ``before/`` and ``after/`` subfolders: files with equal names (pair name: the stem);
      - files in the folder itself named ``X-example-source.*`` / ``X-example-retouched.*``
        (the paper's survey naming), ``X-before.*`` / ``X-after.*`` or ``X_source.*`` /
        ``X_retouched.*`` (pair name ``X``).

    Sizes are not checked here (see :func:`build_selfaug`). Returns pairs sorted by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--pairs {folder}: not a folder")
    skipped: dict[str, str] = {}
    if (folder / "dataset.json").is_file():
        found = _dataset_pairs(folder, skipped)
    else:
        found = _subfolder_pairs(folder, skipped) + _named_pairs(folder, skipped)
    pairs, names = [], set()
    for pair in found:
        if pair.name in names:
            skipped[str(pair.before.relative_to(folder))] = f"duplicate pair name {pair.name}"
            continue
        names.add(pair.name)
        pairs.append(pair)
    return sorted(pairs, key=lambda p: p.name), skipped


# --------------------------------------------------------------------------- geometry


def frame_matrix(size: tuple[int, int], rotation_deg: float, flip: bool) -> np.ndarray:
    """3×3: source pixel → pixel of the rotated (about the centre, counter-clockwise) and
    mirrored frame, which has the source's ``size`` (w, h)."""
    width, height = size
    rot = np.vstack([cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2),
                                             rotation_deg, 1.0), [0.0, 0.0, 1.0]])
    if flip:
        rot = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ rot
    return rot


def view_matrix(view: View, size: tuple[int, int]) -> np.ndarray:
    """2×3 affine: source pixel ``(x, y)`` → output pixel, for a source of ``size`` (w, h)."""
    x0, y0 = view.crop[:2]
    s = view.scale
    crop = np.array([[s, 0.0, (0.5 - x0) * s - 0.5], [0.0, s, (0.5 - y0) * s - 0.5],
                     [0.0, 0.0, 1.0]])
    return (crop @ frame_matrix(size, view.rotation_deg, view.flip))[:2]


def prefilter_size(view: View, size: tuple[int, int]) -> tuple[int, int] | None:
    """``(w, h)`` of the INTER_AREA pre-shrink for a downscaling view, else None."""
    if view.scale >= 1.0:
        return None
    width, height = size
    return max(1, round(width * view.scale)), max(1, round(height * view.scale))


def render(pixels: np.ndarray, view: View) -> np.ndarray:
    """A(pixels): the view of ``pixels`` (``(H, W, C)`` uint8), resampled as documented."""
    height, width = pixels.shape[:2]
    matrix = view_matrix(view, (width, height))
    small = prefilter_size(view, (width, height))
    if small is not None:
        fx, fy = small[0] / width, small[1] / height
        # small pixel → source pixel: x = (x_small + 0.5) / f − 0.5
        back = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1 / fy, 0.5 / fy - 0.5],
                         [0.0, 0.0, 1.0]])
        matrix = matrix @ back
        pixels = cv2.resize(pixels, small, interpolation=cv2.INTER_AREA)
    out = cv2.warpAffine(np.ascontiguousarray(pixels), matrix, view.out_size,
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(view.out_size[1], view.out_size[0], -1)


def encode_view(pixels: np.ndarray, view: View, image_format: str) -> bytes:
    """JPEG at the view's quality (4:2:0, baseline) or PNG (:func:`.pairs.encode`)."""
    if image_format == "png":
        return encode(pixels, "png")
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buf, "JPEG", quality=view.jpeg_quality, subsampling=2)
    return buf.getvalue()


def face_extent(points: np.ndarray) -> float:
    """Rotation-invariant face size in px: RMS distance of the landmarks from their centroid.

    An item's ``scale_ratio`` is the query's over the exemplar's, measured on the exemplar's
    landmarks and their images under :func:`view_matrix`; as the view is a similarity, it
    equals ``scale`` (to rounding)."""
    points = np.asarray(points, np.float64)
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def _place(t: float, f0: float, f1: float, length: float, r0: float, r1: float) -> float:
    """Start of a window of ``length`` holding [f0, f1], inside [r0, r1] when it can be."""
    lo, hi = max(f1 - length, r0), min(f0, r1 - length)
    if lo <= hi:
        return lo + t * (hi - lo)
    lo, hi = f1 - length, f0
    if lo <= hi:
        return min(max((r0 + r1 - length) / 2, lo), hi)
    return (f0 + f1 - length) / 2


def sample_view(rng: np.random.Generator, size: tuple[int, int], face_points: np.ndarray,
                max_area: int = MAX_AREA) -> View:
    """A random :class:`View` of a source of ``size`` (w, h) that keeps the face whole.

    Seven draws, always in this order: log-scale, rotation, flip, zoom (0 = face close-up,
    1 = full frame), horizontal and vertical placement, JPEG quality.
    """
    width, height = size
    scale = math.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])))
    rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    flip = bool(rng.random() < FLIP_PROBABILITY)
    zoom, u, v = float(rng.random()), float(rng.random()), float(rng.random())
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))

    frame = frame_matrix(size, rotation, flip)
    face = np.asarray(face_points, np.float64) @ frame[:2, :2].T + frame[:2, 2]
    fx0, fy0 = face.min(axis=0) + 0.5  # edge coordinates
    fx1, fy1 = face.max(axis=0) + 0.5
    mx, my = FACE_MARGIN * (fx1 - fx0), FACE_MARGIN * (fy1 - fy0)
    # the face box with its margin, clipped to the frame, never smaller than the landmarks
    bx0, by0 = min(max(fx0 - mx, 0.0), fx0), min(max(fy0 - my, 0.0), fy0)
    bx1, by1 = max(min(fx1 + mx, width), fx1), max(min(fy1 + my, height), fy1)
    # the largest centred rectangle of the source's aspect that the rotation leaves covered
    c, s = abs(math.cos(math.radians(rotation))), abs(math.sin(math.radians(rotation)))
    k = min(width / (width * c + height * s), height / (width * s + height * c))
    rx0, ry0 = min(width * (1 - k) / 2, bx0), min(height * (1 - k) / 2, by0)
    rx1, ry1 = max(width * (1 + k) / 2, bx1), max(height * (1 + k) / 2, by1)
    aspect = (rx1 - rx0) / (ry1 - ry0)
    close = max(bx1 - bx0, (by1 - by0) * aspect)  # crop widths at both ends of the range
    full = rx1 - rx0
    cw = close * (full / close) ** zoom
    if cw * (cw / aspect) * scale**2 > max_area:  # too large: zoom in, then lower the scale
        cw = max(math.sqrt(max_area * aspect) / scale, close)
        scale = min(scale, math.sqrt(max_area * aspect) / cw)
    short = min(cw, cw / aspect) * scale
    if short < MIN_SIDE:  # too small: zoom out as far as the frame and the area allow
        cw = min(cw * MIN_SIDE / short, full, math.sqrt(max_area * aspect) / scale)
        cw = max(cw, close)
    out_w = math.ceil(cw * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE
    out_h = math.ceil(cw / aspect * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE
    if out_w * out_h > max_area:
        out_w = max(SIDE_MULTIPLE, math.floor(cw * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)
        out_h = max(SIDE_MULTIPLE, math.floor(cw / aspect * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    cw, ch = out_w / scale, out_h / scale
    x0 = _place(u, bx0, bx1, cw, rx0, rx1)
    y0 = _place(v, by0, by1, ch, ry0, ry1)
    return View(scale, rotation, flip, (x0, y0, cw, ch), (int(out_w), int(out_h)), quality)


# --------------------------------------------------------------------------- build


@dataclass
class _Usable:
    pair: Pair
    size: tuple[int, int]
    points: np.ndarray
    exemplar_files: tuple[str, str]  # paths relative to the output folder


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "pair"


def _rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path).rgb8())


def _exemplar_bytes(path: Path, pixels: np.ndarray) -> tuple[bytes, str]:
    """The file's own bytes when they decode as they are (8-bit RGB JPEG or PNG, no EXIF
    rotation); else a PNG of the decoded, upright pixels. Returns ``(bytes, extension)``."""
    picture = read_image(path)
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)
    kept = {"JPEG": ".jpg", "PNG": ".png"}.get(picture.format)
    if kept and picture.mode == "RGB" and picture.pixels.dtype == np.uint8 and orientation == 1:
        return path.read_bytes(), kept
    return encode(pixels, "png"), ".png"


def build_selfaug(
    pairs_dir: Path, out: Path, *, combos: int, seed: int, image_format: str = "jpg",
    max_area: int = MAX_AREA, force: bool = False, on_item=None,
) -> dict:
    """Write the benchmark (``dataset.json`` last, atomically); returns the summary.

    Items cycle through the usable pairs, each round in a seeded random order, so pairs are
    used equally often. Pairs whose before and after differ in size, that cannot be read, or
    whose before shows no face are left out with the reason in ``summary["skipped"]``.
    """
    if image_format not in FORMATS:
        raise UsageError(f"--format must be jpg or png, not {image_format!r}")
    index_file = out / "dataset.json"
    if index_file.exists() and not force:
        raise OutputError(f"{index_file}: exists; pass --force to rebuild the benchmark")
    pairs, skipped = discover_pairs(pairs_dir)
    usable: list[_Usable] = []
    written: set[str] = set()
    stems: set[str] = set()
    for pair in pairs:
        try:
            before, after = _rgb(pair.before), _rgb(pair.after)
        except InputError as error:
            skipped[pair.name] = f"unreadable: {error}"
            continue
        if before.shape != after.shape:
            skipped[pair.name] = (f"size_mismatch: before {before.shape[1]}x{before.shape[0]}, "
                                  f"after {after.shape[1]}x{after.shape[0]}")
            continue
        faces = find_faces(before)
        if not faces:
            skipped[pair.name] = "no_face"
            continue
        stem = f"exemplars/{_safe(pair.name)}"
        if stem in stems:
            skipped[pair.name] = f"name clash: another pair is also written as {stem}-*"
            continue
        stems.add(stem)
        files = []
        for role, path, pixels in (("before", pair.before, before), ("after", pair.after, after)):
            data, ext = _exemplar_bytes(path, pixels)
            rel = f"{stem}-{role}{ext}"
            written.add(rel)
            write_atomic(out / rel, data)
            files.append(rel)
        usable.append(_Usable(pair, (before.shape[1], before.shape[0]), faces[0].points,
                              tuple(files)))
    if not usable:
        raise UsageError(f"--pairs {pairs_dir}: no usable before/after pair "
                         f"({len(pairs)} found; see the skipped list with --json)")

    order: list[int] = []
    while len(order) < combos:
        rnd = len(order) // len(usable)
        order.extend(int(k) for k in sample_rng(seed, "selfaug-order", rnd).permutation(len(usable)))
    order = order[:combos]
    views = [sample_view(sample_rng(seed, "selfaug", i), usable[order[i]].size,
                         usable[order[i]].points, max_area) for i in range(combos)]

    items: list[dict | None] = [None] * combos
    ext = ".jpg" if image_format == "jpg" else ".png"
    for k, entry in enumerate(usable):
        mine = [i for i in range(combos) if order[i] == k]
        if not mine:
            continue
        before, after = _rgb(entry.pair.before), _rgb(entry.pair.after)
        exemplar_face = face_extent(entry.points)
        for i in mine:
            view = views[i]
            matrix = view_matrix(view, entry.size)
            query_points = entry.points @ matrix[:, :2].T + matrix[:, 2]
            rels = (f"images/{i:04d}_query{ext}", f"images/{i:04d}_truth{ext}")
            for rel, pixels in zip(rels, (before, after), strict=True):
                write_atomic(out / rel, encode_view(render(pixels, view), view, image_format))
                written.add(rel)
            augmentation = view.to_dict()
            if image_format == "png":
                augmentation["jpeg_quality"] = None
            augmentation["prefilter"] = prefilter_size(view, entry.size)
            items[i] = {
                "pair1_origin": entry.exemplar_files[0],
                "pair1_edited": entry.exemplar_files[1],
                "pair2_origin": rels[0],
                "pair2_edited": rels[1],
                "edit_instruction": f"the retouch of real pair {entry.pair.name}, self-augmented",
                "pair": entry.pair.name,
                "split": split_of(entry.pair.name),
                "augmentation": augmentation,
                "matrix": matrix.tolist(),
                "scale_ratio": face_extent(query_points) / exemplar_face,
                "exemplar_face_px": exemplar_face,
                "query_face_px": face_extent(query_points),
                "exemplar_size": list(entry.size),
            }
            if on_item:
                on_item(i)
    _remove_stale(out, written)
    write_atomic(index_file, (json.dumps(items, indent=1) + "\n").encode())
    used = [entry.pair.name for entry in usable]
    summary = {
        "benchmark": "selfaug",
        "items": combos,
        "pairs_found": len(pairs),
        "pairs": len(usable),
        "skipped": skipped,
        "seed": seed,
        "format": image_format,
        "max_area": max_area,
        "splits": {name: sum(item["split"] == name for item in items)
                   for name in ("dev", "heldout")},
        "pair_splits": {name: split_of(name) for name in used},
        "items_per_pair": {name: order.count(k) for k, name in enumerate(used)},
        "scale": [min(v.scale for v in views), max(v.scale for v in views)],
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


_OURS = (re.compile(r"^\d{4}_(query|truth)\.(jpg|png)$"), re.compile(r"^.+-(before|after)\.(jpg|png)$"))


def _remove_stale(out: Path, written: set[str]) -> None:
    """Delete files an earlier build of this benchmark left in ``images/`` or ``exemplars/``
    (only names this builder writes)."""
    for sub, pattern in zip(("images", "exemplars"), _OURS, strict=True):
        folder = out / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if pattern.match(path.name) and f"{sub}/{path.name}" not in written:
                path.unlink()
