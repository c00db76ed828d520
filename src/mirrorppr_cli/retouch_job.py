"""The ``retouch`` job on files: read a query, apply a measured exemplar to it, write it.

The geometry is :mod:`mirrorppr_cli.geometric` (:func:`~mirrorppr_cli.geometric.measure.
measure_exemplar` once per batch, :func:`~mirrorppr_cli.geometric.apply.apply_exemplar` per
query); this module adds what a file needs: reading and writing with the source's metadata and
quality, exports beside the output, the artefact check that flags a frame for review, and the
report (:class:`~mirrorppr_cli.result.Result`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import OutputError
from .geometric.apply import apply_exemplar, sampling_map
from .geometric.face import is_mirrored
from .geometric.measure import Exemplar, face_points, measure_exemplar
from .io import output_quality, read_image, with_pixels, write_image
from .metrics.pixel import changed_mask
from .result import Result
from .subject import Subject


def load_exemplar(before: Path, after: Path, *, mode: str = "hybrid",
                  max_pixels: int | None = None,
                  on_stage: Callable[[str], None] | None = None) -> Exemplar:
    """Read an exemplar pair from files and measure it (``on_stage``: see
    :func:`measure_exemplar`)."""
    if on_stage:
        on_stage("reading the exemplar")
    b = np.ascontiguousarray(read_image(before, max_pixels=max_pixels).rgb8())
    a = np.ascontiguousarray(read_image(after, max_pixels=max_pixels).rgb8())
    return measure_exemplar(b, a, mode=mode, name=f"{before.name} → {after.name}",
                            on_stage=on_stage)


def retouch_file(
    exemplar: Exemplar, source: Path, dest: Path, *, strength: float = 1.0,
    face_index: int | None = None, force: bool = False, output_format: str | None = None,
    max_pixels: int | None = None, check: bool = True, exports: tuple[str, ...] = (),
    quality: int | None = None,
    keep: Callable[[np.ndarray, np.ndarray, Callable[[], np.ndarray]], None] | None = None,
) -> Result:
    """Apply ``exemplar`` to the query ``source``; write ``dest`` atomically; errors propagate.

    ``check``: look for artefacts in the result (:func:`review_reasons`); what is found is in
    the report's ``review`` (the frame is written: the retoucher decides). ``exports``: kinds
    of :mod:`mirrorppr_cli.exports` written beside ``dest`` (the edit as a map, layers…).
    ``keep``: called after writing with the query and the result (``(H, W, 3)`` uint8 RGB)
    and a function that returns the inverse map (:func:`sampling_map`), e.g. for a review
    page."""
    from .exports import MAP_KINDS, encode_exports, export_paths, write_exports

    start = time.perf_counter()
    for path in [dest, *export_paths(dest, exports)]:
        if not force and path.exists():
            raise OutputError(f"{path}: exists; pass --force to overwrite")
    picture = read_image(source, max_pixels=max_pixels)
    points, chosen, found = face_points(picture.rgb8(), face_index, str(source))
    notes: list[str] = []
    doubts: list[str] = []
    subject = Subject(picture.rgb8(), str(source))
    mirrored = is_mirrored(exemplar.edit.appearance, subject.rgb, points)
    pixels = apply_exemplar(exemplar, picture.pixels, points, strength, rgb=subject.rgb,
                            notes=notes, review=doubts, mirrored=mirrored, subject=subject)
    result = with_pixels(picture, pixels)
    changed = changed_mask(pixels, picture.pixels)
    review = (review_reasons(picture.rgb8(), result.rgb8(), changed) + doubts) if check else []
    encoded = []
    inverse_map = None
    if exports:  # made before anything is written: a failure leaves no output behind
        if MAP_KINDS & set(exports):
            inverse_map = sampling_map(exemplar, subject.rgb, points, strength,
                                       mirrored=mirrored, subject=subject)
        encoded = encode_exports(exports, inverse_map, picture.pixels, pixels, dest)
    written = write_image(result, dest, force=force, format=output_format, jpeg_quality=quality)
    exported = write_exports(encoded, force=force)
    if keep is not None:
        keep(picture.rgb8(), result.rgb8(),
             lambda: inverse_map if inverse_map is not None else sampling_map(
                 exemplar, subject.rgb, points, strength, mirrored=mirrored, subject=subject))
    lossy = written.suffix.lower() in (".jpg", ".jpeg", ".jpe", ".webp")
    return Result(
        input=str(source), output=str(written), faces_found=found, face=chosen,
        changed_pixels=int(np.count_nonzero(changed)),
        strength=strength, seconds=round(time.perf_counter() - start, 4), notes=notes,
        review=review, exports=[str(p) for p in exported],
        quality=output_quality(picture, quality) if lossy else None,
    )


#: A written frame is flagged for review when the artefact check finds more than this many
#: new impulse-like blobs (the metric gives 0 on the nine real professional retouches and
#: on JPEG re-encoding; its one false positive on 33 catalog warps was a single blob).
REVIEW_BLOBS = 1


def review_reasons(query: np.ndarray, output: np.ndarray,
                   changed: np.ndarray | None = None) -> list[str]:
    """Why ``output`` (the retouched ``query``, both ``(H, W, 3)`` uint8 RGB) may be damaged:
    new impulse-like blobs (dots, ringed spots) or torn contours the query does not have.
    ``changed``: the pixels the retouch changed, when known (see :func:`new_blobs`)."""
    from .metrics.artefacts import new_blobs

    blobs = new_blobs(query, output, changed=changed)
    reasons = []
    if blobs.count > REVIEW_BLOBS:
        where = ", ".join(f"({x}, {y})" for x, y, _, _ in blobs.boxes[:4])
        reasons.append(f"{blobs.count} new dot-like blobs the query does not have, e.g. at "
                       f"x, y = {where}; look at the frame before it ships")
    if blobs.long_components:
        reasons.append(f"{blobs.long_components} new high-contrast streaks or torn contours; "
                       "look at the frame before it ships")
    return reasons
