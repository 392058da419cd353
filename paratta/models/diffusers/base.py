"""The shared base of the diffusers adapters: device/dtype defaults, the scheduler config a
pipeline is sampled with, out-of-memory messages, and ``DiffusersModel`` (encode/predict/decode/preview).

A pipeline is sampled with its own scheduler (``pipeline_scheduler_config``): the sampler registry
(``paratta.samplers``) expresses it exactly or refuses it with the reason when a run is made; the
``sampler`` setting samples the same network with another sampler on its noise schedule, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from paratta.models.previews import decode_with_vae, preview_latents, vae_input
from paratta.protocol import ModelDefaults
from paratta.registry import TEXT_TO_IMAGE_DEFAULTS
from paratta.samplers import family


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


def pipeline_scheduler_config(scheduler: Any) -> dict[str, Any]:
    """The config a pipeline's ``scheduler`` samples with: its own, as a plain dict with ``_class_name``.

    It is not converted: ``paratta.samplers`` expresses it exactly when a run is made, or refuses it
    there with the reason (``samplers.check``), never swapping in another sampler."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    config["_class_name"] = type(scheduler).__name__
    return config


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _pipe_name(pipe: Any, default: str) -> str:
    """The pipeline's hub id or folder (``config._name_or_path``), else ``default``."""
    path = getattr(pipe, "name_or_path", None) or getattr(pipe.config, "_name_or_path", None)
    return str(path) if path else default


def resolve_image_size(
    height: int | None, width: int | None, default: int, multiple: int, largest: int | None = None
) -> tuple[int, int]:
    """(H, W) as requested, a missing side the pipeline's ``default``; ``ValueError`` unless both are
    positive multiples of ``multiple`` (the latent patch the networks need) and at most ``largest``."""
    height = default if height is None else height
    width = default if width is None else width
    for side in (height, width):
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
            raise ValueError(f"height and width must be positive integers (pixels), got {height!r}×{width!r}")
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple}, got {height}×{width}")
    if largest is not None and max(height, width) > largest:
        raise ValueError(
            f"height and width must be at most {largest} for this model (its position table), "
            f"got {height}×{width}"
        )
    return height, width


class DiffusersModel:
    """What the adapters share: the constructor, device/dtype, the VAE decode, previews and the
    out-of-memory guard.

    ``pipe`` is checked to be a ``pipeline_class`` and moved to ``device``/``dtype`` (in place, as
    ``pipe.to`` does); ``name`` defaults to its hub id or folder, else ``default_name``. Subclasses set
    ``latent_shape`` and ``scheduler_config`` in ``_configure``, which takes their own keyword options
    (image size, prompt length), and implement ``encode``/``predict``.
    """

    pipeline_class: ClassVar[type]
    default_name: ClassVar[str]
    defaults: ModelDefaults = TEXT_TO_IMAGE_DEFAULTS
    takes_negative_prompt = False
    vocabulary = None  # a text encoder reads any text
    labels: dict[str, int] | None = None
    families: tuple[str, ...] = ()  # the scheduler's own family (set with ``scheduler_config``)
    takes_image_size = True  # the pipeline takes height/width (DiT samples at its transformer's size)
    frames: int | None = None
    rows_per_timestep: int | None = None

    def __init__(
        self,
        pipe: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = None,
        tiny_vae: Any = None,
        **options: Any,
    ) -> None:
        self._check_pipeline(pipe)
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        same = (pipe.device, pipe.dtype) == (self.device, self.dtype)  # then left as it is, not re-cast
        self.pipe = pipe if same else pipe.to(device=self.device, dtype=self.dtype)
        self.name = name or _pipe_name(pipe, self.default_name)
        self.vae = pipe.vae.eval()
        # Spatial factor between image and latent: 2^(number of VAE blocks − 1), as pipelines compute it.
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.tiny_vae = (
            tiny_vae.to(device=self.device, dtype=self.dtype).eval() if tiny_vae is not None else None
        )
        self.latent_shape: tuple[int, ...] = ()
        self.scheduler_config: dict[str, Any] = {}
        self.options = options
        self._sizes: dict[tuple[int, int], DiffusersModel] = {}
        self._configure(**options)
        self.families = (family(self.scheduler_config),)

    def _check_pipeline(self, pipe: Any) -> None:
        """``ValueError`` for a pipeline this adapter cannot sample; called before ``pipe`` is moved."""
        if not isinstance(pipe, self.pipeline_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.pipeline_class.__name__}, got {type(pipe).__name__}"
            )

    def _configure(self, **options: Any) -> None:
        """Set the subclass's networks, ``latent_shape`` and ``scheduler_config`` from ``self.pipe``."""
        raise NotImplementedError

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """What the pipeline passes to ``set_timesteps`` besides T: nothing, unless a subclass says."""
        return {}

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of decoded images."""
        return self.latent_shape[-2] * self.vae_scale_factor, self.latent_shape[-1] * self.vae_scale_factor

    def with_size(self, height: int | None, width: int | None) -> DiffusersModel:
        """This model at ``height``×``width`` pixels (a missing side: the pipeline's default), sharing the
        pipeline and its weights; ``ValueError`` for a size the pipeline cannot take."""
        if height is None and width is None:
            return self
        if not self.takes_image_size:
            H, W = self.image_size
            raise ValueError(
                f"height and width: {self.name} ({type(self.pipe).__name__}) samples at one size, {H}×{W}"
            )
        size = (height, width)
        if size == self.image_size:
            return self
        if size not in self._sizes:
            options = {**self.options, "height": height, "width": width}
            self._sizes[size] = type(self)(
                self.pipe, self.device, self.dtype, self.name, self.tiny_vae, **options
            )
        return self._sizes[size]

    def size_of(self, latent_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
        """The image size latents of ``latent_shape`` (no batch axis) are for: (h·f, w·f) for the
        (C, h, w) layout; (None, None) when the shape does not say (another layout or channel count)."""
        if len(latent_shape) != 3 or latent_shape[0] != self.latent_shape[0] or not self.takes_image_size:
            return None, None
        return latent_shape[1] * self.vae_scale_factor, latent_shape[2] * self.vae_scale_factor

    def draw_latents(self, generator: torch.Generator | None) -> Tensor:
        """One N(0, I) draw of ``latent_shape`` made as the pipeline makes x_T (and DDIM its η-noises):
        diffusers' ``randn_tensor`` in the model's dtype, on the generator's device; float32 on CPU."""
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(
            (1, *self.latent_shape), generator=generator, device=self.device, dtype=self.dtype
        )
        return noise[0].to("cpu", torch.float32)

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

    def pipeline_images(self, x0: Tensor, output_type: str) -> Any:
        """What the pipeline's ``__call__`` returns as ``images`` for final latents ``x0`` (n, *latent):
        the latents themselves for ``"latent"``, else its own VAE decode and ``image_processor.postprocess``
        (``"pil"``, ``"np"``, ``"pt"``)."""
        latents = x0.to(self.device, self.dtype)
        if output_type == "latent":
            return latents
        with torch.no_grad():  # SD's VAE has no shift_factor; SD3's and Flux's pipelines add theirs
            image = self.vae.decode(vae_input(self.vae, latents), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)

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
