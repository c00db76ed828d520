"""``mirrorppr train extractor|joint`` end to end on a tiny build-dataset shard (CPU, tiny preset).

The resume tests compare a run interrupted after 2 of 4 steps and resumed from its checkpoint
with an uninterrupted run: every trained tensor must be bit-identical, and so must the logged
losses (only the wall-clock throughput may differ).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data
from typer.testing import CliRunner

from mirrorppr_cli.cli import app
from mirrorppr_cli.model.config import tiny_config
from mirrorppr_cli.train.checkpoint import latest_checkpoint
from mirrorppr_cli.train.data import QuadrupletSource, letterbox
from mirrorppr_cli.train.loops import JointModel, cosine_lr

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """A real build-dataset output: the astronaut, 2 pairs × (base + 2 augmented views)."""
    root = tmp_path_factory.mktemp("train-data")
    faces = root / "faces"
    faces.mkdir()
    Image.fromarray(data.astronaut()).save(faces / "astronaut.png")
    result = runner.invoke(app, ["build-dataset", "--faces", str(faces), "--out",
                                 str(root / "build"), "--pairs", "2", "--augment", "2",
                                 "--size", "128", "--json"])
    assert result.exit_code == 0, result.output
    return root / "build"


def train(kind: str, shards: Path, out: Path, *extra: str):
    args = ["train", kind, "--data", str(shards), "--out", str(out), "--config", "tiny",
            "--steps", "4", "--save-every", "2", "--seed", "3", "--json", *extra]
    return runner.invoke(app, args)


def losses(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("samples_per_s")
    return rows


def interrupt_and_resume(kind: str, shards: Path, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    full, half = tmp_path / "full", tmp_path / "half"
    result = train(kind, shards, full, *extra)
    assert result.exit_code == 0, result.output
    # The interrupted run: the same command, stopped after its step-2 checkpoint.
    shutil.copytree(full, half)
    shutil.rmtree(half / "checkpoints" / "step-0000004")
    for leftover in ("extractor.safetensors", "weights"):
        path = half / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    with open(half / "metrics.jsonl", "a") as log:  # a step logged after the last checkpoint
        log.write(json.dumps({"step": 3, "loss": 99.0, "samples_per_s": 1.0}) + "\n")
    result = train(kind, shards, half, "--resume", *extra)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_from"] == 2
    return full, half


def assert_same_tensors(a: Path, b: Path) -> int:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys() and x
    for key in x:
        assert torch.equal(x[key], y[key]), key
    return len(x)


def test_train_extractor_resumes_bit_identically(shards, tmp_path):
    full, half = interrupt_and_resume("extractor", shards, tmp_path)
    n = assert_same_tensors(full / "extractor.safetensors", half / "extractor.safetensors")
    assert n > 10
    assert losses(full) == losses(half)
    rows = losses(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and "lpips" in r and "mse" in r for r in rows)
    # the baseline beside the loss: the unchanged query's MSE, which an untrained decoder
    # (zero-initialised head: it returns the query) matches at the first step
    assert all(r["mse_unchanged"] > 0 for r in rows)
    assert rows[0]["mse"] == pytest.approx(rows[0]["mse_unchanged"], rel=1e-3)
    # cosine decay from lr_max towards lr_min over the run
    assert rows[0]["lr"] == pytest.approx(tiny_config().extractor_training.lr_max)
    assert rows[0]["lr"] > rows[-1]["lr"] > tiny_config().extractor_training.lr_min
    state = json.loads((latest_checkpoint(full) / "state.json").read_text())
    assert state["step"] == 4 and state["config"]["name"] == "tiny"
    # The trained weights differ from a fresh start: the steps did something.
    trained = load_file(str(full / "extractor.safetensors"))
    assert not torch.equal(trained["decoder.head.weight"], torch.zeros_like(trained["decoder.head.weight"]))


def test_train_joint_resumes_bit_identically(shards, tmp_path):
    full, half = interrupt_and_resume("joint", shards, tmp_path)
    for name in ("extractor.safetensors", "connector.safetensors",
                 "lora/pytorch_lora_weights.safetensors"):
        assert_same_tensors(full / "weights" / name, half / "weights" / name)
    assert losses(full) == losses(half)
    extractor = load_file(str(full / "weights" / "extractor.safetensors"))
    assert extractor and all(k.startswith("extractor.rformer.") for k in extractor)


def test_joint_step_trains_rformer_connector_lora_and_leaves_mae_and_dit_frozen(shards):
    from mirrorppr_cli.model.dit import add_lora, build_dit, flow_matching_loss  # noqa: F401

    torch.manual_seed(0)
    config = tiny_config()
    dit = build_dit(config.dit)
    add_lora(dit.transformer, config.lora)
    model = JointModel(config, dit)
    with torch.no_grad():  # lora_B starts at zero, which would zero lora_A's gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = QuadrupletSource(shards, 64, 0).batch([0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(batch["before"], batch["after"], batch["query"], batch["target"],
                 torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("extractor.rformer.") for n in grads)
    assert any(n.startswith("connector.") for n in grads)
    lora = [n for n in grads if "lora_" in n]
    assert lora and all(n.startswith("transformer.") for n in lora)
    nonzero = [n for n in grads if grads[n] is not None and grads[n].abs().sum() > 0]
    assert any("rformer" in n for n in nonzero) and any("connector" in n for n in nonzero)
    assert any("lora_A" in n for n in nonzero) and any("lora_B" in n for n in nonzero)
    optimizer.step()
    after = dict(model.named_parameters())
    for name, value in before.items():
        frozen = name.startswith("extractor.mae.") or (
            name.startswith("transformer.") and "lora_" not in name)
        if frozen:
            assert torch.equal(after[name], value), f"{name} changed"
    assert not all(torch.equal(after[n], before[n]) for n in nonzero)


def test_existing_run_needs_resume_or_force(shards, tmp_path):
    assert train("extractor", shards, tmp_path / "r").exit_code == 0
    again = train("extractor", shards, tmp_path / "r")
    assert again.exit_code == 4 and "--resume" in again.output
    assert train("extractor", shards, tmp_path / "r", "--force").exit_code == 0


def test_resume_with_another_config_is_refused(shards, tmp_path):
    out = tmp_path / "r"
    assert train("extractor", shards, out).exit_code == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"base": "tiny", "rformer": {"num_layers": 1}}))
    result = runner.invoke(app, ["train", "extractor", "--data", str(shards), "--out", str(out),
                                 "--config", str(other), "--steps", "4", "--resume"])
    assert result.exit_code == 2 and "config differs" in result.output


def test_resume_without_a_checkpoint(shards, tmp_path):
    result = train("extractor", shards, tmp_path / "empty", "--resume")
    assert result.exit_code == 3 and "no checkpoint" in result.output


def test_missing_shards_and_bad_config(tmp_path):
    result = train("extractor", tmp_path / "nothing-here", tmp_path / "o")
    assert result.exit_code == 3 and "build-dataset" in result.output
    result = runner.invoke(app, ["train", "joint", "--data", str(tmp_path), "--out",
                                 str(tmp_path / "o"), "--config", "huge"])
    assert result.exit_code == 2 and "neither a preset" in result.output


def test_paper_config_without_weights_says_what_to_fetch(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = runner.invoke(app, ["train", "extractor", "--data", str(shards), "--out",
                                 str(tmp_path / "o"), "--config", "paper", "--steps", "1"])
    assert result.exit_code == 5, result.output
    assert "facebook/vit-mae-large" in result.output and "--mae" in result.output
    result = runner.invoke(app, ["train", "joint", "--data", str(shards), "--out",
                                 str(tmp_path / "o2"), "--config", "paper", "--steps", "1",
                                 "--dit", str(tmp_path / "no-such-dir")])
    assert result.exit_code == 5 and "--dit" in result.output


def test_quadruplets_are_two_different_views_fixed_by_seed_and_index(shards):
    source = QuadrupletSource(shards, 64, seed=5)
    assert len(source) == 2
    choices = [source.choice(i) for i in range(50)]
    assert all(ex != q for _, ex, q in choices)
    assert len({c[1:] for c in choices}) > 3
    assert choices == [QuadrupletSource(shards, 64, seed=5).choice(i) for i in range(50)]
    assert choices != [QuadrupletSource(shards, 64, seed=6).choice(i) for i in range(50)]
    sample = source.sample(0)
    assert set(sample) == {"before", "after", "query", "target"}
    assert all(v.shape == (3, 64, 64) and 0 <= float(v.min()) and float(v.max()) <= 1
               for v in sample.values())
    # exemplar and query show the edit differently placed; before and after differ a little
    assert not torch.equal(sample["before"], sample["query"])
    assert 0 < float((sample["before"] - sample["after"]).abs().max())


def test_letterbox_keeps_the_aspect():
    import numpy as np

    wide = np.zeros((50, 100, 3), np.uint8)
    wide[:, :] = 255
    box = letterbox(wide, 64)
    assert box.shape == (64, 64, 3)
    rows = np.where(box[:, 32, 0] > 0.9)[0]
    assert len(rows) == 32 and rows[0] == 16  # 100→64 wide, 50→32 tall, centred
    assert box[0, 0, 0] == pytest.approx(0.5)


def test_cosine_lr_schedule():
    assert cosine_lr(0, 100, 1e-4, 5e-5) == pytest.approx(1e-4)
    assert cosine_lr(50, 100, 1e-4, 5e-5) == pytest.approx(7.5e-5)
    assert cosine_lr(100, 100, 1e-4, 5e-5) == pytest.approx(5e-5)
    assert cosine_lr(0, 100, 1e-4, 5e-5, warmup=10) == pytest.approx(1e-5)


@pytest.mark.parametrize("kind", ["extractor", "joint"])
def test_torchrun_two_processes_match_one_process(shards, tmp_path, kind):
    """`torchrun --nproc_per_node 2` (gloo DDP on the CPU) with a global batch of 2 trains the
    same weights as one process with the same global batch: each process takes one sample,
    every sample's noise comes from its own (seed, step, index) generator, gradients are
    averaged. Tolerance: float reduction order, amplified by AdamW's division by √v for
    near-zero gradients (measured max |Δ| 5.7e-5 for the extractor after 4 steps at lr 1e-3;
    bound 2e-4; one AdamW step moves a parameter by up to lr = 1e-3). The frozen last-block
    text LoRA no longer stops DDP at step 2."""
    import os
    import subprocess
    import sys

    one = tmp_path / "one"
    assert train(kind, shards, one, "--batch-size", "2").exit_code == 0
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000 + (kind == "joint")),
           "-m", "mirrorppr_cli", "train", kind, "--data", str(shards), "--out", str(two),
           "--config", "tiny", "--steps", "4", "--save-every", "2", "--seed", "3",
           "--batch-size", "2", "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["world"] for r in losses(two)} == {2}  # two processes really ran
    assert {r["world"] for r in losses(one)} == {1}
    name = "extractor.safetensors" if kind == "extractor" else "weights/connector.safetensors"
    files = [name] if kind == "extractor" else [name, "weights/extractor.safetensors",
                                                "weights/lora/pytorch_lora_weights.safetensors"]
    for name in files:
        a, b = load_file(str(one / name)), load_file(str(two / name))
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-4, name
    assert [r["step"] for r in losses(two)] == [1, 2, 3, 4]
    for x, y in zip(losses(one), losses(two), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-9)


def test_curriculum_stages_run_in_order_with_their_batch_sizes(shards, tmp_path):
    """Two --data stages (simulated, then professional): steps per stage, the professional
    batch size in stage 2, and one cosine schedule over the whole run."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"base": "tiny", "extractor_training": {
        "batch_size": 2, "batch_size_professional": 1, "lpips_weight": 0.0}}))
    out = tmp_path / "cur"
    result = runner.invoke(app, ["train", "extractor", "--data", str(shards), "--data",
                                 str(shards), "--out", str(out), "--config", str(config),
                                 "--steps", "2", "--steps", "3", "--json"])
    assert result.exit_code == 0, result.output
    rows = losses(out)
    assert [r["stage"] for r in rows] == [0, 0, 1, 1, 1]
    assert [r["batch"] for r in rows] == [2, 2, 1, 1, 1]
    assert all("lpips" not in r for r in rows)  # λ = 0: MSE only
    lrs = [r["lr"] for r in rows]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == 5
    bad = runner.invoke(app, ["train", "extractor", "--data", str(shards), "--data", str(shards),
                              "--out", str(tmp_path / "bad"), "--config", "tiny", "--steps", "1",
                              "--steps", "2", "--steps", "3"])
    assert bad.exit_code == 2 and "one --steps per --data" in bad.output


def test_show_config_prints_a_loadable_preset(tmp_path):
    result = runner.invoke(app, ["train", "show-config", "paper"])
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["rformer"]["num_queries"] == 8 and shown["connector"]["output_dim"] == 3584
    path = tmp_path / "mine.json"
    path.write_text(result.stdout)
    again = runner.invoke(app, ["train", "show-config", str(path)])
    assert json.loads(again.stdout) == shown
    assert runner.invoke(app, ["train", "show-config", "nope"]).exit_code == 2


@pytest.mark.parametrize("kind", ["extractor", "joint"])
def test_adam_eps_from_the_config_reaches_the_optimizer(shards, tmp_path, kind):
    """``adam_eps`` (not in the paper) is AdamW's ε: the checkpoint's optimizer state has it."""
    stage = "extractor_training" if kind == "extractor" else "joint_training"
    config = tmp_path / "eps.json"
    config.write_text(json.dumps({"base": "tiny", stage: {"adam_eps": 1e-12}}))
    out = tmp_path / "run"
    args = ["train", kind, "--data", str(shards), "--out", str(out), "--config", str(config),
            "--steps", "1", "--save-every", "1", "--seed", "3", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["optimizer"]["param_groups"][0]["eps"] == 1e-12
