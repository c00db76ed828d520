"""Extractor pre-training head (paper §3.1): edit MLP + ViT decoder, discarded afterwards.

The operation tokens become one compact edit embedding (an MLP), which is added to every patch
token of the query image; ViT blocks then reconstruct the retouched query. The head predicts
the change to the query's pixels (its last layer starts at zero), so an untrained decoder
returns the query unchanged — the identity baseline every result is compared with.

Images are float tensors in [0, 1], ``(B, 3, S, S)`` with ``S = decoder.image_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import DecoderConfig, RFormerConfig
from .extractor import run_blocks, vit_blocks


class EditDecoder(nn.Module):
    """(query, operation tokens) → the retouched query, ``(B, 3, S, S)``."""

    def __init__(self, cfg: DecoderConfig, rformer_cfg: RFormerConfig):
        super().__init__()
        self.cfg = cfg
        hidden, patch = cfg.hidden_size, cfg.patch_size
        self.grid = cfg.image_size // patch
        self.edit_mlp = nn.Sequential(
            nn.Linear(rformer_cfg.num_queries * rformer_cfg.hidden_size, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
        )
        self.patch_embed = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, hidden) * 0.02)
        self.blocks = vit_blocks(hidden, cfg.num_layers, cfg.num_heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, patch * patch * 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.gradient_checkpointing = False

    def edit_embedding(self, operation: torch.Tensor) -> torch.Tensor:
        """``(B, num_queries, D)`` → ``(B, hidden)``."""
        return self.edit_mlp(operation.flatten(1))

    def forward(self, query: torch.Tensor, operation: torch.Tensor) -> torch.Tensor:
        """Predict the retouched query (not clamped: the loss sees the raw values)."""
        batch, patch, grid = query.shape[0], self.cfg.patch_size, self.grid
        tokens = self.patch_embed(query * 2 - 1).flatten(2).transpose(1, 2) + self.pos_embed
        tokens = tokens + self.edit_embedding(operation)[:, None, :]
        tokens = run_blocks(self.blocks, tokens, self.gradient_checkpointing and self.training)
        delta = self.head(self.norm(tokens))  # (B, grid², patch² · 3)
        delta = delta.view(batch, grid, grid, patch, patch, 3).permute(0, 5, 1, 3, 2, 4)
        return query + delta.reshape(batch, 3, grid * patch, grid * patch)
