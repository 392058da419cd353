"""DPM-Solver and DPM-Solver++ (1S, 2M, 3M; ODE and SDE): diffusers' ``DPMSolverMultistepScheduler``.

On σ_T > … > σ_0 with α_t = 1/√(σ² + 1), σ_t = σ α_t (flow sigmas: α_t = 1 − σ, σ_t = σ) and
λ = log α_t − log σ_t, each step from s0 to t (h = λ_t − λ_s0) reads the converted outputs m of the
last one to three states (x̂_0 for dpmsolver++, ε for dpmsolver):

    (1)  m0 = x̂_0(x, o)  or  ε(x, o)                                            (convert_model_output)
    (2)  first order   x_t = (σ_t/σ_s0) x − α_t (e^{−h} − 1) m0                 (dpmsolver++)
    (3)  second order  D0 = m0, D1 = (m0 − m1)/r0, r0 = h_0/h;
                       x_t = (σ_t/σ_s0) x − α_t (e^{−h} − 1) D0 − ½ α_t (e^{−h} − 1) D1          (midpoint)
                                                            + α_t ((e^{−h} − 1)/h + 1) D1       (heun)
    (4)  third order   D1 = D1_0 + r0/(r0 + r1) (D1_0 − D1_1),  D2 = (D1_0 − D1_1)/(r0 + r1);
                       x_t = (σ_t/σ_s0) x − α_t (e^{−h} − 1) D0 + α_t ((e^{−h} − 1)/h + 1) D1
                             − α_t ((e^{−h} − 1 + h)/h² − ½) D2
    (5)  SDE (sde-dpmsolver++): the same with e^{−h} σ_t/σ_s0 on x, α_t (1 − e^{−2h}) on the m-terms and
         σ_t √(1 − e^{−2h}) ξ, a fresh ξ per step

and the dpmsolver (ε) forms with α and σ exchanged, as in ``step``. The order is ``step``'s: first order
on the first step (warm-up), second then third as the history fills; the last step first order when
``euler_at_final``, ``lower_order_final`` below 15 steps or a final σ of zero, the one before it second
order under ``lower_order_final`` below 15 steps. The grid is ``set_timesteps``'s, in its dtypes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import PREDICTIONS, SamplerConfig, evaluate, schedule
from .grids import (
    alphas_cumprod,
    check_spacing,
    check_steps,
    distinct,
    respace,
    respacing,
    sigma_to_t,
    static_shift,
)
from .trace import Trace

ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")


@dataclass(frozen=True)
class DPMConfig(SamplerConfig):
    """The keys of a ``DPMSolverMultistepScheduler`` config; defaults are diffusers' own."""

    scheduler = "DPMSolverMultistepScheduler"
    nullable = ("variance_type",)
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    solver_order: int = 2
    prediction_type: str = "epsilon"
    thresholding: bool = False
    algorithm_type: str = "dpmsolver++"
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_lu_lambdas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = 1.0
    final_sigmas_type: str = "zero"
    lambda_min_clipped: float = -math.inf
    variance_type: str | None = None
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {self.prediction_type!r}")
        if self.algorithm_type not in ALGORITHMS:
            raise self.refuse("algorithm_type", self.algorithm_type, f"it is one of {', '.join(ALGORITHMS)}")
        if self.solver_order not in (1, 2, 3):
            raise self.refuse("solver_order", self.solver_order, "diffusers defines orders 1, 2 and 3")
        if self.solver_order == 3 and self.algorithm_type == "sde-dpmsolver":
            raise self.refuse("solver_order", 3, "diffusers defines no third order for sde-dpmsolver")
        if self.solver_type not in ("midpoint", "heun"):
            raise self.refuse("solver_type", self.solver_type)
        if self.thresholding:
            raise self.refuse(
                "thresholding", True, "dynamic thresholding rescales x̂_0 by a per-sample quantile"
            )
        if self.variance_type is not None:
            raise self.refuse(
                "variance_type",
                self.variance_type,
                "a learned variance is split off by the pipeline, not the scheduler",
            )
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                f"final_sigmas_type must be 'zero' or 'sigma_min', got {self.final_sigmas_type!r}"
            )
        if self.algorithm_type in ("dpmsolver", "sde-dpmsolver") and self.final_sigmas_type == "zero":
            raise self.refuse("final_sigmas_type", "zero", f"diffusers refuses it for {self.algorithm_type}")
        if self.prediction_type == "flow_prediction" and self.algorithm_type in (
            "dpmsolver",
            "sde-dpmsolver",
        ):
            raise self.refuse(
                "prediction_type", "flow_prediction", f"diffusers has no ε form of it ({self.algorithm_type})"
            )
        if self.use_dynamic_shifting and self.time_shift_type != "exponential":
            raise self.refuse("time_shift_type", self.time_shift_type, "dynamic shifting is exponential")
        respacing(self)


def grid(config: DPMConfig, steps: int, mu: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmas (T + 1,) float32, timesteps (T,) int64)`` after ``set_timesteps(steps, mu=mu)``."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    ac = alphas_cumprod(config, torch.float32)
    lambdas = torch.log(ac.sqrt()) - torch.log((1 - ac).sqrt())
    last = n - int(torch.searchsorted(torch.flip(lambdas, [0]), config.lambda_min_clipped))
    spacing = config.timestep_spacing
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = last // (steps + 1)
        ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(
            np.int64
        ) + config.steps_offset
    else:
        ts = np.arange(last, 0, -n / steps).round().copy().astype(np.int64) - 1
    table = (((1 - ac) / ac) ** 0.5).numpy()
    log_sigmas = np.log(table)
    cosine = config.beta_schedule == "squaredcos_cap_v2"
    kind = respacing(config)
    if kind is not None:
        sigmas = respace(kind, float(table[-1]), float(table[0]), steps)
        ts = np.array([sigma_to_t(s, log_sigmas) for s in sigmas])
        if kind == "use_karras_sigmas" and not cosine:
            ts = ts.round()
    elif config.use_lu_lambdas:
        lam = np.flip(log_sigmas.copy())
        lam = (lam[0].item() + np.linspace(0, 1, steps) * (lam[-1].item() - lam[0].item())) ** 1.0
        sigmas = np.exp(lam)
        ts = np.array([sigma_to_t(s, log_sigmas) for s in sigmas])
        if not cosine:
            ts = ts.round()
    elif config.use_flow_sigmas:
        shift = math.exp(mu) if mu is not None else config.flow_shift
        alphas = np.linspace(1, 1 / n, steps + 1)
        sigmas = np.flip(static_shift(shift, 1.0 - alphas))[:-1].copy()
        ts = (sigmas * n).copy()
    else:
        sigmas = np.interp(ts, np.arange(0, len(table)), table)
    final = float(table[0]) if config.final_sigmas_type == "sigma_min" else 0.0
    sigma32 = np.concatenate([sigmas, [final]]).astype(np.float32)
    t = torch.from_numpy(np.asarray(ts)).to(torch.int64).numpy()
    if len(t) != steps:
        raise ValueError(f"{config.scheduler} gives {len(t)} timesteps for steps = {steps} with this config")
    return sigma32, t


def build(
    config: DPMConfig, steps: int, eta: float = 0.0, begin: int = 0, mu: float | None = None
) -> Schedule:
    """(1)–(5) for ``steps`` steps from step ``begin`` (img2img's start); η must be 0."""
    name = label(config)
    if eta != 0:
        raise ValueError(f"eta must be 0 for {name} (its own noise, if any, is the sampler's); got {eta!r}")
    if config.use_dynamic_shifting and mu is None and config.use_flow_sigmas:
        raise ValueError("use_dynamic_shifting=True needs mu (or the image sequence length to compute it)")
    sigma32, t = grid(config, steps, mu)
    s = sigma32.astype(np.float64)
    distinct(s[:-1], steps)
    if config.use_flow_sigmas:
        alpha, sigma = 1 - s, s
    else:
        alpha = 1 / np.sqrt(s**2 + 1)
        sigma = s * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # +∞ at a final σ of zero
    plus = config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++")
    sde = config.algorithm_type.startswith("sde")
    kind = "data" if plus else "noise"
    trace = Trace(steps - begin)
    x = trace.x_T
    ms: list[np.ndarray] = []
    for k in range(begin, steps):
        ms.append(evaluate(trace, kind, config.prediction_type, x, float(t[k]), alpha[k], sigma[k]))  # (1)
        last = k == steps - 1
        final_first = last and (
            config.euler_at_final
            or (config.lower_order_final and steps < 15)
            or config.final_sigmas_type == "zero"
        )
        second_last = k == steps - 2 and config.lower_order_final and steps < 15
        warm = len(ms) - 1  # lower_order_nums
        if config.solver_order == 1 or warm < 1 or final_first:
            order = 1
        elif config.solver_order == 2 or warm < 2 or second_last:
            order = 2
        else:
            order = 3
        x = _update(order, ms, x, alpha, sigma, lam, k, config, plus, sde, trace)
    trace.finish(x)
    return schedule(
        trace,
        final_noise=float(sigma[-1]),
        init_scale=1.0,
        frame="flow" if config.use_flow_sigmas else "vp",
        prediction_type=config.prediction_type,
        name=name,
        timesteps_dtype=torch.int64,
    )


def _update(
    order: int,
    ms: list[np.ndarray],
    x: np.ndarray,
    alpha: np.ndarray,
    sigma: np.ndarray,
    lam: np.ndarray,
    k: int,
    config: DPMConfig,
    plus: bool,
    sde: bool,
    trace: Trace,
) -> np.ndarray:
    """One of (2)–(5) from step k (state s0) to step k + 1 (t)."""
    a_t, s_t, a_s, s_s = alpha[k + 1], sigma[k + 1], alpha[k], sigma[k]
    h = lam[k + 1] - lam[k]
    e = math.exp(-h) if plus else math.exp(h)  # e^{−h} (dpmsolver++) or e^{h} (dpmsolver)
    m0 = ms[-1]
    if order == 1:
        D = [m0]
    elif order == 2:
        r0 = (lam[k] - lam[k - 1]) / h
        D = [m0, (m0 - ms[-2]) / r0]
    else:
        r0, r1 = (lam[k] - lam[k - 1]) / h, (lam[k - 1] - lam[k - 2]) / h
        d10, d11 = (m0 - ms[-2]) / r0, (ms[-2] - ms[-3]) / r1
        D = [m0, d10 + r0 / (r0 + r1) * (d10 - d11), (d10 - d11) / (r0 + r1)]
    heun = config.solver_type == "heun"
    if config.algorithm_type == "dpmsolver++":
        out = (s_t / s_s) * x - a_t * (e - 1) * D[0]
        if order == 2:
            out = out + (a_t * ((e - 1) / h + 1)) * D[1] if heun else out - 0.5 * a_t * (e - 1) * D[1]
        elif order == 3:
            out = out + a_t * ((e - 1) / h + 1) * D[1] - a_t * ((e - 1 + h) / h**2 - 0.5) * D[2]
        return out
    if config.algorithm_type == "dpmsolver":
        out = (a_t / a_s) * x - s_t * (e - 1) * D[0]
        if order == 2:
            out = out - (s_t * ((e - 1) / h - 1)) * D[1] if heun else out - 0.5 * s_t * (e - 1) * D[1]
        elif order == 3:
            out = out - s_t * ((e - 1) / h - 1) * D[1] - s_t * ((e - 1 - h) / h**2 - 0.5) * D[2]
        return out
    xi = trace.noise()
    if config.algorithm_type == "sde-dpmsolver++":
        e2 = math.exp(-2.0 * h)
        out = (s_t / s_s * e) * x + a_t * (1 - e2) * D[0] + s_t * math.sqrt(1.0 - e2) * xi
        if order == 2:
            out = (
                out + (a_t * ((1.0 - e2) / (-2.0 * h) + 1.0)) * D[1]
                if heun
                else out + 0.5 * a_t * (1 - e2) * D[1]
            )
        elif order == 3:
            out = out + a_t * ((1.0 - e2) / (-2.0 * h) + 1.0) * D[1]
            out = out + a_t * ((1.0 - e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5) * D[2]
        return out
    e2 = math.exp(2 * h)  # sde-dpmsolver
    out = (a_t / a_s) * x - 2.0 * s_t * (e - 1) * D[0] + s_t * math.sqrt(e2 - 1.0) * xi
    if order == 2:
        out = out - 2.0 * (s_t * ((e - 1) / h - 1)) * D[1] if heun else out - s_t * (e - 1) * D[1]
    return out


def label(config: DPMConfig) -> str:
    """The sampler's usual name: "DPM++ 2M Karras", "DPM++ 2M SDE", "DPM++ 3M", "DPM-Solver 2M", …"""
    plus = config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++")
    base = ("DPM++ " if plus else "DPM-Solver ") + (
        "1" if config.solver_order == 1 else f"{config.solver_order}M"
    )
    if config.algorithm_type.startswith("sde"):
        base += " SDE"
    if config.solver_type == "heun" and config.solver_order > 1:
        base += " (heun)"
    spacing = {
        "use_karras_sigmas": " Karras",
        "use_exponential_sigmas": " exponential",
        "use_beta_sigmas": " beta",
    }
    base += spacing.get(respacing(config) or "", "")
    if config.use_lu_lambdas:
        base += " Lu"
    return base + (" (flow σ)" if config.use_flow_sigmas else "")
