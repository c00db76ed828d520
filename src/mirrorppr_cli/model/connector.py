"""Connector (paper §3.2, appendix B): operation tokens → the DiT's conditioning.

"Enc-Proj": a Qwen2-architecture transformer encoder with *bidirectional* attention (as in
MetaQuery) aligns the tokens at its own width; a linear layer then maps them to the DiT's
``joint_attention_dim``. Its output replaces the text ``prompt_embeds`` of Qwen-Image-Edit.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model

from .config import ConnectorConfig


def qwen2_config(cfg: ConnectorConfig, max_tokens: int = 512) -> Qwen2Config:
    """A Qwen2 config for the encoder; ``vocab_size=1``: it reads embeddings, never token ids."""
    return Qwen2Config(
        vocab_size=1, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=max_tokens,
        use_cache=False,
    )


class Connector(nn.Module):
    """``(B, L, in_dim)`` operation tokens → ``(B, L, output_dim)`` conditioning and its mask."""

    def __init__(self, cfg: ConnectorConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self.input_proj = (nn.Identity() if in_dim == cfg.hidden_size
                           else nn.Linear(in_dim, cfg.hidden_size))
        self.encoder = Qwen2Model(qwen2_config(cfg))
        for layer in self.encoder.layers:  # bidirectional: no causal masking anywhere
            layer.self_attn.is_causal = False
        self.proj = nn.Linear(cfg.hidden_size, cfg.output_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cond, cond_mask)``; ``mask`` (B, L) marks valid tokens (default all)."""
        batch, length = tokens.shape[:2]
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=tokens.device)
        # A full (non-causal) boolean mask, key padding only: every token sees every valid one.
        full = mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        hidden = self.encoder(inputs_embeds=self.input_proj(tokens),
                              attention_mask={"full_attention": full}).last_hidden_state
        return self.proj(hidden), mask
