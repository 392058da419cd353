"""The shared base of the diffusers adapters: what an adapter declares (``Serves``, ``SizeRule``), the one
mapping from a pipeline's scheduler to the config paratta samples (``pipeline_scheduler_config``), and
``DiffusersModel`` (configuration, condition, guided prediction, drawing x_T, decoding as the pipeline).

An adapter is exact against ``pipe(...)``: it calls the pipeline's own ``encode_prompt``, VAE and image
processor, and reproduces what its ``__call__`` and ``prepare_latents`` do (declared in
``Serves.replicates``: a subclass that overrides one of those is refused by name). A pipeline is
sampled with its own scheduler: the sampler registry (``paratta.samplers``) expresses it exactly or
refuses it with the reason when a run is made, never swapping in another sampler.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from paratta.models.previews import decode_with_vae, preview_latents, vae_input
from paratta.protocol import ModelDefaults
from paratta.registry import TEXT_TO_IMAGE_DEFAULTS
from paratta.samplers import family


class ModelOutOfMemoryError(MemoryError):
    """The network ran out of memory; the message says which knob (window, max_batch) to turn."""


@dataclass(frozen=True)
class Serves:
    """What an adapter declares about the pipelines it serves (``paratta.models.diffusers.adapters``).

    ``pipelines``: the diffusers pipeline classes it serves, by name (a subclass is served when it
    overrides none of ``replicates``, the pipeline methods whose behaviour the adapter reproduces rather
    than calls). ``arguments``: the ``__call__`` arguments it honours, each as the pipeline does; of those,
    ``options`` configure the adapter (``DiffusersModel.configured``: size, prompt length, …), the rest
    are the prompts, their embeddings and the settings every wrapper reads. ``guidance``: "cfg", the
    pipeline's classifier-free guidance u + s·(c − u), which it switches off (the conditional half
    alone) for s ≤ 1; "embedded", the scale is an input of the network (one row per timestep).
    ``layout``: one state's layout; ``draws``: how ``pipe(...)`` draws x_T; ``output``: the field of its
    output that holds the result ("images", or "frames" for a video).
    """

    pipelines: tuple[str, ...]
    arguments: tuple[str, ...]
    options: tuple[str, ...]
    guidance: Literal["cfg", "embedded"]
    layout: str
    draws: str
    output: Literal["images", "frames"] = "images"
    replicates: tuple[str, ...] = ("__call__", "prepare_latents")


# The arguments every text-to-image pipeline here honours, as its ``__call__`` names them.
TEXT_ARGUMENTS = (
    "prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "num_images_per_prompt",
    "generator", "latents", "prompt_embeds", "negative_prompt_embeds", "output_type", "height", "width",
)  # fmt: skip


@dataclass(frozen=True)
class SizeRule:
    """The image sizes a pipeline takes: ``default`` (H, W) when none is asked, both sides positive
    multiples of ``multiple`` pixels, at most ``largest`` (a position table's reach; None: no bound)."""

    default: tuple[int, int]
    multiple: int
    largest: int | None = None

    def resolve(self, height: int | None, width: int | None) -> tuple[int, int]:
        """(H, W) as asked, a missing side the default's; ``ValueError`` naming the rule otherwise."""
        height = self.default[0] if height is None else height
        width = self.default[1] if width is None else width
        for side in (height, width):
            if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
                raise ValueError(
                    f"height and width must be positive integers (pixels), got {height!r}×{width!r}"
                )
        if height % self.multiple or width % self.multiple:
            raise ValueError(f"height and width must be multiples of {self.multiple}, got {height}×{width}")
        if self.largest is not None and max(height, width) > self.largest:
            raise ValueError(
                f"height and width must be at most {self.largest} for this model (its position table), "
                f"got {height}×{width}"
            )
        return height, width


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
    """The one mapping from a pipeline's ``scheduler`` to the config paratta samples it with: its own, as a
    plain dict with ``_class_name``.

    It is not converted: ``paratta.samplers`` expresses it exactly when a run is made, or refuses it
    there with the reason (``samplers.check``), never swapping in another sampler."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    config["_class_name"] = type(scheduler).__name__
    return config


# ---------------------------------------------------------------- the adapter


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def per_row(value: Tensor, rows: int) -> Tensor:
    """A condition of B images (B, …) for ``rows`` network rows ordered (timestep, image): row r takes
    image r mod B (``Batch`` orders its rows so); B = 1 is broadcast."""
    if value.shape[0] == 1:
        return value.expand(rows, *value.shape[1:])
    return value.repeat(rows // value.shape[0], *[1] * (value.dim() - 1))


def cfg(uncond: Tensor, cond: Tensor, guidance: float) -> Tensor:
    """u + s·(c − u), in float32 for a half-precision network (returned in float32 then)."""
    if cond.dtype in (torch.float16, torch.bfloat16):
        uncond, cond = uncond.float(), cond.float()
    return uncond + guidance * (cond - uncond)


class DiffusersModel:
    """A diffusers pipeline as a paratta ``DiffusionModel``: what the adapters share.

    ``pipe`` is checked (``check``) and moved to ``device``/``dtype`` (in place, as ``pipe.to`` does);
    ``name`` defaults to its hub id or folder, else ``default_name``. ``options`` are the pipeline's call
    arguments that configure the adapter (``Serves.options``), each defaulting to the pipeline's own
    ``__call__`` default. Subclasses declare ``serves``, set ``latent_shape`` and
    ``scheduler_config`` in ``_configure``, and implement ``condition``, ``predict`` and ``size_rule``.
    """

    serves: ClassVar[Serves]
    default_name: ClassVar[str]
    defaults: ModelDefaults = TEXT_TO_IMAGE_DEFAULTS
    takes_negative_prompt = True
    vocabulary = None  # a text encoder reads any text
    labels: dict[str, int] | None = None
    takes_image_size = True  # the pipeline takes height/width (DiT samples at its transformer's size)
    frames: int | None = None
    rows_per_timestep = 1
    latent_dtype: torch.dtype | None = None  # the dtype pipe(...) draws x_T in; None: the network's

    def __init__(
        self,
        pipe: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = None,
        tiny_vae: Any = None,
        **options: Any,
    ) -> None:
        self.check(pipe)
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        same = (pipe.device, pipe.dtype) == (self.device, self.dtype)  # then left as it is, not re-cast
        self.pipe = pipe if same else pipe.to(device=self.device, dtype=self.dtype)
        self.name = name or pipe.config.get("_name_or_path") or self.default_name
        self.vae = pipe.vae.eval()
        self.tiny_vae = (
            tiny_vae.to(device=self.device, dtype=self.dtype).eval() if tiny_vae is not None else None
        )
        # The pipeline's own defaults for what it is called without (a folder loaded for the CLI, the app).
        signature = inspect.signature(type(pipe).__call__).parameters
        self.call_defaults = {
            n: p.default for n, p in signature.items() if p.default is not inspect.Parameter.empty
        }
        unknown = sorted(set(options) - set(self.serves.options))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} takes no option {unknown[0]!r} (it takes {self.serves.options})"
            )
        self.options = {n: self.call_defaults.get(n) for n in self.serves.options} | options
        self._sizes: dict[tuple[int | None, int | None], DiffusersModel] = {}
        self._setup()

    def _setup(self) -> None:
        self.latent_shape: tuple[int, ...] = ()
        self.scheduler_config: dict[str, Any] = {}
        self._configure(**self.options)
        self.families = (family(self.scheduler_config),)

    @classmethod
    def check(cls, pipe: Any) -> None:
        """``ValueError`` naming the pipeline and the reason when this adapter cannot serve it; called
        before anything moves. The class (or the base class it was vouched for) is checked by the
        registry (``adapters.adapter_for``); subclasses add their component checks."""

    def check_scheduler(self) -> None:
        """``ValueError`` with the reason when the pipeline's loop runs its scheduler otherwise than a
        diffusers scheduler's own ``step`` sequence (which ``paratta.samplers`` mirrors); nothing for most."""

    # ------------------------------------------------------------ configuration

    def _configure(self, **options: Any) -> None:
        """Set the networks, ``latent_shape`` and ``scheduler_config`` from ``self.pipe`` and ``options``."""
        raise NotImplementedError

    def configured(self, **options: Any) -> DiffusersModel:
        """This adapter with ``options`` changed (``Serves.options``; the others kept), sharing the pipeline
        and its weights; the pipeline's scheduler is read again, so one set after wrapping is the one used."""
        unknown = sorted(set(options) - set(self.serves.options))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} takes no option {unknown[0]!r} (it takes {self.serves.options})"
            )
        view = copy.copy(self)
        view.options = {**self.options, **options}
        view._sizes = {}
        view._setup()
        return view

    def size_rule(self) -> SizeRule:
        """The sizes the pipeline takes (``SizeRule``)."""
        raise NotImplementedError

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent cell, as the pipeline computes it: 2^(VAE blocks − 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images ``pipe(...)`` returns at this configuration."""
        return self.latent_shape[-2] * self.vae_scale_factor, self.latent_shape[-1] * self.vae_scale_factor

    def with_size(self, height: int | None, width: int | None) -> DiffusersModel:
        """This model at ``height``×``width`` pixels (a missing side: the pipeline's default), one view per
        size; ``ValueError`` for a size the pipeline cannot take."""
        if height is None and width is None:
            return self
        if not self.takes_image_size:
            H, W = self.image_size
            raise ValueError(
                f"height and width: {self.name} ({type(self.pipe).__name__}) samples at one size, {H}×{W}"
            )
        if (height, width) == self.image_size:
            return self
        if (height, width) not in self._sizes:
            self._sizes[height, width] = self.configured(height=height, width=width)
        return self._sizes[height, width]

    def size_of(self, latent_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
        """The image size latents of ``latent_shape`` (no batch axis) are for, (None, None) when the shape
        does not say (another layout or channel count)."""
        own = self.latent_shape
        if len(latent_shape) != len(own) or latent_shape[:-2] != own[:-2]:
            return None, None
        return latent_shape[-2] * self.vae_scale_factor, latent_shape[-1] * self.vae_scale_factor

    @property
    def classifier_free(self) -> bool:
        """Guidance ≠ 1 doubles the rows (``Serves.guidance`` "cfg"); not where it is an input (Flux)."""
        return self.serves.guidance == "cfg"

    def guidance_for(self, guidance_scale: float) -> float:
        """The guidance paratta solves with for the pipeline's ``guidance_scale``: a "cfg" pipeline runs the
        conditional half alone for a scale ≤ 1 (guidance 1)."""
        scale = float(guidance_scale)
        return scale if self.serves.guidance == "embedded" or scale > 1 else 1.0

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """What the pipeline passes to ``set_timesteps`` besides T: nothing, unless a subclass says."""
        return {}

    # ------------------------------------------------------------ the condition and the network

    def encode(self, prompt: str, negative_prompt: str = "") -> Any:
        """The condition ``pipe(prompt, negative_prompt=…)`` forms (one image; "": the pipeline's default)."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be strings")
        arguments = {"prompt": prompt}
        if self.takes_negative_prompt:
            arguments["negative_prompt"] = negative_prompt or self.call_defaults.get("negative_prompt")
        return self.condition(arguments)

    def condition(self, arguments: dict[str, Any]) -> Any:
        """The condition ``pipe(**arguments)`` forms, one entry per image along its leading axis (lists of
        prompts, ``num_images_per_prompt``, precomputed embeddings), by the pipeline's ``encode_prompt``."""
        raise NotImplementedError

    def predict(self, x: Tensor, t: Tensor, cond: Any, guidance: float) -> Tensor:
        raise NotImplementedError

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

    # ------------------------------------------------------------ x_T

    def draw_batch(self, generator: Any, count: int) -> Tensor:
        """``count`` states drawn as ``pipe(...)`` draws x_T for that many images (and DDIM its η-noises):
        one ``randn_tensor`` of (count, *latent_shape) in ``latent_dtype`` (default the network's) on the
        generator's device (a list of generators: one each), returned float32 on CPU."""
        from diffusers.utils.torch_utils import randn_tensor

        dtype = self.latent_dtype or self.dtype
        noise = randn_tensor(
            (count, *self.latent_shape), generator=generator, device=self.device, dtype=dtype
        )
        return noise.to("cpu", torch.float32)

    def draw_latents(self, generator: Any) -> Tensor:
        """One state drawn as the pipeline draws x_T (``draw_batch``)."""
        return self.draw_batch(generator, 1)[0]

    # ------------------------------------------------------------ decoding

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        """What ``pipe(...)`` returns (its ``Serves.output`` field) for final latents ``x0`` (n, *latent):
        the latents for ``"latent"``, else its own VAE decode and ``image_processor.postprocess``."""
        latents = x0.to(self.device, self.dtype)
        if output_type == "latent":
            return latents
        with torch.no_grad():
            image = self.vae.decode(vae_input(self.vae, latents), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)

    def decode(self, x0: Tensor) -> Tensor:
        """Full VAE decode of the states: (n, 3, H, W) float32 CPU in [0, 1]."""
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
