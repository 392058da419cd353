"""Turn raw control values (from the browser or a gradio_client call) into ``RunSettings``: a Request
and a SolverConfig.

Everything that reaches the API is type-checked here before the library sees it: text must be a
string of at most ``MAX_PROMPT`` characters, integers must be exact (a string of digits is never
rounded through a float), numbers finite, choices among their values. Ranges come from
``paratta.config.specs``; the app's own caps (``ui.serve.limits.Caps``) come on top. Messages quote at
most a few dozen characters of what was sent (``ui.serve.guards.short``), so a huge input never comes
back as a huge error.
"""

from __future__ import annotations

import math
import re
from typing import Any

from paratta import Request, SolverConfig
from paratta.config import MAX_SEED, Spec

from ..serve.guards import short
from ..serve.limits import Caps
from ..view.record import CONFIG_SPECS, REQUEST_SPECS, RunSettings

EXACT_FLOAT_INT = 2**53  # above this a float cannot hold every integer
SEED_HINT = {"seed": f": type a whole number from 0 to {MAX_SEED}, which give every x_T there is"}
_INTEGER_TEXT = re.compile(r"[+-]?\d{1,25}")


def as_int(name: str, value: Any, hi: float | None = None) -> int:
    """An exact int from an int, an integral float up to 2**53 or an integral string; else ``ValueError``.

    Strings are read digit by digit (``int``), never through a float, so 2**63 − 1 stays itself. A float
    above 2**53 (a number typed into a page's box) is refused in words a person can act on: above
    ``hi`` it is out of range; below, the box could not hold it exactly.
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
        if hi is not None and number > hi:
            raise ValueError(f"{name} {number:g} is too large{SEED_HINT.get(name, f': at most {int(hi)}')}")
        raise ValueError(
            f"{name} {number:g} is too large for a number box, which cannot hold integers above 2**53 "
            f"exactly{SEED_HINT.get(name, ': type a smaller one (from code, send it as an integer)')}"
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
    {**REQUEST_SPECS, **CONFIG_SPECS}[name].check(value)
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
    hi = spec.hi if isinstance(spec.hi, (int, float)) else None
    converted = as_int(spec.name, value, hi) if spec.kind is int else as_float(spec.name, value)
    spec.check(converted, steps)
    return converted


def capped(name: str, value: int | str | None, cap: int) -> int | str | None:
    if isinstance(value, int) and value > cap:
        raise ValueError(
            f"{name} must be at most {cap} in this app (a cap that keeps the machine shared fairly); "
            f"got {value}"
        )
    return value


UI_INPUTS = ("model", "window_auto")  # inputs of the panel that are no library setting


def read(spec: Spec, value: Any, steps: int | None = None) -> Any:
    """A raw control value of one declared setting, converted to its kind and checked against its range."""
    if spec.choices:
        return as_choice(spec, value)
    if spec.kind is str:
        return as_text(spec.name, value)
    return as_setting(spec, value, steps)


def parse_settings(*, caps: Caps, needs_prompt: bool = False, **values: Any) -> RunSettings:
    """Raw control values, by setting name, into a ``RunSettings`` within ``caps``; a setting not given
    takes its declared default. Raises ``ValueError`` with a message meant for the user."""
    unknown = [n for n in values if n not in (*UI_INPUTS, *REQUEST_SPECS, *CONFIG_SPECS)]
    if unknown:
        raise ValueError(f"unknown setting {short(unknown[0])}")
    given = {n: read(spec, values[n]) for n, spec in REQUEST_SPECS.items() if n in values}
    if needs_prompt and not given.get("prompt"):
        raise ValueError("prompt is empty: this model needs a text prompt")
    request = Request(**given)
    steps = capped("steps", request.steps, caps.max_steps)
    auto = as_bool("window_auto", values.get("window_auto"))  # then the slider's value does not apply
    given = {
        n: "auto" if n == "window" and auto else read(spec, values[n], steps)
        for n, spec in CONFIG_SPECS.items()
        if n in values or n == "window" and auto
    }
    capped("window", given.get("window"), caps.max_window)
    if given.get("solver") == "sequential":  # order and window are hidden for it and do not apply
        given |= {"order": 1, "window": 1}
    config = SolverConfig(**given)
    config.validate(steps)
    return RunSettings(model=values.get("model", ""), request=request, config=config)
