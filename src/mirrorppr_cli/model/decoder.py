"""Extractor pre-training head (paper §3.1): edit MLP + ViT decoder, discarded afterwards.

The operation tokens become one compact edit embedding (an MLP), which is added to every patch
token of the query image; ViT blocks then reconstruct the retouched query. The head predicts,
per pixel, either a displacement that resamples the query (``head="flow"``: an inverse map,
output(x, y) = query(x + dx, y + dy), bilinear, pixel-centre aligned) or the change of its
values (``head="pixels"``). Its last layer starts at zero, so an untrained decoder returns the
query unchanged — the identity baseline every result is compared with.

Images are float tensors in [0, 1], ``(B, 3, S, S)`` with ``S = decoder.image_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        if cfg.head not in ("flow", "pixels"):
            raise ValueError(f"decoder.head must be flow or pixels, not {cfg.head!r}")
        self.channels = 2 if cfg.head == "flow" else 3
        self.head = nn.Linear(hidden, patch * patch * self.channels)
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
        out = self.head(self.norm(tokens))  # (B, grid², patch² · channels)
        out = out.view(batch, grid, grid, patch, patch, self.channels).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(batch, self.channels, grid * patch, grid * patch)
        if self.cfg.head == "pixels":
            return query + out
        return resample(query, out)


def resample(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (B, C, H, W) sampled at pixel (x + dx, y + dy); ``flow`` (B, 2, H, W) holds
    (dx, dy) in pixels. Bilinear, border padding; zero flow returns ``image``."""
    batch, _, height, width = image.shape
    ys = torch.arange(height, device=image.device, dtype=image.dtype)
    xs = torch.arange(width, device=image.device, dtype=image.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # pixel centres → [-1, 1] with align_corners=False: u = (2x + 1) / W − 1
    u = (2 * (gx + flow[:, 0]) + 1) / width - 1
    v = (2 * (gy + flow[:, 1]) + 1) / height - 1
    grid = torch.stack([u, v], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
