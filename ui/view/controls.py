"""The control panel, generated from the settings' declarations (``paratta.config.specs``) and each
model's defaults (``paratta.registry.model_defaults``): no range or default is typed here.

``WIDGETS`` maps each input, by setting name, to its group, its component and a short line under its
label, in the order the sidebar reads; the declared hint, in full, is under "What the settings mean".
The most-used knobs come first (prompt, Run, model, T, solver, order, window); the rest sit in
collapsed groups. ``RUN_INPUT_NAMES`` is the order of the /run API's parameters (where each came in:
a positional gradio_client call keeps its meaning). Small events keep the panel coherent: order,
window and the iteration budget follow T (``steps_changed``, from the library's auto values: a run
posed dry), a model switch brings that model's prompt, guidance and steps, and what does not apply is
hidden (history only for Anderson, order and window not for sequential).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from paratta import ModelDefaults, Request, SolverConfig, pose
from paratta.config import Spec, specs
from paratta.planning.plan import Plan
from paratta.samplers import SAMPLERS, family

from ..serve import models as served
from ..serve.gpu import DEVICE
from ..serve.limits import Caps

REQUEST, CONFIG = specs(Request), specs(SolverConfig)
CHOICE_LABELS = {  # how a choice reads in the panel; the values are the library's
    "sequential": "Sequential",
    "jacobi": "Jacobi (fixed point)",
    "anderson": "Anderson (TAA)",
    "anderson-global": "Anderson (global γ)",
    "xT": "x_T copies",
    "trajectory": "previous run's trajectory",
    "coarse": "coarse sequential pass",
    "budget": "budget: x₀ within tol of sequential",
    "per-step": "per-step (the published rule)",
    "auto": "the model's own",
    "ddim": "DDIM (ε)",
    "flow": "flow matching (Euler, v)",
}  # the samplers read as the registry labels them (``paratta.samplers.SAMPLERS``)
# The auto-window box's default: the library's own (auto on CUDA, W = T elsewhere).
WINDOW_AUTO = DEVICE == "cuda"
# The auto-window box's note, off the GPU and on it (the library's default: T on a CPU, auto on CUDA).
WINDOW_AUTO_INFO = {
    False: "off: W = T, the CPU default; on: the W measured fastest here",
    True: "on: the W measured fastest here; off: the slider",
}


@dataclass(frozen=True)
class Panel:
    """What a widget is built from: the run's T and the library's auto values for it, the model and its
    defaults, the app's models and caps."""

    models: list[str]
    model_name: str
    model: Any
    defaults: ModelDefaults
    caps: Caps

    @property
    def T(self) -> int:
        return self.defaults.steps

    @property
    def auto(self) -> Plan:
        return auto_values(self.model, self.T)

    def value(self, spec: Spec) -> Any:
        """A widget's first value: the model's own default, else the library's auto value for T (a number
        the declaration leaves to the run), else the declared default."""
        own = {"prompt": self.defaults.prompt, "guidance": self.defaults.guidance, "steps": self.T}
        if spec.name in own:
            return own[spec.name]
        if spec.name in CONFIG and spec.kind is int and not isinstance(spec.default, int):
            return getattr(self.auto, spec.name)
        return spec.default

    def top(self, spec: Spec) -> float:
        """A slider's maximum: the declared upper end, "T" resolved, within the app's caps."""
        cap = {"steps": self.caps.max_steps, "window": self.caps.max_window}.get(spec.name, math.inf)
        hi = self.T if spec.hi == "T" else spec.hi
        return slider_top(min(hi, cap)) if spec.hi == "T" else min(hi, cap)


Make = Callable[[Spec, Panel, str], gr.components.Component]


def auto_values(model: Any, steps: int) -> Plan:
    """The library's own values for T = ``steps`` (order min(20, T), window T, max iterations T): the
    plan of the default settings, posed dry."""
    return pose(model, Request(steps=steps), SolverConfig(), DEVICE, dry=True).plan


def slider_widget(step: float = 1, **kw: Any) -> Make:
    def make(spec: Spec, panel: Panel, info: str) -> gr.Slider:
        return gr.Slider(
            spec.lo, panel.top(spec), panel.value(spec), step=step, label=label(spec), info=info, **kw
        )

    return make


def families(model: Any) -> list[str]:
    """The sampler families ``model`` can be sampled with: its own ("auto"), and the other for a model
    that has both (``for_family``)."""
    own = family(model.scheduler_config)
    both = served.has_both_families(model)
    return [f for f in REQUEST["family"].choices if f in ("auto", own) or both]


def family_widget(spec: Spec, panel: Panel, info: str) -> gr.Radio:
    offered = families(panel.model)
    return gr.Radio(
        [c for c in choices(spec) if c[1] in offered], value=spec.default, label=label(spec), info=info
    )


def radio_widget(spec: Spec, panel: Panel, info: str) -> gr.Radio:
    return gr.Radio(choices(spec), value=panel.value(spec), label=label(spec), info=info)


def dropdown_widget(spec: Spec, panel: Panel, info: str) -> gr.Dropdown:
    return gr.Dropdown(choices(spec), value=panel.value(spec), label=label(spec), info=info)


def model_widget(spec: Spec, panel: Panel, info: str) -> gr.Dropdown:
    return gr.Dropdown(panel.models, value=panel.model_name, label="Model", info=info)


def prompt_widget(spec: Spec, panel: Panel, info: str) -> gr.Textbox:
    return gr.Textbox(
        panel.value(spec), label="Prompt", info=prompt_hint(panel.model, panel.defaults), max_lines=2,
        elem_id="prompt",
    )  # fmt: skip


def negative_widget(spec: Spec, panel: Panel, info: str) -> gr.Textbox:
    return gr.Textbox(
        spec.default, label=label(spec), info=info, max_lines=2,
        visible=bool(panel.model.takes_negative_prompt),
    )  # fmt: skip


def seed_widget(spec: Spec, panel: Panel, info: str) -> gr.Number:
    return gr.Number(spec.default, label=label(spec), precision=0, minimum=spec.lo, info=info)


def tol_widget(spec: Spec, panel: Panel, info: str) -> gr.Textbox:
    """A text box, not gr.Number: a Number shows (and, once its accordion opens, sends) 0 for "no
    value", and 0 is outside tol's range. Empty = auto, each rule's own."""
    return gr.Textbox("", label=label(spec), placeholder="auto", info=info, max_lines=1)


def window_auto_widget(spec: Spec, panel: Panel, info: str) -> gr.Checkbox:
    return gr.Checkbox(WINDOW_AUTO, label="Auto window", info=WINDOW_AUTO_INFO[WINDOW_AUTO])


def size_widget(spec: Spec, panel: Panel, info: str) -> gr.Textbox:
    """A text box (blank: the pipeline's own size, shown as the placeholder), for the diffusers models
    that take an image size; hidden for the others. Not gr.Number: that sends 0 for "no value"."""
    return gr.Textbox("", **size_update(spec.name, panel.model), max_lines=1, info=info, min_width=100)


def size_update(name: str, model: Any) -> dict[str, Any]:
    size = served.image_size(model)
    own = size[0 if name == "height" else 1] if size is not None else ""
    return {"label": f"{label(REQUEST[name])} (px)", "placeholder": f"{own}", "visible": size is not None}


def samplers(model: Any) -> list[str]:
    """The samplers ``model`` can be sampled with: a flow-matching model those with a flow form
    (``paratta.samplers.SAMPLERS``); a DDIM-family model (or one with both families) every sampler."""
    flow_only = family(model.scheduler_config) == "flow" and not served.has_both_families(model)
    return [
        c
        for c in REQUEST["sampler"].choices
        if not flow_only or c == "auto" or SAMPLERS[c].velocity is not None
    ]


def sampler_widget(spec: Spec, panel: Panel, info: str) -> gr.Dropdown:
    offered = samplers(panel.model)
    return gr.Dropdown([c for c in choices(spec) if c[1] in offered], value=spec.default, label=label(spec),
                       info=info)  # fmt: skip


@dataclass(frozen=True)
class Widget:
    """How one input shows in the panel: its group, the component that edits it, and a short line under
    its label (the declaration's full hint is in "What the settings mean", one click away)."""

    group: str
    make: Make
    info: str = ""


# The groups of the panel, top to bottom: above Run, the open panel, then two collapsed accordions
# (named by their titles).
TOP, MAIN, SAMPLER, DETAILS = "top", "main", "Sampler: seed, DDIM/DDPM, guidance", "Solver details"
# Every input of the panel, by setting name (``model`` and ``window_auto`` are the app's own), in the order
# the sidebar reads, group by group. Adding a setting: its declaration in paratta.config, one line here
# and its name at the end of RUN_INPUT_NAMES.
WIDGETS: dict[str, Widget] = {
    "prompt": Widget(TOP, prompt_widget),
    "negative_prompt": Widget(TOP, negative_widget, "steered away from when guidance > 1"),
    "model": Widget(MAIN, model_widget, "built-in, or the app's --model"),
    "steps": Widget(MAIN, slider_widget(), "sequential network calls"),
    "solver": Widget(MAIN, dropdown_widget, "Anderson (TAA) is ParaTAA"),
    "order": Widget(MAIN, slider_widget(), "steps each equation unrolls"),
    "window": Widget(MAIN, slider_widget(interactive=not WINDOW_AUTO), "steps solved per batched call"),
    "window_auto": Widget(MAIN, window_auto_widget),
    "family": Widget(MAIN, family_widget, "flow matching only where the model has it"),
    "height": Widget(MAIN, size_widget, "pixels; blank: the pipeline's own"),
    "width": Widget(MAIN, size_widget, "pixels; blank: the pipeline's own"),
    "sampler": Widget(MAIN, sampler_widget, "the model's own, or another on its noise schedule"),
    "seed": Widget(SAMPLER, seed_widget, "fixes x_T; 0 … 4294967295 (2³² − 1): every x_T there is"),
    "eta": Widget(SAMPLER, slider_widget(0.05), "0 = DDIM, 1 = DDPM"),
    "guidance": Widget(SAMPLER, slider_widget(0.5), "classifier-free; 1 = off"),
    "history": Widget(DETAILS, slider_widget(), "iterates Anderson remembers"),
    "tol": Widget(DETAILS, tol_widget, "empty: each rule's own"),
    "max_iters": Widget(DETAILS, slider_widget(), "parallel iterations at most"),
    "init": Widget(DETAILS, radio_widget, "the first guess of the trajectory"),
    "stopping": Widget(DETAILS, radio_widget, "when the iteration ends"),
}
# The /run API's parameters (docs/api.md), in the order each came in: a new one goes at the end, so a
# positional gradio_client call keeps its meaning.
RUN_INPUT_NAMES = (
    "model", "prompt", "negative_prompt", "seed", "steps", "eta", "guidance", "solver", "order", "window",
    "history", "tol", "max_iters", "init", "stopping", "window_auto", "family", "height", "width", "sampler",
)  # fmt: skip
# The /race API: the run's inputs less those each lane sets itself, with the contest after "stopping"
# (where it came in; the inputs after it came later).
LANE_SETTINGS = ("solver", "init")
_shared = [n for n in RUN_INPUT_NAMES if n not in LANE_SETTINGS]
_at = _shared.index("stopping") + 1
RACE_INPUT_NAMES = (*_shared[:_at], "contest", *_shared[_at:])
SPECS = {**REQUEST, **CONFIG}


@dataclass
class Controls:
    """The panel's inputs by name (``WIDGETS``), Run and Stop, and the T the T-bound sliders fit."""

    inputs: dict[str, gr.components.Component]
    run: gr.Button
    stop: gr.Button
    last_steps: gr.State  # the T that order, window and the budget were last fitted to
    vocabulary: gr.Accordion  # "Words": shown for a model with a vocabulary
    words: gr.Markdown  # the vocabulary, by category
    note: gr.Markdown  # what the panel changed by itself (a knob clamped to a new T)
    models: list[str]  # the models the panel offers, the default first

    def __getitem__(self, name: str) -> gr.components.Component:
        return self.inputs[name]


def label(spec: Spec) -> str:
    """ "Order k": the panel's name for a setting, with the paper's letter."""
    text = spec.label or spec.name.replace("_", " ").capitalize()
    return f"{text} {spec.symbol}".strip()


def choices(spec: Spec) -> list[tuple[str, str]]:
    if spec.name == "sampler":
        return [(SAMPLERS[c].label if c in SAMPLERS else CHOICE_LABELS[c], c) for c in spec.choices]
    return [(CHOICE_LABELS.get(c, c), c) for c in spec.choices]


def slider_top(T: int) -> int:
    """A Gradio slider needs maximum > minimum: at T = 1 the top is 2 and the library refuses 2."""
    return max(T, 2)


def prompt_hint(model: Any, defaults: ModelDefaults) -> str:
    """The prompt's hint for the kind of model: an embedded model's own words, a class-conditional
    model's class names, or any text for a text encoder."""
    if served.vocabulary(model):
        return "only this model's words (Words, below); empty: any of its images"
    if model.labels is not None:
        return "one of its class names, or a class id; empty: unconditional"
    required = "required" if defaults.requires_prompt else "empty: unconditional"
    return f"what to draw, in any words: its text encoder reads them ({required})"


def words(model: Any) -> str:
    """The embedded model's vocabulary, by category ("" for a model that reads any text)."""
    vocabulary = served.vocabulary(model)
    return "  \n".join(f"**{cat}**: {', '.join(ws)}" for cat, ws in vocabulary.items() if cat != "ignored")


def glossary() -> str:
    """Every setting of the panel with its declared hint and range: the depth behind the short lines."""
    rows = [
        f"- **{label(SPECS[n])}** (`{n}`): {SPECS[n].hint}; {SPECS[n].range_text}"
        for n in WIDGETS
        if n in SPECS
    ]
    return "\n".join(rows)


def build_controls(
    models: list[str], default_model: str, model: Any, defaults: ModelDefaults, caps: Caps
) -> Controls:
    """Create the components (inside the current Blocks context) group by group, Run and Stop right under
    the prompt."""
    panel = Panel(models, default_model, model, defaults, caps)
    inputs: dict[str, gr.components.Component] = {}

    def place(group: str) -> None:
        for name, w in WIDGETS.items():
            if w.group == group:
                spec = SPECS.get(name) or Spec(name, str, None, "")
                inputs[name] = w.make(spec, panel, w.info)

    with gr.Column(elem_id="sidebar-top"):  # on a phone the results come right after this part
        place(TOP)
        with gr.Accordion("Words", open=False, visible=bool(words(model))) as vocabulary:
            known = gr.Markdown(words(model), elem_classes="legend")
        with gr.Row():
            run = gr.Button("Run", variant="primary", elem_id="run", min_width=80)
            stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=80)
    with gr.Column(elem_id="sidebar-rest"):  # on a phone: under the results
        place(MAIN)
        note = gr.Markdown(elem_id="panel-note", elem_classes="legend")
        for group in (SAMPLER, DETAILS):
            with gr.Accordion(group, open=False):
                place(group)
        with gr.Accordion("What the settings mean", open=False):
            gr.Markdown(glossary(), elem_classes="legend")
    ordered = {name: inputs[name] for name in WIDGETS}
    models_offered = [default_model, *(m for m in models if m != default_model)]
    return Controls(ordered, run, stop, gr.State(panel.T), vocabulary, known, note, models_offered)


def solver_visibility(solver: str) -> tuple[dict, dict, dict, dict]:
    """(order, window, auto window, history) updates: order and window not for sequential, history only
    for Anderson."""
    parallel = solver != "sequential"
    anderson = str(solver).startswith("anderson")
    shown = gr.update(visible=parallel)
    return shown, shown, shown, gr.update(visible=anderson)


def window_auto_changed(auto: bool) -> dict:
    """The window slider is the user's only while auto is off."""
    return gr.update(interactive=not auto)


def as_steps(value: Any) -> int | None:
    """T from a raw slider value (the browser may post anything a user typed); None if not a valid T."""
    try:
        T = int(float(value))
    except (TypeError, ValueError):
        return None
    try:
        REQUEST["steps"].check(T)
    except ValueError:
        return None
    return T


def steps_changed(
    steps: Any, order: Any, window: Any, max_iters: Any, previous: Any, model: Any = None
) -> tuple[Any, ...]:
    """Fit order, window and the iteration budget to a new T, and say which value was lowered.

    A knob that sat at the top of its range (= the previous T) was pinned there by a smaller T or left
    at "all": it goes back to the library's auto value for the new T (order min(20, T), window T,
    budget T, ``auto_values`` of the panel's ``model``; the app's default model when none is given).
    Any other value is kept, clamped to T. So T 50 → 2 → 100 ends at order 20 and window 100, while a
    preset that sets T and a window together keeps its window.
    """
    T = as_steps(steps)
    if T is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()  # the run itself will say what is wrong
    auto = auto_values(model if model is not None else served.get_model(served.DEFAULT), T)
    last = as_steps(previous)
    lowered = []

    def fit(name: str, value: Any, auto_value: int) -> int:
        v = as_steps(value)
        if v is None or v == last:
            return auto_value
        if v > T:
            lowered.append(f"{label(CONFIG[name])} {v} → {T}")
        return min(v, T)

    top = slider_top(T)
    fitted = [fit("order", order, auto.order), fit("window", window, auto.window)]
    fitted.append(fit("max_iters", max_iters, auto.max_iters))
    note = f"Lowered to T = {T} (none may exceed T): {', '.join(lowered)}." if lowered else ""
    return (*(gr.update(maximum=top, value=v) for v in fitted), T, note)


# Typed into a slider's number box, a value outside its range is set to the nearest end by the page
# itself, before any event: this says so under the slider, in words.
CLAMP_JS = """() => {
  const check = (e) => {
    const box = e.target;
    const name = box?.getAttribute?.('aria-label') || '';
    if (!name.startsWith('number input for ') || !box.closest('#sidebar') || box.value === '') return;
    const v = Number(box.value), lo = Number(box.min), hi = Number(box.max);
    const block = box.closest('.block');
    let note = block.querySelector('.clamp-note');
    if (!note) {
      note = block.appendChild(document.createElement('div'));
      note.className = 'clamp-note';
    }
    const what = name.slice('number input for '.length);
    note.textContent = v < lo ? `${what}: ${box.value} is below ${lo}, so it is ${lo}`
      : v > hi ? `${what}: ${box.value} is above ${hi} (the most here), so it is ${hi}` : '';
  };
  document.addEventListener('keydown', (e) => { if (e.key === 'Enter') check(e); }, true);
  document.addEventListener('blur', check, true);  // capture: before the box sets its value
}"""


def wire(c: Controls, describe: Any) -> None:
    """Attach the control-only events; ``describe(name)`` gives (model, ``ModelDefaults``) for a name."""
    private: dict[str, Any] = {"api_visibility": "private", "queue": False}
    c["solver"].change(
        solver_visibility,
        c["solver"],
        [c[n] for n in ("order", "window", "window_auto", "history")],
        **private,
    )
    c["window_auto"].change(window_auto_changed, c["window_auto"], c["window"], **private)
    fitted = [c[n] for n in ("order", "window", "max_iters")]

    def fit_to_steps(steps: Any, order: Any, window: Any, max_iters: Any, previous: Any, name: Any) -> Any:
        served = name if name in c.models else c.models[0]  # a raw value: only a served model is looked up
        return steps_changed(steps, order, window, max_iters, previous, describe(served)[0])

    c["steps"].change(
        fit_to_steps,
        [c["steps"], *fitted, c.last_steps, c["model"]],
        [*fitted, c.last_steps, c.note],
        preprocess=False,  # a typed value outside the slider's range must not be an HTTP 500
        **private,
    )

    def model_changed(name: str, wanted: str) -> tuple[Any, ...]:
        """The model's prompt, vocabulary, guidance and steps; the families it has (the one chosen kept
        only if it has it)."""
        model, d = describe(name)
        offered = families(model)
        family_ = gr.update(
            choices=[c for c in choices(REQUEST["family"]) if c[1] in offered],
            value=wanted if wanted in offered else REQUEST["family"].default,
        )
        return (
            gr.update(value=d.prompt, info=prompt_hint(model, d)),
            gr.update(visible=bool(model.takes_negative_prompt)),
            gr.update(value=d.guidance),
            gr.update(value=d.steps),
            family_,
            *(gr.update(value="", **size_update(n, model)) for n in ("height", "width")),
            gr.update(
                choices=[c for c in choices(REQUEST["sampler"]) if c[1] in samplers(model)],
                value=REQUEST["sampler"].default,
            ),
            gr.update(visible=bool(words(model))),
            words(model),
        )

    outputs = [c[n] for n in ("prompt", "negative_prompt", "guidance", "steps", "family", "height", "width")]
    outputs.append(c["sampler"])
    c["model"].input(
        model_changed,
        [c["model"], c["family"]],
        [*outputs, c.vocabulary, c.words],
        api_visibility="private",
    )
