"""How much host and device memory the loader and one run need, from the real config.

Parameter counts are exact (every module built on the ``meta`` device: nothing allocated);
activations are estimates with the stated formulas. The loader builds each model on ``meta``
and fills it shard by shard in the compute dtype (diffusers / transformers
``low_cpu_mem_usage``), so the host holds the loaded weights plus one shard being read, never a
float32 copy; everything is loaded on the host, the fp8 backend casts the DiT's storage there,
then every part moves to the device.

Units: bytes; ``GB`` = 1e9 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig

GB = 1e9
H100_BYTES = 80 * GB  # the card's nominal memory (an 80 GB H100)
SHARD_BYTES = 10 * GB  # the largest shard read at once (diffusers' default max_shard_size)

# Qwen2.5-VL-7B-Instruct (the ``text_encoder/`` of Qwen-Image-Edit-2511), its config.json.
QWEN25_VL_7B = dict(
    text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
              tie_word_embeddings=False),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2),
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class Counts:
    dit: int
    lora: int
    vae: int
    vl: int
    mae: int
    rformer: int
    connector: int


def parameter_counts(config: ModelConfig) -> Counts:
    """Exact parameter counts of every part at ``config``'s sizes (meta device)."""
    from diffusers import AutoencoderKLQwenImage

    from .connector import Connector
    from .dit import _vae_kwargs, build_dit
    from .extractor import OperationExtractor

    dit = build_dit(config.dit, meta=True).transformer
    # LoRA: rank · (in + out) per targeted linear layer (what peft adds).
    lora = sum(config.lora.rank * (m.in_features + m.out_features)
               for name, m in dit.named_modules() if isinstance(m, torch.nn.Linear)
               and any(name == t or name.endswith("." + t) for t in config.lora.target_modules))
    with torch.device("meta"):
        vae = AutoencoderKLQwenImage(**_vae_kwargs(config.dit))
        extractor = OperationExtractor(config.mae, config.rformer)
        connector = Connector(config.connector, config.rformer.hidden_size)
    vl = _vl_count(config) if config.vl.enabled else 0
    return Counts(dit=_count(dit), lora=lora, vae=_count(vae), vl=vl,
                  mae=_count(extractor.mae), rformer=_count(extractor.rformer),
                  connector=_count(connector))


def _vl_count(config: ModelConfig) -> int:
    """Qwen2.5-VL-7B's parameters from its config numbers (equal to transformers'
    ``Qwen2_5_VLForConditionalGeneration`` built on meta: 8,292,166,656; the formula avoids
    an 18 s build)."""
    if config.vl.kind != "qwen2_5_vl":
        return 0
    t, v = QWEN25_VL_7B["text"], QWEN25_VL_7B["vision"]
    h, inter, vocab = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    kv = t["num_key_value_heads"] * (h // t["num_attention_heads"])
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    text = vocab * h + t["num_hidden_layers"] * layer + h + vocab * h  # untied lm_head
    vh, vi = v["hidden_size"], v["intermediate_size"]
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + vi * vh + vh
    merged = vh * v["spatial_merge_size"] ** 2
    vision = (3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * vh + v["depth"] * block
              + vh + merged * merged + merged + merged * v["out_hidden_size"]
              + v["out_hidden_size"])
    return text + vision


def _tokens(config: ModelConfig, area: int) -> int:
    """DiT sequence at output ``area`` (batch 1): noise + condition latents (16 px per token)
    + the VL stream (28 px per merged Qwen2.5-VL token, template tokens kept) + the queries."""
    image = area // (16 * 16)
    vl = area // (28 * 28) + 40 if config.vl.enabled else 0
    return 2 * image + vl + config.rformer.num_queries


def memory_plan(config: ModelConfig, mode: str, *, area: int = 1024 * 1024,
                counts: Counts | None = None) -> dict:
    """Peak host and device bytes for ``mode``:

    * ``fp8`` — inference, DiT weights stored in float8 e4m3 (1 byte), the rest bf16;
    * ``bf16`` — inference, everything bf16;
    * ``train`` — joint training on one GPU, micro-batch 1, gradient checkpointing, frozen
      bases bf16, trainable R-Former + connector + LoRA in float32 with AdamW (16 bytes each).

    Activations: DiT ``tokens · width · 12`` elements (one block's transient tensors; with
    checkpointing in training, plus the 60 saved block inputs and one block recomputed at
    ``· 30``); VAE decode ``16 ·`` its largest feature map (base_dim channels at full size).
    The plan says which offload a card of ``H100_BYTES`` would need.
    """
    if mode not in ("fp8", "bf16", "train"):
        raise ValueError(f"mode must be fp8, bf16 or train, not {mode!r}")
    c = counts or parameter_counts(config)
    bf16 = 2
    dit_bytes = c.dit * (1 if mode == "fp8" else bf16)
    small = (c.vae + c.mae) * bf16
    trainable = c.lora + c.rformer + c.connector
    heads = trainable * (16 if mode == "train" else bf16)
    vl = c.vl * bf16
    width = config.dit.num_attention_heads * config.dit.attention_head_dim
    tokens = _tokens(config, area)
    act = tokens * width * 12 * bf16
    if mode == "train":
        act = tokens * width * bf16 * (config.dit.num_layers + 30)
    vae_act = 16 * config.dit.vae_base_dim * area * bf16
    parts = {"dit": dit_bytes, "qwen2.5-vl": vl, "vae+mae": small,
             "trainable" if mode == "train" else "lora+rformer+connector": heads,
             "dit activations": act, "vae activations": vae_act}
    device = sum(parts.values())
    # Host: every part loaded in bf16 before the move (the DiT in bf16 even for fp8: the cast
    # happens on the host), plus one shard being read.
    host = c.dit * bf16 + vl + small + trainable * bf16 + SHARD_BYTES
    offload = "none"
    if device > H100_BYTES:
        without_vl = device - vl
        offload = ("the Qwen2.5-VL encoder to the CPU after it has encoded the query"
                   if without_vl <= H100_BYTES else "sequential CPU offload of the DiT blocks")
    return {"mode": mode, "area": area, "tokens": tokens, "parts": parts,
            "device_peak": device, "host_peak": host, "fits_h100": device <= H100_BYTES,
            "offload_needed": offload,
            "parameters": {k: getattr(c, k) for k in c.__dataclass_fields__}}
