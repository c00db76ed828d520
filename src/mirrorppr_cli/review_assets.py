"""Images of the review page: small JPEG thumbnails and a heat-map of each item's motion.

A structural retouch moves a few pixels of a face: on a whole-frame thumbnail it cannot be
seen. So the before/after and the heat-map show the *edited region* (the changed area with
a margin, or the whole frame when the edit covers most of it) at :data:`THUMB_SIDE` px on
the long side; the full images are only linked, so the page stays light over a file share.
The heat-map shows the motion's magnitude as a colour map over a dimmed grey copy of the
query, with arrows on a coarse grid for its direction; without a motion field (a report
saved from ``--json``) it shows the pixel difference instead. Files are written atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from .data.shards import write_atomic
from .errors import MirrorError, OutputError
from .metrics.pixel import changed_mask

#: Long side of every thumbnail (px).
THUMB_SIDE = 480
#: Folder of the page's images, inside the review folder.
ASSETS_DIR = "assets"
#: Grid of the motion arrows: about this many cells along the thumbnail's long side.
ARROW_CELLS = 16
#: Motion below this (px) is no motion (resampling noise).
MOTION_FLOOR_PX = 0.05
#: Difference heat-map: grey levels under this are noise (JPEG), this many are full scale.
DIFF_FLOOR, DIFF_FULL_SCALE = 3, 32
#: The edited region: the changed area plus this share of its size on each side, at least
#: :data:`REGION_MIN` of the long side; the whole frame once it would cover :data:`REGION_MAX`.
REGION_MARGIN, REGION_MIN, REGION_MAX = 0.4, 0.3, 0.6
JPEG_QUALITY = 85
#: Rows of the motion field handled at once (keeps a 24 MP field's temporaries small).
STRIP_ROWS = 512


def item_id(index: int) -> str:
    """The asset id of the ``index``-th item of a report (what `write_review` looks up)."""
    return f"{index:04d}"


def asset_key(output: Path) -> str:
    """A file-name-safe id for an item's assets made where its index is not known (a batch
    worker): the output's name and a digest of its full path (outputs are unique)."""
    import hashlib

    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(output).stem)[:40] or "item"
    return f"{stem}-{hashlib.blake2b(str(output).encode(), digest_size=5).hexdigest()}"


def save_item_assets(review_dir: Path, item_id: str, query_rgb8: np.ndarray,
                     output_rgb8: np.ndarray, inverse_map_xy: np.ndarray | None) -> dict:
    """Write an item's thumbnails and heat-map under ``review_dir/assets`` and return what the
    page needs: paths relative to ``review_dir`` (``query``, ``output``, ``motion``: all of the
    edited ``region`` ``[x0, y0, x1, y1]``, ``thumb_size`` ``[W, H]``), the query's ``size``
    ``[W, H]``, ``changed_share`` and the heat-map's legend (``heatmap``: ``"motion"`` or
    ``"difference"``; ``scale`` and ``unit``; ``max_motion_px``; ``arrow_gain``).

    ``inverse_map_xy``: ``(H, W, 2)`` float32, for every output pixel the query ``(x, y)`` it
    samples; ``None`` draws the heat-map from ``|output − query|``.
    """
    _checked(item_id)
    query, output = _rgb8(query_rgb8), _rgb8(output_rgb8)
    if output.shape != query.shape:  # a neural backend's output at another size
        output = cv2.resize(output, (query.shape[1], query.shape[0]), interpolation=cv2.INTER_AREA)
    if inverse_map_xy is not None:
        field = np.asarray(inverse_map_xy)
        if field.shape != (*query.shape[:2], 2):
            raise ValueError(f"inverse map of shape {field.shape}; expected "
                             f"{(*query.shape[:2], 2)}")
        largest, rows, cols = _motion_extent(field)
        region = edit_region(rows, cols)
        heat, legend = motion_heatmap(query, field, region, largest)
    else:
        diff = cv2.absdiff(query, output).max(axis=2)
        region = edit_region(*_changed_extent(diff))
        heat, legend = difference_heatmap(query, diff, region)
    names = {slot: f"{ASSETS_DIR}/{item_id}_{slot}.jpg" for slot in ("query", "output", "motion")}
    for slot, pixels in (("query", query), ("output", output)):
        save_jpeg(Path(review_dir) / names[slot], thumbnail(_crop(pixels, region), enlarge=True))
    save_jpeg(Path(review_dir) / names["motion"], heat)
    height, width = query.shape[:2]
    share = float(np.count_nonzero(changed_mask(query, output))) / (height * width)
    return {**names, "size": [width, height], "region": list(region),
            "thumb_size": [heat.shape[1], heat.shape[0]], "changed_share": round(share, 6),
            **legend}


def save_exemplar_assets(review_dir: Path, before_rgb8: np.ndarray,
                         after_rgb8: np.ndarray) -> dict:
    """Thumbnails of the exemplar pair's edited region: ``{"before": path, "after": path,
    "region", "thumb_size"}``, paths relative to ``review_dir`` (pass it to `write_review` as
    ``assets["exemplar"]``)."""
    before, after = _rgb8(before_rgb8), _rgb8(after_rgb8)
    if after.shape != before.shape:
        after = cv2.resize(after, (before.shape[1], before.shape[0]), interpolation=cv2.INTER_AREA)
    region = edit_region(*_changed_extent(cv2.absdiff(before, after).max(axis=2)))
    names = {slot: f"{ASSETS_DIR}/exemplar_{slot}.jpg" for slot in ("before", "after")}
    for slot, rgb in (("before", before), ("after", after)):
        thumb = thumbnail(_crop(rgb, region), enlarge=True)
        save_jpeg(Path(review_dir) / names[slot], thumb)
    return {**names, "region": list(region), "thumb_size": [thumb.shape[1], thumb.shape[0]]}


def save_query_assets(review_dir: Path, item_id: str, query_rgb8: np.ndarray) -> dict:
    """A whole-frame thumbnail of a query that has no output (a failed item: no face…), for
    a person to see why: ``{"query": path, "size", "thumb_size"}``."""
    query = _rgb8(query_rgb8)
    thumb = thumbnail(query)
    name = f"{ASSETS_DIR}/{_checked(item_id)}_query.jpg"
    save_jpeg(Path(review_dir) / name, thumb)
    return {"query": name, "size": [query.shape[1], query.shape[0]],
            "thumb_size": [thumb.shape[1], thumb.shape[0]]}


def exemplar_from_files(review_dir: Path, paths: list[str]) -> dict:
    """`save_exemplar_assets` of the exemplar pair's files ``[before, after]``."""
    from .io import read_image

    before, after = (read_image(p).rgb8() for p in paths)
    return save_exemplar_assets(review_dir, before, after)


# --------------------------------------------------------------------------- pictures


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE, *, enlarge: bool = False) -> np.ndarray:
    """``rgb`` shrunk (area filter) so its long side is at most ``side``; with ``enlarge`` a
    smaller one is enlarged to ``side`` (cubic: a small edited region drawn at full size)."""
    scale = side / max(rgb.shape[:2])
    if scale == 1 or (scale > 1 and not enlarge):
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write ``rgb`` (uint8) as a JPEG, atomically."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    write_atomic(path, data.tobytes())


def edit_region(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the box of the changed ``rows`` and ``cols`` (bool per row and
    column) with a margin, at least :data:`REGION_MIN` of the long side; the whole frame when
    nothing changed or the box would cover :data:`REGION_MAX` of it."""
    height, width = len(rows), len(cols)
    if not rows.any():
        return 0, 0, width, height
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    least = REGION_MIN * max(width, height)
    box = []
    for lo, hi, limit in ((x0, x1 + 1, width), (y0, y1 + 1, height)):
        span = max((hi - lo) * (1 + 2 * REGION_MARGIN), least)
        centre = (lo + hi) / 2
        lo, hi = max(0, round(centre - span / 2)), min(limit, round(centre + span / 2))
        box.append((lo, hi))
    (x0, x1), (y0, y1) = box
    if (x1 - x0) * (y1 - y0) >= REGION_MAX * width * height:
        return 0, 0, width, height
    return int(x0), int(y0), int(x1), int(y1)


def motion_heatmap(query: np.ndarray, inverse_map_xy: np.ndarray,
                   region: tuple[int, int, int, int], largest: float) -> tuple[np.ndarray, dict]:
    """The heat-map of the motion an inverse map describes over ``region``, and its legend.

    A pixel's motion runs from where its content was to where it is: ``p − map(p)``. The
    colour is its magnitude over the ``largest`` one (inferno: dark small, bright large);
    arrows on a coarse grid show the cell's mean motion, drawn ``arrow_gain`` times as long as
    it is at the thumbnail's scale (the longest spans about one cell).
    """
    x0, y0, x1, y1 = region
    base = _dimmed(thumbnail(_crop(query, region), enlarge=True))
    th, tw = base.shape[:2]
    scale = tw / (x1 - x0)  # thumbnail px per query px
    if largest < MOTION_FLOOR_PX:
        return base, _legend("motion", 0.0, "px", max_motion_px=round(largest, 3), arrow_gain=0.0)
    motion = _mean_motion(inverse_map_xy, region, (tw, th))
    magnitude = np.hypot(motion[..., 0], motion[..., 1])
    heat = _overlay(base, magnitude / largest,
                    magnitude >= max(MOTION_FLOOR_PX, 0.02 * largest))
    gain = _draw_arrows(heat, motion * scale)
    return heat, _legend("motion", largest, "px", max_motion_px=round(largest, 3),
                         arrow_gain=round(gain, 2))


def difference_heatmap(query: np.ndarray, diff: np.ndarray,
                       region: tuple[int, int, int, int]) -> tuple[np.ndarray, dict]:
    """The heat-map of ``diff`` (``|output − query|``, largest channel) over ``region``, full
    scale at :data:`DIFF_FULL_SCALE` grey levels, for reports that stored no motion field."""
    base = _dimmed(thumbnail(_crop(query, region), enlarge=True))
    noise_free = np.clip(_crop(diff, region).astype(np.float32) - DIFF_FLOOR, 0, None)
    small = cv2.resize(noise_free, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_AREA)
    # the area filter thins a thin change out: its own maximum keeps it visible
    full = DIFF_FULL_SCALE if small.max() >= DIFF_FULL_SCALE else max(float(small.max()), 1.0)
    heat = _overlay(base, small / full, small > 0.05, least=0.0)
    return heat, _legend("difference", round(full + DIFF_FLOOR, 1), "grey levels",
                         max_motion_px=None, arrow_gain=0.0)


# --------------------------------------------------------------------------- helpers


def _checked(item_id: str) -> str:
    """``item_id`` if it makes a plain file name (it names the item's files)."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", item_id):
        raise ValueError(f"item id {item_id!r}: use letters, digits, '_', '-' or '.'")
    return item_id


def _legend(kind: str, scale: float, unit: str, **extra) -> dict:
    return {"heatmap": kind, "scale": round(float(scale), 3), "unit": unit, **extra}


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {pixels.shape} {pixels.dtype}")
    return np.ascontiguousarray(pixels)


def _crop(pixels: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = region
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


def _motion_extent(field: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The largest motion (px) of an inverse map, and which rows and columns hold real motion
    (at least 5 % of the largest). One pass over strips of rows keeping each row's and each
    column's largest motion, so a 24 MP field needs no full-size temporaries."""
    height, width = field.shape[:2]
    xs = np.arange(width, dtype=np.float32)
    row_max = np.zeros(height, np.float32)
    col_max = np.zeros(width, np.float32)
    for top in range(0, height, STRIP_ROWS):
        part = field[top:top + STRIP_ROWS].astype(np.float32)
        ys = np.arange(top, top + len(part), dtype=np.float32)[:, None]
        magnitude = cv2.magnitude(xs - part[..., 0], np.broadcast_to(ys, part.shape[:2]) -
                                  part[..., 1])
        if not np.isfinite(magnitude.max()):  # a broken map value: no motion there
            magnitude[~np.isfinite(magnitude)] = 0.0
        row_max[top:top + len(part)] = magnitude.max(axis=1)
        np.maximum(col_max, magnitude.max(axis=0), out=col_max)
    largest = float(row_max.max()) if height else 0.0
    floor = max(MOTION_FLOOR_PX, 0.05 * largest)
    return largest, row_max >= floor, col_max >= floor


def _changed_extent(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the main change in ``diff`` (grey levels): where a coarse copy
    (JPEG noise averaged out) reaches a quarter of its maximum, and 4 levels at least."""
    height, width = diff.shape
    step = max(1, max(height, width) // 256)
    coarse = cv2.resize(diff.astype(np.float32), (max(1, width // step), max(1, height // step)),
                        interpolation=cv2.INTER_AREA)
    changed = coarse >= max(4.0, 0.25 * float(coarse.max()))
    rows = np.repeat(changed.any(axis=1), step)[:height]
    cols = np.repeat(changed.any(axis=0), step)[:width]
    return (np.pad(rows, (0, height - len(rows)), mode="edge"),
            np.pad(cols, (0, width - len(cols)), mode="edge"))


def _mean_motion(field: np.ndarray, region: tuple[int, int, int, int],
                 size: tuple[int, int]) -> np.ndarray:
    """``(h, w, 2)`` motion ``p − map(p)`` over ``region`` at the thumbnail ``size``.

    The motion (small numbers) is computed first, strip by strip, and shrunk by the whole
    factor ``k``; only then resampled to ``size``. Resampling the map itself would carry
    its large coordinates' interpolation error (a tenth of a pixel at non-integer scales
    with OpenCV's area filter) into the motion everywhere."""
    x0, y0, x1, y1 = region
    k = max(1, min((x1 - x0) // size[0], (y1 - y0) // size[1]))
    xs = np.arange(x0, x1, dtype=np.float32)
    step = k * max(1, STRIP_ROWS // k)
    blocks = []
    for top in range(y0, y1, step):
        part = field[top:min(y1, top + step), x0:x1].astype(np.float32)
        ys = np.arange(top, top + len(part), dtype=np.float32)[:, None]
        part[..., 0] -= xs
        part[..., 1] -= ys
        motion = np.negative(part, out=part)
        if not np.isfinite(motion.max()) or not np.isfinite(motion.min()):
            motion[~np.isfinite(motion)] = 0.0
        if k > 1:  # the motion's block means: what the area filter gives, error-free here
            dims = (max(1, motion.shape[1] // k), max(1, len(motion) // k))
            motion = cv2.resize(motion, dims, interpolation=cv2.INTER_AREA)
        blocks.append(motion)
    small = np.concatenate(blocks)
    shrink = small.shape[1] > size[0]
    return cv2.resize(small, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _dimmed(rgb: np.ndarray) -> np.ndarray:
    """A grey copy at 40 % brightness: the face stays recognisable, colours stand out."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * 0.4 + 10
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def _overlay(base: np.ndarray, level: np.ndarray, where: np.ndarray,
             least: float = 0.35) -> np.ndarray:
    """Inferno colours of ``level`` (0..1) over ``base`` where ``where``, opaque from a third
    of the scale; ``least``: the opacity of the smallest level (0: noise fades away)."""
    level = np.clip(level, 0.0, 1.0)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    alpha = (np.clip(least + (0.92 - least) * 3 * level, 0, 0.92) * where)[..., None]
    return (base * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def _draw_arrows(heat: np.ndarray, motion: np.ndarray) -> float:
    """Draw each grid cell's mean ``motion`` (thumbnail px) as an arrow, in place, skipping
    cells under 25 % of the longest; return the length gain."""
    th, tw = heat.shape[:2]
    step = max(12, round(max(th, tw) / ARROW_CELLS))
    rows, cols = max(1, th // step), max(1, tw // step)
    cells = cv2.resize(motion, (cols, rows), interpolation=cv2.INTER_AREA)
    lengths = np.hypot(cells[..., 0], cells[..., 1])
    longest = float(lengths.max())
    if longest <= 0:
        return 0.0
    gain = 0.9 * step / longest  # the longest arrow spans about one cell
    for r, c in zip(*np.nonzero(lengths >= 0.25 * longest), strict=True):
        centre = np.array([(c + 0.5) * tw / cols, (r + 0.5) * th / rows])
        half = cells[r, c] * gain / 2
        start = tuple(int(v) for v in np.round(centre - half))
        end = tuple(int(v) for v in np.round(centre + half))
        for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
            cv2.arrowedLine(heat, start, end, colour, width, cv2.LINE_AA, tipLength=0.35)
    return gain


# --------------------------------------------------------------------------- a run's assets


def check_out(folder: Path, force: bool) -> None:
    """OutputError unless ``folder`` can take a page: absent, empty, or ``force``."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise OutputError(f"{folder}: exists and holds files; pass --force to replace the page")

def _locate(name: str | None, bases: list[Path]) -> Path | None:
    """The file a report names: as given (absolute, or from the current folder), else from
    the report's folder."""
    if not name:
        return None
    for base in bases:
        candidate = base / name
        if candidate.is_file():
            return candidate
    return None

def make_assets(folder: Path, report: dict, bases: list[Path], warnings: list[str],
                ready: dict[str, dict] | None = None) -> dict:
    """Thumbnails and heat-maps of every item whose files are found; the rest is warned of.
    ``ready``: assets already made (by ``item_id``), kept as they are (links added)."""
    from .io import read_image

    assets: dict[str, dict] = {}
    for index, item in enumerate(report.get("items") or []):
        query, output = _locate(item.get("input"), bases), _locate(item.get("output"), bases)
        if item_id(index) in (ready or {}):
            asset = dict(ready[item_id(index)])
            asset["links"] = {k: link for k, p in (("query", query), ("output", output))
                              if p is not None and (link := relative_link(p, folder))}
            assets[item_id(index)] = asset
            continue
        if item.get("status", "ok") != "ok":  # the query alone, where it can be read
            if query is not None and item.get("status") == "failed":
                try:
                    assets[item_id(index)] = save_query_assets(
                        folder, item_id(index), read_image(query).rgb8())
                    link = relative_link(query, folder)
                    assets[item_id(index)]["links"] = {"query": link} if link else {}
                except MirrorError:
                    pass  # its error is on the page already
            continue
        if query is None or output is None:
            missing = item.get("input") if query is None else item.get("output")
            warnings.append(f"item {index + 1}: {missing}: not found; shown without pictures")
            continue
        try:
            before, after = read_image(query).rgb8(), read_image(output).rgb8()
        except MirrorError as error:
            warnings.append(f"item {index + 1}: {error}; shown without pictures")
            continue
        field = _motion_field(item, bases, before.shape[:2])
        asset = save_item_assets(folder, item_id(index), before, after, field)
        asset["links"] = {k: link for k, p in (("query", query), ("output", output))
                          if (link := relative_link(p, folder))}
        assets[item_id(index)] = asset
    pair = [_locate(p, bases) for p in (report.get("summary") or {}).get("exemplar") or []]
    if len(pair) == 2 and all(pair):
        try:
            assets["exemplar"] = exemplar_from_files(folder, [str(p) for p in pair])
            assets["exemplar"]["links"] = {k: relative_link(p, folder)
                                           for k, p in zip(("before", "after"), pair, strict=True)}
        except MirrorError as error:
            warnings.append(f"exemplar: {error}; shown without pictures")
    elif pair:
        warnings.append("exemplar pair: not found; shown without pictures")
    return assets

def _motion_field(item: dict, bases: list[Path], shape: tuple[int, int]) -> np.ndarray | None:
    """The inverse map the run exported with ``--export npy``, if any and of the right shape."""
    for name in item.get("exports") or []:
        if str(name).endswith(".npy") and (file := _locate(name, bases)) is not None:
            try:
                field = np.load(file, allow_pickle=False)
            except (OSError, ValueError):
                continue
            if field.shape == (*shape, 2):
                return field.astype(np.float32, copy=False)
    return None


def relative_link(target: str | os.PathLike[str] | None, folder: Path) -> str | None:
    """``target``'s path relative to ``folder`` (``/``-separated) if the file exists."""
    if not target:
        return None
    path = Path(target)
    if not path.is_file():
        return None
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return None
