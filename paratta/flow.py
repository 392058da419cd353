"""Flow-matching Euler coefficients: diffusers' ``FlowMatchEulerDiscreteScheduler`` as an affine recurrence.

Rectified flow (Stable Diffusion 3, Flux): x_σ = (1 − σ) x_0 + σ ε, σ from 1 (noise) to 0 (data);
the network predicts the velocity v = ε − x_0. ``FlowMatchEulerDiscreteScheduler.step`` is one
Euler step on the grid σ_T > … > σ_1 > σ_0 = 0 (index i = 0 is the last step, as everywhere in
paratta; diffusers lists the grid noisiest first):

    (1)  x_i = x_{i+1} + (σ_i − σ_{i+1}) · v_θ(x_{i+1}, t_i),      t_i = σ_{i+1} · N

with N = ``num_train_timesteps``. So a_i = 1 and d_i = (σ_i − σ_{i+1}) · v: the triangular system of
``paratta.system`` with unit products. ``FlowCoefficients`` has the interface of the DDIM
``Coefficients`` (``paratta.schedule``), so the samplers never ask which family they solve.

The grid is ``set_timesteps``'s, operation for operation and in the same dtypes (float32 where
diffusers rounds to float32: its ``__init__`` range, custom ``sigmas``, the final table), so σ and t
equal the scheduler's exactly:

    (2)  σ ← linspace(σ_max N, σ_min N, T) / N        (or the pipeline's custom sigmas, e.g. Flux's)
    (3)  σ ← s σ / (1 + (s − 1) σ)                     static shift s
         σ ← e^μ / (e^μ + (1/σ − 1))                   dynamic shifting ("exponential"; "linear": μ in
                                                       place of e^μ), μ from the image sequence length (4)
    (4)  μ = m · L + b,  m = (max_shift − base_shift) / (max_seq − base_seq),  b = base_shift − m · base_seq
    (5)  σ ← 1 − (1 − σ) (1 − shift_terminal) / (1 − σ_last)      when ``shift_terminal`` is set
    (6)  Karras, exponential or beta spacing of [σ_last, σ_first] when set; then t = σ N, σ_0 = 0
         appended (``invert_sigmas``: σ ← 1 − σ, t = σ N, 1 appended).

The stochastic variant (``stochastic_sampling=True``: x_i = (1 − σ_i) x̂_0 + σ_i ξ with fresh noise)
is refused: paratta solves the deterministic sampler, so η must be 0.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"
TIME_SHIFT_TYPES = ("exponential", "linear")
SPACINGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")  # (6), at most one
_OPTIONAL = ("base_shift", "max_shift", "shift_terminal")  # None is a meaningful value for these


def config_fields(cls: type, config: Mapping[str, Any], nullable: Collection[str] = ()) -> dict[str, Any]:
    """The entries of a diffusers scheduler config that are fields of the dataclass ``cls``.

    Keys of other scheduler classes are dropped, and so is a None value (diffusers writes None for
    "unset", which the field's default stands for) unless its key is in ``nullable``.
    """
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(config).items() if k in names and (v is not None or k in nullable)}


@dataclass(frozen=True)
class FlowSchedulerConfig:
    """The keys of a diffusers ``FlowMatchEulerDiscreteScheduler`` config; defaults are diffusers' own."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: str = "exponential"
    stochastic_sampling: bool = False

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> FlowSchedulerConfig:
        """Read a scheduler config dict (keys of other schedulers are ignored) and validate it."""
        out = cls(**config_fields(cls, config, nullable=_OPTIONAL))
        out.validate()
        return out

    def validate(self) -> None:
        if self.stochastic_sampling:
            raise ValueError(
                f"{FLOW_SCHEDULER} with stochastic_sampling=True draws fresh noise inside every step; "
                "paratta solves the deterministic Euler sampler only (stochastic_sampling=False)"
            )
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.time_shift_type not in TIME_SHIFT_TYPES:
            raise ValueError(
                f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {self.time_shift_type!r}"
            )
        spacings = [n for n in SPACINGS if getattr(self, n)]
        if len(spacings) > 1:
            raise ValueError(f"only one of {', '.join(spacings)} can be set")
        if self.shift_terminal is not None and not 0 <= self.shift_terminal < 1:
            raise ValueError(f"shift_terminal must be in [0, 1), got {self.shift_terminal}")


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """μ of (4): linear in the image's token count, as the SD3 and Flux pipelines compute it."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def shift_for(config: FlowSchedulerConfig, image_seq_len: int) -> float:
    """μ for an image of ``image_seq_len`` tokens, from the config's base/max shifts and lengths (4)."""
    if config.base_shift is None or config.max_shift is None:
        raise ValueError("use_dynamic_shifting needs base_shift and max_shift in the scheduler config")
    return calculate_shift(
        image_seq_len,
        config.base_image_seq_len,
        config.max_image_seq_len,
        config.base_shift,
        config.max_shift,
    )


def _initial_range(config: FlowSchedulerConfig) -> tuple[float, float]:
    """(σ_max, σ_min) as ``__init__`` leaves them: the float32 training grid, statically shifted (3)."""
    n = config.num_train_timesteps
    t = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()).to(torch.float32)
    sigmas = t / n
    if not config.use_dynamic_shifting:
        sigmas = config.shift * sigmas / (1 + (config.shift - 1) * sigmas)
    return sigmas[0].item(), sigmas[-1].item()


def _respace(config: FlowSchedulerConfig, sigmas: np.ndarray, steps: int) -> np.ndarray:
    """(6): Karras (ρ = 7), exponential or beta (α = β = 0.6) spacing between the grid's end points."""
    hi, lo = sigmas[0].item(), sigmas[-1].item()
    if config.use_karras_sigmas:
        rho = 7.0
        ramp = np.linspace(0, 1, steps)
        return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    if config.use_exponential_sigmas:
        return np.exp(np.linspace(math.log(hi), math.log(lo), steps))
    try:
        import scipy.stats
    except ImportError:
        raise ValueError("use_beta_sigmas=True needs scipy (as diffusers does)") from None
    ppf = [scipy.stats.beta.ppf(u, 0.6, 0.6) for u in 1 - np.linspace(0, 1, steps)]
    return np.array([lo + p * (hi - lo) for p in ppf])


def flow_sigmas(
    config: FlowSchedulerConfig, steps: int, sigmas: Sequence[float] | None = None, mu: float | None = None
) -> tuple[Tensor, Tensor]:
    """diffusers' ``(scheduler.sigmas, scheduler.timesteps)`` after ``set_timesteps(steps, sigmas=…, mu=…)``.

    Both float32 and noisiest first; ``sigmas`` has T + 1 entries (the appended terminal value).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if config.use_dynamic_shifting and mu is None:
        raise ValueError("use_dynamic_shifting=True needs mu (or the image sequence length to compute it)")
    n = config.num_train_timesteps
    if sigmas is None:  # (2)
        sigma_max, sigma_min = _initial_range(config)
        s = np.linspace(sigma_max * n, sigma_min * n, steps) / n
    else:
        s = np.array(sigmas).astype(np.float32)
        if s.shape != (steps,):
            raise ValueError(f"custom sigmas must be {steps} numbers, got shape {s.shape}")
    # (3); the expressions and their order are diffusers', so float32 inputs round as they do there
    if config.use_dynamic_shifting:
        e = math.exp(mu) if config.time_shift_type == "exponential" else mu
        s = e / (e + (1 / s - 1) ** 1.0)
    else:
        s = config.shift * s / (1 + (config.shift - 1) * s)
    if config.shift_terminal:  # (5)
        one_minus = 1 - s
        with np.errstate(divide="ignore", invalid="ignore"):  # refused below when it is not finite
            s = 1 - (one_minus / (one_minus[-1] / (1 - config.shift_terminal)))
    if any(getattr(config, name) for name in SPACINGS):
        s = _respace(config, s, steps)
    table = torch.from_numpy(s).to(dtype=torch.float32)
    if not torch.isfinite(table).all():  # e.g. shift_terminal with T = 1 divides by 1 − σ_last = 0
        raise ValueError(f"this scheduler config gives non-finite sigmas for T = {steps}: {table.tolist()}")
    timesteps = table * n
    if config.invert_sigmas:
        table = 1.0 - table
        timesteps = table * n
        return torch.cat([table, torch.ones(1)]), timesteps
    return torch.cat([table, torch.zeros(1)]), timesteps


@dataclass(frozen=True)
class FlowCoefficients:
    """Per-step flow-matching Euler coefficients, indexed i = 0…T−1 with i = 0 the least noisy step.

    Step i maps x_{i+1} (at σ_{i+1}) to x_i (at σ_i) by (1). ``sigmas`` holds σ_0…σ_T (float64 copies of
    diffusers' float32 values, so every Δσ is exact), ``timesteps`` the t_i fed to the network (float32,
    as diffusers feeds them).
    """

    timesteps: Tensor  # (T,) t_i = σ_{i+1} N, float32
    sigmas: Tensor  # (T+1,) σ_i, σ_0 the appended terminal value
    a: Tensor  # (T,) ones: the Euler step adds to x_{i+1}
    inverted: bool  # invert_sigmas: the scheduler's σ is 1 − the noise level

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def noise(self) -> Tensor:
        """The noise level of x_i, the state step i lands on (0 for x_0): the per-step rule's σ_i."""
        levels = self.sigmas[:-1]
        return 1 - levels if self.inverted else levels

    @property
    def input_noise(self) -> Tensor:
        """The noise level of x_{i+1}, where step i evaluates the network."""
        levels = self.sigmas[1:]
        return 1 - levels if self.inverted else levels

    def to(self, device: torch.device | str, dtype: torch.dtype) -> FlowCoefficients:
        return replace(
            self,
            timesteps=self.timesteps.to(device),
            sigmas=self.sigmas.to(device=device, dtype=dtype),
            a=self.a.to(device=device, dtype=dtype),
        )

    init_scale = 1.0  # x_T = the drawn latents

    @property
    def second(self) -> Tensor:
        """r_i: the Euler step reads one row, x_{i+1}."""
        return torch.zeros_like(self.a)

    def _view(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view((-1,) + (1,) * (x.dim() - 1))

    def denoised(self, i: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """x̂_0 = x − n v at step i's input, n its noise level."""
        return x - self._view(self.input_noise[i], x) * out

    def increment(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """d_i = (σ_i − σ_{i+1}) v for velocities ``out`` at states ``x`` = x_{i+1}, batched over ``i``."""
        return self._view(self.sigmas[i] - self.sigmas[i + 1], x) * out

    def step(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """x_i by (1), batched over indices ``i`` (``xi`` is unused: the sampler is deterministic)."""
        return x + self.increment(i, x, out, xi)

    def jump(self, i: Tensor, x: Tensor, out: Tensor, level: Tensor) -> Tensor:
        """The state at noise level ``level`` by the straight line through step i's prediction:
        x + (σ − σ_{i+1}) v, i.e. (1 − σ) x̂_0 + σ ε̂ with x̂_0 = x − σ_{i+1} v, ε̂ = x + (1 − σ_{i+1}) v."""
        target = 1 - level if self.inverted else level
        return x + self._view(target - self.sigmas[i + 1], x) * out


def flow_coefficients(
    config: FlowSchedulerConfig,
    num_steps: int,
    eta: float = 0.0,
    *,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
    image_seq_len: int | None = None,
) -> FlowCoefficients:
    """Flow-matching Euler coefficients for ``num_steps`` steps: the grid of ``set_timesteps`` (2)–(6).

    ``sigmas`` and ``mu`` are what a pipeline passes to ``set_timesteps``; with dynamic shifting and
    no ``mu``, μ is computed from ``image_seq_len`` (4) as the SD3 and Flux pipelines do. η must be 0.
    """
    if eta != 0:
        raise ValueError(
            f"eta must be 0 for flow-matching Euler sampling ({FLOW_SCHEDULER} is deterministic); got {eta!r}"
        )
    if config.use_dynamic_shifting and mu is None:
        if image_seq_len is None:
            raise ValueError("use_dynamic_shifting=True needs mu or the image sequence length")
        mu = shift_for(config, image_seq_len)
    table, timesteps = flow_sigmas(config, num_steps, sigmas, mu)
    return FlowCoefficients(
        timesteps=timesteps.flip(0).contiguous(),
        sigmas=table.flip(0).to(torch.float64).contiguous(),
        a=torch.ones(num_steps, dtype=torch.float64),
        inverted=bool(config.invert_sigmas),
    )
