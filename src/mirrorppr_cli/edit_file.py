"""A measured exemplar as a file: measure once (``retouch --save-edit edit.json``), apply it
anywhere, any number of times (``retouch --edit edit.json``), bit for bit as measured.

Format (JSON, UTF-8): ``{"format": "mirrorppr-edit", "version": 2, "mode": …, "shape": [H, W],
"edit": …, "explanation": …, "residual": …, "body": …, "notes": […], "body_residual": …}``.
Arrays are ``{"dtype": "float32" | "float64", "shape": […], "zlib_base64": …}``: the array's
little-endian bytes, zlib-compressed, base64-encoded (exact: the same floats come back).
Boxes are ``[x0, y0, x1, y1]`` (integer pixels, ``[x0, x1) × [y0, y1)``); points ``(N, 2)``
``(x, y)`` px of the exemplar image, pixel centres at integers. Everything read is checked
(types, shapes, sizes, finite values) before use: a file that is not such an edit is an
:class:`~mirrorppr_cli.errors.InputError` (exit 3) naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError
from .geometric.box import Box
from .geometric.fit import BodyExplanation, BodyResidual, Explanation
from .geometric.measure import MODES, Exemplar
from .geometric.motion import Edit
from .ops import OpRequest
from .ops.request import MAX_STRENGTH

FORMAT = "mirrorppr-edit"
#: 2: a hybrid edit's residual is measured against the named operations as a retouch applies
#: them (smoothed, fold-free); a version-1 residual was measured against their raw MLS field
#: and, applied now, would put back a bump at each handle — such files are refused (save the
#: edit again).
VERSION = 2
#: The most elements one array of an edit file may hold (a face field of a 100 MP portrait is
#: ~30 M): a bound on what a hostile file can make the reader allocate.
MAX_ELEMENTS = 64_000_000
#: The largest edit file read (bytes).
MAX_FILE_BYTES = 1_000_000_000
_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}


class _Bad(Exception):
    """What is wrong with an edit file (becomes an InputError naming the file)."""


# ------------------------------------------------------------------------------------------
# writing


def _array(values: np.ndarray) -> dict:
    arr = np.asarray(values)
    name = "float64" if arr.dtype == np.float64 else "float32"
    data = np.ascontiguousarray(arr, dtype=_DTYPES[name]).tobytes()
    return {"dtype": name, "shape": list(arr.shape),
            "zlib_base64": base64.b64encode(zlib.compress(data, 6)).decode("ascii")}


def _box(box: Box) -> list[int]:
    return [int(box.x0), int(box.y0), int(box.x1), int(box.y1)]


def _ops(ops) -> list[dict]:
    return [{"name": r.name, "strength": float(r.strength)} for r in ops]


def _edit(edit: Edit) -> dict:
    return {"flow": _array(edit.flow), "weight": _array(edit.weight), "box": _box(edit.box),
            "points": _array(edit.points), "max_motion_px": float(edit.max_motion_px),
            "appearance": None if edit.appearance is None else _array(edit.appearance)}


def exemplar_to_dict(exemplar: Exemplar, mode: str) -> dict:
    """The JSON value of a measured ``exemplar`` (measured in ``mode``)."""
    ex = exemplar
    body = None
    if ex.body is not None:
        body = {"ops": _ops(ex.body.ops), "explained": float(ex.body.explained),
                "motion_px": float(ex.body.motion_px), "not_visible": list(ex.body.not_visible)}
    rest = None
    if ex.body_residual is not None:
        r = ex.body_residual
        rest = {"flow": _array(r.flow), "box": _box(r.box), "points": _array(r.points),
                "visibility": _array(r.visibility), "max_motion_px": float(r.max_motion_px),
                "face_points": None if r.face_points is None else _array(r.face_points)}
    return {
        "format": FORMAT, "version": VERSION, "mode": mode,
        "shape": [int(ex.shape[0]), int(ex.shape[1])],
        "edit": _edit(ex.edit),
        "explanation": None if ex.explanation is None else {
            "ops": _ops(ex.explanation.ops), "explained": float(ex.explanation.explained),
            "motion_px": float(ex.explanation.motion_px)},
        "residual": None if ex.residual is None else _edit(ex.residual),
        "body": body, "notes": list(ex.notes), "body_residual": rest,
    }


def save_edit(exemplar: Exemplar, mode: str, path: Path, *, force: bool = False) -> Path:
    """Write ``exemplar`` to ``path`` atomically; OutputError if it exists without ``force``."""
    from .data.shards import write_atomic

    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"{path}: exists; pass --force to overwrite")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for the edit (e.g. edit.json)")
    data = json.dumps(exemplar_to_dict(exemplar, mode), separators=(",", ":")).encode()
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the edit ({exc.strerror or exc})") from None
    return path


# ------------------------------------------------------------------------------------------
# reading


def _get(obj: dict, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise _Bad(f"{where}: missing {key!r}")
    value = obj[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise _Bad(f"{where}.{key}: not a finite number")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"{where}.{key}: not an integer")
        return value
    if not isinstance(value, kind):
        raise _Bad(f"{where}.{key}: not a {kind.__name__}")
    return value


def _read_array(value, where: str, shape: tuple[int | None, ...]) -> np.ndarray:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: not an array")
    dtype = _DTYPES.get(value.get("dtype"))
    dims = value.get("shape")
    if dtype is None:
        raise _Bad(f"{where}: dtype must be float32 or float64")
    if not isinstance(dims, list) or len(dims) != len(shape) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise _Bad(f"{where}: shape must be {len(shape)} non-negative integers")
    if any(want is not None and got != want for got, want in zip(dims, shape, strict=True)):
        raise _Bad(f"{where}: shape {dims}, expected {[s if s is not None else 'n' for s in shape]}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise _Bad(f"{where}: {count} elements, more than {MAX_ELEMENTS}")
    text = value.get("zlib_base64")
    if not isinstance(text, str):
        raise _Bad(f"{where}: missing its data")
    expected = count * dtype.itemsize
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, expected + 1)  # bounded: no inflation bomb
    except (binascii.Error, UnicodeEncodeError, zlib.error):
        raise _Bad(f"{where}: its data is not zlib-compressed base64") from None
    if len(raw) != expected or inflater.unconsumed_tail:
        raise _Bad(f"{where}: its data holds {len(raw)} bytes, expected {expected}")
    arr = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if not np.all(np.isfinite(arr)):
        raise _Bad(f"{where}: holds values that are not finite")
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _read_box(value, where: str, shape: tuple[int, int]) -> Box:
    if not isinstance(value, list) or len(value) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Bad(f"{where}: a box is 4 integers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = value
    empty = (x0, y0, x1, y1) == (0, 0, 0, 0)
    if not empty and not (0 <= x0 <= x1 <= shape[1] and 0 <= y0 <= y1 <= shape[0]):
        raise _Bad(f"{where}: box {value} is not inside the {shape[1]}×{shape[0]} exemplar")
    return Box(x0, y0, x1, y1)


def _read_ops(value, where: str) -> list[OpRequest]:
    from .ops import CATALOG
    from .ops.body_catalog import is_body_operation

    if not isinstance(value, list):
        raise _Bad(f"{where}: not a list")
    ops = []
    for k, item in enumerate(value):
        name = _get(item, "name", str, f"{where}[{k}]")
        strength = _get(item, "strength", float, f"{where}[{k}]")
        if name not in CATALOG and not is_body_operation(name):
            raise _Bad(f"{where}[{k}]: unknown operation {name!r}")
        if abs(strength) > MAX_STRENGTH:
            raise _Bad(f"{where}[{k}]: strength {strength} outside -100…100")
        ops.append(OpRequest(name, strength))
    return ops


def _read_edit(value, where: str, shape: tuple[int, int]) -> Edit:
    box = _read_box(_get(value, "box", list, where), f"{where}.box", shape)
    flow = _read_array(value.get("flow"), f"{where}.flow", (box.height, box.width, 2))
    weight = _read_array(value.get("weight"), f"{where}.weight", (box.height, box.width))
    points = _read_array(value.get("points"), f"{where}.points", (478, 2))
    appearance = value.get("appearance")
    if appearance is not None:
        appearance = _read_array(appearance, f"{where}.appearance", (None, None))
    return Edit(flow, weight, box, points, _get(value, "max_motion_px", float, where),
                appearance)


def exemplar_from_dict(value) -> tuple[Exemplar, str]:
    """``(exemplar, mode)`` from the JSON value of an edit file; _Bad says what is wrong."""
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise _Bad(f"format is not {FORMAT!r}")
    if value.get("version") != VERSION:
        raise _Bad(f"version {value.get('version')!r}; this mirrorppr reads version {VERSION}")
    mode = _get(value, "mode", str, "edit file")
    if mode not in MODES:
        raise _Bad(f"mode {mode!r} is not one of {', '.join(MODES)}")
    dims = _get(value, "shape", list, "edit file")
    if len(dims) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                 for d in dims):
        raise _Bad("shape must be two positive integers [H, W]")
    shape = (dims[0], dims[1])
    edit = _read_edit(value.get("edit"), "edit", shape)
    explanation = None
    if value.get("explanation") is not None:
        e = value["explanation"]
        explanation = Explanation(_read_ops(_get(e, "ops", list, "explanation"), "explanation.ops"),
                                  _get(e, "explained", float, "explanation"),
                                  _get(e, "motion_px", float, "explanation"))
    residual = None
    if value.get("residual") is not None:
        residual = _read_edit(value["residual"], "residual", shape)
    body = None
    if value.get("body") is not None:
        b = value["body"]
        hidden = _get(b, "not_visible", list, "body")
        if not all(isinstance(n, str) for n in hidden):
            raise _Bad("body.not_visible: not a list of names")
        body = BodyExplanation(_read_ops(_get(b, "ops", list, "body"), "body.ops"),
                               _get(b, "explained", float, "body"),
                               _get(b, "motion_px", float, "body"), tuple(hidden))
    notes = _get(value, "notes", list, "edit file")
    if not all(isinstance(n, str) for n in notes):
        raise _Bad("notes: not a list of strings")
    rest = None
    if value.get("body_residual") is not None:
        r = value["body_residual"]
        box = _read_box(_get(r, "box", list, "body_residual"), "body_residual.box", (2**31, 2**31))
        face_points = r.get("face_points")
        rest = BodyResidual(
            _read_array(r.get("flow"), "body_residual.flow", (box.height, box.width, 2)), box,
            _read_array(r.get("points"), "body_residual.points", (33, 2)),
            _read_array(r.get("visibility"), "body_residual.visibility", (33,)),
            _get(r, "max_motion_px", float, "body_residual"),
            None if face_points is None
            else _read_array(face_points, "body_residual.face_points", (478, 2)))
    return Exemplar(edit, shape, explanation, residual, body, tuple(notes), rest), mode


def load_edit(path: Path) -> tuple[Exemplar, str]:
    """``(exemplar, mode)`` saved by :func:`save_edit`; InputError (exit 3) for anything else."""
    path = Path(path)
    if not path.is_file():  # follows links; refuses folders, FIFOs, devices
        raise InputError(f"{path}: no such edit file (or not a regular file)")
    hint = "save one with: mirrorppr retouch --ex BEFORE AFTER --save-edit edit.json"
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _Bad(f"{size} bytes, more than {MAX_FILE_BYTES}")
        with open(path, "rb") as f:
            value = json.loads(f.read(MAX_FILE_BYTES + 1))
        return exemplar_from_dict(value)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the edit file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputError(f"{path}: not a mirrorppr edit file (not JSON); {hint}") from None
    except _Bad as bad:
        raise InputError(f"{path}: not a usable mirrorppr edit file ({bad}); {hint}") from None
