"""The frozen Qwen-Image-Edit DiT, its LoRA, the flow-matching loss and sampling.

The paper's generator is Qwen-Image-Edit-2511: diffusers' ``QwenImageTransformer2DModel``
(frozen, with peft LoRA on the attention projections), ``AutoencoderKLQwenImage`` and
``FlowMatchEulerDiscreteScheduler``. ``cond`` (B, L, joint_attention_dim) and its mask (B, L)
are passed as the pipeline's ``prompt_embeds`` / ``prompt_embeds_mask``: in the paper's
conditioning (§3.3) that is the frozen Qwen2.5-VL stream of the query *followed by* the
connector's operation tokens (built by :func:`.vl.join_condition`); the query photo is also
the edit (condition) image.

Conventions. Images are float tensors in [0, 1] of shape (B, 3, H, W), H and W multiples of 16.
Latents are the VAE's, normalised as the pipeline does (``(z - latents_mean) / latents_std``),
shape (B, C, 1, H/s, W/s) with s the VAE's spatial factor (8 for the real VAE). The transformer
sees them "packed": 2×2 latent patches → a sequence (B, H/2s · W/2s, 4C).

Training and sampling agree with ``QwenImageEditPlusPipeline`` (diffusers 0.42):

* flow matching ``x_σ = (1 − σ)·x0 + σ·ε``, velocity target ``v = ε − x0`` (the Euler step is
  ``x ← x + (σ_next − σ)·v``);
* the transformer gets ``timestep = σ`` in [0, 1] (the pipeline passes ``scheduler timestep /
  1000`` and the model's sinusoidal embedding multiplies by 1000 again);
* the sequence is [noise-latent tokens; condition-image tokens], ``img_shapes`` lists both
  grids, and only the first part of the output is the prediction; with ``zero_cond_t`` the
  condition tokens are modulated with timestep 0 inside the model;
* an all-ones mask is passed as ``None`` (the pipeline's ``encode_prompt`` does that).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as _edit_plus
from PIL import Image
from torch import Tensor

from ..errors import MissingWeightsError
from .config import DiTConfig, LoRAConfig
from .weights import resolve_weights

__all__ = [
    "DiT", "MissingWeightsError", "QWEN_IMAGE_SCHEDULER_CONFIG", "LORA_WEIGHT_NAME",
    "build_dit", "set_zero_cond_t", "freeze_dead_lora", "add_lora", "lora_state_dict", "save_lora", "load_lora", "encode_images",
    "load_lora_state", "pack_latents", "sample_sigmas", "flow_matching_loss", "generate", "count_parameters",
]

# The hub repo's scheduler/scheduler_config.json (Qwen-Image and its Edit variants): dynamic,
# resolution-dependent exponential shift and a schedule stretched to end at σ = 0.02. Used when
# the DiT is built without weights (the ``tiny`` preset, meta counting).
QWEN_IMAGE_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "invert_sigmas": False,
    "stochastic_sampling": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}

WEIGHT_SUBFOLDERS = ("transformer", "vae", "scheduler")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
SIZE_MULTIPLE = 16


@dataclass
class DiT:
    """The frozen generator: transformer, VAE (``None`` when built on the meta device), scheduler."""

    transformer: QwenImageTransformer2DModel
    vae: AutoencoderKLQwenImage | None
    scheduler: FlowMatchEulerDiscreteScheduler
    root: Path | None = None  # the Qwen-Image-Edit folder it was loaded from (None: random)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for the real VAE, 4 for ``tiny``)."""
        downsample = self.vae.temperal_downsample if self.vae is not None else (0, 0, 0)
        return 2 ** len(downsample)


# --------------------------------------------------------------------------------------------
# Building


def _fetch_hint(weights: str | Path | None, cfg: DiTConfig) -> str:
    text = str(weights or "")
    looks_like_hub_id = (text.count("/") == 1 and not text.startswith((".", "/", "~"))
                         and not Path(text).exists())
    hub_id = text if looks_like_hub_id else (cfg.hub_id or DiTConfig.hub_id)
    include = " ".join(f'--include "{sub}/*"' for sub in WEIGHT_SUBFOLDERS)
    return (f"fetch it on a machine with network access (hf download {hub_id} {include}, "
            "optionally with --local-dir DIR) and pass --dit DIR or keep it in the "
            "Hugging Face cache")


def _transformer_kwargs(cfg: DiTConfig) -> dict:
    return dict(
        patch_size=cfg.patch_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        num_layers=cfg.num_layers, attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads, joint_attention_dim=cfg.joint_attention_dim,
        axes_dims_rope=tuple(cfg.axes_dims_rope), zero_cond_t=cfg.zero_cond_t,
    )


def _vae_kwargs(cfg: DiTConfig) -> dict:
    kwargs = dict(
        base_dim=cfg.vae_base_dim, z_dim=cfg.vae_z_dim, dim_mult=list(cfg.vae_dim_mult),
        num_res_blocks=cfg.vae_num_res_blocks,
        temperal_downsample=list(cfg.vae_temporal_downsample),
    )
    if cfg.vae_latents_mean is not None:
        kwargs["latents_mean"] = list(cfg.vae_latents_mean)
    if cfg.vae_latents_std is not None:
        kwargs["latents_std"] = list(cfg.vae_latents_std)
    return kwargs


def _check_loaded(transformer: QwenImageTransformer2DModel, cfg: DiTConfig, where: Path) -> None:
    """The loaded transformer must be the architecture the config describes."""
    wanted = _transformer_kwargs(cfg)
    wanted.pop("zero_cond_t")  # a run-time switch (set_zero_cond_t), not an architecture
    wrong = []
    for key, value in wanted.items():
        have = transformer.config.get(key)
        have = tuple(have) if isinstance(have, list) else have
        if have != value and not (key == "out_channels" and have is None):
            wrong.append(f"{key} {have!r} (config says {value!r})")
    if wrong:
        raise MissingWeightsError(
            f"Qwen-Image-Edit DiT: {where} does not match the config: {'; '.join(wrong)}; "
            "set dit.* in the config to match the weights")


def set_zero_cond_t(transformer: QwenImageTransformer2DModel, value: bool) -> None:
    """Switch the condition image's timestep-0 modulation on or off (no parameters change)."""
    transformer.zero_cond_t = bool(value)
    for block in transformer.transformer_blocks:
        block.zero_cond_t = bool(value)
    transformer.register_to_config(zero_cond_t=bool(value))


def freeze_dead_lora(transformer: QwenImageTransformer2DModel) -> list[str]:
    """Freeze the LoRA tensors that cannot get a gradient, and return their names.

    Only the image stream of the last block reaches the output: that block's text-stream
    output projection (``attn.to_add_out``) and text MLP (``txt_mlp``) feed nothing. Their
    LoRA would stay exactly as initialised in one process, and DDP (which expects a gradient
    for every trainable parameter) stops at the second step. They stay in the adapter (and in
    saved files: the official LoRA has them too)."""
    last = f"transformer_blocks.{len(transformer.transformer_blocks) - 1}."
    dead = []
    for name, param in transformer.named_parameters():
        if "lora_" in name and name.startswith((last + "attn.to_add_out", last + "txt_mlp")):
            param.requires_grad_(False)
            dead.append(name)
    return dead


def build_dit(cfg: DiTConfig, *, weights: str | Path | None = None, device="cpu",
              dtype: torch.dtype = torch.float32, meta: bool = False) -> DiT:
    """The frozen DiT (``requires_grad`` off, ``eval()``), on ``device`` in ``dtype``.

    * ``weights=None``: random init from ``cfg`` (meant for the ``tiny`` preset; seeded by the
      caller's ``torch.manual_seed``). A random paper-size DiT is 20 B parameters: don't.
    * ``meta=True``: the transformer at ``cfg``'s size on the meta device (no memory), to count
      parameters; ``vae`` is ``None``. ``weights`` must be ``None``.
    * ``weights`` a local directory laid out like the hub repo (``transformer/``, ``vae/``,
      ``scheduler/``) or a hub id looked up in the local Hugging Face cache only (never
      downloaded). Missing → :class:`MissingWeightsError` saying what to fetch.
    """
    scheduler_from_config = FlowMatchEulerDiscreteScheduler.from_config(
        QWEN_IMAGE_SCHEDULER_CONFIG)
    if meta:
        if weights is not None:
            raise ValueError("build_dit(meta=True) builds from the config; pass weights=None")
        with torch.device("meta"):
            transformer = QwenImageTransformer2DModel(**_transformer_kwargs(cfg))
        _place(transformer, "meta", dtype)
        _freeze(transformer)
        set_zero_cond_t(transformer, cfg.zero_cond_t)
        return DiT(transformer=transformer, vae=None, scheduler=scheduler_from_config)

    if weights is None:
        # Initialise in place on the target device and dtype: at the paper's size a float32
        # CPU copy first would need ~80 GB of host memory.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                transformer = QwenImageTransformer2DModel(**_transformer_kwargs(cfg))
                vae = AutoencoderKLQwenImage(**_vae_kwargs(cfg))
        finally:
            torch.set_default_dtype(previous)
        scheduler = scheduler_from_config
    else:
        root = resolve_weights(weights, what="Qwen-Image-Edit DiT", flag="--dit",
                               allow_patterns=[f"{sub}/*" for sub in WEIGHT_SUBFOLDERS])
        missing = [f"{sub}/" for sub in WEIGHT_SUBFOLDERS if not (root / sub).is_dir()]
        if missing:
            raise MissingWeightsError(
                f"Qwen-Image-Edit DiT: {root} lacks {', '.join(missing)}; "
                f"{_fetch_hint(weights, cfg)}")
        try:
            # Built on the meta device and filled shard by shard, each tensor cast to
            # ``dtype`` as it is read: never a float32 copy of the 20 B model.
            transformer = QwenImageTransformer2DModel.from_pretrained(
                root, subfolder="transformer", torch_dtype=dtype, local_files_only=True,
                low_cpu_mem_usage=True)
            vae = AutoencoderKLQwenImage.from_pretrained(
                root, subfolder="vae", torch_dtype=dtype, local_files_only=True,
                low_cpu_mem_usage=True)
            scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
                root, subfolder="scheduler", local_files_only=True)
        except OSError as exc:  # incomplete download: a shard or config missing
            raise MissingWeightsError(
                f"Qwen-Image-Edit DiT: cannot load {root}: {exc}; "
                f"{_fetch_hint(weights, cfg)}") from exc
        _check_loaded(transformer, cfg, root)
    _place(transformer, device, dtype)
    _place(vae, device, dtype)
    _freeze(transformer)
    _freeze(vae)
    set_zero_cond_t(transformer, cfg.zero_cond_t)
    return DiT(transformer=transformer, vae=vae, scheduler=scheduler,
               root=None if weights is None else root)


def _place(module: torch.nn.Module, device, dtype: torch.dtype) -> None:
    # ModelMixin.to(dtype) warns even when nothing changes: cast only when needed.
    module.to(device=device)
    if next(module.parameters()).dtype != dtype:
        module.to(dtype=dtype)


def _freeze(module: torch.nn.Module) -> None:
    module.requires_grad_(False)
    module.eval()


def count_parameters(module: torch.nn.Module, *, trainable: bool = False) -> int:
    """Number of parameters (shared ones once); ``trainable=True``: only those requiring grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


# --------------------------------------------------------------------------------------------
# LoRA


def _lora_config(cfg: LoRAConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      init_lora_weights="gaussian", target_modules=list(cfg.target_modules),
                      bias=cfg.bias)


def add_lora(transformer: QwenImageTransformer2DModel, cfg: LoRAConfig) -> None:
    """Add a peft LoRA adapter (``cfg``) to the attention projections, in place.

    ``lora_A`` starts Gaussian and ``lora_B`` at zero, so the model's output is unchanged until
    training moves ``B``. Afterwards only the LoRA parameters require grad (peft freezes the
    rest; with ``bias != "none"`` peft also unfreezes those biases). The new layers take the
    device of the layers they wrap (meta included, for counting). With ``cfg.dropout > 0`` put the
    transformer in ``train()`` while training: :func:`build_dit` leaves it in ``eval()``.
    """
    on_meta = next(transformer.parameters()).is_meta
    with torch.device("meta") if on_meta else nullcontext():
        transformer.add_adapter(_lora_config(cfg))


def lora_state_dict(transformer: QwenImageTransformer2DModel) -> dict[str, Tensor]:
    """The adapter's tensors (peft ``get_peft_model_state_dict``), keys without adapter name."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer)


def save_lora(transformer: QwenImageTransformer2DModel, directory: str | Path) -> Path:
    """Write the adapter as ``directory/pytorch_lora_weights.safetensors`` and return its path.

    The format is diffusers' (``QwenImageEditPlusPipeline.save_lora_weights``): keys prefixed
    ``transformer.``, the peft config in the safetensors metadata, so the file also loads with
    ``pipe.load_lora_weights(directory)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adapter = transformer.active_adapters()[0]
    metadata = transformer.peft_config[adapter].to_dict()
    QwenImageEditPlusPipeline.save_lora_weights(
        directory, transformer_lora_layers=lora_state_dict(transformer),
        transformer_lora_adapter_metadata=metadata, weight_name=LORA_WEIGHT_NAME)
    return directory / LORA_WEIGHT_NAME


def _saved_lora_config(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("lora_adapter_metadata")
    if not raw:
        return {}
    prefix = "transformer."
    return {k[len(prefix):]: v for k, v in json.loads(raw).items() if k.startswith(prefix)}


def load_lora(transformer: QwenImageTransformer2DModel, directory_or_file: str | Path,
              cfg: LoRAConfig) -> None:
    """Add a LoRA adapter shaped by ``cfg`` and fill it from a file :func:`save_lora` wrote.

    ``transformer`` must have no adapter yet. Every LoRA tensor must be in the file and the
    file must hold nothing else; a rank or alpha different from ``cfg`` is an error.
    """
    from safetensors.torch import load_file

    path = Path(directory_or_file)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise MissingWeightsError(f"LoRA weights: {path} does not exist")
    if getattr(transformer, "peft_config", None):
        raise ValueError("load_lora needs a transformer without adapters; build a fresh one")
    saved = _saved_lora_config(path)
    for key, want in (("r", cfg.rank), ("lora_alpha", cfg.alpha)):
        if key in saved and saved[key] != want:
            raise ValueError(f"LoRA {path}: {key}={saved[key]} but the config says {want}")

    state = load_file(str(path))
    prefix = "transformer."
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    load_lora_state(transformer, state, cfg, where=str(path))


def load_lora_state(transformer: QwenImageTransformer2DModel, state: dict[str, Tensor],
                    cfg: LoRAConfig, *, where: str = "LoRA") -> None:
    """Add a LoRA adapter shaped by ``cfg`` and fill it from peft-named tensors (keys
    ``transformer_blocks.N.<module>.lora_{A,B}.weight``); every tensor must fit."""
    from peft.utils import set_peft_model_state_dict

    add_lora(transformer, cfg)
    expected = lora_state_dict(transformer)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"LoRA {where} does not fit the config: {len(missing)} tensors missing "
                         f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise ValueError(f"LoRA {where}: {wrong[0]} has shape {list(state[wrong[0]].shape)}, "
                         f"expected {list(expected[wrong[0]].shape)}")
    param = next(transformer.parameters())
    state = {k: v.to(device=param.device) for k, v in state.items()}
    result = set_peft_model_state_dict(transformer, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"LoRA {where}: unexpected keys {result.unexpected_keys[:3]}")


# --------------------------------------------------------------------------------------------
# Latents, loss


def _check_images(images: Tensor, name: str, multiple: int = SIZE_MULTIPLE) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be (B, 3, H, W); got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"{name}: H and W must be multiples of {multiple}; got {height}×{width}")


def encode_images(dit: DiT, images: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] → normalised latents (B, C, 1, H/s, W/s), s = vae_scale_factor.

    As the pipeline encodes its condition images: [0, 1] → [−1, 1], one video frame, the
    posterior's mode, then ``(z − latents_mean) / latents_std``. No gradient (the VAE is frozen
    and images are data).
    """
    _check_images(images, "images", 2 * dit.vae_scale_factor)
    vae = dit.vae
    param = next(vae.parameters())
    pixels = images.to(device=param.device, dtype=param.dtype) * 2.0 - 1.0
    with torch.no_grad():
        latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()
    channels = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, channels, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, channels, 1, 1, 1)
    return (latents - mean.to(latents)) / std.to(latents)


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, 1, h, w) latents → (B, h/2 · w/2, 4C) tokens, by the pipeline's own ``_pack_latents``."""
    batch, channels, _, height, width = latents.shape
    return QwenImageEditPlusPipeline._pack_latents(latents, batch, channels, height, width)


def sample_sigmas(scheduler: FlowMatchEulerDiscreteScheduler, batch: int, image_seq_len: int,
                  *, generator: torch.Generator) -> Tensor:
    """(batch,) noise levels σ in [0, 1) for training, float32 on the generator's device.

    ``u ~ U[0, 1)`` mapped through the same resolution-dependent shift the scheduler applies at
    sampling time (``mu`` from the pipeline's ``calculate_shift(image_seq_len, …)`` with the
    scheduler's config, then ``scheduler.time_shift``; a static ``shift`` when dynamic
    shifting is off). Training thus sees σ with the density that sampling visits; the
    scheduler's ``shift_terminal`` stretch (which only moves the last steps toward 0.02) is not
    applied.
    """
    u = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float32)
    config = scheduler.config
    if config.get("use_dynamic_shifting", False):
        mu = _edit_plus.calculate_shift(
            image_seq_len,
            config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5), config.get("max_shift", 1.15),
        )
        return scheduler.time_shift(mu, 1.0, u)
    shift = config.get("shift", 1.0)
    return shift * u / (1 + (shift - 1) * u)


def _pipeline_mask(cond_mask: Tensor | None) -> Tensor | None:
    # QwenImageEditPlusPipeline.encode_prompt drops an all-ones mask; do the same in training.
    if cond_mask is None or bool(cond_mask.all()):
        return None
    return cond_mask


def flow_matching_loss(dit: DiT, cond: Tensor, cond_mask: Tensor | None, query: Tensor,
                       target: Tensor, *,
                       generator: torch.Generator | list[torch.Generator]) -> Tensor:
    """Scalar flow-matching MSE for retouching ``query`` into ``target`` under ``cond``.

    ``cond`` (B, L, joint_attention_dim) and ``cond_mask`` (B, L) (1 = token, 0 = padding) come
    from the connector; ``query`` and ``target`` are (B, 3, H, W) in [0, 1] (same B; sides
    multiples of 16). σ (see :func:`sample_sigmas`) and ε ~ N(0, I) are drawn from
    ``generator``. The noisy target's tokens come first and the query's latents after them, as
    in the pipeline; the loss is the mean of (prediction − (ε − x0))² over the noisy tokens.
    Gradients reach ``cond`` and the LoRA parameters. ``generator`` may be a list, one per
    sample: each sample's σ and ε then come from its own generator, so a batch split across
    processes draws the same noise as the whole batch in one process.
    """
    _check_images(query, "query")
    _check_images(target, "target")
    if query.shape[0] != target.shape[0] or cond.shape[0] != target.shape[0]:
        raise ValueError("cond, query and target must have the same batch size")
    transformer = dit.transformer
    x0 = encode_images(dit, target)
    query_latents = encode_images(dit, query)
    batch, _, _, height, width = x0.shape
    seq_len = (height // 2) * (width // 2)

    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}")
        sigma = torch.cat([sample_sigmas(dit.scheduler, 1, seq_len, generator=g)
                           for g in generator])
        noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g, device=g.device,
                                       dtype=torch.float32) for g in generator])
    else:
        sigma = sample_sigmas(dit.scheduler, batch, seq_len, generator=generator)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device,
                            dtype=torch.float32)
    sigma = sigma.to(x0.device)
    noise = noise.to(device=x0.device, dtype=x0.dtype)
    s = sigma.view(batch, 1, 1, 1, 1).to(x0.dtype)
    noisy = (1.0 - s) * x0 + s * noise

    tokens = torch.cat([pack_latents(noisy), pack_latents(query_latents)], dim=1)
    q_height, q_width = query_latents.shape[-2:]
    img_shapes = [[(1, height // 2, width // 2), (1, q_height // 2, q_width // 2)]] * batch
    dtype = transformer.dtype
    prediction = transformer(
        hidden_states=tokens.to(dtype),
        timestep=sigma.to(dtype),
        encoder_hidden_states=cond.to(device=x0.device, dtype=dtype),
        encoder_hidden_states_mask=_pipeline_mask(
            None if cond_mask is None else cond_mask.to(x0.device)),
        img_shapes=img_shapes,
        return_dict=False,
    )[0][:, :seq_len]
    velocity = pack_latents(noise - x0)
    return F.mse_loss(prediction.float(), velocity.float())


# --------------------------------------------------------------------------------------------
# Sampling

_PIPELINE_PATCH_LOCK = threading.RLock()


@contextmanager
def _condition_size(width: int, height: int) -> Iterator[None]:
    """While active, ``QwenImageEditPlusPipeline`` sizes its condition images to width × height.

    The pipeline sizes each condition image with its module function
    ``calculate_dimensions(area, aspect)``, twice: to ``CONDITION_IMAGE_SIZE`` (384², the copy
    for the Qwen2.5-VL processor: with ``prompt_embeds`` given and no processor it is resized and
    then never used) and to ``VAE_IMAGE_SIZE`` (1024², the copy whose latents join the
    sequence). Setting those area constants is not enough: ``calculate_dimensions`` rounds
    both sides to multiples of 32, so a 64 × 48 output's condition would be encoded at 64 × 64
    (and a 96 × 80 one at 96 × 64) and no longer match the noise grid, as it does in training. So the function itself is swapped, under a
    lock (the patch is process-wide), for one that returns the requested size.
    """
    if not hasattr(_edit_plus, "calculate_dimensions"):  # a diffusers that works differently
        raise RuntimeError("diffusers' QwenImageEditPlusPipeline no longer has "
                           "calculate_dimensions; update mirrorppr_cli.model.dit")
    with _PIPELINE_PATCH_LOCK:
        original = _edit_plus.calculate_dimensions
        _edit_plus.calculate_dimensions = lambda target_area, ratio: (width, height)
        try:
            yield
        finally:
            _edit_plus.calculate_dimensions = original


def _to_pil(image: Tensor) -> Image.Image:
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy()))


def generate(dit: DiT, cond: Tensor, cond_mask: Tensor | None, query: Tensor, *, steps: int,
             seed: int, height: int | None = None, width: int | None = None) -> Tensor:
    """Retouch one query: (1, 3, H', W') float in [0, 1] (batch size 1).

    ``cond`` (1, L, joint_attention_dim), ``cond_mask`` (1, L); ``query`` (1, 3, H, W) or
    (3, H, W) in [0, 1]. The output size is the query's floored to multiples of 16 unless
    ``height`` / ``width`` (multiples of 16) are given; the query, resized to that size, is the
    condition image (so its latent grid equals the noise grid, as in training). Runs
    ``QwenImageEditPlusPipeline`` without text encoder, with ``steps`` Euler steps, no CFG, and
    noise from ``torch.Generator().manual_seed(seed)`` (CPU: the same on every device). The
    pipeline takes the query as an 8-bit PIL image, so it is quantised to 1/255 first.
    """
    if query.ndim == 3:
        query = query.unsqueeze(0)
    if query.ndim != 4 or query.shape[:2] != (1, 3):
        raise ValueError(f"query must be (1, 3, H, W); got {tuple(query.shape)}")
    if cond.ndim != 3 or cond.shape[0] != 1:
        raise ValueError(f"cond must be (1, L, D); got {tuple(cond.shape)}")
    out_height = height if height is not None else query.shape[-2] // SIZE_MULTIPLE * SIZE_MULTIPLE
    out_width = width if width is not None else query.shape[-1] // SIZE_MULTIPLE * SIZE_MULTIPLE
    if out_height < SIZE_MULTIPLE or out_width < SIZE_MULTIPLE:
        raise ValueError(f"query {tuple(query.shape[-2:])} is smaller than {SIZE_MULTIPLE} px")
    if out_height % SIZE_MULTIPLE or out_width % SIZE_MULTIPLE:
        raise ValueError(f"height and width must be multiples of {SIZE_MULTIPLE}")

    if steps < 1 or (steps == 1 and dit.scheduler.config.get("shift_terminal")):
        # One step: the scheduler stretches [1.0] to end at shift_terminal → 0/0 → NaN sigmas.
        raise ValueError(f"steps must be at least 2 with this scheduler; got {steps}")

    transformer = dit.transformer
    pipe = QwenImageEditPlusPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(dit.scheduler.config),
        vae=dit.vae, text_encoder=None, tokenizer=None, processor=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    device = next(transformer.parameters()).device
    if cond_mask is None:  # all tokens valid; the pipeline warns about a missing mask
        cond_mask = torch.ones(cond.shape[:2], dtype=torch.long)
    cond_mask = cond_mask.to(device)
    with _condition_size(out_width, out_height):
        images = pipe(
            image=[_to_pil(query[0])],
            prompt_embeds=cond.to(device=device, dtype=transformer.dtype),
            prompt_embeds_mask=cond_mask,
            true_cfg_scale=1.0,
            height=out_height,
            width=out_width,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
    return images.float().clamp(0, 1)
