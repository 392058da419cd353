"""diffusers pipelines as paratta models: loading (folder or hub id), dispatch, and the shared base.

Supported pipelines (``SUPPORTED_PIPELINES``):

- ``StableDiffusionPipeline`` (SD 1.x, SD 2.x incl. v-prediction) → ``paratta.models.sd.StableDiffusionModel``
- ``DiTPipeline`` (class-conditional transformer) → ``paratta.models.dit.DiTModel``

Everything is sampled with DDIM(η): the pipeline's own scheduler config is converted with
``DDIMScheduler.from_config`` semantics (betas, ``num_train_timesteps``, ``prediction_type`` and
spacing kept). diffusers and transformers are imported inside these modules only, never from
``paratta/__init__``: ``import diffusers`` alone takes seconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

from ..schedule import SchedulerConfig
from .previews import decode_with_vae, preview_latents

SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "DiTPipeline")


class ModelOutOfMemoryError(MemoryError):
    """The network ran out of memory; the message says which knob (window, max_batch) to turn."""


def resolve_device_dtype(
    device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """Defaults: CUDA when available, else CPU; float16 on CUDA, float32 elsewhere."""
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    return dev, dtype


def ddim_scheduler_config(scheduler: Any, stable_diffusion_rewrites: bool = False) -> dict[str, Any]:
    """The DDIMScheduler config a pipeline's scheduler maps to, as a plain dict with ``_class_name``.

    A non-DDIM scheduler (SD 1.5 ships PNDM) is converted by ``DDIMScheduler.from_config``, which
    keeps the shared keys and fills DDIM's defaults. ``StableDiffusionPipeline.__init__`` rewrites
    ``steps_offset`` to 1 and ``clip_sample`` to False on the scheduler it is given; after a
    conversion those rewrites are re-applied (``stable_diffusion_rewrites``), so the config is the
    one a pipeline built with the DDIM scheduler would run — DDIM's default ``clip_sample=True``
    would clamp SD latents to [−1, 1].
    """
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        scheduler = DDIMScheduler.from_config(scheduler.config)
        overrides = {"steps_offset": 1, "clip_sample": False} if stable_diffusion_rewrites else {}
    else:
        overrides = {}
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    config.update(overrides)
    config["_class_name"] = "DDIMScheduler"
    SchedulerConfig.from_dict(config)  # fail now (ValueError) on e.g. thresholding, not mid-run
    return config


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
    )


class DiffusersModel:
    """What SD and DiT share: device/dtype, the VAE decode, previews and the out-of-memory guard.

    Subclasses set ``latent_shape``, ``scheduler_config`` and implement ``encode``/``predict``.
    """

    takes_negative_prompt = False

    def __init__(
        self,
        pipe: Any,
        name: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        tiny_vae: Any = None,
    ) -> None:
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.pipe = pipe.to(device=self.device, dtype=self.dtype)
        self.name = name
        self.vae = pipe.vae.eval()
        # Spatial factor between image and latent: 2^(number of VAE blocks − 1), as pipelines compute it.
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.tiny_vae = (
            tiny_vae.to(device=self.device, dtype=self.dtype).eval() if tiny_vae is not None else None
        )
        self.latent_shape: tuple[int, ...] = ()
        self.scheduler_config: dict[str, Any] = {}

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of decoded images."""
        return self.latent_shape[-2] * self.vae_scale_factor, self.latent_shape[-1] * self.vae_scale_factor

    def _network(self, fn: Callable[[], Tensor], rows: int, advice: str = "") -> Tensor:
        """Run one network call; turn an out-of-memory error into ``ModelOutOfMemoryError``.

        The error is re-raised outside the ``except`` block so that its traceback (which holds the
        frames, and through them the activations) is released before the caller sees ours.
        """
        try:
            return fn()
        except RuntimeError as error:
            if not _is_oom(error):
                raise
            detail = str(error).splitlines()[0][:200]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        advice = (
            advice or "Use a smaller window or set max_batch (each timestep is 2 rows with guidance ≠ 1)."
        )
        raise ModelOutOfMemoryError(
            f"{self.name}: out of memory running {rows} network rows in one batch on {self.device} "
            f"({detail}). {advice}"
        )

    def decode(self, x0: Tensor) -> Tensor:
        """Full VAE decode of UNet-space latents: vae.decode(x / scaling_factor) → (img+1)/2, float32 CPU."""
        with torch.inference_mode():
            return self._network(
                lambda: decode_with_vae(self.vae, x0, self.device, self.dtype),
                x0.shape[0],
                "Decode fewer images at once, or free memory (the VAE decoder needs most at full size).",
            )

    def preview(self, x0: Tensor) -> Tensor:
        """Cheap decode: the tiny VAE when given, else the linear 4→3 latent-to-RGB map (full image size)."""
        with torch.inference_mode():
            return preview_latents(x0, self.vae_scale_factor, self.tiny_vae, self.vae)


def from_pipeline(
    pipe: Any,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> DiffusersModel:
    """Wrap an already built pipeline object; ``ValueError`` naming the class when it is not supported."""
    from diffusers import DiTPipeline, StableDiffusionPipeline

    if isinstance(pipe, StableDiffusionPipeline):
        from .sd import StableDiffusionModel

        return StableDiffusionModel(pipe, device=device, dtype=dtype, name=name, **kwargs)
    if isinstance(pipe, DiTPipeline):
        from .dit import DiTModel

        return DiTModel(pipe, device=device, dtype=dtype, name=name, **kwargs)
    raise ValueError(_unsupported(type(pipe).__name__))


def _unsupported(class_name: str | None) -> str:
    return (
        f"unsupported diffusers pipeline {class_name!r}: paratta supports {', '.join(SUPPORTED_PIPELINES)} "
        "(DDIM sampling of an ε/v-prediction UNet or DiT)"
    )


def load_diffusers_model(
    name_or_path: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    tiny_vae: Any = None,
    height: int | None = None,
    width: int | None = None,
) -> DiffusersModel:
    """Load a diffusers pipeline from a local folder or a hub id and wrap it as a ``DiffusionModel``.

    The pipeline class is read from ``model_index.json`` first, so an unsupported pipeline fails
    before any weights load. Hub ids are looked up in the local cache first; the hub is asked only
    when it is reachable and ``HF_HUB_OFFLINE`` is not set, otherwise a ``ValueError`` names the id.
    ``tiny_vae`` (an ``AutoencoderTiny`` or its folder/hub id, e.g. TAESD) is used for previews;
    ``height``/``width`` (SD only) override the pipeline's default image size.
    """
    source = name_or_path.strip()
    device, dtype = resolve_device_dtype(device, dtype)
    local = os.path.isdir(source)
    offline = not local and _offline()
    index = _model_index(source, local, offline)
    class_name = index.get("_class_name")
    if class_name not in SUPPORTED_PIPELINES:
        raise ValueError(_unsupported(class_name))
    import diffusers

    cls = getattr(diffusers, class_name)
    extra: dict[str, Any] = {}
    if class_name == "StableDiffusionPipeline":
        # The safety checker and its image processor are not used by paratta; skip loading them.
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = _fetch(
        source,
        lambda: cls.from_pretrained(
            source, local_files_only=local or offline, **_dtype_kwarg(dtype), **extra
        ),
    )
    if isinstance(tiny_vae, str):
        from diffusers import AutoencoderTiny

        tv_local = os.path.isdir(tiny_vae)
        tv_offline = not tv_local and _offline()
        tiny_vae = _fetch(
            tiny_vae,
            lambda: AutoencoderTiny.from_pretrained(
                tiny_vae, local_files_only=tv_local or tv_offline, **_dtype_kwarg(dtype)
            ),
        )
    name = os.path.basename(os.path.normpath(source)) if local else source
    size = {"height": height, "width": width} if class_name == "StableDiffusionPipeline" else {}
    return from_pipeline(pipe, device=device, dtype=dtype, name=name, tiny_vae=tiny_vae, **size)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype keyword: ``dtype`` since diffusers renamed it (``torch_dtype`` warns)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (exists since the rename)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _model_index(source: str, local: bool, offline: bool) -> dict[str, Any]:
    """``model_index.json`` of a folder or a hub repo (cache first), as a dict."""
    if local:
        path = os.path.join(source, "model_index.json")
        if not os.path.isfile(path):
            raise ValueError(f"{source!r} is a folder but not a diffusers pipeline (no model_index.json)")
    else:
        from huggingface_hub import hf_hub_download

        path = _fetch(
            source, lambda: hf_hub_download(source, "model_index.json", local_files_only=True), cached=True
        )
        if path is None:
            if offline:
                raise ValueError(
                    f"model {source!r} is not in the local Hugging Face cache and this machine is offline "
                    "(HF_HUB_OFFLINE is set or huggingface.co is unreachable). Download it where there is "
                    f"network (`hf download {source}`) and copy the cache, or pass a local pipeline folder."
                )
            path = _fetch(source, lambda: hf_hub_download(source, "model_index.json"))
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fetch(source: str, fn: Callable[[], Any], cached: bool = False) -> Any:
    """Run a hub/cache lookup; errors become a ``ValueError`` naming ``source`` (``None``: cache miss)."""
    try:
        return fn()
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:  # hub, HTTP, validation and file errors all mean "cannot load this id"
        if cached:
            return None
        raise ValueError(
            f"could not load diffusers model {source!r}: {type(error).__name__}: {error}"
        ) from error


def _offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read now, not at import) or the hub host is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    return not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to the endpoint be opened within ``timeout`` s (DNS included)?

    The attempt runs in a daemon thread because a DNS lookup ignores socket timeouts.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme != "http" else 80)
    ok = threading.Event()

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def __getattr__(name: str) -> Any:
    """Lazy re-exports: ``StableDiffusionModel`` and ``DiTModel`` live in their own modules."""
    if name == "StableDiffusionModel":
        from .sd import StableDiffusionModel

        return StableDiffusionModel
    if name == "DiTModel":
        from .dit import DiTModel

        return DiTModel
    raise AttributeError(name)
