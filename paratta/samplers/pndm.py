"""PNDM (Liu et al. 2022): diffusers' ``PNDMScheduler``, Stable Diffusion 1.x's default — PLMS
(``skip_prk_steps=True``, as SD's config runs it) and the pseudo Runge–Kutta warm-up (PRK).

Every step is DDIM's move with a combined ε (``_get_prev_sample``, PNDM's eq. 9):

    (1)  x' = √(ᾱ⁻/ᾱ) x − (ᾱ⁻ − ᾱ) e / (ᾱ √(1−ᾱ⁻) + √(ᾱ (1−ᾱ) ᾱ⁻)),   v-prediction: e ← √ᾱ e + √(1−ᾱ) x

with e combined from the network outputs as ``step`` combines them:

    (2)  PLMS, by the outputs e_0, e_1, … kept so far: e; (3e − e₋₁)/2; (23e − 16e₋₁ + 5e₋₂)/12;
         (55e − 59e₋₁ + 37e₋₂ − 9e₋₃)/24. Its second call (the grid repeats the second timestep) redoes
         the first step from x_T with (e_0 + e_1)/2 and keeps e_1 out of the history: T + 1 calls.
    (3)  PRK: four calls per step at t, t − δ/2, t − δ/2, t − δ with weights 1/6, 1/3, 1/3, 1/6, for the
         first three steps, then PLMS.

The network rows are the scheduler's ``timesteps`` list, one call each; the warm-up's extra points are
unknowns like the others (``samplers.trace``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import SamplerConfig, evaluate, schedule
from .grids import alphas_cumprod, check_grid, check_spacing, check_steps
from .trace import Trace


@dataclass(frozen=True)
class PNDMConfig(SamplerConfig):
    """The keys of a ``PNDMScheduler`` config; defaults are diffusers' own."""

    scheduler = "PNDMScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    skip_prk_steps: bool = False
    set_alpha_to_one: bool = False
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False  # not a PNDM key: the noise table's

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise self.refuse("prediction_type", self.prediction_type, "it takes epsilon or v_prediction")


def timesteps(config: PNDMConfig, steps: int) -> tuple[np.ndarray, int]:
    """``set_timesteps``'s list (int64, one network call each) and how many of its entries are PRK's."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    if not config.skip_prk_steps and steps < 4:
        raise ValueError(
            f"steps must be at least 4 for PNDM's Runge–Kutta warm-up (skip_prk_steps=False), got {steps}"
        )
    if config.timestep_spacing == "linspace":
        base = np.linspace(0, n - 1, steps).round().astype(np.int64)
    elif config.timestep_spacing == "leading":
        base = (np.arange(0, steps) * (n // steps)).round() + config.steps_offset
    else:
        base = np.round(np.arange(n, 0, -n / steps))[::-1].astype(np.int64) - 1
    if config.skip_prk_steps:
        prk = np.array([])
        plms = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].copy()
    else:
        prk = np.array(base[-4:]).repeat(2) + np.tile(np.array([0, n // steps // 2]), 4)
        prk = prk[:-1].repeat(2)[1:-1][::-1].copy()
        plms = base[:-3][::-1].copy()
    return check_grid(np.concatenate([prk, plms]).astype(np.int64), n, steps), len(prk)


def build(config: PNDMConfig, steps: int, eta: float = 0.0, begin: int = 0) -> Schedule:
    """(1)–(3) over ``set_timesteps``'s list from entry ``begin`` (img2img's start); η must be 0."""
    if eta != 0:
        raise ValueError(f"eta must be 0 for {label(config)} (a deterministic sampler); got {eta!r}")
    ac = alphas_cumprod(config, torch.float32).double().numpy()
    final = 1.0 if config.set_alpha_to_one else float(ac[0])
    ratio = config.num_train_timesteps // steps
    grid, prk = timesteps(config, steps)
    grid = grid[begin:]
    prk = max(prk - begin, 0)

    def ab(t: int) -> float:
        return float(ac[t]) if t >= 0 else final

    def move(x: np.ndarray, t: int, prev: int, e: np.ndarray) -> np.ndarray:  # (1)
        a, a_prev = ab(t), ab(prev)
        if config.prediction_type == "v_prediction":
            e = a**0.5 * e + (1 - a) ** 0.5 * x
        denom = a * (1 - a_prev) ** 0.5 + (a * (1 - a) * a_prev) ** 0.5
        return (a_prev / a) ** 0.5 * x - (a_prev - a) * e / denom

    trace = Trace(len(grid))
    x = trace.x_T
    ets: list[np.ndarray] = []
    counter, combined, cur = 0, 0.0, None
    for t in (int(v) for v in grid):
        a = ab(t)
        # the raw output (ε, or v: (1) converts the combination with the state it steps from)
        e = evaluate(trace, "output", config.prediction_type, x, t, a**0.5, (1 - a) ** 0.5)
        if counter < prk:  # (3)
            prev = t - (0 if counter % 2 else ratio // 2)
            t_from = int(grid[counter // 4 * 4])
            if counter % 4 == 0:
                combined, cur = e / 6, x
                ets.append(e)
            elif counter % 4 in (1, 2):
                combined = combined + e / 3
            else:
                e, combined = combined + e / 6, 0.0
            x = move(cur if cur is not None else x, t_from, prev, e)
        else:  # (2)
            prev = t - ratio
            if counter != 1:
                ets = ets[-3:] + [e]
            else:
                prev, t = t, t + ratio
            if len(ets) == 1 and counter == 0:
                cur = x
            elif len(ets) == 1 and counter == 1:
                e, x, cur = (e + ets[-1]) / 2, cur, None
            elif len(ets) == 2:
                e = (3 * ets[-1] - ets[-2]) / 2
            elif len(ets) == 3:
                e = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
            else:
                e = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
            x = move(x, t, prev, e)
        counter += 1
    trace.finish(x)
    return schedule(
        trace,
        final_noise=(1 - final) ** 0.5,
        init_scale=1.0,
        frame="vp",
        prediction_type=config.prediction_type,
        name=label(config),
        timesteps_dtype=torch.int64,
    )


def label(config: PNDMConfig) -> str:
    return "PNDM (PLMS)" if config.skip_prk_steps else "PNDM (PRK + PLMS)"
