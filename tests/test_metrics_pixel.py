"""PSNR/SSIM against independent computations (scikit-image; torchmetrics when installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mirrorppr_cli.metrics.pixel import PixelScores, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    truth = data.astronaut()
    rng = np.random.default_rng(0)
    noisy = np.clip(truth.astype(int) + rng.integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    return noisy, truth


def test_psnr_matches_scikit_image(pair):
    pred, truth = pair
    expected = peak_signal_noise_ratio(truth / 255.0, pred / 255.0, data_range=1.0)
    assert psnr(pred, truth) == pytest.approx(expected, abs=1e-9)


def test_psnr_of_identical_images_is_infinite(pair):
    assert psnr(pair[1], pair[1]) == math.inf


def test_ssim_cropped_matches_scikit_image(pair):
    pred, truth = pair
    expected = structural_similarity(
        pred / 255.0, truth / 255.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, channel_axis=-1,
    )
    assert ssim(pred, truth, crop_border=True) == pytest.approx(expected, abs=1e-9)


def test_ssim_matches_torchmetrics(pair):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.image")
    pred, truth = pair

    def nchw(x):
        return torch.from_numpy(x / 255.0).permute(2, 0, 1)[None]

    expected = float(tm.structural_similarity_index_measure(nchw(pred), nchw(truth), data_range=1.0))
    assert ssim(pred, truth) == pytest.approx(expected, abs=1e-9)


def test_ssim_official_differs_from_cropped_and_identity_is_one(pair):
    pred, truth = pair
    assert ssim(truth, truth) == pytest.approx(1.0, abs=1e-12)
    assert abs(ssim(pred, truth) - ssim(pred, truth, crop_border=True)) > 1e-4


def test_prediction_is_resized_bilinearly_to_the_truth(pair):
    import cv2

    pred, truth = pair
    small = cv2.resize(pred, (256, 256), interpolation=cv2.INTER_AREA)
    resized = cv2.resize(small / 255.0, (512, 512), interpolation=cv2.INTER_LINEAR)
    assert psnr(small, truth) == pytest.approx(psnr(resized, truth), abs=1e-9)
    assert psnr(small, truth) != pytest.approx(psnr(pred, truth), abs=0.01)


def test_pooled_psnr_is_over_all_pixels_not_the_mean_of_psnrs(pair):
    pred, truth = pair
    scores = PixelScores()
    scores.add(pred, truth)
    scores.add(truth, truth)  # a perfect image halves the pooled MSE
    single = psnr(pred, truth)
    assert scores.pooled_psnr == pytest.approx(single + 10 * math.log10(2), abs=1e-9)
    assert scores.psnr_values == [pytest.approx(single), math.inf]
    assert scores.mean_ssim == pytest.approx((ssim(pred, truth) + 1.0) / 2)


@pytest.mark.parametrize("shape, dtype", [((37, 53, 3), np.uint8), ((37, 53, 4), np.uint8),
                                          ((37, 53), np.uint8), ((37, 53, 3), np.uint16),
                                          ((37, 53, 3), np.float32)])
def test_changed_mask_matches_numpy_down_to_one_level_in_one_channel(shape, dtype):
    from mirrorppr_cli.metrics.pixel import changed_mask

    rng = np.random.default_rng(3)
    a = rng.integers(1, 200, size=shape).astype(dtype)
    b = a.copy()
    flat = b.reshape(-1)
    flat[rng.choice(flat.size, 40, replace=False)] += 1  # one level, one channel each
    expected = np.any(a != b, axis=-1) if a.ndim == 3 else a != b
    got = changed_mask(a, b)
    assert got.shape == shape[:2] and got.dtype == bool and np.array_equal(got, expected)
    assert not changed_mask(a, a.copy()).any()
