"""Latent consistency models: diffusers' ``LCMScheduler`` (LCM and LCM-LoRA pipelines).

Each step jumps to the consistency model's x̂ and re-noises it to the next timestep with a fresh ξ
(none after the last step): at t with the next grid timestep t' (t' = t at the last step),

    (1)  x̂_0 = (x − √(1−ᾱ_t) o)/√ᾱ_t   (v: √ᾱ x − √(1−ᾱ) o; sample: o)
    (2)  c_skip = σ_d² / ((s t)² + σ_d²),  c_out = s t / √((s t)² + σ_d²),  σ_d = ½, s = ``timestep_scaling``
    (3)  x̂ = c_out x̂_0 + c_skip x,      x' = √ᾱ_t' x̂ + √(1−ᾱ_t') ξ

on ``set_timesteps``'s grid: T of the ``original_inference_steps`` training-schedule points
k·(N/original) − 1, evenly skipped from the noisiest. Like the other stochastic samplers, the drawn ξ
make it one deterministic system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import SamplerConfig, evaluate, schedule
from .grids import alphas_cumprod
from .trace import Trace

SIGMA_DATA = 0.5


@dataclass(frozen=True)
class LCMConfig(SamplerConfig):
    """The keys of an ``LCMScheduler`` config; defaults are diffusers' own."""

    scheduler = "LCMScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: tuple[float, ...] | None = None
    original_inference_steps: int = 50
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    timestep_spacing: str = "leading"
    timestep_scaling: float = 10.0
    rescale_betas_zero_snr: bool = False

    def validate(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise self.refuse("prediction_type", self.prediction_type)
        if self.thresholding or self.clip_sample:
            key = "thresholding" if self.thresholding else "clip_sample"
            raise self.refuse(key, True, "it bounds x̂_0 sample by sample")
        if not 1 <= self.original_inference_steps <= self.num_train_timesteps:
            raise self.refuse("original_inference_steps", self.original_inference_steps)


def timesteps(config: LCMConfig, steps: int) -> np.ndarray:
    """``set_timesteps(steps)``'s grid (int64, noisiest first)."""
    original = config.original_inference_steps
    origin = np.asarray(list(range(1, original + 1))) * (config.num_train_timesteps // original) - 1
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= original:
        raise ValueError(
            f"steps must be in [1, {original}] (the LCM's original_inference_steps), got {steps!r}"
        )
    origin = origin[::-1].copy()
    indices = np.floor(np.linspace(0, len(origin), num=steps, endpoint=False)).astype(np.int64)
    return origin[indices].astype(np.int64)


def build(config: LCMConfig, steps: int, eta: float = 0.0, begin: int = 0) -> Schedule:
    """(1)–(3) for ``steps`` steps from step ``begin``; η must be 0 (the re-noising is the sampler's own)."""
    if eta != 0:
        raise ValueError(f"eta must be 0 for LCM (its own noise is the sampler's); got {eta!r}")
    ac = alphas_cumprod(config, torch.float32).double().numpy()
    grid = timesteps(config, steps)
    trace = Trace(steps - begin)
    x = trace.x_T
    for k in range(begin, steps):
        t = int(grid[k])
        prev = int(grid[k + 1]) if k + 1 < steps else t
        ab, abp = float(ac[t]), float(ac[prev])
        x0 = evaluate(trace, "data", config.prediction_type, x, t, ab**0.5, (1 - ab) ** 0.5)  # (1)
        scaled = t * config.timestep_scaling
        c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)  # (2)
        c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
        denoised = c_out * x0 + c_skip * x  # (3)
        x = denoised if k == steps - 1 else abp**0.5 * denoised + (1 - abp) ** 0.5 * trace.noise()
    trace.finish(x)
    return schedule(
        trace,
        final_noise=0.0,
        init_scale=1.0,
        frame="vp",
        prediction_type=config.prediction_type,
        name="LCM",
        timesteps_dtype=torch.int64,
    )
