"""The memory plan of the real 20.4 B configuration (parameter counts exact, on the meta device;
activations estimated as :mod:`mirrorppr_cli.model.memory_plan` states), and the loader's
meta-device build: no float32 copy of the DiT before the cast."""

from __future__ import annotations

import pytest
import torch

from mirrorppr_cli.model.config import paper_config, tiny_config
from mirrorppr_cli.model.memory_plan import GB, H100_BYTES, memory_plan, parameter_counts


@pytest.fixture(scope="module")
def counts():
    return parameter_counts(paper_config())


def test_real_parameter_counts(counts):
    assert counts.dit == 20_430_401_088  # QwenImageTransformer2DModel, 60 × 3072
    assert counts.vl == 8_292_166_656  # Qwen2.5-VL-7B (text_encoder/)
    assert counts.lora == 94_371_840  # rank 32 on 8 projections × 60 blocks
    assert (counts.mae, counts.rformer, counts.connector) == (303_301_632, 35_448_576,
                                                               72_263_680)


def test_fp8_inference_fits_an_80_gb_card_and_bf16_says_what_to_offload(counts):
    config = paper_config()
    fp8 = memory_plan(config, "fp8", counts=counts)
    bf16 = memory_plan(config, "bf16", counts=counts)
    train = memory_plan(config, "train", counts=counts)
    # Measured values of the plan (1024² output, ~9.6 k tokens): fp8 42.2 GB, bf16 62.6 GB,
    # joint training per GPU 70.1 GB; host peak while loading 68.7 GB.
    assert fp8["device_peak"] < H100_BYTES and fp8["offload_needed"] == "none"
    assert fp8["parts"]["dit"] == counts.dit  # one byte per weight
    assert 40 * GB < fp8["device_peak"] < 45 * GB
    assert 60 * GB < bf16["device_peak"] < 65 * GB and bf16["fits_h100"]
    assert bf16["offload_needed"] == "none"
    # Offloading the text encoder is what would be needed next: it is 16.6 GB of the plan.
    assert bf16["parts"]["qwen2.5-vl"] == 2 * counts.vl
    assert train["device_peak"] < H100_BYTES
    # Never the 82 GB float32 DiT: the host holds bf16 weights plus one shard.
    assert fp8["host_peak"] < 4 * counts.dit
    assert bf16["host_peak"] < 70 * GB


def test_a_loaded_dit_is_built_on_meta_and_filled_in_the_target_dtype(tmp_path, monkeypatch):
    """from_pretrained builds the transformer on the meta device (no float32 allocation) and
    reads each tensor straight into bf16."""
    from diffusers import QwenImageTransformer2DModel
    from safetensors.torch import save_file

    from mirrorppr_cli.model.dit import build_dit

    torch.manual_seed(0)
    cfg = tiny_config().dit
    dit = build_dit(cfg)
    (tmp_path / "transformer").mkdir()
    dit.transformer.save_config(tmp_path / "transformer")
    save_file({k: v.contiguous() for k, v in dit.transformer.state_dict().items()},
              str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"))
    dit.vae.save_pretrained(tmp_path / "vae")
    dit.scheduler.save_pretrained(tmp_path / "scheduler")
    seen = []
    original = torch.nn.Linear.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.weight.device.type)  # where each linear layer is first allocated

    monkeypatch.setattr(torch.nn.Linear, "__init__", spy)
    loaded = build_dit(cfg, weights=tmp_path, dtype=torch.bfloat16)
    assert isinstance(loaded.transformer, QwenImageTransformer2DModel)
    assert len(seen) > 20 and set(seen) == {"meta"}
    assert {p.dtype for p in loaded.transformer.parameters()} == {torch.bfloat16}
    assert loaded.root == tmp_path
