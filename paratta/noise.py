"""The training noise schedule β_1…β_N that every ε/v-prediction sampler shares (DDIM, Euler,
DPM-Solver++): diffusers' definitions, in float64 for paratta's own tables or float32 as diffusers'
schedulers build them (``paratta.samplers`` mirrors their σ grids bit for bit)."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class NoiseSchedule(Protocol):
    """The config keys that define β (every ε/v sampler config of ``paratta.samplers``)."""

    num_train_timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str
    trained_betas: tuple[float, ...] | None
    rescale_betas_zero_snr: bool


def betas(config: NoiseSchedule, dtype: torch.dtype = torch.float64) -> Tensor:
    """β_1…β_N following diffusers' schedule definitions; linear schedules are spaced in ``dtype``
    (diffusers: float32), the cosine schedule and trained betas computed in float64 and rounded."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        beta = torch.tensor(config.trained_betas, dtype=torch.float64).to(dtype)
    elif config.beta_schedule == "linear":
        beta = torch.linspace(config.beta_start, config.beta_end, n, dtype=dtype)
    elif config.beta_schedule == "scaled_linear":
        beta = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=dtype) ** 2
    else:  # squaredcos_cap_v2: the Glide cosine schedule, capped at 0.999

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        beta = torch.tensor(
            [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
            dtype=torch.float64,
        ).to(dtype)
    if config.rescale_betas_zero_snr:
        beta = _rescale_zero_terminal_snr(beta)
    return beta


def _rescale_zero_terminal_snr(beta: Tensor) -> Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale √ᾱ so that ᾱ_N = 0 and ᾱ_1 is unchanged."""
    s = torch.cumprod(1 - beta, 0).sqrt()
    s0, sN = s[0].clone(), s[-1].clone()
    s = (s - sN) * s0 / (s0 - sN)
    ab = s**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas
