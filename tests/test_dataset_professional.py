"""build-dataset --subset professional (issue #8): 1–7 operations of the 27-operation catalog
(22 face + 5 body) on half- and full-body portraits of one person.

Test portraits are made from ``skimage.data.astronaut()`` (a half-body shot: shoulders and
one elbow in view, hips at the frame's edge, so ``leg_slim`` and ``waist_slim`` have nothing
to act on).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.data import build as B
from mirrorppr_cli.data import pairs as P
from mirrorppr_cli.data.filters import PROFESSIONAL_FACE_FILTER, FaceFilter
from mirrorppr_cli.data.pairs import PairSettings, make_professional_samples, visible_body_ops
from mirrorppr_cli.data.sampling import (
    PRO_BODY_WEIGHT,
    PRO_COUNT_PERCENT,
    PRO_FACE_WEIGHT,
    STRENGTH_RANGE,
    professional_catalog,
    sample_professional_ops,
    sample_rng,
)
from mirrorppr_cli.data.shards import read_members
from mirrorppr_cli.geometric.body import NoPersonError, detect_body
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import CATALOG, OpRequest, plan_warp
from mirrorppr_cli.ops.body_catalog import BODY_CATALOG
from mirrorppr_cli.ops.body_plan import apply_body_ops

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
ALL_OPS = [*CATALOG, *BODY_CATALOG]
#: Tiny professional build: 256² pairs, 4 pairs per portrait, 1 view each.
SMALL = ("--subset", "professional", "--size", 256, "--pairs", 4, "--augment", 1,
         "--shard-size", 2)


def _cli(*args):
    return runner.invoke(app, ["build-dataset", *(str(a) for a in args)])


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ============================================================== 1. sampling

N_DRAWS = 20000


@pytest.fixture(scope="module")
def draws() -> list[list[OpRequest]]:
    """20 000 seeded draws over the whole catalog (as for a portrait showing every part)."""
    return [sample_professional_ops(sample_rng(seed, "portrait.png", 0))
            for seed in range(N_DRAWS)]


def test_catalog_is_the_27_operations_with_the_paper_weights():
    weights = professional_catalog()
    assert list(weights) == ALL_OPS and len(CATALOG) == 22 and len(BODY_CATALOG) == 5
    assert {weights[n] for n in CATALOG} == {PRO_FACE_WEIGHT} == {3.4}
    assert {weights[n] for n in BODY_CATALOG} == {PRO_BODY_WEIGHT} == {5.0}
    assert PRO_COUNT_PERCENT == (0.2, 2.5, 18.2, 19.7, 20.1, 20.2, 19.1)


def test_op_count_follows_the_paper_table(draws):
    """χ² goodness of fit of the count of 20 000 draws to the normalised A.4 table."""
    counts = Counter(len(ops) for ops in draws)
    assert set(counts) == set(range(1, 8))
    p = np.array(PRO_COUNT_PERCENT) / sum(PRO_COUNT_PERCENT)
    expected = N_DRAWS * p
    observed = np.array([counts[c] for c in range(1, 8)])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 22.46, (chi2, counts)  # 6 degrees of freedom, 0.1 % critical value
    assert np.abs(observed / N_DRAWS - p).max() < 0.01


def test_op_types_follow_the_weights(draws):
    """Distinct ops in catalog order; each face op ≈ 3.4 %, each body op ≈ 5 % of instances
    (drawn one at a time without replacement, so slightly flatter than the weights), and
    the ops within each group equally likely."""
    instances = Counter()
    for ops in draws:
        names = [o.name for o in ops]
        assert len(set(names)) == len(names)
        assert names == sorted(names, key=ALL_OPS.index)
        instances.update(names)
    total = sum(instances.values())
    face = np.array([instances[n] for n in CATALOG]) / total
    body = np.array([instances[n] for n in BODY_CATALOG]) / total
    assert abs(face.mean() - 0.034) < 0.001 and abs(body.mean() - 0.050) < 0.003
    assert face.min() > 0.0325 and face.max() < 0.0360
    assert body.min() > 0.046 and body.max() < 0.052
    assert body.mean() / face.mean() > 1.35  # the weight ratio is 1.47
    for group in (face, body):  # χ², uniform within the group (0.1 % critical values)
        counts = group * total
        chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
        assert chi2 < (46.8 if len(group) == 22 else 18.47), chi2


def test_strengths_as_the_simulated_subset(draws):
    strengths = np.array([o.strength for ops in draws for o in ops])
    assert np.all(strengths == np.round(strengths, 2))
    magnitude = np.abs(strengths)
    lo, hi = STRENGTH_RANGE
    assert magnitude.min() >= lo and magnitude.max() <= hi
    assert abs(np.mean(strengths > 0) - 0.5) < 0.01
    hist = np.histogram(magnitude, bins=7, range=(lo, hi))[0]
    assert hist.min() > 0.9 * hist.mean()


def test_sampling_only_from_available_ops_and_reproducible():
    available = [*CATALOG, "shoulder_width", "arm_thickness"]
    for seed in range(500):
        ops = sample_professional_ops(sample_rng(seed, "a.png", 3), available)
        assert 1 <= len(ops) <= 7 and {o.name for o in ops} <= set(available)
        again = sample_professional_ops(sample_rng(seed, "a.png", 3), available)
        assert ops == again
    with pytest.raises(ValueError, match="not professional"):
        sample_professional_ops(sample_rng(0, "a.png", 0), ["eye_resize", "fly"])


# ============================================================== 2. astronaut build


def _portraits(folder: Path, astronaut: np.ndarray) -> Path:
    """Two usable half-body shots and three the filters refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    two = np.full((512, 1024, 3), 90, np.uint8)
    two[:, :512] = astronaut
    two[:, 512:] = astronaut
    images = {
        "astronaut.png": astronaut,
        "mirrored.png": astronaut[:, ::-1],
        "closeup.png": astronaut[20:230, 110:340],  # head and collar: close_up
        "two.png": two,  # several_faces
        "blank.png": np.full((200, 240, 3), 128, np.uint8),  # no_face
    }
    for name, rgb in images.items():
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def portraits(tmp_path_factory, astronaut_512) -> Path:
    return _portraits(tmp_path_factory.mktemp("pro_portraits"), astronaut_512)


@pytest.fixture(scope="module")
def pro_build(portraits, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pro") / "out"
    result = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _records(out: Path) -> list[tuple[dict, dict[str, bytes]]]:
    """(record, members of its shard) of every pair of a build."""
    found = []
    for tar in sorted((out / "shards").glob("shard-*.tar")):
        members = dict(read_members(tar))
        meta = json.loads(tar.with_suffix(".json").read_text())
        found += [(record, members) for record in meta["records"]]
    return found


def test_build_summary_counts_and_skips(pro_build):
    out, summary = pro_build
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["sources"], summary["used"], summary["pairs"], summary["quadruplets"],
            summary["shards"]) == (5, 2, 8, 8, 3)
    assert summary["skipped"] == {"close_up": 1, "no_face": 1, "several_faces": 1}
    assert summary["skipped_sources"] == {
        "blank.png": "no_face", "closeup.png": "close_up", "two.png": "several_faces"}
    assert summary["subset"] == "professional" and summary["ops_not_visible"] == 0
    records = [r for r, _ in _records(out)]
    assert summary["ops_per_pair"] == {
        str(k): v for k, v in sorted(Counter(len(r["ops"]) for r in records).items())}
    assert sum(summary["op_instances"].values()) == sum(len(r["ops"]) for r in records)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["subset"] == "professional"
    assert plan["face_filter"] == PROFESSIONAL_FACE_FILTER.to_dict()


def test_records_list_1_to_7_ops_and_body_ops_only_where_visible(pro_build):
    """Every pair lists 1–7 distinct ops of the 27; its body ops are ones the photo shows
    (never leg_slim / waist_slim on the astronaut) and each moved the outline."""
    out, _ = pro_build
    seen_body = set()
    for record, members in _records(out):
        names = [o["name"] for o in record["ops"]]
        assert 1 <= len(names) <= 7 and len(set(names)) == len(names)
        assert set(names) <= set(ALL_OPS)
        assert record["subset"] == "professional" and record["ops_skipped"] == []
        src = _rgb(members[f"{record['key']}.src.png"])
        visible = visible_body_ops(detect_body(src))
        body = [n for n in names if n in BODY_CATALOG]
        assert set(body) <= set(visible) and not {"leg_slim", "waist_slim"} & set(body)
        assert [b["name"] for b in record["body_ops"]] == body
        assert all(b["max_shift_px"] > 0.5 for b in record["body_ops"])
        seen_body.update(body)
        assert len(record["landmarks_edited"]) == 478 and len(record["body_landmarks"]) == 33
    assert seen_body, "no body operation in the whole build"


def test_edited_images_are_what_the_records_say(pro_build):
    """The target of every pair is regenerated bit for bit from its source image and the
    recorded ops alone (face ops, then body ops with strict=True: every recorded body op
    could act), and the layout is the simulated subset's (the trainer's shard index reads
    every pair with its views)."""
    from mirrorppr_cli.train.data import index_shard

    out, _ = pro_build
    for record, members in _records(out):
        key = record["key"]
        src = _rgb(members[f"{key}.src.png"])
        assert list(record["size"]) == [src.shape[1], src.shape[0]]
        assert np.array_equal(_regenerated(src, record), _rgb(members[f"{key}.tgt.png"])), key
        assert len(record["augmentations"]) == 1
    total = 0
    for tar in sorted((out / "shards").glob("shard-*.tar")):
        pairs = index_shard(tar)
        assert all(len(p.views) == 2 for p in pairs)  # the pair and one augmented view
        total += len(pairs)
    assert total == 8


def _regenerated(src: np.ndarray, record: dict) -> np.ndarray:
    """``src`` edited by the record's ``ops`` alone (face ops, then body ops, strict)."""
    face = [OpRequest(o["name"], o["strength"]) for o in record["ops"] if o["name"] in CATALOG]
    body = [OpRequest(o["name"], o["strength"]) for o in record["ops"]
            if o["name"] in BODY_CATALOG]
    edited = src
    if face:
        edited = apply_local_warp(src, plan_warp(find_faces(src)[0].points, face))
    return apply_body_ops(edited, detect_body(src), body, strict=True)


def test_sampled_body_ops_that_cannot_act_are_recorded_as_skipped(astronaut_512, tmp_path,
                                                                   monkeypatch):
    """strict=False path: a sampled body op with nothing to act on (forced here by
    claiming every body part visible) is left out of ``ops`` and of the image, and listed in
    ``ops_skipped`` as not visible; a pair left with no op at all is not written."""
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.fromarray(astronaut_512).save(folder / "astronaut.png")
    monkeypatch.setattr(P, "visible_body_ops", lambda body: list(BODY_CATALOG))
    settings = PairSettings(pairs=24, augmentations=0, area=192 * 192,
                            face_filter=PROFESSIONAL_FACE_FILTER)
    result = make_professional_samples(folder, "astronaut.png", 5, settings)
    members = dict(result.members)
    skipped = [r for r in result.records if r["ops_skipped"]]
    assert len(skipped) >= 5, "too few leg/waist ops drawn: pick another seed"
    for record in skipped:
        left_out = {s["name"] for s in record["ops_skipped"]}
        assert left_out <= {"leg_slim", "waist_slim"}
        assert {s["reason"] for s in record["ops_skipped"]} == {"not_visible"}
        assert not left_out & {o["name"] for o in record["ops"]}
        assert not left_out & {b["name"] for b in record["body_ops"]}
        src = _rgb(members[f"{record['key']}.src.png"])
        assert np.array_equal(_regenerated(src, record),
                              _rgb(members[f"{record['key']}.tgt.png"]))

    monkeypatch.setattr(P, "sample_professional_ops",
                        lambda rng, available: [OpRequest("waist_slim", 50.0)])
    assert make_professional_samples(folder, "astronaut.png", 5, settings).records == []


def test_no_body_is_a_counted_skip(portraits, tmp_path, monkeypatch):
    """Pose finding nobody skips the source as ``no_body``, counted like the other reasons."""
    import mirrorppr_cli.geometric.body as body_module

    def nobody(rgb, **_):
        raise NoPersonError("no person found")

    monkeypatch.setattr(body_module, "detect_body", nobody)
    plan = B.make_plan(portraits, subset="professional", seed=0, pairs=1, augmentations=0,
                       area=128 * 128, image_format="png", shard_size=8)
    todo = B.prepare_output(tmp_path / "out", plan, force=False)
    B.run_local(plan, tmp_path / "out", todo, 1, lambda _: None)
    summary = B.finalize(plan, tmp_path / "out")
    assert summary["skipped"] == {"no_body": 3, "no_face": 1, "several_faces": 1}
    assert summary["pairs"] == 0 and summary["ops_per_pair"] == {}


# ============================================================== 3. determinism


def test_professional_builds_are_byte_identical(portraits, pro_build, tmp_path):
    """Same seed → identical bytes in-process, and with 2 worker processes; another seed
    → other pairs."""
    ref = _files(pro_build[0])
    again = tmp_path / "again"
    assert _cli("--faces", portraits, "--out", again, *SMALL, "--seed", 0).exit_code == 0
    assert _files(again) == ref

    parallel = tmp_path / "parallel"
    proc = subprocess.run(
        [sys.executable, "-m", "mirrorppr_cli", "build-dataset", "--faces", str(portraits),
         "--out", str(parallel), *(str(a) for a in SMALL), "--seed", "0", "--workers", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert _files(parallel) == ref

    other = tmp_path / "seed1"
    assert _cli("--faces", portraits, "--out", other, *SMALL, "--seed", 1).exit_code == 0
    assert (other / "manifest.jsonl").read_bytes() != ref["manifest.jsonl"]


def test_simulated_subset_is_untouched(portraits):
    """Simulated plans keep their old plan.json (no ``subset`` key, the default filter);
    the simulated sampler still draws only the eight official ops."""
    plan = B.make_plan(portraits, seed=0, pairs=1, augmentations=1, area=256 * 256,
                       image_format="png", shard_size=2)
    data = plan.to_dict()
    assert "subset" not in data and plan.subset == "simulated"
    assert data["face_filter"] == FaceFilter().to_dict()
    assert B.BuildPlan(**data) == plan
    pro = B.make_plan(portraits, subset="professional", seed=0, pairs=1, augmentations=1,
                      area=256 * 256, image_format="png", shard_size=2)
    assert B.BuildPlan(**pro.to_dict()) == pro and pro.to_dict()["subset"] == "professional"


# ============================================================== 4. CLI


def test_cli_professional_prints_its_summary(portraits, pro_build, tmp_path):
    """Without --json: the pair counts, the skips and the op-count histogram (the build in
    the same folder is already complete: nothing is rebuilt)."""
    out, summary = pro_build
    result = _cli("--faces", portraits, "--out", out, *SMALL, "--seed", 0)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"{summary['pairs']} pairs, {summary['quadruplets']} quadruplets from 2 of 5" in text
    assert "professional subset; pairs by operation count:" in text
    assert "skipped: close_up 1, no_face 1, several_faces 1" in text


@pytest.mark.parametrize("value", ["pro", "expert", "Professional"])
def test_cli_refuses_unknown_subsets(portraits, tmp_path, value):
    out = tmp_path / "out"
    result = _cli("--faces", portraits, "--out", out, "--subset", value)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert value in text and "simulated, professional" in text
    assert not out.exists()

