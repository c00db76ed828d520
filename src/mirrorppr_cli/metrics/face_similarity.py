"""Face Similarity (identity preservation) with the official evaluation's conventions.

The paper's number is ArcFace: insightface ``FaceAnalysis(name="buffalo_l")`` (SCRFD-10GF
detector + ResNet50 WebFace600K recogniser), ``prepare(ctx_id, det_size=(640, 640))``, as the
official ``mirrorppr/eval/evaluate.py`` does it:

* each image is embedded separately, as given (8-bit; insightface is fed OpenCV's BGR order);
  the prediction is **not** resized to the ground truth for this metric (only the pixel metrics
  resize it) — ``match_truth_size=True`` resizes it bilinearly first, as
  :func:`mirrorppr_cli.metrics.pixel.match_size` does;
* of several faces, the one the detector lists first is used: insightface sorts detections by
  confidence, so that is the highest-scoring face (not necessarily the largest);
* if no face is found, the image is padded with black on every side, ``int(0.25 · H)`` rows above
  and below and ``int(0.25 · W)`` columns left and right, and tried once more;
* the similarity of a pair is the cosine of the two embeddings. A pair where either image has no
  face even after padding has no value (``None``): it is *invalid* — counted in the total, left
  out of the mean — and a set's value is the mean over its valid pairs.

ArcFace weights ship in no package (insightface downloads ``buffalo_l.zip`` at run time), so an
offline substitute exists: dlib's 128-d ResNet face embedding (``dlib-bin`` +
``face-recognition-models``; HOG detector upsampled once, highest-scoring face, 5-point
alignment, no jitter). Its cosines are **not comparable with ArcFace numbers**: two different
people already score 0.77–0.91 with it, the same person in another photo 0.90–0.97. Every
embedder carries a ``name``; every report must print it next to the number.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import MissingWeightsError
from ..extras import missing_extra, missing_module
from .pixel import match_size, to_unit_float

ARCFACE_NAME = "arcface-buffalo_l"
DLIB_NAME = "dlib-resnet-128 (substitute, not ArcFace)"

PAD_FRACTION = 0.25
ARCFACE_DET_SIZE = (640, 640)
ARCFACE_FILES = ("det_10g.onnx", "w600k_r50.onnx")  # buffalo_l's detector and recogniser
ARCFACE_ENV = "MIRRORPPR_ARCFACE_DIR"
ARCFACE_ZIP_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip"
DLIB_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")

#: ``rgb (H, W, 3) uint8 → [(detection score, embedding), …]`` for every face found.
FaceFinder = Callable[[np.ndarray], Sequence[tuple[float, np.ndarray]]]


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB → contiguous uint8 (other integers scaled by their max, floats in [0, 1])."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(to_unit_float(arr), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class FaceEmbedder:
    """A face recogniser: ``name`` (printed in every report) and a face finder."""

    name: str
    find_faces: FaceFinder = field(repr=False, compare=False)

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """Unit-norm embedding (float64) of the highest-scoring face in ``rgb`` (the first of
        equals), or ``None`` when there is no face."""
        faces = [(score, emb) for score, emb in self.find_faces(as_rgb_uint8(rgb)) if emb is not None]
        if not faces:
            return None
        _, emb = max(faces, key=lambda face: face[0])
        emb = np.asarray(emb, dtype=np.float64).ravel()
        norm = float(np.linalg.norm(emb))
        return emb / norm if norm > 0 else None


def pad_black(rgb: np.ndarray, fraction: float = PAD_FRACTION) -> np.ndarray:
    """``rgb`` with ``int(fraction · H)`` black rows above and below and ``int(fraction · W)``
    black columns left and right (the official retry's border)."""
    h, w = rgb.shape[:2]
    dy, dx = int(h * fraction), int(w * fraction)
    return cv2.copyMakeBorder(rgb, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def embed_with_padding_retry(embedder: FaceEmbedder, rgb: np.ndarray) -> np.ndarray | None:
    """The official retry: embed ``rgb``; if no face is found, embed it padded 25 % black."""
    rgb = as_rgb_uint8(rgb)
    emb = embedder.embed(rgb)
    if emb is None:
        emb = embedder.embed(pad_black(rgb))
    return emb


def face_similarity(
    embedder: FaceEmbedder,
    prediction_rgb: np.ndarray,
    truth_rgb: np.ndarray,
    *,
    match_truth_size: bool = False,
) -> float | None:
    """Cosine similarity of the faces of prediction and ground truth; ``None`` when either
    image has no face even after the padding retry (an invalid item).

    The official metric embeds both images at their own size; ``match_truth_size=True`` first
    resizes the prediction bilinearly to the ground truth (the pixel metrics' convention).
    """
    truth = as_rgb_uint8(truth_rgb)
    prediction = as_rgb_uint8(prediction_rgb)
    if match_truth_size:
        prediction = match_size(prediction, truth)
    e_truth = embed_with_padding_retry(embedder, truth)
    if e_truth is None:
        return None
    e_pred = embed_with_padding_retry(embedder, prediction)
    if e_pred is None:
        return None
    return float(np.dot(e_pred, e_truth))


@dataclass
class FaceSimilarityScores:
    """Accumulates a set: every item's value (``None`` = invalid), the mean over valid items."""

    model: str
    values: list[float | None] = field(default_factory=list)

    def add(
        self,
        embedder: FaceEmbedder,
        prediction: np.ndarray,
        truth: np.ndarray,
        *,
        match_truth_size: bool = False,
    ) -> float | None:
        """Score one pair with ``embedder`` (which must be this set's model); returns its value."""
        if embedder.name != self.model:
            raise ValueError(f"scores of {self.model!r} cannot take values of {embedder.name!r}")
        value = face_similarity(embedder, prediction, truth, match_truth_size=match_truth_size)
        self.values.append(value)
        return value

    @property
    def valid(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def mean(self) -> float:
        valid = self.valid
        return float(np.mean(valid)) if valid else float("nan")

    def summary(self) -> dict[str, object]:
        """The official summary keys, plus the model that produced the number."""
        return {
            "identity_model": self.model,
            "valid_identity_samples": len(self.valid),
            "invalid_identity_samples": len(self.values) - len(self.valid),
            "average_identity_similarity_edited": self.mean,
        }


# --------------------------------------------------------------------------- loading


def _arcface_missing(where: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"ArcFace weights (insightface buffalo_l: {', '.join(ARCFACE_FILES)}) not found {where}: "
        f"download buffalo_l.zip from the insightface model zoo ({ARCFACE_ZIP_URL}, or "
        f"`insightface-cli model.download buffalo_l --root DIR`), unzip it to "
        f"DIR/models/buffalo_l/ (or DIR/buffalo_l/) and pass --arcface-dir DIR "
        f"(or set {ARCFACE_ENV}=DIR)"
    )


def find_arcface_models(arcface_dir: Path) -> Path | None:
    """The folder holding buffalo_l's ``*.onnx``: ``DIR/models/buffalo_l``, ``DIR/buffalo_l``
    or ``DIR`` itself, whichever has all of :data:`ARCFACE_FILES`; ``None`` if none has."""
    base = Path(arcface_dir).expanduser()
    for candidate in (base / "models" / "buffalo_l", base / "buffalo_l", base):
        if all((candidate / f).is_file() for f in ARCFACE_FILES):
            return candidate.resolve()
    return None


def _default_arcface_dir() -> Path:
    return Path.home() / ".insightface"


def _arcface_embedder(model_dir: Path, ctx_id: int) -> FaceEmbedder:
    try:
        from insightface.app import FaceAnalysis
    except ImportError as exc:
        raise missing_extra("arcface", "ArcFace face similarity",
                            (exc.name or "insightface").partition(".")[0]) from exc
    providers = ["CPUExecutionProvider"] if ctx_id < 0 else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        # An existing absolute folder as ``name``: insightface 2.x loads it directly, 0.7.x joins
        # it onto root/models (an absolute path wins), so neither downloads anything.
        app = FaceAnalysis(
            name=str(model_dir),
            root=str(model_dir.parent),
            allowed_modules=["detection", "recognition"],
            providers=providers,
        )
        app.prepare(ctx_id=ctx_id, det_size=ARCFACE_DET_SIZE)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MissingWeightsError(
            f"ArcFace weights in {model_dir} could not be loaded ({type(exc).__name__}: {first}); "
            f"re-download buffalo_l.zip ({ARCFACE_ZIP_URL}) and pass --arcface-dir"
        ) from exc

    def find(rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # insightface takes OpenCV's BGR
        # ``app.get`` lists faces by falling detection score; the official metric takes the first.
        return [(float(face.det_score), face.normed_embedding) for face in app.get(bgr)]

    return FaceEmbedder(ARCFACE_NAME, find)


def _dlib_embedder() -> FaceEmbedder:
    try:
        import dlib
    except ImportError as exc:
        raise missing_extra("face", "the dlib face embedding", "dlib") from exc
    # Locate the model files without importing face_recognition_models (its __init__ imports
    # the deprecated pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(spec.origin).parent / "models" if spec and spec.origin else None
    if models is None or not all((models / f).is_file() for f in DLIB_FILES):
        raise missing_extra("face", "the dlib face embedding",
                            f"face-recognition-models with {', '.join(DLIB_FILES)}")
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(models / DLIB_FILES[0]))
    recogniser = dlib.face_recognition_model_v1(str(models / DLIB_FILES[1]))

    def find(rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        rects, scores, _ = detector.run(rgb, 1, 0.0)  # upsampled once, default threshold
        if not rects:
            return []
        best = int(np.argmax(scores))
        descriptor = recogniser.compute_face_descriptor(rgb, shapes(rgb, rects[best]))
        return [(float(scores[best]), np.array(descriptor))]

    return FaceEmbedder(DLIB_NAME, find)


def load_embedder(
    kind: str = "auto", arcface_dir: Path | None = None, *, ctx_id: int = -1
) -> FaceEmbedder:
    """The face embedder for ``kind``:

    * ``"arcface"``: insightface buffalo_l from ``arcface_dir`` (else ``$MIRRORPPR_ARCFACE_DIR``,
      else ``~/.insightface``); ``ctx_id`` -1 runs on the CPU, 0 on the first GPU.
    * ``"dlib"``: the offline substitute (not comparable with ArcFace).
    * ``"auto"``: ArcFace when its weights are found, else dlib. A folder named explicitly
      (``arcface_dir`` or the environment variable) must hold the weights; only the default
      ``~/.insightface`` is probed silently.

    Raises :class:`MissingWeightsError` (one line, saying what to get and how).
    """
    if kind not in ("auto", "arcface", "dlib"):
        raise ValueError(f"unknown face embedder {kind!r} (auto, arcface, dlib)")
    if kind == "dlib":
        return _dlib_embedder()
    if kind == "arcface" and missing_module("arcface", ("insightface",)) is not None:
        # Say the package first: without it the weights alone are of no use.
        raise missing_extra("arcface", "ArcFace face similarity", "insightface")

    env = os.environ.get(ARCFACE_ENV)
    if arcface_dir is not None:
        explicit: Path | None = Path(arcface_dir)
        where = f"in {explicit} (--arcface-dir)"
    elif env:
        explicit = Path(env)
        where = f"in {explicit} (${ARCFACE_ENV})"
    else:
        explicit = None
        where = f"in {_default_arcface_dir()}"
    model_dir = find_arcface_models(explicit if explicit is not None else _default_arcface_dir())
    if model_dir is None:
        if kind == "arcface" or explicit is not None:
            raise _arcface_missing(where)
        return _dlib_embedder()
    return _arcface_embedder(model_dir, ctx_id)
