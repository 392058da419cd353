"""The model protocol: everything a sampler needs from a diffusion model, and nothing more.

A model turns a prompt into a condition, predicts the guided network output for a batch of
states at a batch of timesteps, and decodes states to RGB. The embedded mixture models, the
trained embedded UNet and the diffusers adapters (Stable Diffusion, DiT, SD3, Flux) all implement it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class DiffusionModel(Protocol):
    """A diffusion model as paratta sees it.

    Attributes:
        name: short human-readable name.
        latent_shape: shape of one state x_t, without the batch axis, e.g. (3, 32, 32).
        scheduler_config: the diffusers scheduler config the model is sampled with, a mapping with
            ``_class_name`` ``DDIMScheduler``, ``EulerDiscreteScheduler``,
            ``DPMSolverMultistepScheduler`` or ``FlowMatchEulerDiscreteScheduler``
            (``paratta.schedule.coefficients`` reads it; the ``sampler`` setting may replace it).
        device, dtype: where and in which precision the network runs.
        takes_negative_prompt: whether a negative prompt means anything to this model.

    Optional methods (``paratta.problem`` looks for them): ``schedule_arguments(steps)``, the
    keyword arguments the model's pipeline passes to ``set_timesteps`` (a flow pipeline's custom
    sigmas, the image sequence length for μ); ``with_family(family)``, the model as the other sampler
    family sees it, for a model both can sample (the embedded mixtures); ``draw_latents(generator)``,
    one N(0, I) draw as the model's pipeline makes it (its dtype, Flux's packing); ``with_size(height,
    width)`` and ``size_of(latent_shape)``, for a pipeline that takes an image size. Optional
    attributes: ``rows_per_timestep`` (1 for a model whose guidance is a network input, Flux: the
    cost model reads it), ``image_size`` and ``takes_image_size`` (a pipeline's size), ``vocabulary``
    (an embedded model's words) and ``text_encoder`` (a text-to-image pipeline's), read by the app.
    """

    name: str
    latent_shape: tuple[int, ...]
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    takes_negative_prompt: bool

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
        """Final states (n, *latent_shape) → RGB images (n, 3, H, W), float in [0, 1], on CPU."""
        ...

    def preview(self, x0: Tensor) -> Tensor:
        """A cheap version of ``decode`` for per-iteration previews (same convention)."""
        ...
