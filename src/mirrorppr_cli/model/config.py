"""Hyper-parameters of the neural engine as plain data, with named presets.

``paper`` holds every value of the paper's tables 8 (architecture) and 9 (optimisation);
``tiny`` is the same architecture shrunk so that tests build, train and sample it on a CPU in
seconds. A config file (JSON or TOML) overrides any field of a preset: ``{"base": "tiny",
"extractor_training": {"lr_max": 3e-4}}``. The resolved config is saved beside every checkpoint,
so a checkpoint always says what it is.

Values the paper does not state (or that our copy of it lost) are marked ``# not in the paper``.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


@dataclass
class MAEConfig:
    """The frozen MAE encoder (transformers ``ViTMAEModel``, run without masking)."""

    hub_id: str = "facebook/vit-mae-large"  # facts.md §4: the official extractor uses ViT-L/16
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 16
    # Input side: the official encoder resizes both exemplar images to 1024 × 1024 (bicubic,
    # antialiased) before the MAE (SJTU-DENG-Lab/MirrorPPR, diffsynth/pipelines/qwen_image.py,
    # QwenImageUnit_MirrorPPROperationEncoder). A 2–20 px edit stays 2–20 px instead of
    # shrinking to 0.4–4 px at 224².
    image_size: int = 1024
    # The checkpoint's position-embedding grid (ViT-MAE-L was pre-trained at 224²); the
    # embeddings are interpolated (bicubic, transformers' ``interpolate_pos_encoding``) to the
    # input grid, as the official QwenImageMAE does (diffsynth/models/qwen_image_mae.py).
    pos_embed_size: int = 224
    # The official features keep the CLS token (64² + 1 = 4097 tokens per image: the R-Former's
    # ``num_patches=4097``, diffsynth/models/qwen_image_rformer.py).
    keep_cls: bool = True
    resize: str = "bicubic"  # official: bicubic with antialiasing; "bilinear" also accepted
    frozen: bool = True  # False only for runs without pretrained weights (a trainable substitute)


@dataclass
class RFormerConfig:
    """R-Former: ViT blocks over [query tokens; before patches; after patches] (table 8)."""

    num_queries: int = 8
    num_layers: int = 4
    hidden_size: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0  # official: intermediate 3072 = 4 × 768 (qwen_image_rformer.py)
    layer_norm_eps: float = 1e-12  # official RFormer ViTConfig
    # The two options below are not in the paper nor the official code; they exist for
    # from-scratch experiments on small data (a trainable MAE substitute sees subtle edits
    # poorly). Both are off in ``paper``; a checkpoint trained with them has extra tensors and
    # cannot be read by the official code.
    # Not in the paper: also give the R-Former the per-patch difference (after − before) of
    # the MAE features as a third token stream, a shortcut to the subtle change.
    difference_tokens: bool = False
    # Not in the paper: a fourth stream from the *pixels*' difference (after − before), divided
    # by its RMS over the image, patch-embedded at the MAE's patch size. A subtle edit changes
    # the pixels by ~1 % and features of a from-scratch encoder by less; this stream sees it at
    # unit scale whatever its strength.
    pixel_difference: bool = False


@dataclass
class DecoderConfig:
    """Pre-training head: MLP → edit embedding; ViT decoder reconstructs the retouched query."""

    patch_size: int = 16
    num_layers: int = 12
    hidden_size: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0  # not in the paper
    image_size: int = 224  # not in the paper: the query's side during pre-training
    # How the decoder reconstructs the retouched query (not in the paper): "flow" predicts a
    # per-pixel displacement and resamples the query (exact for structural edits, where every
    # retouched pixel is a moved query pixel); "pixels" predicts the change of each pixel.
    head: str = "flow"


@dataclass
class ConnectorConfig:
    """Enc-Proj connector (diffsynth/models/qwen_image_connector.py, input_dim 768): Qwen2
    decoder layers with bidirectional attention and per-head q/k RMS norms, then
    Linear → GELU(tanh) → Linear → RMSNorm to the DiT's text width."""

    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12  # official: hidden // 64
    num_kv_heads: int = 12  # official: hidden // 64
    intermediate_size: int = 3072  # official: 4 × hidden
    output_dim: int = 3584
    rms_norm_eps: float = 1e-6  # Qwen2Config's default (the layers' norms)
    out_norm_eps: float = 1e-5  # the projection's final RMSNorm
    # The official pipeline runs the connector's layers without position embeddings (it calls
    # each layer with its default ``position_embeddings=None``): no RoPE over the 8 tokens.
    rope: bool = False


@dataclass
class DiTConfig:
    """Qwen-Image-Edit-2511's ``QwenImageTransformer2DModel`` and its VAE (frozen)."""

    hub_id: str = "Qwen/Qwen-Image-Edit-2511"
    patch_size: int = 2
    in_channels: int = 64
    out_channels: int = 16
    num_layers: int = 60
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 3584
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)
    # Qwen-Image-Edit-2511's config says true (the condition image's tokens are modulated
    # with timestep 0); the official MirrorPPR inference leaves it off (its pipeline's
    # ``zero_cond_t=False`` default; mirrorppr/inference/simface100.py does not set it), so
    # the paper preset turns it off at run time whatever the loaded config says.
    zero_cond_t: bool = False
    # The VAE (AutoencoderKLQwenImage); used as-is from the hub for ``paper``.
    vae_base_dim: int = 96
    vae_z_dim: int = 16
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_num_res_blocks: int = 2
    vae_temporal_downsample: tuple[bool, ...] = (False, True, True)
    vae_latents_mean: tuple[float, ...] | None = None  # None: the class defaults
    vae_latents_std: tuple[float, ...] | None = None


@dataclass
class VLConfig:
    """The frozen Qwen2.5-VL stream on the query (paper §3.3): its last hidden states of the
    query under the single-image edit template, first ``drop_idx`` tokens dropped, to which the
    operation tokens are *concatenated* (diffsynth/pipelines/qwen_image.py, model_fn_qwen_image:
    ``cat([prompt_emb, operation_emb], dim=1)``). Weights: ``text_encoder/`` and ``processor/``
    of the Qwen-Image-Edit folder."""

    enabled: bool = True
    hidden_size: int = 3584
    drop_idx: int = 64
    prompt: str = ""  # the official inference passes an empty prompt
    # "qwen2_5_vl": the real encoder; "patch": a frozen random patch embedding with the same
    # interface, for the ``tiny`` preset only (no Qwen2.5-VL weights or tokenizer offline).
    kind: str = "qwen2_5_vl"
    patch_size: int = 16  # "patch" kind only


@dataclass
class LoRAConfig:
    """peft LoRA on the DiT's attention projections (table 8)."""

    rank: int = 32
    alpha: int = 32
    dropout: float = 0.0
    bias: str = "none"
    target_modules: tuple[str, ...] = (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    )


@dataclass
class ExtractorTrainingConfig:
    """Extractor pre-training (table 9)."""

    batch_size: int = 1536  # simulated subset; 512 for the professional subset
    batch_size_professional: int = 512
    optimizer: str = "adamw"
    lr_max: float = 1e-4
    lr_min: float = 5e-5
    lr_scheduler: str = "cosine"
    weight_decay: float = 1e-4
    lpips_weight: float = 1.0  # the balancing scalar λ
    lpips_net: str = "vgg"  # not in the paper
    steps: int = 100_000  # not in the paper (illegible in our copy)
    warmup_steps: int = 0  # not in the paper
    # AdamW's ε (not in the paper; PyTorch's default). Gradients below it are damped: small
    # images with subtle edits give MSE gradients of 1e-10–1e-9 (see benchmarks/learning_check.py).
    adam_eps: float = 1e-8


@dataclass
class JointTrainingConfig:
    """Joint fine-tuning of R-Former, connector and LoRA with flow matching (table 9)."""

    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-5
    lr_scheduler: str = "constant"
    weight_decay: float = 1e-2
    steps: int = 20_000  # not in the paper
    image_area: int = 1024 * 1024  # query / target area for the VAE (facts.md §2)
    adam_eps: float = 1e-8  # AdamW's ε (not in the paper; PyTorch's default)


@dataclass
class InferenceConfig:
    """Official inference settings (facts.md §2)."""

    steps: int = 40
    seed: int = 123
    size_multiple: int = 16


@dataclass
class ModelConfig:
    """Everything the neural engine needs to be built, trained and run."""

    name: str = "paper"
    mae: MAEConfig = field(default_factory=MAEConfig)
    rformer: RFormerConfig = field(default_factory=RFormerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    vl: VLConfig = field(default_factory=VLConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    extractor_training: ExtractorTrainingConfig = field(default_factory=ExtractorTrainingConfig)
    joint_training: JointTrainingConfig = field(default_factory=JointTrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"


def paper_config() -> ModelConfig:
    """The paper's architecture and optimisation (tables 8–9)."""
    return ModelConfig(name="paper")


def tiny_config() -> ModelConfig:
    """The same classes at toy sizes: builds, trains and samples on a CPU in seconds."""
    return ModelConfig(
        name="tiny",
        mae=MAEConfig(hub_id="", hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=64, patch_size=8, image_size=32, pos_embed_size=16),
        rformer=RFormerConfig(num_queries=4, num_layers=2, hidden_size=32, num_heads=2),
        decoder=DecoderConfig(patch_size=8, num_layers=2, hidden_size=32, num_heads=2,
                              image_size=32),
        connector=ConnectorConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                  intermediate_size=64, output_dim=64),
        dit=DiTConfig(hub_id="", patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                      attention_head_dim=16, num_attention_heads=3, joint_attention_dim=64,
                      axes_dims_rope=(8, 4, 4), zero_cond_t=False, vae_base_dim=24, vae_z_dim=4,
                      vae_dim_mult=(1, 2, 4), vae_num_res_blocks=1,
                      vae_temporal_downsample=(False, True), vae_latents_mean=(0.0,) * 4,
                      vae_latents_std=(1.0,) * 4),
        vl=VLConfig(hidden_size=64, drop_idx=0, kind="patch", patch_size=16),
        lora=LoRAConfig(rank=4, alpha=4),
        extractor_training=ExtractorTrainingConfig(batch_size=2, batch_size_professional=2,
                                                   lr_max=1e-3, lr_min=1e-4, steps=4),
        joint_training=JointTrainingConfig(batch_size=1, lr=1e-3, steps=4, image_area=64 * 64),
        inference=InferenceConfig(steps=2),
    )


PRESETS = {"paper": paper_config, "tiny": tiny_config}


class ConfigError(ValueError):
    """A config file or override that does not fit :class:`ModelConfig`."""


def _merge(target: Any, overrides: dict, where: str) -> None:
    known = {f.name: f for f in fields(target)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{where}{key}'; known: {', '.join(sorted(known))}")
        current = getattr(target, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key!r} must be a table of settings")
            _merge(current, value, f"{where}{key}.")
        elif isinstance(value, list):  # every sequence field is a tuple
            setattr(target, key, tuple(value))
        else:
            setattr(target, key, value)


def from_dict(data: dict) -> ModelConfig:
    """A config from a (possibly partial) dict: ``base`` names the preset it starts from."""
    data = copy.deepcopy(data)
    # A saved (complete) config names itself, possibly with a custom name: start from paper.
    base = data.pop("base", None) or (data.get("name") if data.get("name") in PRESETS
                                      else "paper")
    if base not in PRESETS:
        raise ConfigError(f"unknown preset {base!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[base]()
    _merge(config, data, "")
    return config


def load_config(spec: str | Path) -> ModelConfig:
    """A preset name (``paper``, ``tiny``) or a ``.json`` / ``.toml`` file of overrides."""
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"config {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse config {path}: {exc}") from exc
    return from_dict(data)
