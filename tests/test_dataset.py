"""`mirrorppr build-dataset`: simulated pairs, self-augmented query pairs, shards, benchmark.

Every source portrait is made here, inside the test's temporary folders, from scikit-image's
astronaut (public domain) and simple variants of it (mirrored, rotated, rescaled, pasted on
a canvas), plus synthetic non-faces. Nothing outside the repository is read.

Builds use small areas (256²–512²) so the whole file stays well under a minute and a half on
two CPU cores. Multi-process builds (``--workers 2``) run as real ``mirrorppr`` subprocesses,
as users run them; ``test_run_local_workers_after_mediapipe_in_parent`` covers the library
call from a process that has already used MediaPipe.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.data import build as B
from mirrorppr_cli.data.augment import (
    ASPECT,
    CROP_SCALE,
    ROTATIONS,
    SIDE_MULTIPLE,
    Augmentation,
    apply_augmentation,
    output_size,
    sample_augmentation,
    transform_points,
)
from mirrorppr_cli.data.filters import FaceFilter, head_pose, reject_reason
from mirrorppr_cli.data.pairs import PairSettings, make_samples, source_key
from mirrorppr_cli.data.sampling import MAX_OPS, STRENGTH_RANGE, sample_ops, sample_rng
from mirrorppr_cli.data.shards import read_members, sha256
from mirrorppr_cli.data.simface import build_simface
from mirrorppr_cli.errors import UsageError
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import SIMULATED_OPS, OpRequest, plan_warp

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- portraits


def _rotate(rgb: np.ndarray, degrees: float, *, fill: int | None = None) -> np.ndarray:
    """``rgb`` rotated counter-clockwise about its centre, same size (mirrored or flat border)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    if fill is None:
        return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))


def _pasted(rgb: np.ndarray, canvas_hw: tuple[int, int], at: tuple[int, int],
            side: int | None = None, fill: int = 90) -> np.ndarray:
    """``rgb`` (resized to ``side``² if given) pasted at ``at`` = (x, y) on a flat canvas."""
    if side is not None:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((*canvas_hw, 3), fill, np.uint8)
    x, y = at
    canvas[y : y + rgb.shape[0], x : x + rgb.shape[1]] = rgb
    return canvas


def _save(folder: Path, name: str, rgb: np.ndarray) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(folder / name)
    return name


def _variants(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    """Six usable single-face portraits (all pass the default face filter at 256²–512²)."""
    return {
        "astronaut.png": astronaut,
        "mirrored.png": astronaut[:, ::-1],
        "rot5.png": _rotate(astronaut, 5),
        "rotm8.png": _rotate(astronaut, -8),
        "scaled.png": cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA),
        "canvas.png": _pasted(astronaut, (700, 900), (300, 100)),
    }


PORTRAITS = ("astronaut.png", "mirrored.png", "rot5.png", "rotm8.png", "scaled.png", "canvas.png")


@pytest.fixture(scope="module")
def portraits(tmp_path_factory, astronaut_512) -> Path:
    """A folder of the six astronaut variants."""
    folder = tmp_path_factory.mktemp("portraits")
    for name, rgb in _variants(astronaut_512).items():
        _save(folder, name, rgb)
    return folder


# --------------------------------------------------------------------------- build helpers


def _cli(*args) -> object:
    return runner.invoke(app, ["build-dataset", *(str(a) for a in args)])


def _subprocess_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mirrorppr_cli", "build-dataset", *(str(a) for a in args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )


def _files(out: Path) -> dict[str, bytes]:
    """Every visible file under ``out`` (relative path → bytes); hidden temp files excluded."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _part_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.part"))


def _assert_same_files(actual: dict[str, bytes], expected: dict[str, bytes]) -> None:
    assert sorted(actual) == sorted(expected)
    differing = [name for name in expected if actual[name] != expected[name]]
    assert not differing, f"files differ: {differing}"


SMALL = ("--size", 256, "--pairs", 1, "--augment", 2, "--shard-size", 2)


@pytest.fixture(scope="module")
def reference_build(portraits, tmp_path_factory) -> tuple[Path, str]:
    """The six portraits built once in process (seed 0, SMALL settings, one worker).

    Returns ``(out, stdout of --json)``. Tests that modify a build copy it first.
    """
    out = tmp_path_factory.mktemp("reference") / "out"
    result = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0, "--json")
    assert result.exit_code == 0, result.output
    return out, result.stdout


@pytest.fixture(scope="module")
def seed1_build(portraits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed1") / "out"
    result = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 1)
    assert result.exit_code == 0, result.output
    return out


# ============================================================== 1. operation alignment

#: Area of the alignment test's pairs: at 512² the astronaut's eyes are ~42 px apart and a
#: 5×5 Lucas–Kanade window resolves the edit's displacement field around each landmark.
ALIGN_AREA = 512 * 512
#: Control points that move at least this far (query pixels) are the ones compared.
MOVED_PX = 1.5


def _grey(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _track(g0: np.ndarray, g1: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions in ``g1`` of ``points`` of ``g0`` (pyramidal Lucas–Kanade, 5×5)."""
    found, status, _ = cv2.calcOpticalFlowPyrLK(
        g0, g1, points.astype(np.float32).reshape(-1, 1, 2), None, winSize=(5, 5), maxLevel=3,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-3),
    )
    return found.reshape(-1, 2).astype(np.float64), status.ravel().astype(bool)


def _sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples (float64, unquantised) of a 2-channel field at ``points`` (x, y)."""
    h, w = field.shape[:2]
    x = np.clip(points[:, 0], 0, w - 1.001)
    y = np.clip(points[:, 1], 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = field[..., :2].astype(np.float64)
    return ((1 - fy) * ((1 - fx) * f[y0, x0] + fx * f[y0, x0 + 1])
            + fy * ((1 - fx) * f[y0 + 1, x0] + fx * f[y0 + 1, x0 + 1]))


def _realised_targets(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(control_source, control_target, realised)`` of a record's exemplar edit.

    ``realised``: where the edited image actually shows the content of each control point.
    The warp is re-planned from the recorded landmarks and ops (checked against the recorded
    control points), applied to an image of its own pixel coordinates (each output pixel then
    holds the source position it shows), and inverted at each control point by fixed-point
    iteration. It differs from ``control_target`` by the warp's documented fast-path
    deviation (``warp.fast_path_bound``), not by anything the dataset code does.
    """
    cs, ct = np.array(record["control_source"]), np.array(record["control_target"])
    ops = [OpRequest(o["name"], o["strength"]) for o in record["ops"]]
    warp = plan_warp(np.array(record["landmarks"]), ops)
    # the recorded landmarks are rounded to 1e-3 px: the re-planned warp is the recorded one
    assert np.abs(warp.source - cs).max() < 5e-3 and np.abs(warp.target - ct).max() < 5e-3
    w, h = record["size"]
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    coords = apply_local_warp(np.dstack([xx, yy, np.zeros_like(xx)]), warp)
    realised = ct.copy()
    for _ in range(40):
        realised += 0.8 * (cs - _sample(coords, realised))
    # converged to the precision of the map itself (cv2.remap quantises positions to 1/32 px)
    assert np.abs(_sample(coords, realised) - cs).max() < 0.05
    return cs, ct, realised


def _alignment(record: dict, members: dict[str, bytes], k: int, aug: Augmentation) -> dict:
    """Predicted (from ``aug``) vs measured (LK on the query images) displacement errors."""
    cs, ct, realised = _realised_targets(record)
    size = tuple(record["size"])
    ext = "png"
    g0 = _grey(members[f"{record['key']}.a{k:02d}_src.{ext}"])
    g1 = _grey(members[f"{record['key']}.a{k:02d}_tgt.{ext}"])
    ps, pt, pr = (transform_points(p, aug, size) for p in (cs, ct, realised))
    moved = np.linalg.norm(pt - ps, axis=1) >= MOVED_PX
    measured, ok = _track(g0, g1, ps)
    use = moved & ok
    return {
        "moved": int(moved.sum()),
        "tracked": int(use.sum()),
        # measured vs the exemplar edit carried through the augmentation
        "vs_realised": float(np.median(np.linalg.norm(measured - pr, axis=1)[use])),
        # measured vs the recorded control displacement carried through the augmentation
        "vs_control": float(np.median(np.linalg.norm(measured - pt, axis=1)[use])),
        # how far the realised edit itself is from the control targets, in query pixels
        "warp_deviation": float(np.median(np.linalg.norm(pr - pt, axis=1)[use])),
    }


def _exemplar_tracking_error(record: dict, members: dict[str, bytes]) -> float:
    """The tracker's own error on the un-augmented exemplar pair (calibration)."""
    cs, ct, realised = _realised_targets(record)
    g0 = _grey(members[f"{record['key']}.src.png"])
    g1 = _grey(members[f"{record['key']}.tgt.png"])
    moved = np.linalg.norm(ct - cs, axis=1) >= MOVED_PX
    measured, ok = _track(g0, g1, cs)
    return float(np.median(np.linalg.norm(measured - realised, axis=1)[moved & ok]))


@pytest.fixture(scope="module")
def align_folder(tmp_path_factory, astronaut_512) -> Path:
    folder = tmp_path_factory.mktemp("align")
    variants = _variants(astronaut_512)
    for name in ("astronaut.png", "mirrored.png", "rotm8.png"):
        _save(folder, name, variants[name])
    return folder


@pytest.mark.parametrize(("source", "seed"), [("astronaut.png", 3), ("rotm8.png", 0)])
def test_query_pairs_carry_the_exemplar_edit(align_folder, source, seed):
    """Each augmented (src, tgt) shows the exemplar's edit moved by the recorded augmentation.

    Prediction: the exemplar's control points and where its edit puts them, pushed through
    the recorded augmentation (``transform_points``). Measurement: Lucas–Kanade tracking of
    the predicted source positions from the query src image to the query tgt image.

    Tolerances, measured over 18 builds (3 sources × seeds 0–5) at 512², 3 views each:

    * measured vs the exemplar's realised edit carried over: median 0.10–0.30 px per view;
      the tracker's own error on the un-augmented exemplar pair is 0.09–0.23 px → < 0.5 px.
    * measured vs the recorded control targets carried over: median 0.26–0.85 px; all of
      the excess is the fast-path warp's own deviation from its control targets (median
      0.19–0.70 px, present before any augmentation) → ≤ that deviation + 0.5 px.
    * wrong augmentations: mirror toggled 1.3–4.0 px (≥ 1.7 px and ≥ 9× the right one for
      the two cases below); rotation one step off 1.3–2.5 px (≥ 6×) here.
    """
    result = make_samples(align_folder, source, seed,
                          PairSettings(pairs=1, augmentations=3, area=ALIGN_AREA))
    assert result.skipped is None
    record = result.records[0]
    members = dict(result.members)
    size = tuple(record["size"])
    assert _exemplar_tracking_error(record, members) < 0.5
    assert len(record["augmentations"]) == 3
    for k, data in enumerate(record["augmentations"]):
        aug = Augmentation.from_dict(data)
        # the recorded landmarks of the view are the augmentation applied to the landmarks
        np.testing.assert_allclose(
            record["augmented_landmarks"][k],
            transform_points(np.array(record["landmarks"]), aug, size), atol=2e-3,
        )
        right = _alignment(record, members, k, aug)
        assert right["moved"] >= 10 and right["tracked"] >= 0.9 * right["moved"], right
        assert right["vs_realised"] < 0.5, right
        assert right["vs_control"] <= right["warp_deviation"] + 0.5, right
        flipped = _alignment(record, members, k, dataclasses.replace(aug, flip=not aug.flip))
        assert flipped["vs_realised"] > max(1.0, 4 * right["vs_realised"]), (right, flipped)
        turned = _alignment(record, members, k,
                            dataclasses.replace(aug, rotation_deg=aug.rotation_deg + 5))
        assert turned["vs_realised"] > max(1.0, 3 * right["vs_realised"]), (right, turned)


# ============================================================== 2. crop geometry


def _frame_points(points: np.ndarray, size: tuple[int, int], degrees: float) -> np.ndarray:
    """``points`` in the source rotated about its centre (own implementation, cv2 convention)."""
    w, h = size
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return points @ m[:, :2].T + m[:, 2]


def _inside(points: np.ndarray, w: float, h: float) -> bool:
    """All points (pixel centres at integers) within the frame's edges."""
    return bool(np.all(points >= -0.5) and np.all(points[:, 0] <= w - 0.5)
                and np.all(points[:, 1] <= h - 0.5))


def _fits_every_rotation(points: np.ndarray, size: tuple[int, int]) -> bool:
    return all(_inside(_frame_points(points, size, r), *size) for r in ROTATIONS)


def _face_cases(rng: np.random.Generator, landmarks: np.ndarray, n: int):
    """``n`` (size, face points) cases: frame sizes/aspects, face sizes, in-plane face
    rotations, mirrored faces, and positions anywhere — including against each edge."""
    base = landmarks - landmarks.mean(axis=0)
    cases = []
    while len(cases) < n:
        w, h = (int(v) for v in rng.integers(128, 1600, 2))
        if not 1 / 2.5 <= w / h <= 2.5:
            continue
        pts = base * [(-1) ** int(rng.integers(2)), 1]
        c, s = math.cos(math.radians(rng.uniform(-25, 25))), math.sin(math.radians(rng.uniform(-25, 25)))
        pts = pts @ np.array([[c, -s], [s, c]]).T
        pts = pts * (rng.uniform(0.06, 0.5) * min(w, h) / np.ptp(pts, axis=0).max())
        lo, hi = -pts.min(axis=0), np.array([w - 1, h - 1]) - pts.max(axis=0)
        if np.any(lo > hi):
            continue
        where = len(cases) % 5  # 0: anywhere; 1–4: at most 30 px from the left/right/top/bottom
        offset = rng.uniform(lo, hi)
        gap = rng.uniform(0, 30)
        if where == 1:
            offset[0] = min(lo[0] + gap, hi[0])
        elif where == 2:
            offset[0] = max(hi[0] - gap, lo[0])
        elif where == 3:
            offset[1] = min(lo[1] + gap, hi[1])
        elif where == 4:
            offset[1] = max(hi[1] - gap, lo[1])
        cases.append(((w, h), pts + offset))
    return cases


AREAS = (128 * 128, 256 * 256, 320 * 320, 1024 * 1024)


def _check_augmentation(aug: Augmentation, size: tuple[int, int], face: np.ndarray,
                        area: int) -> None:
    w, h = size
    x0, y0, cw, ch = aug.crop
    ow, oh = aug.out_size
    assert aug.rotation_deg in ROTATIONS
    # the crop lies in the (rotated, mirrored) frame, which has the source's size
    assert x0 >= 0 and y0 >= 0 and x0 + cw <= w + 2e-3 and y0 + ch <= h + 2e-3
    # the whole face, with the 10 % margin wherever the frame has room for it
    in_frame = _frame_points(face, size, aug.rotation_deg)
    if aug.flip:
        in_frame[:, 0] = w - 1 - in_frame[:, 0]
    fx0, fy0 = in_frame.min(axis=0) + 0.5
    fx1, fy1 = in_frame.max(axis=0) + 0.5
    mx, my = 0.1 * (fx1 - fx0), 0.1 * (fy1 - fy0)
    assert x0 <= max(fx0 - mx, 0) + 2e-3 and x0 + cw >= min(fx1 + mx, w) - 2e-3
    assert y0 <= max(fy0 - my, 0) + 2e-3 and y0 + ch >= min(fy1 + my, h) - 2e-3
    # every landmark lands inside the output image
    assert _inside(transform_points(face, aug, size), ow, oh)
    # output sides: multiples of 16, area ≈ requested, aspect = the crop's (up to rounding)
    assert ow % SIDE_MULTIPLE == 0 and oh % SIDE_MULTIPLE == 0
    assert (ow, oh) == output_size(cw / ch, area)
    half = SIDE_MULTIPLE / 2
    assert abs(ow * oh - area) <= half * (ow + oh) + half**2
    assert ASPECT[0] - 1e-4 <= cw / ch <= ASPECT[1] + 1e-4
    rounding = half / ow + half / oh + 1e-3
    assert ASPECT[0] * (1 - rounding) <= ow / oh <= ASPECT[1] * (1 + rounding)


def test_crops_always_contain_the_whole_face(astronaut_512_points):
    """Hundreds of seeded draws over frame sizes and face placements: every invariant of a
    sampled augmentation holds whenever the drawn rotation keeps the face inside the rotated
    frame."""
    rng = np.random.default_rng(2024)
    rotations, flips, checked, cut = Counter(), Counter(), Counter(), Counter()
    for i, (size, face) in enumerate(_face_cases(rng, astronaut_512_points, 500)):
        for j in range(2):
            area = AREAS[(i + j) % len(AREAS)]
            aug = sample_augmentation(np.random.default_rng([i, j]), size, face, area)
            if not _inside(_frame_points(face, size, aug.rotation_deg), *size):
                cut[i % 5] += 1
                continue
            _check_augmentation(aug, size, face, area)
            rotations[aug.rotation_deg] += 1
            flips[aug.flip] += 1
            checked[i % 5] += 1
    # placements: anywhere, and against the left, right, top and bottom edges
    assert all(checked[where] >= 80 for where in range(5)), (checked, cut)
    assert set(rotations) == set(ROTATIONS) and set(flips) == {False, True}
    assert ROTATIONS == tuple(range(-15, 16, 5))


def test_crop_scale_and_aspect_follow_the_draw_when_the_face_is_small():
    """A small central face constrains nothing: crop area 55–100 % of the frame (less only
    where a side is clamped to the frame), both portrait and landscape crops."""
    face = np.array([[236.0, 236.0], [276.0, 236.0], [256.0, 276.0]])
    fractions, aspects = [], []
    for seed in range(400):
        aug = sample_augmentation(np.random.default_rng(seed), (512, 512), face, 256 * 256)
        _, _, cw, ch = aug.crop
        fractions.append(cw * ch / 512**2)
        aspects.append(cw / ch)
    assert min(fractions) > 0.2 and max(fractions) <= CROP_SCALE[1] + 1e-4
    assert np.median(fractions) > CROP_SCALE[0]
    assert min(aspects) < 0.5 and max(aspects) > 2.0


def test_crop_keeps_a_face_near_a_corner_whole(astronaut_512_points):
    face = astronaut_512_points - astronaut_512_points.min(axis=0) + 2.0  # top-left corner
    size = (640, 480)
    assert _inside(_frame_points(face, size, 0), *size)  # the face allows it
    for seed in range(50):
        aug = sample_augmentation(np.random.default_rng(seed), size, face, 256 * 256)
        assert _inside(transform_points(face, aug, size), *aug.out_size), aug


def test_crop_aspect_is_bounded_on_panoramic_frames():
    face = np.array([[580.0, 130.0], [620.0, 130.0], [600.0, 170.0]])  # small, central
    for seed in range(100):
        aug = sample_augmentation(np.random.default_rng(seed), (1200, 300), face, 256 * 256)
        assert aug.crop[2] / aug.crop[3] <= ASPECT[1] + 1e-3, aug


def _dot_errors(path: str, draws: int = 24) -> list[float]:
    """Distance between a blob's centroid after ``apply_augmentation`` and
    ``transform_points`` of its centre, over seeded draws on the ``path`` resampling path."""
    rng = np.random.default_rng(7 if path == "upscale" else 8)
    errors = []
    while len(errors) < draws:
        w, h = (int(v) for v in rng.integers(200, 1000, 2))
        area = int(rng.choice([512, 768] if path == "upscale" else [96, 128, 160])) ** 2
        face = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h]) + rng.normal(0, 10, (20, 2))
        aug = sample_augmentation(rng, (w, h), face, area)
        scale = aug.out_size[0] / aug.crop[2]
        if (scale < 0.75) != (path == "downscale"):
            continue
        sigma = max(3.0, 2.0 / scale)  # ≥ 2 px in the output
        out_sigma = sigma * scale
        ow, oh = aug.out_size
        for _ in range(200):
            p = rng.uniform(8 * sigma, [w - 8 * sigma, h - 8 * sigma])
            q = transform_points(p[None], aug, (w, h))[0]
            if np.all(q > 5 * out_sigma + 2) and np.all(q < np.array([ow, oh]) - 5 * out_sigma - 3):
                break
        else:
            continue
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma**2))
        image = np.repeat(np.round(255 * blob).astype(np.uint8)[..., None], 3, axis=2)
        out = apply_augmentation(image, aug)
        assert out.shape == (oh, ow, 3) and out.dtype == np.uint8
        r = int(np.ceil(4 * out_sigma + 2))
        x0, y0 = int(round(q[0])) - r, int(round(q[1])) - r
        win = out[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1, 0].astype(np.float64)
        gy, gx = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
        centroid = np.array([(win * gx).sum(), (win * gy).sum()]) / win.sum()
        errors.append(float(np.linalg.norm(centroid - q)))
    return errors


@pytest.mark.parametrize("path", [
    "upscale",
    "downscale",
])
def test_augmented_image_matches_transformed_points(path):
    """A blob at p ends up at transform_points(p): measured max 0.02 px (upscale) → 0.1 px."""
    errors = _dot_errors(path)
    assert max(errors) < 1.0  # sub-pixel on either path
    assert max(errors) < 0.1, sorted(errors)[-3:]


# ============================================================== 3. determinism


def test_shard_layout_and_records(reference_build):
    """Shards are deterministic WebDataset tars; sidecars, manifest and summary agree."""
    out, _ = reference_build
    files = _files(out)
    plan = json.loads(files["plan.json"])
    assert sorted(files) == sorted(
        ["plan.json", "manifest.jsonl", "summary.json"]
        + [f"shards/shard-{i:06d}.{e}" for i in range(3) for e in ("tar", "json")]
    )
    manifest = [json.loads(line) for line in files["manifest.jsonl"].decode().splitlines()]
    assert [m["source"] for m in manifest] == plan["sources"] == sorted(plan["sources"])
    for i in range(3):
        tar = out / "shards" / f"shard-{i:06d}.tar"
        meta = json.loads(files[f"shards/shard-{i:06d}.json"])
        assert meta["tar_sha256"] == sha256(tar.read_bytes()) and B.shard_done(out, i)
        members = read_members(tar)
        keys = [r["key"] for r in meta["records"]]
        expected = []
        for record in meta["records"]:
            key = record["key"]
            assert key == f"{source_key(record['source'])}-p000"
            expected += [f"{key}.json", f"{key}.src.png", f"{key}.tgt.png"]
            expected += [f"{key}.a{k:02d}_{s}.png" for k in range(2) for s in ("src", "tgt")]
        assert [name for name, _ in members] == expected  # a sample's files are contiguous
        for name, data in members:
            if name.endswith(".json"):
                assert json.loads(data) in meta["records"]
            else:
                image = Image.open(io.BytesIO(data))
                assert image.format == "PNG" and image.mode == "RGB"
                assert image.width % 16 == 0 and image.height % 16 == 0
        with tarfile.open(tar) as archive:
            for info in archive.getmembers():
                assert (info.mtime, info.uid, info.gid, info.mode) == (0, 0, 0, 0o644)
        assert keys == [m["key"] for m in manifest if m["shard"] == tar.name]


def test_builds_are_byte_identical(portraits, reference_build, seed1_build, tmp_path):
    """Same seed and sources → identical bytes in another folder, with 2 worker processes,
    and from a copy of the sources elsewhere; another seed → other bytes."""
    ref_out, _ = reference_build
    ref = _files(ref_out)
    again = tmp_path / "again"
    assert _cli("--faces", portraits, "--out", again, *SMALL, "--seed", 0).exit_code == 0
    _assert_same_files(_files(again), ref)

    parallel = tmp_path / "parallel"
    proc = _subprocess_cli("--faces", portraits, "--out", parallel, *SMALL, "--seed", 0,
                           "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    _assert_same_files(_files(parallel), ref)
    assert not _part_files(parallel) and not _part_files(ref_out)

    moved_faces = tmp_path / "elsewhere" / "faces"
    shutil.copytree(portraits, moved_faces)
    moved = tmp_path / "moved"
    assert _cli("--faces", moved_faces, "--out", moved, *SMALL, "--seed", 0).exit_code == 0
    moved_files = _files(moved)
    plan, moved_plan = json.loads(ref["plan.json"]), json.loads(moved_files.pop("plan.json"))
    assert moved_plan == {**plan, "faces_dir": str(moved_faces.resolve())}
    _assert_same_files(moved_files, {k: v for k, v in ref.items() if k != "plan.json"})

    other = _files(seed1_build)
    assert sorted(other) == sorted(ref)
    for name in ref:
        if name.startswith("shards/") or name == "manifest.jsonl":
            assert other[name] != ref[name], name
    assert json.loads(other["summary.json"]) == {**json.loads(ref["summary.json"]), "seed": 1}


# ============================================================== 4. resume after a kill

def _wait_group_gone(pgid: int) -> None:
    """Wait until no process of group ``pgid`` is left (the CLI and its workers)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "worker processes survived SIGKILL"
        time.sleep(0.05)


KILL_SETTINGS = ("--size", 384, "--pairs", 2, "--augment", 3, "--shard-size", 1, "--seed", 7)


def test_resume_after_kill(portraits, tmp_path):
    """SIGKILL a 2-worker build once a shard is done; no partial shard is left; running the
    same command again finishes only the missing shards and gives the uninterrupted bytes."""
    reference = tmp_path / "reference"
    assert _cli("--faces", portraits, "--out", reference, *KILL_SETTINGS).exit_code == 0
    expected = _files(reference)

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "mirrorppr_cli", "build-dataset", "--faces", str(portraits),
            "--out", str(out), "--workers", "2", *(str(a) for a in KILL_SETTINGS)]
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "shards").glob("shard-*.json")):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no shard finished in 120 s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _wait_group_gone(proc.pid)

    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists() and not (out / "manifest.jsonl").exists()
    after_kill = _files(out)
    sidecars = [n for n in after_kill if n.startswith("shards/") and n.endswith(".json")]
    assert 1 <= len(sidecars) < 6, "the kill must land mid-build"
    for name, data in after_kill.items():
        # every visible file is complete: byte-identical to the uninterrupted build's
        assert data == expected[name], name
    for name in sidecars:
        assert name.replace(".json", ".tar") in after_kill
    done = {name: (out / name).stat().st_ino for name in sidecars}
    done.update({n.replace(".json", ".tar"): (out / n.replace(".json", ".tar")).stat().st_ino
                 for n in sidecars})
    parts_after_kill = _part_files(out)
    assert all(Path(p).name.startswith(".shard-") for p in parts_after_kill), parts_after_kill

    proc = _subprocess_cli("--faces", portraits, "--out", out, "--workers", 2, *KILL_SETTINGS)
    assert proc.returncode == 0, proc.stderr
    _assert_same_files(_files(out), expected)
    for name, inode in done.items():  # finished shards were kept, not rebuilt
        assert (out / name).stat().st_ino == inode, name
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    keys = [m["key"] for m in manifest]
    assert len(keys) == len(set(keys)) == 6 * 2
    assert Counter(m["source"] for m in manifest) == {name: 2 for name in PORTRAITS}
    assert sorted((m["source"], m["pair_index"]) for m in manifest) == sorted(
        (s, j) for s in json.loads(expected["plan.json"])["sources"] for j in range(2))
    # temp files of the killed run, if any, were hidden (ignored by readers); the resume
    # removes them (prepare_output). A kill landing mid-write leaves one; most kills none.
    assert _part_files(out) == []


def test_kill_during_a_shard_write_leaves_no_partial_shard(portraits, reference_build,
                                                          tmp_path):
    """Fault injection: every fsync is slowed (tests/_dataset_helpers.py), the build is killed
    while a shard is being written. Only hidden ``.part`` temp files may be left; a resume
    produces the reference bytes and ignores them."""
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "tests" / "_dataset_helpers.py"), "build-dataset",
            "--faces", str(portraits), "--out", str(out), "--workers", "2", *map(str, SMALL),
            "--seed", "0"]
    env = {**os.environ, "MIRRORPPR_TEST_FSYNC_DELAY": "1.0"}
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=log,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "shards").glob(".shard-*.part")):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no shard write started in 120 s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _wait_group_gone(proc.pid)
    parts = _part_files(out)
    assert parts and all(Path(p).name.startswith(".shard-") for p in parts)
    expected = _files(reference_build[0])
    for name, data in _files(out).items():  # no visible shard file is partial
        assert data == expected[name], name
    assert not any(n.startswith("shards/") for n in _files(out))  # killed before any rename

    resumed = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0)
    assert resumed.exit_code == 0, resumed.output
    _assert_same_files(_files(out), expected)
    assert _part_files(out) == []  # the resume removed the killed write's temp file


def test_resume_removes_stale_temp_files(portraits, reference_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference_build[0], out)
    stale = out / "shards" / ".shard-000001.tar.k1ll3d.part"
    stale.write_bytes(b"\0" * 1024)
    assert _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0).exit_code == 0
    assert not stale.exists()


def test_resume_removes_the_temp_files_of_a_killed_finalize(portraits, reference_build,
                                                            tmp_path):
    """A kill while the manifest or summary is written (found by the kill campaign,
    benchmarks/kill_campaign_dataset.py) leaves their hidden temporaries beside them."""
    out = tmp_path / "out"
    shutil.copytree(reference_build[0], out)
    (out / "summary.json").unlink()
    stale = [out / ".manifest.jsonl.k1ll3d.part", out / ".summary.json.k1ll3d.part"]
    for path in stale:
        path.write_bytes(b"{")
    assert _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0).exit_code == 0
    assert not any(path.exists() for path in stale) and _part_files(out) == []
    _assert_same_files(_files(out), _files(reference_build[0]))


def _live_in_group(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes of group ``pgid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(cmdline.decode(errors="replace")[:120])
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
def test_workers_die_with_the_main_process(portraits, tmp_path):
    """SIGKILL of the CLI's process alone (a crash, the OOM killer, ``kill -9 PID``; not its
    process group): the pool workers and multiprocessing's resource tracker end within
    seconds. They used to wait for work for ever, ~240 MB each."""
    args = [sys.executable, "-m", "mirrorppr_cli", "build-dataset", "--faces", str(portraits),
            "--out", str(tmp_path / "out"), "--workers", "2", *map(str, KILL_SETTINGS)]
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out" / "shards").glob("shard-*.json")):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no shard finished in 120 s"
            time.sleep(0.005)
        assert len(_live_in_group(proc.pid)) >= 3  # the CLI, two workers (and the tracker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while left := _live_in_group(proc.pid):
            assert time.monotonic() < deadline, f"outlived their parent by 10 s: {left}"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def test_die_with_parent_ends_a_worker_whose_parent_is_already_gone():
    """The pool initializer, run in a process whose parent is not the one named: it exits
    at once (the parent died before the worker got this far)."""
    code = "from mirrorppr_cli.data.workers import die_with_parent; die_with_parent(1); print('on')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "")


_FORK_CHECK = """
import sys
from pathlib import Path
from skimage import data
from mirrorppr_cli.data import build as B
from mirrorppr_cli.geometric.landmarks import find_faces
find_faces(data.astronaut())  # the parent has used MediaPipe (a notebook, a test session)
plan = B.make_plan(Path(sys.argv[1]), seed=0, pairs=1, augmentations=1, area=128 * 128,
                   image_format="png", shard_size=3)
out = Path(sys.argv[2])
B.run_local(plan, out, B.prepare_output(out, plan, force=False), 2, lambda i: None)
print(B.finalize(plan, out)["pairs"])
"""


def test_run_local_workers_after_mediapipe_in_parent(portraits, tmp_path):
    """Worker processes must not inherit MediaPipe's state: with the 'fork' start method
    they hung forever here. Done in ~5 s; the 20 s limit only catches the hang."""
    proc = subprocess.Popen([sys.executable, "-c", _FORK_CHECK, str(portraits),
                             str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _wait_group_gone(proc.pid)
        pytest.fail("run_local(workers=2) hung after MediaPipe ran in the parent")
    assert proc.returncode == 0 and stdout.split()[-1] == "6"


# ============================================================== 5. skipped faces


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, astronaut_512) -> Path:
    """One usable portrait and one source for each rejection reason, plus a broken file."""
    folder = tmp_path_factory.mktemp("mixed")
    a = astronaut_512
    rng = np.random.default_rng(0)
    _save(folder, "astronaut.png", a)
    _save(folder, "noise.png", rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    _save(folder, "flat.png", np.full((300, 300, 3), 127, np.uint8))
    _save(folder, "two_faces.png", np.concatenate([a, a[:, ::-1]], axis=1))
    # eye distance ~10 px at 320² (the filter wants 0.04 × 320 = 12.8 px)
    _save(folder, "tiny_face.png", _pasted(a, (700, 700), (222, 222), side=256, fill=128))
    # rolled by 50°: |roll| ≈ 47° > 25°
    _save(folder, "rolled.png", _rotate(a, 50, fill=128))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 5])
    return folder


def test_head_pose_roll_follows_in_plane_rotation(astronaut_512):
    """The roll estimate tracks an in-plane rotation of the photo (counter-clockwise → −)."""
    base = head_pose(find_faces(astronaut_512)[0])[2]
    for degrees in (-40, -20, 20, 40):
        faces = find_faces(_rotate(astronaut_512, degrees, fill=128))
        assert len(faces) == 1
        yaw, pitch, roll = head_pose(faces[0])
        assert abs(roll - (base - degrees)) < 3, (degrees, roll)
        assert abs(yaw) < 10 and abs(pitch) < 10
        expected = "head_pose" if abs(base - degrees) > 25 else None
        assert reject_reason(faces, FaceFilter(), 512) == expected


def test_skipped_and_failed_sources_are_accounted_exactly(mixed_folder, tmp_path):
    out = tmp_path / "out"
    result = _cli("--faces", mixed_folder, "--out", out, "--size", 320, "--pairs", 1,
                  "--augment", 1, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    failed = summary.pop("failed_sources")
    assert summary == {
        "sources": 7,
        "used": 1,
        "pairs": 1,
        "quadruplets": 1,
        "skipped": {"face_too_small": 1, "head_pose": 1, "no_face": 2, "several_faces": 1},
        "skipped_sources": {
            "flat.png": "no_face",
            "noise.png": "no_face",
            "rolled.png": "head_pose",
            "tiny_face.png": "face_too_small",
            "two_faces.png": "several_faces",
        },
        "shards": 1,
        "seed": 0,
    }
    assert list(failed) == ["truncated.png"]
    assert "InputError" in failed["truncated.png"] and "truncated" in failed["truncated.png"]
    assert json.loads((out / "summary.json").read_text()) == {**summary, "failed_sources": failed}
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["source"] for line in manifest] == ["astronaut.png"]
    # the human-readable report of the same (finished) build counts the reasons
    again = _cli("--faces", mixed_folder, "--out", out, "--size", 320, "--pairs", 1,
                 "--augment", 1)
    assert again.exit_code == 0, again.output
    assert "1 pairs, 1 quadruplets from 1 of 7 portraits" in again.stdout
    assert "skipped: face_too_small 1, head_pose 1, no_face 2, several_faces 1" in again.stdout


# ============================================================== 6. benchmark layout


@pytest.fixture(scope="module")
def bench_faces(tmp_path_factory, astronaut_512) -> Path:
    folder = tmp_path_factory.mktemp("bench_faces")
    variants = _variants(astronaut_512)
    for name in ("astronaut.png", "mirrored.png", "rot5.png", "canvas.png"):
        _save(folder, name, variants[name])
    _save(folder, "flat.png", np.full((300, 300, 3), 127, np.uint8))
    return folder


def _framed_face(path: Path, side: int) -> np.ndarray:
    """The documented SimFace framing, computed here: a square 2.2× the landmark box, centred
    on it, moved (not shrunk) into the frame, its side floored to a multiple of 16, resized to
    at most ``side``."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    points = find_faces(rgb)[0].points
    h, w = rgb.shape[:2]
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    square = int(min(2.2 * max(x1 - x0, y1 - y0), w, h)) // 16 * 16
    left = int(round(np.clip((x0 + x1 - square) / 2, 0, w - square)))
    top = int(round(np.clip((y0 + y1 - square) / 2, 0, h - square)))
    crop = rgb[top : top + square, left : left + square]
    if square > side:
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return crop


def test_simface_benchmark_layout(bench_faces, tmp_path):
    out = tmp_path / "simface"
    args = ("--benchmark", "simface", "--faces", bench_faces, "--out", out, "--combos", 4,
            "--size", 256)
    result = _cli(*args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["items"], summary["identities"], summary["side"]) == (4, 4, 256)
    assert summary["skipped"] == {"flat.png": "no_face"}

    items = json.loads((out / "dataset.json").read_text())
    assert isinstance(items, list) and len(items) == 4
    slots = ("pair1_origin", "pair1_edited", "pair2_origin", "pair2_edited")
    crops = {}
    for item in items:
        assert set(item) >= {*slots, "edit_instruction"}
        assert isinstance(item["edit_instruction"], str) and item["edit_instruction"]
        pixels = {}
        for slot in slots:
            assert not Path(item[slot]).is_absolute()
            with Image.open(out / item[slot]) as image:
                pixels[slot] = np.asarray(image.convert("RGB"))
            assert pixels[slot].shape[0] == pixels[slot].shape[1] <= 256
        assert item["pair1_source"] != item["pair2_source"]
        assert not np.array_equal(pixels["pair1_origin"], pixels["pair1_edited"])
        assert not np.array_equal(pixels["pair2_origin"], pixels["pair2_edited"])
        for n in (1, 2):  # each origin is the face crop of the source it names
            source = item[f"pair{n}_source"]
            if source not in crops:
                crops[source] = _framed_face(bench_faces / source, 256)
            expected = crops[source]
            assert pixels[f"pair{n}_origin"].shape == expected.shape
            assert np.abs(pixels[f"pair{n}_origin"] - expected.astype(float)).mean() < 1.0
    index = (out / "dataset.json").read_bytes()

    again = _cli(*args)
    assert again.exit_code == 4 and "--force" in again.output
    forced = _cli(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "dataset.json").read_bytes() == index  # deterministic


def test_simface_needs_two_usable_faces(tmp_path, astronaut_512):
    faces = tmp_path / "faces"
    _save(faces, "astronaut.png", astronaut_512)
    _save(faces, "flat.png", np.full((300, 300, 3), 127, np.uint8))
    with pytest.raises(UsageError, match="at least 2"):
        build_simface(faces, tmp_path / "out", combos=2, seed=0, side=256)
    assert not (tmp_path / "out" / "dataset.json").exists()


# ============================================================== 8. CLI basics


def test_cli_json_summary(reference_build):
    out, stdout = reference_build
    summary = json.loads(stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["sources"], summary["used"], summary["pairs"], summary["quadruplets"],
            summary["shards"]) == (6, 6, 6, 12, 3)


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--engine", "nope", "--engine"),
    ("--format", "gif", "--format"),
    ("--subset", "pro", "pro"),
    ("--benchmark", "lfw", "--benchmark"),
])
def test_cli_rejects_bad_choices(portraits, tmp_path, option, value, words):
    out = tmp_path / "out"
    result = _cli("--faces", portraits, "--out", out, *SMALL, option, value)
    assert result.exit_code == 2, result.output
    assert words in result.output and value in result.output
    assert not out.exists()


def test_cli_other_build_in_out_exits_4_and_force_rebuilds(portraits, reference_build,
                                                           seed1_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference_build[0], out)
    before = _files(out)
    inodes = {p: p.stat().st_ino for p in (out / "shards").iterdir()}

    same = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0)
    assert same.exit_code == 0, same.output  # nothing left to do: shards kept as they are
    assert {p: p.stat().st_ino for p in (out / "shards").iterdir()} == inodes

    other = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 1)
    assert other.exit_code == 4
    assert "different build" in other.output and "--force" in other.output
    _assert_same_files(_files(out), before)

    forced = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 1, "--force")
    assert forced.exit_code == 0, forced.output
    _assert_same_files(_files(out), _files(seed1_build))


# ============================================================== 9. operation sampling


def test_sample_ops_distribution():
    n = 4000
    counts, included, first_of_one, signs, magnitudes = Counter(), Counter(), Counter(), [], []
    names = list(SIMULATED_OPS)  # the official generator's eight, not the whole catalog
    for seed in range(n):
        ops = sample_ops(sample_rng(seed, "portrait.png", 0))
        counts[len(ops)] += 1
        assert len({o.name for o in ops}) == len(ops)  # distinct operations
        assert [o.name for o in ops] == sorted((o.name for o in ops), key=names.index)
        for op in ops:
            included[op.name] += 1
            signs.append(op.strength > 0)
            magnitudes.append(abs(op.strength))
            assert op.strength == round(op.strength, 2)
        if len(ops) == 1:
            first_of_one[ops[0].name] += 1
    # op count uniform on 1..8: chi² with 7 degrees of freedom, 0.1 % critical value 24.3
    assert set(counts) == set(range(1, MAX_OPS + 1))
    chi2 = sum((counts[c] - n / 8) ** 2 / (n / 8) for c in range(1, 9))
    assert chi2 < 24.3, counts
    # every type equally likely: included with probability E[count]/8 = 4.5/8
    for name in names:
        assert abs(included[name] / n - 4.5 / 8) < 0.03, included
    assert set(first_of_one) == set(names)
    chi2 = sum((first_of_one[k] - counts[1] / 8) ** 2 / (counts[1] / 8) for k in names)
    assert chi2 < 24.3, first_of_one
    magnitudes = np.array(magnitudes)
    lo, hi = STRENGTH_RANGE
    assert (lo, hi) == (30.0, 100.0)
    assert magnitudes.min() >= lo and magnitudes.max() <= hi
    assert abs(np.mean(signs) - 0.5) < 0.02
    assert abs(np.median(magnitudes) - (lo + hi) / 2) < 2
    hist = np.histogram(magnitudes, bins=7, range=(lo, hi))[0]
    assert hist.min() > 0.85 * hist.mean()
    assert abs(magnitudes.min() - lo) < 0.5 and abs(magnitudes.max() - hi) < 0.5


def test_sample_ops_is_reproducible_across_processes():
    """Same (seed, source, index, stream) → same ops, also in a fresh interpreter with
    another hash seed; any change of them → other draws."""
    def draw(seed, source, index, stream=0):
        return [(o.name, o.strength) for o in sample_ops(sample_rng(seed, source, index, stream))]

    here = [draw(s, "a.png", j) for s in range(5) for j in range(3)]
    assert here == [draw(s, "a.png", j) for s in range(5) for j in range(3)]
    code = (
        "import json; from mirrorppr_cli.data.sampling import sample_ops, sample_rng;"
        "print(json.dumps([[(o.name, o.strength) for o in sample_ops(sample_rng(s, 'a.png', j))]"
        " for s in range(5) for j in range(3)]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert [[tuple(op) for op in ops] for ops in json.loads(proc.stdout)] == here
    variants = {json.dumps(draw(*args)) for args in
                [(0, "a.png", 0), (1, "a.png", 0), (0, "b.png", 0), (0, "a.png", 1),
                 (0, "a.png", 0, 1)]}
    assert len(variants) == 5


# ============================================================== 7. Ray engine


def test_ray_engine_matches_local_engine(portraits, reference_build, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError as error:  # pragma: no cover - ray is a dev dependency
        pytest.skip(f"ray is not importable: {error}")
    ref_out, _ = reference_build
    plan = B.make_plan(portraits, seed=0, pairs=1, augmentations=2, area=256 * 256,
                       image_format="png", shard_size=2)
    assert plan.to_dict() == json.loads((ref_out / "plan.json").read_text())
    out = tmp_path / "ray"
    todo = B.prepare_output(out, plan, force=False)
    assert todo == [0, 1, 2]
    finished: list[int] = []
    B.run_ray(plan, out, todo, finished.append, num_cpus=2)
    assert sorted(finished) == todo
    B.finalize(plan, out)
    _assert_same_files(_files(out), _files(ref_out))


# ============================================================== 10. --max-ops


def test_max_ops_limits_the_operations_per_pair(portraits, bench_faces, tmp_path):
    """--max-ops 1: every simulated pair and every benchmark item applies one operation; the
    plan records it (a build with another limit is another build); the professional subset,
    whose count distribution is the paper's, refuses it."""
    out = tmp_path / "one"
    result = _cli("--faces", portraits, "--out", out, *SMALL, "--max-ops", 1, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ops_per_pair"] == {"1": 6}
    assert json.loads((out / "plan.json").read_text())["max_ops"] == 1
    default = _cli("--faces", portraits, "--out", out, *SMALL)
    assert default.exit_code == 4 and "different build" in default.output

    bench = tmp_path / "bench"
    result = _cli("--benchmark", "simface", "--faces", bench_faces, "--out", bench,
                  "--combos", 6, "--size", 128, "--max-ops", 2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_ops"] == 2
    counts = [len(item["ops"]) for item in json.loads((bench / "dataset.json").read_text())]
    assert max(counts) <= 2 and min(counts) >= 1

    pro = _cli("--faces", portraits, "--out", tmp_path / "pro", *SMALL, "--subset",
               "professional", "--max-ops", 3)
    assert pro.exit_code == 2 and "--max-ops" in pro.output
    assert not (tmp_path / "pro").exists()
