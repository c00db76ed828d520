"""The neural engine's execution backends: ``eager``, ``compile`` and ``fp8``.

All three drive the same :class:`~mirrorppr_cli.model.engine.NeuralEngine` (one model, loaded
from one weights folder); they differ only in how it executes:

* ``eager`` — plain PyTorch: CUDA in bf16 when available, else CPU in float32.
* ``compile`` — ``torch.compile`` of every DiT block and of the extractor, at fixed resolution
  buckets (a batch of differently sized photos compiles once per bucket, not once per image),
  with a persistent compile cache.
* ``fp8`` — the frozen DiT's weights stored in float8 (e4m3): torchao float8 dynamic
  activation+weight quantisation on GPUs of compute capability ≥ 8.9, else diffusers'
  layerwise casting (fp8 storage, bf16 compute), which works on any device.

Images are ``(H, W, 3)`` uint8 RGB arrays. Output size: the query's sides floored to multiples
of 16 (the official inference setting).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mirrorppr_cli.errors import MirrorError, MissingWeightsError, OutOfMemory, UsageError
from mirrorppr_cli.extras import extra_imports, missing_module, needs_extra, require_extra

WEIGHTS_ENV = "MIRRORPPR_WEIGHTS"
COMPILE_CACHE_ENV = "MIRRORPPR_COMPILE_CACHE"
SIZE_MULTIPLE = 16


def floor_size(width: int, height: int) -> tuple[int, int]:
    """The official output size: both sides floored to multiples of 16."""
    return (max(SIZE_MULTIPLE, width // SIZE_MULTIPLE * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, height // SIZE_MULTIPLE * SIZE_MULTIPLE))


class NeuralBackend:
    """``eager``: the neural engine in plain PyTorch."""

    name = "eager"
    summary = "neural engine (MirrorPPR), plain PyTorch: CUDA bf16, or CPU float32"
    capabilities = frozenset({"retouch"})
    options = frozenset({"weights", "device", "mae", "dit", "steps", "seed"})
    needs_cuda = False

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto",
                 mae: str | None = None, dit: str | None = None, steps: int | None = None,
                 seed: int | None = None) -> None:
        self.weights = weights or os.environ.get(WEIGHTS_ENV) or None
        self.device_request = device
        self.mae, self.dit = mae, dit
        self.steps, self.seed = steps, seed
        self.status: Callable[[str], None] = lambda message: None
        self._engine = None

    # -- the backend protocol (mirrorppr_cli.backend.Backend) -----------------------------------
    def prepare(self, status: Callable[[str], None] | None = None) -> None:
        """Load the weights onto the device now (fail fast, before any query is read)."""
        if status is not None:
            self.status = status
        self.engine()

    def input_note(self, path: Path, max_pixels: int | None = None) -> str | None:
        from mirrorppr_cli.io import frames_note, header_info

        return frames_note(*header_info(path, max_pixels=max_pixels)[2:])

    def measure(self, before: Path, after: Path, *, max_pixels: int | None = None,
                on_stage: Callable[[str], None] | None = None):
        """The exemplar pair (:class:`~mirrorppr_cli.neural_job.NeuralEdit`); its condition
        tokens are computed with the first query and kept in it for the rest."""
        from mirrorppr_cli.neural_job import read_exemplar

        if on_stage:
            on_stage("reading the exemplar")
        return read_exemplar(before, after, max_pixels=max_pixels)

    def retouch_file(self, edit, source: Path, dest: Path, settings):
        from mirrorppr_cli.neural_job import neural_retouch_file

        note = self.input_note(source, settings.max_pixels)
        report = neural_retouch_file(self, edit, source, dest, force=settings.force,
                                     output_format=settings.output_format,
                                     max_pixels=settings.max_pixels)
        if note is not None:
            report.notes.append(note)
        return report

    def edit_summary(self, edit) -> dict:
        return {"backend": self.name}

    # -- where it can run ---------------------------------------------------------------
    def require_extra(self) -> None:
        """MissingExtraError (exit 5, one line naming ``mirrorppr[neural]``) unless the neural
        extra is installed."""
        require_extra("neural", f"backend {self.name!r}")

    def device(self) -> str:
        self.require_extra()
        import torch

        if self.device_request not in ("auto", "cpu", "cuda") and not \
                self.device_request.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu or cuda[:N], not {self.device_request!r}")
        cuda = torch.cuda.is_available()
        if self.device_request.startswith("cuda") and not cuda:
            raise UsageError(f"backend {self.name!r}: --device {self.device_request} but no CUDA "
                             "device is available here; use --device cpu")
        if self.device_request == "auto":
            return "cuda" if cuda else "cpu"
        return self.device_request

    def availability(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why (not)."""
        missing = missing_module("neural")
        if missing is not None:
            return False, needs_extra("neural", missing)
        try:
            import diffusers  # noqa: F401
            import torch
        except ImportError as exc:
            return False, needs_extra("neural", exc.name)
        try:
            device = self.device()
        except MirrorError as exc:
            return False, str(exc)
        where = (f"cuda ({torch.cuda.get_device_name(0)}, compute capability "
                 f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))})"
                 if device.startswith("cuda") else "cpu (no CUDA: slow at full size)")
        if not self.weights:
            return False, f"no weights: pass --weights DIR or set {WEIGHTS_ENV}; device {where}"
        if not (Path(self.weights) / "config.json").is_file() and not _is_release(self.weights):
            return False, (f"weights folder {self.weights} has no config.json and is not the "
                           f"official release layout (mirrorppr_face/); device {where}")
        return True, f"weights {self.weights}; device {where}{self.mode_note(device)}"

    def mode_note(self, device: str) -> str:
        return ""

    # -- the model ------------------------------------------------------------------------
    def dtype(self, device: str):
        import torch

        return torch.bfloat16 if device.startswith("cuda") else torch.float32

    def engine(self):
        """The loaded, prepared engine (loaded once per backend instance)."""
        if self._engine is None:
            self.require_extra()  # before the weights: without the extra they are no use
            with extra_imports("neural", f"backend {self.name!r}"):
                from mirrorppr_cli.model.engine import NeuralEngine

            if not self.weights:
                raise MissingWeightsError(
                    f"backend {self.name!r} needs trained MirrorPPR weights: pass --weights DIR "
                    f"(the weights/ folder `mirrorppr train joint` writes) or set {WEIGHTS_ENV}")
            device = self.device()
            self.status(f"{self.name}: loading weights from {self.weights} onto {device}")
            with extra_imports("neural", f"backend {self.name!r}"):
                engine = NeuralEngine.load(self.weights, mae=self.mae, dit=self.dit,
                                           device=device, dtype=self.dtype(device),
                                           host_cast=self.host_cast(device))
                self._engine = self.adapt(engine)
        return self._engine

    def attach(self, engine) -> None:
        """Use an engine built elsewhere (e.g. :meth:`NeuralEngine.random` in benchmarks)."""
        self._engine = self.adapt(engine)

    def adapt(self, engine):
        """Change how ``engine`` executes (eager: nothing)."""
        return engine

    def host_cast(self, device: str):
        """A cast of the DiT's storage to run on the host before it moves to ``device``
        (``None``: load in :meth:`dtype` as is)."""
        return None

    def run_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the DiT samples at for a query of ``width`` × ``height``."""
        return floor_size(width, height)

    # -- the job --------------------------------------------------------------------------
    def retouch(self, before: np.ndarray, after: np.ndarray, query: np.ndarray,
                strength: float = 1.0) -> np.ndarray:
        """Arrays in, array out (what ``bench`` scores): :meth:`apply` of this one pair."""
        from mirrorppr_cli.neural_job import NeuralEdit

        return self.apply(NeuralEdit(before, after), query, strength)

    def apply(self, edit, query: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Apply the exemplar's operation (``edit``: a
        :class:`~mirrorppr_cli.neural_job.NeuralEdit`, whose condition tokens are computed
        here once) to ``query``; ``(H', W', 3)`` uint8 at the official output size."""
        import cv2

        self.require_extra()
        import torch

        if strength != 1.0:
            raise UsageError(f"backend {self.name!r} has no --strength (the operation is a "
                             "learned representation); use the warp backend to scale edits")
        try:
            engine = self.engine()
            if edit.condition is None:
                edit.condition = engine.condition(edit.before, edit.after)
            cond, mask = edit.condition
            out_w, out_h = floor_size(query.shape[1], query.shape[0])
            run_w, run_h = self.run_size(query.shape[1], query.shape[0])
            result = engine.sample(cond, mask, query, steps=self.steps, seed=self.seed,
                                   size=(run_w, run_h))
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"backend {self.name!r} ran out of accelerator memory ({exc.__class__.__name__}); "
                "try --backend fp8 (float8 DiT weights, about half the memory), a smaller "
                "query, or --device cpu") from None
        if (run_w, run_h) != (out_w, out_h):
            shrink = run_w * run_h > out_w * out_h
            result = cv2.resize(result, (out_w, out_h),
                                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return result


#: Aspect ratios (width / height) of the compile backend's resolution buckets.
BUCKET_ASPECTS = (1.0, 5 / 4, 4 / 5, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 0.5)
#: Pixel areas of the buckets (sides ×16); a query uses the largest area not above its own.
BUCKET_AREAS = (64 * 64, 256 * 256, 512 * 512, 768 * 768, 1024 * 1024, 1328 * 1328)


def bucket_for(width: int, height: int) -> tuple[int, int]:
    """The fixed ``(width, height)`` bucket of a query: nearest aspect (in log space), largest
    bucket area not above the query's floored area (the smallest for tiny queries)."""
    fw, fh = floor_size(width, height)
    area = max([a for a in BUCKET_AREAS if a <= fw * fh] or [BUCKET_AREAS[0]])
    aspect = min(BUCKET_ASPECTS, key=lambda r: abs(math.log(r * fh / fw)))
    bw = max(SIZE_MULTIPLE, round(math.sqrt(area * aspect) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    bh = max(SIZE_MULTIPLE, round(math.sqrt(area / aspect) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return bw, bh


class CompileBackend(NeuralBackend):
    """``compile``: torch.compile of the DiT blocks and the extractor, bucketed sizes."""

    name = "compile"
    summary = ("neural engine with torch.compile (DiT blocks + extractor), fixed resolution "
               "buckets, persistent compile cache")

    options = NeuralBackend.options | {"compile_cache"}

    def __init__(self, *args, compile_cache: str | os.PathLike | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile_cache = Path(
            compile_cache or os.environ.get(COMPILE_CACHE_ENV)
            or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mirrorppr"
            / "torch-compile")
        self._warm: set[tuple[int, int]] = set()

    def availability(self) -> tuple[bool, str]:
        import shutil

        ok, why = super().availability()
        if ok and self.device() == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return False, "torch.compile on the CPU needs a C++ compiler (g++); " + why
        return ok, why

    def adapt(self, engine):
        import torch

        self.compile_cache.mkdir(parents=True, exist_ok=True)
        # Inductor reads its cache location from the environment when it first compiles.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.compile_cache)
        torch._inductor.config.fx_graph_cache = True
        for block in engine.dit.transformer.transformer_blocks:
            block.compile(dynamic=False)
        engine.extractor.compile(dynamic=False)
        return engine

    def run_size(self, width: int, height: int) -> tuple[int, int]:
        bucket = bucket_for(width, height)
        if bucket not in self._warm:
            self._warm.add(bucket)
            self.status(f"compile: warming up bucket {bucket[0]}×{bucket[1]} (the first image of "
                        f"a bucket compiles the model; cache {self.compile_cache})")
        return bucket


class Fp8Backend(NeuralBackend):
    """``fp8``: float8 (e4m3) DiT weights; torchao on compute capability ≥ 8.9."""

    name = "fp8"
    summary = ("neural engine with float8 (e4m3) DiT weights: torchao dynamic float8 on "
               "GPUs with compute capability >= 8.9, else layerwise fp8 storage + bf16 compute")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode: str | None = None

    def dtype(self, device: str):
        import torch

        return torch.bfloat16

    def choose_mode(self, device: str) -> str:
        """``torchao`` (dynamic float8 activations and weights) or ``layerwise``."""
        import torch

        if device.startswith("cuda") and torch.cuda.get_device_capability(
                torch.device(device)) >= (8, 9):
            try:
                import torchao  # noqa: F401
            except ImportError:
                return "layerwise"
            return "torchao"
        return "layerwise"

    def mode_note(self, device: str) -> str:
        mode = self.choose_mode(device)
        return ("; fp8 via torchao float8 dynamic activation+weight" if mode == "torchao"
                else "; fp8 via layerwise casting (fp8 storage, bf16 compute)")

    def host_cast(self, device: str):
        """Layerwise mode: cast to float8 storage on the host, so the device never holds the
        bf16 DiT (41 GB at the real size); torchao quantises on the device."""
        if self.choose_mode(device) != "layerwise":
            return None
        return _layerwise_fp8

    def adapt(self, engine):
        import torch

        transformer = engine.dit.transformer
        self.mode = self.choose_mode(str(engine.device))
        if self.mode == "layerwise" and engine.host_cast:
            self.status("fp8: layerwise casting (float8 e4m3 storage, bf16 compute), cast on "
                        "the host before the move")
        elif self.mode == "torchao":
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(),
                      filter_fn=lambda module, fqn: isinstance(module, torch.nn.Linear)
                      and "lora_" not in fqn)
            self.status("fp8: torchao float8 dynamic activation+weight quantisation")
        else:
            _layerwise_fp8(transformer)
            self.status("fp8: layerwise casting (float8 e4m3 storage, bf16 compute)")
        return engine


def _layerwise_fp8(transformer) -> None:
    """diffusers' layerwise casting: float8 e4m3 storage, bf16 compute, LoRA left alone."""
    import torch
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    transformer.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16,
        skip_modules_pattern=(*DEFAULT_SKIP_MODULES_PATTERN, "lora_"))


def _is_release(folder) -> bool:
    """The official release layout (``mirrorppr_face/`` or its ``rformer/``), without torch."""
    folder = Path(folder)
    return (folder / "mirrorppr_face").is_dir() or (folder / "rformer").is_dir()
