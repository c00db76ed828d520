"""Face landmarks: MediaPipe face mesh (478 refined points) behind a face detector.

Coordinates are ``(x, y)`` pixels of the full image with pixel centres at integers (the
convention of :mod:`mirrorppr_cli.geometric.mls`). MediaPipe's normalised coordinates put 0 and 1 at
the image *edges*, so ``x_px = x_norm · W − 0.5``.

Pipeline: two MediaPipe face detectors (short- and full-range) propose face boxes; each box
is expanded, cropped and rescaled so the mesh sees the face large whatever its size in the
frame (half- and full-body portraits, group photos), the mesh runs on the crop, and its
points are mapped back. If no detector fires, the mesh runs on the whole image as a last
resort. Faces are returned largest first.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from .. import native_stderr
from ..errors import InputError, NoFaceError

# MediaPipe's C++ side logs warnings to stderr through glog/absl; keep the CLI's output clean.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_POINTS = 478
#: Side, in pixels, that face crops are resized to before the mesh runs.
MESH_CROP_SIDE = 512
#: A face box is expanded by this factor (about its centre) before cropping for the mesh.
CROP_EXPANSION = 1.8
#: Boxes overlapping more than this (intersection over union) are the same face.
SAME_FACE_IOU = 0.4
MIN_DETECTION_CONFIDENCE = 0.6
#: When no face box is larger than this fraction of the image's short side, the full-range
#: detector also runs on 2×2 overlapping tiles (it sees the image at 192², where small
#: faces in group or full-body shots vanish).
TILE_WHEN_FACES_BELOW = 0.2
TILE_FRACTION = 0.6
#: Images with a shorter side than this, or sides more than :data:`MAX_DETECT_ASPECT` to 1
#: apart, are not given to the detectors: no face can be found in them. Measured with the
#: astronaut's face cropped tightly (1.4-2× its box) and shrunk: the detectors and the mesh
#: find it down to an 18 px image, never at 17 px or below; 16 keeps a margin below that, so
#: no image in which a face could be found is refused. (Below 2 px the full-range detector's
#: tiles are empty and MediaPipe fails with a RuntimeError instead of finding nothing.)
MIN_DETECT_SIDE = 16
#: The detectors letterbox an image into a square input (128² and 192²), so in a long strip a
#: face that fills the short side shrinks with the aspect ratio. Measured with that face in
#: strips 64 and 256 px high, at the start, middle and end, wide and tall: found in some
#: placements up to 18:1, in none at 20:1, 24:1 or 32:1.
MAX_DETECT_ASPECT = 20
#: MediaPipe 0.10.21 aborts the whole process (SIGABRT, no exception) when any of its graphs
#: (face detectors, mesh, pose) is given an image with a side of 32767 pixels or more; found
#: by the fuzz harness (a JPEG whose flipped header byte declared 64×55864), bisected to
#: 32766 ok, 32767 abort, for any width.
MAX_DETECT_SIDE = 32766

_lock = threading.Lock()  # MediaPipe graphs are not re-entrant


def _native_stderr_silenced():
    """Silence file descriptor 2 while a MediaPipe graph runs.

    MediaPipe's native code prints start-up notices (XNNPACK, absl warnings) straight to fd 2,
    before any logging flag can take effect, and some subgraphs start only on a later run
    (the iris refinement, when a face is first found); they mean nothing to a user. The swap
    is shared with the image readers' (:mod:`mirrorppr_cli.native_stderr`).
    """
    return native_stderr.silenced()


def _run(graph, rgb: np.ndarray):
    """``graph.process(rgb)`` under the lock, quietly.

    Every MediaPipe graph goes through here (the pose graph of :mod:`.body` too), so this is
    where an image that would abort the process or fail inside MediaPipe is refused
    (:class:`InputError`): an empty one, or one with a side over :data:`MAX_DETECT_SIDE`.
    """
    height, width = rgb.shape[:2]
    if min(height, width) < 1 or max(height, width) > MAX_DETECT_SIDE:
        check_detectable(width, height)  # raises: too small (empty) or too large
    with _lock, _native_stderr_silenced():
        return graph.process(rgb)


def _undetectable_why(width: int, height: int) -> str | None:
    short, long = sorted((int(width), int(height)))
    if short < MIN_DETECT_SIDE:
        return (f"too small for the face and body detectors (they need at least "
                f"{MIN_DETECT_SIDE}×{MIN_DETECT_SIDE}); pass the full-size photo")
    if long > MAX_DETECT_SIDE:
        return (f"too large for the face and body detectors (at most {MAX_DETECT_SIDE} pixels "
                "a side); pass a smaller copy")
    if long > MAX_DETECT_ASPECT * short:
        return (f"too thin for the face and body detectors (sides at most {MAX_DETECT_ASPECT}:1 "
                "apart); crop it closer to the person")
    return None


def detectable(width: int, height: int) -> bool:
    """Whether an image of ``width`` × ``height`` pixels can be given to the detectors: see
    :data:`MIN_DETECT_SIDE`, :data:`MAX_DETECT_ASPECT` and :data:`MAX_DETECT_SIDE`."""
    return _undetectable_why(width, height) is None


def check_detectable(width: int, height: int, name: str = "image") -> None:
    """:class:`InputError` (exit 3), one line naming ``name`` and saying what is wrong,
    unless :func:`detectable`."""
    why = _undetectable_why(width, height)
    if why is not None:
        raise InputError(f"{name}: {width}×{height} pixels is {why}")


@dataclass(frozen=True, eq=False)  # identity semantics: faces hold arrays
class Face:
    """One face: 478 landmarks and the detector box it came from.

    Attributes:
        points: ``(478, 2)`` float64 ``(x, y)`` pixel coordinates in the full image.
        depth: ``(478,)`` float64 relative depth (MediaPipe z, in pixels of the crop scale).
        box: ``(x0, y0, x1, y1)`` face box in pixels.
    """

    points: np.ndarray
    depth: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def size(self) -> float:
        """Geometric mean of the box sides, in pixels."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0)))


@cache
def _detector(model_selection: int):
    import mediapipe as mp

    with _native_stderr_silenced():
        return mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=MIN_DETECTION_CONFIDENCE
        )


@cache
def _mesh(max_faces: int):
    import mediapipe as mp

    with _native_stderr_silenced():
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            refine_landmarks=True,
            max_num_faces=max_faces,
            min_detection_confidence=MIN_DETECTION_CONFIDENCE,
        )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _detections(rgb: np.ndarray, model: int, offset=(0.0, 0.0)) -> list[tuple[float, np.ndarray]]:
    """``(score, box)`` pairs from one MediaPipe detector; boxes offset into the full image."""
    height, width = rgb.shape[:2]
    result = _run(_detector(model), np.ascontiguousarray(rgb))
    found = []
    for det in result.detections or []:
        rel = det.location_data.relative_bounding_box
        x0 = rel.xmin * width + offset[0]
        y0 = rel.ymin * height + offset[1]
        box = np.array([x0, y0, x0 + rel.width * width, y0 + rel.height * height])
        found.append((float(det.score[0]), box))
    return found


def detect_face_boxes(rgb: np.ndarray) -> list[np.ndarray]:
    """Face boxes ``(x0, y0, x1, y1)`` in pixels from MediaPipe's detectors, merged.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.

    Returns:
        Boxes sorted by descending score; duplicates (IoU > :data:`SAME_FACE_IOU`) removed;
        none for an image too small, too thin or too large for the detectors
        (:func:`detectable`).
    """
    height, width = rgb.shape[:2]
    if not detectable(width, height):
        return []
    found = _detections(rgb, 0) + _detections(rgb, 1)
    largest = max((max(b[2] - b[0], b[3] - b[1]) for _, b in found), default=0.0)
    th, tw = int(height * TILE_FRACTION), int(width * TILE_FRACTION)
    if largest < TILE_WHEN_FACES_BELOW * min(height, width) and min(th, tw) > 0:
        for y0 in (0, height - th):
            for x0 in (0, width - tw):
                tile = rgb[y0 : y0 + th, x0 : x0 + tw]
                found += _detections(tile, 1, offset=(float(x0), float(y0)))
    found.sort(key=lambda item: -item[0])
    kept: list[np.ndarray] = []
    for _, box in found:
        if all(_iou(box, other) <= SAME_FACE_IOU for other in kept):
            kept.append(box)
    return kept


def _mesh_points(rgb: np.ndarray, max_faces: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the mesh on ``rgb``; return ``(points (478,2) px, depth (478,))`` per face found."""
    height, width = rgb.shape[:2]
    result = _run(_mesh(max_faces), rgb)
    faces = []
    for lm in result.multi_face_landmarks or []:
        arr = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float64)
        pts = np.stack([arr[:, 0] * width - 0.5, arr[:, 1] * height - 0.5], axis=1)
        faces.append((pts, arr[:, 2] * width))
    return faces


def _crop_transform(box: np.ndarray) -> tuple[np.ndarray, float]:
    """Square crop about ``box`` → ``(2×3 affine from image pixels to crop pixels, scale)``.

    With pixel centres at integers, image edge-coordinate ``X = x + 0.5`` maps to crop
    edge-coordinate ``(X − x0)·scale``, hence ``j = (x + 0.5 − x0)·scale − 0.5``.
    """
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = CROP_EXPANSION * max(box[2] - box[0], box[3] - box[1])
    scale = MESH_CROP_SIDE / side
    x0, y0 = cx - side / 2, cy - side / 2
    affine = np.array(
        [[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]]
    )
    return affine, scale


def _mesh_in_box(rgb: np.ndarray, box: np.ndarray) -> Face | None:
    """Mesh the face inside ``box`` through an up- or down-scaled square crop."""
    affine, scale = _crop_transform(box)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(
        rgb, affine, (MESH_CROP_SIDE, MESH_CROP_SIDE), flags=interp, borderMode=cv2.BORDER_CONSTANT
    )
    found = _mesh_points(crop, max_faces=1)
    if not found:
        return None
    pts, depth = found[0]
    inverse = cv2.invertAffineTransform(affine)
    full = pts @ inverse[:, :2].T + inverse[:, 2]
    return Face(points=full, depth=depth / scale, box=_points_box(full))


def mesh_face_at(rgb: np.ndarray, points: np.ndarray) -> Face | None:
    """The face meshed where ``points`` (``(478, 2)`` px, a face found in another photo of the
    same framing, e.g. an edit's *before*) lie in ``rgb``, without running the detectors;
    None when the mesh finds no face there."""
    return _mesh_in_box(np.ascontiguousarray(rgb), np.array(_points_box(points)))


def _points_box(points: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def find_faces(rgb: np.ndarray) -> list[Face]:
    """All faces in ``rgb`` (``(H, W, 3)`` uint8 RGB), each with 478 landmarks, largest first.

    Deterministic: the same pixels give the same points. An image too small, too thin or too
    large for the detectors (:func:`detectable`) has no faces; :func:`check_detectable` says
    why.
    """
    rgb = np.ascontiguousarray(rgb)
    if not detectable(rgb.shape[1], rgb.shape[0]):
        return []
    faces: list[Face] = []
    for box in detect_face_boxes(rgb):
        face = _mesh_in_box(rgb, box)
        if face is None:
            continue
        mesh_box = np.array(face.box)
        if all(_iou(mesh_box, np.array(other.box)) <= SAME_FACE_IOU for other in faces):
            faces.append(face)
    if not faces:
        for pts, depth in _mesh_points(rgb, max_faces=1):
            faces.append(Face(points=pts, depth=depth, box=_points_box(pts)))
    faces.sort(key=lambda f: -f.size)
    return faces


def select_face(faces: list[Face], index: int | None, *, name: str) -> Face:
    """The face to edit: ``index`` (0 = largest) or the largest; clear errors otherwise."""
    if not faces:
        raise NoFaceError(
            f"{name}: no face found; use a photo where the face is visible and at least "
            "about 40 px wide"
        )
    chosen = 0 if index is None else index
    if not 0 <= chosen < len(faces):
        raise NoFaceError(
            f"{name}: --face {index} asked for, but {len(faces)} face(s) were found "
            f"(numbered 0 to {len(faces) - 1}, largest first)"
        )
    return faces[chosen]
