"""The wheel must carry every subpackage (pyproject lists them by hand)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "mirrorppr_cli" + "".join(f".{p}" for p in init.parent.relative_to(ROOT / "src/mirrorppr_cli").parts)
        for init in (ROOT / "src/mirrorppr_cli").rglob("__init__.py")
    }
    assert found | {"mirrorppr_backends"} == listed
