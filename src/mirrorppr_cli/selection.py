"""Carry part of a measured edit (``retouch --only face|body``, ``--ops NAME,…``) and read
operation lists saved by ``explain --json`` (``apply --ops-file``).

A measured edit has a face part (named catalog operations, plus in hybrid mode the motion they
do not name; in flow mode the motion alone) and a body part (named body operations, or the body
motion carried as measured when the operations do not name it). ``--only`` keeps one part;
``--ops`` keeps the named operations listed and nothing unnamed, since unnamed motion cannot be
told apart by operation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .errors import InputError, UsageError
from .geometric.fit import Explanation
from .geometric.measure import Exemplar
from .ops import CATALOG, OpRequest, parse_op
from .ops.body_catalog import BODY_CATALOG

PARTS = ("face", "body")


def parse_op_names(text: str) -> tuple[str, ...]:
    """``"eye_resize, nose_alar"`` → ``("eye_resize", "nose_alar")``; unknown names refused."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError("--ops: give operation names, e.g. --ops eye_resize,nose_alar")
    unknown = [n for n in names if n not in CATALOG and n not in BODY_CATALOG]
    if unknown:
        raise UsageError(f"--ops: unknown operation {', '.join(unknown)} (see `mirrorppr ops`)")
    return names


def select_parts(exemplar: Exemplar, *, only: str | None = None,
                 ops: tuple[str, ...] | None = None) -> tuple[Exemplar, list[str]]:
    """``(exemplar reduced to what is to be carried, notes for the report)``.

    ``only``: ``"face"`` drops the body part, ``"body"`` the face part. ``ops``: keeps these
    named operations only (face and body), without the unnamed motion; it needs named face
    operations, so a flow-mode edit is refused.
    """
    if only is not None and only not in PARTS:
        raise UsageError(f"--only must be face or body, not {only!r}")
    notes: list[str] = []
    face_dropped = replace(exemplar, explanation=Explanation([], 0.0, 0.0), residual=None)
    if only == "body":
        exemplar = face_dropped
    elif only == "face":
        exemplar = replace(exemplar, body=None, body_residual=None)
    if ops is None:
        return exemplar, notes
    if exemplar.explanation is None:
        raise UsageError("--ops carries named operations: use --mode hybrid (default) or "
                         "catalog, not flow")
    face = exemplar.explanation
    body = exemplar.body
    fitted = {r.name for r in face.ops} | {r.name for r in (body.ops if body else [])}
    if exemplar.residual is not None:
        notes.append("--ops: the face motion no operation names is left out")
    if exemplar.body_residual is not None:
        notes.append("--ops: the body motion carried as measured (no body operation names "
                     "it) is left out; --mode catalog re-plans the fitted body operations")
    missing = [n for n in ops if n not in fitted]
    if missing:
        notes.append(f"--ops: {', '.join(missing)} not in this exemplar's edit (it has: "
                     f"{', '.join(sorted(fitted)) or 'no named operation'})")
    keep = set(ops)
    exemplar = replace(
        exemplar,
        explanation=replace(face, ops=[r for r in face.ops if r.name in keep]),
        residual=None,
        body=replace(body, ops=[r for r in body.ops if r.name in keep]) if body else None,
        body_residual=None,
    )
    return exemplar, notes


def read_ops_file(path: Path) -> list[OpRequest]:
    """The operations (face, then body) in ``explain --json``'s output saved to ``path``, or in
    a JSON list of ``{"name", "strength"}``; each checked as ``--op NAME=STRENGTH`` is."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON file from `mirrorppr explain --json` "
                         f"({type(error).__name__})") from None
    if isinstance(data, dict):
        body = data.get("body") or {}
        entries = [*(data.get("ops") or []), *(body.get("ops") or [] if isinstance(body, dict)
                                               else [])]
    else:
        entries = data
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str)
            and isinstance(e.get("strength"), int | float) and not isinstance(e["strength"], bool)
            for e in entries):
        raise InputError(f"{path}: expected `mirrorppr explain --json` output (\"ops\": "
                         "[{\"name\": …, \"strength\": …}])")
    if not entries:
        raise InputError(f"{path}: names no operation; nothing to apply")
    requests = []
    for entry in entries:
        try:
            requests.append(parse_op(f"{entry['name']}={float(entry['strength']):.4f}"))
        except UsageError as error:
            raise InputError(f"{path}: {error}") from None
    return requests
