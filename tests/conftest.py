"""Shared fixtures.

Warp/ops fixtures: the astronaut test portrait (``skimage.data.astronaut()``, 512² RGB), a
1024² bicubic upscale of it, and their landmarks, each detected once per session (MediaPipe is
the slow part). Arrays are returned read-only so that no test can alter what another sees.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from mirrorppr_cli.geometric.landmarks import find_faces


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@pytest.fixture(scope="session")
def astronaut_512() -> np.ndarray:
    """``skimage.data.astronaut()``: (512, 512, 3) uint8 RGB, read-only."""
    return _frozen(data.astronaut())


@pytest.fixture(scope="session")
def astronaut_512_points(astronaut_512) -> np.ndarray:
    """(478, 2) landmarks (x, y) of the astronaut's face at 512², read-only."""
    return _frozen(find_faces(astronaut_512)[0].points)


@pytest.fixture(scope="session")
def astronaut_1024(astronaut_512) -> np.ndarray:
    """The astronaut upscaled to (1024, 1024, 3) with cv2.INTER_CUBIC, read-only."""
    return _frozen(cv2.resize(astronaut_512, (1024, 1024), interpolation=cv2.INTER_CUBIC))


@pytest.fixture(scope="session")
def astronaut_1024_points(astronaut_1024) -> np.ndarray:
    """(478, 2) landmarks (x, y) of the astronaut's face at 1024², read-only."""
    return _frozen(find_faces(astronaut_1024)[0].points)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Torch on one thread for a module: tiny models gain nothing from threads and lose a lot
    when other jobs share the CPU (used by the neural-engine tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
