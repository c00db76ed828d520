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
    """``(H, W, 3)`` float32 RGB STMap ``(s, t, 0)`` of an inverse map (module docstring)."""
    height, width = inverse_map.shape[:2]
    s = (inverse_map[..., 0] + 0.5) / width
    t = 1.0 - (inverse_map[..., 1] + 0.5) / height
    return np.dstack([s, t, np.zeros_like(s)]).astype(np.float32)


def from_stmap(stmap: np.ndarray) -> np.ndarray:
    """The inverse map ``(H, W, 2)`` of an RGB STMap (the inverse of :func:`to_stmap`)."""
    height, width = stmap.shape[:2]
    x = stmap[..., 0].astype(np.float64) * width - 0.5
    y = (1.0 - stmap[..., 1].astype(np.float64)) * height - 0.5
    return np.dstack([x, y]).astype(np.float32)


def to_displacement(inverse_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x map, y map, scale px)``: 16-bit displacement maps of an inverse map (module
    docstring); ``scale`` is the largest displacement rounded up to whole pixels (≥ 1)."""
    height, width = inverse_map.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    dx, dy = inverse_map[..., 0] - xs, inverse_map[..., 1] - ys
    scale = float(max(1.0, np.ceil(max(np.abs(dx).max(initial=0), np.abs(dy).max(initial=0)))))

    def encode(d: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(DISPLACE_NEUTRAL + DISPLACE_NEUTRAL * d / scale), 0,
                       65535).astype(np.uint16)

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


def _encode_exr(rgb: np.ndarray) -> bytes:
    # OpenCV's OpenEXR codec is off unless this is set (it is read when the codec is used).
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    # PIZ: lossless, the smallest and fastest of OpenCV's lossless EXR codecs on a map
    # (24 MP STMap: ZIP 3.9 s / 27 MB, PIZ 2.2 s / 23 MB, none 1.8 s / 288 MB).
    ok, data = cv2.imencode(".exr", np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT,
                             cv2.IMWRITE_EXR_COMPRESSION, cv2.IMWRITE_EXR_COMPRESSION_PIZ])
    if not ok:
        raise OutputError("OpenEXR: this OpenCV build cannot write .exr; export npy instead")
    return data.tobytes()


def _encode_png16(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", grey)
    if not ok:
        raise OutputError("could not encode a 16-bit PNG")
    return data.tobytes()


def _encode_npy(inverse_map: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(inverse_map, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


#: zlib level of the layered TIFF: two 24 MP RGB pages take 10.5 s at zlib's default (6),
#: 1.7 s at 1, for files about 1.5× larger (lossless either way).
LAYERS_ZLIB_LEVEL = 1


def _encode_layers(query: np.ndarray, retouched: np.ndarray) -> bytes:
    import tifffile

    changed = np.any(query != retouched, axis=-1) if query.ndim == 3 else query != retouched
    mask = np.where(changed, 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        for name, page in (("query", query), ("retouched", retouched), ("changed mask", mask)):
            tif.write(np.ascontiguousarray(page), photometric="rgb" if page.ndim == 3
                      and page.shape[2] in (3, 4) else "minisblack",
                      compression="zlib", compressionargs={"level": LAYERS_ZLIB_LEVEL},
                      extratags=[(285, "s", 0, name, True)])
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

    Several kinds are encoded in threads (OpenCV's and zlib's encoders release the GIL); the
    bytes are those of one thread."""
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
