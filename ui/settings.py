"""Turn raw control values (from the browser or a gradio_client call) into a Request and a SolverConfig.

Everything that reaches the API is type-checked here before the library sees it: text must be a
string of at most ``MAX_PROMPT`` characters, integers must be exact (a seed up to 2**63 − 1 is never
rounded through a float), numbers finite, choices among their values. Ranges come from
``paratta.config.specs``; the app's own caps (``Caps``) come on top. Messages quote at most a few
dozen characters of what was sent, so a huge input never comes back as a huge error.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from paratta import Request, SolverConfig
from paratta.config import MAX_PROMPT, Spec, specs

EXACT_FLOAT_INT = 2**53  # above this a float cannot hold every integer (seeds go up to 2**63 − 1)
REQUEST_SPECS = specs(Request)
CONFIG_SPECS = specs(SolverConfig)
_INTEGER_TEXT = re.compile(r"[+-]?\d{1,25}")


@dataclass(frozen=True)
class Caps:
    """Per-run limits so one visitor cannot hog a shared machine (stricter on a Hugging Face Space).

    ``budget_s``: wall-clock seconds a run may take before it ends as if stopped; ``max_work_s``: the
    most network time a run may be able to cost at worst (``ui.limits.work_bound``), in seconds of
    the development CPU. Both can be set with ``PARATTA_BUDGET_S`` and ``PARATTA_MAX_WORK_S``.
    """

    max_steps: int
    max_window: int
    budget_s: float = 300.0
    max_work_s: float = 1200.0

    @classmethod
    def from_env(cls) -> Caps:
        on_space = bool(os.environ.get("SPACE_ID"))
        steps, budget, work = (100, 30.0, 150.0) if on_space else (200, 300.0, 1200.0)
        budget = as_float("PARATTA_BUDGET_S", os.environ.get("PARATTA_BUDGET_S", budget))
        work = as_float("PARATTA_MAX_WORK_S", os.environ.get("PARATTA_MAX_WORK_S", work))
        if budget <= 0 or work <= 0:
            raise ValueError("PARATTA_BUDGET_S and PARATTA_MAX_WORK_S must be positive numbers of seconds")
        return cls(steps, steps, budget, work)

    def text(self) -> str:
        """The one line under the controls that states the limits."""
        return (
            f"Limits here: T ≤ {self.max_steps}, window ≤ {self.max_window}, prompt ≤ {MAX_PROMPT} "
            f"characters; a run ends after {self.budget_s:g} s as if stopped; settings that could need "
            f"over {self.max_work_s:g} s of network time are refused; one job per visitor: a new Run, "
            "Race or Teach replaces the one still running."
        )


@dataclass(frozen=True)
class RunSettings:
    model: str
    request: Request
    config: SolverConfig

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **asdict(self.request), **asdict(self.config)}


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages."""
    text = repr(value) if not isinstance(value, (str, bytes)) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[:limit] + "…"


def as_int(name: str, value: Any) -> int:
    """An exact int from an int, an integral float up to 2**53 or an integral string; else ``ValueError``.

    Strings are read digit by digit (``int``), never through a float, so 2**63 − 1 stays itself.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {short(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    number = as_float(name, value)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, got {short(value)}")
    if abs(number) > EXACT_FLOAT_INT:
        raise ValueError(
            f"{name} = {short(value)} was sent as a floating-point number, which cannot hold integers "
            "above 2**53 exactly: send it as an integer or a string of digits"
        )
    return int(number)


def frame_index(k: Any) -> int | None:
    """A slider position from a (hidden) scrub event, or None for anything that is not a whole number."""
    try:
        return as_int("iteration", k)
    except ValueError:
        return None


def as_float(name: str, value: Any) -> float:
    """A finite float from an int, a float or a numeric string; else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be a number, got {short(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, got {short(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {short(value)}")
    return number


def as_text(name: str, value: Any) -> str:
    """A prompt: a string (None reads as empty) within its declared length, stripped."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text (a string), got {type(value).__name__} {short(value)}")
    REQUEST_SPECS[name].check(value)
    return value.strip()


def as_bool(name: str, value: Any) -> bool:
    """A checkbox: a bool (None reads as False); anything else is a ``ValueError`` naming ``name``."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {short(value)}")


def as_choice(spec: Spec, value: Any) -> str:
    if not isinstance(value, str) or value not in spec.choices:
        raise ValueError(f"{spec.name} must be {spec.range_text}; got {short(value)}")
    return value


def as_setting(spec: Spec, value: Any, steps: int | None = None) -> Any:
    """``value`` converted to the spec's kind and checked against its declared range; for an optional
    setting None or blank text is ``auto`` (None)."""
    if spec.optional and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    if isinstance(value, str) and value.strip() in spec.words:
        return value.strip()
    converted = as_int(spec.name, value) if spec.kind is int else as_float(spec.name, value)
    spec.check(converted, steps)
    return converted


def capped(name: str, value: int | str | None, cap: int) -> int | str | None:
    if isinstance(value, int) and value > cap:
        raise ValueError(
            f"{name} must be at most {cap} in this app (a cap that keeps the machine shared fairly); "
            f"got {value}"
        )
    return value


def parse_settings(
    model: str,
    prompt: str | None,
    negative_prompt: str | None,
    seed: Any,
    steps: Any,
    eta: Any,
    guidance: Any,
    solver: str,
    order: Any,
    window: Any,
    history: Any,
    tol: Any,
    max_iters: Any,
    init: str,
    caps: Caps,
    needs_prompt: bool = False,
    stopping: str = "budget",
    window_auto: Any = False,
    family: Any = "auto",
    height: Any = None,
    width: Any = None,
) -> RunSettings:
    """Validate everything a run needs; raises ``ValueError`` with a message meant for the user."""
    prompt, negative_prompt = as_text("prompt", prompt), as_text("negative_prompt", negative_prompt)
    if needs_prompt and not prompt:
        raise ValueError("prompt is empty: this model needs a text prompt")
    steps_ = capped("steps", as_setting(REQUEST_SPECS["steps"], steps), caps.max_steps)
    request = Request(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=as_setting(REQUEST_SPECS["seed"], seed),
        steps=steps_,
        eta=as_setting(REQUEST_SPECS["eta"], eta),
        guidance=as_setting(REQUEST_SPECS["guidance"], guidance),
        family=as_choice(REQUEST_SPECS["family"], family),
        height=as_setting(REQUEST_SPECS["height"], height),  # blank: the pipeline's own size
        width=as_setting(REQUEST_SPECS["width"], width),
    )
    solver_ = as_choice(CONFIG_SPECS["solver"], solver)
    if as_bool("window_auto", window_auto):  # the slider's value does not apply
        window = "auto"
    numbers = {
        name: as_setting(CONFIG_SPECS[name], value, steps_)
        for name, value in (("order", order), ("window", window), ("history", history), ("tol", tol))
    }
    numbers["max_iters"] = as_setting(CONFIG_SPECS["max_iters"], max_iters, steps_)
    capped("window", numbers["window"], caps.max_window)
    if solver_ == "sequential":  # order and window are hidden for it and do not apply
        numbers["order"], numbers["window"] = 1, 1
    config = SolverConfig(
        solver=solver_,
        init=as_choice(CONFIG_SPECS["init"], init),
        stopping=as_choice(CONFIG_SPECS["stopping"], stopping),
        **numbers,
    )
    config.validate(steps_)
    return RunSettings(model=model, request=request, config=config)
