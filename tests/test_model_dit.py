"""The Qwen-Image-Edit DiT wrapper: building, LoRA, flow-matching loss, sampling, weights.

Everything runs the real diffusers classes at the ``tiny`` preset's size (seconds on a CPU);
the paper-size transformer is only built on the meta device, to count its parameters.
"""

from __future__ import annotations

import socket

import huggingface_hub.constants
import pytest
import torch

from mirrorppr_cli.model.config import paper_config, tiny_config
from mirrorppr_cli.model.dit import (
    DiT,
    MissingWeightsError,
    add_lora,
    build_dit,
    count_parameters,
    encode_images,
    flow_matching_loss,
    generate,
    load_lora,
    lora_state_dict,
    pack_latents,
    save_lora,
)

CFG = tiny_config()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _tiny(seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    return build_dit(CFG.dit)


def _cond(batch: int = 1, length: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, length, CFG.dit.joint_attention_dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, -1] = 0  # one padded token, so the mask is really used
    return cond, mask


def _images(*shape: int, seed: int = 2) -> torch.Tensor:
    """Random 8-bit-exact images in [0, 1] (so the pipeline's PIL round trip is lossless)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


def _perturb_lora(transformer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)


def test_build_tiny_is_frozen_and_shapes():
    dit = _tiny()
    assert dit.vae is not None and dit.vae_scale_factor == 4
    assert not any(p.requires_grad for p in dit.transformer.parameters())
    assert not any(p.requires_grad for p in dit.vae.parameters())
    assert not dit.transformer.training and not dit.vae.training

    images = _images(2, 3, 32, 48)
    latents = encode_images(dit, images)
    assert latents.shape == (2, CFG.dit.vae_z_dim, 1, 8, 12)
    tokens = pack_latents(latents)
    assert tokens.shape == (2, 4 * 6, CFG.dit.in_channels)

    cond, mask = _cond(batch=2)
    out = dit.transformer(hidden_states=torch.cat([tokens, tokens], dim=1), timestep=torch.ones(2),
                          encoder_hidden_states=cond, encoder_hidden_states_mask=mask,
                          img_shapes=[[(1, 4, 6), (1, 4, 6)]] * 2, return_dict=False)[0]
    assert out.shape == (2, 48, CFG.dit.patch_size ** 2 * CFG.dit.out_channels)


def test_flow_matching_loss_is_seeded_and_trains_cond_and_lora():
    dit = _tiny()
    cond, mask = _cond(batch=2)
    query, target = _images(2, 3, 32, 32, seed=3), _images(2, 3, 32, 32, seed=4)

    def loss(seed: int, c=cond) -> torch.Tensor:
        return flow_matching_loss(dit, c, mask, query, target,
                                  generator=torch.Generator().manual_seed(seed))

    base = loss(0)
    assert base.ndim == 0 and torch.isfinite(base)
    assert torch.equal(loss(0), base)
    assert not torch.equal(loss(1), base)

    add_lora(dit.transformer, CFG.lora)
    assert torch.equal(loss(0), base)  # lora_B starts at zero: the adapter is a no-op
    lora = {n: p for n, p in dit.transformer.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(not p.requires_grad for n, p in dit.transformer.named_parameters() if n not in lora)

    _perturb_lora(dit.transformer, seed=5)  # non-zero B, so lora_A gets gradient too
    cond = cond.clone().requires_grad_()
    loss(0, cond).backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    # The last block's text-stream output is discarded, so its text queries and text output
    # projection cannot affect the prediction: their LoRA gets no (or exactly zero) gradient.
    last = f"transformer_blocks.{CFG.dit.num_layers - 1}.attn."
    dead = (last + "add_q_proj.", last + "to_add_out.")
    for name, param in dit.transformer.named_parameters():
        if name.startswith(dead):
            assert param.grad is None or not param.grad.any(), name
        elif name in lora:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def _capture_transformer_inputs(transformer) -> tuple[list[dict], object]:
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: (v.detach().clone() if torch.is_tensor(v) else v)
                      for k, v in kwargs.items()})

    return calls, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def test_generate_and_training_feed_the_transformer_alike():
    """A 48×64 output (not a multiple of 32): the condition latents must be 48×64 too."""
    dit = _tiny()
    cond, mask = _cond()
    query = _images(1, 3, 48, 64, seed=6)
    calls, handle = _capture_transformer_inputs(dit.transformer)
    try:
        generate(dit, cond, mask, query, steps=2, seed=0)
        flow_matching_loss(dit, cond, mask, query, query, generator=torch.Generator())
    finally:
        handle.remove()
    sampled, trained = calls[0], calls[-1]
    assert len(calls) == 3
    grid = (1, 48 // 8, 64 // 8)  # tiny VAE: 4× down, then 2×2 packing
    assert sampled["img_shapes"] == trained["img_shapes"] == [[grid, grid]]
    n = grid[1] * grid[2]
    assert sampled["hidden_states"].shape == trained["hidden_states"].shape == (1, 2 * n, 16)
    # The condition tokens are the same query latents in both paths.
    torch.testing.assert_close(sampled["hidden_states"][:, n:], trained["hidden_states"][:, n:],
                               rtol=0, atol=1e-5)
    # The first sampling step is at σ = 1 and the transformer sees σ itself, not σ·1000.
    torch.testing.assert_close(sampled["timestep"], torch.ones(1))
    assert 0 <= float(trained["timestep"][0]) <= 1
    assert torch.equal(sampled["encoder_hidden_states_mask"], mask)


def test_generate_size_range_and_seed():
    dit = _tiny()
    cond, mask = _cond()
    query = _images(1, 3, 50, 70, seed=7)
    out = generate(dit, cond, mask, query, steps=2, seed=123)
    assert out.shape == (1, 3, 48, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(generate(dit, cond, mask, query, steps=2, seed=123), out)
    assert not torch.equal(generate(dit, cond, mask, query, steps=2, seed=124), out)
    small = generate(dit, cond, None, query[0], steps=2, seed=1, height=32, width=16)
    assert small.shape == (1, 3, 32, 16) and torch.isfinite(small).all()
    with pytest.raises(ValueError, match="multiples of 16"):
        generate(dit, cond, mask, query, steps=2, seed=1, height=40)
    with pytest.raises(ValueError, match="at least 2"):  # 1 step: NaN sigmas in the scheduler
        generate(dit, cond, mask, query, steps=1, seed=1)


def test_lora_save_load_is_bit_identical(tmp_path):
    cond, mask = _cond()
    query = _images(1, 3, 32, 32, seed=8)

    trained = _tiny(seed=0)
    add_lora(trained.transformer, CFG.lora)
    _perturb_lora(trained.transformer, seed=9)
    path = save_lora(trained.transformer, tmp_path / "lora")
    assert path.is_file() and path.suffix == ".safetensors"
    expected = generate(trained, cond, mask, query, steps=2, seed=0)

    reloaded = _tiny(seed=0)
    load_lora(reloaded.transformer, tmp_path / "lora", CFG.lora)
    assert lora_state_dict(reloaded.transformer).keys() == lora_state_dict(
        trained.transformer).keys()
    assert torch.equal(generate(reloaded, cond, mask, query, steps=2, seed=0), expected)

    other = _tiny(seed=0)
    add_lora(other.transformer, CFG.lora)
    _perturb_lora(other.transformer, seed=10)
    assert not torch.equal(generate(other, cond, mask, query, steps=2, seed=0), expected)

    with pytest.raises(ValueError, match="without adapters"):
        load_lora(reloaded.transformer, path, CFG.lora)
    wrong_rank = type(CFG.lora)(rank=8, alpha=CFG.lora.alpha)
    with pytest.raises(ValueError, match="r=4"):
        load_lora(_tiny().transformer, path, wrong_rank)
    with pytest.raises(MissingWeightsError):
        load_lora(_tiny().transformer, tmp_path / "nowhere", CFG.lora)


def test_paper_size_on_meta_device():
    cfg = paper_config()
    dit = build_dit(cfg.dit, meta=True)
    assert dit.vae is None
    total = count_parameters(dit.transformer)
    print(f"Qwen-Image-Edit transformer: {total:,} parameters")
    assert total == 20_430_401_088
    assert abs(total - 20.43e9) / 20.43e9 < 0.01

    targets = tuple("." + t for t in cfg.lora.target_modules)
    expected = sum(cfg.lora.rank * (m.in_features + m.out_features)
                   for name, m in dit.transformer.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.endswith(targets))
    assert expected == cfg.dit.num_layers * len(targets) * 32 * (2 * 3072)
    add_lora(dit.transformer, cfg.lora)
    lora = count_parameters(dit.transformer, trainable=True)
    print(f"LoRA r={cfg.lora.rank}: {lora:,} parameters")
    assert lora == expected == 94_371_840
    assert all(p.is_meta for p in dit.transformer.parameters())


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Hugging Face cache, offline mode, and any network connection recorded."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield tmp_path / "hub"
    assert attempts == []


def test_missing_weights_say_how_to_get_them(offline):
    with pytest.raises(MissingWeightsError, match="--dit") as folder:
        build_dit(CFG.dit, weights="/nonexistent/dir")
    assert "/nonexistent/dir" in str(folder.value)
    with pytest.raises(MissingWeightsError, match="--dit") as hub:
        build_dit(CFG.dit, weights="some-org/not-cached")
    assert "hf download some-org/not-cached" in str(hub.value)


def _save_like_hub(dit: DiT, root) -> None:
    dit.transformer.save_pretrained(root / "transformer")
    dit.vae.save_pretrained(root / "vae")
    dit.scheduler.save_pretrained(root / "scheduler")


def test_weights_from_folder_and_from_cache(offline, tmp_path):
    original = _tiny(seed=3)
    folder = tmp_path / "qwen"
    _save_like_hub(original, folder)

    def same(dit: DiT) -> bool:
        pairs = [(original.transformer, dit.transformer), (original.vae, dit.vae)]
        return all(torch.equal(a, b) for x, y in pairs
                   for a, b in zip(x.state_dict().values(), y.state_dict().values(), strict=True))

    loaded = build_dit(CFG.dit, weights=folder)
    assert same(loaded)
    assert not any(p.requires_grad for p in loaded.transformer.parameters())
    assert loaded.scheduler.config.max_shift == original.scheduler.config.max_shift

    # The same files as a hub snapshot in the (offline) cache.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline / "models--some-org--tiny-dit"
    _save_like_hub(original, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    assert same(build_dit(CFG.dit, weights="some-org/tiny-dit"))

    # A folder without its VAE, or holding another architecture.
    no_vae = tmp_path / "no-vae"
    original.transformer.save_pretrained(no_vae / "transformer")
    original.scheduler.save_pretrained(no_vae / "scheduler")
    with pytest.raises(MissingWeightsError, match="vae/"):
        build_dit(CFG.dit, weights=no_vae)
    other = type(CFG.dit)(**{**CFG.dit.__dict__, "joint_attention_dim": 32})
    with pytest.raises(MissingWeightsError, match="joint_attention_dim"):
        build_dit(other, weights=folder)
