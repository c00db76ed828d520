"""The neural engine's own modules (extractor, decoder, connector, configs) on tiny configs.

Parameter counts of the ``paper`` preset are exact consequences of table 8 (hidden sizes,
depths, heads) plus the stated defaults (MAE ViT-L/16, MLP ratio 4); they are checked on the
meta device, so nothing is allocated.
"""

from __future__ import annotations

import json

import pytest
import torch

from mirrorppr_cli.model.config import (
    ConfigError,
    from_dict,
    load_config,
    paper_config,
    tiny_config,
)
from mirrorppr_cli.model.connector import Connector
from mirrorppr_cli.model.decoder import EditDecoder
from mirrorppr_cli.model.extractor import OperationExtractor


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return tiny_config()


def test_paper_preset_has_the_tables_values():
    c = paper_config()
    assert (c.rformer.num_queries, c.rformer.num_layers, c.rformer.hidden_size,
            c.rformer.num_heads) == (8, 4, 768, 12)
    assert (c.decoder.patch_size, c.decoder.num_layers, c.decoder.hidden_size,
            c.decoder.num_heads) == (16, 12, 768, 12)
    assert (c.connector.hidden_size, c.connector.num_layers, c.connector.num_heads,
            c.connector.output_dim) == (768, 6, 12, 3584)
    assert (c.lora.rank, c.lora.alpha, c.lora.dropout, c.lora.bias) == (32, 32, 0.0, "none")
    e, j = c.extractor_training, c.joint_training
    assert (e.batch_size, e.batch_size_professional, e.lr_max, e.lr_min, e.weight_decay,
            e.lpips_weight, e.lr_scheduler) == (1536, 512, 1e-4, 5e-5, 1e-4, 1.0, "cosine")
    assert (j.batch_size, j.lr, j.weight_decay, j.lr_scheduler) == (64, 1e-5, 1e-2, "constant")
    assert (c.inference.steps, c.inference.seed, c.dit.joint_attention_dim) == (40, 123, 3584)


def test_paper_preset_builds_on_meta_with_the_architectures_parameter_counts():
    c = paper_config()
    with torch.device("meta"):
        extractor = OperationExtractor(c.mae, c.rformer)
        decoder = EditDecoder(c.decoder, c.rformer)
        connector = Connector(c.connector, c.rformer.hidden_size)
    assert next(extractor.parameters()).is_meta
    # ViT-L/16 encoder (facebook/vit-mae-large without its decoder).
    assert count(extractor.mae) == 303_301_632
    # The official R-Former (qwen_image_rformer.py): 4 ViT blocks of width 768 (7,087,872
    # each) + 1024→768 projection + 8 queries + sep token + 2·4097+1+8 = 8203 positions +
    # 2 token types + final norm.
    assert count(extractor.rformer) == (4 * 7_087_872 + (1024 * 768 + 768) + 8 * 768 + 768
                                        + 8203 * 768 + 2 * 768 + 2 * 768)
    # 12 ViT blocks + edit MLP (8·768 → 768 → 768) + 16² patch embedding + 196 positions + head.
    assert count(decoder) == (12 * 7_087_872 + (8 * 768 * 768 + 768) + (768 * 768 + 768)
                              + (3 * 256 * 768 + 768) + 196 * 768 + 2 * 768
                              + (768 * 512 + 512))  # flow head: (dx, dy) for 16² pixels
    # The official connector (qwen_image_connector.py): 6 Qwen2 layers (q/k/v with bias, o
    # without, q/k head norms 12×64 each, SwiGLU 768→3072, two RMSNorms) and the projection
    # 768→3584 → GELU → 3584→3584 → RMSNorm.
    layer = 3 * (768 * 768 + 768) + 768 * 768 + 2 * 12 * 64 + 3 * 768 * 3072 + 2 * 768
    assert count(connector) == (6 * layer + (768 * 3584 + 3584) + (3584 * 3584 + 3584)
                                + 3584)


def test_shapes_through_extractor_decoder_connector(tiny):
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    decoder = EditDecoder(tiny.decoder, tiny.rformer)
    connector = Connector(tiny.connector, tiny.rformer.hidden_size)
    before, after, query = torch.rand(3, 2, 3, 48, 40).unbind(0)
    ops = extractor(before, after)
    assert ops.shape == (2, tiny.rformer.num_queries, tiny.rformer.hidden_size)
    side = tiny.decoder.image_size
    small_query = torch.rand(2, 3, side, side)
    assert decoder(small_query, ops).shape == (2, 3, side, side)
    cond, mask = connector(ops)
    assert cond.shape == (2, tiny.rformer.num_queries, tiny.connector.output_dim)
    assert mask.shape == (2, tiny.rformer.num_queries) and bool(mask.all())


@pytest.mark.parametrize("head", ["flow", "pixels"])
def test_untrained_decoder_returns_the_query(tiny, head):
    """The head starts at zero: the starting point is the identity baseline, not noise."""
    tiny.decoder.head = head
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    decoder = EditDecoder(tiny.decoder, tiny.rformer)
    query = torch.rand(1, 3, 32, 32)
    ops = extractor(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert torch.allclose(decoder(query, ops), query, atol=1e-6)
    with torch.no_grad():
        decoder.head.bias.fill_(0.5)
    assert not torch.allclose(decoder(query, ops), query, atol=1e-3)


def test_flow_head_resamples_with_pixel_centre_alignment():
    from mirrorppr_cli.model.decoder import resample

    image = torch.rand(1, 3, 12, 16)
    shift = torch.zeros(1, 2, 12, 16)
    shift[:, 0] = 1.0  # dx = +1: output(x) = image(x + 1)
    assert torch.allclose(resample(image, shift)[..., :-1], image[..., 1:], atol=1e-6)
    shift = torch.zeros(1, 2, 12, 16)
    shift[:, 1] = -2.0  # dy = -2: output(y) = image(y - 2)
    assert torch.allclose(resample(image, shift)[:, :, 2:], image[:, :, :-2], atol=1e-6)


def test_mae_keeps_patches_in_natural_order(tiny):
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    images = torch.rand(2, 3, 32, 32)
    mae = extractor.mae
    pixels = (images - mae.mean) / (mae.std + 1e-6)
    n = mae.num_patches
    out = mae.model(pixel_values=pixels, noise=torch.arange(n, dtype=torch.float32).expand(2, -1),
                    interpolate_pos_encoding=True)
    assert torch.equal(out.ids_restore, torch.arange(n).expand(2, -1))
    assert out.last_hidden_state.shape[1] == n + 1  # nothing masked: CLS + every patch
    assert torch.equal(mae(images), out.last_hidden_state)  # the official keeps CLS


def test_mae_runs_above_its_position_grid_with_interpolated_embeddings(tiny):
    """As the official encoder: position embeddings of a 16² grid (2×2 patches) interpolated
    to the 32² input (4×4 patches); the paper preset reads 1024² inputs with 224² embeddings."""
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    assert extractor.mae.model.embeddings.position_embeddings.shape[1] == 2 * 2 + 1
    assert extractor.mae(torch.rand(1, 3, 50, 40)).shape == (1, 4 * 4 + 1, tiny.mae.hidden_size)
    paper = paper_config()
    assert (paper.mae.image_size, paper.mae.pos_embed_size, paper.mae.keep_cls) == (1024, 224, True)


def test_frozen_mae_stays_in_eval_and_gets_no_gradient(tiny):
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    extractor.train()
    assert not extractor.mae.training and extractor.rformer.training
    ops = extractor(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    ops.sum().backward()
    assert all(p.grad is None for p in extractor.mae.parameters())
    assert all(p.grad is not None for p in extractor.rformer.parameters())


def test_connector_is_bidirectional(tiny):
    connector = Connector(tiny.connector, tiny.rformer.hidden_size)
    tokens = torch.randn(1, 6, tiny.rformer.hidden_size)
    first = connector(tokens)[0][:, 0]
    changed = tokens.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(connector(changed)[0][:, 0], first), "the first token ignores the last"
    # and the converse still holds: changing the first token changes the last output.
    changed = tokens.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(connector(changed)[0][:, -1], connector(tokens)[0][:, -1])


def test_connector_mask_hides_padding(tiny):
    connector = Connector(tiny.connector, tiny.rformer.hidden_size)
    tokens = torch.randn(1, 5, tiny.rformer.hidden_size)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    base = connector(tokens, mask)[0][:, :3]
    changed = tokens.clone()
    changed[:, 4] += 5.0
    assert torch.allclose(connector(changed, mask)[0][:, :3], base, atol=1e-6)


def test_config_file_overrides_a_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"base": "tiny", "rformer": {"num_layers": 3},
                                "lora": {"target_modules": ["attn.to_q"]}}))
    config = load_config(path)
    assert config.rformer.num_layers == 3 and config.mae.hidden_size == 32
    assert config.lora.target_modules == ("attn.to_q",)
    toml = tmp_path / "c.toml"
    toml.write_text('base = "paper"\n[joint_training]\nlr = 2e-5\n')
    assert load_config(toml).joint_training.lr == 2e-5
    # A resolved config round-trips through JSON (what every checkpoint stores), also under a
    # name that is no preset.
    assert from_dict(json.loads(config.to_json())) == config
    config.name = "small"
    assert from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize("data, message", [
    ({"rformer": {"num_layer": 3}}, "unknown config key 'rformer.num_layer'"),
    ({"base": "huge"}, "unknown preset"),
    ({"rformer": 3}, "must be a table"),
])
def test_config_errors_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_config_spec_that_is_neither_preset_nor_file():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("papr")


def test_difference_tokens_option(tiny):
    tiny.rformer.difference_tokens = True
    extractor = OperationExtractor(tiny.mae, tiny.rformer)
    same = torch.rand(1, 3, 32, 32)
    assert extractor(same, same).shape == (1, tiny.rformer.num_queries, tiny.rformer.hidden_size)
    assert extractor.rformer.extra_type_embed.shape[0] == 1


def test_pixel_difference_stream_sees_a_subtle_change(tiny):
    """The pixel-difference stream (not in the paper) is scale-free: a 1/255 change of one
    patch moves the operation tokens as much as a 10x stronger one, and no change at all gives
    the tokens of identical images."""
    torch.manual_seed(0)
    tiny.rformer.pixel_difference = True
    extractor = OperationExtractor(tiny.mae, tiny.rformer).eval()
    assert extractor.rformer.extra_type_embed.shape[0] == 1
    before = torch.rand(1, 3, 32, 32)
    weak, strong = before.clone(), before.clone()
    weak[..., :8, :8] += 1 / 255
    strong[..., :8, :8] += 10 / 255
    with torch.no_grad():
        same = extractor(before, before)
        moved_weak = extractor(before, weak)
        moved_strong = extractor(before, strong)
    assert same.shape == (1, tiny.rformer.num_queries, tiny.rformer.hidden_size)
    weak_shift = (moved_weak - same).abs().max().item()
    assert weak_shift > 1e-2
    assert (moved_strong - same).abs().max().item() < 3 * weak_shift
