"""The no-ground-truth artefact metric: new blobs against the query, and field health."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from mirrorppr_cli.metrics.artefacts import (
    ArtefactScore,
    BlobScore,
    artefact_score,
    displacement_field_health,
    field_health,
    new_blobs,
    to_grey8,
)

TOOTH_WHITE = (245, 243, 236)
DARK = (60, 38, 34)
#: (x, y, side, colour): 2–3-px dots on the cheeks, forehead and chin of the astronaut
DOTS = [(195, 125, 3, TOOTH_WHITE), (201, 136, 2, DARK), (250, 122, 2, TOOTH_WHITE),
        (256, 131, 3, DARK), (224, 90, 2, TOOTH_WHITE), (226, 166, 3, DARK)]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _speckled(rgb: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    for x, y, side, colour in DOTS:
        out[y : y + side, x : x + side] = colour
    return out


def test_planted_speckles_on_skin_are_counted(astronaut):
    score = new_blobs(astronaut, _speckled(astronaut))
    assert score.count == len(DOTS)
    assert 4 * len(DOTS) <= score.area_px <= 3 * 9 * len(DOTS)
    assert score.worst_contrast > 60
    assert score.per_megapixel == pytest.approx(score.count / (512 * 512 / 1e6))
    # boxes cover the planted dots
    for x, y, side, _ in DOTS:
        assert any(bx <= x + side and x <= bx + bw and by <= y + side and y <= by + bh
                   for bx, by, bw, bh in score.boxes), (x, y)
    assert "6 new blob(s)" in score.describe()


def test_a_known_changed_mask_gives_the_same_score(astronaut, catalog_warp):
    """``changed`` (the caller's mask of changed pixels, or any superset) only saves the
    comparison of the whole images: the score is the same; a mask that misses the changes
    would hide them (so it must hold every changed pixel)."""
    from mirrorppr_cli.geometric.mls import apply_local_warp

    warped = _speckled(apply_local_warp(astronaut, catalog_warp))
    plain = new_blobs(astronaut, warped)
    exact = np.any(astronaut != warped, axis=-1)
    assert plain.count >= len(DOTS)
    assert new_blobs(astronaut, warped, changed=exact) == plain
    assert new_blobs(astronaut, warped, changed=np.ones_like(exact)) == plain
    assert new_blobs(astronaut, warped, changed=np.zeros_like(exact)).count == 0


def test_one_speckle_is_enough_and_identical_images_score_zero(astronaut):
    one = astronaut.copy()
    one[125:127, 195:197] = DARK
    assert new_blobs(astronaut, one).count == 1
    assert new_blobs(astronaut, astronaut.copy()) == BlobScore(0, 0, 0.0, 0.0)


def test_a_ringed_dot_is_one_ringed_blob(astronaut):
    out = astronaut.copy()
    cv2.circle(out, (200, 128), 3, DARK, 1)  # a dark ring …
    out[127:130, 199:202] = TOOTH_WHITE  # … around a bright dot
    score = new_blobs(astronaut, out)
    assert score.count == 1 and score.ringed == 1


@pytest.fixture(scope="module")
def catalog_warp(astronaut):
    """The project's own warp of the astronaut: eyes +60, nasal alae −50, mouth +40."""
    from mirrorppr_cli.geometric.landmarks import find_faces
    from mirrorppr_cli.ops import OpRequest, plan_warp

    points = find_faces(astronaut)[0].points
    return plan_warp(points, [OpRequest("eye_resize", 60), OpRequest("nose_alar", -50),
                              OpRequest("mouth_resize", 40)])


def test_the_projects_own_warp_makes_no_blobs(astronaut, catalog_warp):
    from mirrorppr_cli.geometric.mls import apply_local_warp

    out = apply_local_warp(astronaut, catalog_warp)
    assert np.any(out != astronaut)  # it did move pixels
    assert new_blobs(astronaut, out).count == 0
    # the same warp with speckles on top: only the speckles count
    assert new_blobs(astronaut, _speckled(out)).count == len(DOTS)


def test_jpeg_reencoding_makes_no_blobs(astronaut):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(jpeg.astype(int) - astronaut).max() > 20  # JPEG did change pixels
    assert new_blobs(astronaut, jpeg).count == 0


def _remap(rgb: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(rgb, cols + dx.astype(np.float32), rows + dy.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_translation_and_a_gentle_global_warp_make_no_blobs(astronaut):
    h, w = astronaut.shape[:2]
    zeros = np.zeros((h, w))
    shifted = _remap(astronaut, zeros + 3, zeros - 2)  # integer translation, border replicated
    assert new_blobs(astronaut, shifted).count == 0
    rows, cols = np.mgrid[0:h, 0:w]
    dx = 2.5 * np.sin(2 * np.pi * rows / 200.0)
    dy = 1.5 * np.cos(2 * np.pi * cols / 170.0)
    wavy = _remap(astronaut, dx, dy)
    assert new_blobs(astronaut, wavy).count == 0
    # the motion compensation is what tells moved texture from new blobs: without it, the
    # 3-px shift reads as hundreds of them (beyond the 2-px dilation of the query)
    assert new_blobs(astronaut, shifted, compensate_motion=False).count > 50


def test_other_dtypes_and_sizes(astronaut):
    speckled = _speckled(astronaut)
    as_float = new_blobs(astronaut / 255.0, speckled / 255.0)
    as_u16 = new_blobs(astronaut.astype(np.uint16) * 257, speckled.astype(np.uint16) * 257)
    assert as_float.count == as_u16.count == len(DOTS)
    assert to_grey8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5)
    tiny = np.full((8, 8, 3), 120, np.uint8)  # too small for the flow: compared as is
    dotted = tiny.copy()
    dotted[4, 4] = 250
    assert new_blobs(tiny, dotted).count == 1
    with pytest.raises(ValueError, match="differ in size"):
        new_blobs(astronaut, astronaut[:100])


# --- field health -----------------------------------------------------------------------


def _identity(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    return cols, rows


def test_identity_map_is_healthy():
    mx, my = _identity()
    health = field_health(mx, my)
    assert health.min_jacobian_det == pytest.approx(1.0)
    assert health.folded_pixels == 0 and health.islands == 0 and health.moving_pixels == 0
    assert health.max_displacement_px == 0.0 and health.jump_pixels == 0


def test_a_smooth_bump_is_healthy():
    h, w = 96, 128
    rows, cols = np.mgrid[0:h, 0:w]
    bump = np.exp(-((cols - 64.0) ** 2 + (rows - 48.0) ** 2) / (2 * 12.0**2))
    health = displacement_field_health(4.0 * bump, -3.0 * bump)
    assert health.min_jacobian_det > 0 and health.folded_pixels == 0
    assert health.moving_components == 1 and health.holes == 0 and health.islands == 0
    assert health.max_displacement_px == pytest.approx(5.0, abs=0.01)
    assert health.jump_pixels == 0 and health.max_jump_px < 0.5


def test_a_field_switching_on_and_off_pixel_by_pixel_has_islands():
    h, w = 96, 128
    rng = np.random.default_rng(0)
    on = rng.random((h, w)) < 0.5
    on[:, :20] = False  # the on/off area is surrounded by still pixels …
    on[40:60, 60:90] = True  # … and holds one solid patch with still holes in the texture
    health = displacement_field_health(np.where(on, 2.0, 0.0), np.zeros((h, w)))
    assert health.islands > 10
    assert health.moving_components > 1 and health.holes > 0
    assert health.jump_pixels > 1000 and health.max_jump_px == pytest.approx(2.0)
    # the explicit moving set is used when given
    assert field_health(*_identity(h, w), moved=on).islands == health.islands


def test_the_projects_own_warp_field_has_no_fold_and_no_jump(astronaut, catalog_warp):
    from mirrorppr_cli.geometric.mls import feather_mask, inverse_map_exact

    mask, box = feather_mask(astronaut.shape[:2], catalog_warp.polygons, catalog_warp.feather_px)
    inverse = inverse_map_exact(box, catalog_warp.source, catalog_warp.target)
    rows, cols = np.mgrid[box.slices()]
    health = displacement_field_health(mask * (inverse[..., 0] - cols),
                                       mask * (inverse[..., 1] - rows))
    assert health.moving_pixels > 1000 and 0.5 < health.max_displacement_px < 10
    assert health.min_jacobian_det > 0.3 and health.folded_pixels == 0
    assert health.jump_pixels == 0  # its small holes (around fixed anchors) are continuous


def test_a_folding_field_has_negative_determinant():
    h, w = 64, 96
    rows, cols = np.mgrid[0:h, 0:w]
    dx = -3.0 * np.clip(cols - 40.0, 0, 10)  # d(dx)/dx = −3 < −1 over ten columns: folds
    health = displacement_field_health(dx, np.zeros((h, w)))
    assert health.min_jacobian_det < 0
    assert health.folded_pixels >= 9 * h
    assert "folded" in health.describe()


def test_artefact_score_describes_what_it_has(astronaut):
    mx, my = _identity(16, 16)
    both = artefact_score(astronaut, _speckled(astronaut), mx, my)
    assert isinstance(both, ArtefactScore) and both.blobs.count == len(DOTS)
    assert both.field.islands == 0
    assert "new blob" in both.describe() and "min det" in both.describe()
    assert artefact_score().describe() == "no artefact measure"


# --- the bench -----------------------------------------------------------------------------


def test_bench_scores_artefacts_for_every_row_with_and_without_truth(astronaut, tmp_path):
    from PIL import Image

    from mirrorppr_cli.bench import report
    from mirrorppr_cli.bench.datasets import Benchmark, Item
    from mirrorppr_cli.bench.runner import ARTEFACT_MARGIN, identity_method, score

    h, w = astronaut.shape[:2]
    zeros = np.zeros((h, w))
    paths = {}
    for name, rgb in {"q": astronaut, "t": _remap(astronaut, zeros + 1, zeros)}.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(rgb).save(paths[name])
    q, t = paths["q"], paths["t"]
    bench = Benchmark("tiny", tmp_path, [Item(0, q, t, q, t), Item(1, q, t, q, None)])
    results = score(bench, {"identity": identity_method,
                            "speckled": lambda item, query: _speckled(query)},
                    ("psnr", "artefacts"))
    identity, speckled = results["identity"], results["speckled"]
    assert [r["artefact_blobs"] for r in identity.rows] == [0, 0]
    assert [r["artefact_blobs"] for r in speckled.rows] == [len(DOTS)] * 2
    assert all(r["artefact_area_px"] >= 4 * len(DOTS) for r in speckled.rows)
    # the truth is scored against the query once, for the item that has one
    assert [r.get("truth_artefact_blobs") for r in speckled.rows] == [0, None]
    clean = identity.summary(("psnr", "artefacts"), None)
    bad = speckled.summary(("psnr", "artefacts"), None)
    assert clean["average_artefact_blobs"] == 0 and clean["items_with_artefacts"] == 0
    assert bad["average_artefact_blobs"] == bad["max_artefact_blobs"] == len(DOTS)
    assert len(DOTS) > ARTEFACT_MARGIN and bad["items_with_artefacts"] == 2
    assert bad["average_truth_artefact_blobs"] == 0.0
    assert "average_artefact_blobs" not in speckled.summary(("psnr",), None)
    payload = {"dataset": "tiny", "items": 2, "methods": {
        n: {"summary": r.summary(("psnr", "artefacts"), None), "rows": r.rows}
        for n, r in results.items()}}
    table = report.markdown(payload)
    assert "Artefact blobs ↓" in table and "| speckled |" in table
    assert "ground truth itself scores 0.00" in table
    page = report.html_report(payload, bench, {})
    assert f"blobs {len(DOTS)} (truth 0)" in page and f"blobs {len(DOTS)}" in page
