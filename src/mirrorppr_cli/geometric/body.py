"""Body landmarks and person mask: MediaPipe pose (33 points) with its segmentation mask.

Coordinates are ``(x, y)`` pixels of the full image, ``x`` to the right and ``y`` down, with
pixel centres at integers (the convention of :mod:`mirrorppr_cli.geometric.mls`); MediaPipe's normalised
coordinates put 0 and 1 at the image *edges*, so ``x_px = x_norm · W − 0.5``.

Only the pose graph that ships inside ``mediapipe==0.10.21`` is used: ``model_complexity=1``
(0 and 2 download their weights at first use, which fails offline), in static-image mode, with
``enable_segmentation=True`` for the person mask. ``mp.solutions.selfie_segmentation`` (which
also ships) is the optional alternative source of the mask.

**Body frame.** Local coordinates ``(u, v)`` are measured from the midpoint of the two shoulder
landmarks, in units of the shoulder distance (landmark to landmark, px): ``u`` runs from the
shoulder on the image's left to the shoulder on the image's right (for a person facing the
camera that is from their right shoulder, MediaPipe's ``RIGHT_SHOULDER`` = 12, to their left,
``LEFT_SHOULDER`` = 11), ``v`` is perpendicular to it and points away from the head (towards
the hips). Edits expressed in this frame transfer across position, scale and in-plane rotation,
like the face frame of :mod:`mirrorppr_cli.geometric.face_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import cv2
import numpy as np

from ..errors import InputError
from .face_frame import AxisFrame
from .landmarks import _native_stderr_silenced, _run

N_POSE_POINTS = 33

# MediaPipe pose landmark indices (person's left / right).
NOSE = 0
LEFT_EYE, RIGHT_EYE = 2, 5
LEFT_EAR, RIGHT_EAR = 7, 8
MOUTH_LEFT, MOUTH_RIGHT = 9, 10
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_ELBOW, RIGHT_ELBOW = 13, 14
LEFT_WRIST, RIGHT_WRIST = 15, 16
LEFT_HIP, RIGHT_HIP = 23, 24
LEFT_KNEE, RIGHT_KNEE = 25, 26
LEFT_ANKLE, RIGHT_ANKLE = 27, 28

#: A landmark counts as seen when MediaPipe's visibility is at least this.
MIN_VISIBILITY = 0.5
#: ... and it lies inside the image, or at most this fraction of the shorter side outside it.
OUTSIDE_TOLERANCE = 0.02
#: The person mask is the segmentation probability above this.
MASK_THRESHOLD = 0.5
#: Contour samples are this far apart, in body units (shoulder distances), and at least 2 px.
CONTOUR_SPACING = 0.02
MIN_DETECTION_CONFIDENCE = 0.5


class NoPersonError(InputError):
    """No person (pose with both shoulders visible) was found where one is needed."""


@dataclass(frozen=True)
class BodyFrame(AxisFrame):
    """The body frame (see the module docstring): shoulder midpoint, shoulder-distance unit,
    ``v`` away from the head."""

    @classmethod
    def from_points(cls, points: np.ndarray) -> BodyFrame:
        """Frame of a body from its ``(33, 2)`` pose landmarks ``(x, y)`` px."""
        return cls.between(points[RIGHT_SHOULDER], points[LEFT_SHOULDER],
                           v_away_from=points[NOSE], what="shoulders")


@dataclass(frozen=True)
class Contour:
    """The person's outline, sampled evenly.

    Attributes:
        points: ``(K, 2)`` ``(x, y)`` px on the mask's 0.5 iso-line (sub-pixel).
        normals: ``(K, 2)`` unit outward normals (pointing into the background).
        on_border: ``(K,)`` bool, True where the outline is the image's edge (the person is
            cut by the frame there: not a body edge).
        segments: ``(S, 2)`` int: ``[start, end)`` of each closed outline (one per connected
            part) in the arrays above; samples follow each other along the outline.
    """

    points: np.ndarray
    normals: np.ndarray
    on_border: np.ndarray
    segments: np.ndarray


@dataclass(frozen=True, eq=False)  # identity semantics: bodies hold arrays
class Body:
    """One person: 33 pose landmarks, their visibilities, the person mask and the body frame.

    Attributes:
        points: ``(33, 2)`` float64 ``(x, y)`` px (landmarks may lie outside the image).
        visibility: ``(33,)`` float64 MediaPipe visibility in [0, 1].
        mask: ``(H, W)`` float32 person probability in [0, 1], restricted to the connected
            parts that hold the body's landmarks.
        frame: the body frame (module docstring).
    """

    points: np.ndarray
    visibility: np.ndarray
    mask: np.ndarray
    frame: BodyFrame

    @staticmethod
    def from_landmarks(points: np.ndarray, visibility: np.ndarray, mask: np.ndarray) -> Body:
        """A body from landmarks and a probability (or 0/1) mask, e.g. for synthetic figures."""
        pts = np.asarray(points, np.float64).reshape(N_POSE_POINTS, 2)
        vis = np.asarray(visibility, np.float64).reshape(N_POSE_POINTS)
        prob = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)  # a new array: ours to change
        if prob.ndim != 2:
            raise ValueError("mask must be (H, W)")
        prob = _main_components(prob, pts, vis)
        return Body(points=pts, visibility=vis, mask=prob, frame=BodyFrame.from_points(pts))

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape[:2]

    @cached_property
    def person(self) -> np.ndarray:
        """``(H, W)`` bool: the mask above :data:`MASK_THRESHOLD`."""
        return self.mask > MASK_THRESHOLD

    def seen(self, index: int) -> bool:
        """Whether landmark ``index`` is visible and (nearly) inside the image."""
        if self.visibility[index] < MIN_VISIBILITY:
            return False
        height, width = self.shape
        tol = OUTSIDE_TOLERANCE * min(height, width)
        x, y = self.points[index]
        return -tol <= x <= width - 1 + tol and -tol <= y <= height - 1 + tol

    @cached_property
    def contour(self) -> Contour:
        """The outline of :attr:`person`, sampled every ``CONTOUR_SPACING`` body units."""
        spacing = max(2.0, CONTOUR_SPACING * self.frame.unit)
        return person_contour(self.mask, spacing)

    def face_zone(self) -> tuple[np.ndarray, float, float] | None:
        """The face as an ellipse in the body frame: ``(centre (u, v), half-width,
        half-height)`` in body units, from the pose's face points (eyes, ears, mouth); None
        when the eyes and mouth are not all seen. Body operations leave it untouched.

        Half-width: 0.7 × the larger of the ear distance and twice the eye distance;
        half-height: 1.6 × the eye-to-mouth distance; centre: three quarters of the way from the
        eyes to the mouth (the ellipse reaches from the brow to below the chin).
        """
        needed = (LEFT_EYE, RIGHT_EYE, MOUTH_LEFT, MOUTH_RIGHT)
        if any(self.visibility[j] < MIN_VISIBILITY for j in needed):
            return None
        local = self.frame.to_local(self.points)
        eyes = local[[LEFT_EYE, RIGHT_EYE]]
        mouth = local[[MOUTH_LEFT, MOUTH_RIGHT]].mean(axis=0)
        eye_mid = eyes.mean(axis=0)
        span = max(
            float(np.linalg.norm(local[LEFT_EAR] - local[RIGHT_EAR])),
            2.0 * float(np.linalg.norm(eyes[0] - eyes[1])),
        )
        drop = float(np.linalg.norm(mouth - eye_mid))
        return eye_mid + 0.75 * (mouth - eye_mid), 0.7 * span, 1.6 * drop

    @cached_property
    def outside_distance(self) -> np.ndarray:
        """``(H, W)`` float32: distance in px from each background pixel to the person
        (0 on the person)."""
        background = (~self.person).astype(np.uint8)
        return cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _main_components(prob: np.ndarray, points: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """``prob`` (``(H, W)`` float32, changed in place and returned) zeroed outside the
    connected parts of the person that hold a visible body landmark (shoulders and below); the
    largest part when none does.

    Only the kept parts' box (grown by the 2 px fringe) is worked on, with OpenCV's per-pixel
    operations, and everything outside it is zeroed (at 24 MP every pass over the whole image
    costs tens of milliseconds, and every full-size copy 96 MB)."""
    binary = cv2.compare(np.ascontiguousarray(prob, np.float32), MASK_THRESHOLD, cv2.CMP_GT)
    # (without statistics: OpenCV's labelling with them takes 4× as long)
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    if count <= 2:
        return prob
    height, width = binary.shape
    keep = set()
    for i in range(11, N_POSE_POINTS):
        if vis[i] < MIN_VISIBILITY:
            continue
        x, y = np.rint(points[i]).astype(int)
        if 0 <= x < width and 0 <= y < height and labels[y, x] > 0:
            keep.add(int(labels[y, x]))
    if not keep:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = {int(np.argmax(sizes))}
    parts = [cv2.compare(labels, label, cv2.CMP_EQ) for label in sorted(keep)]
    rects = np.array([cv2.boundingRect(part) for part in parts])  # x, y, w, h
    x0, y0 = max(int(rects[:, 0].min()) - 2, 0), max(int(rects[:, 1].min()) - 2, 0)
    x1 = min(int((rects[:, 0] + rects[:, 2]).max()) + 2, width)
    y1 = min(int((rects[:, 1] + rects[:, 3]).max()) + 2, height)
    kept = parts[0][y0:y1, x0:x1].copy()
    for part in parts[1:]:
        kept |= part[y0:y1, x0:x1]
    part = labels[y0:y1, x0:x1]
    # Keep the soft fringe of the kept parts (within 2 px of them) for sub-pixel contours,
    # but not the other parts.
    near = cv2.dilate(kept, np.ones((5, 5), np.uint8))
    near &= kept | cv2.compare(part, 0, cv2.CMP_EQ)
    prob[:y0], prob[y1:], prob[y0:y1, :x0], prob[y0:y1, x1:] = 0.0, 0.0, 0.0, 0.0
    prob[y0:y1, x0:x1][near == 0] = 0.0
    return prob


def person_contour(mask: np.ndarray, spacing: float) -> Contour:
    """Outline(s) of ``mask > 0.5`` (sub-pixel), resampled every ``spacing`` px along each.

    Outlines shorter than 8 samples are dropped (specks).
    """
    from skimage import measure

    height, width = mask.shape
    padded = np.pad(mask.astype(np.float64), 1, constant_values=0.0)
    points, normals, border = [], [], []
    for line in measure.find_contours(padded, MASK_THRESHOLD):
        xy = line[:, ::-1] - 1.0  # (row, col) of the padded array → (x, y) of the image
        if len(xy) < 4:
            continue
        closed = np.vstack([xy, xy[:1]]) if np.any(xy[0] != xy[-1]) else xy
        seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
        length = float(seg.sum())
        n = int(length // spacing)
        if n < 8:
            continue
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        s = np.arange(n) * (length / n)
        pts = np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], 1)
        tangent = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
        tangent += 0.5 * (np.roll(pts, -2, axis=0) - np.roll(pts, 2, axis=0))
        nrm = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        # Orient outward: a step along the normal should leave the mask (majority vote).
        probe = np.rint(pts + 1.5 * nrm).astype(int)
        probe[:, 0] = np.clip(probe[:, 0], 0, width - 1)
        probe[:, 1] = np.clip(probe[:, 1], 0, height - 1)
        inside = mask[probe[:, 1], probe[:, 0]] > MASK_THRESHOLD
        if inside.mean() > 0.5:
            nrm = -nrm
        edge = (
            (pts[:, 0] < 0.5)
            | (pts[:, 1] < 0.5)
            | (pts[:, 0] > width - 1.5)
            | (pts[:, 1] > height - 1.5)
        )
        points.append(pts)
        normals.append(nrm)
        border.append(edge)
    if not points:
        empty = np.zeros((0, 2))
        return Contour(empty, empty.copy(), np.zeros(0, bool), np.zeros((0, 2), np.int64))
    ends = np.cumsum([len(p) for p in points])
    segments = np.stack([ends - [len(p) for p in points], ends], axis=1)
    return Contour(
        np.concatenate(points), np.concatenate(normals), np.concatenate(border), segments
    )


@cache
def _pose_graph():
    import mediapipe as mp

    with _native_stderr_silenced():
        return mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=1,  # the only pose model inside the 0.10.21 wheel
            enable_segmentation=True,
            min_detection_confidence=MIN_DETECTION_CONFIDENCE,
        )


@cache
def _selfie_graph():
    import mediapipe as mp

    with _native_stderr_silenced():
        return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)


def detect_body(rgb: np.ndarray, *, segmentation: str = "pose", name: str = "image") -> Body:
    """Pose landmarks, person mask and body frame of the main person in ``rgb``.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.
        segmentation: ``"pose"`` (the pose graph's own mask, default: it follows the body and
            leaves out held objects) or ``"selfie"`` (MediaPipe selfie segmentation).
        name: how to call the image in error messages.

    Raises:
        NoPersonError: no pose found, or its shoulders are not both visible (the body frame
            needs them).

    Deterministic: the same pixels give the same body.
    """
    if segmentation not in ("pose", "selfie"):
        raise ValueError(f"unknown segmentation {segmentation!r}")
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("detect_body needs an (H, W, 3) RGB image")
    height, width = rgb.shape[:2]
    result = _run(_pose_graph(), rgb)
    if result.pose_landmarks is None:
        raise NoPersonError(f"{name}: no person found; body operations need a visible body")
    lms = result.pose_landmarks.landmark
    arr = np.array([(p.x, p.y, p.visibility) for p in lms], dtype=np.float64)
    points = np.stack([arr[:, 0] * width - 0.5, arr[:, 1] * height - 0.5], axis=1)
    if segmentation == "pose" and result.segmentation_mask is not None:
        mask = np.asarray(result.segmentation_mask, np.float32)
    else:
        mask = np.asarray(_run(_selfie_graph(), rgb).segmentation_mask, np.float32)
    body = Body.from_landmarks(points, arr[:, 2], mask)
    if not (body.seen(LEFT_SHOULDER) and body.seen(RIGHT_SHOULDER)):
        raise NoPersonError(
            f"{name}: a person was found but not both shoulders; body operations need the "
            "shoulders in view"
        )
    if not body.person.any():
        raise NoPersonError(f"{name}: the person mask is empty")
    return body
