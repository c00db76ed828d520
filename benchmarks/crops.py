"""Crops of retouch results at full size, to look at before anything is called done.

    python benchmarks/crops.py --demo docs/            # the built-in demo (public domain)
    python benchmarks/crops.py --survey DIR bench-results/survey-crops/
    python benchmarks/crops.py --cross DIR QUERIES bench-results/cross-crops/ [--mode flow]

For each exemplar/query it writes ``NAME_crops.jpg``: the query and the result side by side,
cropped to the pixels the retouch changed (their box + 32 px, at most 320 px square, 1:1, then
enlarged ×2 with nearest neighbours so single pixels stay visible), plus the artefact check's verdict in
``crops.json``. ``--survey`` reads ``survey-qNN-example-source/-example-retouched/-query-source``
triples (the project's development pairs; their licence forbids committing them or their
crops, so write those under the git-ignored bench-results/). ``--cross`` applies every survey
exemplar to every image of ``QUERIES`` (other people, other framings: e.g. the package photos
in ``../shared/faces/packages``), names ``qNN-on-FILE``, and prints how many items carry new
blobs or torn contours; an image without a face is listed as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mirrorppr_cli.geometric.apply import apply_exemplar
from mirrorppr_cli.geometric.measure import MODES, face_points, measure_exemplar
from mirrorppr_cli.io import read_image
from mirrorppr_cli.metrics.artefacts import new_blobs

SIDE = 320


def crop_pair(query: np.ndarray, output: np.ndarray) -> np.ndarray | None:
    """``(h, 2w, 3)`` RGB: query | output around the changed pixels, enlarged ×2; None when
    nothing changed."""
    changed = np.any(query != output, axis=-1)
    if not changed.any():
        return None
    rows, cols = np.nonzero(changed)
    side = int(min(SIDE, max(rows.ptp(), cols.ptp()) + 32))
    cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    y0 = int(np.clip(cy - side // 2, 0, max(query.shape[0] - side, 0)))
    x0 = int(np.clip(cx - side // 2, 0, max(query.shape[1] - side, 0)))
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    tiles = [cv2.resize(np.ascontiguousarray(im[sl]), None, fx=2, fy=2,
                        interpolation=cv2.INTER_NEAREST) for im in (query, output)]
    return np.hstack([tiles[0], np.full((tiles[0].shape[0], 8, 3), 255, np.uint8), tiles[1]])


def run(triples: list[tuple[str, Path, Path, Path]], out: Path, mode: str = "hybrid") -> dict:
    from mirrorppr_cli.errors import InputError

    out.mkdir(parents=True, exist_ok=True)
    verdicts = {}
    measured = {}  # each exemplar pair once
    for name, before_path, after_path, query_path in triples:
        if (before_path, after_path) not in measured:
            before, after = (np.ascontiguousarray(read_image(p).rgb8())
                             for p in (before_path, after_path))
            measured[before_path, after_path] = measure_exemplar(before, after, mode=mode)
        exemplar = measured[before_path, after_path]
        query = np.ascontiguousarray(read_image(query_path).rgb8())
        try:
            points, _, _ = face_points(query, None, name)
        except InputError as error:  # no face, too small…
            verdicts[name] = {"error": str(error)}
            print(name, verdicts[name], flush=True)
            continue
        output = apply_exemplar(exemplar, query, points, rgb=query)
        blobs = new_blobs(query, output)
        verdicts[name] = {"blobs": blobs.count, "long_components": blobs.long_components,
                          "changed_pixels": int(np.any(query != output, axis=-1).sum())}
        sheet = crop_pair(query, output)
        if sheet is not None:
            cv2.imwrite(str(out / f"{name}_crops.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(name, verdicts[name], flush=True)
    (out / "crops.json").write_text(json.dumps(verdicts, indent=2))
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, help="write the demo's crops to this folder")
    parser.add_argument("--survey", nargs=2, type=Path, metavar=("PAIRS", "OUT"))
    parser.add_argument("--cross", nargs=3, type=Path, metavar=("PAIRS", "QUERIES", "OUT"))
    parser.add_argument("--mode", choices=MODES, default="hybrid",
                        help="how the exemplar is measured and carried (default hybrid)")
    args = parser.parse_args()
    if args.demo:
        from mirrorppr_cli.demo import demo_retouch_inputs

        with tempfile.TemporaryDirectory() as tmp:
            (before, after), (query,) = demo_retouch_inputs(Path(tmp))
            run([("demo", before, after, Path(query))], args.demo, args.mode)
    if args.survey:
        folder, out = args.survey
        triples = []
        for source in sorted(folder.glob("survey-q*-example-source.jpg")):
            stem = source.name[: -len("-example-source.jpg")]
            triples.append((stem, source, folder / f"{stem}-example-retouched.jpg",
                            folder / f"{stem}-query-source.jpg"))
        run(triples, out, args.mode)
    if args.cross:
        folder, queries, out = args.cross
        images = sorted(p for p in queries.iterdir()
                        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
        triples = []
        for source in sorted(folder.glob("survey-q*-example-source.jpg")):
            stem = source.name[: -len("-example-source.jpg")]
            for image in images:
                triples.append((f"{stem.removeprefix('survey-')}-on-{image.stem}", source,
                                folder / f"{stem}-example-retouched.jpg", image))
        verdicts = run(triples, out, args.mode)
        scored = [v for v in verdicts.values() if "error" not in v]
        damaged = [v for v in scored if v["blobs"] > 1 or v["long_components"]]
        print(f"{len(scored)} items scored, {len(verdicts) - len(scored)} without a face; "
              f"{len(damaged)} with more than one new blob or a torn contour; blobs in all "
              f"{sum(v['blobs'] for v in scored)}", flush=True)


if __name__ == "__main__":
    main()
