"""Landmarks: 478 deterministic points, several faces, small faces, no face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from mirrorppr_cli.errors import NoFaceError
from mirrorppr_cli.geometric.landmarks import N_POINTS, find_faces, select_face


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(astronaut):
    return find_faces(astronaut)[0]


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int, side: int) -> None:
    canvas[y : y + side, x : x + side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def test_one_face_with_478_subpixel_points(astronaut_face):
    pts = astronaut_face.points
    assert pts.shape == (N_POINTS, 2) and pts.dtype == np.float64
    assert not np.allclose(pts, np.round(pts))  # sub-pixel, not integer-snapped
    # The astronaut's face lies in the upper middle of the 512² frame.
    assert 150 < pts[:, 0].mean() < 300 and 60 < pts[:, 1].mean() < 200


def test_deterministic(astronaut, astronaut_face):
    again = find_faces(astronaut.copy())[0]
    np.testing.assert_array_equal(again.points, astronaut_face.points)


def test_pixel_centre_convention_follows_translation(astronaut, astronaut_face):
    """Shifting the image by whole pixels shifts the points by the same amount."""
    shifted = np.zeros_like(astronaut)
    shifted[7:, 11:] = astronaut[:-7, :-11]
    moved = find_faces(shifted)[0].points
    offset = np.median(moved - astronaut_face.points, axis=0)
    np.testing.assert_allclose(offset, [11, 7], atol=0.5)


def test_several_faces_largest_first_and_selectable(astronaut):
    canvas = np.full((900, 1400, 3), 235, np.uint8)
    _paste(canvas, astronaut, 40, 100, 700)  # large
    _paste(canvas, astronaut, 900, 250, 420)  # smaller
    faces = find_faces(canvas)
    assert len(faces) == 2
    assert faces[0].size > faces[1].size
    assert faces[0].points[:, 0].mean() < 700 < faces[1].points[:, 0].mean()
    assert select_face(faces, None, name="x") is faces[0]
    assert select_face(faces, 1, name="x") is faces[1]
    with pytest.raises(NoFaceError, match="--face 2"):
        select_face(faces, 2, name="x")


def test_small_face_in_large_frame_is_found_and_mapped_back(astronaut, astronaut_face):
    """A face ~60 px wide in a 1600² frame (full-body scale): detector → crop → mesh."""
    canvas = np.full((1600, 1600, 3), 200, np.uint8)
    side = 256
    _paste(canvas, astronaut, 1100, 300, side)
    faces = find_faces(canvas)
    assert len(faces) == 1
    expected = astronaut_face.points * (side / 512) + [1100 + (side / 512 - 1) / 2, 300 + (side / 512 - 1) / 2]
    # Points agree with the scaled full-resolution detection within a few pixels.
    assert np.median(np.linalg.norm(faces[0].points - expected, axis=1)) < 2.0


def test_no_face_is_a_clear_error():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    faces = find_faces(noise)
    assert faces == []
    with pytest.raises(NoFaceError, match="noise.png: no face found"):
        select_face(faces, None, name="noise.png")
