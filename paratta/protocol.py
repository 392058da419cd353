"""The model protocol: everything a sampler needs from a diffusion model, and nothing more.

A model turns a prompt into a condition, predicts the guided network output for a batch of
states at a batch of timesteps, and decodes states to RGB. The embedded mixture models, the
trained embedded UNet and the diffusers adapters all implement it.

Every capability is a declared attribute, read as it is (``paratta.problem``, ``paratta.registry``,
``paratta.planning.latency``); nothing is probed. Two methods exist where a capability says so:

- ``with_family(family)``: the model as another sampler family sees it, on a model whose
  ``families`` name more than one (the embedded mixtures);
- ``with_size(height, width)`` and ``size_of(latent_shape)``: on a model that ``takes_image_size``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModelDefaults:
    """The settings a model is best shown with: its default prompt, guidance and steps (the CLI, the
    app and the bench read them from ``paratta.registry.model_defaults``)."""

    prompt: str = ""
    guidance: float = 1.0
    steps: int = 50
    requires_prompt: bool = False  # text-to-image models need one; the others read "" as "anything"


@runtime_checkable
class DiffusionModel(Protocol):
    """A diffusion model as paratta sees it.

    Attributes:
        name: short human-readable name.
        latent_shape: shape of one state x_t, without the batch axis, e.g. (3, 32, 32); a video
            model's is (C, F, h, w).
        scheduler_config: the diffusers scheduler config the model is sampled with, a mapping with
            ``_class_name`` (``paratta.samplers.coefficients`` reads it).
        device, dtype: where and in which precision the network runs.
        defaults: the prompt, guidance and steps the model is best shown with, and whether it
            needs a prompt.
        takes_negative_prompt: whether a negative prompt means anything to this model.
        vocabulary: the words a model that parses its prompt knows, by category (the embedded
            models); None for a model that reads any text or a class.
        labels: class name → class id for a class-conditional model (DiT: ImageNet names); None else.
        families: the sampler families the model can be sampled with ("ddim": ε/v-prediction,
            "flow": velocity); its own is ``paratta.schedule.family(scheduler_config)``.
        takes_image_size: whether the model samples at a height and width asked for.
        image_size: (H, W) of decoded images, pixels; None when a state is not an image (toy2d's points).
        frames: frames per sample of a video model (``decode`` returns (n, F, 3, H, W)); None for images.
        rows_per_timestep: network rows one timestep costs at guidance 1 (one per image).
        classifier_free: whether guidance s ≠ 1 doubles the rows (an unconditional half, u + s·(c − u));
            False where the scale is an input of the network (Flux).
    """

    name: str
    latent_shape: tuple[int, ...]
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    defaults: ModelDefaults
    takes_negative_prompt: bool
    vocabulary: Mapping[str, tuple[str, ...]] | None
    labels: Mapping[str, int] | None
    families: tuple[str, ...]
    takes_image_size: bool
    image_size: tuple[int, int] | None
    frames: int | None
    rows_per_timestep: int
    classifier_free: bool

    def encode(self, prompt: str, negative_prompt: str = "") -> Any:
        """Encode the condition once per run; raises ``ValueError`` on a prompt it cannot use."""
        ...

    def predict(self, x: Tensor, t: Tensor, cond: Any, guidance: float) -> Tensor:
        """Guided network output for states ``x`` (n, *latent_shape) at timesteps ``t`` (n,).

        DDIM: integer timesteps, and the output is what the scheduler's ``prediction_type`` names
        (ε, v or x̂_0); flow matching: t = σ·N (float) and the output is the velocity; either after
        classifier-free guidance  u + s·(c − u); conditional and unconditional halves are one
        batch. ``x`` arrives in ``self.dtype`` on ``self.device``.
        """
        ...

    def decode(self, x0: Tensor) -> Tensor:
        """Final states (n, *latent_shape) → RGB images (n, 3, H, W) (a video's (n, F, 3, H, W)), float
        in [0, 1], on CPU."""
        ...

    def preview(self, x0: Tensor) -> Tensor:
        """A cheap version of ``decode`` for per-iteration previews (same convention)."""
        ...

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """The keyword arguments the model's pipeline passes to ``set_timesteps`` besides the step count
        (a flow pipeline's custom sigmas, the image sequence length for μ); {} for most."""
        ...

    def draw_latents(self, generator: torch.Generator | None) -> Tensor:
        """One N(0, I) draw of ``latent_shape`` made as the model's pipeline makes x_T (its dtype and
        device, Flux's packing), returned float32 on CPU."""
        ...
