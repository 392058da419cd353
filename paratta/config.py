"""Every setting, declared once: its type, default, range and hint.

``Request`` (what to sample) and ``SolverConfig`` (how to solve) are frozen dataclasses whose
fields carry their declaration in ``metadata`` (``setting(...)``). ``__post_init__`` validates each
field once, with a ``ValueError`` that names the setting and its range; settings whose upper end is
T are checked against T by ``SolverConfig.validate``, which ``paratta.planning.plan.resolve`` calls
when it makes the settings of a run concrete (a ``Plan``: the auto ones filled). A setting's kind and choices
are read from its type (``kind_of``). The CLI's arguments, the app's controls and the bench's
defaults are generated from ``specs(...)``, never re-typed.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch

from . import samplers
from .schedule import Split

Solver = Literal["sequential", "jacobi", "anderson", "anderson-global"]
Init = Literal["xT", "trajectory", "coarse"]
Stopping = Literal["budget", "per-step"]
StateDtype = Literal["float64", "float32"]
Family = Literal["auto", "ddim", "flow"]
Sampler = Literal[samplers.CHOICES]  # the registry's entries (``paratta.samplers.SAMPLERS``)
# The window: W timesteps per iteration, "auto" (the W of least projected wall-clock on the device) or
# "device" (the default: auto on CUDA, where a batch is about one call; W = T elsewhere).
Window = int | Literal["auto", "device"]

SOLVERS: tuple[str, ...] = get_args(Solver)
INITS: tuple[str, ...] = get_args(Init)
STOPPINGS: tuple[str, ...] = get_args(Stopping)
FAMILIES: tuple[str, ...] = get_args(Family)
SAMPLER_CHOICES: tuple[str, ...] = get_args(Sampler)
STATE_DTYPES = {"float64": torch.float64, "float32": torch.float32}

MAX_STEPS = 1000  # diffusers' training grids have 1,000 timesteps
# x_T and the DDPM noises are drawn by torch's CPU generator, which keeps a seed's low 32 bits: these
# seeds give every x_T there is, and a larger one would only repeat one of them.
MAX_SEED = 2**32 - 1
MAX_PROMPT = 500  # characters: CLIP reads 77 tokens; a longer text only costs memory
MAX_IMAGE_SIDE = 4096  # pixels: twice the largest side SD3 or Flux are trained at

# The auto tolerance of each stopping rule (latent RMS). budget: 1e-3 ≈ 2/255/8, an eighth of an
# 8-bit level of pixels in [−1, 1]: the largest pixel error of x_0 is several times its RMS, and under
# the flow split the rule may end close to its bound (the ratio on the embedded models and why an
# eighth: docs/stopping.md). per-step: the published 1e-3 (Tang et al. 2024), as published.
TOLERANCE: dict[str, float] = {"budget": 1e-3, "per-step": 1e-3}


@dataclass(frozen=True)
class Spec:
    """The declaration of one setting.

    ``lo``/``hi`` bound numbers (``hi="T"``: at most the run's number of steps); ``choices`` lists a
    ``Literal``'s values; ``optional`` settings accept ``None``, which means ``auto`` (described in
    the hint); ``words`` are text values a number setting also takes (``"auto"``: chosen per device
    at run time, see the hint); a number setting whose declared default is a word takes that word
    too (the window's ``"device"``); ``symbol`` is the paper's letter, for labels.
    """

    name: str
    kind: type  # int, float or str
    default: Any
    hint: str
    lo: float | None = None
    hi: float | str | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    symbol: str = ""
    label: str = ""
    words: tuple[str, ...] = ()

    @property
    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is str:
            return f"a string of at most {self.hi} characters" if self.hi else "a string"
        hi = "T" if self.hi == "T" else self._fmt(self.hi) if self.hi is not None else "∞"
        text = f"{'an integer' if self.kind is int else 'a number'} in [{self._fmt(self.lo)}, {hi}]"
        return text + "".join(f" or {w!r}" for w in self.words)

    def _fmt(self, v: float | None) -> str:
        return str(int(v)) if self.kind is int else f"{v:g}"

    def check(self, value: Any, steps: int | None = None) -> None:
        """Raise ``ValueError`` naming this setting and its range when ``value`` is outside it."""
        if value is None and self.optional:
            return
        if isinstance(value, str) and value in self.words:
            return
        if isinstance(value, str) and value == self.default and self.kind is not str:
            return
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be {self.range_text}; got {value!r}")
            return
        if self.kind is str:
            if not isinstance(value, str) or (self.hi and len(value) > self.hi):
                got = f"{len(value):,} characters" if isinstance(value, str) else type(value).__name__
                raise ValueError(f"{self.name} must be {self.range_text}; got {got}")
            return
        numeric = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value):
            raise ValueError(f"{self.name} must be {self.range_text}; got {value!r}")
        hi = steps if self.hi == "T" else self.hi
        if (self.lo is not None and value < self.lo) or (isinstance(hi, (int, float)) and value > hi):
            where = f" (T = {steps})" if self.hi == "T" and steps is not None else ""
            raise ValueError(f"{self.name} must be {self.range_text}{where}; got {value!r}")


def setting(
    default: Any,
    hint: str,
    lo: float | None = None,
    hi: float | str | None = None,
    *,
    optional: bool = False,
    symbol: str = "",
    label: str = "",
    words: tuple[str, ...] = (),
) -> Any:
    """A dataclass field carrying its declaration (type and choices are read from the annotation)."""
    meta = {"hint": hint, "lo": lo, "hi": hi, "optional": optional, "symbol": symbol, "label": label}
    meta["words"] = words
    return field(default=default, metadata=meta)


def kind_of(annotation: Any) -> tuple[type, tuple[str, ...]]:
    """A setting's kind and choices from its type: a ``Literal`` is a str with those choices; in a
    union (``int | None``, ``int | str | None``) the number type is the kind (``None`` and the words
    are declared by ``setting``)."""
    if get_origin(annotation) is Literal:
        return str, tuple(get_args(annotation))
    options = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    for kind in (int, float, str):
        if kind in options:
            return kind, ()
    raise TypeError(f"a setting must be an int, float, str or Literal; got {annotation!r}")


def specs(cls: type) -> dict[str, Spec]:
    """The declarations of a settings dataclass, by field name, in declaration order."""
    types = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if "hint" not in f.metadata:
            continue
        kind, choices = kind_of(types[f.name])
        default = None if f.default is MISSING else f.default
        out[f.name] = Spec(name=f.name, kind=kind, default=default, choices=choices, **f.metadata)
    return out


def _validate(obj: Any) -> None:
    for name, spec in specs(type(obj)).items():
        spec.check(getattr(obj, name))


@dataclass(frozen=True)
class Request:
    """What to sample: the condition, the noise and the sampler (T steps of DDIM(η) or of flow Euler)."""

    prompt: str = setting("", "what to draw; the embedded models know a small vocabulary", hi=MAX_PROMPT)
    negative_prompt: str = setting("", "steered away from when guidance > 1", hi=MAX_PROMPT)
    seed: int = setting(0, "fixes x_T and, for η > 0, the DDPM noises", 0, MAX_SEED)
    steps: int = setting(50, "sequential network calls", 1, MAX_STEPS, symbol="T", label="Steps")
    eta: float = setting(
        0.0, "0 = DDIM, 1 = DDPM-like; noises are drawn once from the seed", 0.0, 1.0, symbol="η"
    )
    guidance: float = setting(
        1.0, "classifier-free guidance ε_u + s(ε_c − ε_u); 1 = plain conditional", 0.0, 50.0, symbol="s"
    )
    family: Family = setting(
        "auto",
        "the sampler family: auto (the model's own scheduler), ddim (DDIM(η) on the ε/v network), flow "
        "(flow-matching Euler on the velocity, η = 0; SD3, Flux). The embedded mixtures have both",
        label="Sampler family",
    )
    sampler: Sampler = setting(
        "auto",
        "the sampler on the model's noise schedule: auto (the model's own scheduler), or "
        + ", ".join(f"{name} ({entry.label})" for name, entry in samplers.SAMPLERS.items())
        + "; a flow-matching model takes those with a flow form. All but ddim need η = 0 (the ancestral "
        "and SDE samplers draw their own noise from the seed)",
        label="Sampler",
    )
    height: int | None = setting(
        None,
        "image height in pixels, for diffusers models that take one (auto: the pipeline's default)",
        8,
        MAX_IMAGE_SIDE,
        optional=True,
        label="Height",
    )
    width: int | None = setting(
        None,
        "image width in pixels, for diffusers models that take one (auto: the pipeline's default)",
        8,
        MAX_IMAGE_SIDE,
        optional=True,
        label="Width",
    )

    def __post_init__(self) -> None:
        _validate(self)
        if self.family == "flow" and self.eta != 0:
            raise ValueError(
                f"eta must be 0 with family flow (flow-matching Euler is deterministic); got {self.eta!r}"
            )
        if self.sampler not in ("auto", "ddim") and self.eta != 0:
            raise ValueError(
                f"eta must be 0 with sampler {self.sampler} (a deterministic sampler); got {self.eta!r}"
            )


@dataclass(frozen=True)
class SolverConfig:
    """How to solve the triangular system (see ``paratta.solver`` for the iteration and its rule)."""

    solver: Solver = setting(
        "anderson",
        "sequential (T calls), jacobi (plain fixed point), anderson (TAA: one γ per timestep), "
        "anderson-global (one γ for the window)",
    )
    order: int | None = setting(
        None,
        "each equation unrolled k steps towards the anchor; same network cost (auto: min(20, T))",
        1,
        "T",
        optional=True,
        symbol="k",
        label="Order",
    )
    window: Window = setting(
        "device",
        "unknowns evaluated per iteration, in one batched network call; 'auto': the window of least "
        "projected wall-clock on this device, from its measured batch latency; 'device' (the default): "
        "auto on CUDA, T elsewhere",
        1,
        "T",
        symbol="W",
        label="Window",
        words=("auto",),
    )
    history: int = setting(
        2, "iterates Anderson remembers; 1 = plain fixed point, 2 = the paper's default", 1, 10,
        symbol="m", label="History",
    )  # fmt: skip
    stopping: Stopping = setting(
        "budget",
        "budget: x_0 within tol of sequential to first order (each frozen segment charged its "
        "measured one-step defects); per-step: the published rule, one-step residual ≤ tol "
        "(or ≤ tol2·σ), no such bound",
    )
    tol: float | None = setting(
        None,
        "budget: bound on the RMS distance of x_0 to the sequential x_0; per-step: the one-step "
        "residual each step must reach; latent units (auto: 1e-3 for budget, about an eighth of an "
        "8-bit level of pixels in [−1, 1]; 1e-3 for per-step, the published value)",
        1e-12,
        10.0,
        optional=True,
        label="Tolerance",
    )
    tol2: float = setting(
        1e-3, "per-step rule only: a step is also converged when its residual ≤ tol2 × its noise σ", 0.0, 10.0
    )
    max_iters: int | None = setting(
        None, "iteration budget; T always suffices (auto: T)", 1, "T", optional=True, label="Max iterations"
    )
    lam: float = setting(
        1e-3, "Anderson's Tikhonov regularisation, relative to the Gram scale", 0.0, 1e3, symbol="λ"
    )
    init: Init = setting(
        "xT", "xT (copies of x_T), trajectory (a given one), coarse (a T/10-step sequential pass)"
    )
    coarse_steps: int | None = setting(
        None, "steps of the coarse pass (auto: max(2, T // 10))", 1, "T", optional=True
    )
    max_batch: int | str | None = setting(
        None,
        "timesteps per network call, to fit a large window in memory (default: all; 'auto': as many as "
        "fit in the free GPU memory, measured)",
        1,
        1 << 20,
        optional=True,
        words=("auto",),
    )
    state_dtype: StateDtype = setting("float64", "precision of the solver state; the network runs in its own")
    split: Split = setting(
        "flow",
        "the linear part each update carries exactly (same fixed point, same network calls): flow (the "
        "flow-matching frame, a multistep term's band included) or published (ε held, Tang et al. "
        "2024); the stopping rule certifies the published one either way",
    )

    def __post_init__(self) -> None:
        _validate(self)

    def validate(self, steps: int) -> None:
        """Raise ``ValueError`` naming the first setting outside its range for a T = ``steps`` run: those
        bounded by T (every range without T was checked when the config was made)."""
        for name, spec in specs(SolverConfig).items():
            if spec.hi == "T":
                spec.check(getattr(self, name), steps)

    @property
    def dtype(self) -> torch.dtype:
        return STATE_DTYPES[self.state_dtype]
