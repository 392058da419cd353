"""The Blocks layout and its events. ``build_demo`` is all a launcher (or a test) needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr

from paratta import BUILTIN_MODELS

from .controls import build_controls, model_defaults, wire
from .handlers import (
    after_stop,
    lock_scrub,
    make_race_handler,
    make_run_handler,
    scrub,
    scrub_ready,
    use_as_init,
)
from .session import get_model
from .settings import Caps
from .teach import build_teach_tab
from .views import DIFF_GAIN, HEATMAP_LEGEND

EXPLAIN = Path(__file__).with_name("explain.md").read_text(encoding="utf-8")
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
CSS = """
.gradio-container {max-width: 1500px !important}
#stats {min-height: 3.4em}
#title h1 {margin-bottom: 0.2em}
.legend {font-size: 0.85em; opacity: 0.8}
"""
THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="cyan", neutral_hue="slate")
INTRO = (
    "# ParaTAA, converging live\n"
    "Diffusion sampling solved as a triangular system by **parallel fixed-point iterations** with "
    "**Triangular Anderson Acceleration** (Tang et al., ICML 2024). Each frame is one parallel iteration of "
    "the solver; the run ends on the very image the sequential sampler makes."
)


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` that style the app (theme and CSS live in launch in Gradio 6)."""
    return {"theme": THEME, "css": CSS, "footer_links": ["api"]}


def concurrency_limit() -> int:
    """Runs served at once: 1 on a shared Space, 2 elsewhere (or ``PARATTA_CONCURRENCY``)."""
    default = 1 if os.environ.get("SPACE_ID") else 2
    return max(1, int(os.environ.get("PARATTA_CONCURRENCY", default)))


def image(label: str, elem_id: str | None = None, height: int = 270) -> gr.Image:
    return gr.Image(
        label=label, format="png", interactive=False, elem_id=elem_id, buttons=["download"], height=height
    )


def build_demo(extra_model: str | None = None) -> gr.Blocks:
    """The whole app on the built-in models plus ``extra_model`` (a diffusers folder or hub id), which
    becomes the default. Models are loaded here, at start-up (ZeroGPU wants them loaded at import)."""
    models = list(BUILTIN_MODELS)
    if extra_model and extra_model not in models:
        models.append(extra_model)
    loaded = {name: get_model(name) for name in models}
    default = extra_model or "shapes"
    caps = Caps.from_env()

    def describe(name: str) -> dict[str, Any]:
        return model_defaults(name, loaded.get(name) or get_model(name))

    with gr.Blocks(title="ParaTAA live — parallel diffusion sampling") as demo:
        gr.Markdown(INTRO, elem_id="title")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=330):
                c = build_controls(models, default, describe(default), caps)
                run_btn, stop_btn = c.run, c.stop
                use_btn = gr.Button("Use this run as initialisation", size="sm")
                init_note = gr.Markdown()
                gr.Markdown(
                    f"Caps here: T ≤ {caps.max_steps}, window ≤ {caps.max_window}; larger values are "
                    "refused with a message.",
                    elem_classes="legend",
                )
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Run"):
                        stats = gr.Markdown(
                            "Press **Run**: the sequential reference is computed first, then "
                            "the parallel solver streams one frame per iteration.",
                            elem_id="stats",
                        )
                        with gr.Row():
                            img = image("ParaTAA: current iterate", "paratta-image")
                            seq = image("Sequential reference", "sequential-image")
                            diff = image(f"|ParaTAA − sequential| × {DIFF_GAIN:g}", "diff-image")
                        with gr.Row():
                            with gr.Column():
                                heatmap = image("Residuals: timestep × iteration", "heatmap", 340)
                                gr.Markdown(HEATMAP_LEGEND, elem_classes="legend")
                            curves = image("Convergence (log scale)", "curves", 340)
                        with gr.Row(equal_height=True):
                            slider = gr.Slider(
                                1,
                                2,
                                1,
                                step=1,
                                label="Scrub iterations (no recomputation)",
                                interactive=False,
                                scale=3,
                            )
                            downloads = gr.File(
                                label="Downloads: previews GIF, residuals CSV, run JSON",
                                file_count="multiple",
                                interactive=False,
                                height=110,
                                scale=2,
                            )
                        with gr.Accordion("Numbers of the frame shown (JSON)", open=False):
                            info = gr.JSON(label="stats")
                    with gr.Tab("Race: Jacobi vs Anderson"):
                        gr.Markdown(
                            "Same problem, seed, window and order: plain fixed point against "
                            "Triangular Anderson Acceleration, one iteration of each in turn."
                        )
                        race_btn = gr.Button("Race", variant="primary", elem_id="race")
                        race_stats = gr.Markdown()
                        with gr.Row():
                            r_jacobi = image("Jacobi (fixed point)")
                            r_anderson = image("Anderson (TAA)")
                            r_seq = image("Sequential reference")
                        with gr.Row():
                            r_jheat = image("Jacobi residuals", height=340)
                            r_aheat = image("Anderson residuals", height=340)
                            r_curves = image("Convergence (log scale)", height=340)
                        with gr.Accordion("Numbers (JSON)", open=False):
                            r_info = gr.JSON(label="race stats")
                    with gr.Tab("Teach (2-D)"):
                        teach_event = build_teach_tab()
        with gr.Accordion("How it works", open=False):
            gr.Markdown(EXPLAIN, latex_delimiters=LATEX)

        record = gr.State(None, time_to_live=3600)
        init_state = gr.State(None, time_to_live=3600)
        wire(c, describe)
        run_btn.click(lock_scrub, None, slider, queue=False, api_visibility="private")
        run_event = run_btn.click(
            make_run_handler(models),
            [*c.run_inputs(), init_state],
            [img, seq, diff, heatmap, curves, stats, info, downloads, record],
            api_name="run",
            preprocess=False,
            show_progress="hidden",
        )
        run_event.then(scrub_ready, record, slider, api_visibility="private", queue=False)
        race_inputs = [
            c.model,
            c.prompt,
            c.negative_prompt,
            c.seed,
            c.steps,
            c.eta,
            c.guidance,
            c.order,
            c.window,
            c.history,
            c.tol,
            c.max_iters,
        ]
        race_event = race_btn.click(
            make_race_handler(models),
            race_inputs,
            [r_jacobi, r_anderson, r_seq, r_jheat, r_aheat, r_curves, race_stats, r_info],
            api_name="race",
            preprocess=False,
            show_progress="hidden",
        )
        stop_btn.click(None, cancels=[run_event, race_event, teach_event]).then(
            after_stop, record, [downloads, slider, stats], api_visibility="private"
        )
        slider.input(
            scrub,
            [record, slider],
            [img, seq, diff, heatmap, curves, stats, info],
            api_visibility="private",
            trigger_mode="always_last",
            concurrency_limit=4,
        )
        use_btn.click(use_as_init, record, [init_state, init_note], api_name="use_as_init")
    return demo
