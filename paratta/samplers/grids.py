"""What diffusers' schedulers share: their configs' keys, the training noise tables, σ spacings and the
flow-matching shifts. Each sampler module builds its own grid from these as its scheduler's
``set_timesteps`` does, in the same dtypes (float32 tables, numpy float64 spacing), so that paratta's
grids equal diffusers' bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from paratta.noise import NoiseSchedule, betas

SPACINGS = ("linspace", "leading", "trailing")
RESPACINGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")  # at most one


def config_fields(cls: type, config: Mapping[str, Any], nullable: Collection[str] = ()) -> dict[str, Any]:
    """The entries of a diffusers scheduler config that are fields of the dataclass ``cls``.

    Keys of other scheduler classes are dropped, and so is a None value (diffusers writes None for
    "unset", which the field's default stands for) unless its key is in ``nullable``; trained betas
    become a tuple (the configs are frozen).
    """
    names = {f.name for f in fields(cls)}
    out = {k: v for k, v in dict(config).items() if k in names and (v is not None or k in nullable)}
    if out.get("trained_betas") is not None:
        out["trained_betas"] = tuple(float(b) for b in out["trained_betas"])
    if isinstance(out.get("disable_corrector"), list):
        out["disable_corrector"] = tuple(out["disable_corrector"])
    return out


def alphas_cumprod(config: NoiseSchedule, dtype: torch.dtype = torch.float64) -> Tensor:
    """ᾱ_t for t = 0…N−1: float64 for DDIM and PNDM (paratta's own tables), float32 as the σ-space
    schedulers build it (with their zero-SNR fix: ᾱ_N = 2⁻²⁴, so the first σ is finite)."""
    ac = torch.cumprod(1 - betas(config, dtype), 0)
    if dtype == torch.float32 and config.rescale_betas_zero_snr:
        ac[-1] = 2**-24
    return ac


def vp_sigmas(config: NoiseSchedule) -> np.ndarray:
    """k-diffusion's σ = √((1 − ᾱ)/ᾱ) per training step, from the float32 ᾱ table (diffusers' np.array)."""
    ac = alphas_cumprod(config, torch.float32)
    return (((1 - ac) / ac) ** 0.5).numpy()


def sigma_to_t(sigma: np.ndarray | float, log_sigmas: np.ndarray) -> np.ndarray:
    """diffusers' σ → t: linear interpolation of log σ between the two training steps around it."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigma))


def respace(kind: str, hi: float, lo: float, steps: int) -> np.ndarray:
    """Karras (ρ = 7), exponential or beta (α = β = 0.6) spacing from ``hi`` down to ``lo``."""
    if kind == "use_karras_sigmas":
        ramp = np.linspace(0, 1, steps)
        return (hi ** (1 / 7.0) + ramp * (lo ** (1 / 7.0) - hi ** (1 / 7.0))) ** 7.0
    if kind == "use_exponential_sigmas":
        return np.exp(np.linspace(math.log(hi), math.log(lo), steps))
    try:
        import scipy.stats
    except ImportError:
        raise ValueError("use_beta_sigmas=True needs scipy (as diffusers does)") from None
    ppf = [scipy.stats.beta.ppf(u, 0.6, 0.6) for u in 1 - np.linspace(0, 1, steps)]
    return np.array([lo + p * (hi - lo) for p in ppf])


def respacing(config: Any) -> str | None:
    """The one σ respacing a config asks for (``RESPACINGS``), or None; ``ValueError`` for several."""
    asked = [name for name in RESPACINGS if getattr(config, name, False)]
    if len(asked) > 1:
        raise ValueError(f"only one of {', '.join(asked)} can be set")
    return asked[0] if asked else None


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """μ, linear in the image's token count, as the SD3 and Flux pipelines compute it:
    μ = m L + b, m = (max_shift − base_shift)/(max_seq − base_seq), b = base_shift − m · base_seq."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def time_shift(kind: str, mu: float, sigmas: np.ndarray) -> np.ndarray:
    """Dynamic shifting: σ ← e^μ / (e^μ + (1/σ − 1)) ("exponential"; "linear": μ in place of e^μ)."""
    e = math.exp(mu) if kind == "exponential" else mu
    return e / (e + (1 / sigmas - 1) ** 1.0)


def static_shift(shift: float, sigmas: np.ndarray) -> np.ndarray:
    """σ ← s σ / (1 + (s − 1) σ)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def stretch_to_terminal(terminal: float, sigmas: np.ndarray) -> np.ndarray:
    """σ ← 1 − (1 − σ)(1 − terminal)/(1 − σ_last): the last σ lands on ``terminal``."""
    one_minus = 1 - sigmas
    with np.errstate(divide="ignore", invalid="ignore"):  # refused by the caller when not finite
        return 1 - (one_minus / (one_minus[-1] / (1 - terminal)))


def check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {spacing!r}")


def check_steps(steps: int, n: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n:
        raise ValueError(f"steps must be in [1, {n}] for this scheduler, got {steps!r}")


def check_grid(grid: np.ndarray, n: int, steps: int) -> np.ndarray:
    """``grid`` when every timestep is one of the N training steps, else ``ValueError``: ``steps_offset``
    can push a leading grid past N − 1, where diffusers' own table ends (it fails there too)."""
    if int(grid.max()) >= n:
        raise ValueError(
            f"steps = {steps} puts this scheduler's first timestep at {int(grid.max())}, past its last "
            f"training step {n - 1} (steps_offset): use fewer steps"
        )
    return grid


def distinct(sigmas: np.ndarray, steps: int) -> None:
    """``ValueError`` when the grid repeats a σ: a multistep step divides by h = λ_t − λ_s0 = 0 there
    (diffusers returns NaN); a grid of too many steps for the training schedule does this."""
    if np.any(np.diff(sigmas) >= 0):
        raise ValueError(
            f"steps = {steps} repeats a σ on this scheduler's grid (a step of h = 0): use fewer steps"
        )


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """ᾱ at timesteps ``t``: the table for integer t; for fractional t (Euler's Karras grids), the inverse
    of diffusers' σ → t map, log σ linear between the two training steps around t."""
    if not torch.is_floating_point(t):
        return alphas_cumprod[t]
    ac = alphas_cumprod.double()
    log_sigma = ((1 - ac) / ac).sqrt().log()
    tt = t.double().clamp(0, ac.shape[0] - 1)
    low = tt.floor().long().clamp_max(ac.shape[0] - 2)
    w = tt - low
    ls = (1 - w) * log_sigma[low] + w * log_sigma[low + 1]
    return (1 / (1 + (2 * ls).exp())).to(alphas_cumprod.dtype)
