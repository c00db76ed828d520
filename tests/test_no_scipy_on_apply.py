"""SciPy is imported only where it is needed (the catalog fit's NNLS): ``apply``, a saved
edit and a batch worker's query path do not pay its ~0.9 s of imports and ~50 MB."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
from scipy.spatial.distance import cdist

from mirrorppr_cli.ops.catalog import distances

APPLY = r"""
import sys
import cv2
import numpy as np
from mirrorppr_cli.geometric.landmarks import find_faces
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp
image = np.ascontiguousarray(cv2.imread(sys.argv[1])[..., ::-1])  # (skimage.data imports SciPy)
points = find_faces(image)[0].points
out = apply_local_warp(image, plan_warp(points, [OpRequest("eye_resize", 50),
                                                 OpRequest("nose_alar", -40)]))
assert not np.array_equal(out, image)
print(sorted(m for m in sys.modules if m == "scipy" or m.startswith("scipy.")))
"""


def test_distances_are_scipy_s_bit_for_bit():
    rng = np.random.default_rng(0)
    for a, b in [(rng.normal(size=(50, 2)) * 300, rng.normal(size=(70, 2)) * 300),
                 (rng.uniform(-2, 2, (478, 2)), rng.uniform(-2, 2, (478, 2))),
                 (rng.uniform(0, 4000, (30, 2)).astype(np.float32), rng.uniform(0, 9, (5, 2)))]:
        assert np.array_equal(distances(a, b), cdist(a, b))


def test_named_operations_import_no_scipy(astronaut_512, tmp_path):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), np.ascontiguousarray(astronaut_512[..., ::-1]))
    proc = subprocess.run([sys.executable, "-c", APPLY, str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
