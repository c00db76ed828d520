"""``in_place`` (the inverse map for exports is made on a private image of coordinates, not
copied at every step): the same values as the copying path, and the input changed only when
asked."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorppr_cli.geometric.apply import apply_exemplar
from mirrorppr_cli.geometric.measure import measure_exemplar
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp


@pytest.fixture(scope="module")
def after(astronaut_512, astronaut_512_points):
    return apply_local_warp(np.asarray(astronaut_512), plan_warp(
        astronaut_512_points, [OpRequest("eye_resize", 60), OpRequest("nose_alar", -50)]))


@pytest.mark.parametrize("mode", ["flow", "catalog", "hybrid"])
def test_in_place_gives_the_copying_result(astronaut_512, astronaut_512_points, after, mode):
    before = np.asarray(astronaut_512)
    exemplar = measure_exemplar(before, after, mode=mode)
    query = before.copy()  # a private copy
    points = astronaut_512_points
    copied = apply_exemplar(exemplar, query, points, 0.8, rgb=before)
    assert np.array_equal(query, before)  # not changed without in_place
    assert not np.array_equal(copied, before)  # the edit did something
    coords = np.empty((*before.shape[:2], 2), np.float32)
    coords[..., 0], coords[..., 1] = np.arange(512), np.arange(512)[:, None]
    mapped_copy = apply_exemplar(exemplar, coords.copy(), points, 0.8, rgb=before)
    mapped = apply_exemplar(exemplar, coords, points, 0.8, rgb=before, in_place=True)
    assert np.array_equal(mapped, mapped_copy)
    same = apply_exemplar(exemplar, query, points, 0.8, rgb=before, in_place=True)
    assert np.array_equal(same, copied)


def test_in_place_needs_the_query_for_the_body_detector(astronaut_512, astronaut_512_points,
                                                         after):
    exemplar = measure_exemplar(np.asarray(astronaut_512), after, mode="flow")
    with pytest.raises(ValueError, match="in_place needs rgb"):
        apply_exemplar(exemplar, np.asarray(astronaut_512).copy(), astronaut_512_points,
                       in_place=True)


def test_apply_local_warp_in_place(astronaut_512, astronaut_512_points):
    pixels = np.asarray(astronaut_512).copy()
    warp = plan_warp(astronaut_512_points, [OpRequest("eye_resize", 60)])
    expected = apply_local_warp(pixels, warp)
    out = apply_local_warp(pixels, warp, in_place=True)
    assert out is pixels and np.array_equal(out, expected)
