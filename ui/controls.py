"""The control panel: every setting with a one-line hint, defaults that converge visibly in seconds on
a CPU, and the small events that hide what does not apply (history only for Anderson, order/window not
for sequential).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from paratta import BUILTIN_MODELS

from .settings import Caps

SOLVER_CHOICES = [
    ("Sequential", "sequential"),
    ("Jacobi (fixed point)", "jacobi"),
    ("Anderson (TAA)", "anderson"),
    ("Anderson (global γ)", "anderson-global"),
]
INIT_CHOICES = [
    ("x_T copies", "xT"),
    ("previous run's trajectory", "trajectory"),
    ("coarse sequential pass", "coarse"),
]
ETA_PRESETS = {"DDIM (η = 0)": 0.0, "DDPM (η = 1)": 1.0, "custom": None}
DEFAULT_PROMPTS = {"shapes": "red circle on blue", "toy2d": "north"}
SD_PROMPT = "a watercolour painting of a lighthouse at dawn"


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
    history: gr.Slider
    tol: gr.Number
    max_iters: gr.Slider
    init: gr.Radio

    def run_inputs(self) -> list[gr.components.Component]:
        """In the order of the ``/run`` API (see the README, "Driving the app from Python")."""
        return [
            self.model,
            self.prompt,
            self.negative_prompt,
            self.seed,
            self.steps,
            self.eta,
            self.guidance,
            self.solver,
            self.order,
            self.window,
            self.history,
            self.tol,
            self.max_iters,
            self.init,
        ]


def prompt_hint(model: Any) -> str:
    vocabulary = getattr(model, "vocabulary", None)
    if not vocabulary:
        return "what to draw"
    words = "; ".join(f"{cat}: {', '.join(ws)}" for cat, ws in vocabulary.items() if cat != "ignored")
    return f"this model knows only these words — {words}"


def model_defaults(name: str, model: Any) -> dict[str, Any]:
    """Prompt, hint, negative-prompt visibility and guidance that suit a model."""
    text = getattr(model, "text_encoder", None) is not None  # Stable Diffusion
    if name in BUILTIN_MODELS:
        prompt, hint, guidance = DEFAULT_PROMPTS.get(name, ""), prompt_hint(model), 1.0
    elif text:
        prompt, hint, guidance = SD_PROMPT, "what to draw (required)", 5.0
    else:
        prompt, hint, guidance = "", "a class label or id; empty = unconditional", 4.0
    negative = bool(getattr(model, "takes_negative_prompt", False))
    return {"prompt": prompt, "prompt_hint": hint, "negative": negative, "guidance": guidance}


def build_controls(models: list[str], default_model: str, defaults: dict[str, Any], caps: Caps) -> Controls:
    """Create the components (inside the current Blocks context), Run and Stop right under the prompt."""
    T = 50
    model = gr.Dropdown(
        models,
        value=default_model,
        label="Model",
        info="built-in exact-score models run on a CPU; a diffusers model comes from --model",
    )
    prompt = gr.Textbox(defaults["prompt"], label="Prompt", info=defaults["prompt_hint"], max_lines=2)
    negative = gr.Textbox(
        "",
        label="Negative prompt",
        visible=defaults["negative"],
        max_lines=2,
        info="steered away from when guidance > 1",
    )
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id="run")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    with gr.Accordion("Sampler", open=True):
        with gr.Row():
            seed = gr.Number(0, label="Seed", precision=0, minimum=0, info="fixes x_T and the DDPM noises")
            steps = gr.Slider(2, caps.max_steps, T, step=1, label="Steps T", info="sequential network calls")
        eta_preset = gr.Radio(
            list(ETA_PRESETS),
            value="DDIM (η = 0)",
            label="Sampler",
            info="DDPM noises are drawn once from the seed: the system stays deterministic",
        )
        eta = gr.Slider(0.0, 1.0, 0.0, step=0.05, label="η", info="0 = DDIM … 1 = DDPM-like stochastic steps")
        guidance = gr.Slider(
            0.0,
            15.0,
            defaults["guidance"],
            step=0.5,
            label="Guidance s",
            info="classifier-free guidance ε_u + s(ε_c − ε_u); 1 = plain conditional",
        )
    with gr.Accordion("Solver", open=True):
        solver = gr.Dropdown(
            SOLVER_CHOICES,
            value="anderson",
            label="Solver",
            info="how the triangular system is solved; Sequential = one step per iteration",
        )
        order = gr.Slider(
            1,
            T,
            20,
            step=1,
            label="Order k",
            info="equations unrolled k steps: larger k spreads fixes faster, same network cost",
        )
        window = gr.Slider(
            1,
            T,
            T,
            step=1,
            label="Window W",
            info="timesteps evaluated per parallel iteration, in one batched network call",
        )
        history = gr.Slider(
            1,
            5,
            2,
            step=1,
            label="History m",
            info="iterates Anderson remembers; 1 = plain fixed point, 2 = the paper default",
        )
        tol = gr.Number(
            1e-3,
            label="Tolerance",
            minimum=0,
            info="a timestep is final when its RMS residual against the anchor is below this",
        )
        max_iters = gr.Slider(
            1,
            T,
            T,
            step=1,
            label="Max iterations",
            info="iteration budget; T always suffices (≥ 1 timestep final per iteration)",
        )
        init = gr.Radio(
            INIT_CHOICES,
            value="xT",
            label="Initialisation",
            info="every start converges to the same sample; a good one saves iterations",
        )
    return Controls(
        model,
        prompt,
        negative,
        run,
        stop,
        seed,
        steps,
        eta_preset,
        eta,
        guidance,
        solver,
        order,
        window,
        history,
        tol,
        max_iters,
        init,
    )


def solver_visibility(solver: str) -> tuple[dict, dict, dict]:
    """(order, window, history) updates: order and window not for sequential, history only for Anderson."""
    parallel = solver != "sequential"
    anderson = solver.startswith("anderson")
    return gr.update(visible=parallel), gr.update(visible=parallel), gr.update(visible=anderson)


def steps_changed(steps: float, order: float, window: float) -> tuple[dict, dict, dict]:
    """Keep order, window and the budget within 1…T when T changes; the budget follows T."""
    T = int(steps)
    return (
        gr.update(maximum=T, value=min(int(order), T)),
        gr.update(maximum=T, value=min(int(window), T)),
        gr.update(maximum=T, value=T),
    )


def eta_preset_changed(preset: str, eta: float) -> dict:
    value = ETA_PRESETS.get(preset)
    return gr.update(value=eta if value is None else value)


def eta_moved(eta: float) -> dict:
    return gr.update(value=next((k for k, v in ETA_PRESETS.items() if v == eta), "custom"))


def wire(c: Controls, describe: Any) -> None:
    """Attach the control-only events; ``describe(name)`` gives ``model_defaults`` for a model name."""
    private: dict[str, Any] = {"api_visibility": "private", "queue": False}
    c.solver.change(solver_visibility, c.solver, [c.order, c.window, c.history], **private)
    c.steps.change(steps_changed, [c.steps, c.order, c.window], [c.order, c.window, c.max_iters], **private)
    c.eta_preset.input(eta_preset_changed, [c.eta_preset, c.eta], c.eta, **private)
    c.eta.input(eta_moved, c.eta, c.eta_preset, **private)

    def model_changed(name: str) -> tuple[dict, dict, dict]:
        d = describe(name)
        return (
            gr.update(value=d["prompt"], info=d["prompt_hint"]),
            gr.update(visible=d["negative"]),
            gr.update(value=d["guidance"]),
        )

    c.model.change(
        model_changed, c.model, [c.prompt, c.negative_prompt, c.guidance], api_visibility="private"
    )
