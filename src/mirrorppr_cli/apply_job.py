"""The ``apply`` job: named catalog operations on one image file, start to finish.

Kept apart from the CLI so scripts and tests can call it; the CLI only loops, shows
progress and prints the reports.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backend import Backend, require
from .errors import OutputError
from .geometric.landmarks import check_detectable, find_faces, select_face
from .io import Picture, frames_note, read_image, with_pixels, write_image
from .ops import OpRequest
from .result import Result


def apply_ops_to_picture(
    picture: Picture,
    requests: list[OpRequest],
    backend: Backend,
    *,
    face_index: int | None = None,
    name: str = "image",
    keep_map: list | None = None,
) -> tuple[Picture, Result]:
    """Detect the face, apply ``requests`` with ``backend``; return the new picture and a report.

    ``keep_map``: a list that gets the inverse map of the edit (``(H, W, 2)`` float32, for
    every output pixel the ``(x, y)`` source position, pixel centres at integers): the same
    operations applied to an image of coordinates (every step resamples bilinearly, exact for
    coordinates), the body detected on the picture as the body operations see it."""
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
    face_edited = pixels  # the body is detected on it (the face edit is part of the picture)
    if body_requests:
        pixels = backend.apply_body_ops(pixels, body_requests, name=name)
    if keep_map is not None:
        xs, ys = np.meshgrid(np.arange(picture.width, dtype=np.float32),
                             np.arange(picture.height, dtype=np.float32))
        coords = np.dstack([xs, ys, np.zeros_like(xs)])
        if face_requests:
            coords = backend.apply_ops(coords, face.points, face_requests)
        if body_requests:
            coords = backend.apply_body_ops(coords, body_requests, name=name,
                                            rgb=with_pixels(picture, face_edited).rgb8())
        keep_map.append(np.ascontiguousarray(coords[..., :2], dtype=np.float32))
    changed = int(np.any(pixels != picture.pixels, axis=-1).sum())
    report = Result(
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
    exports: tuple[str, ...] = (),
    review_dir: Path | None = None,
) -> Result:
    """Read ``source``, apply ``requests``, write ``dest`` atomically; errors propagate.

    ``exports``: kinds of :mod:`mirrorppr_cli.exports` written beside ``dest``;
    ``review_dir``: the frame's review thumbnails and motion heat-map go there
    (:mod:`mirrorppr_cli.review_assets`), returned in ``report.extra["review"]``."""
    from .exports import encode_exports, export_paths, write_exports

    start = time.perf_counter()
    for path in [dest, *export_paths(dest, exports)]:
        if not force and path.exists():  # fail before the work; writes re-check atomically
            raise OutputError(f"{path}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    from .exports import MAP_KINDS

    maps: list | None = [] if MAP_KINDS & set(exports) or review_dir is not None else None
    result, report = apply_ops_to_picture(
        picture, requests, backend, face_index=face_index, name=str(source), keep_map=maps
    )
    encoded = (encode_exports(exports, maps[0] if maps else None, picture.pixels,
                              result.pixels, dest)
               if exports else [])  # made before anything is written
    written = write_image(result, dest, force=force, format=output_format)
    report.exports = [str(p) for p in write_exports(encoded, force=force)]
    if review_dir is not None:
        from .review_assets import asset_key, save_item_assets

        report.extra["review"] = save_item_assets(review_dir, asset_key(dest), picture.rgb8(),
                                                  result.rgb8(), maps[0])
    report.output = str(written)
    if (note := frames_note(picture.frames, picture.format)) is not None:
        report.notes.append(note)
    report.seconds = round(time.perf_counter() - start, 4)
    return report
