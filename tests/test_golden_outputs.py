"""The CLI's outputs, byte for byte, against digests stored before the Edit/Backend redesign
(#20): a refactor must not change one pixel of `retouch` (every mode, --strength, a body
edit), `apply` (face and body operations) or one strength of `explain`.

Inputs are made here from scikit-image's astronaut (public domain). Regenerate the digests only
for a deliberate change of outputs, and say why in the commit:
``MIRRORPPR_WRITE_GOLDEN=1 pytest tests/test_golden_outputs.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.geometric.body import detect_body
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.ops.body_plan import apply_body_ops

GOLDEN = Path(__file__).with_name("golden_outputs.json")
WRITE = os.environ.get("MIRRORPPR_WRITE_GOLDEN") == "1"
runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut_512, astronaut_512_points) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden")
    before = np.ascontiguousarray(astronaut_512)
    face_after = apply_local_warp(before, plan_warp(
        astronaut_512_points, [OpRequest("eye_resize", 60), OpRequest("nose_alar", -40)]))
    body_after = apply_body_ops(face_after, detect_body(before),
                                [OpRequest("shoulder_width", -60)], strict=False)
    turn = cv2.getRotationMatrix2D((256, 256), 7, 0.85)
    query_turned = cv2.warpAffine(np.ascontiguousarray(np.fliplr(before)), turn, (512, 512),
                                  borderMode=cv2.BORDER_REFLECT)
    query_big = cv2.resize(before, (640, 640), interpolation=cv2.INTER_CUBIC)
    images = {"before": before, "face_after": face_after, "body_after": body_after,
              "query_turned": query_turned, "query_big": query_big}
    paths = {}
    for name, pixels in images.items():
        paths[name] = root / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return paths


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CASES = {
    "retouch-hybrid": ("face_after", ["--mode", "hybrid"]),
    "retouch-flow": ("face_after", ["--mode", "flow"]),
    "retouch-catalog": ("face_after", ["--mode", "catalog"]),
    "retouch-half-strength": ("face_after", ["--strength", "0.5"]),
    "retouch-body-hybrid": ("body_after", []),
    "retouch-body-catalog": ("body_after", ["--mode", "catalog"]),
}


def _compare(key: str, value) -> None:
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if WRITE:
        stored[key] = value
        GOLDEN.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    assert key in stored, f"no stored digest for {key}: run with MIRRORPPR_WRITE_GOLDEN=1"
    assert value == stored[key], f"{key}: output changed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_retouch_outputs_are_unchanged(inputs, tmp_path, case):
    after, options = CASES[case]
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "retouch", "--ex", str(inputs["before"]), str(inputs[after]), "--query",
        str(inputs["query_turned"]), str(inputs["query_big"]), "-o", f"{out}/", "--workers",
        "1", *options])
    assert result.exit_code in (0, 7), result.output
    _compare(case, {p.name: _digest(p) for p in sorted(out.iterdir())})


def test_apply_outputs_are_unchanged(inputs, tmp_path):
    out = tmp_path / "applied.png"
    result = runner.invoke(app, ["apply", str(inputs["query_big"]), "--op", "eye_resize=40",
                                 "--op", "jawline=-30", "--op", "shoulder_width=-50", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    _compare("apply-face-and-body", _digest(out))


@pytest.mark.parametrize("after", ["face_after", "body_after"])
def test_explain_strengths_are_unchanged(inputs, after):
    result = runner.invoke(app, ["explain", "--ex", str(inputs["before"]), str(inputs[after]),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ops = [[o["name"], o["strength"]] for o in [*data["ops"],
                                               *((data["body"] or {}).get("ops") or [])]]
    _compare(f"explain-{after}", {"ops": ops, "explained": data["explained"]})
