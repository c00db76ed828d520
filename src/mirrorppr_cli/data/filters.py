"""Source-portrait filters of paper appendix A.1 that can be checked offline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..geometric.face_frame import FaceFrame
from ..geometric.landmarks import Face

# MediaPipe mesh indices: face-oval extremes (image-left / image-right cheek), forehead, chin.
_CHEEK_A, _CHEEK_B, _FOREHEAD, _CHIN = 234, 454, 10, 152


@dataclass(frozen=True)
class FaceFilter:
    """Thresholds; a face outside any of them is skipped.

    ``min_eye_distance``: inter-ocular distance as a fraction of the standardised image's
    side (√area): a proxy for the face being large enough to carry a visible edit (0.04 is
    41 px at 1024²). ``max_pose_deg``: limit on |yaw|,
    |pitch| and |roll| (the paper keeps near-frontal FFHQ faces).
    """

    min_eye_distance: float = 0.04
    max_pose_deg: float = 25.0

    def to_dict(self) -> dict:
        return asdict(self)


def head_pose(face: Face) -> tuple[float, float, float]:
    """Approximate ``(yaw, pitch, roll)`` in degrees from the mesh's 3D points.

    Roll: the eye line's angle in the image. Yaw: the cheek-to-cheek vector's angle out of
    the image plane. Pitch: the forehead-to-chin vector's angle out of the image plane, minus
    the ~10° a frontal face's mesh shows there. Coarse (±5°), enough to reject profiles.
    """
    pts, z = face.points, face.depth
    frame = FaceFrame.from_points(pts)
    roll = math.degrees(math.atan2(frame.u[1], frame.u[0]))
    dx = np.hypot(*(pts[_CHEEK_B] - pts[_CHEEK_A]))
    yaw = math.degrees(math.atan2(z[_CHEEK_B] - z[_CHEEK_A], dx))
    dy = np.hypot(*(pts[_CHIN] - pts[_FOREHEAD]))
    pitch = math.degrees(math.atan2(z[_CHIN] - z[_FOREHEAD], dy)) - 10.0
    return yaw, pitch, roll


def reject_reason(faces: list[Face], config: FaceFilter, image_side: float) -> str | None:
    """Why a portrait (of side ``image_side`` = √area px) is unusable (``no_face``, ``several_faces``, ``face_too_small``,
    ``head_pose``), or ``None`` if it passes."""
    if not faces:
        return "no_face"
    if len(faces) > 1:
        return "several_faces"
    face = faces[0]
    if FaceFrame.from_points(face.points).unit < config.min_eye_distance * image_side:
        return "face_too_small"
    if max(abs(a) for a in head_pose(face)) > config.max_pose_deg:
        return "head_pose"
    return None


#: Face thresholds of the professional subset: half- and full-body shots show small faces
#: (0.02 is 20 px between the eyes at 1024²; ``landmarks.find_faces`` finds faces that small).
PROFESSIONAL_FACE_FILTER = FaceFilter(min_eye_distance=0.02, max_pose_deg=25.0)

# MediaPipe pose indices: elbows and hips show that a shot is wider than head-and-shoulders.
_BELOW_SHOULDERS = (13, 14, 23, 24)
_POSE_NOSE = 0
#: The pose's nose must lie within this many face-box sizes of the face box's centre.
BODY_FACE_MATCH = 0.5


def body_reject_reason(face: Face, body) -> str | None:
    """Why a portrait with one usable ``face`` and a detected ``body``
    (:class:`mirrorppr_cli.geometric.body.Body`) is not a professional-subset source, or ``None``.

    * ``face_body_mismatch``: the pose's nose is not on the face (the body found is another
      person's, or the face is);
    * ``close_up``: neither an elbow nor a hip is seen, so not a half- or full-body shot.
    """
    x0, y0, x1, y1 = (*face.points.min(axis=0), *face.points.max(axis=0))
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    if np.linalg.norm(body.points[_POSE_NOSE] - centre) > BODY_FACE_MATCH * max(x1 - x0, y1 - y0):
        return "face_body_mismatch"
    if not any(body.seen(i) for i in _BELOW_SHOULDERS):
        return "close_up"
    return None
