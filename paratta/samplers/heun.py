"""Heun (Karras et al. 2022, Algorithm 1 without churn): diffusers' ``HeunDiscreteScheduler``.

Two network calls per step on k-diffusion's σ grid, the sample s scaled as Euler scales it (paratta's
states are the network's inputs x = s / √(σ² + 1), ``samplers.euler``):

    (1)  d  = (s − x̂_0(s, σ))/σ,            s̃ = s + (σ' − σ) d                  (an Euler predictor)
    (2)  d' = (s̃ − x̂_0(s̃, σ'))/σ',          s' = s + (σ' − σ)(d + d')/2         (the trapezoid)

and the last step, onto σ' = 0, is (1) alone: 2T − 1 calls. ``set_timesteps`` repeats every σ and t but
the first (and the final 0); the predictor s̃ is an unknown like the states (``samplers.trace``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import SamplerConfig, evaluate, schedule
from .grids import check_spacing, check_steps, respace, respacing, sigma_to_t, vp_sigmas
from .trace import Trace


@dataclass(frozen=True)
class HeunConfig(SamplerConfig):
    """The keys of a ``HeunDiscreteScheduler`` config; defaults are diffusers' own."""

    scheduler = "HeunDiscreteScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False  # not a Heun key: the noise table's

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise self.refuse("prediction_type", self.prediction_type)
        if self.clip_sample:
            raise self.refuse(
                "clip_sample", True, "it clamps both stages' x̂_0, which the band does not carry"
            )
        respacing(self)


def grid(config: HeunConfig, steps: int) -> tuple[np.ndarray, np.ndarray, float]:
    """σ (T + 1,), t (T,) before the repetition, and init_noise_sigma, as ``set_timesteps`` makes them."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    table = vp_sigmas(config)
    if config.timestep_spacing == "linspace":
        ts = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
    elif config.timestep_spacing == "leading":
        ts = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(
            np.float32
        ) + config.steps_offset
    else:
        ts = np.arange(n, 0, -n / steps).round().copy().astype(np.float32) - 1
    sigmas = np.interp(ts, np.arange(0, len(table)), table)
    if (kind := respacing(config)) is not None:
        sigmas = respace(kind, sigmas[0].item(), sigmas[-1].item(), steps)
        ts = np.array([sigma_to_t(s, np.log(table)) for s in sigmas])
    sigma32 = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    top = float(sigma32.max())
    init = top if config.timestep_spacing in ("linspace", "trailing") else (top**2 + 1) ** 0.5
    return sigma32, ts.astype(np.float32), init


def build(config: HeunConfig, steps: int, eta: float = 0.0, begin: int = 0) -> Schedule:
    """(1)–(2) for ``steps`` steps from step ``begin`` (img2img's start); η must be 0."""
    if eta != 0:
        raise ValueError(f"eta must be 0 for Heun (a deterministic sampler); got {eta!r}")
    sigma32, ts, init = grid(config, steps)
    s = sigma32.astype(np.float64)
    alpha = 1 / np.sqrt(s**2 + 1)
    trace = Trace(2 * (steps - begin) - 1)
    sample = trace.x_T / alpha[begin]

    def x0(point: np.ndarray, k: int) -> np.ndarray:  # x̂_0 of a call at σ_k, from the scaled sample
        return evaluate(
            trace, "data", config.prediction_type, point * alpha[k], float(ts[k]), alpha[k], s[k] * alpha[k]
        )

    for k in range(begin, steps):
        d = (sample - x0(sample, k)) / s[k]  # (1)
        predictor = sample + (s[k + 1] - s[k]) * d
        if k == steps - 1:
            sample = predictor
            break
        d2 = (predictor - x0(predictor, k + 1)) / s[k + 1]  # (2)
        sample = sample + (s[k + 1] - s[k]) * (d + d2) / 2
    trace.finish(sample)
    name = "Heun" + {"use_karras_sigmas": " Karras", "use_exponential_sigmas": " exponential"}.get(
        respacing(config) or "", ""
    )
    return schedule(
        trace,
        final_noise=0.0,
        init_scale=init * float(alpha[begin]),
        input_scale=float(alpha[begin]),
        frame="vp",
        prediction_type=config.prediction_type,
        name=name,
        timesteps_dtype=torch.float32,
    )
