"""The body correspondence's choice: the face meshes while the pose agrees with them."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorppr_cli.geometric.body_correspondence import (
    CHECK_JOINTS,
    POSE_AGREEMENT,
    fit_similarity,
    pose_disagreement,
)
from mirrorppr_cli.geometric.carry import POSE_MIRROR
from mirrorppr_cli.geometric.landmark_mirror import MIRROR

RNG = np.random.default_rng(7)
FACE = RNG.uniform(200, 300, size=(478, 2))
POSE = RNG.uniform(100, 500, size=(33, 2))
JOINTS = np.array(CHECK_JOINTS)


def _similar(points: np.ndarray, scale: float, degrees: float, shift) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rot.T + np.asarray(shift, float)


def test_fit_similarity_recovers_a_known_similarity():
    target = _similar(FACE, 0.7, 12.0, (30.0, -5.0))
    linear, shift = fit_similarity(FACE, target)
    assert np.allclose(FACE @ linear.T + shift, target, atol=1e-9)


def test_a_rescaled_rotated_copy_agrees():
    """One photo rescaled and rotated: the pose sits under the face as in the exemplar."""
    q_face, q_pose = (_similar(p, 1.8, -9.0, (4.0, 60.0)) for p in (FACE, POSE))
    unit = 1.8 * float(np.linalg.norm(POSE[11] - POSE[12]))
    assert pose_disagreement(FACE, q_face, POSE, q_pose, JOINTS, unit, False) < 1e-9


def test_a_mirrored_copy_agrees_through_the_reflection():
    """A mirrored photo: both meshes relabelled by image side; the query's pose is given in
    the exemplar's labelling (its mirrored labels swapped back), as the carrier passes it."""
    width = 640.0
    q_face = np.stack([width - 1 - FACE[:, 0], FACE[:, 1]], axis=1)[MIRROR]
    q_pose_detected = np.stack([width - 1 - POSE[:, 0], POSE[:, 1]], axis=1)[POSE_MIRROR]
    unit = float(np.linalg.norm(POSE[11] - POSE[12]))
    q_pose = q_pose_detected[POSE_MIRROR]
    assert pose_disagreement(FACE, q_face, POSE, q_pose, JOINTS, unit, True) < 1e-9
    # read as unmirrored, the same query disagrees
    assert pose_disagreement(FACE, q_face, POSE, q_pose, JOINTS, unit, False) > POSE_AGREEMENT


@pytest.mark.parametrize("moved, agrees", [(0.1, True), (0.3, True), (0.5, False), (1.0, False)])
def test_a_body_that_sits_differently_disagrees(moved, agrees):
    """The shoulders and elbows moved by ``moved`` shoulder distances relative to the head."""
    unit = float(np.linalg.norm(POSE[11] - POSE[12]))
    q_pose = POSE.copy()
    q_pose[JOINTS] += np.array([0.0, moved * unit])
    score = pose_disagreement(FACE, FACE, POSE, q_pose, JOINTS, unit, False)
    assert score == pytest.approx(moved)
    assert (score <= POSE_AGREEMENT) == agrees


def test_no_joint_to_check_never_agrees():
    assert pose_disagreement(FACE, FACE, POSE, POSE, np.array([], int), 100.0, False) == np.inf
