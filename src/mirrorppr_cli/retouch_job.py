"""The ``retouch`` job: measure an exemplar pair's edit once, apply it to query files."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError
from .io import read_image, with_pixels, write_image
from .landmarks import find_faces, select_face
from .transfer import Edit, estimate_edit, transfer


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


def load_exemplar(before: Path, after: Path, *, max_pixels: int | None = None) -> Edit:
    """Read an exemplar pair and measure its edit (largest face)."""
    b = np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8())
    a = np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8())
    b_points, _, _ = face_points(b, None, str(before))
    a_points, _, _ = face_points(a, None, str(after))
    return estimate_edit(b, a, b_points, a_points, name=f"{before.name} → {after.name}")


def retouch_file(
    edit: Edit, source: Path, dest: Path, *, strength: float = 1.0,
    face_index: int | None = None, force: bool = False, output_format: str | None = None,
    max_pixels: int | None = None,
) -> RetouchReport:
    """Apply ``edit`` to the query ``source``; write ``dest`` atomically; errors propagate."""
    start = time.perf_counter()
    if not force and dest.exists():
        raise OutputError(f"{dest}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    points, chosen, found = face_points(picture.rgb8(), face_index, str(source))
    pixels = transfer(edit, picture.pixels, points, strength=strength)
    written = write_image(with_pixels(picture, pixels), dest, force=force, format=output_format)
    return RetouchReport(
        input=str(source), output=str(written), faces_found=found, face=chosen,
        changed_pixels=int(np.any(pixels != picture.pixels, axis=-1).sum()),
        strength=strength, seconds=round(time.perf_counter() - start, 4),
    )
