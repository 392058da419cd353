"""UniPC (Zhao et al. 2023): diffusers' ``UniPCMultistepScheduler`` — bh1/bh2, orders 1–3, the corrector
and its ``disable_corrector``, ``lower_order_final``, flow sigmas (Wan 2.1's default).

The pipeline evaluates the network at the *predicted* state x^p_k; ``step`` first corrects it (UniC)
from the previous corrected state and the new output, at no extra call, then predicts the next state
(UniP) from the corrected one. With λ = log α − log σ, h = λ_t − λ_s0, hh = −h (x̂_0 form; ε form: h),
and the converted outputs m (x̂_0 by default, ``predict_x0``):

    (1)  r_k = (λ_{s_k} − λ_s0)/h,   D1_k = (m_k − m0)/r_k         for the p − 1 earlier outputs
    (2)  R = [r^(i−1)]_{i=1…p},   b_i = i! φ_{i+1}(hh)/B(h)
         (φ by the recursion φ_{k+1} = φ_k/hh − 1/(k+1)!; B(h) = hh (bh1) or e^{hh} − 1 (bh2))
    (3)  UniP:  x_t = (σ_t/σ_s0) x − α_t (e^{hh} − 1) m0 − α_t B(h) Σ_k ρ^p_k D1_k,
                ρ^p = ½ at order 2, else R[:−1, :−1]⁻¹ b[:−1]
    (4)  UniC:  x_t = (σ_t/σ_s0) x − α_t (e^{hh} − 1) m0 − α_t B(h) (Σ_k ρ^c_k D1_k + ρ^c_p (m_t − m0)),
                ρ^c = ½ at order 1, else R⁻¹ b;  x is the previous corrected state, m_t the new output

(ε form: α and σ exchanged). (3)–(4) are affine in the states and the outputs, so the predicted states —
the ones the network sees — form a banded recurrence (``samplers.trace``). The grid is ``set_timesteps``'s.
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
    stretch_to_terminal,
    time_shift,
)
from .trace import Trace


@dataclass(frozen=True)
class UniPCConfig(SamplerConfig):
    """The keys of a ``UniPCMultistepScheduler`` config; defaults are diffusers' own."""

    scheduler = "UniPCMultistepScheduler"
    nullable = ("sigma_min", "sigma_max", "shift_terminal", "solver_p")
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    solver_order: int = 2
    prediction_type: str = "epsilon"
    thresholding: bool = False
    predict_x0: bool = True
    solver_type: str = "bh2"
    lower_order_final: bool = True
    disable_corrector: tuple[int, ...] = ()
    solver_p: object | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = 1.0
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    final_sigmas_type: str = "zero"
    rescale_betas_zero_snr: bool = False
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"
    sigma_min: float | None = None
    sigma_max: float | None = None
    shift_terminal: float | None = None

    def validate(self) -> None:
        check_spacing(self.timestep_spacing)
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {self.prediction_type!r}")
        if not self.predict_x0 and self.prediction_type == "flow_prediction":
            raise self.refuse("predict_x0", False, "diffusers has no ε form of flow_prediction")
        if self.solver_order < 1:
            raise self.refuse("solver_order", self.solver_order)
        if self.solver_type not in ("bh1", "bh2"):
            raise self.refuse("solver_type", self.solver_type, "it is bh1 or bh2")
        if self.thresholding:
            raise self.refuse(
                "thresholding", True, "dynamic thresholding rescales x̂_0 by a per-sample quantile"
            )
        if self.solver_p is not None:
            raise self.refuse("solver_p", type(self.solver_p).__name__, "another scheduler as the predictor")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                f"final_sigmas_type must be 'zero' or 'sigma_min', got {self.final_sigmas_type!r}"
            )
        if self.final_sigmas_type == "zero":  # the last step lands on σ = 0, where h = λ_t − λ_s0 is infinite
            if not self.predict_x0:
                raise self.refuse(
                    "predict_x0", False, "its ε form divides by the final σ of zero (NaN in diffusers)"
                )
            if self.solver_type == "bh1":
                raise self.refuse(
                    "solver_type", "bh1", "B(h) = −h is infinite onto a final σ of zero (NaN in diffusers)"
                )
            if self.solver_order > 1 and not self.lower_order_final:
                raise self.refuse(
                    "lower_order_final",
                    False,
                    "a multistep last step onto a final σ of zero is singular in diffusers",
                )
        respacing(self)


def grid(config: UniPCConfig, steps: int, mu: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmas (T + 1,) float32, timesteps (T,) int64)`` after ``set_timesteps(steps, mu=mu)``."""
    n = config.num_train_timesteps
    check_steps(steps, n)
    if config.use_dynamic_shifting and mu is None:
        raise ValueError("use_dynamic_shifting=True needs mu (or the image sequence length to compute it)")
    spacing = config.timestep_spacing
    if spacing == "linspace":
        ts = np.linspace(0, n - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = n // (steps + 1)
        ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(
            np.int64
        ) + config.steps_offset
    else:
        ts = np.arange(n, 0, -n / steps).round().copy().astype(np.int64) - 1
    ac = alphas_cumprod(config, torch.float32)
    table = (((1 - ac) / ac) ** 0.5).numpy()
    log_sigmas = np.log(table)
    kind = respacing(config)
    if kind is not None:
        lo = config.sigma_min if config.sigma_min is not None else float(table[0])
        hi = config.sigma_max if config.sigma_max is not None else float(table[-1])
        sigmas = respace(kind, hi, lo, steps)
        if kind == "use_karras_sigmas" and config.use_flow_sigmas:
            sigmas = sigmas / (sigmas + 1)
            ts = (sigmas * n).copy()
        else:
            ts = np.array([sigma_to_t(s, log_sigmas) for s in sigmas])
            if kind == "use_karras_sigmas":
                ts = ts.round()
        final = float(sigmas[-1]) if config.final_sigmas_type == "sigma_min" else 0.0
    elif config.use_flow_sigmas:
        sigmas = np.linspace(1, 1 / n, steps + 1)[:-1]
        if config.use_dynamic_shifting:
            sigmas = time_shift(config.time_shift_type, mu, sigmas)
        else:
            sigmas = static_shift(config.flow_shift, sigmas)
        if config.shift_terminal:
            sigmas = stretch_to_terminal(config.shift_terminal, sigmas)
        if np.fabs(sigmas[0] - 1) < 1e-6:
            sigmas[0] -= 1e-6
        ts = (sigmas * n).copy()
        final = float(sigmas[-1]) if config.final_sigmas_type == "sigma_min" else 0.0
    else:
        sigmas = np.interp(ts, np.arange(0, len(table)), table)
        final = float(table[0]) if config.final_sigmas_type == "sigma_min" else 0.0
    sigma32 = np.concatenate([sigmas, [final]]).astype(np.float32)
    return sigma32, torch.from_numpy(np.asarray(ts)).to(torch.int64).numpy()


def build(
    config: UniPCConfig, steps: int, eta: float = 0.0, begin: int = 0, mu: float | None = None
) -> Schedule:
    """(1)–(4) in ``step``'s order for ``steps`` steps from step ``begin`` (img2img's start); η must be 0."""
    name = label(config)
    if eta != 0:
        raise ValueError(f"eta must be 0 for {name} (a deterministic sampler); got {eta!r}")
    sigma32, t = grid(config, steps, mu)
    s = sigma32.astype(np.float64)
    distinct(s[:-1], steps)
    if config.use_flow_sigmas:
        alpha, sigma = 1 - s, s
    else:
        alpha = 1 / np.sqrt(s**2 + 1)
        sigma = s * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)
    kind = "data" if config.predict_x0 else "noise"
    p = config.solver_order
    trace = Trace(steps - begin)
    x = trace.x_T
    ms: list[np.ndarray] = []
    last: np.ndarray | None = None
    order = 0  # this_order
    for k in range(begin, steps):
        m = evaluate(trace, kind, config.prediction_type, x, float(t[k]), alpha[k], sigma[k])
        if k > 0 and (k - 1) not in config.disable_corrector and last is not None:
            x = _update(ms + [m], k - 1, k, order, alpha, sigma, lam, last, config, corrector=True)  # (4)
        ms.append(m)
        order = min(p, steps - k) if config.lower_order_final else p
        order = min(order, len(ms))  # warm-up: lower_order_nums + 1
        last = x
        x = _update(ms, k, k + 1, order, alpha, sigma, lam, x, config, corrector=False)  # (3)
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
    ms: list[np.ndarray],
    k0: int,
    kt: int,
    order: int,
    alpha: np.ndarray,
    sigma: np.ndarray,
    lam: np.ndarray,
    x: np.ndarray,
    config: UniPCConfig,
    corrector: bool,
) -> np.ndarray:
    """(3) from the state at step k0 to k0 + 1 = kt with m0 = ``ms[-1]``; (4) from k0 to kt with m0 =
    ``ms[-2]`` and the new output ``ms[-1]`` (its earlier outputs end one further back)."""
    outputs = ms[:-1] if corrector else ms
    m0 = outputs[-1]
    h = lam[kt] - lam[k0]
    rks, D1s = [], []
    for i in range(1, order):  # (1)
        si = k0 - i
        rk = (lam[si] - lam[k0]) / h
        rks.append(rk)
        D1s.append((outputs[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h if config.predict_x0 else h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    B_h = hh if config.solver_type == "bh1" else math.expm1(hh)
    R, b = [], []
    for i in range(1, order + 1):  # (2)
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.stack(R), np.array(b)
    if config.predict_x0:
        scale_x, scale_m = sigma[kt] / sigma[k0], alpha[kt]
    else:
        scale_x, scale_m = alpha[kt] / alpha[k0], sigma[kt]
    out = scale_x * x - scale_m * h_phi_1 * m0
    if not corrector:
        if D1s:
            rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            out = out - scale_m * B_h * sum(r * d for r, d in zip(rhos, D1s, strict=True))
        return out
    rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
    corr = sum((r * d for r, d in zip(rhos[:-1], D1s, strict=True)), np.zeros_like(x))
    return out - scale_m * B_h * (corr + rhos[-1] * (ms[-1] - m0))


def label(config: UniPCConfig) -> str:
    """ "UniPC", "UniPC bh1 3rd order", "UniPC Karras (flow σ)", …"""
    name = "UniPC" + (" bh1" if config.solver_type == "bh1" else "")
    if config.solver_order != 2:
        name += f" order {config.solver_order}"
    spacing = {
        "use_karras_sigmas": " Karras",
        "use_exponential_sigmas": " exponential",
        "use_beta_sigmas": " beta",
    }
    name += spacing.get(respacing(config) or "", "")
    if config.disable_corrector:
        name += " (corrector off at " + ",".join(str(i) for i in config.disable_corrector) + ")"
    return name + (" (flow σ)" if config.use_flow_sigmas else "")
