"""Every sampler paratta solves: one registry entry each, one module per diffusers scheduler class.

``SCHEDULERS`` maps a diffusers scheduler class to its typed config (the keys it honours) and its
builder; ``SAMPLERS`` maps each value of the ``sampler`` setting to its label, its class and the keys it
sets. Everything else derives from them: the setting's choices (``paratta.config``), the labels the CLI
and the app show, and which sampler a pipeline's own scheduler is (``coefficients``, ``check``).

A builder mirrors its scheduler's ``set_timesteps`` and ``step`` on coefficient vectors
(``samplers.trace``) and returns the banded ``paratta.schedule.Schedule``: the sequential sampler, the
parallel solver, the initialisations and the stopping rules read nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from paratta.schedule import Schedule

from . import ddim, dpm, euler, flow, heun, lcm, pndm, unipc
from .base import SamplerConfig
from .grids import calculate_shift

Builder = Callable[..., Schedule]


@dataclass(frozen=True)
class Scheduler:
    """A diffusers scheduler class paratta mirrors: its config (the keys it honours) and its builder."""

    config: type[SamplerConfig]
    build: Builder
    arguments: tuple[str, ...] = ()  # ``set_timesteps`` arguments it takes besides T: sigmas, mu


SCHEDULERS: dict[str, Scheduler] = {
    "DDIMScheduler": Scheduler(ddim.DDIMConfig, ddim.build),
    "PNDMScheduler": Scheduler(pndm.PNDMConfig, pndm.build),
    "EulerDiscreteScheduler": Scheduler(euler.EulerConfig, euler.build),
    "EulerAncestralDiscreteScheduler": Scheduler(euler.EulerAncestralConfig, euler.build),
    "HeunDiscreteScheduler": Scheduler(heun.HeunConfig, heun.build),
    "DPMSolverMultistepScheduler": Scheduler(dpm.DPMConfig, dpm.build, ("mu",)),
    "UniPCMultistepScheduler": Scheduler(unipc.UniPCConfig, unipc.build, ("mu",)),
    "FlowMatchEulerDiscreteScheduler": Scheduler(flow.FlowEulerConfig, flow.build, ("sigmas", "mu")),
    "LCMScheduler": Scheduler(lcm.LCMConfig, lcm.build),  # a pipeline's own (LCM, LCM-LoRA); no setting
}
DDIM, FLOW_EULER = "DDIMScheduler", "FlowMatchEulerDiscreteScheduler"


@dataclass(frozen=True)
class Sampler:
    """One value of the ``sampler`` setting: the scheduler class it runs and the config keys it sets.

    ``velocity`` holds the keys that make it sample a flow-matching (velocity) model instead, or None
    where diffusers offers no such form.
    """

    label: str
    scheduler: str
    keys: dict[str, Any] = field(default_factory=dict)
    velocity: dict[str, Any] | None = None
    velocity_scheduler: str | None = None  # the class on a flow model, when another (flow Euler)


_FLOW_DPM = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler("DDIM", DDIM),
    "pndm": Sampler("PNDM (PLMS)", "PNDMScheduler", {"skip_prk_steps": True}),
    "euler": Sampler("Euler", "EulerDiscreteScheduler", {"use_karras_sigmas": False}, {}, FLOW_EULER),
    "euler-karras": Sampler("Euler Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "euler-a": Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    "heun": Sampler("Heun", "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "dpm++2m": Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"solver_order": 2}, _FLOW_DPM),
    "dpm++2m-karras": Sampler(
        "DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}
    ),
    "dpm++3m": Sampler("DPM++ 3M", "DPMSolverMultistepScheduler", {"solver_order": 3}, _FLOW_DPM),
    "dpm++2m-sde": Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
        _FLOW_DPM,
    ),
    "unipc": Sampler("UniPC", "UniPCMultistepScheduler", {"solver_order": 2}, _FLOW_DPM),
    "unipc-3": Sampler("UniPC order 3", "UniPCMultistepScheduler", {"solver_order": 3}, _FLOW_DPM),
}
CHOICES: tuple[str, ...] = ("auto", *SAMPLERS)
# keys a conversion keeps (what ``from_config`` carries between the ε/v schedulers: the noise schedule)
_NOISE = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
    "timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
)  # fmt: skip
_FLOW = ("num_train_timesteps", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
         "max_image_seq_len", "shift_terminal")  # fmt: skip


def class_of(config: Mapping[str, Any]) -> str:
    """A scheduler config's class (``_class_name``; none: DDIM)."""
    return dict(config).get("_class_name") or DDIM


def parse(config: Mapping[str, Any]) -> SamplerConfig:
    """The typed config of a diffusers scheduler config; ``ValueError`` with the real reason when paratta
    does not express it (an unknown class, or an option its sampler does not take)."""
    name = class_of(config)
    if name not in SCHEDULERS:
        raise ValueError(
            f"scheduler {name!r} is not one paratta expresses: it solves {', '.join(SCHEDULERS)} "
            f"(the sampler setting offers {', '.join(SAMPLERS)})"
        )
    return SCHEDULERS[name].config.from_dict(config)


def check(config: Mapping[str, Any]) -> None:
    """``ValueError`` naming the reason when ``config`` is not a sampler paratta solves exactly."""
    parse(config)


def is_velocity(config: Mapping[str, Any]) -> bool:
    """Does the scheduler read the network as a flow-matching velocity (SD3, Flux, Sana, Wan)?"""
    return class_of(config) == FLOW_EULER or dict(config).get("prediction_type") == "flow_prediction"


def family(config: Mapping[str, Any]) -> str:
    """The sampler family of a scheduler config: "flow" (a velocity network) or "ddim" (ε, v or x̂_0)."""
    return "flow" if is_velocity(config) else "ddim"


def label(config: Mapping[str, Any], eta: float = 0.0) -> str:
    """The sampler as people name it: "DDIM(η=1)", "Euler Karras", "DPM++ 2M SDE", "UniPC (flow σ)"."""
    parsed = parse(config)
    if isinstance(parsed, ddim.DDIMConfig):
        return "DDIM" if eta == 0 else f"DDIM(η={eta:g})"
    if isinstance(parsed, dpm.DPMConfig):
        return dpm.label(parsed)
    if isinstance(parsed, unipc.UniPCConfig):
        return unipc.label(parsed)
    if isinstance(parsed, pndm.PNDMConfig):
        return pndm.label(parsed)
    if isinstance(parsed, euler.EulerAncestralConfig):
        return "Euler a"
    if isinstance(parsed, euler.EulerConfig):
        return "Euler" + euler._spacing_name(parsed)
    if isinstance(parsed, heun.HeunConfig):
        return "Heun"
    if isinstance(parsed, lcm.LCMConfig):
        return "LCM"
    return "flow Euler" + (" (stochastic)" if parsed.stochastic_sampling else "")


def sampler_config(config: Mapping[str, Any], sampler: str) -> dict[str, Any]:
    """The scheduler config that samples ``config``'s model with ``sampler`` ("auto": ``config`` itself).

    The noise schedule is kept, as ``from_config`` keeps it (a velocity model: its shift, as
    ``flow_shift`` on flow sigmas); the other keys are the target class's defaults and the entry's own,
    with SD's conventions for DDIM (no clipping, last step onto ᾱ(0)). ``ValueError`` naming the
    setting and the choices for an unknown name or one the model's prediction type cannot use.
    """
    config = dict(config)
    if sampler == "auto":
        return config
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(CHOICES)}; got {sampler!r}")
    entry = SAMPLERS[sampler]
    velocity = is_velocity(config)
    if velocity:
        usable = [name for name, s in SAMPLERS.items() if s.velocity is not None]
        if entry.velocity is None:
            raise ValueError(
                f"sampler must be one of auto, {', '.join(usable)} for a flow-matching (velocity) model; "
                f"{sampler} has no flow form in diffusers"
            )
        target = entry.velocity_scheduler or entry.scheduler
        if class_of(config) == target and all(config.get(k) == v for k, v in entry.velocity.items()):
            return config
        out = {k: config[k] for k in _FLOW if k in config}
        if target != FLOW_EULER:
            out["flow_shift"] = float(config.get("shift", config.get("flow_shift", 1.0)))
            out.update(entry.keys)
        out.update(entry.velocity)
        out["_class_name"] = target
        return out
    own = class_of(config)
    if own == entry.scheduler and all(config.get(k, _default(own, k)) == v for k, v in entry.keys.items()):
        return config
    out = {k: config[k] for k in _NOISE if k in config}
    if entry.scheduler == DDIM:
        out.update(clip_sample=False, set_alpha_to_one=False)
    if entry.scheduler == "PNDMScheduler":
        out["set_alpha_to_one"] = False
    out.update(entry.keys)
    out["_class_name"] = entry.scheduler
    return out


def _default(scheduler: str, key: str) -> Any:
    defaults = SCHEDULERS[scheduler].config()
    return getattr(defaults, key, None)


def _mu(config: Mapping[str, Any], image_seq_len: int) -> float:
    """μ of dynamic shifting from the image's token count, with the config's lengths and shifts (SD3's
    and Flux's pipelines; diffusers' defaults where the config has none)."""
    given = {k: v for k, v in dict(config).items() if v is not None}
    return calculate_shift(
        image_seq_len,
        given.get("base_image_seq_len", 256),
        given.get("max_image_seq_len", 4096),
        given.get("base_shift", 0.5),
        given.get("max_shift", 1.15),
    )


def coefficients(
    config: Mapping[str, Any],
    steps: int,
    eta: float = 0.0,
    *,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
    image_seq_len: int | None = None,
    begin: int = 0,
) -> Schedule:
    """The banded schedule of ``config``'s sampler for ``steps`` steps, from step ``begin`` (img2img).

    ``sigmas``, ``mu`` and ``image_seq_len`` are what a pipeline passes to ``set_timesteps`` (custom σ,
    the dynamic shift, or the token count it is computed from); a scheduler that takes none refuses them.
    Schedules are immutable and cached: a run, its coarse pass and the next run with the same settings
    trace the sampler once.
    """
    key = json.dumps(
        dict(config), sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else repr(v)
    )
    given = None if sigmas is None else tuple(float(s) for s in sigmas)
    return _coefficients(key, steps, eta, given, mu, image_seq_len, begin)


@lru_cache(maxsize=64)
def _coefficients(
    key: str,
    steps: int,
    eta: float,
    sigmas: tuple[float, ...] | None,
    mu: float | None,
    image_seq_len: int | None,
    begin: int,
) -> Schedule:
    return _build(json.loads(key), steps, eta, sigmas=sigmas, mu=mu, image_seq_len=image_seq_len, begin=begin)


def _build(
    config: Mapping[str, Any],
    steps: int,
    eta: float = 0.0,
    *,
    sigmas: Sequence[float] | None = None,
    mu: float | None = None,
    image_seq_len: int | None = None,
    begin: int = 0,
) -> Schedule:
    """``coefficients``, uncached."""
    parsed = parse(config)
    scheduler = SCHEDULERS[class_of(config)]
    for name, value in (("sigmas", sigmas), ("mu", mu)):
        if value is not None and name not in scheduler.arguments:
            raise ValueError(f"{name}: {parsed.scheduler} takes no {name} (a flow pipeline's argument)")
    if not isinstance(begin, int) or not 0 <= begin < steps:
        raise ValueError(f"begin must be in [0, {steps - 1}] (the first step run), got {begin!r}")
    if mu is None and image_seq_len is not None and getattr(parsed, "use_dynamic_shifting", False):
        mu = _mu(config, image_seq_len)
    given = {"sigmas": sigmas, "mu": mu}
    return scheduler.build(parsed, steps, eta, begin, **{k: given[k] for k in scheduler.arguments})


__all__ = [
    "CHOICES",
    "SAMPLERS",
    "SCHEDULERS",
    "Sampler",
    "Scheduler",
    "check",
    "class_of",
    "coefficients",
    "family",
    "label",
    "parse",
    "sampler_config",
]
