"""Which points tie an exemplar's body to a query's, for carrying measured body motion.

Two sources, both ``(x, y)`` px with pixel centres at integers:

* the face mesh (478 points, sub-pixel precise), which fixes the head's position, scale and
  rotation; extrapolated by one similarity it puts the shoulders where they are *if the body
  sits under the head as in the exemplar* (the same framing of one person, a crop or a
  rescale of it);
* the pose landmarks (33 joints), which follow the body when it sits differently, but which
  MediaPipe places loosely: on the nine real survey pairs, self-augmented (crops, rescales,
  rotations of one photo, so the truth is known), the detected shoulders lie 0.02-0.30
  shoulder distances from where the photo's own transform puts them, the hips up to 0.6.

The face decides while the pose agrees with it within that noise; otherwise the pose does.
"""

from __future__ import annotations

import numpy as np

from .landmark_mirror import MIRROR

#: Pose joints that check whether the body sits under the head as in the exemplar: shoulders
#: and elbows (hips are often hidden by clothes or the frame).
CHECK_JOINTS = (11, 12, 13, 14)
#: The pose agrees with the face's similarity when the checked joints lie within this many
#: query shoulder distances of where it puts them (median): above the detector's own scatter
#: on one person (0.30 at most, see the module docstring), below a changed pose.
POSE_AGREEMENT = 0.35


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A (2, 2), t (2,))`` with ``dst ≈ src @ A.T + t`` (rotation, uniform scale,
    translation; least squares over ``(N, 2)`` point pairs, N ≥ 2)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    norm = float((s * s).sum())
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    linear = np.array([[a, -b], [b, a]])
    return linear, md - ms @ linear.T


def pose_disagreement(ex_face: np.ndarray, q_face: np.ndarray, ex_pose: np.ndarray,
                      q_pose: np.ndarray, joints: np.ndarray, unit: float,
                      mirrored: bool) -> float:
    """Median distance (query shoulder distances ``unit`` px) between the query's pose joints
    ``q_pose[joints]`` and where the face similarity (``ex_face`` → ``q_face``, both
    ``(478, 2)``; a reflection for a ``mirrored`` query) puts the exemplar's ``ex_pose[joints]``.
    ``q_pose`` is already in the exemplar's labelling (mirrored labels swapped); inf without
    joints."""
    if len(joints) == 0:
        return float("inf")
    flip = np.array([-1.0, 1.0]) if mirrored else np.ones(2)
    target = (q_face[MIRROR] if mirrored else q_face) * flip
    linear, shift = fit_similarity(ex_face, target)
    predicted = ex_pose[joints] @ linear.T + shift
    return float(np.median(np.linalg.norm(predicted - q_pose[joints] * flip, axis=1))) / unit


def face_handles(ex_face: np.ndarray, q_face: np.ndarray,
                 mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(exemplar handles, query handles)`` from the face meshes: the query's in the
    exemplar's labelling (a mirrored query's points relabelled), unreflected (the carrier
    reflects)."""
    return ex_face, (q_face[MIRROR] if mirrored else q_face)
