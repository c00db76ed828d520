"""Edit fidelity (flow-based recall): identity 0, oracle 1, half strength ≈ 0.5, reversed < 0."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.metrics.edit_fidelity import dense_flow, edit_fidelity
from mirrorppr_cli.ops import OpRequest, plan_warp


@pytest.fixture(scope="module")
def edits(astronaut_1024, astronaut_1024_points):
    def at(k: float) -> np.ndarray:
        ops = [OpRequest("eye_resize", 60 * k), OpRequest("mouth_resize", -50 * k),
               OpRequest("nose_length", 60 * k)]
        return apply_local_warp(astronaut_1024, plan_warp(astronaut_1024_points, ops))

    return astronaut_1024, at(1.0), at(0.5), at(-1.0)


def test_unchanged_query_scores_zero_and_oracle_one(edits):
    query, truth, _, _ = edits
    identity = edit_fidelity(query, query, truth)
    oracle = edit_fidelity(query, truth, truth)
    assert identity.recall == pytest.approx(0.0, abs=1e-6) and identity.moved_pixels > 1000
    assert oracle.recall == pytest.approx(1.0, abs=1e-6) and oracle.epe == pytest.approx(0.0)


def test_half_strength_scores_about_half_and_reversed_is_negative(edits):
    query, truth, half, reversed_ = edits
    # measured 0.48: the flow sees half the motion, within its own sub-pixel error
    assert 0.35 < edit_fidelity(query, half, truth).recall < 0.65
    assert edit_fidelity(query, reversed_, truth).recall < -0.5


def test_flow_recovers_a_known_translation():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (200, 200), dtype=np.uint8), (0, 0), 2)
    shifted = np.roll(texture, (2, 3), axis=(0, 1))  # content moves +3 px in x, +2 px in y
    flow = dense_flow(texture, shifted)[40:-40, 40:-40]
    np.testing.assert_allclose(np.median(flow.reshape(-1, 2), axis=0), [3, 2], atol=0.1)


def test_nothing_moved_gives_nan(edits):
    query = edits[0]
    result = edit_fidelity(query, query, query)
    assert result.moved_pixels == 0 and math.isnan(result.recall)


def test_prediction_of_another_size_is_resized(edits):
    query, truth, _, _ = edits
    small = cv2.resize(truth, (512, 512), interpolation=cv2.INTER_AREA)
    assert edit_fidelity(query, small, truth).recall > 0.5
