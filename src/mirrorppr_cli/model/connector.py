"""Connector (paper §3.3, appendix B): operation tokens → the DiT's conditioning space.

"Enc-Proj", laid out as the official ``QwenImageConnector`` (SJTU-DENG-Lab/MirrorPPR,
diffsynth/models/qwen_image_connector.py, built with ``input_dim=768``): Qwen2 decoder layers
with *bidirectional* attention (as in MetaQuery) and per-head q/k RMS norms align the tokens at
their own width; then ``Linear → GELU(tanh) → Linear → RMSNorm`` maps them to the DiT's
``joint_attention_dim``. The official pipeline calls the layers one by one without position
embeddings and without the encoder's final norm, and so does this module (``rope`` adds RoPE
as an option). Key names follow the official file: ``encoder.layers.N.self_attn.q_proj`` …,
``proj.0``, ``proj.2``, ``proj.3``. The output tokens are *appended* to the frozen Qwen2.5-VL
stream of the query (see :mod:`.dit`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)

from .config import ConnectorConfig


def qwen2_config(cfg: ConnectorConfig, max_tokens: int = 512) -> Qwen2Config:
    """A Qwen2 config for the encoder layers (``vocab_size=1``: it reads embeddings only)."""
    return Qwen2Config(
        vocab_size=1, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=max_tokens,
        rms_norm_eps=cfg.rms_norm_eps, use_cache=False,
    )


class MultiHeadRMSNorm(nn.Module):
    """``normalize(x) · gamma · sqrt(dim)`` per head; ``gamma`` is ``(heads, 1, dim)``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, heads, L, dim)
        return F.normalize(x, dim=-1) * self.gamma * self.scale


class BidirectionalAttention(nn.Module):
    """Qwen2 attention projections, q/k norms after RoPE, no causal mask, key padding only."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        hidden, heads, kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        self.heads, self.kv_heads, self.head_dim = heads, kv, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.q_norm = MultiHeadRMSNorm(self.head_dim, heads)
        self.k_norm = MultiHeadRMSNorm(self.head_dim, kv)

    def forward(self, x: torch.Tensor, position_embeddings=None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class ConnectorLayer(nn.Module):
    """Pre-norm Qwen2 layer: RMSNorm → bidirectional attention → RMSNorm → SwiGLU MLP."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.self_attn = BidirectionalAttention(config)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, position_embeddings=None, key_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class OutputRMSNorm(nn.Module):
    """The projection's last RMSNorm (computed in float32, cast back)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        normed = (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)
        return normed * self.weight


class Connector(nn.Module):
    """``(B, L, in_dim)`` operation tokens → ``(B, L, output_dim)`` conditioning and its mask."""

    def __init__(self, cfg: ConnectorConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        # Not in the official model (its R-Former width equals the connector's): only for
        # configs where they differ.
        self.input_proj = (nn.Identity() if in_dim == cfg.hidden_size
                           else nn.Linear(in_dim, cfg.hidden_size))
        config = qwen2_config(cfg)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ConnectorLayer(config) for _ in range(cfg.num_layers))
        self.rotary = Qwen2RotaryEmbedding(config=config) if cfg.rope else None
        self.proj = nn.Sequential(
            nn.Linear(cfg.hidden_size, cfg.output_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(cfg.output_dim, cfg.output_dim),
            OutputRMSNorm(cfg.output_dim, cfg.out_norm_eps),
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cond, cond_mask)``; ``mask`` (B, L) marks valid tokens (default all)."""
        batch, length = tokens.shape[:2]
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=tokens.device)
        hidden = self.input_proj(tokens)
        position = None
        if self.rotary is not None:
            ids = torch.arange(length, device=tokens.device)[None].expand(batch, -1)
            position = self.rotary(hidden, ids)
        key_mask = None if bool(mask.all()) else mask
        for layer in self.encoder.layers:
            hidden = layer(hidden, position, key_mask)
        return self.proj(hidden), mask
