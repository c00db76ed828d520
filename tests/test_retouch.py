"""``mirrorppr retouch``: exemplar-based structural retouching with the geometric engine.

Every image is built from scikit-image's astronaut (public domain). An exemplar pair is the
astronaut before/after catalog operations (:func:`plan_warp` + :func:`apply_local_warp`); the
ground truth for a query is the same operations planned on *that query's own* landmarks.

Tolerances are stated next to each assertion with the value measured when the test was written
(numpy 1.26 / OpenCV 4.11 / MediaPipe landmarks, x86-64). Mind the baseline: the edits are a few
pixels, so the *unchanged* query already scores ~45 dB PSNR against the ground truth; every PSNR
threshold here sits well above that.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _perturbations import rotate_on_canvas
from mirrorppr_backends.warp import WarpBackend
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import InputError
from mirrorppr_cli.geometric.apply import apply_exemplar
from mirrorppr_cli.geometric.carry import transfer
from mirrorppr_cli.geometric.face_frame import FaceFrame
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.measure import measure_exemplar
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.geometric.motion import Edit, estimate_edit
from mirrorppr_cli.metrics.edit_fidelity import dense_flow, edit_fidelity
from mirrorppr_cli.metrics.pixel import psnr
from mirrorppr_cli.ops import OpRequest, plan_warp

runner = CliRunner()

#: A multi-op exemplar edit; every op is left/right symmetric (see the mirroring tests).
OPS = (OpRequest("eye_resize", 60), OpRequest("mouth_resize", -50), OpRequest("nose_alar", -60))

# --------------------------------------------------------------------------------------------
# helpers


def _points(rgb: np.ndarray) -> np.ndarray:
    faces = find_faces(np.ascontiguousarray(rgb))
    assert faces, "test image lost its face"
    return faces[0].points


def _retouched(rgb: np.ndarray, points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``rgb`` with :data:`OPS` (strengths × ``scale``) planned on ``points``."""
    requests = [OpRequest(r.name, r.strength * scale) for r in OPS]
    return apply_local_warp(rgb, plan_warp(points, requests))


def _edit(before: np.ndarray, after: np.ndarray) -> Edit:
    return estimate_edit(before, after, _points(before), _points(after))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return np.any((a != b).reshape(a.shape[0], a.shape[1], -1), axis=-1)


def _shift(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Whole-pixel translation (interior pixels copied exactly), reflected border."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = rgb.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def _rotate(rgb: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    """Rotation (counter-clockwise) and scale about the centre, same canvas, reflected border."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def _mirror(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.fliplr(rgb))


def _rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(rgb), None, fx=factor, fy=factor,
                      interpolation=cv2.INTER_AREA)


def _no_face(astronaut: np.ndarray) -> np.ndarray:
    """The bottom-left of the astronaut (suit and background): MediaPipe finds no face."""
    crop = np.ascontiguousarray(astronaut[320:, :200])
    assert not find_faces(crop)
    return crop


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(path)
    return path


def _run(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def pair_512(astronaut_512, astronaut_512_points):
    """``(before, after, edit)``: the astronaut at 512² and its :data:`OPS` retouch."""
    after = _retouched(astronaut_512, astronaut_512_points)
    return astronaut_512, after, _edit(astronaut_512, after)


@pytest.fixture(scope="module")
def pair_1024(astronaut_1024, astronaut_1024_points):
    after = _retouched(astronaut_1024, astronaut_1024_points)
    return astronaut_1024, after, _edit(astronaut_1024, after)


#: Query variants of the 1024² astronaut: mirrored, half size, rotated/scaled on a canvas,
#: shifted.
QUERY_TRANSFORMS = {
    "mirrored": _mirror,
    "half_size": lambda rgb: _rescale(rgb, 0.5),
    "rotated12_scaled0.8_on_canvas": rotate_on_canvas,
    "shifted": lambda rgb: _shift(rgb, 37, 23),
}


@pytest.fixture(scope="module")
def queries_1024(astronaut_1024):
    """``{name: (query, its landmarks, ground truth)}`` for :data:`QUERY_TRANSFORMS`."""
    out = {}
    for name, make in QUERY_TRANSFORMS.items():
        query = make(astronaut_1024)
        points = _points(query)
        out[name] = (query, points, _retouched(query, points))
    return out


@pytest.fixture(scope="module")
def pngs_512(tmp_path_factory, pair_512):
    """The 512² exemplar pair and a shifted query written as PNG files."""
    before, after, _ = pair_512
    folder = tmp_path_factory.mktemp("retouch_in")
    query = _shift(before, -25, 30)
    return {
        "before": _save(folder / "before.png", before),
        "after": _save(folder / "after.png", after),
        "query": _save(folder / "query.png", query),
        "query_pixels": query,
    }


# --------------------------------------------------------------------------------------------
# 1. self-consistency


@pytest.mark.parametrize(
    ("size", "min_psnr", "min_recall"),
    # measured: 62.53 dB / recall 0.960 at 512², 67.23 dB / 0.971 at 1024²; the unchanged
    # query scores 45.28 / 45.13 dB, so 55 / 60 dB cannot be reached by doing nothing.
    [(512, 55.0, 0.90), (1024, 60.0, 0.92)],
)
def test_exemplar_before_as_query_reproduces_after(request, size, min_psnr, min_recall):
    before, after, edit = request.getfixturevalue(f"pair_{size}")
    points = request.getfixturevalue(f"astronaut_{size}_points")
    out = transfer(edit, before, points)
    baseline = psnr(before, after)
    if size == 512:  # in place: the same pixels, written into the array given
        mine = before.copy()
        assert transfer(edit, mine, points, in_place=True) is mine
        np.testing.assert_array_equal(mine, out)
    assert psnr(out, after) >= min_psnr
    assert psnr(out, after) >= baseline + 10.0  # measured gain: 17.3 dB (512²), 22.1 dB (1024²)
    assert edit_fidelity(before, out, after).recall >= min_recall


# --------------------------------------------------------------------------------------------
# 2. the query moved, scaled, rotated, mirrored


@pytest.mark.parametrize("name", list(QUERY_TRANSFORMS))
def test_transfer_follows_the_query_face(pair_1024, queries_1024, name):
    """Measured recall: mirrored 0.920, half 0.948, rotated on canvas 0.952, shifted 0.949.

    0.87 is not reached without the Jacobian that turns/scales the offsets (measured with
    ``J = I``: half size −0.24, rotated 0.65); PSNR gains measured 17.97–20.39 dB.
    """
    _, _, edit = pair_1024
    query, points, truth = queries_1024[name]
    out = transfer(edit, query, points)
    assert out.shape == query.shape and out.dtype == query.dtype
    fidelity = edit_fidelity(query, out, truth)
    assert fidelity.moved_pixels > 500
    assert fidelity.recall >= 0.87
    assert psnr(out, truth) >= psnr(query, truth) + 10.0


# --------------------------------------------------------------------------------------------
# 3. self-augmenting the exemplar pair does not change the estimated operation


#: augmentation → (min PSNR between results, max |Δ recall|). Measured (PSNR, Δ recall):
#: mirrored (63.3 dB, −0.038), rotated 10° (67.7 dB, −0.006), rescaled 0.6× (65.1 dB, −0.008).
#: Mirroring is the loosest: the astronaut's face is not exactly symmetric, so the mirrored
#: edit is a slightly different (honest) edit. Without the Jacobian (``J = I``) rotated gives
#: 58.3 dB / Δ −0.12 and rescaled 52.4 dB / Δ −0.35: both fail.
EXEMPLAR_AUGMENTATIONS = {
    "mirrored": (_mirror, 60.0, 0.10),
    "rotated10": (lambda rgb: _rotate(rgb, 10), 63.0, 0.05),
    "rescaled0.6": (lambda rgb: _rescale(rgb, 0.6), 60.0, 0.06),
}


@pytest.mark.parametrize("name", list(EXEMPLAR_AUGMENTATIONS))
def test_augmented_exemplar_gives_the_same_result(pair_1024, queries_1024, name):
    before, after, edit = pair_1024
    augment, min_psnr, max_recall_change = EXEMPLAR_AUGMENTATIONS[name]
    query, points, truth = queries_1024["shifted"]
    reference = transfer(edit, query, points)
    augmented = transfer(_edit(augment(before), augment(after)), query, points)
    # The two results agree far beyond what doing nothing would (45.2 dB vs the reference).
    assert psnr(augmented, reference) >= min_psnr
    assert psnr(augmented, reference) > psnr(query, reference) + 10.0
    recall = edit_fidelity(query, augmented, truth).recall
    reference_recall = edit_fidelity(query, reference, truth).recall  # measured 0.949
    assert abs(recall - reference_recall) <= max_recall_change


# --------------------------------------------------------------------------------------------
# 4. what the exemplar did not move stays bit-identical


def test_unmoved_pixels_are_bit_identical(pair_1024, queries_1024):
    before, after, edit = pair_1024
    query, points, truth = queries_1024["shifted"]  # shifted by whole pixels (37, 23)
    out = transfer(edit, query, points)
    changed = _changed(out, query)
    # Measured: 14 765 pixels changed, 1.41 % of the image.
    assert 5000 < changed.sum() < 0.03 * changed.size
    # Every changed pixel is near a pixel the exemplar changed (carried by the same shift):
    # measured at most 2.24 px away (2.8 px when the query is the exemplar itself).
    moved_in_exemplar = np.roll(_changed(after, before), (23, 37), axis=(0, 1))
    distance = ndimage.distance_transform_edt(~moved_in_exemplar)
    assert distance[changed].max() <= 6.0
    # Far from the face, bit-identical: corners, and everything outside the landmark box
    # grown by a quarter of its size.
    for rows, cols in ((slice(0, 128), slice(0, 128)), (slice(0, 128), slice(-128, None)),
                       (slice(-128, None), slice(0, 128)), (slice(-128, None), slice(-128, None))):
        np.testing.assert_array_equal(out[rows, cols], query[rows, cols])
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    grow = 0.25 * max(x1 - x0, y1 - y0)
    far = np.ones(changed.shape, bool)
    far[int(y0 - grow):int(y1 + grow) + 1, int(x0 - grow):int(x1 + grow) + 1] = False
    assert far.sum() > 0.8 * far.size  # measured 0.907
    np.testing.assert_array_equal(out[far], query[far])


def test_identical_pair_changes_nothing(astronaut_512, astronaut_512_points, pngs_512):
    edit = estimate_edit(astronaut_512, astronaut_512.copy(), astronaut_512_points,
                         astronaut_512_points)
    assert edit.empty
    query = pngs_512["query_pixels"]
    out = transfer(edit, query, _points(query))
    np.testing.assert_array_equal(out, query)


# --------------------------------------------------------------------------------------------
# 5. strength


def test_half_strength_makes_half_the_edit(pair_1024, queries_1024):
    _, _, edit = pair_1024
    query, points, truth = queries_1024["shifted"]
    half = transfer(edit, query, points, strength=0.5)
    # Against the full-strength ground truth, recall is 1 − |½e − e|/|e| ≈ 0.5: measured 0.489.
    recall = edit_fidelity(query, half, truth).recall
    assert 0.42 <= recall <= 0.58
    # And it is the ops at half strength: measured 68.4 dB (unchanged query 50.5 dB, the
    # full-strength transfer 50.9 dB).
    half_truth = _retouched(query, points, scale=0.5)
    assert psnr(half, half_truth) >= 62.0
    assert psnr(half, half_truth) > psnr(query, half_truth) + 10.0
    assert psnr(half, half_truth) > psnr(transfer(edit, query, points), half_truth) + 5.0


def test_zero_strength_returns_the_query(pair_1024, queries_1024):
    _, _, edit = pair_1024
    query, points, _ = queries_1024["shifted"]
    out = transfer(edit, query, points, strength=0.0)
    assert out is not query
    np.testing.assert_array_equal(out, query)


# --------------------------------------------------------------------------------------------
# 6. refusing what is not a before/after pair


def _not_pairs(astronaut: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    crop = cv2.resize(astronaut[40:472, 60:492], astronaut.shape[1::-1],
                      interpolation=cv2.INTER_AREA)
    return {
        "different_sizes": (astronaut, np.ascontiguousarray(astronaut[:500]),
                            r"differ in size; give a before/after of one photo"),
        "shifted_40px": (astronaut, _shift(astronaut, 40, 0),
                         r"not a before/after of one photo"),
        "different_crop": (astronaut, crop, r"not a before/after of one photo"),
    }


@pytest.mark.parametrize("case", ["different_sizes", "shifted_40px", "different_crop"])
def test_estimate_edit_refuses_a_non_pair(astronaut_512, case):
    before, after, message = _not_pairs(astronaut_512)[case]
    with pytest.raises(InputError, match=message):
        estimate_edit(before, after, _points(before), _points(after))


@pytest.mark.parametrize("case", ["different_sizes", "shifted_40px", "different_crop"])
def test_cli_refuses_a_non_pair(astronaut_512, pngs_512, tmp_path, case):
    before, after, _ = _not_pairs(astronaut_512)[case]
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", _save(tmp_path / "b.png", before),
                  _save(tmp_path / "a.png", after), "--query", pngs_512["query"], "-o", out)
    assert result.exit_code == 3, result.output
    assert "before/after" in result.stderr
    assert not out.exists()


def test_cli_refuses_an_exemplar_without_face(astronaut_512, pngs_512, tmp_path):
    blank = _no_face(astronaut_512)
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", _save(tmp_path / "b.png", blank),
                  _save(tmp_path / "a.png", blank), "--query", pngs_512["query"], "-o", out)
    assert result.exit_code == 3, result.output
    assert "no face" in result.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 7. the command line


def test_cli_end_to_end_json(pngs_512, pair_512, tmp_path):
    _, _, edit = pair_512
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", pngs_512["query"], "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (item,) = report["items"]
    assert item["status"] == "ok" and item["error"] is None and item["exit_code"] == 0
    assert item["input"] == str(pngs_512["query"]) and item["output"] == str(out)
    assert item["faces_found"] == 1 and item["face"] == 0 and item["strength"] == 1.0
    assert item["seconds"] > 0
    query = pngs_512["query_pixels"]
    written = np.asarray(Image.open(out))
    assert written.shape == query.shape and written.dtype == np.uint8
    # measured: 3389 changed pixels, the same count as the report.
    assert item["changed_pixels"] == int(_changed(written, query).sum()) > 1000
    summary = report["summary"]
    assert summary["ok"] == 1 and summary["failed"] == 0
    assert summary["exemplar"] == [str(pngs_512["before"]), str(pngs_512["after"])]
    box = edit.box
    assert summary["edit"]["region"] == [box.x0, box.y0, box.x1, box.y1]  # [164, 70, 288, 188]
    assert summary["edit"]["max_motion_px"] == pytest.approx(edit.max_motion_px, abs=1e-3)
    assert 0.5 < summary["edit"]["max_motion_px"] < 10  # measured 1.809


def test_cli_zero_strength_writes_the_query(pngs_512, tmp_path):
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", pngs_512["query"], "-o", out, "--strength", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"][0]["changed_pixels"] == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), pngs_512["query_pixels"])


def test_cli_batch_goes_on_past_failures(astronaut_512, pngs_512, tmp_path):
    folder = tmp_path / "queries"
    folder.mkdir()
    good = _save(folder / "a_good.png", pngs_512["query_pixels"])
    data = pngs_512["query"].read_bytes()
    (folder / "b_truncated.png").write_bytes(data[: len(data) // 2])
    _save(folder / "c_noface.png", _no_face(astronaut_512))
    outdir = tmp_path / "results"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", folder, "-o", outdir, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    items = {Path(i["input"]).name: i for i in report["items"]}
    assert set(items) == {"a_good.png", "b_truncated.png", "c_noface.png"}
    assert report["summary"]["ok"] == 1 and report["summary"]["failed"] == 2
    ok = items["a_good.png"]
    assert ok["status"] == "ok" and Path(ok["output"]) == outdir / "a_good_retouched.png"
    written = np.asarray(Image.open(ok["output"]))
    assert _changed(written, np.asarray(Image.open(good))).sum() == ok["changed_pixels"] > 1000
    truncated, noface = items["b_truncated.png"], items["c_noface.png"]
    assert truncated["status"] == noface["status"] == "failed"
    assert truncated["exit_code"] == noface["exit_code"] == 3
    assert "truncated" in truncated["error"] and "b_truncated.png" in truncated["error"]
    assert "no face" in noface["error"] and "c_noface.png" in noface["error"]
    assert sorted(p.name for p in outdir.iterdir()) == ["a_good_retouched.png"]


def test_cli_existing_output_needs_force(pngs_512, tmp_path):
    out = _save(tmp_path / "out.png", pngs_512["query_pixels"][:8, :8])
    args = ("retouch", "--ex", pngs_512["before"], pngs_512["after"],
            "--query", pngs_512["query"], "-o", out)
    result = _run(*args)
    assert result.exit_code == 4, result.output
    assert "--force" in result.stderr
    assert np.asarray(Image.open(out)).shape == (8, 8, 3)  # untouched
    result = _run(*args, "--force")
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out)).shape == pngs_512["query_pixels"].shape


def test_cli_keeps_alpha(pngs_512, tmp_path):
    query = pngs_512["query_pixels"]
    alpha = np.tile(np.linspace(0, 255, query.shape[1]).astype(np.uint8), (query.shape[0], 1))
    source = _save(tmp_path / "rgba.png", np.dstack([query, alpha]), "RGBA")
    out, out_rgb = tmp_path / "out.png", tmp_path / "out_rgb.png"
    for src, dest in ((source, out), (pngs_512["query"], out_rgb)):
        result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                      "--query", src, "-o", dest)
        assert result.exit_code == 0, result.output
    written = Image.open(out)
    assert written.mode == "RGBA"
    pixels = np.asarray(written)
    # Colour is warped exactly as for the RGB query; alpha only where colour moved.
    np.testing.assert_array_equal(pixels[..., :3], np.asarray(Image.open(out_rgb)))
    moved = _changed(pixels[..., :3], query)
    assert moved.sum() > 1000
    # A warped pixel can keep its colour by chance (measured: 1 of 4100, inside the moved
    # area) while its alpha, a ramp, changes: compare outside the moved area and its 1-px rim.
    near_moved = cv2.dilate(moved.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    np.testing.assert_array_equal(pixels[..., 3][~near_moved], alpha[~near_moved])


def test_cli_keeps_16_bit(pngs_512, tmp_path):
    query16 = pngs_512["query_pixels"].astype(np.uint16) * 257
    source = tmp_path / "q16.png"
    assert cv2.imwrite(str(source), query16[..., ::-1])
    out = tmp_path / "out16.png"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", source, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == query16.shape
    written = written[..., ::-1]
    moved = _changed(written, query16)
    # measured 4605 changed pixels (3389 for the 8-bit query: finer levels show more).
    assert moved.sum() == json.loads(result.stdout)["items"][0]["changed_pixels"] > 1000
    # Warped in 16 bits, not through 8: new values off the ×257 lattice.
    assert np.any(written[moved] % 257 != 0)


def test_cli_face_option_picks_the_second_face(astronaut_512, pngs_512, tmp_path):
    two = np.ascontiguousarray(np.hstack([astronaut_512, astronaut_512]))
    source = _save(tmp_path / "two.png", two)
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", source, "-o", out, "--face", "1", "--json")
    assert result.exit_code == 0, repr(result.exception)
    item = json.loads(result.stdout)["items"][0]
    assert item["faces_found"] == 2 and item["face"] == 1


def test_recompressed_after_leaves_the_background_alone(pair_512, pngs_512):
    before, after, _ = pair_512
    edit = _edit(before, _jpeg(after, 95))
    query = pngs_512["query_pixels"]
    out = transfer(edit, query, _points(query))
    np.testing.assert_array_equal(out[:64, :64], query[:64, :64])
    assert _changed(out, query).mean() < 0.03


# --------------------------------------------------------------------------------------------
# 8. the backend method agrees with the command line


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_backend_retouch_matches_cli(pair_512, pngs_512, tmp_path, strength):
    before, after, _ = pair_512
    out = tmp_path / "out.png"
    result = _run("retouch", "--ex", pngs_512["before"], pngs_512["after"],
                  "--query", pngs_512["query"], "-o", out, "--strength", strength)
    assert result.exit_code == 0, result.output
    via_backend = WarpBackend().retouch(np.array(before), np.array(after),
                                        np.array(pngs_512["query_pixels"]), strength=strength)
    assert _changed(via_backend, pngs_512["query_pixels"]).sum() > 1000
    np.testing.assert_array_equal(via_backend, np.asarray(Image.open(out)))


# --------------------------------------------------------------------------------------------
# 9. exemplar and query 3× apart in size (issue #5)
#
# The half-size query of section 2 is 2× apart; here the face's pixel scale differs by more
# than 3× in both directions. The small image is the astronaut's face region at 0.83× the
# 1024² upscale (face ~155 × 178 px in a 400² image); the large ones are the astronaut at
# 2.625× (3.15× the small one's scale) and Grace Hopper (matplotlib's sample photo, a different
# person: matplotlib is a dependency of mediapipe) at 3.5× the small face's size. Ground truth
# is always :data:`OPS` planned on the query's own landmarks.
#
# Imported here, not at the top, so that this section is a pure append.


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    """Grace Hopper's head and shoulders, a 360² crop of matplotlib's 512×600 sample photo."""
    from matplotlib import cbook

    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert bgr is not None
    return np.ascontiguousarray(bgr[60:420, 80:440, ::-1])


def _sized(rgb: np.ndarray, size: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if size < rgb.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(rgb), (size, size), interpolation=interpolation)


@pytest.fixture(scope="module")
def scale_faces(astronaut_1024, grace_hopper):
    """``{name: (image, landmarks, ground truth)}``: small and large faces, see above."""
    images = {
        "astronaut_small": _sized(astronaut_1024[20:500, 210:690], 400),  # 0.83×
        "astronaut_large": _sized(astronaut_1024[0:512, 192:704], 1344),  # 2.625×
        "grace_small": _sized(grace_hopper, 300),
        "grace_large": _sized(grace_hopper, 1080),
    }
    out = {}
    for name, image in images.items():
        points = _points(image)
        out[name] = (image, points, _retouched(image, points))
    return out


@pytest.fixture(scope="module")
def scale_exemplars(scale_faces):
    """Measured exemplars, ``(exemplar name, mode) → Exemplar``, each measured once."""
    cache = {}

    def measured(name: str, mode: str):
        if (name, mode) not in cache:
            before, _, after = scale_faces[name]
            cache[name, mode] = measure_exemplar(before, after, mode=mode)
        return cache[name, mode]

    return measured


def _unit(points: np.ndarray) -> float:
    return FaceFrame.from_points(points).unit


def _off_face(points: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    """Pixels farther than ``margin`` face units from the landmarks' convex hull."""
    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points.astype(np.float32)).astype(np.int32), 1)
    return ndimage.distance_transform_edt(hull == 0) > margin * _unit(points)


def _check_on_face_only(out: np.ndarray, query: np.ndarray, points: np.ndarray,
                        min_far_share: float) -> np.ndarray:
    """Assert the result changed the face and nothing off it; returns the changed mask."""
    assert out.shape == query.shape and out.dtype == query.dtype
    changed = _changed(out, query)
    assert changed.any()
    # Nothing changes beyond 0.1 face units from the landmarks' convex hull: measured, every
    # changed pixel lies inside the hull itself, in all seven cases below.
    off_face = _off_face(points, changed.shape, 0.1)
    assert off_face.mean() >= min_far_share
    np.testing.assert_array_equal(out[off_face], query[off_face])
    # As in section 4: bit-identical outside the landmark box grown by a quarter of its size.
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    grow = 0.25 * max(x1 - x0, y1 - y0)
    far = np.ones(changed.shape, bool)
    far[max(int(y0 - grow), 0):int(y1 + grow) + 1, max(int(x0 - grow), 0):int(x1 + grow) + 1] = 0
    assert far.mean() >= min_far_share
    np.testing.assert_array_equal(out[far], query[far])
    return changed


@pytest.mark.parametrize(
    ("query_name", "mode", "min_recall"),
    # measured recall (far from the thresholds on purpose: they are ~0.1 below):
    # astronaut flow 0.914, astronaut hybrid 0.942, Grace hybrid 0.893, Grace catalog 0.875.
    # (Grace in flow mode scores 0.58, and 0.61 at the *same* scale as the exemplar: flow mode
    # carries the astronaut's own motion, not the ops re-planned on another face; not a scale
    # effect, so not tested here.)
    [("astronaut_large", "flow", 0.80), ("astronaut_large", "hybrid", 0.82),
     ("grace_large", "hybrid", 0.78), ("grace_large", "catalog", 0.75)],
)
def test_small_exemplar_onto_a_3x_larger_query(scale_faces, scale_exemplars, query_name, mode,
                                              min_recall):
    _, ex_points, _ = scale_faces["astronaut_small"]
    query, points, truth = scale_faces[query_name]
    assert _unit(points) >= 3.0 * _unit(ex_points)  # measured 3.17× (astronaut), 3.50× (Grace)
    out = apply_exemplar(scale_exemplars("astronaut_small", mode), query, points)
    # off-face share measured 0.85 (astronaut), 0.71 (Grace: a tight crop); box-far 0.64 / 0.31
    _check_on_face_only(out, query, points, min_far_share=0.25)
    fidelity = edit_fidelity(query, out, truth)
    assert fidelity.moved_pixels > 50_000  # measured 102 315 (astronaut), 116 950 (Grace)
    assert fidelity.recall >= min_recall
    # measured gains 18.5 dB (astronaut flow), 22.7 (hybrid), 11.6 (Grace hybrid), 15.9 (catalog)
    assert psnr(out, truth) >= psnr(query, truth) + 6.0


@pytest.mark.parametrize(
    ("query_name", "mode", "min_recall"),
    # measured recall: astronaut flow 0.965, astronaut hybrid 0.968, Grace hybrid 0.938.
    [("astronaut_small", "flow", 0.85), ("astronaut_small", "hybrid", 0.85),
     ("grace_small", "hybrid", 0.80)],
)
def test_large_exemplar_onto_a_3x_smaller_query(scale_faces, scale_exemplars, query_name, mode,
                                                min_recall):
    _, ex_points, _ = scale_faces["astronaut_large"]
    query, points, truth = scale_faces[query_name]
    assert 3.0 * _unit(points) <= _unit(ex_points)  # measured 3.17× (astronaut), 3.24× (Grace)
    out = apply_exemplar(scale_exemplars("astronaut_large", mode), query, points)
    # off-face share measured 0.83 (astronaut), 0.70 (Grace); box-far 0.59 / 0.31
    changed = _check_on_face_only(out, query, points, min_far_share=0.25)
    assert changed.sum() > 2000  # measured 10 449 (astronaut), 11 266 (Grace)
    # The edit is small at this scale but not sub-pixel: the ground truth's flow peaks at
    # 2.09 px (astronaut) / 1.67 px (Grace), mean 1.07 / 0.93 px over the moved pixels, so
    # recall still measures something.
    gt_motion = np.linalg.norm(dense_flow(query, truth), axis=-1)
    assert gt_motion.max() > 1.2
    fidelity = edit_fidelity(query, out, truth)
    assert fidelity.moved_pixels > 1000  # measured 6034 (astronaut), 3193 (Grace)
    assert fidelity.recall >= min_recall
    # measured gains 20.3 dB (astronaut flow), 23.4 (hybrid), 19.3 (Grace hybrid)
    assert psnr(out, truth) >= psnr(query, truth) + 10.0


def test_a_strong_edit_of_one_photo_is_accepted(astronaut_512):
    """The official generator's grid up-sampling shifts the whole feathered face region by up
    to half a 30 px cell, so its strong items move the median landmark by more than the old
    0.08-face-unit limit (23 px on a 1024² item was refused). Here the face region is moved by
    0.12 face units inside a feathered hull: the photo is the same outside the face, so it is
    a before/after pair and is measured."""
    from mirrorppr_cli.geometric.face_frame import FaceFrame

    before = np.asarray(astronaut_512)
    points = _points(before)
    unit = FaceFrame.from_points(points).unit
    moved = _shift(before, int(round(0.12 * unit)), 0)
    hull = np.zeros(before.shape[:2], np.float32)
    cv2.fillConvexPoly(hull, cv2.convexHull(points.astype(np.int32)), 1.0)
    feather = cv2.GaussianBlur(hull, (0, 0), 0.2 * unit)[..., None]
    after = np.rint(feather * moved + (1 - feather) * before).astype(np.uint8)
    after_points = _points(after)
    assert np.median(np.linalg.norm(after_points - points, axis=1)) > 0.08 * unit
    edit = estimate_edit(before, after, points, after_points)
    assert not edit.empty


def test_photo_likeness_tells_one_photo_from_another(astronaut_512):
    from mirrorppr_cli.geometric.face import face_window
    from mirrorppr_cli.geometric.motion import photo_likeness

    before = np.asarray(astronaut_512)
    face = face_window(_points(before), before.shape[:2])
    reencoded = cv2.imdecode(cv2.imencode(".jpg", before, [cv2.IMWRITE_JPEG_QUALITY, 85])[1],
                             cv2.IMREAD_UNCHANGED)
    graded = np.clip(before.astype(int) * 1.1 + 8, 0, 255).astype(np.uint8)
    assert photo_likeness(before, reencoded, face) > 0.99  # measured 1.00
    assert photo_likeness(before, graded, face) > 0.99  # a tone change is the same photo
    other = _not_pairs(before)["different_crop"][1]
    assert photo_likeness(before, other, face) < 0.8


def test_cli_says_that_it_measures_the_exemplar(pngs_512, tmp_path):
    """A progress line on stderr while the exemplar is measured (a plain line when stderr is
    not a terminal, as here); none with --json, whose stdout stays pure JSON."""
    args = ("retouch", "--ex", pngs_512["before"], pngs_512["after"], "--query",
            pngs_512["query"])
    plain = _run(*args, "-o", tmp_path / "a.png")
    assert plain.exit_code == 0, plain.output
    assert "measuring exemplar before.png → after.png" in plain.stderr
    quiet = _run(*args, "-o", tmp_path / "b.png", "--json")
    assert quiet.exit_code == 0, quiet.output
    assert "measuring" not in quiet.stderr
    json.loads(quiet.stdout)


def test_cli_flags_a_damaged_frame_for_review(pngs_512, tmp_path, monkeypatch):
    """A result with new dots is written, named in the report's ``review`` and on stderr, and
    the exit code is 7; a clean result is not flagged; --no-check skips the check."""
    import mirrorppr_cli.retouch_job as job

    clean = job.apply_exemplar

    def speckled(*args, **kwargs):
        out = clean(*args, **kwargs)
        for k, (y, x) in enumerate([(300, 200), (320, 260), (280, 300), (340, 220)]):
            out[y : y + 3, x : x + 3] = 250 if k % 2 else 20  # dots on the cheeks and chin
        return out

    args = ("retouch", "--ex", pngs_512["before"], pngs_512["after"], "--query",
            pngs_512["query"], "--json")
    ok = _run(*args, "-o", tmp_path / "clean.png")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["items"][0]["review"] == []
    monkeypatch.setattr(job, "apply_exemplar", speckled)
    flagged = _run(*args, "-o", tmp_path / "dots.png")
    assert flagged.exit_code == 7, flagged.output
    report = json.loads(flagged.stdout)
    assert report["summary"]["to_review"] == 1 and (tmp_path / "dots.png").exists()
    assert "blobs" in report["items"][0]["review"][0]
    unchecked = _run(*args, "-o", tmp_path / "unchecked.png", "--no-check")
    assert unchecked.exit_code == 0 and json.loads(unchecked.stdout)["items"][0]["review"] == []


def test_large_faces_are_measured_at_the_flow_scale(astronaut_1024, monkeypatch):
    """A face larger than FLOW_UNIT_PX is measured shrunk and its field returned at full size:
    the same field as measured at full size, to a fraction of a pixel."""
    from mirrorppr_cli.geometric import motion as geo_motion

    before = cv2.resize(np.asarray(astronaut_1024), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    points = _points(before)
    assert FaceFrame.from_points(points).unit > 1.2 * geo_motion.FLOW_UNIT_PX
    after = apply_local_warp(before, plan_warp(points, [OpRequest("eye_resize", 60),
                                                         OpRequest("nose_alar", -50)]))
    after_points = _points(after)
    shrunk = estimate_edit(before, after, points, after_points)
    monkeypatch.setattr(geo_motion, "FLOW_UNIT_PX", float("inf"))
    full = estimate_edit(before, after, points, after_points)
    assert shrunk.box == full.box and shrunk.flow.shape == full.flow.shape
    moving = np.linalg.norm(full.flow, axis=-1) > 0.5
    error = np.linalg.norm(shrunk.flow - full.flow, axis=-1)[moving]
    assert moving.sum() > 2000 and np.median(error) < 0.15 and np.percentile(error, 95) < 0.5
    assert shrunk.max_motion_px == pytest.approx(full.max_motion_px, rel=0.1)


def test_large_smoothing_scales_are_unfolded_at_a_reduced_resolution():
    """A field smooth on a 30 px scale with a fold: worked at a reduced resolution, the fold
    is gone at full size (the Jacobian is the same at both scales); a fold-free field comes
    back untouched."""
    from mirrorppr_cli.geometric import field as geo_field

    h, w = 600, 800
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    bump = np.exp(-(((xs - 400) / 60) ** 2 + ((ys - 300) / 60) ** 2)).astype(np.float32)
    folded = np.dstack([-120 * bump * (xs - 400) / 60, np.zeros_like(bump)]).astype(np.float32)
    assert geo_field.jacobian_determinant(folded).min() < 0
    fixed = geo_field.unfolded_coarse(folded.copy(), 30.0)
    assert geo_field.jacobian_determinant(fixed).min() >= 0.9 * geo_field.MIN_JACOBIAN_DET
    gentle = folded * 0.05
    assert geo_field.jacobian_determinant(gentle).min() > 0.5
    assert np.array_equal(geo_field.unfolded_coarse(gentle.copy(), 30.0), gentle)
