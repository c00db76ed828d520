"""Peak memory (issue #19): what a retouch holds besides its images.

* The pose graph (~100 MB of weights, XNNPACK buffers and tensors once it has run) is started
  only for a body edit: a face-only exemplar and its queries never start it. Checked in a fresh
  process, on the graph itself (the tests of :mod:`test_body_transfer` check that the detector
  is not called); the same process then measures a body edit, which must start it.
* :func:`~mirrorppr_cli.memory.keep_freed_memory` leaves one malloc arena, shared by all
  threads (MediaPipe's graphs allocate on their own threads): a thread that allocates gets no
  arena of its own.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirrorppr_cli.geometric.body import detect_body
from mirrorppr_cli.geometric.mls import apply_local_warp
from mirrorppr_cli.ops import OpRequest, plan_warp
from mirrorppr_cli.ops.body_plan import apply_body_ops

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Runs in a fresh process: argv[1] is a JSON list of the files.
GRAPHS = r"""
import json, sys
from pathlib import Path
from mirrorppr_cli.geometric import body
from mirrorppr_cli.retouch_job import load_exemplar, retouch_file

before, face_after, body_after, query, out = (Path(p) for p in json.loads(sys.argv[1]))
started = lambda: {"pose": body._pose_graph.cache_info().currsize,
                   "selfie": body._selfie_graph.cache_info().currsize}
exemplar = load_exemplar(before, face_after, mode="hybrid")
report = retouch_file(exemplar, query, out, force=True)
face_only = {**started(), "changed": report.changed_pixels, "body": exemplar.body is not None}
exemplar = load_exemplar(before, body_after, mode="hybrid")
print(json.dumps({"face_only": face_only,
                  "body_edit": {**started(), "body": exemplar.body is not None}}))
"""


def _save(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return str(path)


def test_pose_graph_starts_only_for_a_body_edit(astronaut_512, astronaut_512_points, tmp_path):
    before = np.asarray(astronaut_512)
    face_after = apply_local_warp(before, plan_warp(
        astronaut_512_points, [OpRequest("eye_resize", 60), OpRequest("mouth_resize", -50)]))
    body_after = apply_body_ops(before, detect_body(before), [OpRequest("shoulder_width", -60)])
    files = [_save(tmp_path / "before.png", before), _save(tmp_path / "face.png", face_after),
             _save(tmp_path / "body.png", body_after),
             _save(tmp_path / "query.png", np.fliplr(before)), str(tmp_path / "out.png")]
    proc = subprocess.run([sys.executable, "-c", GRAPHS, json.dumps(files)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # the face edit was carried (the query was retouched), without the pose graph
    assert seen["face_only"] == {"pose": 0, "selfie": 0, "changed": seen["face_only"]["changed"],
                                 "body": False}
    assert seen["face_only"]["changed"] > 500
    # the control: a body edit starts it (once), so the check above can see it
    assert seen["body_edit"] == {"pose": 1, "selfie": 0, "body": True}


# Runs in a fresh process: prints malloc's arenas (malloc_stats) after a thread allocated.
ARENAS = r"""
import ctypes, sys, threading
from mirrorppr_cli.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
kept = []
thread = threading.Thread(target=lambda: kept.append(libc.malloc(1 << 16)))
thread.start()
thread.join()
assert kept[0]
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items()  # glibc's defaults, whatever the caller set
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sum(line.startswith("Arena ") for line in proc.stderr.splitlines())


@pytest.mark.skipif(not GLIBC, reason="malloc arenas are glibc's")
def test_keep_freed_memory_leaves_one_arena_for_all_threads():
    assert _arenas("plain") == 2  # the control: a thread that allocates gets its own
    assert _arenas("keep") == 1
