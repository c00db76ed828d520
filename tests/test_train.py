"""``mirrorppr train extractor|joint`` end to end on a tiny build-dataset shard (CPU, tiny preset).

The resume tests compare a run interrupted after 2 of 4 steps and resumed from its checkpoint
with an uninterrupted run: every trained tensor must be bit-identical, and so must the logged
losses (only the wall-clock throughput may differ).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


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


def _torchrun(out: Path, shards: Path, port: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(port), "-m", "mirrorppr_cli", "train", "joint", "--data",
           str(shards), "--out", str(out), "--config", "tiny", "--steps", "4", "--save-every",
           "2", "--seed", "3", "--batch-size", "2", "--device", "cpu", "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_torchrun_fsdp_joint_saves_and_resumes(shards, tmp_path):
    """`train joint --fsdp` under `torchrun --nproc_per_node 2` (CPU, gloo): accelerate's
    FSDP2 shards the model (the run's distributed.json: world size 2, distributed type FSDP,
    the prepared model an FSDPModule with one unit per DiT block plus the root), checkpoints
    at steps 2 and 4 in the one-process layout; a second torchrun run resumes from step 2
    (with 2 loader workers per process) and ends with the same weights and losses as the
    uninterrupted run, bit for bit (tolerance: exact; measured 0). Against one process with
    the same global batch the weights differ by float reduction order only (bound 2e-4 as for
    DDP; measured 2.3e-6). Every module — the VAE included — lies on accelerate's device."""
    full, half, one = tmp_path / "full", tmp_path / "half", tmp_path / "one"
    port = 29600 + os.getpid() % 1000
    proc = _torchrun(full, shards, port, "--fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((full / "distributed.json").read_text())
    assert info["world_size"] == 2 and info["distributed_type"] == "FSDP"
    assert info["fsdp_version"] == 2 and info["fsdp_module"] is True
    assert "FSDP" in info["prepared_model_class"]
    assert info["fsdp_units"] == 1 + tiny_config().dit.num_layers  # root + each DiT block
    assert set(info["module_devices"]) >= {"extractor", "connector", "transformer", "vae"}
    assert all(devices == ["cpu"] for devices in info["module_devices"].values())
    assert {r["world"] for r in losses(full)} == {2}
    # interrupted after its step-2 checkpoint, resumed by a second torchrun run
    shutil.copytree(full, half)
    shutil.rmtree(half / "checkpoints" / "step-0000004")
    shutil.rmtree(half / "weights")
    proc = _torchrun(half, shards, port + 1, "--fsdp", "--resume", "--loader-workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"resumed_from": 2' in proc.stdout
    assert json.loads((half / "distributed.json").read_text())["loader_workers"] == 2
    weights = ["extractor.safetensors", "connector.safetensors",
               "lora/pytorch_lora_weights.safetensors"]
    for name in weights:
        assert_same_tensors(full / "weights" / name, half / "weights" / name)
    # the frozen DiT base, gathered from its shards for export, is whole
    assert_same_tensors(full / "weights/dit/transformer/diffusion_pytorch_model.safetensors",
                        half / "weights/dit/transformer/diffusion_pytorch_model.safetensors")
    assert losses(full) == losses(half)
    for part in ("trainable", "optimizer"):
        assert_same_tensors(full / f"checkpoints/step-0000004/{part}.safetensors",
                            half / f"checkpoints/step-0000004/{part}.safetensors")
    # one process, the same global batch: the same run up to float reduction order
    assert train("joint", shards, one, "--batch-size", "2").exit_code == 0
    for name in weights:
        a, b = load_file(str(one / "weights" / name)), load_file(str(full / "weights" / name))
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-4, name
    a = load_file(str(one / "checkpoints/step-0000004/optimizer.safetensors"))
    assert a.keys() == load_file(str(full / "checkpoints/step-0000004/optimizer.safetensors")).keys()
    for x, y in zip(losses(one), losses(full), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-9)


def test_fsdp_needs_several_processes(shards, tmp_path):
    result = train("joint", shards, tmp_path / "o", "--fsdp")
    assert result.exit_code == 2 and "torchrun" in result.output


@pytest.mark.parametrize("kind", ["extractor", "joint"])
def test_loader_workers_train_bit_identical_weights_and_resume(shards, tmp_path, kind):
    """Two background loader processes: bit-identical trained tensors to decoding in the training
    process, and a run interrupted at step 2 and resumed (with workers) matches both."""
    full, half = interrupt_and_resume(kind, shards, tmp_path, "--loader-workers", "2")
    zero = tmp_path / "zero"
    assert train(kind, shards, zero).exit_code == 0
    files = (["extractor.safetensors"] if kind == "extractor" else
             [f"weights/{n}" for n in ("extractor.safetensors", "connector.safetensors",
                                       "lora/pytorch_lora_weights.safetensors")])
    for name in files:  # bitwise equal tensors and equal metadata (safetensors writes its
        # metadata map in hash order, so a file with two metadata keys varies in byte order)
        for other in (zero, half):
            assert_same_tensors(full / name, other / name)
            assert metadata(full / name) == metadata(other / name)
    assert losses(full) == losses(half) == losses(zero)
    assert json.loads((full / "distributed.json").read_text())["loader_workers"] == 2
    assert json.loads((zero / "distributed.json").read_text())["loader_workers"] == 0


def test_plan_loader_decodes_in_seeded_background_processes(shards, monkeypatch):
    """The loader's batches come from worker processes (not this one), equal the in-process
    ones, arrive in plan order, and each worker's RNGs are seeded from (seed, rank, worker)."""
    import numpy as np

    from mirrorppr_cli.train import data as train_data

    original = QuadrupletSource.batch

    def traced(self, indices):
        out = original(self, indices)
        out["pid"] = torch.tensor(os.getpid())
        out["torch_seed"] = torch.tensor(torch.initial_seed())
        out["numpy_draw"] = torch.tensor(float(np.random.random()))
        return out

    monkeypatch.setattr(QuadrupletSource, "batch", traced)  # inherited by the forked workers
    source = QuadrupletSource(shards, 32, 5)
    plan = [(0, (i, i + 1)) for i in range(0, 12, 2)]
    got = list(train_data.plan_loader([source], plan, workers=2, seed=5, rank=1))
    pids = {int(b["pid"]) for b in got}
    assert len(pids) == 2 and os.getpid() not in pids
    for (_, indices), batch in zip(plan, got, strict=True):
        want = original(source, list(indices))
        assert all(torch.equal(batch[k], want[k]) for k in want)
    again = list(train_data.plan_loader([source], plan, workers=2, seed=5, rank=1))
    assert [int(b["torch_seed"]) for b in got] == [int(b["torch_seed"]) for b in again]
    assert [float(b["numpy_draw"]) for b in got] == [float(b["numpy_draw"]) for b in again]
    # batch k comes from worker k % 2, seeded ((5 * 1_000_003 + 1) * 1009 + worker) mod 2^32
    seeds = [((5 * 1_000_003 + 1) * 1009 + w) % 2 ** 32 for w in (0, 1)]
    assert [int(b["torch_seed"]) for b in got] == [seeds[k % 2] for k in range(len(plan))]


def test_the_device_check_sees_every_module_the_joint_step_uses(tmp_path):
    """The check run after accelerate.prepare (distributed.json) names every module left off
    the accelerator's device — the VAE included, which is a registered submodule so that
    `prepare` / `.to` move it, and is the very object the loss encodes with."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from mirrorppr_cli.model.dit import build_dit
    from mirrorppr_cli.train.loops import _report_distribution

    config = tiny_config()
    dit = build_dit(config.dit)
    model = JointModel(config, dit)
    assert model._dit.vae is model.vae and model._dit.transformer is model.transformer
    stub = SimpleNamespace(device=torch.device("meta"), num_processes=1, is_main_process=True,
                           distributed_type=DistributedType.NO, unwrap_model=lambda m: m)
    with pytest.raises(RuntimeError, match="not on meta") as error:
        _report_distribution(stub, model, tmp_path, 0)
    assert all(name in str(error.value) for name in ("vae", "transformer", "extractor"))
    model.to("meta")
    info = _report_distribution(stub, model, tmp_path, 0)
    assert info["module_devices"]["vae"] == ["meta"]
    assert next(model._dit.vae.parameters()).is_meta
    assert json.loads((tmp_path / "distributed.json").read_text())["world_size"] == 1
