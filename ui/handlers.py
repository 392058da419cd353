"""Event handlers of the Run and Race tabs: consume the session's events, keep a RunRecord, render views.

The session generators may run in a ZeroGPU worker (``ui.gpu``); figures and files are made here,
outside it. Library ``ValueError``s (bad prompt words, window > T, …) become ``gr.Error`` with the
library's own message, so the app keeps serving. Every yield carries plain values for all outputs
(no ``gr.update``), so a gradio_client user gets images, text and dicts, never update records.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from paratta.evaluate import NonFiniteError

from . import views
from .gpu import gpu
from .record import RunRecord
from .render import gif_bytes, history_csv, history_json, upscale
from .session import get_model, race_events, run_events
from .settings import Caps, RunSettings, parse_settings

gpu_run_events = gpu(run_events)
gpu_race_events = gpu(race_events)

# Outputs of /run and /race, in the order ui.app passes their components (gr.State last: not in the API).
RUN_OUTPUTS = ("image", "sequential", "diff", "heatmap", "curves", "stats", "info", "downloads", "record")
RACE_OUTPUTS = (
    "jacobi",
    "anderson",
    "sequential",
    "jacobi_heatmap",
    "anderson_heatmap",
    "curves",
    "stats",
    "info",
)
SCRUB_OUTPUTS = RUN_OUTPUTS[:7]


class Screen:
    """The current value of every output of one event; each ``show`` returns them all, in order."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.values: dict[str, Any] = dict.fromkeys(names)

    def show(self, **values: Any) -> tuple[Any, ...]:
        self.values.update(values)
        return tuple(self.values[n] for n in self.names)


def user_error(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def settings_from(models: list[str], values: tuple[Any, ...]) -> RunSettings:
    """Raw control values (``Controls.run_inputs`` order) → RunSettings; ``gr.Error`` on bad input."""
    name = values[0]
    if name not in models:
        raise user_error(ValueError(f"model must be one of {', '.join(models)}; got {name!r}"))
    try:
        return parse_settings(*values, caps=Caps.from_env(), needs_prompt=needs_prompt(get_model(name)))
    except ValueError as err:
        raise user_error(err) from None


def needs_prompt(model: Any) -> bool:
    """Text-to-image models (a text encoder) need a prompt; the embedded models and class-conditional
    ones read "" as "anything"."""
    return getattr(model, "text_encoder", None) is not None


def new_record(settings: RunSettings) -> RunRecord:
    model = get_model(settings.model)
    return RunRecord(
        settings=settings.as_dict(),
        steps=settings.request.steps,
        tol=settings.config.tol,
        latent_shape=tuple(model.latent_shape),
    )


def guarded(events: Iterator[Any]) -> Iterator[Any]:
    """Re-raise the library's input errors and NaN reports as user-facing ``gr.Error``."""
    try:
        yield from events
    except (ValueError, NonFiniteError) as err:
        raise user_error(err) from None


def scrub_update(k: int, interactive: bool) -> dict[str, Any]:
    """The iteration slider at k of k (a Gradio slider needs maximum > minimum, hence max(k, 2))."""
    return gr.update(maximum=max(k, 2), value=k, interactive=interactive and k > 1)


def lock_scrub() -> dict[str, Any]:
    return gr.update(interactive=False)


def scrub_ready(record: RunRecord | None) -> dict[str, Any]:
    return scrub_update(record.iterations, True) if record is not None and record.rows else gr.skip()


def write_downloads(record: RunRecord) -> list[str]:
    """GIF of the previews, residual history as CSV and JSON, in a fresh temp folder Gradio may serve."""
    folder = Path(tempfile.mkdtemp(prefix="paratta-run-"))
    names = ("paratta_previews.gif", "paratta_residuals.csv", "paratta_run.json")
    (folder / names[0]).write_bytes(gif_bytes(record.previews))
    (folder / names[1]).write_text(history_csv(record.rows))
    (folder / names[2]).write_text(history_json(record))
    return [str(folder / n) for n in names]


def sequential_view(event: dict[str, Any], record: RunRecord) -> dict[str, Any]:
    """Outputs while the sequential reference streams, and once it is done (its full decode)."""
    record.sequential_seconds = event["seconds"]
    if event["kind"] == "reference":
        record.sequential_image = event["image"]
        stats = (
            f"Sequential reference done: {record.steps} steps in "
            f"{views.fmt_seconds(record.sequential_seconds)}. Starting the parallel solver…"
        )
        return {"sequential": upscale(event["image"], views.DISPLAY), "stats": stats}
    record.sequential_preview = event["preview"]
    stats = (
        f"Computing the sequential reference first: step {event['step']}/{event['steps']}, "
        f"{views.fmt_seconds(event['seconds'])}. The parallel run starts right after it."
    )
    return {
        "sequential": upscale(event["preview"], views.DISPLAY),
        "stats": stats,
        "info": {"phase": "sequential", "step": event["step"], "steps": event["steps"]},
    }


def frame_outputs(record: RunRecord, k: int, phase: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    f = views.frame(record, k, phase)
    f.info["ui_seconds"] = time.perf_counter() - t0
    return {
        "image": f.image,
        "sequential": f.sequential,
        "diff": f.diff,
        "heatmap": f.heatmap,
        "curves": f.curves,
        "stats": f.stats,
        "info": f.info,
    }


def make_run_handler(models: list[str]) -> Callable[..., Iterator[tuple[Any, ...]]]:
    def run(
        model: str,
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        eta: float,
        guidance: float,
        solver: str,
        order: int,
        window: int,
        history: int,
        tol: float,
        max_iters: int,
        init: str,
        init_state: dict[str, Any] | None,
    ) -> Iterator[tuple[Any, ...]]:
        values = (
            model,
            prompt,
            negative_prompt,
            seed,
            steps,
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
        settings = settings_from(models, values)
        record = new_record(settings)
        screen = Screen(RUN_OUTPUTS)
        yield screen.show(stats="Starting…", info={"phase": "start"}, record=record)
        for event in guarded(gpu_run_events(settings, init_state)):
            if record.stopped:  # Stop was handled already; what it showed stays true
                return
            kind = event["kind"]
            if kind in ("sequential", "reference"):
                yield screen.show(**sequential_view(event, record))
            elif kind == "iterate":
                record.rows.append(event["row"])
                record.previews.append(event["preview"])
                yield screen.show(**frame_outputs(record, record.iterations, "parallel"))
            elif kind == "done":
                record.final_image = event["image"]
                record.trajectory = event["trajectory"]
                yield screen.show(
                    **frame_outputs(record, record.iterations, "done"), downloads=write_downloads(record)
                )

    return run


def scrub(record: RunRecord | None, k: Any) -> tuple[Any, ...]:
    """Show iteration k of the stored run (nothing is recomputed)."""
    if record is None or not record.rows:
        return tuple(gr.skip() for _ in SCRUB_OUTPUTS)
    k = min(max(int(k), 1), record.iterations)
    return Screen(SCRUB_OUTPUTS).show(**frame_outputs(record, k, "scrub"))


def after_stop(record: RunRecord | None) -> tuple[Any, Any, Any]:
    """Once Stop has cancelled a run: make the partial run scrubbable and downloadable, and say so."""
    if record is None or not record.rows or record.final_image is not None:
        return gr.skip(), gr.skip(), gr.skip()
    record.stopped = True
    k = record.iterations
    record.notes.append(f"stopped by the user after iteration {k}")
    line, _ = views.stats(record, k, "done")
    return write_downloads(record), scrub_update(k, True), line


def use_as_init(record: RunRecord | None) -> tuple[dict[str, Any], str]:
    """Keep the last run's final trajectory for a next run with init = previous run's trajectory."""
    if record is None or record.trajectory is None:
        raise gr.Error(
            "No finished run to use yet: run to the end first (a stopped run keeps no trajectory).",
            print_exception=False,
        )
    s = record.settings
    stored = {
        "trajectory": record.trajectory,
        "steps": record.steps,
        "model": s["model"],
        "prompt": s["prompt"],
    }
    note = (
        f"Stored the final trajectory of “{s['prompt']}” (T = {record.steps}, model {s['model']}). "
        "Choose *previous run's trajectory* as initialisation; the next run must use the same T."
    )
    return stored, note


RACE_LANES = {"jacobi": "Jacobi", "anderson": "Anderson"}


def make_race_handler(models: list[str]) -> Callable[..., Iterator[tuple[Any, ...]]]:
    def race(
        model: str,
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        eta: float,
        guidance: float,
        order: int,
        window: int,
        history: int,
        tol: float,
        max_iters: int,
    ) -> Iterator[tuple[Any, ...]]:
        values = (
            model,
            prompt,
            negative_prompt,
            seed,
            steps,
            eta,
            guidance,
            "anderson",
            order,
            window,
            history,
            tol,
            max_iters,
            "xT",
        )
        settings = settings_from(models, values)
        records = {lane: new_record(settings) for lane in RACE_LANES}
        reference = new_record(settings)  # holds the sequential reference for both lanes
        screen = Screen(RACE_OUTPUTS)
        yield screen.show(stats="Starting…", info={"phase": "start"})
        for event in guarded(gpu_race_events(settings)):
            kind = event["kind"]
            if kind in ("sequential", "reference"):
                view = sequential_view(event, reference)
                yield screen.show(sequential=view["sequential"], stats=view["stats"])
                for r in records.values():
                    r.sequential_preview = reference.sequential_preview
                    r.sequential_image = reference.sequential_image
                    r.sequential_seconds = reference.sequential_seconds
                continue
            lane = event["lane"]
            if kind == "iterate":
                records[lane].rows.append(event["row"])
                records[lane].previews.append(event["preview"])
            else:
                records[lane].final_image = event["image"]
            yield screen.show(**race_view(records, lane, settings.config.tol))

    return race


def race_view(records: dict[str, RunRecord], lane: str, tol: float) -> dict[str, Any]:
    """Update the lane that moved, and the shared curves and stats."""
    record = records[lane]
    f = views.frame(
        record, record.iterations, "done" if record.final_image is not None else "parallel", with_curves=False
    )
    lines, info = [], {}
    for name, r in records.items():
        if r.rows:
            line, info[name] = views.stats(r, r.iterations, "parallel")
            lines.append(f"**{RACE_LANES[name]}** — {line}")
    live = {RACE_LANES[n]: r for n, r in records.items() if r.rows}
    return {
        lane: f.image,
        f"{lane}_heatmap": f.heatmap,
        "curves": views.curves(live, tol),
        "stats": "  \n".join(lines),
        "info": info,
    }
