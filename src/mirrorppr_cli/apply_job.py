"""The ``apply`` job: named catalog operations on one image file, start to finish.

Kept apart from the CLI so scripts and tests can call it; the CLI only loops, shows
progress and prints the reports.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backend import Backend, require
from .errors import OutputError
from .io import Picture, frames_note, read_image, with_pixels, write_image
from .landmarks import check_detectable, find_faces, select_face
from .ops import OpRequest


@dataclass
class ApplyReport:
    """What happened to one input; serialised as-is by ``--json``."""

    input: str
    output: str | None = None
    status: str = "ok"  # "ok", "failed" or "skipped" (--skip-existing: the output exists)
    error: str | None = None
    exit_code: int = 0
    faces_found: int = 0
    face: int | None = None
    face_box: list[float] | None = None
    ops: list[dict] = field(default_factory=list)
    changed_pixels: int = 0
    size: list[int] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # for the user: what was not as asked

    def to_dict(self) -> dict:
        return asdict(self)


def apply_ops_to_picture(
    picture: Picture,
    requests: list[OpRequest],
    backend: Backend,
    *,
    face_index: int | None = None,
    name: str = "image",
) -> tuple[Picture, ApplyReport]:
    """Detect the face, apply ``requests`` with ``backend``; return the new picture and a report."""
    from .ops.body_catalog import is_body_operation

    require(backend, "ops")
    check_detectable(picture.width, picture.height, name)  # face and body detectors alike
    face_requests = [r for r in requests if not is_body_operation(r.name)]
    body_requests = [r for r in requests if is_body_operation(r.name)]
    pixels = picture.pixels
    faces, face = [], None
    if face_requests:
        faces = find_faces(picture.rgb8())
        face = select_face(faces, face_index, name=name)
        pixels = backend.apply_ops(pixels, face.points, face_requests)
    if body_requests:
        pixels = backend.apply_body_ops(pixels, body_requests, name=name)
    changed = int(np.any(pixels != picture.pixels, axis=-1).sum())
    report = ApplyReport(
        input=name,
        faces_found=len(faces),
        face=faces.index(face) if face is not None else None,
        face_box=[round(v, 2) for v in face.box] if face is not None else None,
        ops=[{"name": r.name, "strength": r.strength} for r in requests],
        changed_pixels=changed,
        size=[picture.width, picture.height],
    )
    return with_pixels(picture, pixels), report


def apply_ops_to_file(
    source: Path,
    dest: Path,
    requests: list[OpRequest],
    backend: Backend,
    *,
    face_index: int | None = None,
    force: bool = False,
    output_format: str | None = None,
    max_pixels: int | None = None,
) -> ApplyReport:
    """Read ``source``, apply ``requests``, write ``dest`` atomically; errors propagate."""
    start = time.perf_counter()
    if not force and dest.exists():  # fail before the work; write_image re-checks atomically
        raise OutputError(f"{dest}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    result, report = apply_ops_to_picture(
        picture, requests, backend, face_index=face_index, name=str(source)
    )
    written = write_image(result, dest, force=force, format=output_format)
    report.output = str(written)
    if (note := frames_note(picture.frames, picture.format)) is not None:
        report.notes.append(note)
    report.seconds = round(time.perf_counter() - start, 4)
    return report
