"""The ``retouch`` job: measure an exemplar pair's edit once, apply it to query files."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError
from .explain import Explanation, explain, residual_edit
from .io import read_image, with_pixels, write_image
from .landmarks import find_faces, select_face
from .ops import plan_warp
from .transfer import Edit, estimate_edit, transfer
from .warp import apply_local_warp

MODES = ("flow", "catalog", "hybrid")


@dataclass(frozen=True)
class Exemplar:
    """A measured exemplar: its edit, its image shape, and (catalog mode) its explanation."""

    edit: Edit
    shape: tuple[int, int]
    explanation: Explanation | None = None
    residual: Edit | None = None  # hybrid mode: the motion the catalog does not explain


def apply_exemplar(exemplar: Exemplar, pixels: np.ndarray, points: np.ndarray,
                   strength: float = 1.0) -> np.ndarray:
    """The query's new pixels.

    flow: the measured motion carried over through the landmark correspondence; catalog: the
    fitted catalog operations re-planned on the query's own landmarks; hybrid: catalog, then
    the motion the catalog does not explain carried over as in flow mode.
    """
    if exemplar.explanation is None:
        return transfer(exemplar.edit, pixels, points, strength=strength)
    from .ops import OpRequest

    requests = [OpRequest(r.name, max(-100.0, min(100.0, r.strength * strength)))
                for r in exemplar.explanation.ops]
    out = apply_local_warp(pixels, plan_warp(points, requests)) if requests else pixels.copy()
    if exemplar.residual is not None:
        out = transfer(exemplar.residual, out, points, strength=strength)
    return out


@dataclass
class RetouchReport:
    """What happened to one query; serialised as-is by ``--json``."""

    input: str
    output: str | None = None
    status: str = "ok"
    error: str | None = None
    exit_code: int = 0
    faces_found: int = 0
    face: int | None = None
    changed_pixels: int = 0
    strength: float = 1.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def face_points(rgb: np.ndarray, index: int | None, name: str) -> tuple[np.ndarray, int, int]:
    """``(points, chosen index, faces found)`` of the face to use in ``rgb``."""
    faces = find_faces(rgb)
    face = select_face(faces, index, name=name)
    return face.points, faces.index(face), len(faces)


def measure_exemplar(before: np.ndarray, after: np.ndarray, *, mode: str = "hybrid",
                     name: str = "exemplar") -> Exemplar:
    """Measure the edit of an exemplar pair (RGB uint8, largest face); explain it in catalog mode."""
    b_points, _, _ = face_points(before, None, f"{name} (before)")
    a_points, _, _ = face_points(after, None, f"{name} (after)")
    edit = estimate_edit(before, after, b_points, a_points, name=name)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if mode == "flow":
        return Exemplar(edit, before.shape[:2])
    explanation = explain(edit, before.shape[:2])
    residual = residual_edit(edit, explanation, before.shape[:2]) if mode == "hybrid" else None
    return Exemplar(edit, before.shape[:2], explanation, residual)


def load_exemplar(before: Path, after: Path, *, mode: str = "hybrid",
                  max_pixels: int | None = None) -> Exemplar:
    """Read an exemplar pair from files and measure it."""
    b = np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8())
    a = np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8())
    return measure_exemplar(b, a, mode=mode, name=f"{before.name} → {after.name}")


def retouch_file(
    exemplar: Exemplar, source: Path, dest: Path, *, strength: float = 1.0,
    face_index: int | None = None, force: bool = False, output_format: str | None = None,
    max_pixels: int | None = None,
) -> RetouchReport:
    """Apply ``exemplar`` to the query ``source``; write ``dest`` atomically; errors propagate."""
    start = time.perf_counter()
    if not force and dest.exists():
        raise OutputError(f"{dest}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    points, chosen, found = face_points(picture.rgb8(), face_index, str(source))
    pixels = apply_exemplar(exemplar, picture.pixels, points, strength)
    written = write_image(with_pixels(picture, pixels), dest, force=force, format=output_format)
    return RetouchReport(
        input=str(source), output=str(written), faces_found=found, face=chosen,
        changed_pixels=int(np.any(pixels != picture.pixels, axis=-1).sum()),
        strength=strength, seconds=round(time.perf_counter() - start, 4),
    )
