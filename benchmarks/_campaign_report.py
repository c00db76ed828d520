"""Writing a campaign's summary: ``OUT.json`` and the markdown table ``OUT.md``, printed too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_summary(out: Path, summary: dict, markdown: Callable[[dict], str]) -> None:
    """Write ``summary`` as ``out.json`` and ``markdown(summary)`` as ``out.md``; print both
    the table and where the JSON went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"JSON: {out.with_suffix('.json')}")
