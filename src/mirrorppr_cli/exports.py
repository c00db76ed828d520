"""The edit as files a retoucher can keep working with: written beside each output.

Every kind is made from one **inverse map** ``(H, W, 2)`` float32 (:func:`mirrorppr_cli.
retouch_job.sampling_map`): for each pixel of the retouched image, the query position
``(x, y)`` it takes its colour from; pixels, ``x`` right, ``y`` down, pixel centres at integer
coordinates (OpenCV's ``remap`` convention). Kinds (``--export KIND[,KIND…]``):

* ``stmap`` → ``NAME.stmap.exr``: the compositing STMap (Nuke's STMap node, Fusion's Texture,
  After Effects' RE:Map…): 32-bit float OpenEXR, red ``s = (x + 0.5) / W``, green
  ``t = 1 − (y + 0.5) / H`` (normalised, origin at the image's bottom-left corner, pixel centres
  at half-integers: the convention of Nuke's STMap), blue 0.
* ``displace`` → ``NAME.displace-x.png``, ``NAME.displace-y.png``, ``NAME.displace.json``:
  16-bit greyscale displacement maps, mid-grey neutral: ``value = 32767.5 + 32767.5 · d /
  scale`` with ``d = x_source − x`` (``y`` likewise) and ``scale`` (px) in the JSON sidecar;
  for GIMP's Displace filter (Cartesian, X and Y displacement = ``scale``) and similar tools.
  Quantised to ``scale / 32767`` px.
* ``npy`` → ``NAME.map.npy``: the inverse map itself.
* ``layers`` → ``NAME.layers.tif``: a multi-page TIFF (tifffile; GIMP opens the pages as
  layers) with the untouched query, the retouched image and the mask of changed pixels (255),
  each page named, so the edit can be painted out where it went wrong. Pillow cannot write
  layered PSD; psd-tools reads PSD but does not compose layered files for writing, and no
  maintained writer ships here — the TIFF pages are the well-kept route.

Photoshop's Liquify mesh (``.msh``) is not written: its format is known only from
reverse-engineering (a ``yfqLhseM`` header, a grid of (dx, dy) pairs, version-dependent run
lengths), and with no Photoshop here nothing written could be checked to open.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import OutputError, UsageError

KINDS = ("stmap", "displace", "npy", "layers")
#: Neutral value of the 16-bit displacement maps.
DISPLACE_NEUTRAL = 32767.5


def parse_kinds(spec: str | None) -> tuple[str, ...]:
    """``"stmap,npy"`` → ``("stmap", "npy")``; UsageError naming the kinds for anything else."""
    if not spec:
        return ()
    kinds = tuple(dict.fromkeys(k.strip() for k in spec.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"--export: unknown kind {', '.join(unknown)}; choose from "
                         f"{', '.join(KINDS)}")
    return kinds


# ------------------------------------------------------------------------------------------
# conversions (pure)


def to_stmap(inverse_map: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB STMap ``(s, t, 0)`` of a float32 inverse map (module
    docstring). Each channel is a contiguous plane (``stmap[..., c]`` is C-contiguous), as
    the EXR writer takes them; the float32 steps are those of ``(x + 0.5) / W``."""
    height, width = inverse_map.shape[:2]
    planes = np.zeros((3, height, width), np.float32)
    s, t = planes[0], planes[1]
    np.add(inverse_map[..., 0], 0.5, out=s)
    s /= width
    np.add(inverse_map[..., 1], 0.5, out=t)
    t /= height
    np.subtract(1.0, t, out=t)
    return planes.transpose(1, 2, 0)


def from_stmap(stmap: np.ndarray) -> np.ndarray:
    """The inverse map ``(H, W, 2)`` of an RGB STMap (the inverse of :func:`to_stmap`)."""
    height, width = stmap.shape[:2]
    x = stmap[..., 0].astype(np.float64) * width - 0.5
    y = (1.0 - stmap[..., 1].astype(np.float64)) * height - 0.5
    return np.dstack([x, y]).astype(np.float32)


def to_displacement(inverse_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x map, y map, scale px)``: 16-bit displacement maps of a float32 inverse map (module
    docstring); ``scale`` is the largest displacement rounded up to whole pixels (≥ 1)."""
    height, width = inverse_map.shape[:2]
    dx = inverse_map[..., 0] - np.arange(width, dtype=np.float32)
    dy = inverse_map[..., 1] - np.arange(height, dtype=np.float32)[:, None]
    largest = max(dx.max(initial=0), -dx.min(initial=0), dy.max(initial=0), -dy.min(initial=0))
    scale = float(max(1.0, np.ceil(largest)))

    def encode(d: np.ndarray) -> np.ndarray:
        # in place, the float32 steps of rint(NEUTRAL + NEUTRAL * d / scale) clipped to 16 bits
        d *= DISPLACE_NEUTRAL
        d /= scale
        d += DISPLACE_NEUTRAL
        np.clip(np.rint(d, out=d), 0, 65535, out=d)
        return d.astype(np.uint16)

    return encode(dx), encode(dy), scale


def from_displacement(x_map: np.ndarray, y_map: np.ndarray, scale: float) -> np.ndarray:
    """The inverse map of two 16-bit displacement maps (the inverse of
    :func:`to_displacement`, to within ``scale / 65535`` px)."""
    height, width = x_map.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dx = (x_map.astype(np.float64) - DISPLACE_NEUTRAL) / DISPLACE_NEUTRAL * scale
    dy = (y_map.astype(np.float64) - DISPLACE_NEUTRAL) / DISPLACE_NEUTRAL * scale
    return np.dstack([xs + dx, ys + dy]).astype(np.float32)


# ------------------------------------------------------------------------------------------
# files


def export_paths(output: Path, kinds: tuple[str, ...]) -> list[Path]:
    """The files the ``kinds`` write beside ``output`` (``NAME.kind.ext``), in order."""
    stem = output.with_suffix("")
    names = {"stmap": [".stmap.exr"],
             "displace": [".displace-x.png", ".displace-y.png", ".displace.json"],
             "npy": [".map.npy"], "layers": [".layers.tif"]}
    return [Path(f"{stem}{suffix}") for kind in kinds for suffix in names[kind]]


#: Threads of one encoder (EXR lines, TIFF strips; both release the GIL).
ENCODE_THREADS = min(4, os.cpu_count() or 1)


def _encode_exr(rgb: np.ndarray) -> bytes:
    """32-bit float scanline OpenEXR, PIZ (lossless), through the OpenEXR project's own
    Python bindings (``OpenEXR``), lines compressed in :data:`ENCODE_THREADS` threads.

    24 MP STMap, CPU s / file (OpenEXR 3.5.3, one thread): PIZ 1.3 s / 27 MB, ZIP 2.3 s /
    31 MB, ZIPS 2.5 s / 37 MB, RLE 1.2 s / 194 MB, none 0.4 s / 288 MB (+ 0.15–0.4 s CPU and
    ~1 s of fsync to write it); tiled files were no faster. OpenCV 4.11's writer, used
    before: PIZ 2.3 s, ZIP 3.7 s, none 1.9 s."""
    import OpenEXR

    # the bindings take C-contiguous planes (a strided view was written wrong, 3.5.3)
    channels = {name: np.ascontiguousarray(rgb[..., c], dtype=np.float32)
                for c, name in enumerate("RGB")}
    # The library's own pool does the threading: File's num_threads does not (3.5.3: one
    # thread either way), and the global count is 0 (no pool) until set. Same bytes with any
    # count (checked); 24 MP STMap: 1.6 s wall with none, 0.85 s with two.
    if OpenEXR.global_thread_count() < ENCODE_THREADS:
        OpenEXR.set_global_thread_count(ENCODE_THREADS)
    buffer = io.BytesIO()
    OpenEXR.File({"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage},
                 channels).write(buffer)
    return buffer.getvalue()


def _encode_png16(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", grey)
    if not ok:
        raise OutputError("could not encode a 16-bit PNG")
    return data.tobytes()


def _encode_npy(inverse_map: np.ndarray) -> bytes:
    """``np.save``'s bytes, the array copied once."""
    array = np.ascontiguousarray(inverse_map, dtype=np.float32)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), array.data])


#: Deflate level of the layered TIFF's strips (ISA-L's levels, 0–3; standard zlib streams).
#: 24 MP RGB page in 16-row strips, CPU s / MB: ISA-L 2 0.3 / 33, ISA-L 3 0.6 / 33, the
#: standard library's zlib 1 1.2 / 32 (used before), libdeflate 1 0.5 / 31, zlib-ng 1 0.4 / 39.
LAYERS_DEFLATE_LEVEL = 2
#: Rows per strip of the layered TIFF: a strip of the retouched page whose pixels are the
#: query's is stored as the query's compressed bytes again, not compressed a second time.
LAYERS_ROWS_PER_STRIP = 16


def _encode_layers(query: np.ndarray, retouched: np.ndarray) -> bytes:
    """The layered TIFF (module docstring): strips deflated here, in threads; tifffile
    writes the file around them."""
    from concurrent.futures import ThreadPoolExecutor

    import tifffile
    from isal import isal_zlib

    differs = (query != retouched).reshape(*query.shape[:2], -1)
    changed = differs[..., 0].copy()  # any channel; faster than any(axis=-1) on (H, W, C)
    for channel in range(1, differs.shape[2]):
        changed |= differs[..., channel]
    mask = changed.view(np.uint8) * np.uint8(255)
    rows = LAYERS_ROWS_PER_STRIP
    tops = range(0, query.shape[0], rows)
    changed_rows = changed.any(axis=1)

    def strip(page: np.ndarray, top: int) -> bytes:
        return isal_zlib.compress(np.ascontiguousarray(page[top:top + rows]),
                                  LAYERS_DEFLATE_LEVEL)

    with ThreadPoolExecutor(ENCODE_THREADS) as pool:
        query_strips = list(pool.map(lambda top: strip(query, top), tops))
        retouched_strips = list(pool.map(
            lambda top, queried: strip(retouched, top) if changed_rows[top:top + rows].any()
            else queried, tops, query_strips))
        mask_strips = list(pool.map(lambda top: strip(mask, top), tops))
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, byteorder="=") as tif:  # the strips' bytes: native
        for name, page, strips in (("query", query, query_strips),
                                   ("retouched", retouched, retouched_strips),
                                   ("changed mask", mask, mask_strips)):
            colour = page.ndim == 3 and page.shape[2] in (3, 4)
            tif.write(iter(strips), shape=page.shape, dtype=page.dtype, rowsperstrip=rows,
                      photometric="rgb" if colour else "minisblack",
                      planarconfig="contig" if colour or page.ndim == 3 and page.shape[2] == 2
                      else None,  # grey + alpha: one page of two samples, not H pages
                      compression="zlib", extratags=[(285, "s", 0, name, True)])
    return buffer.getvalue()


#: The kinds made from the inverse map (the others need only the pixels).
MAP_KINDS = frozenset({"stmap", "displace", "npy"})


def _encode_kind(kind: str, inverse_map: np.ndarray | None, query: np.ndarray,
                 retouched: np.ndarray) -> list[bytes]:
    """The files of one export kind, in :func:`export_paths`' order."""
    if kind == "stmap":
        return [_encode_exr(to_stmap(inverse_map))]
    if kind == "displace":
        x_map, y_map, scale = to_displacement(inverse_map)
        return [_encode_png16(x_map), _encode_png16(y_map), (json.dumps({
            "scale_px": scale, "neutral": DISPLACE_NEUTRAL, "bits": 16,
            "meaning": "source = pixel + (value - neutral) / neutral * scale_px; x map: "
                       "x, y map: y; pixels, y down, centres at integers",
            "width": int(inverse_map.shape[1]), "height": int(inverse_map.shape[0]),
        }, indent=1) + "\n").encode()]
    if kind == "npy":
        return [_encode_npy(inverse_map)]
    if kind == "layers":
        return [_encode_layers(query, retouched)]
    raise ValueError(f"unknown export kind {kind!r}")


def encode_exports(kinds: tuple[str, ...], inverse_map: np.ndarray | None, query: np.ndarray,
                   retouched: np.ndarray, output: Path) -> list[tuple[Path, bytes]]:
    """``[(path, bytes)]`` of every export of one retouched query (``query`` and ``retouched``
    its pixels, as written); paths from :func:`export_paths`. ``inverse_map`` may be None
    when no kind of :data:`MAP_KINDS` is asked for.

    Several kinds are encoded in threads (numpy, OpenEXR, OpenCV and ISA-L release the GIL);
    the bytes are those of one thread."""
    if len(kinds) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
            parts = list(pool.map(lambda kind: _encode_kind(kind, inverse_map, query,
                                                            retouched), kinds))
    else:
        parts = [_encode_kind(kind, inverse_map, query, retouched) for kind in kinds]
    files = [data for part in parts for data in part]
    return list(zip(export_paths(output, kinds), files, strict=True))


def write_exports(encoded: list[tuple[Path, bytes]], *, force: bool = False) -> list[Path]:
    """Write every file atomically; none is written when one exists without ``force``."""
    from .data.shards import write_atomic

    if not force:
        taken = [path for path, _ in encoded if path.exists()]
        if taken:
            raise OutputError(f"{taken[0]}: exists; pass --force to overwrite")
    written = []
    for path, data in encoded:
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
        written.append(path)
    return written
