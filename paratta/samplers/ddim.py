"""DDIM(η): diffusers' ``DDIMScheduler``.

One step from x_{i+1} at timestep τ, exactly as ``DDIMScheduler.step`` takes it:

    (1)  ε̂   = o   (v: √ᾱ o + √(1−ᾱ) x; sample: (x − √ᾱ o)/√(1−ᾱ))
    (2)  x̂_0 = (x − √(1−ᾱ) ε̂)/√ᾱ, clamped to [−r, r] when clipping (ε̂ is not re-derived from it)
    (3)  σ   = √((1−ᾱ⁻)/(1−ᾱ)) √(1 − ᾱ/ᾱ⁻),   c = η σ
    (4)  x_i = √ᾱ⁻ x̂_0 + √(1 − ᾱ⁻ − c²) ε̂ + c ξ_i

with ᾱ⁻ = ᾱ(τ − N//T) — diffusers steps back by N//T, not to the next grid point (the two differ for
"linspace" spacing only) — and ᾱ(−) = 1 when ``set_alpha_to_one`` else ᾱ(0). With η > 0 every step
draws ξ_i. (1)–(4) are one step of width 1 in ε̂: x_i = p_i x_{i+1} + w_i ε̂ + c ξ_i, the published
ParaTAA split a_i = √(ᾱ⁻/ᾱ) for ε (``paratta.schedule``), plus √ᾱ⁻ (clip(x̂_0) − x̂_0) when clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import SamplerConfig, data, noise, schedule
from .grids import alphas_cumprod, check_grid, check_spacing, check_steps
from .trace import Trace

PREDICTIONS = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class DDIMConfig(SamplerConfig):
    """The keys of a ``DDIMScheduler`` config; defaults are diffusers' ``DDIMScheduler()``."""

    scheduler = "DDIMScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    timestep_spacing: str = "leading"
    rescale_betas_zero_snr: bool = False

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {self.prediction_type!r}")
        if self.thresholding:
            raise self.refuse(
                "thresholding", True, "dynamic thresholding rescales x̂_0 by a per-sample quantile"
            )


def timesteps(config: DDIMConfig, steps: int) -> np.ndarray:
    """``DDIMScheduler.set_timesteps``'s grid, noisiest first (int64)."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    if config.timestep_spacing == "linspace":
        grid = np.linspace(0, n - 1, steps).round()[::-1].copy().astype(np.int64)
    elif config.timestep_spacing == "leading":
        grid = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + config.steps_offset
    else:
        grid = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    return check_grid(grid, n, steps)


def build(config: DDIMConfig, steps: int, eta: float = 0.0, begin: int = 0) -> Schedule:
    """(1)–(4) for ``steps`` steps from step ``begin`` of the grid (img2img's start)."""
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    ac = alphas_cumprod(config).numpy()
    final = 1.0 if config.set_alpha_to_one else float(ac[0])
    grid = timesteps(config, steps)[begin:]
    trace = Trace(len(grid))
    x = trace.x_T
    kappa = []  # √ᾱ⁻ per step: the weight of the clipping
    for t in grid:
        ab = float(ac[t])
        prev = int(t) - config.num_train_timesteps // steps
        abp = float(ac[prev]) if prev >= 0 else final
        alpha, sigma = ab**0.5, (1 - ab) ** 0.5
        mu, nu = noise(config.prediction_type, alpha, sigma)
        if nu == 0:  # v at zero terminal SNR: ε̂ = x carries no output, x̂_0 = −o does
            mu, nu = data(config.prediction_type, alpha, sigma)
        o = trace.evaluate(x, int(t), alpha, sigma, mu, nu)
        eps = sum(
            c * v for c, v in zip(noise(config.prediction_type, alpha, sigma), (x, o), strict=True)
        )  # (1)
        x0 = sum(
            c * v for c, v in zip(data(config.prediction_type, alpha, sigma), (x, o), strict=True)
        )  # (2)
        c = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)) ** 0.5  # (3)
        kappa.append(abp**0.5)
        x = abp**0.5 * x0 + max(1 - abp - c**2, 0.0) ** 0.5 * eps  # (4)
        if eta > 0:
            x = x + c * trace.noise()
    trace.finish(x)
    return schedule(
        trace,
        final_noise=(1 - final) ** 0.5,
        init_scale=1.0,
        frame="vp",
        prediction_type=config.prediction_type,
        name="DDIM" if eta == 0 else f"DDIM(η={eta:g})",
        timesteps_dtype=torch.int64,
        clip=float(config.clip_sample_range) if config.clip_sample else None,
        clip_weight=kappa if config.clip_sample else None,
    )
