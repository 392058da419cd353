"""Euler and DPM-Solver++ (1S/2M) coefficients: diffusers' ``EulerDiscreteScheduler`` and
``DPMSolverMultistepScheduler`` as one lower-triangular recurrence.

Both schedulers walk a grid of noise levels s_T > … > s_1 > s_0 (s = √((1 − ᾱ)/ᾱ), k-diffusion's σ;
s_0 is 0 or σ_min, ``final_sigmas_type``), with x̂_0 the data the network predicts. paratta keeps the
state in the VP latent space, x = x_euler / √(s² + 1) (DPM-Solver works there already), so the
network receives the state as it is (Euler's ``scale_model_input``), the tolerances are in the same
latent units as DDIM's (x_0 alone is in Euler's scale, x_vp/α_0, as the pipeline returns it: the same
when s_0 = 0), and with α_i = 1/√(s_i² + 1), σ_i = s_i α_i (index i = 0 the last step):

    (1)  m = x̂_0(x, o) at step i's input x = x_{i+1}, network output o:
             ε: (x − σ_{i+1} o)/α_{i+1}      v: α_{i+1} x − σ_{i+1} o      sample: o
    (2)  first order (Euler, DPM-Solver++ 1):
             x_i = (σ_i/σ_{i+1}) x_{i+1} + α_i φ_i m_i,      φ_i = 1 − s_i/s_{i+1}
    (3)  DPM-Solver++ 2M, midpoint:
             x_i = (σ_i/σ_{i+1}) x_{i+1} + α_i φ_i (1 + 1/(2ρ_i)) m_i − α_i φ_i/(2ρ_i) m_{i+1}
         heun: α_i φ_i/(2ρ_i) replaced by ψ_i/ρ_i, ψ_i = α_i (1 − φ_i/h_i); with h_i = log(s_{i+1}/s_i)
         (= λ_i − λ_{i+1}), ρ_i = h_{i+1}/h_i, m_i = x̂_0 at x_{i+1} and m_{i+1} = x̂_0 at x_{i+2}.

Euler's step x_e ← x_e + (s_i − s_{i+1})(x_e − x̂_0)/s_{i+1}, mapped into VP space, is (2) exactly (so
Euler on these grids is first-order DPM-Solver++, as DDIM is). Every step reads only noisier states;
(3) reads two (x_{i+1} and x_{i+2}), through the network outputs both rows of a window already have.
The step is written x_i = a_i x_{i+1} + d_i with a_i the coefficient of x_{i+1} when the network output
is held fixed (DDIM's convention, ``paratta.schedule``) and

    (4)  d_i = q_i (m_i − c_{i+1} x_{i+1}) + r_i m_{i+1},     c = ∂x̂_0/∂x: ε 1/α, v α, sample 0

(q_i, r_i the coefficients of m_i, m_{i+1} in (2)/(3)): ``increment`` is the first term, ``second``
holds r_i and ``denoised`` gives m. First order on the first step, and on the last as diffusers' step
decides (``lower_order_final`` below 15 steps, ``euler_at_final``, ``final_sigmas_type="zero"``).

The grids are ``set_timesteps``'s, in the same dtypes: float32 ᾱ and σ tables, numpy float64 for the
spacing and the σ → t interpolation, the final table rounded to float32; Euler feeds the network
fractional timesteps (float32), DPM-Solver integer ones. Refused by name (``validate``): stochastic
variants (``sde-*``), DPM-Solver (ε form), order 3, thresholding, Lu / beta / flow sigmas, Euler's
log-linear interpolation and continuous v-timesteps — ``paratta.models.diffusers.base`` samples a
pipeline that has one with DDIM on its noise schedule, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .flow import config_fields
from .noise import betas

EULER_SCHEDULER = "EulerDiscreteScheduler"
DPM_SCHEDULER = "DPMSolverMultistepScheduler"
PREDICTIONS = ("epsilon", "v_prediction", "sample")
_OPTIONAL = ("sigma_min", "sigma_max", "variance_type")


@dataclass(frozen=True)
class MultistepSchedulerConfig:
    """The keys of an ``EulerDiscreteScheduler`` or ``DPMSolverMultistepScheduler`` config that define
    the sampler; ``kind`` is the class. Defaults are diffusers' own (the classes agree on shared keys)."""

    kind: str = EULER_SCHEDULER
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    final_sigmas_type: str = "zero"
    # EulerDiscreteScheduler only
    sigma_min: float | None = None
    sigma_max: float | None = None
    interpolation_type: str = "linear"
    timestep_type: str = "discrete"
    # DPMSolverMultistepScheduler only
    solver_order: int = 2
    algorithm_type: str = "dpmsolver++"
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    thresholding: bool = False
    use_lu_lambdas: bool = False
    use_flow_sigmas: bool = False
    lambda_min_clipped: float = -math.inf
    variance_type: str | None = None
    use_dynamic_shifting: bool = False

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> MultistepSchedulerConfig:
        """Read a diffusers config dict of either class (``_class_name``); other keys are ignored."""
        kwargs = config_fields(cls, config, nullable=_OPTIONAL)
        kwargs["kind"] = dict(config).get("_class_name") or EULER_SCHEDULER
        if kwargs.get("trained_betas") is not None:
            kwargs["trained_betas"] = tuple(float(b) for b in kwargs["trained_betas"])
        out = cls(**kwargs)
        out.validate()
        return out

    def validate(self) -> None:
        """``ValueError`` naming the key for anything that is not a deterministic sampler of form (2)–(3)."""
        refusals = {
            "use_beta_sigmas": self.use_beta_sigmas,
            "use_lu_lambdas": self.use_lu_lambdas and self.kind == DPM_SCHEDULER,
            "use_flow_sigmas": self.use_flow_sigmas and self.kind == DPM_SCHEDULER,
            "use_dynamic_shifting": self.use_dynamic_shifting and self.kind == DPM_SCHEDULER,
            "thresholding": self.thresholding and self.kind == DPM_SCHEDULER,
        }
        for key, on in refusals.items():
            if on:
                raise ValueError(f"{self.kind} with {key}=True is not supported by paratta")
        if self.kind not in (EULER_SCHEDULER, DPM_SCHEDULER):
            raise ValueError(f"scheduler {self.kind!r} is not {EULER_SCHEDULER} or {DPM_SCHEDULER}")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {self.prediction_type!r}")
        if self.use_karras_sigmas and self.use_exponential_sigmas:
            raise ValueError("only one of use_karras_sigmas, use_exponential_sigmas can be set")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                f"final_sigmas_type must be 'zero' or 'sigma_min', got {self.final_sigmas_type!r}"
            )
        if self.timestep_spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(f"timestep_spacing {self.timestep_spacing!r} is not one diffusers defines")
        if self.kind == EULER_SCHEDULER:
            if self.interpolation_type != "linear":
                raise ValueError(
                    f"{self.kind} with interpolation_type={self.interpolation_type!r} is not supported"
                )
            if self.timestep_type == "continuous" and self.prediction_type == "v_prediction":
                raise ValueError(f"{self.kind} with continuous v-prediction timesteps is not supported")
            return
        if self.algorithm_type != "dpmsolver++":
            raise ValueError(
                f"{self.kind} with algorithm_type={self.algorithm_type!r} is not supported: paratta solves "
                "the deterministic dpmsolver++ (sde-* variants draw fresh noise inside each step)"
            )
        if self.solver_order not in (1, 2):
            raise ValueError(f"{self.kind} with solver_order={self.solver_order} is not supported (1 or 2)")
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"{self.kind} with solver_type={self.solver_type!r} is not supported")
        if self.variance_type is not None:
            raise ValueError(f"{self.kind} with variance_type={self.variance_type!r} is not supported")


def _alphas_cumprod32(config: MultistepSchedulerConfig) -> Tensor:
    """ᾱ as both schedulers' ``__init__`` computes it: float32 betas and cumulative product."""
    ac = torch.cumprod(1.0 - betas(config, torch.float32), 0)
    if config.rescale_betas_zero_snr:
        ac[-1] = 2**-24  # diffusers: close to 0 without being 0, so the first σ is finite
    return ac


def _sigma_to_t(sigma: float, log_sigmas: np.ndarray) -> float:
    """diffusers' σ → t: linear interpolation of log σ between the two training steps around it."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigma))


def _respace(config: MultistepSchedulerConfig, sigmas: np.ndarray, steps: int) -> np.ndarray:
    """Karras (ρ = 7) or exponential spacing between the grid's end points (Euler: or σ_min/σ_max)."""
    euler = config.kind == EULER_SCHEDULER
    lo = config.sigma_min if euler and config.sigma_min is not None else sigmas[-1].item()
    hi = config.sigma_max if euler and config.sigma_max is not None else sigmas[0].item()
    if config.use_karras_sigmas:
        ramp = np.linspace(0, 1, steps)
        return (hi ** (1 / 7.0) + ramp * (lo ** (1 / 7.0) - hi ** (1 / 7.0))) ** 7.0
    return np.exp(np.linspace(math.log(hi), math.log(lo), steps))


def multistep_grid(config: MultistepSchedulerConfig, steps: int) -> tuple[Tensor, Tensor, float]:
    """diffusers' ``(sigmas, timesteps, init_noise_sigma)`` after ``set_timesteps(steps)``.

    σ (T + 1, float32, the appended final value last) and t (T,) noisiest first; t is float32 for Euler,
    int64 for DPM-Solver.
    """
    n = config.num_train_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= n:
        raise ValueError(f"steps must be in [1, {n}] for this scheduler, got {steps!r}")
    ac = _alphas_cumprod32(config)
    table = (((1 - ac) / ac) ** 0.5).numpy()  # float32, as diffusers' np.array of the same tensor
    log_sigmas = np.log(table)
    euler = config.kind == EULER_SCHEDULER
    spacing = config.timestep_spacing
    if euler:
        if spacing == "linspace":
            ts = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            ts = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(np.float32)
            ts += config.steps_offset
        else:
            ts = np.arange(n, 0, -n / steps).round().copy().astype(np.float32) - 1
        sigmas = np.interp(ts, np.arange(0, len(table)), table)
        if config.use_karras_sigmas or config.use_exponential_sigmas:
            sigmas = _respace(config, sigmas, steps)
            ts = np.array([_sigma_to_t(s, log_sigmas) for s in sigmas])
    else:
        lambdas = torch.log(ac.sqrt()) - torch.log((1 - ac).sqrt())
        clipped = int(torch.searchsorted(torch.flip(lambdas, [0]), config.lambda_min_clipped))
        last = n - clipped
        if spacing == "linspace":
            ts = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = last // (steps + 1)
            ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
            ts += config.steps_offset
        else:
            ts = np.arange(last, 0, -n / steps).round().copy().astype(np.int64) - 1
        if config.use_karras_sigmas or config.use_exponential_sigmas:
            sigmas = _respace(config, np.flip(table).copy(), steps)
            ts = np.array([_sigma_to_t(s, log_sigmas) for s in sigmas])
            if config.use_karras_sigmas and config.beta_schedule != "squaredcos_cap_v2":
                ts = ts.round()
        else:
            sigmas = np.interp(ts, np.arange(0, len(table)), table)
    if len(ts) != steps:
        raise ValueError(f"{config.kind} gives {len(ts)} timesteps for steps = {steps} with this config")
    final = float(((1 - ac[0]) / ac[0]) ** 0.5) if config.final_sigmas_type == "sigma_min" else 0.0
    sigma32 = torch.from_numpy(np.concatenate([sigmas, [final]]).astype(np.float32))
    t = torch.from_numpy(ts.astype(np.float32)) if euler else torch.from_numpy(ts).to(torch.int64)
    top = sigma32.max()
    init = float(top) if not euler or spacing in ("linspace", "trailing") else float((top**2 + 1) ** 0.5)
    return sigma32, t, init if euler else 1.0  # DPM-Solver: init_noise_sigma = 1


def _second_order_steps(config: MultistepSchedulerConfig, steps: int) -> Tensor:
    """(T,) bool: step i uses (3). diffusers' ``step``: first order on its first call, on its last when
    ``euler_at_final``, ``lower_order_final`` below 15 steps or a final σ of zero; Euler never."""
    second = torch.zeros(steps, dtype=torch.bool)
    if config.kind == DPM_SCHEDULER and config.solver_order == 2:
        second[: steps - 1] = True  # index T−1 is the first step
        final_first_order = (
            config.euler_at_final
            or (config.lower_order_final and steps < 15)
            or config.final_sigmas_type == "zero"
        )
        if final_first_order:
            second[0] = False
    return second


@dataclass(frozen=True)
class MultistepCoefficients:
    """Per-step coefficients of (2)–(4), indexed i = 0…T−1 with i = 0 the least noisy step.

    ``s`` holds s_0…s_T (float64 copies of diffusers' float32 σ); ``timesteps`` the t fed to the network
    for step i (diffusers' dtype); ``p``, ``q``, ``second`` the coefficients of x_{i+1}, m_i and m_{i+1}
    in the step, ``a`` the linear coefficient (network output held fixed).
    """

    timesteps: Tensor  # (T,)
    s: Tensor  # (T+1,)
    p: Tensor  # (T,) σ_i / σ_{i+1}
    q: Tensor  # (T,) coefficient of m_i = x̂_0(x_{i+1})
    second: Tensor  # (T,) r_i, coefficient of m_{i+1} = x̂_0(x_{i+2}); 0 on first-order steps
    a: Tensor  # (T,)
    prediction_type: str
    init_scale: float  # x_T = latents · init_scale: init_noise_sigma carried into VP space
    name: str  # "Euler", "DPM++ 2M Karras", … for summaries

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def alpha(self) -> Tensor:
        """(T+1,) α_i = 1/√(s_i² + 1)."""
        return 1 / (self.s**2 + 1).sqrt()

    @property
    def noise(self) -> Tensor:
        """σ_i = s_i α_i: the VP noise level of x_i, the state step i lands on (the per-step rule's σ_i)."""
        return (self.s * self.alpha)[:-1]

    @property
    def input_noise(self) -> Tensor:
        """The VP noise level of x_{i+1}, where step i evaluates the network."""
        return (self.s * self.alpha)[1:]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> MultistepCoefficients:
        moved = {
            f.name: getattr(self, f.name).to(device=device, dtype=dtype)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor) and f.name != "timesteps"
        }
        return replace(self, timesteps=self.timesteps.to(device), **moved)

    def _view(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view((-1,) + (1,) * (x.dim() - 1))

    def denoised(self, i: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """m = x̂_0 (1) at step i's input ``x`` = x_{i+1} from the network output ``out`` (batched)."""
        alpha, sigma = self._view(self.alpha[i + 1], x), self._view((self.s * self.alpha)[i + 1], x)
        if self.prediction_type == "epsilon":
            return (x - sigma * out) / alpha
        if self.prediction_type == "v_prediction":
            return alpha * x - sigma * out
        return out

    def increment(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """The first term of (4), q_i (m_i − c_{i+1} x_{i+1}): the part of d_i that reads step i's own row."""
        alpha, sigma = self._view(self.alpha[i + 1], x), self._view((self.s * self.alpha)[i + 1], x)
        if self.prediction_type == "epsilon":
            network = -sigma / alpha * out
        elif self.prediction_type == "v_prediction":
            network = -sigma * out
        else:
            network = out
        return self._view(self.q[i], x) * network

    def step(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """The terms of x_i (2)/(3) that read x_{i+1} = ``x`` and its output ``out``; the caller adds
        r_i m_{i+1} (``second``, ``denoised`` of the row above) where r_i ≠ 0."""
        return self._view(self.p[i], x) * x + self._view(self.q[i], x) * self.denoised(i, x, out)

    def jump(self, i: Tensor, x: Tensor, out: Tensor, level: Tensor) -> Tensor:
        """The state at VP noise level ``level`` from step i's prediction: √(1 − level²) x̂_0 + level ε̂."""
        alpha, sigma = self._view(self.alpha[i + 1], x), self._view((self.s * self.alpha)[i + 1], x)
        x0 = self.denoised(i, x, out)
        eps = (x - alpha * x0) / sigma
        return (1 - level**2).clamp_min(0).sqrt() * x0 + level * eps


def multistep_name(config: MultistepSchedulerConfig) -> str:
    """The sampler's usual name: "Euler", "Euler Karras", "DPM++ 2M", "DPM++ 2M Karras", …"""
    base = "Euler" if config.kind == EULER_SCHEDULER else f"DPM++ {config.solver_order}M"
    if config.kind == DPM_SCHEDULER and config.solver_order == 1:
        base = "DPM++ 1"
    if config.kind == DPM_SCHEDULER and config.solver_type == "heun" and config.solver_order == 2:
        base += " (heun)"
    spacing = (
        " Karras" if config.use_karras_sigmas else " exponential" if config.use_exponential_sigmas else ""
    )
    return base + spacing


def multistep_coefficients(
    config: MultistepSchedulerConfig, num_steps: int, eta: float = 0.0
) -> MultistepCoefficients:
    """The coefficients of (2)–(4) for ``num_steps`` steps on ``set_timesteps``'s grid; η must be 0."""
    if eta != 0:
        raise ValueError(f"eta must be 0 for {multistep_name(config)} (a deterministic sampler); got {eta!r}")
    sigma32, t, init = multistep_grid(config, num_steps)
    s = sigma32.flip(0).to(torch.float64)  # s_0 … s_T
    alpha = 1 / (s**2 + 1).sqrt()
    vp = s * alpha
    p = vp[:-1] / vp[1:]
    phi = 1 - s[:-1] / s[1:]  # 1 − e^{−h_i}
    q = alpha[:-1] * phi
    r = torch.zeros(num_steps, dtype=torch.float64)
    second = _second_order_steps(config, num_steps)
    if bool(second.any()):
        idx = second.nonzero()[:, 0]
        h = torch.log(s[idx + 1] / s[idx])
        h0 = torch.log(s[idx + 2] / s[idx + 1])
        rho = h0 / h
        if config.solver_type == "midpoint":
            half = alpha[idx] * phi[idx] / (2 * rho)
            q[idx], r[idx] = q[idx] + half, -half
        else:
            psi = alpha[idx] * (1 - phi[idx] / h) / rho
            q[idx], r[idx] = q[idx] + psi, -psi
    if (
        config.kind == EULER_SCHEDULER
    ):  # x_0 is what the pipeline returns: Euler's scale, 1/α_0 (1 when s_0 = 0)
        p[0], q[0] = p[0] / alpha[0], q[0] / alpha[0]
    slope = {"epsilon": 1 / alpha[1:], "v_prediction": alpha[1:], "sample": torch.zeros_like(p)}
    a = p + q * slope[config.prediction_type]
    return MultistepCoefficients(
        timesteps=t.flip(0).contiguous(),
        s=s.contiguous(),
        p=p,
        q=q,
        second=r,
        a=a,
        prediction_type=config.prediction_type,
        init_scale=init * float(alpha[-1]) if config.kind == EULER_SCHEDULER else 1.0,
        name=multistep_name(config),
    )


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """ᾱ at timesteps ``t``: the table for integer t; for fractional t (Euler's), the inverse of
    diffusers' σ → t map, log σ linear between the two training steps around t."""
    if not torch.is_floating_point(t):
        return alphas_cumprod[t]
    ac = alphas_cumprod.double()
    log_sigma = ((1 - ac) / ac).sqrt().log()
    tt = t.double().clamp(0, ac.shape[0] - 1)
    low = tt.floor().long().clamp_max(ac.shape[0] - 2)
    w = tt - low
    ls = (1 - w) * log_sigma[low] + w * log_sigma[low + 1]
    return (1 / (1 + (2 * ls).exp())).to(alphas_cumprod.dtype)
