"""The teaching tab: on the 2-D model, every iteration's whole trajectory over the density, against the
sequential trajectory, Jacobi and Anderson side by side; a slider scrubs the iterations afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from paratta import Request, SolverConfig, load_model, make_problem, sample_sequential, solve

from .handlers import guarded, scrub_update, user_error
from .settings import as_int

LANES = ("jacobi", "anderson")
EXTENT = 3.2  # the picture shows [−EXTENT, EXTENT]²; x_T ~ N(0, I) and the clusters at radius 2 fit


@dataclass(frozen=True)
class Snapshot:
    iteration: int
    trajectory: np.ndarray  # (T+1, 2): x_0 … x_T
    anchor: int
    max_residual: float
    converged: bool


@lru_cache(maxsize=16)
def backdrop(prompt: str) -> np.ndarray:
    """RGB picture of p_0 for the prompt (colour ∝ √p, so the tails stay visible)."""
    from paratta.models.toy2d import colour_map

    log_p = load_model("toy2d").density_grid(1.0, EXTENT, 160, prompt)
    return colour_map(np.sqrt(np.exp(log_p - log_p.max())))


def teach_events(
    prompt: str, seed: int, steps: int, order: int
) -> Iterator[tuple[str, Snapshot | np.ndarray]]:
    """("sequential", (T+1, 2) array) first, then ("jacobi" | "anderson", Snapshot) interleaved."""
    model = load_model("toy2d")
    problem = make_problem(model, Request(prompt=prompt, seed=seed, steps=steps))
    yield "sequential", sample_sequential(problem).numpy()
    lanes = {
        name: solve(problem, SolverConfig(solver=name, order=min(order, steps), window=steps, history=2))
        for name in LANES
    }
    while lanes:
        for name in list(lanes):
            it = next(lanes[name], None)
            if it is None:
                del lanes[name]
                continue
            yield (
                name,
                Snapshot(it.iteration, it.trajectory.numpy(), it.anchor, it.max_residual, it.converged),
            )


def teach_figure(prompt: str, sequential: np.ndarray, snapshots: dict[str, Snapshot | None]) -> Figure:
    """Two panels over the density: the sequential path (white, dashed) and the current iterate's path
    (orange; its final part from the anchor up in cyan)."""
    fig = Figure(figsize=(9.0, 4.4), dpi=80)
    picture = backdrop(prompt)
    for n, name in enumerate(LANES):
        ax = fig.add_axes((0.01 + 0.5 * n, 0.02, 0.47, 0.88))
        ax.imshow(picture, extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), interpolation="bilinear")
        ax.plot(sequential[:, 0], sequential[:, 1], "--", color="white", lw=1.3, alpha=0.9, zorder=4)
        ax.plot(*sequential[0], "*", color="white", ms=14, mec="black", mew=0.6, zorder=5)
        ax.plot(*sequential[-1], "s", color="white", ms=7, mec="black", mew=0.6, zorder=5)
        snap = snapshots.get(name)
        title = f"{'Jacobi (fixed point)' if name == 'jacobi' else 'Anderson (TAA)'}"
        if snap is not None:
            x = snap.trajectory
            ax.plot(x[:, 0], x[:, 1], "-o", color="#ff7a3d", lw=1.4, ms=2.5)
            ax.plot(x[snap.anchor :, 0], x[snap.anchor :, 1], "-o", color="#22d3ee", lw=1.8, ms=2.5)
            ax.plot(*x[0], "o", color="#ff3d3d", ms=7, mec="white", mew=1.0, zorder=6)
            T = len(x) - 1
            title += f" — iteration {snap.iteration}, {T - snap.anchor}/{T} final" + (
                " ✓" if snap.converged else f", residual {snap.max_residual:.1e}"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-EXTENT, EXTENT)
        ax.set_ylim(-EXTENT, EXTENT)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def at(state: dict[str, Any], k: int) -> dict[str, Snapshot | None]:
    """Each lane's snapshot at iteration k (its last one if it finished earlier)."""
    return {
        name: (snaps[min(k, len(snaps)) - 1] if snaps else None) for name, snaps in state["lanes"].items()
    }


def summary(state: dict[str, Any], k: int | None = None) -> str:
    parts = []
    for name, snaps in state["lanes"].items():
        if snaps:
            s = snaps[-1] if k is None else snaps[min(k, len(snaps)) - 1]
            done = f"converged in **{s.iteration}** iterations" if s.converged else f"iteration {s.iteration}"
            parts.append(f"{name.capitalize()}: {done}")
    return " · ".join(parts) + f" · sequential: {state['steps']} steps"


def teach_run(prompt: str, seed: Any, steps: Any, order: Any) -> Iterator[tuple[Figure, str, dict[str, Any]]]:
    """Stream (figure, summary, state) per iteration of either solver; the state feeds the slider."""
    try:
        seed_, steps_, order_ = as_int("seed", seed), as_int("steps", steps), as_int("order", order)
        if not 2 <= steps_ <= 200 or order_ < 1:
            raise ValueError(f"steps must be in [2, 200] and order at least 1; got {steps_} and {order_}")
    except ValueError as err:
        raise user_error(err) from None
    events = guarded(teach_events(prompt or "", seed_, steps_, order_))
    _, sequential = next(events)
    lanes: dict[str, list[Snapshot]] = {name: [] for name in LANES}
    state = {"prompt": prompt or "", "steps": steps_, "sequential": sequential, "lanes": lanes}
    for name, snap in events:
        lanes[name].append(snap)
        k = len(lanes[name])
        yield teach_figure(state["prompt"], sequential, at(state, k)), summary(state), state
    n = max(len(s) for s in lanes.values())
    yield teach_figure(state["prompt"], sequential, at(state, n)), summary(state), state


def teach_scrub(state: dict[str, Any] | None, k: Any) -> tuple[Any, Any]:
    if not state:
        return gr.skip(), gr.skip()
    k = max(int(k), 1)
    return teach_figure(state["prompt"], state["sequential"], at(state, k)), summary(state, k)


def slider_ready(state: dict[str, Any] | None) -> dict[str, Any]:
    if not state:
        return gr.skip()
    return scrub_update(max(len(s) for s in state["lanes"].values()), True)


def build_teach_tab() -> Any:
    """The 2-D tab's components and events (inside the current Blocks context); returns the run event."""
    gr.Markdown(
        "Each frame is **one parallel iteration**: the whole trajectory x_T → x_0 (orange) is updated at "
        "once; the part from the converged frontier up is final (cyan). White dashed: the sequential "
        "trajectory (square = x_T, star = its x_0). Both solvers use the full window; only the update "
        "differs."
    )
    with gr.Row():
        prompt = gr.Textbox(
            "",
            label="Clusters",
            scale=2,
            placeholder="all eight clusters",
            info="clusters to sample from: east, northeast, north, …, southeast (or n, "
            "ne, …); empty = all eight",
        )
        seed = gr.Number(3, label="Seed", precision=0, minimum=0, info="fixes x_T")
        steps = gr.Slider(5, 100, 50, step=1, label="Steps T", info="length of the trajectory")
        order = gr.Slider(1, 100, 1, step=1, label="Order k", info="unrolled steps per equation")
    go = gr.Button("Run Jacobi and Anderson", variant="primary")
    plot = gr.Plot(label="Trajectories over p_0", format="png", show_label=False)
    stats = gr.Markdown()
    slider = gr.Slider(1, 2, 1, step=1, label="Scrub iterations (after the run)", interactive=False)
    state = gr.State(None, time_to_live=3600)
    go.click(lambda: gr.update(interactive=False), None, slider, queue=False, api_visibility="private")
    event = go.click(
        teach_run,
        [prompt, seed, steps, order],
        [plot, stats, state],
        api_name="teach",
        preprocess=False,
        show_progress="hidden",
    )
    event.then(slider_ready, state, slider, api_visibility="private", queue=False)
    slider.input(
        teach_scrub, [state, slider], [plot, stats], api_visibility="private", trigger_mode="always_last"
    )
    return event
