"""``mirrorppr ops`` and ``mirrorppr backends``: what the install offers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .console import (
    out,
    plain,
)


def ops_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", metavar="")] = False,
) -> None:
    """List the operation catalog: names, regions and what + and − strengths do."""
    from ..ops import CATALOG
    from ..ops.body_catalog import BODY_CATALOG

    rows = [
        {"name": op.name, "region": op.region, "plus": op.plus, "minus": op.minus}
        for op in (*CATALOG.values(), *BODY_CATALOG.values())
    ]
    if as_json:
        print(json.dumps({"strength_range": [-100, 100], "operations": rows}, indent=2))
        return
    table = Table(title="Operations (strength −100 … 100; sign = direction)")
    for column in ("name", "region", "+ (positive)", "− (negative)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(plain(row[k]) for k in ("name", "region", "plus", "minus")))
    out.print(table)

def backends_command(
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Check the neural backends against this weights folder.", metavar="DIR")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].", metavar="DEVICE")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.", metavar="")] = False,
) -> None:
    """List the installed backends (entry points ``mirrorppr.backends``) and whether each can
    run here (CUDA, compute capability, weights found) — and why not."""
    from ..backend import backend_class, backend_names

    rows = []
    for name in backend_names():
        try:
            cls = backend_class(name)
            given = {"weights": weights, "device": device}
            backend = cls(**{k: v for k, v in given.items()
                             if v is not None and k in getattr(cls, "options", ())})
        except Exception as exc:  # a broken third-party backend must not hide the others
            rows.append({"name": name, "summary": "", "jobs": [], "available": False,
                         "why": f"cannot be loaded: {exc}"})
            continue
        check = getattr(backend, "availability", None)
        available, why = check() if check else (True, "")
        rows.append({"name": name, "summary": backend.summary,
                     "jobs": sorted(backend.capabilities), "available": available, "why": why})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Backends")
    for column in ("name", "jobs", "here", "summary / why"):
        table.add_column(column)
    for row in rows:
        here = "[green]yes[/]" if row["available"] else "[red]no[/]"
        summary = plain(row["summary"])
        table.add_row(plain(row["name"]), plain(", ".join(row["jobs"])), here,
                      f"{summary}\n[dim]{plain(row['why'])}[/]" if row["why"] else summary)
    out.print(table)
