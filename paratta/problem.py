"""A sampling problem: the model, its condition, the coefficients and the fixed noises.

A stochastic sampler (DDIM with η > 0, Euler a, DPM++ SDE) draws a fresh ξ_i in some of its steps
(``Schedule.draws``). They are drawn once, so the sampler becomes a deterministic system whose unique
solution is the sequential run with those noises, from one generator in the order diffusers'
pipelines draw them (x_T first, unless it is given as ``latents``, then one ξ per drawing step from the
noisiest down), so a diffusers pipeline given ``torch.Generator().manual_seed(seed)`` (and the same
``latents``) draws the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import Request
from .protocol import DiffusionModel
from .samplers import coefficients, family, sampler_config
from .schedule import Schedule


@dataclass(frozen=True)
class Problem:
    """Everything both samplers need; the sequential trajectory is its unique solution."""

    model: DiffusionModel
    coef: Schedule  # float64, on CPU; samplers move a copy to their device and dtype
    cond: Any
    x_T: Tensor  # (*latent_shape), float32 on CPU
    xi: Tensor | None  # (T, *latent_shape): ξ_i where step i draws one, else 0; None when no step draws
    guidance: float
    request: Request
    sampler: str = "DDIM"  # the sampler solved, by its usual name ("DPM++ 2M Karras")

    @property
    def steps(self) -> int:
        return self.coef.num_steps


def draw_noise(
    seed: int,
    shape: tuple[int, ...],
    draws: Tensor,
    draw_x_T: bool = True,
    generator: Any = None,
    draw: Callable[[torch.Generator | None], Tensor] | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """x_T (unless ``draw_x_T`` is False: a pipeline given ``latents`` draws none) and ξ_i for every step
    i with ``draws[i]``, i = T−1…0, in that order, from ``generator`` (default: a CPU generator seeded
    with ``seed``); None when no step draws. ``draw`` makes one draw of ``shape`` (default: float32
    ``torch.randn``); a model's ``draw_latents`` draws as its pipeline does (dtype, device, Flux's
    packing)."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    draw = draw or (lambda g: torch.randn((1, *shape), generator=g)[0])
    x_T = draw(g) if draw_x_T else None
    if not bool(draws.any()):
        return x_T, None
    xi = torch.zeros((draws.shape[0], *shape))
    for i in reversed(range(draws.shape[0])):
        if draws[i]:
            xi[i] = draw(g)
    return x_T, xi


def for_family(model: DiffusionModel, wanted: str) -> DiffusionModel:
    """The model as the sampler family ``wanted`` sees it ("auto": its own scheduler's).

    A model whose ``families`` name the one wanted (the embedded mixtures have both) gives its view
    (``with_family``); any other is refused with a message naming its own family.
    """
    own = family(model.scheduler_config)
    if wanted in ("auto", own):
        return model
    if wanted not in model.families:
        kind = "a flow-matching (velocity)" if own == "flow" else "a DDIM (ε/v-prediction)"
        raise ValueError(f"{model.name} is {kind} model: it cannot be sampled with family {wanted!r}")
    return model.with_family(wanted)  # present: ``families`` declares it


def schedule_for(
    model: DiffusionModel, steps: int, eta: float = 0.0, sampler: str = "auto", begin: int = 0
) -> Schedule:
    """The coefficients of ``sampler`` on the model's scheduler config (``sampler_config``; "auto": the
    model's own) for ``steps`` steps from step ``begin`` (img2img's start), with the arguments its
    pipeline passes to ``set_timesteps`` (``schedule_arguments``: a flow model's sigmas, sequence length)."""
    config = sampler_config(model.scheduler_config, sampler)
    return coefficients(config, steps, eta, begin=begin, **model.schedule_arguments(steps))


def at_size(
    model: DiffusionModel, height: int | None, width: int | None, latent_shape: tuple[int, ...] | None = None
) -> DiffusionModel:
    """The model at ``height``×``width`` pixels (``with_size``, a model that ``takes_image_size``); with
    neither given, at the size ``latent_shape`` is for (``size_of``), else its own. A model of one
    size refuses a size by name."""
    if not model.takes_image_size:
        if height is not None or width is not None:
            raise ValueError(
                f"height and width: {model.name} samples at one size (latents {tuple(model.latent_shape)}); "
                "they apply to the diffusers pipelines that take an image size"
            )
        return model
    if height is None and width is None and latent_shape is not None:
        height, width = model.size_of(latent_shape)  # present: it takes_image_size
    if (height is None and width is None) or (height, width) == model.image_size:
        return model  # as it is (a model over replicas stays one)
    return model.with_size(height, width)


def make_problem(
    model: DiffusionModel,
    request: Request,
    latents: Tensor | None = None,
    generator: Any = None,
    *,
    cond: Any = None,
    begin: int | None = None,
) -> Problem:
    """Encode the condition, build the coefficients from the model's own scheduler config, draw noises.

    ``request.family`` picks the sampler family (``for_family``), ``request.sampler`` the sampler on
    its noise schedule (``sampler_config``: the model's own unless another is named),
    ``request.height``/``width`` the image size (``at_size``); ``latents`` (the pipeline's ``latents=``:
    x_T before ``init_noise_sigma``; shape ``latent_shape``, or with a leading batch axis of 1) replace
    the drawn x_T and, without a size, set it. x_T and the η-noises are drawn from ``generator`` when
    given (a pipeline's ``generator=``, or a list of them, one per image), else from ``request.seed``.

    A pipeline wrapper (``ParaTAAPipeline``) may pass what it formed as the pipeline forms it: ``cond``,
    the condition (a batch of prompts, precomputed embeddings), instead of ``encode(prompt)``; and
    ``begin``, the step of the T-step grid the run starts at (image-to-image), with ``latents`` the
    scheduler's sample there (the encoded image noised), carried into the solver's space by
    ``Schedule.input_scale``.
    """
    if latents is not None:
        latents = torch.as_tensor(latents).detach().to("cpu", torch.float32)
        if latents.dim() == len(model.latent_shape) + 1 and latents.shape[0] == 1:
            latents = latents[0]
    model = for_family(model, request.family)
    given_shape = None if latents is None else tuple(latents.shape)
    model = at_size(model, request.height, request.width, given_shape)
    coef = schedule_for(model, request.steps, request.eta, request.sampler, begin or 0)
    if cond is None:
        cond = model.encode(request.prompt, request.negative_prompt)
    shape = tuple(model.latent_shape)
    x_T, xi = draw_noise(request.seed, shape, coef.draws, latents is None, generator, model.draw_latents)
    if latents is not None:
        if tuple(latents.shape) != shape:
            sized = " (height and width set the image size they are for)" if model.takes_image_size else ""
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}{sized}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")
        x_T = latents
    # The pipeline's latents · init_noise_sigma (img2img: its sample at the first step run), in the solver's
    # state space; contiguous, since the solvers write the trajectory through flat views (an encoded
    # image's latents can come channels-last).
    x_T = (x_T * (coef.init_scale if begin is None else coef.input_scale)).contiguous()
    return Problem(model, coef, cond, x_T, xi, float(request.guidance), request, coef.name)
