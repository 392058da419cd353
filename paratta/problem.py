"""A sampling problem: the model, its condition, the coefficients and the fixed noises.

For η > 0 the noises ξ_0…ξ_{T−1} are drawn once, so the stochastic sampler becomes a
deterministic system whose unique solution is the sequential run with those noises. They are
drawn from one CPU generator in the order diffusers' pipelines draw them (x_T first, unless it is
given as ``latents``, then one ξ per step from the noisiest down), so a diffusers pipeline given
``torch.Generator().manual_seed(seed)`` (and the same ``latents``) draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import Request
from .protocol import DiffusionModel
from .schedule import Coefficients, SchedulerConfig, ddim_coefficients


@dataclass(frozen=True)
class Problem:
    """Everything both samplers need; the sequential trajectory is its unique solution."""

    model: DiffusionModel
    coef: Coefficients  # float64, on CPU; samplers move a copy to their device and dtype
    cond: Any
    x_T: Tensor  # (*latent_shape), float32 on CPU
    xi: Tensor | None  # (T, *latent_shape): ξ_i for step i, None when η = 0
    guidance: float
    request: Request

    @property
    def steps(self) -> int:
        return self.coef.num_steps


def draw_noise(
    seed: int, shape: tuple[int, ...], steps: int, eta: float, draw_x_T: bool = True
) -> tuple[Tensor | None, Tensor | None]:
    """x_T (unless ``draw_x_T`` is False: a pipeline given ``latents`` draws none) and, for η > 0,
    ξ_i for i = T−1…0, from one seeded CPU generator, in that order."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((1, *shape), generator=g)[0] if draw_x_T else None
    if eta == 0:
        return x_T, None
    xi = torch.empty((steps, *shape))
    for i in reversed(range(steps)):
        xi[i] = torch.randn((1, *shape), generator=g)[0]
    return x_T, xi


def make_problem(model: DiffusionModel, request: Request, latents: Tensor | None = None) -> Problem:
    """Encode the condition, build the coefficients from the model's own scheduler config, draw noises.

    ``latents`` (shape ``latent_shape``, or with a leading batch axis of 1) replaces the drawn x_T.
    """
    config = SchedulerConfig.from_dict(model.scheduler_config)
    coef = ddim_coefficients(config, request.steps, request.eta)
    cond = model.encode(request.prompt, request.negative_prompt)
    x_T, xi = draw_noise(request.seed, tuple(model.latent_shape), request.steps, request.eta, latents is None)
    if latents is not None:
        latents = torch.as_tensor(latents).detach().to("cpu", torch.float32)
        if latents.dim() == len(model.latent_shape) + 1 and latents.shape[0] == 1:
            latents = latents[0]
        if tuple(latents.shape) != tuple(model.latent_shape):
            raise ValueError(
                f"latents must have shape {tuple(model.latent_shape)}, got {tuple(latents.shape)}"
            )
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")
        x_T = latents
    return Problem(model, coef, cond, x_T, xi, float(request.guidance), request)
