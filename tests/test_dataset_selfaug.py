"""`build-dataset --benchmark selfaug` (real pairs, self-augmented queries), `--generator
official` for simface, the benchmarks' dev/held-out split and `bench --split`.

Every pair is made here: scikit-image's astronaut as "before" and the same image with the
project's eye enlargement as "after", written to temporary folders under the naming schemes
the builder must find. Sizes are small (outputs at most 256²) to keep the file fast.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.bench.datasets import load_benchmark
from mirrorppr_cli.cli import app
from mirrorppr_cli.data import official_llw as L
from mirrorppr_cli.data.selfaug import discover_pairs
from mirrorppr_cli.data.simface import build_simface, split_of
from mirrorppr_cli.errors import UsageError
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SIZE = 256  # outputs of at most SIZE² pixels


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def pair(astronaut_512, astronaut_512_points) -> tuple[np.ndarray, np.ndarray]:
    """(before, after): the astronaut and the same photo with its eyes enlarged."""
    after = apply_local_warp(astronaut_512,
                             plan_warp(astronaut_512_points, [OpRequest("eye_resize", 60)]))
    return np.asarray(astronaut_512), after


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, pair) -> Path:
    """Two good pairs (survey naming; -before/-after, mirrored) and three that must be skipped."""
    before, after = pair
    folder = tmp_path_factory.mktemp("pairs")
    _save(folder / "astro-example-source.png", before)
    _save(folder / "astro-example-retouched.png", after)
    _save(folder / "mirror-before.png", before[:, ::-1])
    _save(folder / "mirror-after.png", after[:, ::-1])
    _save(folder / "lonely-before.png", before)  # no after
    _save(folder / "bad_source.png", before)  # after of another size
    _save(folder / "bad_retouched.png", after[:400])
    _save(folder / "astro-query-source.png", before[:, ::-1])  # not a pair file
    return folder


@pytest.fixture(scope="module")
def build0(tmp_path_factory, pairs_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("selfaug") / "seed0"
    result = _cli("build-dataset", "--benchmark", "selfaug", "--pairs", pairs_dir, "--out", out,
                  "--combos", 8, "--seed", 0, "--size", SIZE, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


# --------------------------------------------------------------------------- discovery


def test_pairs_are_found_under_every_naming(pairs_dir, tmp_path, pair):
    pairs, skipped = discover_pairs(pairs_dir)
    assert [(p.name, p.before.name, p.after.name) for p in pairs] == [
        ("astro", "astro-example-source.png", "astro-example-retouched.png"),
        ("bad", "bad_source.png", "bad_retouched.png"),
        ("mirror", "mirror-before.png", "mirror-after.png"),
    ]
    assert skipped["lonely-before.png"].startswith("unmatched: no after file lonely-after")
    assert skipped["astro-query-source.png"].startswith("unmatched: not named as a pair")

    before, after = pair
    sub = tmp_path / "sub"
    _save(sub / "before" / "x.png", before)
    _save(sub / "after" / "x.png", after)
    _save(sub / "before" / "y.png", before)
    pairs, skipped = discover_pairs(sub)
    assert [(p.name, p.before.parent.name, p.after.parent.name) for p in pairs] == [
        ("x", "before", "after")]
    assert skipped == {"before/y.png": "unmatched: no after/y.png"}

    official = tmp_path / "official"
    _save(official / "a.png", before)
    _save(official / "b.png", after)
    (official / "dataset.json").write_text(json.dumps([
        {"pair1_origin": "a.png", "pair1_edited": "b.png", "pair2_origin": "a.png",
         "edit_instruction": ""},
        {"pair1_origin": "a.png", "pair1_edited": "b.png", "pair2_origin": "b.png",
         "pair2_edited": "a.png", "edit_instruction": ""}]))
    pairs, _ = discover_pairs(official)
    assert [(p.name, p.before.name, p.after.name) for p in pairs] == [
        ("a", "a.png", "b.png"), ("b", "b.png", "a.png")]


# --------------------------------------------------------------------------- truth = A(after)


def _matrix(aug: dict, size: tuple[int, int]) -> np.ndarray:
    """The documented view matrix, written out here: rotate counter-clockwise about the
    centre, mirror, then crop and scale (pixel centres at integers)."""
    w, h = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    angle = math.radians(aug["rotation_deg"])
    a, b = math.cos(angle), math.sin(angle)
    rot = np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy], [0, 0, 1]])
    if aug["flip"]:
        rot = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ rot
    s, (x0, y0) = aug["scale"], aug["crop"][:2]
    crop = np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5], [0, 0, 1]])
    return crop @ rot


def _augment(rgb: np.ndarray, aug: dict) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = _matrix(aug, (w, h))
    if aug["scale"] < 1:  # area pre-shrink, then the rest of the view by bilinear sampling
        dw, dh = round(w * aug["scale"]), round(h * aug["scale"])
        assert aug["prefilter"] == [dw, dh]
        fx, fy = dw / w, dh / h
        m = m @ np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        rgb = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA)
    else:
        assert aug["prefilter"] is None
    return cv2.warpAffine(np.ascontiguousarray(rgb), m[:2], tuple(aug["out_size"]),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2)
    return buf.getvalue()


def test_truth_is_exactly_the_augmented_after(build0, pairs_dir, pair, astronaut_512_points):
    out, summary = build0
    items = json.loads((out / "dataset.json").read_text())
    assert summary["items"] == len(items) == 8
    assert summary["pairs"] == 2 and summary["pairs_found"] == 3
    assert summary["items_per_pair"] == {"astro": 4, "mirror": 4}
    before, after = pair
    sources = {"astro": (before, after), "mirror": (before[:, ::-1], after[:, ::-1])}
    for i, item in enumerate(items):
        aug = item["augmentation"]
        assert item["pair2_origin"] == f"images/{i:04d}_query.jpg"
        assert item["pair2_edited"] == f"images/{i:04d}_truth.jpg"
        b, f = sources[item["pair"]]
        # the exemplar is the pair as it is (PNG files: copied byte for byte)
        stem = "astro-example" if item["pair"] == "astro" else "mirror"
        names = (("-source.png", "-retouched.png") if item["pair"] == "astro"
                 else ("-before.png", "-after.png"))
        for key, suffix in zip(("pair1_origin", "pair1_edited"), names, strict=True):
            assert (out / item[key]).read_bytes() == (pairs_dir / (stem + suffix)).read_bytes()
        m = _matrix(aug, (512, 512))
        np.testing.assert_allclose(item["matrix"], m[:2], rtol=0, atol=1e-9)
        assert (out / item["pair2_edited"]).read_bytes() == _jpeg(_augment(f, aug),
                                                                 aug["jpeg_quality"])
        assert (out / item["pair2_origin"]).read_bytes() == _jpeg(_augment(b, aug),
                                                                 aug["jpeg_quality"])
        # the recorded ranges
        w, h = aug["out_size"]
        assert w % 16 == 0 and h % 16 == 0 and w * h <= SIZE * SIZE
        assert 0 < aug["scale"] <= 3.0
        assert abs(aug["rotation_deg"]) <= 15 and 85 <= aug["jpeg_quality"] <= 95
        assert math.isclose(aug["crop"][2] * aug["scale"], w, rel_tol=1e-9)
        assert math.isclose(item["scale_ratio"], aug["scale"], rel_tol=1e-6)
        # the whole face is in the query
        points = np.array(astronaut_512_points)
        if item["pair"] == "mirror":
            points[:, 0] = 511 - points[:, 0]
        moved = points @ m[:2, :2].T + m[:2, 2]
        assert moved.min() >= -0.5 and (moved.max(axis=0) <= [w - 0.5, h - 0.5]).all()
    assert {item["augmentation"]["flip"] for item in items} == {False, True}


def test_png_format_writes_lossless_views(pairs_dir, tmp_path, pair):
    out = tmp_path / "png"
    result = _cli("build-dataset", "--benchmark", "selfaug", "--pairs", pairs_dir, "--out", out,
                  "--combos", 2, "--size", 128, "--format", "png")
    assert result.exit_code == 0, result.output
    for item in json.loads((out / "dataset.json").read_text()):
        assert item["augmentation"]["jpeg_quality"] is None
        f = pair[1] if item["pair"] == "astro" else pair[1][:, ::-1]
        truth = np.asarray(Image.open(out / item["pair2_edited"]))
        assert np.array_equal(truth, _augment(f, item["augmentation"]))


# --------------------------------------------------------------------------- seeds and splits


def test_same_seed_same_bytes_other_seed_other_views(build0, pairs_dir, tmp_path):
    out0, _ = build0
    again, other = tmp_path / "again", tmp_path / "other"
    for folder, seed in ((again, 0), (other, 1)):
        result = _cli("build-dataset", "--benchmark", "selfaug", "--pairs", pairs_dir,
                      "--out", folder, "--combos", 8, "--seed", seed, "--size", SIZE)
        assert result.exit_code == 0, result.output
    assert _files(again) == _files(out0)
    first, second = _files(out0), _files(other)
    assert first["dataset.json"] != second["dataset.json"]
    assert all(first[k] != second[k] for k in first if k.startswith("images/"))
    # rebuilding in place needs --force
    assert _cli("build-dataset", "--benchmark", "selfaug", "--pairs", pairs_dir,
                "--out", other, "--combos", 8, "--seed", 0, "--size", SIZE).exit_code == 4


def test_split_is_stable_per_pair(build0):
    out, summary = build0
    items = json.loads((out / "dataset.json").read_text())
    assert {item["pair"]: item["split"] for item in items} == summary["pair_splits"]
    assert summary["pair_splits"] == {"astro": split_of("astro"), "mirror": split_of("mirror")}
    assert summary["splits"] == {s: sum(i["split"] == s for i in items) for s in ("dev", "heldout")}
    names = [f"person-{k}" for k in range(600)]
    share = sum(split_of(n) == "heldout" for n in names) / len(names)
    assert 0.28 < share < 0.39
    assert [split_of(n) for n in names] == [split_of(n) for n in names]


def test_skipped_pairs_are_reported(build0):
    _, summary = build0
    skipped = summary["skipped"]
    assert skipped["bad"] == "size_mismatch: before 512x512, after 512x400"
    assert skipped["lonely-before.png"].startswith("unmatched")
    assert skipped["astro-query-source.png"].startswith("unmatched")
    assert set(skipped) == {"bad", "lonely-before.png", "astro-query-source.png"}


def test_bench_scores_one_split(build0, tmp_path):
    out, summary = build0
    everything = load_benchmark(str(out))
    for split in ("dev", "heldout"):
        part = load_benchmark(str(out), split=split)
        assert part.name == f"{everything.name}-{split}"
        assert [i.index for i in part.items] == [
            i.index for i in everything.items if i.split == split]
    assert len(load_benchmark(str(out), split="all").items) == 8
    split = "heldout" if summary["splits"]["heldout"] else "dev"
    result = _cli("bench", out, "--split", split, "--metrics", "psnr", "--out", tmp_path / "r",
                  "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "results.json").read_text())
    assert report["items"] == summary["splits"][split]
    bad = _cli("bench", out, "--split", "test", "--metrics", "psnr", "--out", tmp_path / "r2")
    assert bad.exit_code == 2 and "--split" in bad.output

    plain = tmp_path / "plain"  # the official layout: no split
    plain.mkdir()
    first = json.loads((out / "dataset.json").read_text())[0]
    (plain / "dataset.json").write_text(json.dumps([
        {k: str(out / first[k]) for k in ("pair1_origin", "pair1_edited", "pair2_origin")}]))
    # (absolute paths out of the folder: read only when allowed)
    assert len(load_benchmark(str(plain), allow_outside_root=True).items) == 1
    with pytest.raises(UsageError, match="carry no split"):
        load_benchmark(str(plain), split="dev", allow_outside_root=True)


# --------------------------------------------------------------------------- command line


def test_pairs_option_takes_a_number_or_a_folder(tmp_path, astronaut_512, pairs_dir):
    faces = tmp_path / "faces"
    _save(faces / "astronaut.png", astronaut_512)
    out = tmp_path / "train"
    result = _cli("build-dataset", "--faces", faces, "--out", out, "--pairs", 3, "--augment", 0,
                  "--size", 128, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"] == 3

    for args, words in (
        (("--faces", faces, "--pairs", "not-a-dir"), "--pairs"),
        (("--faces", faces, "--pairs", 0), "--pairs"),
        (("--benchmark", "selfaug", "--pairs", tmp_path / "nowhere"), "not a folder"),
        (("--benchmark", "selfaug", "--pairs", pairs_dir, "--faces", faces), "--faces"),
        (("--pairs", 2), "--faces"),
        (("--benchmark", "selfaug", "--pairs", pairs_dir, "--generator", "official"),
         "--generator"),
        (("--benchmark", "simface", "--faces", faces, "--generator", "nope"), "--generator"),
    ):
        bad = _cli("build-dataset", "--out", tmp_path / "x", *args)
        assert bad.exit_code == 2, (args, bad.output)
        assert words in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- official generator


def test_official_warp_leaves_pixels_outside_its_mask_unchanged(astronaut_512,
                                                                astronaut_512_points):
    pixels = np.asarray(astronaut_512)
    warp = plan_warp(astronaut_512_points, [OpRequest("eye_resize", 100)])
    ksize = L.official_blur_ksize(pixels.shape[:2])
    assert ksize == 25  # int(0.05 · 512) = 25, odd
    edited = L.official_apply(pixels, warp, ksize=ksize, truncate=True,
                              border=cv2.BORDER_CONSTANT)
    mask = L.official_mask(pixels.shape[:2], warp, ksize)
    assert np.array_equal(edited[mask == 0], pixels[mask == 0])
    assert (np.abs(edited.astype(int) - pixels).max(axis=-1) > 8).sum() > 100

    # several operations, one after the other: nothing changes away from the face
    requests = [OpRequest("eye_resize", 100), OpRequest("mouth_resize", -100)]
    edited, info = L.official_generate(pixels, astronaut_512_points, requests)
    assert info == {"redetect_failed": 0}
    (x0, y0), (x1, y1) = astronaut_512_points.min(axis=0), astronaut_512_points.max(axis=0)
    outside = np.ones(pixels.shape[:2], bool)
    outside[int(y0) - ksize : int(y1) + ksize, int(x0) - ksize : int(x1) + ksize] = False
    assert np.array_equal(edited[outside], pixels[outside])
    assert not np.array_equal(edited, pixels)


def test_official_generator_differs_from_the_catalog(tmp_path, astronaut_512):
    faces = tmp_path / "faces"
    _save(faces / "a.png", astronaut_512)
    _save(faces / "b.png", np.asarray(astronaut_512)[:, ::-1])
    built = {}
    for generator in ("catalog", "official"):
        out = tmp_path / generator
        summary = build_simface(faces, out, combos=2, seed=3, side=SIZE, generator=generator)
        assert summary["generator"] == generator
        built[generator] = (out, json.loads((out / "dataset.json").read_text()))
    (cat_dir, cat), (off_dir, off) = built["catalog"], built["official"]
    for a, b in zip(cat, off, strict=True):
        assert (a["pair1_source"], a["pair2_source"]) == (b["pair1_source"], b["pair2_source"])
        assert [o["name"] for o in a["ops"]] == [o["name"] for o in b["ops"]]
        assert [math.copysign(100, o["strength"]) for o in a["ops"]] == [
            o["strength"] for o in b["ops"]]
        assert a["split"] == b["split"] == split_of(a["pair2_source"])
        assert (cat_dir / a["pair2_origin"]).read_bytes() == (off_dir / b["pair2_origin"]).read_bytes()
        for slot in ("pair1_edited", "pair2_edited"):
            cat_px = np.asarray(Image.open(cat_dir / a[slot]))
            off_px = np.asarray(Image.open(off_dir / b[slot]))
            assert not np.array_equal(cat_px, off_px)
    with pytest.raises(UsageError, match="--generator"):
        build_simface(faces, tmp_path / "x", combos=1, seed=0, side=SIZE, generator="nope")


def test_bench_warp_uses_the_package_functions():
    spec = importlib.util.spec_from_file_location("bench_warp_check",
                                                  REPO / "benchmarks" / "bench_warp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.official_apply is L.official_apply
    assert module.official_inverse_map is L.official_inverse_map
    assert module.OFFICIAL_NODE_SPACING == 30
