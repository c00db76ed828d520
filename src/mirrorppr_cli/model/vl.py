"""The frozen Qwen2.5-VL stream on the query (paper §3.3), and how operation tokens join it.

The paper keeps Qwen-Image-Edit's multimodal encoder: Qwen2.5-VL reads the *query* (with an
empty instruction) and its last hidden states are the DiT's text stream. The official pipeline
(SJTU-DENG-Lab/MirrorPPR, diffsynth/pipelines/qwen_image.py) encodes the query with the
single-image edit template, drops the template's first 64 tokens, and *concatenates* the
connector's operation tokens after that stream (``model_fn_qwen_image``:
``cat([prompt_emb, operation_emb], dim=1)``, text length = VL tokens + 8).

Two implementations share one interface, ``stream(query) -> (embeds (B, L, D), mask (B, L))``
with ``query`` a float tensor ``(B, 3, H, W)`` in [0, 1]:

* :class:`QwenVLStream` — the real encoder (``text_encoder/`` and ``processor/`` of a
  Qwen-Image-Edit folder), frozen, bf16 on a GPU;
* :class:`PatchVLStream` — a frozen, fixed-seed patch embedding of the same shape contract,
  for the ``tiny`` preset only (Qwen2.5-VL weights and its tokenizer are not available
  offline). It is a stand-in for tests of the data flow, not a model of Qwen2.5-VL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MissingWeightsError
from .config import VLConfig

# The official single-image edit template (QwenImageUnit_PromptEmbedder.encode_prompt_edit);
# the first 64 tokens (system prompt and the user turn's opening) are dropped.
EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
    "texture, objects, background), then explain how the user's text instruction should alter "
    "or modify the image. Generate a new image that meets the user's requirements while "
    "maintaining consistency with the original input where appropriate.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def join_condition(vl: torch.Tensor | None, vl_mask: torch.Tensor | None, ops: torch.Tensor,
                   ops_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[VL stream; operation tokens]`` along the sequence, and the joined mask.

    ``vl`` ``(B, Lv, D)`` (or ``None``: the operation tokens alone), ``ops`` ``(B, Lo, D)``.
    A padded VL stream (batches of different query sizes) keeps its padding where it is, as in
    the official pipeline."""
    batch = ops.shape[0]
    if ops_mask is None:
        ops_mask = torch.ones(batch, ops.shape[1], dtype=torch.long, device=ops.device)
    if vl is None:
        return ops, ops_mask
    if vl_mask is None:
        vl_mask = torch.ones(batch, vl.shape[1], dtype=torch.long, device=vl.device)
    cond = torch.cat([vl.to(device=ops.device, dtype=ops.dtype), ops], dim=1)
    mask = torch.cat([vl_mask.to(device=ops.device, dtype=ops_mask.dtype), ops_mask], dim=1)
    return cond, mask


class PatchVLStream(nn.Module):
    """Tiny stand-in: a frozen random patch embedding, fixed seed (same in every process)."""

    def __init__(self, cfg: VLConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv2d(3, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        gen = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in self.embed.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        param = self.embed.weight
        tokens = self.embed(query.to(device=param.device, dtype=param.dtype) * 2 - 1)
        tokens = tokens.flatten(2).transpose(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        return tokens, mask


class QwenVLStream(nn.Module):
    """The frozen Qwen2.5-VL encoder of Qwen-Image-Edit on the query (official template)."""

    def __init__(self, model, processor, cfg: VLConfig):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.processor = processor
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @classmethod
    def from_folder(cls, root: str | Path, cfg: VLConfig, *, dtype=torch.bfloat16
                    ) -> QwenVLStream:
        """``root/text_encoder`` (Qwen2.5-VL-7B) and ``root/processor``; built on the meta
        device and filled shard by shard in ``dtype`` (``low_cpu_mem_usage``)."""
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        root = Path(root)
        missing = [sub for sub in ("text_encoder", "processor") if not (root / sub).is_dir()]
        if missing:
            raise MissingWeightsError(
                f"Qwen2.5-VL stream: {root} lacks {', '.join(s + '/' for s in missing)}; fetch "
                "them with `hf download Qwen/Qwen-Image-Edit-2511 --include \"text_encoder/*\" "
                "--include \"processor/*\"` into the same folder")
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                root / "text_encoder", torch_dtype=dtype, low_cpu_mem_usage=True,
                local_files_only=True)
            processor = AutoProcessor.from_pretrained(root / "processor", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(f"Qwen2.5-VL stream: cannot load {root}: {exc}") from exc
        return cls(model, processor, cfg)

    @torch.no_grad()
    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        images = [Image.fromarray(np.ascontiguousarray(
            (q.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            .permute(1, 2, 0).cpu().numpy())) for q in query]
        text = [EDIT_TEMPLATE.format(self.cfg.prompt)] * len(images)
        param = next(self.model.parameters())
        inputs = self.processor(text=text, images=images, padding=True, return_tensors="pt")
        inputs = {k: v.to(param.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(param.dtype)
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]
        keep = inputs["attention_mask"].bool()
        rows = [h[m][self.cfg.drop_idx:] for h, m in zip(hidden, keep, strict=True)]
        length = max(r.shape[0] for r in rows)
        embeds = torch.stack([torch.cat([r, r.new_zeros(length - r.shape[0], r.shape[1])])
                              for r in rows])
        mask = torch.stack([torch.cat([torch.ones(r.shape[0], dtype=torch.long),
                                       torch.zeros(length - r.shape[0], dtype=torch.long)])
                            for r in rows]).to(embeds.device)
        return embeds, mask


def build_vl_stream(cfg: VLConfig, dit_root: str | Path | None, *, dtype=torch.float32
                    ) -> nn.Module | None:
    """The query stream the config asks for (``None`` when ``vl.enabled`` is off)."""
    if not cfg.enabled:
        return None
    if cfg.kind == "patch":
        return PatchVLStream(cfg)
    if cfg.kind != "qwen2_5_vl":
        raise ValueError(f"vl.kind must be qwen2_5_vl or patch, not {cfg.kind!r}")
    if dit_root is None:
        raise MissingWeightsError("Qwen2.5-VL stream: no Qwen-Image-Edit folder; pass --dit DIR")
    return QwenVLStream.from_folder(dit_root, cfg, dtype=dtype)
