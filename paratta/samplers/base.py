"""What every sampler module shares: its typed config, the features the schedulers read off a network
output, and the ``Schedule`` made from a trace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from paratta.noise import BETA_SCHEDULES
from paratta.schedule import Frame, Schedule

from .grids import config_fields
from .trace import Trace, band_form

PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow_prediction")


@dataclass(frozen=True)
class SamplerConfig:
    """The keys of one diffusers scheduler class's config that define its sampler; defaults are diffusers'.

    ``from_dict`` reads a config dict (keys of other classes are ignored) and ``validate`` refuses by name
    what paratta does not express. ``scheduler`` is the diffusers class a subclass mirrors.
    """

    scheduler: ClassVar[str]
    nullable: ClassVar[tuple[str, ...]] = ()  # keys whose None is a value, not "unset"

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Any:
        out = cls(**config_fields(cls, config, nullable=cls.nullable))
        if getattr(out, "num_train_timesteps", 1) < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {out.num_train_timesteps}")
        schedule = getattr(out, "beta_schedule", None)
        if (
            schedule is not None
            and getattr(out, "trained_betas", None) is None
            and schedule not in BETA_SCHEDULES
        ):
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
        out.validate()
        return out

    def validate(self) -> None:
        """``ValueError`` naming the key for what this sampler does not express."""

    def refuse(self, key: str, value: Any, why: str = "") -> ValueError:
        return ValueError(
            f"{self.scheduler} with {key}={value!r} is not supported by paratta" + (f": {why}" if why else "")
        )


def data(prediction: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(μ, ν) of x̂_0 = μ x + ν o for a network that predicts ``prediction`` at x = α x_0 + σ ε."""
    if prediction == "epsilon":
        return 1 / alpha, -sigma / alpha
    if prediction == "v_prediction":
        return alpha, -sigma
    if prediction == "flow_prediction":
        return 1.0, -sigma
    return 0.0, 1.0


def noise(prediction: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(μ, ν) of ε̂ = μ x + ν o."""
    if prediction == "epsilon":
        return 0.0, 1.0
    if prediction == "v_prediction":
        return sigma, alpha
    if prediction == "flow_prediction":
        return 1.0, 1 - sigma
    return 1 / sigma, -alpha / sigma


def schedule(
    trace: Trace,
    *,
    final_noise: float,
    init_scale: float,
    frame: Frame,
    prediction_type: str,
    name: str,
    timesteps_dtype: torch.dtype,
    clip: float | None = None,
    clip_weight: list[float] | None = None,
    input_scale: float = 1.0,
) -> Schedule:
    """The ``Schedule`` of a finished trace: rows noisiest last, as the solver indexes them."""
    p, w, c = band_form(trace)
    rows = trace.evaluations[::-1]  # row j = 0 first

    def column(name: str) -> torch.Tensor:
        return torch.tensor([getattr(e, name) for e in rows], dtype=torch.float64)

    t = np.array([e.t for e in rows])
    return Schedule(
        timesteps=torch.from_numpy(t).to(timesteps_dtype),
        alpha=column("alpha"),
        sigma=column("sigma"),
        mu=column("mu"),
        nu=column("nu"),
        p=torch.from_numpy(p),
        w=torch.from_numpy(w),
        c=torch.from_numpy(c),
        draws=torch.from_numpy(trace.draws.copy()),
        final_noise=float(final_noise),
        init_scale=float(init_scale),
        input_scale=float(input_scale),
        frame=frame,
        prediction_type=prediction_type,
        clip=clip,
        clip_weight=torch.tensor(clip_weight[::-1], dtype=torch.float64) if clip_weight is not None else None,
        name=name,
    )


def evaluate(
    trace: Trace, kind: str, prediction: str, x: np.ndarray, t: float, alpha: float, sigma: float
) -> np.ndarray:
    """A network call at ``x`` read through its x̂_0 (``kind="data"``), its ε (``"noise"``) or its raw
    output (``"output"``); returns that feature as the scheduler computes it."""
    if kind == "output":
        return trace.evaluate(x, t, alpha, sigma, 0.0, 1.0)
    mu, nu = (data if kind == "data" else noise)(prediction, alpha, sigma)
    return mu * x + nu * trace.evaluate(x, t, alpha, sigma, mu, nu)
