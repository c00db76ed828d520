"""The neural execution backends (``eager``, ``compile``, ``fp8``) on the ``tiny`` preset, CPU.

One weights folder (a seeded random tiny model, LoRA included) is loaded by every backend.
Stated tolerances, measured when written (torch 2.14.1 CPU, 2 sampling steps, 64² query):
eager vs compile: identical bytes (bound asserted: mean |Δ| ≤ 1e-4 in [0, 1]); eager vs fp8
(float8 e4m3 weight storage, bf16 compute): mean |Δ| 0.0019, max 3/255 (bound asserted: mean
≤ 0.01, max ≤ 24/255).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _tiny_model import tiny_modules
from mirrorppr_backends.neural import CompileBackend, Fp8Backend, NeuralBackend, bucket_for
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.errors import MissingWeightsError, OutOfMemory, UsageError
from mirrorppr_cli.model.engine import NeuralEngine, export_weights

runner = CliRunner()
STEPS = 2


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A complete tiny weights folder: random bases, R-Former, connector and a non-zero LoRA."""
    config, extractor, connector, dit = tiny_modules(0)
    return export_weights(tmp_path_factory.mktemp("w") / "weights", config, extractor, connector,
                          dit)


@pytest.fixture(scope="module")
def images():
    face = data.astronaut()
    before = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
    after = before.copy()
    after[24:40, 20:44] = after[24:40, 20:44] // 2
    query = cv2.resize(face[40:400, 60:420], (64, 64), interpolation=cv2.INTER_AREA)
    return before, after, query


@pytest.fixture(scope="module")
def eager_result(weights, images):
    return NeuralBackend(weights=weights, steps=STEPS).retouch(*images)


def test_weights_folder_has_every_part(weights):
    names = {p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file()}
    for needed in ("config.json", "extractor.safetensors", "connector.safetensors",
                   "lora/pytorch_lora_weights.safetensors", "mae/config.json",
                   "dit/transformer/config.json", "dit/vae/config.json",
                   "dit/scheduler/scheduler_config.json"):
        assert needed in names


def test_eager_is_deterministic_and_floors_to_16(weights, images, eager_result):
    assert eager_result.shape == (64, 64, 3) and eager_result.dtype == np.uint8
    again = NeuralBackend(weights=weights, steps=STEPS).retouch(*images)
    assert np.array_equal(eager_result, again)
    other_seed = NeuralBackend(weights=weights, steps=STEPS, seed=7).retouch(*images)
    assert not np.array_equal(eager_result, other_seed)
    before, after, _ = images
    odd = cv2.resize(data.astronaut(), (70, 50))
    assert NeuralBackend(weights=weights, steps=STEPS).retouch(before, after, odd).shape == (48, 64, 3)


def test_the_exemplar_changes_the_result(weights, images, eager_result):
    before, _, query = images
    unchanged = NeuralBackend(weights=weights, steps=STEPS).retouch(before, before, query)
    assert not np.array_equal(unchanged, eager_result)


def test_the_edit_keeps_its_condition_tokens(weights, images, eager_result, monkeypatch):
    """A measured neural edit computes the exemplar's condition once, for every query of a
    batch, and gives the bytes of the one-pair call."""
    from mirrorppr_cli.neural_job import NeuralEdit

    backend = NeuralBackend(weights=weights, steps=STEPS)
    engine = backend.engine()
    calls = []
    real = engine.condition
    monkeypatch.setattr(engine, "condition", lambda *a: calls.append(1) or real(*a))
    before, after, query = images
    edit = NeuralEdit(before, after)
    first = backend.apply(edit, query)
    assert edit.condition is not None and len(calls) == 1
    second = backend.apply(edit, query[::-1].copy())
    assert len(calls) == 1  # not recomputed for the second query
    assert np.array_equal(first, eager_result) and second.shape == first.shape


def test_compile_matches_eager_and_does_not_recompile_within_a_bucket(weights, images,
                                                                      eager_result, tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    backend = CompileBackend(weights=weights, steps=STEPS, compile_cache=tmp_path / "cache")
    result = backend.retouch(*images)
    diff = np.abs(result.astype(np.float64) - eager_result.astype(np.float64)) / 255
    assert diff.mean() <= 1e-4
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0, "nothing was compiled"
    before, after, _ = images
    second = cv2.resize(data.astronaut()[100:460, 50:410], (70, 66))  # same 64×64 bucket
    assert bucket_for(70, 66) == bucket_for(64, 64)
    out = backend.retouch(before, after, second)
    assert out.shape == (64, 64, 3)
    assert counters["stats"]["unique_graphs"] == graphs, "recompiled for the same bucket"
    wide = cv2.resize(data.astronaut(), (128, 64))  # another bucket: compiles again
    backend.retouch(before, after, wide)
    assert counters["stats"]["unique_graphs"] > graphs
    # A new backend (a new process, as far as dynamo knows) reuses the on-disk compile cache.
    torch._dynamo.reset()
    hits = counters["inductor"]["fxgraph_cache_hit"]
    CompileBackend(weights=weights, steps=STEPS, compile_cache=tmp_path / "cache").retouch(*images)
    assert counters["inductor"]["fxgraph_cache_hit"] > hits
    assert any((tmp_path / "cache").iterdir())
    torch._dynamo.reset()


def test_fp8_is_close_to_eager(weights, images, eager_result):
    backend = Fp8Backend(weights=weights, steps=STEPS)
    result = backend.retouch(*images)
    assert backend.mode == "layerwise"  # no CUDA here
    diff = np.abs(result.astype(np.float64) - eager_result.astype(np.float64)) / 255
    assert diff.mean() <= 0.01 and diff.max() <= 24 / 255
    weight = backend.engine().dit.transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert weight.dtype == torch.float8_e4m3fn
    lora = backend.engine().dit.transformer.transformer_blocks[0].attn.to_q.lora_A["default"]
    assert lora.weight.dtype != torch.float8_e4m3fn


def test_one_checkpoint_loads_into_every_backend(weights):
    engines = [cls(weights=weights).engine() for cls in (NeuralBackend, Fp8Backend)]
    a, b = (e.connector.proj[0].weight for e in engines)
    assert torch.equal(a, b)


def test_bucket_for():
    assert bucket_for(1024, 1024) == (1024, 1024)
    assert bucket_for(1100, 1000) == (1024, 1024)
    w, h = bucket_for(4000, 3000)
    assert abs(w / h - 4 / 3) < 0.02 and 1328 * 1328 * 0.95 < w * h < 1328 * 1328 * 1.05
    assert bucket_for(30, 20) == bucket_for(20, 20) or bucket_for(30, 20)[0] % 16 == 0
    assert all(s % 16 == 0 for s in bucket_for(777, 1333))


def test_missing_weights_and_cuda_are_clear(images, monkeypatch):
    monkeypatch.delenv("MIRRORPPR_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError, match="--weights"):
        NeuralBackend().retouch(*images)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            NeuralBackend(weights="x", device="cuda").device()
        ok, why = NeuralBackend(weights="x", device="cuda").availability()
        assert not ok and "no CUDA" in why


def test_out_of_memory_suggests_fp8(weights, images, monkeypatch):
    backend = NeuralBackend(weights=weights, steps=STEPS)

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(NeuralEngine, "sample", boom)
    with pytest.raises(OutOfMemory, match="fp8") as caught:
        backend.retouch(*images)
    assert caught.value.exit_code == 6


def test_cli_retouch_with_a_neural_backend(weights, images, tmp_path):
    before, after, query = images
    paths = {}
    for name, array in (("before", before), ("after", after), ("query", query)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(array).save(paths[name])
    args = ["retouch", "--ex", str(paths["before"]), str(paths["after"]), "--query",
            str(paths["query"]), "--backend", "eager", "--weights", str(weights), "--steps",
            str(STEPS), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    written = Path(report["items"][0]["output"])
    assert written.name == "query_retouched.png"
    assert np.asarray(Image.open(written)).shape == (64, 64, 3)
    assert runner.invoke(app, args).exit_code == 4  # no overwrite without --force
    no_weights = runner.invoke(app, args[:8] + ["--weights", str(tmp_path / "none")])
    assert no_weights.exit_code == 5 and "config.json" in no_weights.output
    strength = runner.invoke(app, args + ["--force", "--strength", "0.5"])
    assert strength.exit_code == 2 and "warp backend" in strength.output


def test_backends_lists_availability(weights):
    result = runner.invoke(app, ["backends", "--json", "--weights", str(weights)])
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"warp", "eager", "compile", "fp8"} <= rows.keys()
    assert rows["warp"]["available"] and rows["eager"]["available"]
    assert "fp8" in rows["fp8"]["why"]
    missing = json.loads(runner.invoke(app, ["backends", "--json"]).stdout)
    assert not {r["name"]: r for r in missing}["eager"]["available"] or os.environ.get(
        "MIRRORPPR_WEIGHTS")


def test_a_third_party_backend_is_discovered_through_entry_points(tmp_path):
    """A test-only distribution registers `dummy` in the entry-point group."""
    package = tmp_path / "dummy_mirrorppr_backend"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        class DummyBackend:
            name = "dummy"
            summary = "test-only backend from another distribution"
            capabilities = frozenset({"retouch"})

            def __init__(self, **options):
                pass

            def retouch(self, before, after, query, strength=1.0):
                return query
    '''))
    dist = tmp_path / "dummy_mirrorppr_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dummy-mirrorppr-backend\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mirrorppr.backends]\ndummy = dummy_mirrorppr_backend:DummyBackend\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mirrorppr_cli", "backends", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["dummy"]["summary"].startswith("test-only")
    assert rows["dummy"]["available"]
    plain = subprocess.run([sys.executable, "-m", "mirrorppr_cli", "backends", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert "dummy" not in {row["name"] for row in json.loads(plain.stdout)}
