"""The neural engine at inference: one model, shared by the ``eager``, ``compile`` and ``fp8``
backends (they only change how it executes).

A *weights folder* is what ``mirrorppr train joint`` writes (``OUT/weights``):

* ``config.json`` — the resolved :class:`ModelConfig`;
* ``extractor.safetensors`` — the trained R-Former (and the MAE, when it was trained as a
  substitute), keys ``extractor.*``;
* ``connector.safetensors`` — keys ``connector.*``;
* ``lora/`` — the DiT LoRA (:func:`dit.save_lora`);
* optionally ``mae/`` and ``dit/`` — base models saved with ``save_pretrained`` when they are
  not pretrained hub models (the ``tiny`` preset's random ones), so that a folder alone always
  fixes every output.

The pretrained bases (MAE, Qwen-Image-Edit) otherwise come from ``--mae`` / ``--dit`` or the
config's hub ids, through :mod:`.weights` (local folder or cache, never a download).

``--weights`` may also be the *official release* folder (``mirrorppr_face/{mae,rformer,
connector,lora}`` beside ``qwen_image_edit/``, see :mod:`.official`): every tensor is checked
and mapped onto these modules; ``mirrorppr convert-weights`` writes it once in the layout above.

Memory: the DiT (and the Qwen2.5-VL stream) are built on the ``meta`` device and filled shard
by shard in the compute dtype (bf16 on a GPU), never as a float32 copy first; see
:mod:`.memory` for the plan at the real size.
Images cross this module's boundary as ``(H, W, 3)`` uint8 RGB numpy arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import MissingWeightsError
from . import quiet_hub_libraries
from .config import ModelConfig, from_dict
from .connector import Connector
from .extractor import OperationExtractor
from .weights import load_mae

quiet_hub_libraries()

CONFIG_FILE = "config.json"
EXTRACTOR_FILE = "extractor.safetensors"
CONNECTOR_FILE = "connector.safetensors"
LORA_DIR = "lora"
MAE_DIR = "mae"
DIT_DIR = "dit"


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(1, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def to_rgb8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] → ``(H, W, 3)`` uint8 (rounded)."""
    array = (image[0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def export_weights(folder: Path, config: ModelConfig, extractor: OperationExtractor,
                   connector: Connector, dit, *, save_mae: bool | None = None,
                   save_dit: bool | None = None) -> Path:
    """Write a weights folder (see the module docstring). ``save_mae`` / ``save_dit`` also
    save the base models; by default exactly when they come from no hub id (random bases, as
    in the ``tiny`` preset) — a frozen MAE only, since a trained one is in the extractor file."""
    if save_mae is None:
        save_mae = config.mae.frozen and not config.mae.hub_id
    if save_dit is None:
        save_dit = not config.dit.hub_id
    from .dit import save_lora

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained = {f"extractor.{k}": v.detach().contiguous()
               for k, v in extractor.state_dict().items()
               if not k.startswith("mae.") or not config.mae.frozen}
    save_file(trained, str(folder / EXTRACTOR_FILE))
    save_file({f"connector.{k}": v.detach().contiguous() for k, v in connector.state_dict().items()},
              str(folder / CONNECTOR_FILE))
    save_lora(dit.transformer, folder / LORA_DIR)
    (folder / CONFIG_FILE).write_text(config.to_json())
    if save_mae:
        extractor.mae.model.save_pretrained(folder / MAE_DIR)
    if save_dit:
        base = dit.transformer
        # the LoRA lives in lora/: save the base transformer's own weights only
        state = {k: v for k, v in base.state_dict().items() if "lora_" not in k}
        (folder / DIT_DIR / "transformer").mkdir(parents=True, exist_ok=True)
        base.save_config(folder / DIT_DIR / "transformer")
        names = {k.replace(".base_layer", ""): v.contiguous() for k, v in state.items()}
        save_file(names, str(folder / DIT_DIR / "transformer" /
                             "diffusion_pytorch_model.safetensors"))
        dit.vae.save_pretrained(folder / DIT_DIR / "vae")
        dit.scheduler.save_pretrained(folder / DIT_DIR / "scheduler")
    return folder


@dataclass
class NeuralEngine:
    """Extractor (frozen MAE + R-Former), connector and DiT with LoRA, ready to sample."""

    config: ModelConfig
    extractor: OperationExtractor
    connector: Connector
    dit: object  # model.dit.DiT
    device: torch.device
    dtype: torch.dtype
    vl: torch.nn.Module | None = None  # the frozen Qwen2.5-VL stream on the query
    host_cast: bool = False  # the DiT's storage was cast on the host (fp8): move, never re-cast

    @classmethod
    def load(cls, folder: str | Path, *, mae: str | None = None, dit: str | None = None,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             host_cast=None) -> NeuralEngine:
        """Build the model from a weights folder (ours or the official release); the bases
        from the folder, ``mae``/``dit`` or the config's hub ids. Raises
        :class:`MissingWeightsError` naming what is missing. The DiT is loaded on the host in
        ``dtype``; ``host_cast(transformer)`` (the fp8 backend's storage cast) runs there
        before anything moves to ``device``."""
        from .dit import build_dit, load_lora
        from .official import is_release
        from .vl import build_vl_stream

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() and is_release(folder):
            return cls._load_release(folder, dit=dit, device=device, dtype=dtype,
                                     host_cast=host_cast)
        if not (folder / CONFIG_FILE).is_file():
            raise MissingWeightsError(
                f"{folder}: not a mirrorppr weights folder (no {CONFIG_FILE}); pass --weights "
                "with the `weights/` folder that `mirrorppr train joint` writes")
        config = from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        for name in (EXTRACTOR_FILE, CONNECTOR_FILE, LORA_DIR):
            if not (folder / name).exists():
                raise MissingWeightsError(f"{folder}: {name} is missing; the folder is incomplete")
        mae_spec = mae or (str(folder / MAE_DIR) if (folder / MAE_DIR).is_dir()
                           else config.mae.hub_id)
        dit_spec = dit or (str(folder / DIT_DIR) if (folder / DIT_DIR).is_dir()
                           else config.dit.hub_id)
        trained = load_file(str(folder / EXTRACTOR_FILE))
        if not mae_spec and not any(k.startswith("extractor.mae.") for k in trained):
            raise MissingWeightsError(
                "MAE encoder: no weights in the folder and no hub id in its config; pass --mae")
        if not dit_spec:
            raise MissingWeightsError(
                "Qwen-Image-Edit DiT: no weights in the folder and no hub id in its config; "
                "pass --dit")
        extractor = OperationExtractor(config.mae, config.rformer, load_mae(mae_spec, config.mae))
        missing, unexpected = extractor.load_state_dict(
            {k.removeprefix("extractor."): v for k, v in trained.items()}, strict=False)
        missing = [k for k in missing if not k.startswith("mae.")]
        if missing or unexpected:
            raise MissingWeightsError(f"{folder / EXTRACTOR_FILE} does not fit its config "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        connector = Connector(config.connector, config.rformer.hidden_size)
        connector.load_state_dict({k.removeprefix("connector."): v for k, v in
                                   load_file(str(folder / CONNECTOR_FILE)).items()})
        model = build_dit(config.dit, weights=dit_spec, device="cpu", dtype=dtype)
        load_lora(model.transformer, folder / LORA_DIR, config.lora)
        vl = build_vl_stream(config.vl, model.root, dtype=dtype)
        return cls._finish(config, extractor, connector, model, vl, device, dtype, host_cast)

    @classmethod
    def _finish(cls, config, extractor, connector, model, vl, device, dtype, host_cast
                ) -> NeuralEngine:
        if host_cast is not None:
            host_cast(model.transformer)
        engine = cls(config, extractor.eval(), connector.eval(), model, torch.device("cpu"),
                     dtype, vl, host_cast is not None)
        return engine.to(device, dtype)

    @classmethod
    def _load_release(cls, folder: Path, *, dit: str | None, device, dtype, host_cast
                      ) -> NeuralEngine:
        """The official release layout, every tensor checked (see :mod:`.official`)."""
        from .dit import build_dit, load_lora_state
        from .official import find_release, load_release_state, release_config
        from .vl import build_vl_stream

        release = find_release(folder)
        config = release_config(release)
        # qwen_image_edit/ beside the release, else --dit, else the hub id in the cache.
        dit_spec = dit or config.dit.hub_id
        state = load_release_state(release, config)
        extractor = OperationExtractor(config.mae, config.rformer)
        extractor.mae.model.load_state_dict(state["mae"])
        extractor.rformer.load_state_dict(state["rformer"])
        connector = Connector(config.connector, config.rformer.hidden_size)
        connector.load_state_dict(state["connector"])
        model = build_dit(config.dit, weights=dit_spec, device="cpu", dtype=dtype)
        load_lora_state(model.transformer, state["lora"], config.lora,
                        where=str(release.files["lora"]))
        vl = build_vl_stream(config.vl, model.root, dtype=dtype)
        return cls._finish(config, extractor, connector, model, vl, device, dtype, host_cast)

    @classmethod
    def random(cls, config: ModelConfig, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 0) -> NeuralEngine:
        """Every part randomly initialised at ``config``'s sizes, directly on ``device`` (for
        speed and memory benchmarks of the real architecture; outputs are meaningless)."""
        from .config import LoRAConfig  # noqa: F401  (documented type of config.lora)
        from .dit import add_lora, build_dit

        torch.manual_seed(seed)
        with torch.device(device):
            extractor = OperationExtractor(config.mae, config.rformer)
            connector = Connector(config.connector, config.rformer.hidden_size)
        from .vl import PatchVLStream

        model = build_dit(config.dit, device=device, dtype=dtype)
        add_lora(model.transformer, config.lora)
        # A random stand-in of the query stream's shape contract (no 7 B random Qwen2.5-VL).
        vl = PatchVLStream(config.vl) if config.vl.enabled else None
        engine = cls(config, extractor.eval(), connector.eval(), model, torch.device(device),
                     dtype, vl)
        return engine.to(device, dtype)

    def to(self, device: str | torch.device, dtype: torch.dtype) -> NeuralEngine:
        """Move every part to ``device``; the DiT and its VAE compute in ``dtype`` (the
        pipeline hands the VAE the condition image in the transformer's dtype)."""
        self.device, self.dtype = torch.device(device), dtype
        vae_dtype = dtype
        parts = [(self.extractor, None), (self.connector, None),
                 (self.dit.transformer, None if self.host_cast else dtype),
                 (self.dit.vae, vae_dtype)]
        if self.vl is not None:
            parts.append((self.vl, dtype))
        for module, want in parts:
            first = next(module.parameters())
            if first.device != self.device or (want is not None and first.dtype != want):
                module.to(self.device) if want is None else module.to(self.device, want)
        return self

    @torch.no_grad()
    def condition(self, before: np.ndarray, after: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The DiT conditioning ``(1, L, D)`` and mask ``(1, L)`` of an exemplar pair."""
        a, b = to_tensor(before).to(self.device), to_tensor(after).to(self.device)
        return self.connector(self.extractor(a, b))

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, mask: torch.Tensor, query: np.ndarray, *,
               steps: int | None = None, seed: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
        """Retouch ``query`` under ``cond``: ``(H', W', 3)`` uint8, H', W' = the query's sides
        floored to multiples of 16 (or ``size`` = (width, height))."""
        from .dit import generate
        from .vl import join_condition

        steps = steps or self.config.inference.steps
        seed = self.config.inference.seed if seed is None else seed
        width, height = size if size is not None else (None, None)
        pixels = to_tensor(query).to(self.device)
        if self.vl is not None:  # paper §3.3: [Qwen2.5-VL stream of the query; operation tokens]
            vl, vl_mask = self.vl(pixels)
            cond, mask = join_condition(vl, vl_mask, cond, mask)
        image = generate(self.dit, cond, mask, pixels, steps=steps,
                         seed=seed, height=height, width=width)
        return to_rgb8(image)

    def retouch(self, before: np.ndarray, after: np.ndarray, query: np.ndarray, **kwargs
                ) -> np.ndarray:
        """One exemplar pair, one query (see :meth:`sample` for ``kwargs``)."""
        cond, mask = self.condition(before, after)
        return self.sample(cond, mask, query, **kwargs)
