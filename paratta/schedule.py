"""The samplers' coefficients, the single source of truth for every sampler in paratta.

``coefficients`` builds them from a diffusers scheduler config: DDIM(η) here, flow-matching Euler
in ``paratta.flow``, Euler and DPM-Solver++ 2M in ``paratta.multistep``. All have the ``Schedule``
interface, so the solvers never ask which sampler they solve: the step is
x_i = a_i · x_{i+1} + d_i, with d_i = increment_i(x_{i+1}) + r_i · m_{i+1}(x_{i+2}) (r = ``second``,
zero except on DPM-Solver++ 2M's second-order steps). ``sampler_config`` turns a model's scheduler
config into another sampler's on the same noise schedule (the ``sampler`` setting).

One DDIM(η) step, exactly as diffusers' ``DDIMScheduler.step`` takes it, on the grid
τ_{T-1} > … > τ_0 (index 0 is the last, least noisy step):

    x̂_0   = (x_{i+1} − √(1−ᾱ_i) ε) / √ᾱ_i            (or the v / sample forms)
    x_i    = √ᾱ_i⁻ · x̂_0 + √(1 − ᾱ_i⁻ − c_i²) · ε + c_i · ξ_i

with σ_i = √((1−ᾱ_i⁻)/(1−ᾱ_i)) · √(1 − ᾱ_i/ᾱ_i⁻) and c_i = η σ_i. Without clipping the step is
affine in x_{i+1}:  x_i = a_i · x_{i+1} + d_i,  where d_i depends on x_{i+1} only through the
network. ``Coefficients.step`` computes x_i and ``Coefficients.increment`` computes d_i; the
sequential sampler and the parallel solver both call them, nothing else.

Everything is computed in float64 from the scheduler config (betas are built in float64 too,
so ᾱ differs from diffusers' float32 table by float32 round-off only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .flow import FLOW_SCHEDULER, FlowSchedulerConfig, config_fields, flow_coefficients
from .multistep import (
    DPM_SCHEDULER,
    EULER_SCHEDULER,
    MultistepSchedulerConfig,
    multistep_coefficients,
    multistep_name,
)
from .noise import BETA_SCHEDULES, betas

SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class SchedulerConfig:
    """The subset of a diffusers ``DDIMScheduler`` config that defines the sampler.

    Defaults are diffusers' own ``DDIMScheduler()`` defaults.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    timestep_spacing: str = "leading"
    rescale_betas_zero_snr: bool = False

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> SchedulerConfig:
        """Read a diffusers scheduler config (any scheduler class); unknown keys are ignored."""
        kwargs = config_fields(cls, config)
        if "trained_betas" in kwargs:
            kwargs["trained_betas"] = tuple(float(b) for b in kwargs["trained_betas"])
        out = cls(**kwargs)
        out.validate()
        return out

    def validate(self) -> None:
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.trained_betas is None and self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {self.timestep_spacing!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if self.thresholding:
            raise ValueError("thresholding=True (dynamic thresholding) is not supported by paratta")


def alphas_cumprod(config: SchedulerConfig) -> Tensor:
    """ᾱ_t for t = 0…N−1, float64."""
    return torch.cumprod(1 - betas(config), 0)


def inference_timesteps(config: SchedulerConfig, num_steps: int) -> Tensor:
    """diffusers' ``DDIMScheduler.set_timesteps`` grid, noisiest first (int64)."""
    n = config.num_train_timesteps
    if not 1 <= num_steps <= n:
        raise ValueError(f"steps must be in [1, {n}] for this scheduler, got {num_steps}")
    if config.timestep_spacing == "linspace":
        ts = np.linspace(0, n - 1, num_steps).round()[::-1].copy().astype(np.int64)
    elif config.timestep_spacing == "leading":
        ratio = n // num_steps
        ts = (np.arange(0, num_steps) * ratio).round()[::-1].copy().astype(np.int64)
        ts += config.steps_offset
    else:
        ts = np.round(np.arange(n, 0, -n / num_steps)).astype(np.int64) - 1
    return torch.from_numpy(ts)


@dataclass(frozen=True)
class Coefficients:
    """Per-step DDIM(η) coefficients, indexed i = 0…T−1 with i = 0 the least noisy step.

    Step i maps x_{i+1} (at timestep τ_i) to x_i. All tensors have shape (T,).
    """

    timesteps: Tensor  # τ_i, int64
    alpha_bar: Tensor  # ᾱ_i = ᾱ(τ_i)
    alpha_bar_prev: Tensor  # ᾱ_i⁻, the ᾱ the step lands on
    sigma: Tensor  # DDPM posterior std σ_i
    c: Tensor  # noise coefficient η σ_i
    a: Tensor  # linear coefficient of x_{i+1} when nothing clips
    eta: float
    prediction_type: str
    clip_range: float | None  # x̂_0 is clamped to [−r, r] when set

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def noise(self) -> Tensor:
        """√(1 − ᾱ_i⁻): the noise level of x_i, the state step i lands on (0 onto ᾱ = 1)."""
        return (1 - self.alpha_bar_prev).clamp_min(0).sqrt()

    @property
    def input_noise(self) -> Tensor:
        """√(1 − ᾱ_i): the noise level of x_{i+1}, where step i evaluates the network."""
        return (1 - self.alpha_bar).clamp_min(0).sqrt()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Coefficients:
        moved = {
            f.name: getattr(self, f.name).to(device=device, dtype=dtype)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor) and f.name != "timesteps"
        }
        return replace(self, timesteps=self.timesteps.to(device), **moved)

    def step(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """x_i from x_{i+1} = ``x`` and the guided network output ``out``, batched over indices ``i``.

        ``x``, ``out`` (and ``xi``) have shape (n, *latent); ``i`` has shape (n,).
        """
        view = (-1,) + (1,) * (x.dim() - 1)
        abp, c = (v[i].view(view) for v in (self.alpha_bar_prev, self.c))
        x0, eps = self.x0_eps(i, x, out)
        x_prev = abp.sqrt() * x0 + (1 - abp - c**2).clamp_min(0).sqrt() * eps
        if self.eta > 0 and xi is not None:
            x_prev = x_prev + c * xi
        return x_prev

    @property
    def second(self) -> Tensor:
        """r_i: DDIM's step reads one row, x_{i+1}."""
        return torch.zeros_like(self.a)

    init_scale = 1.0  # x_T = the drawn latents

    def increment(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """d_i = step_i(x_{i+1}) − a_i · x_{i+1}: the part of the step that is not the linear map."""
        view = (-1,) + (1,) * (x.dim() - 1)
        return self.step(i, x, out, xi) - self.a[i].view(view) * x

    def denoised(self, i: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """x̂_0 at step i's input (clipped if configured)."""
        return self.x0_eps(i, x, out)[0]

    def x0_eps(self, i: Tensor, x: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂_0, ε̂) at step i from the state x_{i+1} and the network output; x̂_0 clipped if configured."""
        ab = self.alpha_bar[i].view((-1,) + (1,) * (x.dim() - 1))
        if self.prediction_type == "epsilon":
            x0, eps = (x - (1 - ab).sqrt() * out) / ab.sqrt(), out
        elif self.prediction_type == "v_prediction":
            x0, eps = ab.sqrt() * x - (1 - ab).sqrt() * out, ab.sqrt() * out + (1 - ab).sqrt() * x
        else:
            x0, eps = out, (x - ab.sqrt() * out) / (1 - ab).sqrt()
        if self.clip_range is not None:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0, eps

    def jump(self, i: Tensor, x: Tensor, out: Tensor, level: Tensor) -> Tensor:
        """The state at noise level ``level`` = √(1 − ᾱ) by DDIM's own move from step i's prediction:
        √ᾱ x̂_0 + √(1 − ᾱ) ε̂ (how DDIM goes between any two noise levels)."""
        x0, eps = self.x0_eps(i, x, out)
        return (1 - level**2).clamp_min(0).sqrt() * x0 + level * eps


def ddim_coefficients(config: SchedulerConfig, num_steps: int, eta: float = 0.0) -> Coefficients:
    """DDIM(η) coefficients for ``num_steps`` steps, in float64, as ``DDIMScheduler.step`` takes them.

    As in diffusers, the step from τ lands on τ − N // T (not on the next grid point; the two
    differ only for "linspace" spacing), and the last step lands on ᾱ = 1 when
    ``set_alpha_to_one`` else on ᾱ(0).
    """
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    ac = alphas_cumprod(config)
    ts = inference_timesteps(config, num_steps).flip(0)  # index i = 0 is the least noisy
    prev = ts - config.num_train_timesteps // num_steps
    final = torch.tensor(1.0, dtype=torch.float64) if config.set_alpha_to_one else ac[0]
    ab = ac[ts]
    abp = torch.where(prev >= 0, ac[prev.clamp_min(0)], final)
    sigma = ((1 - abp) / (1 - ab) * (1 - ab / abp)).clamp_min(0).sqrt()
    c = eta * sigma
    direction = (1 - abp - c**2).clamp_min(0).sqrt()
    if config.prediction_type == "epsilon":
        a = (abp / ab).sqrt()
    elif config.prediction_type == "v_prediction":
        a = (abp * ab).sqrt() + direction * (1 - ab).sqrt()
    else:
        a = direction / (1 - ab).sqrt()
    return Coefficients(
        timesteps=ts,
        alpha_bar=ab,
        alpha_bar_prev=abp,
        sigma=sigma,
        c=c,
        a=a,
        eta=float(eta),
        prediction_type=config.prediction_type,
        clip_range=float(config.clip_sample_range) if config.clip_sample else None,
    )


DDIM_SCHEDULER = "DDIMScheduler"
# scheduler class → sampler family: what the network predicts (ε/v/x̂_0: "ddim"; velocity: "flow")
FAMILIES = {DDIM_SCHEDULER: "ddim", EULER_SCHEDULER: "ddim", DPM_SCHEDULER: "ddim", FLOW_SCHEDULER: "flow"}
# the ``sampler`` setting's choices (``paratta.config``) → (scheduler class, Karras σ); "euler" on a
# flow-matching model is its own flow Euler
SAMPLERS: dict[str, tuple[str, bool]] = {
    "ddim": (DDIM_SCHEDULER, False),
    "euler": (EULER_SCHEDULER, False),
    "euler-karras": (EULER_SCHEDULER, True),
    "dpm++2m": (DPM_SCHEDULER, False),
    "dpm++2m-karras": (DPM_SCHEDULER, True),
}
FLOW_SAMPLERS = ("auto", "euler")


class Schedule(Protocol):
    """What the samplers use of a family's coefficients (``Coefficients``, ``FlowCoefficients``).

    Step i maps x_{i+1} to x_i = a_i · x_{i+1} + d_i; the network is evaluated at ``timesteps[i]``.
    """

    timesteps: Tensor  # (T,) what the model's ``predict`` receives for step i
    a: Tensor  # (T,) the linear coefficient of x_{i+1}
    init_scale: float  # x_T = the drawn (or given) latents × init_scale (Euler's init_noise_sigma)

    @property
    def num_steps(self) -> int: ...

    @property
    def noise(self) -> Tensor:
        """(T,) the noise level of x_i (the per-step stopping rule's σ_i)."""
        ...

    @property
    def input_noise(self) -> Tensor:
        """(T,) the noise level of x_{i+1}."""
        ...

    @property
    def second(self) -> Tensor:
        """(T,) r_i: the coefficient of m_{i+1} = ``denoised`` at x_{i+2} in d_i (0: one row)."""
        ...

    def denoised(self, i: Tensor, x: Tensor, out: Tensor) -> Tensor: ...

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Schedule: ...

    def step(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor: ...

    def increment(self, i: Tensor, x: Tensor, out: Tensor, xi: Tensor | None) -> Tensor: ...

    def jump(self, i: Tensor, x: Tensor, out: Tensor, level: Tensor) -> Tensor: ...


def family(config: Mapping[str, Any]) -> str:
    """The sampler family, "ddim" (an ε/v-prediction network: DDIM, Euler, DPM-Solver++) or "flow", of a
    scheduler config by its ``_class_name`` (none: DDIM).

    Other classes are refused by name: a diffusers adapter samples an ε/v-prediction scheduler paratta
    cannot express with DDIM on its noise schedule, and says so
    (``paratta.models.diffusers.base.pipeline_scheduler_config``).
    """
    name = dict(config).get("_class_name") or DDIM_SCHEDULER
    if name not in FAMILIES:
        raise ValueError(
            f"scheduler {name!r} is not one paratta can express: it solves {', '.join(FAMILIES)}; "
            "convert an ε/v-prediction scheduler with DDIMScheduler.from_config"
        )
    return FAMILIES[name]


def sampler_name(config: Mapping[str, Any], eta: float = 0.0) -> str:
    """A scheduler config's sampler as people name it: "DDIM", "DDPM-like DDIM(η=1)", "Euler Karras",
    "DPM++ 2M", "flow Euler"."""
    name = dict(config).get("_class_name") or DDIM_SCHEDULER
    if name == FLOW_SCHEDULER:
        return "flow Euler"
    if name in (EULER_SCHEDULER, DPM_SCHEDULER):
        return multistep_name(MultistepSchedulerConfig.from_dict(config))
    return "DDIM" if eta == 0 else f"DDIM(η={eta:g})"


# keys a conversion keeps (what ``from_config`` carries between these classes: the noise schedule)
_SHARED = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
    "timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
)  # fmt: skip


def sampler_config(config: Mapping[str, Any], sampler: str) -> dict[str, Any]:
    """The scheduler config that samples ``config``'s model with ``sampler`` ("auto": ``config`` itself).

    The noise schedule (betas, prediction type, spacing) is kept, as ``from_config`` keeps it; the
    other keys are the target class's defaults, with SD's conventions for DDIM (no clipping, last step
    onto ᾱ(0)). ``ValueError`` naming the setting and the choices for a flow-matching model, which has
    its flow Euler only, and for an unknown name.
    """
    config = dict(config)
    if family(config) == "flow":
        if sampler not in FLOW_SAMPLERS:
            raise ValueError(
                f"sampler must be one of {', '.join(FLOW_SAMPLERS)} for a flow-matching model (its own "
                f"{FLOW_SCHEDULER}); got {sampler!r}"
            )
        return config
    if sampler == "auto":
        return config
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of auto, {', '.join(SAMPLERS)}; got {sampler!r}")
    kind, karras = SAMPLERS[sampler]
    own = config.get("_class_name") or DDIM_SCHEDULER
    if own == kind and bool(config.get("use_karras_sigmas", False)) == karras:
        return config
    out = {k: config[k] for k in _SHARED if k in config}
    if own == kind:  # the same class: keep its own keys, change the spacing only
        out = {k: v for k, v in config.items() if not k.startswith("use_")}
    if kind == DDIM_SCHEDULER:
        out.update(clip_sample=False, set_alpha_to_one=False)
    else:
        out["use_karras_sigmas"] = karras
    out["_class_name"] = kind
    return out


def coefficients(
    config: Mapping[str, Any],
    num_steps: int,
    eta: float = 0.0,
    *,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
    image_seq_len: int | None = None,
) -> Schedule:
    """The coefficients of a scheduler config for ``num_steps`` steps: DDIM(η), or flow-matching Euler.

    ``sigmas``, ``mu`` and ``image_seq_len`` are a flow pipeline's arguments to ``set_timesteps``
    (``paratta.flow.flow_coefficients``); a DDIM config takes none of them.
    """
    if family(config) == "flow":
        flow = FlowSchedulerConfig.from_dict(config)
        return flow_coefficients(flow, num_steps, eta, sigmas=sigmas, mu=mu, image_seq_len=image_seq_len)
    if sigmas is not None or mu is not None or image_seq_len is not None:
        raise ValueError("sigmas, mu and image_seq_len are flow-matching arguments; DDIM takes none of them")
    if dict(config).get("_class_name") in (EULER_SCHEDULER, DPM_SCHEDULER):
        return multistep_coefficients(MultistepSchedulerConfig.from_dict(config), num_steps, eta)
    return ddim_coefficients(SchedulerConfig.from_dict(config), num_steps, eta)
