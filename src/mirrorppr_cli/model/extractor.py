"""Retouching Operation Extractor: frozen MAE encoder + R-Former (paper §3.1).

Both exemplar images go through the MAE encoder (transformers ``ViTMAEModel``, no masking,
patches in their natural order); the R-Former concatenates learnable query tokens with the
patch features of *before* and *after* and runs ViT blocks over them. Its output is the query
tokens only: the raw operation representation, shape ``(B, num_queries, rformer.hidden_size)``.

Images are float tensors in [0, 1], ``(B, 3, H, W)``; they are resized to the MAE's input size
and normalised with the ImageNet statistics the MAE was trained with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import ViTConfig, ViTMAEConfig, ViTMAEModel
from transformers.models.vit.modeling_vit import ViTLayer

from .config import MAEConfig, RFormerConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mae_config(cfg: MAEConfig) -> ViTMAEConfig:
    """The transformers config of the encoder described by ``cfg`` (masking off).

    ``image_size`` of the transformers config is the *position-embedding* grid of the
    checkpoint (224 for ViT-MAE-L); inputs at ``cfg.image_size`` get interpolated embeddings."""
    return ViTMAEConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        patch_size=cfg.patch_size, image_size=cfg.pos_embed_size, mask_ratio=0.0,
        layer_norm_eps=1e-12, qkv_bias=True,
    )


def vit_blocks(hidden: int, layers: int, heads: int, mlp_ratio: float,
               eps: float = 1e-12) -> nn.ModuleList:
    """``layers`` standard pre-norm ViT blocks (transformers ``ViTLayer``)."""
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=int(hidden * mlp_ratio), layer_norm_eps=eps)
    config._attn_implementation = "sdpa"  # standalone layers get no dispatch from a model
    return nn.ModuleList(ViTLayer(config) for _ in range(layers))


def run_blocks(blocks: nn.ModuleList, tokens: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Run ``tokens`` through ``blocks``; with ``checkpointing``, recompute activations in the
    backward pass instead of storing them (gradient checkpointing)."""
    for block in blocks:
        if checkpointing:
            tokens = torch.utils.checkpoint.checkpoint(block, tokens, use_reentrant=False)
        else:
            tokens = block(tokens)
        tokens = tokens[0] if isinstance(tokens, tuple) else tokens
    return tokens


def resize_unit(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """``(B, 3, H, W)`` → ``(B, 3, size, size)``, ``mode`` (bilinear or bicubic) with
    antialiasing when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode=mode, align_corners=False,
                         antialias=True)


class MAEEncoder(nn.Module):
    """``ViTMAEModel`` as a feature extractor: patch tokens in natural order (CLS first when
    ``keep_cls``), position embeddings interpolated to the input grid.

    The official code calls ``ViTMAEModel`` without ``noise``, which at ``mask_ratio=0``
    returns the patches in a *random* order (``argsort(torch.rand)``); we pass an increasing
    noise to keep the row-major order, so the same pair always gives the same tokens (MAE
    features carry their position; the R-Former was trained on permuted patches)."""

    def __init__(self, cfg: MAEConfig, model: ViTMAEModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else ViTMAEModel(mae_config(cfg))
        self.model.config.mask_ratio = 0.0
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if cfg.frozen:
            self.requires_grad_(False)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (without CLS)."""
        return (self.cfg.image_size // self.cfg.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens per image that the R-Former receives (CLS included when ``keep_cls``)."""
        return self.num_patches + int(self.cfg.keep_cls)

    def train(self, mode: bool = True):
        # A frozen encoder stays in eval mode whatever its parent does.
        return super().train(mode and not self.cfg.frozen)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] → ``(B, num_tokens, mae.hidden_size)`` features."""
        resized = resize_unit(images, self.cfg.image_size, self.cfg.resize)
        # As the official preprocessing: (x − mean) / (std + 1e-6).
        pixels = (resized - self.mean) / (self.std + 1e-6)
        batch = pixels.shape[0]
        # ViTMAE shuffles patches by argsort(noise) even at mask_ratio 0: an increasing
        # noise keeps the natural (row-major) patch order.
        noise = torch.arange(self.num_patches, device=pixels.device, dtype=torch.float32)
        noise = noise.expand(batch, -1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.frozen):
            out = self.model(pixel_values=pixels.to(self.model.dtype), noise=noise,
                             interpolate_pos_encoding=True)
        hidden = out.last_hidden_state
        return hidden if self.cfg.keep_cls else hidden[:, 1:]


class RFormerEmbeddings(nn.Module):
    """The official R-Former's input (diffsynth/models/qwen_image_rformer.py, RFormerEmbeddings,
    ``legacy=True``): ``[queries; proj(before); sep; proj(after)]`` + learned absolute
    position embeddings + token-type embedding 0 on every token (row 1 exists, unused)."""

    def __init__(self, cfg: RFormerConfig, feature_dim: int, tokens_per_image: int):
        super().__init__()
        hidden = cfg.hidden_size
        self.num_queries = cfg.num_queries
        self.latent_motion_token = nn.Parameter(torch.randn(1, cfg.num_queries, hidden) * 0.02)
        self.sep_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.projection = nn.Linear(feature_dim, hidden)
        self.position_embeddings = nn.Parameter(
            torch.randn(1, 2 * tokens_per_image + 1 + cfg.num_queries, hidden) * 0.02)
        self.token_type_embeddings = nn.Parameter(torch.randn(2, hidden) * 0.02)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        batch = before.shape[0]
        tokens = torch.cat([self.latent_motion_token.expand(batch, -1, -1),
                            self.projection(before), self.sep_token.expand(batch, -1, -1),
                            self.projection(after)], dim=1)
        if tokens.shape[1] != self.position_embeddings.shape[1]:
            raise ValueError(f"R-Former: {tokens.shape[1]} tokens but position embeddings for "
                             f"{self.position_embeddings.shape[1]} (mae.image_size mismatch)")
        return tokens + self.position_embeddings + self.token_type_embeddings[0]


class RFormer(nn.Module):
    """Learnable query tokens attend over the before/after MAE features (table 8; official
    layout and key names: ``embeddings.*``, ``encoder.layer.N.*``, ``layernorm.*``), and
    optionally over extra difference streams (options, off in ``paper``)."""

    def __init__(self, cfg: RFormerConfig, feature_dim: int, num_patches: int,
                 patch_size: int | None = None, tokens_per_image: int | None = None):
        super().__init__()
        self.cfg = cfg
        tokens_per_image = tokens_per_image if tokens_per_image is not None else num_patches
        self.embeddings = RFormerEmbeddings(cfg, feature_dim, tokens_per_image)
        extra = int(cfg.difference_tokens) + int(cfg.pixel_difference)
        if extra:
            # Which extra stream a token came from (options only; no official counterpart).
            self.extra_type_embed = nn.Parameter(torch.zeros(extra, cfg.hidden_size))
        if cfg.pixel_difference:
            if patch_size is None:
                raise ValueError("pixel_difference needs the MAE's patch size")
            self.difference_embed = nn.Conv2d(3, cfg.hidden_size, patch_size, stride=patch_size)
            self.difference_pos = nn.Parameter(torch.randn(1, num_patches, cfg.hidden_size) * 0.02)
        self.encoder = nn.Module()
        self.encoder.layer = vit_blocks(cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                                        cfg.mlp_ratio, cfg.layer_norm_eps)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.num_patches = num_patches
        self.gradient_checkpointing = False

    def forward(self, before: torch.Tensor, after: torch.Tensor,
                pixel_change: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(B, N, D)`` of both images → ``(B, num_queries, hidden)``.

        ``pixel_change``: ``(B, 3, S, S)``, after − before at the MAE's input size (needed
        with ``pixel_difference``)."""
        streams = [self.embeddings(before, after)]
        k = 0
        if self.cfg.difference_tokens:
            streams.append(self.embeddings.projection(after - before) + self.extra_type_embed[k])
            k += 1
        if self.cfg.pixel_difference:
            if pixel_change is None:
                raise ValueError("pixel_difference needs the pixels' change")
            rms = pixel_change.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            change = self.difference_embed(pixel_change / (rms + 1e-4)).flatten(2).transpose(1, 2)
            streams.append(change + self.difference_pos + self.extra_type_embed[k])
        tokens = torch.cat(streams, dim=1)
        tokens = run_blocks(self.encoder.layer, tokens, self.gradient_checkpointing and self.training)
        return self.layernorm(tokens[:, : self.cfg.num_queries])


class OperationExtractor(nn.Module):
    """Exemplar pair → operation tokens ``(B, num_queries, rformer.hidden_size)``."""

    def __init__(self, mae_cfg: MAEConfig, rformer_cfg: RFormerConfig,
                 mae: ViTMAEModel | None = None):
        super().__init__()
        self.mae = MAEEncoder(mae_cfg, mae)
        self.rformer = RFormer(rformer_cfg, mae_cfg.hidden_size, self.mae.num_patches,
                               mae_cfg.patch_size, self.mae.num_tokens)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        both = self.mae(torch.cat([before, after], dim=0))
        a, b = both.chunk(2, dim=0)
        change = None
        if self.rformer.cfg.pixel_difference:
            size = self.mae.cfg.image_size
            mode = self.mae.cfg.resize
            change = resize_unit(after, size, mode) - resize_unit(before, size, mode)
        return self.rformer(a, b, change)
