"""Face Similarity: the dlib substitute on real faces, the official retry and loading rules.

Real faces come from dependencies: the astronaut (scikit-image) and Grace Hopper (matplotlib's
sample data; matplotlib is a dependency of mediapipe). ArcFace weights are not available
offline, so its path runs against a fake of insightface's ``FaceAnalysis`` interface.

Thresholds for the dlib substitute, from measurements on this machine (dlib-bin 20.0.1):
copies of the astronaut score ≥ 0.99 (JPEG q75 0.998, a 3-px local warp of the face 0.994,
half-size prediction 0.991); eleven real portraits of ten people score 0.77–0.91 between
different people and 0.90–0.97 between photos of the same person; the astronaut against Grace
Hopper scores 0.88, against herself with Grace's face pasted in 0.885. So "different person"
is asserted as < 0.93 and "retouched copy" as > 0.95.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from mirrorppr_cli.errors import MissingWeightsError
from mirrorppr_cli.metrics import face_similarity as fs
from mirrorppr_cli.metrics.face_similarity import (
    ARCFACE_ENV,
    ARCFACE_NAME,
    DLIB_NAME,
    FaceEmbedder,
    FaceSimilarityScores,
    embed_with_padding_retry,
    face_similarity,
    load_embedder,
)

# dlib's box of the astronaut's face (left, top, right, bottom), and Grace Hopper's.
ASTRONAUT_FACE = (175, 76, 265, 166)
GRACE_FACE = (180, 139, 366, 325)
COPY_MIN, OTHER_PERSON_MAX = 0.95, 0.93


@pytest.fixture(scope="module")
def dlib_embedder() -> FaceEmbedder:
    return load_embedder("dlib")


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    from matplotlib import cbook

    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _local_warp(rgb: np.ndarray, centre: tuple[float, float], shift: tuple[float, float]) -> np.ndarray:
    """A retouch-like edit: a Gaussian bump (σ = 30 px) of displacement around ``centre``."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 30.0**2)).astype(np.float32)
    return cv2.remap(rgb, xx - shift[0] * g, yy - shift[1] * g, cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- dlib substitute


def test_same_image_scores_one(dlib_embedder, astronaut_512):
    assert face_similarity(dlib_embedder, astronaut_512, astronaut_512) > 0.999


def test_retouched_copies_stay_high(dlib_embedder, astronaut_512):
    left, top, right, bottom = ASTRONAUT_FACE
    warped = _local_warp(astronaut_512, ((left + right) / 2, (top + bottom) / 2), (3.0, 2.0))
    assert np.abs(warped.astype(int) - astronaut_512).max() > 50  # the edit is real
    half = cv2.resize(astronaut_512, (256, 256), interpolation=cv2.INTER_AREA)
    values = {
        "jpeg75": face_similarity(dlib_embedder, _jpeg(astronaut_512, 75), astronaut_512),
        "warp": face_similarity(dlib_embedder, warped, astronaut_512),
        "half-size": face_similarity(dlib_embedder, half, astronaut_512),
        "half-size resized": face_similarity(dlib_embedder, half, astronaut_512, match_truth_size=True),
    }
    assert all(v is not None and COPY_MIN < v < 1.0 for v in values.values()), values


def test_another_person_scores_lower_than_a_copy(dlib_embedder, astronaut_512, grace):
    copy = face_similarity(dlib_embedder, _jpeg(astronaut_512, 75), astronaut_512)
    other = face_similarity(dlib_embedder, grace, astronaut_512)
    # The astronaut's body and background with Grace Hopper's face pasted over hers.
    left, top, right, bottom = ASTRONAUT_FACE
    gl, gt, gr, gb = GRACE_FACE
    swapped = astronaut_512.copy()
    swapped[top:bottom, left:right] = cv2.resize(
        grace[gt:gb, gl:gr], (right - left, bottom - top), interpolation=cv2.INTER_AREA
    )
    pasted = face_similarity(dlib_embedder, swapped, astronaut_512)
    assert other is not None and pasted is not None
    assert other < OTHER_PERSON_MAX and pasted < OTHER_PERSON_MAX
    assert max(other, pasted) < copy - 0.05


def test_no_face_gives_none(dlib_embedder, astronaut_512):
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert dlib_embedder.embed(noise) is None
    assert embed_with_padding_retry(dlib_embedder, noise) is None
    assert face_similarity(dlib_embedder, noise, astronaut_512) is None
    assert face_similarity(dlib_embedder, astronaut_512, noise) is None


def test_padding_retry_finds_a_tightly_cropped_face(dlib_embedder, astronaut_512):
    left, top, right, bottom = ASTRONAUT_FACE
    crop = np.ascontiguousarray(astronaut_512[top - 27 : bottom + 27, left + 9 : right - 9])  # cheeks cut off
    assert dlib_embedder.embed(crop) is None
    padded = embed_with_padding_retry(dlib_embedder, crop)
    assert padded is not None
    assert float(padded @ dlib_embedder.embed(astronaut_512)) > COPY_MIN


def test_dlib_takes_the_highest_scoring_face(dlib_embedder, astronaut_512):
    # HOG also fires weakly on the astronaut's flag patch (lower left); the face must win.
    masked = astronaut_512.copy()
    masked[300:470, 100:250] = 0
    e_full, e_masked = dlib_embedder.embed(astronaut_512), dlib_embedder.embed(masked)
    assert float(e_full @ e_masked) > 0.999


def test_embedding_is_unit_norm_and_inputs_are_checked(dlib_embedder, astronaut_512):
    e = dlib_embedder.embed(astronaut_512)
    assert e.shape == (128,) and np.linalg.norm(e) == pytest.approx(1.0)
    as_float = dlib_embedder.embed(astronaut_512.astype(np.float32) / 255.0)
    assert np.allclose(as_float, e)
    with pytest.raises(ValueError, match="H, W, 3"):
        dlib_embedder.embed(astronaut_512[..., 0])


# --------------------------------------------------------------------------- the official rules


def test_retry_pads_a_quarter_of_black_on_each_side():
    image = np.full((30, 50, 3), 200, np.uint8)
    seen: list[np.ndarray] = []

    def finder(rgb):
        seen.append(rgb.copy())
        return [] if len(seen) == 1 else [(1.0, np.array([3.0, 4.0]))]

    emb = embed_with_padding_retry(FaceEmbedder("fake", finder), image)
    assert np.allclose(emb, [0.6, 0.8])
    assert len(seen) == 2 and np.array_equal(seen[0], image)
    padded = seen[1]
    dy, dx = 7, 12  # int(0.25 · 30), int(0.25 · 50), as the official code truncates
    assert padded.shape == (30 + 2 * dy, 50 + 2 * dx, 3)
    assert np.array_equal(padded[dy:-dy, dx:-dx], image)
    border = padded.copy()
    border[dy:-dy, dx:-dx] = 0
    assert not border.any()


def test_no_retry_when_the_first_call_finds_a_face():
    calls = []
    embedder = FaceEmbedder("fake", lambda rgb: calls.append(rgb.shape) or [(1.0, np.ones(4))])
    embed_with_padding_retry(embedder, np.zeros((20, 20, 3), np.uint8))
    assert calls == [(20, 20, 3)]


def test_first_of_the_highest_scores_is_used():
    faces = [(0.7, np.array([1.0, 0.0])), (0.9, np.array([0.0, 2.0])), (0.9, np.array([5.0, 0.0]))]
    assert np.allclose(FaceEmbedder("fake", lambda rgb: faces).embed(np.zeros((4, 4, 3), np.uint8)), [0, 1])


def test_prediction_is_resized_only_when_asked():
    shapes = []

    def finder(rgb):
        shapes.append(rgb.shape[:2])
        return [(1.0, np.ones(3))]

    embedder = FaceEmbedder("fake", finder)
    pred, truth = np.zeros((40, 30, 3), np.uint8), np.zeros((80, 60, 3), np.uint8)
    assert face_similarity(embedder, pred, truth) == pytest.approx(1.0)
    assert shapes == [(80, 60), (40, 30)]
    shapes.clear()
    face_similarity(embedder, pred, truth, match_truth_size=True)
    assert shapes == [(80, 60), (80, 60)]


def test_report_prints_the_embedders_name_and_counts_invalid_items(dlib_embedder, astronaut_512):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    scores = FaceSimilarityScores(model=dlib_embedder.name)
    scores.add(dlib_embedder, astronaut_512, astronaut_512)
    scores.add(dlib_embedder, noise, astronaut_512)
    summary = scores.summary()
    assert summary["identity_model"] == dlib_embedder.name == DLIB_NAME
    assert "not ArcFace" in summary["identity_model"]
    assert summary["valid_identity_samples"] == 1 and summary["invalid_identity_samples"] == 1
    assert summary["average_identity_similarity_edited"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot take"):
        scores.add(FaceEmbedder(ARCFACE_NAME, lambda rgb: []), astronaut_512, astronaut_512)


# --------------------------------------------------------------------------- loading


class FakeFaceAnalysis:
    """insightface's ``FaceAnalysis`` interface, recording how it is driven."""

    instances: list[FakeFaceAnalysis] = []
    faces: list = []
    fail: Exception | None = None

    def __init__(self, name="buffalo_l", root="~/.insightface", allowed_modules=None, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.name, self.root, self.allowed_modules, self.kwargs = name, root, allowed_modules, kwargs
        self.prepared: dict = {}
        self.images: list[np.ndarray] = []
        FakeFaceAnalysis.instances.append(self)

    def prepare(self, ctx_id, det_thresh=0.5, det_size=None):
        self.prepared = {"ctx_id": ctx_id, "det_size": det_size}

    def get(self, img, max_num=0):
        self.images.append(img.copy())
        return list(self.faces)


@pytest.fixture
def fake_insightface(monkeypatch):
    FakeFaceAnalysis.instances, FakeFaceAnalysis.faces, FakeFaceAnalysis.fail = [], [], None
    package, app = types.ModuleType("insightface"), types.ModuleType("insightface.app")
    app.FaceAnalysis = FakeFaceAnalysis
    package.app = app
    monkeypatch.setitem(sys.modules, "insightface", package)
    monkeypatch.setitem(sys.modules, "insightface.app", app)
    return FakeFaceAnalysis


@pytest.fixture
def no_default_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ARCFACE_ENV, raising=False)


def _weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in fs.ARCFACE_FILES:
        (folder / name).write_bytes(b"onnx")
    return folder


@pytest.mark.parametrize("layout", ["models/buffalo_l", "buffalo_l", "."])
def test_arcface_loads_each_layout_without_downloading(fake_insightface, no_default_weights, tmp_path, layout):
    models = _weights(tmp_path / "w" / layout)
    embedder = load_embedder("arcface", arcface_dir=tmp_path / "w")
    assert embedder.name == ARCFACE_NAME
    (app,) = fake_insightface.instances
    # An existing absolute folder: insightface loads it as is and never downloads.
    assert Path(app.name).is_absolute() and Path(app.name) == models.resolve()
    assert set(app.allowed_modules) == {"detection", "recognition"}
    assert app.prepared == {"ctx_id": -1, "det_size": (640, 640)}


def test_arcface_feeds_bgr_and_takes_the_first_face(fake_insightface, no_default_weights, tmp_path):
    _weights(tmp_path / "models" / "buffalo_l")
    embedder = load_embedder("arcface", arcface_dir=tmp_path)
    e_first, e_second = np.zeros(512), np.zeros(512)
    e_first[0], e_second[1] = 1.0, 1.0
    fake_insightface.faces = [  # as insightface lists them: by falling detection score
        types.SimpleNamespace(det_score=0.9, bbox=np.array([0, 0, 10, 10.0]), normed_embedding=e_first),
        types.SimpleNamespace(det_score=0.6, bbox=np.array([0, 0, 90, 90.0]), normed_embedding=e_second),
    ]
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # red
    assert np.array_equal(embedder.embed(rgb), e_first)
    (app,) = fake_insightface.instances
    assert app.images[0][0, 0].tolist() == [0, 0, 255]  # BGR


def test_arcface_with_an_empty_folder_names_what_to_get(fake_insightface, no_default_weights, tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        load_embedder("arcface", arcface_dir=tmp_path)
    message = str(info.value)
    assert "buffalo_l" in message and "--arcface-dir" in message and "\n" not in message
    assert info.value.exit_code == 5 and not fake_insightface.instances


def test_arcface_without_insightface_says_how_to_install(monkeypatch, no_default_weights, tmp_path):
    _weights(tmp_path / "buffalo_l")
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(MissingWeightsError, match=r"pip install .mirrorppr\[arcface\]."):
        load_embedder("arcface", arcface_dir=tmp_path)


def test_arcface_weights_that_fail_to_load_are_reported(fake_insightface, no_default_weights, tmp_path):
    _weights(tmp_path / "buffalo_l")
    fake_insightface.fail = RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF\nmore")
    with pytest.raises(MissingWeightsError, match="could not be loaded .*INVALID_PROTOBUF") as info:
        load_embedder("arcface", arcface_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_auto_without_arcface_weights_is_the_dlib_substitute(fake_insightface, no_default_weights):
    embedder = load_embedder("auto")
    assert embedder.name == DLIB_NAME and "not ArcFace" in embedder.name
    assert not fake_insightface.instances


def test_auto_finds_arcface_through_the_environment_or_home(fake_insightface, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ARCFACE_ENV, str(_weights(tmp_path / "env" / "buffalo_l").parent))
    assert load_embedder("auto").name == ARCFACE_NAME
    monkeypatch.delenv(ARCFACE_ENV)
    _weights(tmp_path / "home" / ".insightface" / "models" / "buffalo_l")
    assert load_embedder().name == ARCFACE_NAME


def test_auto_with_a_named_folder_lacking_weights_does_not_fall_back(no_default_weights, tmp_path):
    with pytest.raises(MissingWeightsError, match="--arcface-dir"):
        load_embedder("auto", arcface_dir=tmp_path)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown face embedder"):
        load_embedder("facenet")
