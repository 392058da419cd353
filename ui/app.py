"""The page: ``layout`` places the components, ``wire`` connects their events, ``build_demo`` does
both and is all a launcher (or a test) needs.

Layout: at 1280×800 the verdict, the three images (ParaTAA, sequential, difference) and the heatmap
with the curves fit above the fold; the controls are compact (most-used first, the rest collapsed).
On a phone the columns stack: prompt, Run, then the results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from paratta import BUILTIN_MODELS, Request, SolverConfig, model_defaults
from paratta.config import specs

from .run.door import DOOR_JS, guarded, race_validator, run_validator, stepping_validator, use_validator
from .run.handlers import (
    RACE_LABELS,
    after_stop,
    lock_scrub,
    make_race_handler,
    make_run_handler,
    scrub,
    scrub_ready,
    use_as_init,
    why_not_usable,
)
from .run.session import RACES, SAMPLER_RACES, SPLITS, split_lane
from .serve.cache import delete_cache
from .serve.jobs import SAMPLER_QUEUE, forget_session
from .serve.keep import visitor
from .serve.limits import Caps
from .serve.models import DEFAULT, get_model
from .teach import CSS as TEACH_CSS
from .teach import build_teach_tab, room_js
from .view.controls import (
    CLAMP_JS,
    RACE_INPUT_NAMES,
    RUN_INPUT_NAMES,
    WIDGETS,
    WINDOW_AUTO,
    Controls,
    auto_values,
    build_controls,
)
from .view.controls import wire as wire_controls
from .view.render import HEATMAP_LEGEND
from .view.views import DIFF_GAIN

EXPLAIN = Path(__file__).with_name("explain.md").read_text(encoding="utf-8")
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
CSS = """
.gradio-container {max-width: 1440px !important; padding-top: 8px !important}
#title h2 {margin: 0 0 2px 0}
#title p {margin: 0; font-size: 0.9em}
#stats {min-height: 4.6em}
#stats h3 {font-size: 1.2em; margin: 0 0 4px 0; line-height: 1.3}
#stats p {font-size: 0.82em; margin: 0; line-height: 1.35}
#race-stats h3 {font-size: 1.2em; margin: 0 0 4px 0}
.legend {font-size: 0.8em; opacity: 0.8}
.clamp-note, #panel-note p {font-size: 0.8em; color: var(--color-accent); margin: 2px 0 0 0}
.door-note {font-size: 0.85em; color: var(--error-text-color, #b91c1c); margin: 4px 0 0 0}
.door-note:empty {display: none}
/* an image's label badge sits above the image and never covers it; the race's sequential panel names
   both lanes, which may take two lines */
.badged {padding-top: 38px !important}
.badged label[data-testid="block-label"] {max-width: calc(100% - 44px)}
#race-sequential.badged {padding-top: 62px !important}
/* a Run or Race that ends, however it ends (Stop, a refusal, a failure), says so in words in its stats
   line; Gradio's bare "Error" badge over a cancelled event's outputs would only cover them */
#results [data-testid="status-tracker"]:has(> .error) {display: none !important}
@media (max-width: 700px) {  /* phone: prompt and Run, then the results, then the other controls */
  #sidebar {display: contents !important}
  #sidebar-top {order: 1; flex: 1 1 100% !important}
  #results {order: 2; flex: 1 1 100% !important}
  #sidebar-rest {order: 3; flex: 1 1 100% !important}
}
"""
CSS += TEACH_CSS
THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="cyan", neutral_hue="slate")
INTRO = (
    "## ParaTAA, converging live\n"
    "Diffusion sampling solved as a triangular system by **parallel fixed-point iterations** with "
    "**Triangular Anderson Acceleration** (Tang et al., ICML 2024): each frame is one parallel iteration, "
    "and the run ends on the very image the sequential sampler makes."
)
IMAGE_HEIGHT, PLOT_HEIGHT = 215, 250
# The warm-start preset: a run, then the same problem at a 10× tighter tolerance from its trajectory.
# A warm start pays where the trajectory is nearly the answer already: the same prompt and seed (on the
# embedded mixture a new prompt changes the path from its first steps; docs/api.md).
WARM_PROMPT, WARM_TOL = "red circle on blue", "2e-4"
WARM = ({"prompt": WARM_PROMPT}, {"prompt": WARM_PROMPT, "tol": WARM_TOL, "init": "trajectory"})


RUNNING = "Running…"  # the Run button's label while a run is in flight


def busy(label: str, running: bool) -> gr.Button:
    """A button's run state, made when an event returns it (never inside the Blocks, where it would be
    placed on the page). A new Button, not ``gr.update``: the page applies an update equal to the last
    one it got only once."""
    return gr.Button(value=label, variant="secondary" if running else "primary")


# Presets: (label, changes to the default shapes settings, by setting name).
PRESETS: list[tuple[str, dict[str, Any]]] = [
    ("DDIM-100: then press Race (Jacobi vs Anderson)", {"steps": 100}),
    ("Small window W = 10", {"window": 10}),
    ("Coarse start: a T/10-step sequential pass as the first guess", {"init": "coarse"}),
    ("DDPM (η = 1)", {"eta": 1.0}),
    ("Flow matching: Euler steps, as SD3 and Flux take", {"family": "flow"}),
    ("shapes-unet: “red circle”, guidance 3", {"model": "shapes-unet"}),
]


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` that style the app (theme and CSS live in launch in Gradio 6)."""
    return {"theme": THEME, "css": CSS, "footer_links": ["api"]}


def concurrency_limit() -> int:
    """Runs served at once: 1 on a shared Space, 2 elsewhere (or ``PARATTA_CONCURRENCY``)."""
    default = 1 if os.environ.get("SPACE_ID") else 2
    return max(1, int(os.environ.get("PARATTA_CONCURRENCY", default)))


def image(
    label: str, elem_id: str | None = None, height: int = IMAGE_HEIGHT, show_label: bool = True
) -> gr.Image:
    """An output image; charts (which carry their own axes and legend) hide the label badge that would
    cover their top rows."""
    return gr.Image(
        label=label, format="png", interactive=False, elem_id=elem_id, buttons=["download"], height=height,
        show_label=show_label, elem_classes="badged" if show_label else None,
    )  # fmt: skip


def chart(label: str, elem_id: str | None = None) -> gr.Image:
    return image(label, elem_id, PLOT_HEIGHT, show_label=False)


def preset_values(change: dict[str, Any]) -> dict[str, Any]:
    """Every input of the panel, by name: the declared defaults, the model's own defaults and the
    library's auto values for its T (``controls.auto_values``), then ``change``."""
    declared = {name: spec.default for name, spec in {**specs(Request), **specs(SolverConfig)}.items()}
    name = change.get("model", DEFAULT)
    d = model_defaults(name)
    steps = change.get("steps", d.steps)
    auto = auto_values(get_model(name), steps)
    values = declared | dict(model=name, prompt=d.prompt, guidance=d.guidance, steps=steps)
    values |= (
        dict(order=auto.order, window=auto.window, max_iters=auto.max_iters, height="", width="") | change
    )
    values.setdefault("window_auto", WINDOW_AUTO and "window" not in change)  # a preset's W is its own
    return {n: values[n] for n in WIDGETS}


def fill(c: Controls, change: dict[str, Any]) -> dict[Any, Any]:
    """A preset's values as an update of every input of the panel."""
    return {c[name]: value for name, value in preset_values(change).items()}


def preset_rows(models: list[str]) -> tuple[list[list[Any]], list[str]]:
    """The presets whose model this app serves, as rows for ``gr.Examples``, and their labels."""
    chosen = [(text, change) for text, change in PRESETS if change.get("model", DEFAULT) in models]
    return [list(preset_values(change).values()) for _, change in chosen], [text for text, _ in chosen]


@dataclass
class Page:
    """Every component the events connect, as ``layout`` placed them."""

    controls: Controls
    tabs: gr.Tabs
    # Run tab
    image: gr.Image
    sequential: gr.Image
    diff: gr.Image
    heatmap: gr.Image
    curves: gr.Image
    stats: gr.Markdown
    info: gr.JSON
    downloads: gr.File
    slider: gr.Slider
    # Race tab
    contest: gr.Radio
    race: gr.Button
    race_images: tuple[gr.Image, ...]  # lane a, lane b, sequential, a heatmap, b heatmap, curves
    race_stats: gr.Markdown
    race_info: gr.JSON
    teach: Any  # the Teach tab's run event (Stop cancels it)
    # under the tabs
    warm: gr.Button
    use: gr.Button
    init_note: gr.Markdown
    record: gr.State
    init_state: gr.State

    def run_outputs(self) -> list[Any]:
        """In the order of ``ui.run.handlers.RUN_OUTPUTS``."""
        return [self.image, self.sequential, self.diff, self.heatmap, self.curves, self.stats, self.info,
                self.downloads, self.record]  # fmt: skip

    def race_outputs(self) -> list[Any]:
        """In the order of ``ui.run.handlers.RACE_OUTPUTS``."""
        return [*self.race_images, self.race_stats, self.race_info]


def layout(models: list[str], default: str, describe: Callable[[str], tuple[Any, Any]], caps: Caps) -> Page:
    """Place every component (inside an open ``gr.Blocks``); no event but the controls' own is wired."""
    gr.Markdown(INTRO, elem_id="title")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300, elem_id="sidebar"):
            c = build_controls(models, default, *describe(default), caps)
        with gr.Column(scale=3, min_width=320, elem_id="results"):
            with gr.Tabs(selected="run") as tabs:
                with gr.Tab("Run", id="run") as run_tab:
                    stats = gr.Markdown(
                        "### Press **Run**\nThe parallel solver shows one frame per iteration; the "
                        "sequential reference runs alongside (its progress here, its image when it ends); "
                        "the verdict appears here when both have ended.",
                        elem_id="stats",
                    )
                    with gr.Row():
                        img = image("ParaTAA: current iterate", "paratta-image")
                        seq = image("Sequential reference", "sequential-image")
                        diff = image(f"|ParaTAA − sequential| × {DIFF_GAIN:g}", "diff-image")
                    with gr.Row():
                        heatmap = chart("Residuals: timestep × iteration", "heatmap")
                        curves = chart("Convergence (log scale)", "curves")
                    gr.Markdown(HEATMAP_LEGEND, elem_classes="legend")
                    slider = gr.Slider(
                        1, 2, 1, step=1, label="Scrub iterations (no recomputation)", interactive=False
                    )
                    downloads = gr.File(
                        label="Downloads: previews GIF, residuals CSV, run JSON",
                        file_count="multiple",
                        interactive=False,
                        height=210,
                        elem_id="downloads",
                    )
                    with gr.Accordion("Numbers of the frame shown (JSON)", open=False):
                        info = gr.JSON(label="stats")
                with gr.Tab("Race", id="race") as race_tab:
                    with gr.Row():
                        contest = gr.Radio(
                            [(text, key) for key, text in RACES.items()],
                            value="solvers",
                            label="Race",
                            info="same seed, window and order; one iteration of each lane in turn",
                            scale=3,
                        )
                        race_btn = gr.Button("Race", variant="primary", elem_id="race", scale=1)
                    race_stats = gr.Markdown(elem_id="race-stats")
                    with gr.Row():
                        lanes = [image("Jacobi (fixed point)", "race-a"), image("Anderson (TAA)", "race-b")]
                        r_seq = image("Sequential reference", "race-sequential")
                    with gr.Row():
                        heats = [chart("Jacobi residuals"), chart("Anderson residuals")]
                        r_curves = chart("Convergence (log scale)")
                    with gr.Accordion("Numbers (JSON)", open=False):
                        r_info = gr.JSON(label="race stats")
                with gr.Tab("Teach (2-D)", id="teach") as teach_tab:
                    teach_event = build_teach_tab()
            for tab, teaching in ((run_tab, False), (race_tab, False), (teach_tab, True)):
                tab.select(None, js=room_js(teaching))  # Teach hides the sidebar and the presets
            rows, labels = preset_rows(models)
            gr.Examples(
                rows, list(c.inputs.values()), label="Presets (fill the controls; press Run)",
                example_labels=labels, cache_examples=False, elem_id="presets",
            )  # fmt: skip
            warm_btn = gr.Button(
                f"Warm start: “{WARM_PROMPT}”, then again at tol {WARM_TOL} from its trajectory (two runs)",
                size="sm",
                elem_classes="image-room",
            )
            use_btn = gr.Button("Use this run as initialisation", size="sm", elem_classes="image-room")
            init_note = gr.Markdown(elem_classes="image-room")
            gr.Markdown(caps.text(), elem_classes="legend", elem_id="limits")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(EXPLAIN, latex_delimiters=LATEX)
    return Page(
        controls=c, tabs=tabs, image=img, sequential=seq, diff=diff, heatmap=heatmap, curves=curves,
        stats=stats, info=info, downloads=downloads, slider=slider, contest=contest, race=race_btn,
        race_images=(*lanes, r_seq, *heats, r_curves), race_stats=race_stats, race_info=r_info,
        teach=teach_event, warm=warm_btn, use=use_btn, init_note=init_note,
        record=gr.State(None, time_to_live=3600), init_state=gr.State(None, time_to_live=3600),
    )  # fmt: skip


PRIVATE: dict[str, Any] = {"api_visibility": "private", "queue": False}  # UI-only events: no API, no queue


def after(event: Any, fn: Callable[..., Any], inputs: Any, outputs: Any) -> None:
    """``fn`` once ``event`` has ended, whether it succeeded or raised (Gradio's page runs a ``.then``
    only after a success, and a ``.failure`` only after an error)."""
    event.then(fn, inputs, outputs, **PRIVATE)
    event.failure(fn, inputs, outputs, **PRIVATE)


def wire_run(p: Page, models: list[str]) -> list[Any]:
    """Run, and the warm-start preset's two runs; returns their events (for Stop).

    Each run is one chain: the button says "Running…", the run, the button back to "Run" (``after``: a
    refusal, an error or the end alike), so the label cannot outlive the run. Gradio's progress
    overlay is hidden: the stats line says what runs, and a refusal is read there in full.
    """
    c = p.controls
    sampler = {"preprocess": False, "show_progress": "hidden", "concurrency_id": SAMPLER_QUEUE}
    # the API's parameters are the settings' names, in the order each came in (``RUN_INPUT_NAMES``)
    named = {**{n: c[n] for n in RUN_INPUT_NAMES}, "init_state": p.init_state}
    run = make_run_handler(models)
    sampler["validator"] = run_validator(list(named), models)  # bad settings are answered before the queue
    # Run always shows the Run tab; a refusal at the door ends the chain before the button changes.
    started = c.run.click(
        lambda **_: (lock_scrub(), busy(RUNNING, True), gr.Tabs(selected="run")), None,
        [p.slider, c.run, p.tabs], inputs_kwargs=named, **guarded(sampler["validator"]),
    )  # fmt: skip
    run_event = started.then(run, None, p.run_outputs(), inputs_kwargs=named, api_name="run", **sampler)
    ended = (lambda r: (scrub_ready(r), busy("Run", False)), p.record, [p.slider, c.run])
    after(run_event, *ended)
    # The warm-start preset: a run, its trajectory stored, then the next run started from it (still the
    # exact sample of its settings, in fewer iterations).
    events = [run_event]
    fields = list(c.inputs.values())
    event = p.warm.click(lambda: fill(c, WARM[0]), None, fields, **PRIVATE)
    for k, change in enumerate(WARM):
        if k:
            # (a lambda: the API name "use_as_init" belongs to the button's public event)
            event = event.success(lambda r: use_as_init(r), p.record, [p.init_state, p.init_note], **PRIVATE)
            event = event.success(lambda w=change: fill(c, w), None, fields, **PRIVATE)
        event = event.then(lambda: (lock_scrub(), busy(RUNNING, True)), None, [p.slider, c.run], **PRIVATE)
        event = event.then(
            run, None, p.run_outputs(), inputs_kwargs=named, api_visibility="private", **sampler,
        )  # fmt: skip
        events.append(event)
        after(event, *ended)
    return events


def wire_race(p: Page, models: list[str]) -> Any:
    """Race and its lane labels; returns the race event (for Stop). One chain, as Run's."""
    c = p.controls
    inputs = {n: p.contest if n == "contest" else c[n] for n in RACE_INPUT_NAMES}
    checked = race_validator(list(RACE_INPUT_NAMES), models)
    started = p.race.click(
        lambda **_: busy("Racing…", True), None, p.race, inputs_kwargs=inputs, **guarded(checked)
    )
    race_event = started.then(
        make_race_handler(models),
        None,
        p.race_outputs(),
        inputs_kwargs=inputs,
        api_name="race",
        preprocess=False,
        show_progress="hidden",
        concurrency_id=SAMPLER_QUEUE,
        validator=checked,
    )
    after(race_event, lambda: busy("Race", False), None, p.race)
    a, b, sequential, a_heat, b_heat, _ = p.race_images
    p.contest.change(race_labels, p.contest, [a, b, sequential, a_heat, b_heat], **PRIVATE)
    return race_event


def wire(p: Page, models: list[str], describe: Callable[[str], tuple[Any, Any]]) -> None:
    """Every event of the page: the controls', Run, Race, Stop, scrubbing and warm starts."""
    wire_controls(p.controls, describe)
    jobs = [*wire_run(p, models), wire_race(p, models), p.teach]
    c = p.controls
    stop_outputs = [*p.run_outputs()[:-1], p.slider, c.run, p.race]
    c.stop.click(None, cancels=jobs).then(
        lambda r, label: (*after_stop(r, label == RUNNING), busy("Run", False), busy("Race", False)),
        [p.record, c.run],  # the Run button's label says whether a run was in flight
        stop_outputs,
        api_visibility="private",
    )
    p.slider.input(
        scrub,
        [p.record, p.slider],
        p.run_outputs()[:7],
        api_visibility="private",
        trigger_mode="always_last",
        concurrency_limit=4,
        validator=stepping_validator(scrub),
    )
    p.use.click(why_not_usable, p.record, p.init_note, **PRIVATE)  # a refusal, said under the button
    p.use.click(
        use_as_init,
        p.record,
        [p.init_state, p.init_note],
        api_name="use_as_init",
        validator=use_validator(use_as_init),
    )


def build_demo(extra_model: str | None = None) -> gr.Blocks:
    """The whole app on the built-in models plus ``extra_model`` (a diffusers folder or hub id), which
    becomes the default. Models are loaded here, at start-up (ZeroGPU wants them loaded at import)."""
    models = list(BUILTIN_MODELS)
    if extra_model and extra_model not in models:
        models.append(extra_model)
    loaded = {name: get_model(name) for name in models}

    def describe(name: str) -> tuple[Any, Any]:
        model = loaded.get(name) or get_model(name)
        return model, model.defaults  # the declared defaults: its prompt, and whether it needs one

    # delete_cache: Gradio removes its cached frames and downloads on a timer (cache.delete_cache).
    with gr.Blocks(title="ParaTAA live — parallel diffusion sampling", delete_cache=delete_cache()) as demo:
        page = layout(models, extra_model or DEFAULT, describe, Caps.from_env())
        wire(page, models, describe)
        demo.load(None, js=CLAMP_JS)  # a slider's typed value set to its range's end is said in words
        demo.load(None, js=DOOR_JS)  # a refusal is also said under the button pressed
        demo.load(visitor, None, None, **PRIVATE)  # the sessions that loaded the page are visitors' (keep)
        demo.unload(forget_session)  # the session's job ends and its download folder goes
    return demo


def race_labels(contest: str) -> tuple[dict, ...]:
    """The panel titles for the chosen race: the two lanes, the sequential panel, the two residual charts."""
    a, b = {
        "stopping": ("Budget rule", "Per-step rule"),
        **{name: tuple(lanes) for name, lanes in SAMPLER_RACES.items()},
        "splits": tuple(RACE_LABELS[split_lane(split)] for split in SPLITS),
    }.get(contest, ("Jacobi (fixed point)", "Anderson (TAA)"))
    sequential = f"Sequential: {a} | {b}" if contest in SAMPLER_RACES else "Sequential reference"
    return (
        gr.update(label=a),
        gr.update(label=b),
        gr.update(label=sequential),
        gr.update(label=f"{a.split(' (')[0]} residuals"),
        gr.update(label=f"{b.split(' (')[0]} residuals"),
    )
