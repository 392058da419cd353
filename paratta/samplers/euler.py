"""Euler and Euler ancestral ("Euler a"): diffusers' ``EulerDiscreteScheduler`` and
``EulerAncestralDiscreteScheduler``.

Both walk k-diffusion's σ = √((1 − ᾱ)/ᾱ) grid σ_T > … > σ_0 on the scaled sample s = x √(σ² + 1), and
feed the network x = s / √(σ² + 1) (``scale_model_input``): paratta's states are those network inputs,
so x_T = latents · init_noise_sigma / √(σ_T² + 1) and x_0 is the sample the pipeline returns. One step:

    (1)  x̂_0 = s − σ o   (ε; v: −σ/√(σ²+1) o + s/(σ²+1))
    (2)  Euler:   s' = s + (σ' − σ)(s − x̂_0)/σ
    (3)  Euler a: σ↑ = √(σ'² (σ² − σ'²)/σ²),  σ↓ = √(σ'² − σ↑²),
                  s' = s + (σ↓ − σ)(s − x̂_0)/σ + σ↑ ξ      (a fresh ξ per step)

The grid is ``set_timesteps``'s in the same dtypes: float32 σ and t, numpy float64 spacing, fractional
t fed to the network (σ → t by log-σ interpolation on Karras, exponential or beta grids).
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
class EulerConfig(SamplerConfig):
    """The keys of an ``EulerDiscreteScheduler`` config; defaults are diffusers' own."""

    scheduler = "EulerDiscreteScheduler"
    nullable = ("sigma_min", "sigma_max")
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    interpolation_type: str = "linear"
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    timestep_spacing: str = "linspace"
    timestep_type: str = "discrete"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    final_sigmas_type: str = "zero"

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise self.refuse("prediction_type", self.prediction_type, "it takes epsilon or v_prediction")
        if self.interpolation_type != "linear":
            raise self.refuse("interpolation_type", self.interpolation_type)
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                f"final_sigmas_type must be 'zero' or 'sigma_min', got {self.final_sigmas_type!r}"
            )
        respacing(self)


@dataclass(frozen=True)
class EulerAncestralConfig(SamplerConfig):
    """The keys of an ``EulerAncestralDiscreteScheduler`` config; defaults are diffusers' own."""

    scheduler = "EulerAncestralDiscreteScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise self.refuse("prediction_type", self.prediction_type, "it takes epsilon or v_prediction")


def grid(config: EulerConfig | EulerAncestralConfig, steps: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(sigmas (T + 1,), timesteps (T,), init_noise_sigma)`` after ``set_timesteps(steps)``, float32."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    table = vp_sigmas(config)
    spacing = config.timestep_spacing
    if spacing == "linspace":
        ts = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(np.float32)
        ts += config.steps_offset
    else:
        ts = np.arange(n, 0, -n / steps).round().copy().astype(np.float32) - 1
    sigmas = np.interp(ts, np.arange(0, len(table)), table)
    final = 0.0
    if isinstance(config, EulerConfig):
        if (kind := respacing(config)) is not None:
            lo = config.sigma_min if config.sigma_min is not None else sigmas[-1].item()
            hi = config.sigma_max if config.sigma_max is not None else sigmas[0].item()
            sigmas = respace(kind, hi, lo, steps)
            ts = np.array([sigma_to_t(s, np.log(table)) for s in sigmas])
        if config.final_sigmas_type == "sigma_min":
            final = float(table[0])
    sigma32 = np.concatenate([sigmas, [final]]).astype(np.float32)
    if (
        isinstance(config, EulerConfig)
        and config.timestep_type == "continuous"
        and config.prediction_type == "v_prediction"
    ):
        ts = np.array([0.25 * np.log(s) for s in sigma32[:-1]], dtype=np.float32)
    top = float(sigma32.max())
    init = top if spacing in ("linspace", "trailing") else (top**2 + 1) ** 0.5
    return sigma32, ts.astype(np.float32), init


def build(
    config: EulerConfig | EulerAncestralConfig, steps: int, eta: float = 0.0, begin: int = 0
) -> Schedule:
    """(1)–(3) for ``steps`` steps from step ``begin`` (img2img's start); η must be 0."""
    ancestral = isinstance(config, EulerAncestralConfig)
    name = "Euler a" if ancestral else "Euler" + _spacing_name(config)
    if eta != 0:
        raise ValueError(f"eta must be 0 for {name} (its own noise, if any, is the sampler's); got {eta!r}")
    sigma32, ts, init = grid(config, steps)
    s = sigma32.astype(np.float64)
    alpha = 1 / np.sqrt(s**2 + 1)
    trace = Trace(steps - begin)
    sample = trace.x_T / alpha[begin]  # the scheduler's scaled sample at the first step
    for k in range(begin, steps):
        sigma, after = s[k], s[k + 1]
        x0 = evaluate(
            trace, "data", config.prediction_type, sample * alpha[k], float(ts[k]), alpha[k], sigma * alpha[k]
        )
        if not ancestral:  # (2)
            sample = sample + (after - sigma) * (sample - x0) / sigma
            continue
        up = (after**2 * (sigma**2 - after**2) / sigma**2) ** 0.5  # (3)
        down = (after**2 - up**2) ** 0.5
        sample = sample + (down - sigma) * (sample - x0) / sigma + up * trace.noise()
    trace.finish(sample)
    return schedule(
        trace,
        final_noise=float(s[-1] * alpha[-1]),
        init_scale=init * float(alpha[begin]),
        input_scale=float(alpha[begin]),
        frame="vp",
        prediction_type=config.prediction_type,
        name=name,
        timesteps_dtype=torch.float32,
    )


def _spacing_name(config: EulerConfig) -> str:
    return {
        "use_karras_sigmas": " Karras",
        "use_exponential_sigmas": " exponential",
        "use_beta_sigmas": " beta",
    }.get(respacing(config) or "", "")
