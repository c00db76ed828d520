"""The landmark mirror and mirrored queries: an asymmetric edit lands on the same side of the
person in a mirrored photo of the same face, and faces of other people are never mirrored."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mirrorppr_cli.geometric import regions as R
from mirrorppr_cli.geometric.carry import transfer
from mirrorppr_cli.geometric.face import face_patch, is_mirrored, mirror_evidence
from mirrorppr_cli.geometric.face_frame import FaceFrame
from mirrorppr_cli.geometric.landmark_mirror import MIRROR
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import LocalWarp, apply_local_warp
from mirrorppr_cli.geometric.motion import estimate_edit
from mirrorppr_cli.metrics.edit_fidelity import edit_fidelity


def _points(rgb: np.ndarray) -> np.ndarray:
    faces = find_faces(np.ascontiguousarray(rgb))
    assert faces
    return faces[0].points


def test_mirror_is_an_involution_that_matches_a_mirrored_detection(astronaut_512):
    assert MIRROR.shape == (478,)
    np.testing.assert_array_equal(MIRROR[MIRROR], np.arange(478))
    assert (MIRROR == np.arange(478)).sum() == 28  # the midline
    image = np.asarray(astronaut_512)
    points = _points(image)
    flipped = _points(np.ascontiguousarray(image[:, ::-1]))
    flipped[:, 0] = image.shape[1] - 1 - flipped[:, 0]  # back into the image's coordinates
    # landmark i of the photo sits where the mirrored photo's landmark MIRROR[i] does
    # (measured: median 0.63 px, against 34 px without the permutation)
    assert np.median(np.linalg.norm(points - flipped[MIRROR], axis=1)) < 1.5
    assert np.median(np.linalg.norm(points - flipped, axis=1)) > 10


def _raise_right_brow(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """An asymmetric edit: only the image-left eyebrow lifted by 0.1 face units."""
    frame = FaceFrame.from_points(points)
    brow = list(R.RIGHT_BROW)
    fixed = list(R.RIGHT_EYE_CONTOUR) + [10, 151, 9, 8, 168]
    source = points[brow + fixed]
    target = source.copy()
    target[: len(brow)] -= 0.1 * frame.unit * frame.v
    return apply_local_warp(image, LocalWarp(source, target, [points[brow + fixed]],
                                             0.25 * frame.unit))


@pytest.fixture(scope="module")
def mirrored_case(astronaut_1024, astronaut_1024_points):
    before = np.asarray(astronaut_1024)
    after = _raise_right_brow(before, astronaut_1024_points)
    query = np.ascontiguousarray(before[:, ::-1])
    truth = np.ascontiguousarray(after[:, ::-1])  # the same brow, now on the image right
    edit = estimate_edit(before, after, astronaut_1024_points, _points(after))
    return edit, query, _points(query), truth


def test_a_mirrored_query_of_the_same_face_gets_the_edit_on_the_same_brow(mirrored_case):
    edit, query, points, truth = mirrored_case
    direct, mirrored = mirror_evidence(edit.appearance, query, points)
    assert mirrored > 0.9 and direct < 0.6  # measured 0.96 / 0.46
    assert is_mirrored(edit.appearance, query, points)
    recall = edit_fidelity(query, transfer(edit, query, points), truth).recall
    wrong_side = edit_fidelity(query, transfer(edit, query, points, mirrored=False), truth).recall
    # measured: 0.88 mirrored, 0.00 when the edit is put on the other brow
    assert recall > 0.75 and wrong_side < 0.3


def test_other_people_are_never_taken_as_mirrored(mirrored_case):
    from matplotlib import cbook

    edit = mirrored_case[0]
    grace = cv2.cvtColor(cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg",
                                                              asfileobj=False))),
                         cv2.COLOR_BGR2RGB)
    for image in (grace, np.ascontiguousarray(grace[:, ::-1])):
        points = _points(image)
        assert not is_mirrored(edit.appearance, image, points)
        assert max(mirror_evidence(edit.appearance, image, points)) < 0.5


def test_face_patch_is_normalised(astronaut_512):
    image = np.asarray(astronaut_512)
    patch = face_patch(image, _points(image))
    assert abs(float(patch.mean())) < 1e-5 and abs(float(np.linalg.norm(patch)) - 1) < 1e-4
