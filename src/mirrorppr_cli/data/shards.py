"""Deterministic, atomic WebDataset-style tar shards.

A shard is a plain POSIX tar whose members are named ``KEY.EXT`` (all files of a sample
share its key), the layout the ``webdataset`` library reads. Member metadata is fixed
(mtime 0, owner 0, mode 644), so equal contents give equal bytes. Writing goes to a hidden
temporary file that is renamed into place: a killed build never leaves a partial shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from ..io.write import write_atomic as _write_atomic


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """The tar archive of ``members`` (name, data) in the given order, deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, replacing any file there: the tool's one atomic
    writer (:func:`mirrorppr_cli.io.write_atomic`: a hidden ``.part`` temporary beside
    ``path``, fsynced and renamed into place). Failures raise ``OSError``."""
    _write_atomic(path, data, replace=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json_atomic(path: Path, value) -> None:
    """Canonical JSON (sorted keys, 1-space indent, trailing newline), atomically."""
    write_atomic(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_members(path: Path) -> list[tuple[str, bytes]]:
    """``(name, data)`` of every member of a shard, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
