"""Refused at the door: every check a job's settings can pass without running the model, made when the
job asks to join the queue (Gradio's ``validator=``), so a bad value is answered at once whatever the
queue holds, and never takes a queue slot.

``settle`` is the one check of a job's settings: typed and within the app's caps (``settings``), its
runs posed dry (``paratta.pose``: a sampler, family or size the model cannot take is refused there),
and their worst-case work under the cap (``check_work``). A validator gets the event's inputs exactly
as its handler does and returns one ``gr.validate`` per input: the browser shows the message on that
input and keeps the outputs it had; a ``gradio_client`` call raises ``ValidationError`` with the
message. The handlers make the same checks again (``settle``), when the job starts.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from paratta import Run, pose
from paratta.protocol import DiffusionModel

from ..serve.gpu import DEVICE
from ..serve.guards import short
from ..serve.limits import Caps, job_work
from ..serve.models import encodes_offline, get_model
from ..view.record import RunSettings
from .session import RACES, check_init, race_lanes
from .settings import frame_index, parse_settings

Check = Callable[[dict[str, Any]], None]  # raises ValueError or gr.Error with the message
Validator = Callable[..., list[dict[str, Any]] | dict[str, Any]]


def user_error(err: Exception) -> gr.Error:
    """The error a gradio_client caller gets; on the page the status line shows it in full (the
    handlers' ``refusal``), so no toast covers the panels."""
    return gr.Error(str(err), print_exception=False, visible=False)


def job_runs(
    settings: RunSettings, model: DiffusionModel | None = None, race: str | None = None, device: str = DEVICE
) -> list[Run]:
    """The runs of a job posed dry on ``device`` (``model``: the settings' own by default): the run, or
    the lanes of the race ``race`` (``ui.run.session.race_lanes``)."""
    model = model if model is not None else get_model(settings.model)
    lanes = list(race_lanes(settings, race).values()) if race is not None else [settings]
    return [pose(model, lane.request, lane.config, device, dry=True) for lane in lanes]


def work_bound(
    settings: RunSettings, model: DiffusionModel | None, lanes: int = 1, device: str = DEVICE
) -> tuple[int, float]:
    """(evaluations, seconds of network time) at worst on ``device``: the sequential reference plus
    ``lanes`` solves of the settings (``paratta.Run.work``)."""
    return job_work(job_runs(settings, model, device=device) * lanes)


def job_bound(
    settings: RunSettings, model: DiffusionModel | None, race: str | None = None, device: str = DEVICE
) -> tuple[int, float]:
    """(evaluations, seconds) at worst of a run (its reference and one solve) or of the race ``race``:
    two solves beside the one reference of their shared problem, or each lane's own reference and solve."""
    return job_work(job_runs(settings, model, race, device))


def check_work(
    settings: RunSettings, model: DiffusionModel | None, caps: Caps, race: str | None = None
) -> None:
    """``ValueError`` when a run's (or the race ``race``'s) settings could cost more network time than
    ``caps.max_work_s``, naming the largest max_iters that would fit (when one does)."""
    runs = job_runs(settings, model, race)
    within(runs, settings, caps, race)


def within(runs: list[Run], settings: RunSettings, caps: Caps, race: str | None = None) -> None:
    """``check_work`` of a job's posed ``runs``. A budget of k iterations is charged as the job would
    run it: k for each lane, and at k = T (the settings' own) each lane's whole T."""
    evaluations, seconds = job_work(runs)
    if seconds <= caps.max_work_s:
        return
    given = settings.request.steps

    def at(k: int) -> float:
        return job_work(runs, [k if k < given else run.steps for run in runs])[1]

    fits = [k for k in range(given, 0, -1) if at(k) <= caps.max_work_s]
    hint = f"max iterations ≤ {fits[0]} fits" if fits else "no max iterations fits at this T and window"
    steps = " and ".join(sorted({str(run.steps) for run in runs}, key=int, reverse=True))
    own_steps = all(run.steps == given for run in runs)  # not a race's own T
    lower = "the steps, the window or max iterations" if own_steps else "the window or max iterations"
    raise ValueError(
        f"these settings could need up to {evaluations:,} network evaluations (T = {steps}, "
        f"window {runs[0].plan.window}, guidance {settings.request.guidance:g}"
        f"{', two solvers' if race is not None else ''}), about {seconds:.0f} s on {settings.model} at "
        f"worst; the cap here is {caps.max_work_s:g} s: lower {lower} ({hint})"
    )


def settle(
    models: list[str], named: dict[str, Any], race: str | None = None
) -> tuple[RunSettings, list[Run]]:
    """Raw control values by setting name → the RunSettings within the app's caps, and the job's runs
    posed dry (the run, or the lanes of the race ``race``); ``gr.Error`` on bad input."""
    name = named.get("model")
    if not isinstance(name, str) or name not in models:
        raise user_error(ValueError(f"model must be one of {', '.join(models)}; got {short(name)}"))
    model = get_model(name)
    try:
        caps = Caps.from_env()
        settings = parse_settings(**named, caps=caps, needs_prompt=model.defaults.requires_prompt)
        try:
            runs = job_runs(settings, model, race)  # a sampler, family or size the model cannot take
        except ValueError as err:
            if race is None:
                raise
            raise ValueError(f"the {race} race cannot run here: {err}") from None
        within(runs, settings, caps, race)
        return settings, runs
    except ValueError as err:
        raise user_error(err) from None


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
    and the stored initialisation (``settle``, ``check_init``)."""

    def check(named: dict[str, Any]) -> None:
        named = dict(named)
        init = named.pop("init_state")
        settings, (run,) = settle(models, named)
        check_init(settings, init, run.latent_shape)
        check_words(settings)

    return validator(names, check)


def check_words(settings: RunSettings) -> None:
    """The prompt's words, for a model whose condition is a parse of them (the built-ins: no network
    runs); a text encoder takes any text, so nothing is checked for it here."""
    model = get_model(settings.model)
    if encodes_offline(model):
        model.encode(settings.request.prompt, settings.request.negative_prompt)


def race_settings(named: dict[str, Any]) -> dict[str, Any]:
    """/race's inputs as settings: each lane sets its own solver or rule, from Anderson and x_T."""
    return named | {"solver": "anderson", "init": "xT"}


def check_contest(contest: Any) -> str:
    if not isinstance(contest, str) or contest not in RACES:
        raise ValueError(f"contest must be one of {', '.join(RACES)}; got {short(contest)}")
    return contest


def race_validator(names: list[str], models: list[str]) -> Validator:
    """/race (inputs ``names``: the contest and the settings): the contest, and the settings for two
    solvers within the app's caps."""

    def check(named: dict[str, Any]) -> None:
        named = dict(named)
        contest = check_contest(named.pop("contest"))
        check_words(settle(models, race_settings(named), race=contest)[0])

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


# The page's half of the door: the browser draws a refused setting's message under its input, which may
# be out of view (folded in an accordion, or below the results on a phone). Every such message of the
# sidebar is also said right under the job button last pressed (Run or Race), in full, and scrolled into
# view; it goes when the inputs' messages go (the next check that passes).
DOOR_JS = """() => {
  let pressed = 'run';
  const noteOf = (id) => {
    const button = document.getElementById(id);
    if (!button) return null;
    let note = document.querySelector(`.door-note[data-for="${id}"]`);
    if (!note) {
      note = document.createElement('div');
      note.className = 'door-note';
      note.dataset.for = id;
      note.setAttribute('role', 'alert');
      (button.closest('.row') || button).after(note);
    }
    return note;
  };
  const say = (scroll) => {
    const said = [...document.querySelectorAll('#sidebar .validation-error')]
      .map((e) => e.textContent.trim()).filter(Boolean);
    const text = [...new Set(said)].join(' · ');
    for (const id of ['run', 'race']) {
      const note = noteOf(id);
      const want = id === pressed ? text : '';
      if (note && note.textContent !== want) { note.textContent = want; scroll = scroll || !!want; }
    }
    const note = noteOf(pressed);
    if (scroll && note && note.textContent) note.scrollIntoView({block: 'nearest'});
  };
  document.addEventListener('click', (e) => {
    const button = e.target.closest && e.target.closest('#run, #race');
    if (!button) return;
    pressed = button.id;
    setTimeout(() => say(true), 300);
  }, true);
  const watched = {childList: true, subtree: true, characterData: true};
  new MutationObserver(() => say(false)).observe(document.body, watched);
}"""
