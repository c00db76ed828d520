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
import os
import tarfile
import tempfile
from pathlib import Path


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
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json_atomic(path: Path, value) -> None:
    """Canonical JSON (sorted keys, 1-space indent, trailing newline), atomically."""
    write_atomic(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_members(path: Path) -> list[tuple[str, bytes]]:
    """``(name, data)`` of every member of a shard, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
