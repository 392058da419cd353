"""Refused at the door: every check a job's settings can pass without running the model, made when the
job asks to join the queue (Gradio's ``validator=``), so a bad value is answered at once whatever the
queue holds, and never takes a queue slot.

A validator gets the event's inputs exactly as its handler does and returns one ``gr.validate`` per
input: the browser shows the message on that input and keeps the outputs it had; a ``gradio_client``
call raises ``ValidationError`` with the message. The handlers keep their own checks too: a check here
is the same function, made earlier.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from .settings import frame_index, short

Check = Callable[[dict[str, Any]], None]  # raises ValueError or gr.Error with the message
Validator = Callable[..., list[dict[str, Any]] | dict[str, Any]]


def message_of(err: Exception) -> str:
    return err.message if isinstance(err, gr.Error) else str(err)


def verdicts(names: list[str], message: str | None) -> list[dict[str, Any]]:
    """One ``gr.validate`` per input: the message goes on the input it names first (by its name as a
    word, ``window_auto`` before ``window``), else on the first input."""
    if message is None:
        return [gr.validate(True, "") for _ in names]
    named = [(re.search(rf"\b{re.escape(n)}\b", message), i) for i, n in enumerate(names)]
    found = sorted((m.start(), -len(names[i]), i) for m, i in named if m is not None)
    at = found[0][2] if found else 0
    return [gr.validate(i != at, message if i == at else "") for i in range(len(names))]


def validator(names: list[str], check: Check) -> Validator:
    """A validator for an event whose inputs are ``names``, in order (positional or by keyword, as
    the handler takes them): ``check`` gets the inputs by name and raises with the message."""

    def validate(*args: Any, **kwargs: Any) -> list[dict[str, Any]] | dict[str, Any]:
        named = dict(zip(names, args, strict=False)) | {n: kwargs[n] for n in names if n in kwargs}
        try:
            check(named)
            answer = verdicts(names, None)
        except (ValueError, gr.Error) as err:
            answer = verdicts(names, message_of(err))
        return answer if len(answer) > 1 else answer[0]  # Gradio wraps a one-input event's answer itself

    return validate


def positional(handler: Callable[..., Any]) -> list[str]:
    """The input names of an event whose handler takes its inputs by position (``request`` aside)."""
    return [n for n in inspect.signature(handler).parameters if n != "request"]


def frame_check(name: str = "k") -> Check:
    """A stepping event (scrub, previous, next): its position must be a whole number."""

    def check(named: dict[str, Any]) -> None:
        if frame_index(named[name]) is None:
            raise ValueError(f"the frame must be a whole number; got {short(named[name])}")

    return check


def stepping_validator(handler: Callable[..., Any]) -> Validator:
    """The validator of a stepping event ``handler(state, k)``."""
    names = positional(handler)
    return validator(names, frame_check(names[-1]))


def run_validator(names: list[str], models: list[str]) -> Validator:
    """/run (inputs ``names``: the settings and ``init_state``): the settings within the app's caps
    and the stored initialisation (``handlers``' checks)."""
    from .handlers import settings_from
    from .session import check_init, get_model

    def check(named: dict[str, Any]) -> None:
        named = dict(named)
        init = named.pop("init_state")
        settings = settings_from(models, named)
        check_init(settings, init, get_model(settings.model))
        check_words(settings)

    return validator(names, check)


def check_words(settings: Any) -> None:
    """The prompt's words, for a model whose condition is a parse of them (the built-ins: no network
    runs); a text encoder takes any text, so nothing is checked for it here."""
    from .session import get_model

    model = get_model(settings.model)
    if getattr(model, "text_encoder", None) is None:
        model.encode(settings.request.prompt, settings.request.negative_prompt)


def race_validator(names: list[str], models: list[str]) -> Validator:
    """/race (inputs ``names``: the contest and the settings): the contest, and the settings for two
    solvers within the app's caps."""
    from .handlers import RACES, settings_from

    def check(named: dict[str, Any]) -> None:
        named = dict(named)
        contest = named.pop("contest")
        if not isinstance(contest, str) or contest not in RACES:
            raise ValueError(f"contest must be one of {', '.join(RACES)}; got {short(contest)}")
        check_words(settings_from(models, named | {"solver": "anderson", "init": "xT"}, race=contest))

    return validator(names, check)


def use_validator(handler: Callable[[Any], Any]) -> Validator:
    """/use_as_init: a finished run to keep (the handler's own answer, which needs no model)."""
    return validator(positional(handler), lambda named: handler(*named.values()))


def guarded(validate: Validator) -> dict[str, Any]:
    """The arguments of a UI-only event that starts a job's chain (its button's busy state): the job's
    own validator, so settings refused at the door end the chain before anything changes. Validators
    run when an event joins the queue, hence queued, with no concurrency limit (it never waits)."""
    return {
        "api_visibility": "private",
        "preprocess": False,
        "validator": validate,
        "concurrency_limit": None,
    }
