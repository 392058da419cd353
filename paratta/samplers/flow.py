"""Flow-matching Euler: diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3, Flux, Wan's alternative).

Rectified flow: x_σ = (1 − σ) x_0 + σ ε, σ from 1 (noise) to 0; the network predicts the velocity
v = ε − x_0 at t = σ N. One step on the grid σ_T > … > σ_0:

    (1)  x_i = x_{i+1} + (σ_i − σ_{i+1}) v(x_{i+1}, t_i),        t_i = σ_{i+1} N
    (1') stochastic_sampling: x_i = (1 − σ_i) x̂_0 + σ_i ξ_i,   x̂_0 = x_{i+1} − σ_{i+1} v  (a fresh ξ per step)

The grid is ``set_timesteps``'s, operation for operation and in the same dtypes (float32 where
diffusers rounds to float32), so σ and t equal the scheduler's exactly:

    (2)  σ ← linspace(σ_max N, σ_min N, T) / N        (or the pipeline's custom sigmas, e.g. Flux's)
    (3)  σ ← s σ / (1 + (s − 1) σ)                     static shift s; with dynamic shifting
         σ ← e^μ / (e^μ + (1/σ − 1))                   ("linear": μ in place of e^μ), μ from the image's
                                                       token count (``grids.calculate_shift``)
    (4)  σ ← 1 − (1 − σ)(1 − shift_terminal)/(1 − σ_last)      when ``shift_terminal`` is set
    (5)  Karras, exponential or beta spacing of [σ_last, σ_first] when set; then t = σ N and σ_0 = 0
         appended (``invert_sigmas``: σ ← 1 − σ, t = σ N, 1 appended).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from paratta.schedule import Schedule

from .base import SamplerConfig, evaluate, schedule
from .grids import respace, respacing, static_shift, stretch_to_terminal, time_shift
from .trace import Trace

TIME_SHIFT_TYPES = ("exponential", "linear")


@dataclass(frozen=True)
class FlowEulerConfig(SamplerConfig):
    """The keys of a ``FlowMatchEulerDiscreteScheduler`` config; defaults are diffusers' own."""

    scheduler = "FlowMatchEulerDiscreteScheduler"
    nullable = ("base_shift", "max_shift", "shift_terminal")
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

    def validate(self) -> None:
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.time_shift_type not in TIME_SHIFT_TYPES:
            raise ValueError(
                f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {self.time_shift_type!r}"
            )
        respacing(self)
        if self.shift_terminal is not None and not 0 <= self.shift_terminal < 1:
            raise ValueError(f"shift_terminal must be in [0, 1), got {self.shift_terminal}")


def _initial_range(config: FlowEulerConfig) -> tuple[float, float]:
    """(σ_max, σ_min) as ``__init__`` leaves them: the float32 training grid, statically shifted (3)."""
    n = config.num_train_timesteps
    sigmas = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()) / n
    if not config.use_dynamic_shifting:
        sigmas = config.shift * sigmas / (1 + (config.shift - 1) * sigmas)
    return sigmas[0].item(), sigmas[-1].item()


def grid(
    config: FlowEulerConfig, steps: int, sigmas: Sequence[float] | None = None, mu: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scheduler.sigmas, scheduler.timesteps)`` after ``set_timesteps(steps, sigmas=sigmas, mu=mu)``:
    float32, noisiest first, σ with T + 1 entries."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if config.use_dynamic_shifting and mu is None:
        raise ValueError("use_dynamic_shifting=True needs mu (or the image sequence length to compute it)")
    n = config.num_train_timesteps
    if sigmas is None:  # (2)
        hi, lo = _initial_range(config)
        s = np.linspace(hi * n, lo * n, steps) / n
    else:
        s = np.array(sigmas).astype(np.float32)
        if s.shape != (steps,):
            raise ValueError(f"custom sigmas must be {steps} numbers, got shape {s.shape}")
    if config.use_dynamic_shifting:  # (3)
        s = time_shift(config.time_shift_type, mu, s)
    else:
        s = static_shift(config.shift, s)
    if config.shift_terminal:  # (4)
        s = stretch_to_terminal(config.shift_terminal, s)
    if (kind := respacing(config)) is not None:  # (5)
        s = respace(kind, s[0].item(), s[-1].item(), steps)
    table = torch.from_numpy(s).to(dtype=torch.float32)
    if not torch.isfinite(table).all():  # e.g. shift_terminal with T = 1 divides by 1 − σ_last = 0
        raise ValueError(f"this scheduler config gives non-finite sigmas for T = {steps}: {table.tolist()}")
    t = table * n
    if config.invert_sigmas:
        table = 1.0 - table
        return torch.cat([table, torch.ones(1)]), table * n
    return torch.cat([table, torch.zeros(1)]), t


def build(
    config: FlowEulerConfig,
    steps: int,
    eta: float = 0.0,
    begin: int = 0,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
) -> Schedule:
    """(1) on the grid (2)–(5), from step ``begin`` (img2img's start); η must be 0 (the sampler's own
    noise is ``stochastic_sampling``)."""
    if eta != 0:
        raise ValueError(
            f"eta must be 0 for flow-matching Euler ({config.scheduler} is deterministic); got {eta!r}"
        )
    table, t = grid(config, steps, sigmas, mu)
    s = table.double().numpy()
    level = 1 - s if config.invert_sigmas else s  # the noise level of each state
    trace = Trace(steps - begin)
    x = trace.x_T
    for k in range(begin, steps):
        kind = "data" if config.stochastic_sampling else "output"
        f = evaluate(trace, kind, "flow_prediction", x, float(t[k]), 1 - level[k], level[k])
        if config.stochastic_sampling:  # (1'): f = x̂_0
            x = (1 - s[k + 1]) * f + s[k + 1] * trace.noise()
        else:  # (1): f = v
            x = x + (s[k + 1] - s[k]) * f
    trace.finish(x)
    return schedule(
        trace,
        final_noise=float(level[-1]),
        init_scale=1.0,
        frame="flow",
        prediction_type="flow_prediction",
        name="flow Euler" + (" (stochastic)" if config.stochastic_sampling else ""),
        timesteps_dtype=torch.float32,
    )
