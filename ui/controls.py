"""The control panel, generated from the settings' declarations (``paratta.config.specs``) and each
model's defaults (``paratta.registry.model_defaults``): no range, default or hint is typed here.

The most-used knobs come first (prompt, Run, solver, T, order, window); the rest sit in collapsed
groups. Small events keep the panel coherent: order, window and the iteration budget follow T
(``steps_changed``), a model switch brings that model's prompt, guidance and steps, and what does not
apply is hidden (history only for Anderson, order and window not for sequential).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from paratta import ModelDefaults, Request, SolverConfig
from paratta.config import Spec, specs

from .gpu import DEVICE
from .settings import Caps

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
}
# The auto-window box's default: the library's own (auto on CUDA, W = T elsewhere).
WINDOW_AUTO = DEVICE == "cuda"
# The auto-window box's note, off the GPU and on it (the library's default: T on a CPU, auto on CUDA).
WINDOW_AUTO_INFO = {
    False: "off: W = T, the teaching default on a CPU; on: the W of least projected wall-clock from "
    "this CPU's measured batch latency",
    True: "on: the W of least projected wall-clock from this GPU's measured batch latency; off: the "
    "window slider",
}
ETA_PRESETS = {"DDIM (η = 0)": 0.0, "DDPM (η = 1)": 1.0, "custom": None}
# The /run API's inputs, in order (docs/api.md); new ones go at the end.
RUN_INPUT_NAMES = (
    "model",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "eta",
    "guidance",
    "solver",
    "order",
    "window",
    "history",
    "tol",
    "max_iters",
    "init",
    "stopping",
    "window_auto",
    "family",
    "height",
    "width",
)
# The /race API's inputs: the run's, less the two each lane sets itself, then the contest; the inputs
# added after it came in (``AFTER_CONTEST``) follow it, so the API's order only grows at the end.
AFTER_CONTEST = ("window_auto", "family", "height", "width")
RACE_INPUT_NAMES = (
    *(n for n in RUN_INPUT_NAMES if n not in ("solver", "init", *AFTER_CONTEST)),
    "contest",
    *AFTER_CONTEST,
)


@dataclass
class Controls:
    model: gr.Dropdown
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    run: gr.Button
    stop: gr.Button
    seed: gr.Number
    steps: gr.Slider
    eta_preset: gr.Radio
    eta: gr.Slider
    guidance: gr.Slider
    solver: gr.Dropdown
    order: gr.Slider
    window: gr.Slider
    window_auto: gr.Checkbox
    history: gr.Slider
    tol: gr.Textbox
    max_iters: gr.Slider
    init: gr.Radio
    stopping: gr.Radio
    last_steps: gr.State  # the T that order, window and the budget were last fitted to
    family: gr.Radio
    height: gr.Textbox
    width: gr.Textbox

    def run_inputs(self) -> list[gr.components.Component]:
        """In the order of the ``/run`` API (``RUN_INPUT_NAMES``)."""
        return [getattr(self, name) for name in RUN_INPUT_NAMES]


def label(spec: Spec) -> str:
    """ "Order k": the panel's name for a setting, with the paper's letter."""
    text = spec.label or spec.name.replace("_", " ").capitalize()
    return f"{text} {spec.symbol}".strip()


def choices(spec: Spec) -> list[tuple[str, str]]:
    return [(CHOICE_LABELS.get(c, c), c) for c in spec.choices]


def slider(spec: Spec, value: float, hi: float, step: float = 1, **kw: Any) -> gr.Slider:
    """A slider over the setting's declared range (``hi`` resolves "T" and the app's caps)."""
    return gr.Slider(spec.lo, hi, value, step=step, label=label(spec), info=spec.hint, **kw)


def slider_top(T: int) -> int:
    """A Gradio slider needs maximum > minimum: at T = 1 the top is 2 and the library refuses 2."""
    return max(T, 2)


def prompt_hint(model: Any, defaults: ModelDefaults) -> str:
    vocabulary = getattr(model, "vocabulary", None)
    if vocabulary:
        words = "; ".join(f"{cat}: {', '.join(ws)}" for cat, ws in vocabulary.items() if cat != "ignored")
        return f"this model knows only these words — {words}"
    return REQUEST["prompt"].hint + (" (required)" if defaults.requires_prompt else "")


def size_box(name: str, model: Any) -> gr.Textbox:
    """A text box (blank: the pipeline's own size, shown as the placeholder), for the diffusers models
    that take an image size; hidden for the others. Not gr.Number: that sends 0 for "no value"."""
    return gr.Textbox("", **size_update(name, model), max_lines=1, info=REQUEST[name].hint, min_width=100)


def size_update(name: str, model: Any) -> dict[str, Any]:
    sized = bool(getattr(model, "takes_image_size", False))
    own = model.image_size[0 if name == "height" else 1] if sized else ""
    return {"label": f"{label(REQUEST[name])} (px)", "placeholder": f"{own}", "visible": sized}


def build_controls(
    models: list[str], default_model: str, model: Any, defaults: ModelDefaults, caps: Caps
) -> Controls:
    """Create the components (inside the current Blocks context), Run and Stop right under the prompt."""
    T = defaults.steps
    auto = SolverConfig().resolved(T)  # the library's "auto" values for this T
    with gr.Column(elem_id="sidebar-top"):  # on a phone the results come right after this part
        prompt = gr.Textbox(
            defaults.prompt, label="Prompt", info=prompt_hint(model, defaults), max_lines=2, elem_id="prompt"
        )
        negative = gr.Textbox(
            REQUEST["negative_prompt"].default,
            label="Negative prompt",
            visible=bool(getattr(model, "takes_negative_prompt", False)),
            max_lines=2,
            info=REQUEST["negative_prompt"].hint,
        )
        with gr.Row():
            run = gr.Button("Run", variant="primary", elem_id="run", min_width=80)
            stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=80)
    with gr.Column(elem_id="sidebar-rest"):  # on a phone: under the results
        dropdown = gr.Dropdown(
            models, value=default_model, label="Model", info="a diffusers model comes from --model"
        )
        family = gr.Radio(
            choices(REQUEST["family"]),
            value=REQUEST["family"].default,
            label=label(REQUEST["family"]),
            info=REQUEST["family"].hint,
        )
        with gr.Row():
            height, width = size_box("height", model), size_box("width", model)
        solver = gr.Dropdown(
            choices(CONFIG["solver"]),
            value=CONFIG["solver"].default,
            label="Solver",
            info=CONFIG["solver"].hint,
        )
        steps = slider(REQUEST["steps"], T, min(REQUEST["steps"].hi, caps.max_steps))
        with gr.Row():
            order = slider(CONFIG["order"], auto.order, slider_top(T), min_width=140)
            window = slider(
                CONFIG["window"], auto.window, slider_top(min(T, caps.max_window)), min_width=140,
                interactive=not WINDOW_AUTO,
            )  # fmt: skip
        window_auto = gr.Checkbox(
            WINDOW_AUTO,
            label="Auto window: the fastest W on this device",
            info=WINDOW_AUTO_INFO[WINDOW_AUTO],
        )
        with gr.Accordion("Sampler: seed, DDIM/DDPM, guidance", open=False):
            seed = gr.Number(
                REQUEST["seed"].default,
                label=label(REQUEST["seed"]),
                precision=0,
                minimum=REQUEST["seed"].lo,
                info=REQUEST["seed"].hint,
            )
            eta_preset = gr.Radio(
                list(ETA_PRESETS), value="DDIM (η = 0)", label="Sampler", info=REQUEST["eta"].hint
            )
            eta = slider(REQUEST["eta"], REQUEST["eta"].default, REQUEST["eta"].hi, step=0.05)
            guidance = slider(REQUEST["guidance"], defaults.guidance, REQUEST["guidance"].hi, step=0.5)
        with gr.Accordion("Solver details: history, tolerance, stopping, initialisation", open=False):
            history = slider(CONFIG["history"], CONFIG["history"].default, CONFIG["history"].hi)
            # A text box, not gr.Number: a Number shows (and, once its accordion opens, sends) 0 for
            # "no value", and 0 is outside tol's range. Empty = auto, each rule's own.
            tol = gr.Textbox(
                "", label=label(CONFIG["tol"]), placeholder="auto", info=CONFIG["tol"].hint, max_lines=1
            )
            stopping = gr.Radio(
                choices(CONFIG["stopping"]), value=CONFIG["stopping"].default, label="Stopping rule",
                info=CONFIG["stopping"].hint,
            )  # fmt: skip
            max_iters = slider(CONFIG["max_iters"], auto.max_iters, slider_top(T))
            init = gr.Radio(
                choices(CONFIG["init"]),
                value=CONFIG["init"].default,
                label="Initialisation",
                info=CONFIG["init"].hint,
            )
    return Controls(
        dropdown, prompt, negative, run, stop, seed, steps, eta_preset, eta, guidance, solver, order, window,
        window_auto, history, tol, max_iters, init, stopping, gr.State(T), family, height, width,
    )  # fmt: skip


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


def steps_changed(steps: Any, order: Any, window: Any, max_iters: Any, previous: Any) -> tuple[Any, ...]:
    """Fit order, window and the iteration budget to a new T.

    A knob that sat at the top of its range (= the previous T) was pinned there by a smaller T or left
    at "all": it goes back to the library's auto value for the new T (order min(20, T), window T,
    budget T). Any other value is kept, clamped to T. So T 50 → 2 → 100 ends at order 20 and window
    100, while a preset that sets T and a window together keeps its window.
    """
    T = as_steps(steps)
    if T is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # the run itself will say what is wrong
    auto = SolverConfig().resolved(T)
    last = as_steps(previous)

    def fit(value: Any, auto_value: int) -> int:
        v = as_steps(value)
        if v is None or v == last:
            return auto_value
        return min(v, T)

    top = slider_top(T)
    return (
        gr.update(maximum=top, value=fit(order, auto.order)),
        gr.update(maximum=top, value=fit(window, auto.window)),
        gr.update(maximum=top, value=fit(max_iters, auto.max_iters)),
        T,
    )


def eta_preset_changed(preset: str, eta: float) -> dict:
    value = ETA_PRESETS.get(preset)
    return gr.update(value=eta if value is None else value)


def eta_moved(eta: float) -> dict:
    return gr.update(value=next((k for k, v in ETA_PRESETS.items() if v == eta), "custom"))


def wire(c: Controls, describe: Any) -> None:
    """Attach the control-only events; ``describe(name)`` gives (model, ``ModelDefaults``) for a name."""
    private: dict[str, Any] = {"api_visibility": "private", "queue": False}
    c.solver.change(solver_visibility, c.solver, [c.order, c.window, c.window_auto, c.history], **private)
    c.window_auto.change(window_auto_changed, c.window_auto, c.window, **private)
    c.steps.change(
        steps_changed,
        [c.steps, c.order, c.window, c.max_iters, c.last_steps],
        [c.order, c.window, c.max_iters, c.last_steps],
        preprocess=False,  # a typed value outside the slider's range must not be an HTTP 500
        **private,
    )
    c.eta_preset.input(eta_preset_changed, [c.eta_preset, c.eta], c.eta, **private)
    c.eta.input(eta_moved, c.eta, c.eta_preset, **private)

    def model_changed(name: str) -> tuple[dict, ...]:
        model, d = describe(name)
        return (
            gr.update(value=d.prompt, info=prompt_hint(model, d)),
            gr.update(visible=bool(getattr(model, "takes_negative_prompt", False))),
            gr.update(value=d.guidance),
            gr.update(value=d.steps),
            *(gr.update(value="", **size_update(n, model)) for n in ("height", "width")),
        )

    outputs = [c.prompt, c.negative_prompt, c.guidance, c.steps, c.height, c.width]
    c.model.input(model_changed, c.model, outputs, api_visibility="private")
