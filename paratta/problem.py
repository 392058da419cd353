"""A sampling problem: the model, its condition, the coefficients and the fixed noises.

For η > 0 the noises ξ_0…ξ_{T−1} are drawn once, so the stochastic sampler becomes a
deterministic system whose unique solution is the sequential run with those noises. They are
drawn from one CPU generator in the order diffusers' pipelines draw them (x_T first, unless it is
given as ``latents``, then one ξ per step from the noisiest down), so a diffusers pipeline given
``torch.Generator().manual_seed(seed)`` (and the same ``latents``) draws the same numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import Request
from .protocol import DiffusionModel
from .schedule import Schedule, coefficients, family, sampler_config, sampler_name


@dataclass(frozen=True)
class Problem:
    """Everything both samplers need; the sequential trajectory is its unique solution."""

    model: DiffusionModel
    coef: Schedule  # float64, on CPU; samplers move a copy to their device and dtype
    cond: Any
    x_T: Tensor  # (*latent_shape), float32 on CPU
    xi: Tensor | None  # (T, *latent_shape): ξ_i for step i, None when η = 0
    guidance: float
    request: Request
    # said wherever the run is reported: the model's own scheduler was replaced (e.g. "the pipeline's
    # PNDMScheduler is not supported: sampling DDIM on its noise schedule"); None when it was not
    note: str | None = None
    sampler: str = "DDIM"  # the sampler solved, by its usual name ("DPM++ 2M Karras")

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


def for_family(model: DiffusionModel, wanted: str) -> DiffusionModel:
    """The model as the sampler family ``wanted`` sees it ("auto": its own scheduler's).

    A model that both families can sample (the embedded mixtures) offers ``with_family``; any other
    is refused with a message naming its own family.
    """
    own = family(model.scheduler_config)
    if wanted in ("auto", own):
        return model
    switch = getattr(model, "with_family", None)
    if switch is None:
        kind = "a flow-matching (velocity)" if own == "flow" else "a DDIM (ε/v-prediction)"
        raise ValueError(f"{model.name} is {kind} model: it cannot be sampled with family {wanted!r}")
    return switch(wanted)


def schedule_for(model: DiffusionModel, steps: int, eta: float = 0.0, sampler: str = "auto") -> Schedule:
    """The coefficients of ``sampler`` on the model's scheduler config (``sampler_config``; "auto": the
    model's own) for ``steps`` steps, with the arguments its pipeline passes to ``set_timesteps``
    (``schedule_arguments``: a flow model's sigmas, sequence length)."""
    arguments = getattr(model, "schedule_arguments", None)
    config = sampler_config(model.scheduler_config, sampler)
    return coefficients(config, steps, eta, **(arguments(steps) if arguments else {}))


def conversion_note(config: dict[str, Any]) -> str | None:
    """The statement an adapter left on a scheduler config it had to replace (``_conversion``), if any."""
    note = dict(config).get("_conversion")
    return str(note) if note else None


def make_problem(model: DiffusionModel, request: Request, latents: Tensor | None = None) -> Problem:
    """Encode the condition, build the coefficients from the model's own scheduler config, draw noises.

    ``request.family`` picks the sampler family (``for_family``), ``request.sampler`` the sampler on
    its noise schedule (``sampler_config``; a replaced scheduler is said in ``note`` and warned);
    ``latents`` (the pipeline's ``latents=``: x_T before ``init_noise_sigma``) (shape ``latent_shape``,
    or with a leading batch axis of 1) replaces the drawn x_T.
    """
    model = for_family(model, request.family)
    config = sampler_config(model.scheduler_config, request.sampler)
    coef = schedule_for(model, request.steps, request.eta, request.sampler)
    note = conversion_note(config)
    if note is not None:
        warnings.warn(f"{model.name}: {note}", stacklevel=2)
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
    x_T = x_T * coef.init_scale  # the pipeline's latents · init_noise_sigma, in the solver's state space
    name = sampler_name(config, request.eta)
    return Problem(model, coef, cond, x_T, xi, float(request.guidance), request, note, name)
