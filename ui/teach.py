"""The Teach tab, made for a lecture: Jacobi and Anderson on the 2-D model, one frame per parallel iteration.

Each frame draws, over the density p_0, every state x_0 … x_T of the current iterate against the
sequential trajectory, for plain fixed point (Jacobi) and Triangular Anderson Acceleration side by
side; the part from the anchor up (states ≥ anchor, final by the solver's own records) is drawn in
cyan. Both solvers are run to the end first (the 2-D model takes milliseconds), so the view is
zoomed once to where the iterates go, the verdict is known, and a lecturer can step back and forth
through the frames (slider, previous/next) without anything being recomputed.

The tab has its own controls: the sidebar's settings do not apply to it. The sampler family (DDIM
on ε, or flow-matching Euler on the same mixture's exact velocity) is one of them: the same clusters,
the same solvers, another path from x_T to x_0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from paratta import Request, SolverConfig, load_model, pose, sample_sequential, solve
from paratta.config import Spec, specs
from paratta.metrics import largest_state_distance
from paratta.registry import model_defaults

from .run.door import guarded, positional, stepping_validator, validator
from .run.settings import as_choice, as_int, as_text, frame_index
from .serve.jobs import JOBS
from .serve.keep import Kept
from .serve.limits import Caps
from .view.controls import CHOICE_LABELS

MODEL = "toy2d"
LANES = ("jacobi", "anderson")
LANE_NAMES = {"jacobi": "Jacobi (fixed point)", "anderson": "Anderson (TAA)"}
SHORT_NAMES = {"jacobi": "Jacobi", "anderson": "Anderson"}
EXTENT = 3.2  # the backdrop shows [−EXTENT, EXTENT]²: x_T ~ N(0, I) and the ring of radius 2 fit
MIN_SIDE = 1.5  # the zoomed view is at least this wide, so a short trajectory keeps its context
ITERATE, FINAL_PART, SEQUENTIAL = "#ff7a3d", "#22d3ee", "white"
REQUEST, SOLVER = specs(Request), specs(SolverConfig)
FAMILIES = tuple(f for f in REQUEST["family"].choices if f != "auto")  # toy2d has both; "auto" is DDIM
SAMPLER_NAMES = {"ddim": "DDIM", "flow": "flow-matching Euler"}
RUN_LABEL = "Run Jacobi and Anderson"


@dataclass(frozen=True)
class LectureDefaults:
    """The tab's own starting point: the model's prompt, seed and steps (registry and ``Request``)
    with the order raised to T, where the acceleration shows (the counts by order: docs/teach.md)."""

    prompt: str = model_defaults(MODEL).prompt
    seed: int = REQUEST["seed"].default
    steps: int = model_defaults(MODEL).steps
    order: int = model_defaults(MODEL).steps  # k = T: every equation unrolled to the anchor


DEFAULTS = LectureDefaults()


@dataclass(frozen=True)
class Snapshot:
    """One lane after ``iteration`` parallel iterations (0 = the initial guess: every state = x_T)."""

    iteration: int
    trajectory: np.ndarray  # (T+1, 2): x_0 … x_T
    anchor: int  # states ≥ anchor are final
    max_residual: float
    converged: bool


@dataclass(frozen=True)
class Lesson:
    """A finished run of both lanes: everything the frames, the verdict and the stepping need."""

    prompt: str
    steps: int
    order: int
    tol: float
    sequential: np.ndarray  # (T+1, 2)
    lanes: dict[str, list[Snapshot]]  # per lane, iterations 0 … n
    view: tuple[float, float, float, float]  # x_lo, x_hi, y_lo, y_hi (square)
    family: str = "ddim"  # the sampler family both lanes solve

    @property
    def frames(self) -> int:
        """The last frame index: the slowest lane's iteration count."""
        return max(len(s) for s in self.lanes.values()) - 1

    def at(self, k: int) -> dict[str, Snapshot]:
        """Each lane at frame k (a lane that finished earlier stays on its last iterate)."""
        return {name: snaps[min(max(k, 0), len(snaps) - 1)] for name, snaps in self.lanes.items()}


@lru_cache(maxsize=16)
def backdrop(prompt: str, n: int = 400) -> np.ndarray:
    """RGB picture of p_0 on [−EXTENT, EXTENT]² for the prompt (colour ∝ √p, so the tails stay visible)."""
    from paratta.models.toy2d import colour_map

    log_p = load_model(MODEL).density_grid(1.0, EXTENT, n, prompt)
    return colour_map(np.sqrt(np.exp(log_p - log_p.max())))


def zoom(path: np.ndarray, margin: float = 0.3) -> tuple[float, float, float, float]:
    """A square view around the sequential ``path`` (n, 2), ``margin`` of its size on each side, at
    least ``MIN_SIDE`` wide and inside the backdrop: the trajectories fill the plot, and the frames
    show the iterates closing in on the path (early ones may leave the view and come back)."""
    lo, hi = path.min(axis=0), path.max(axis=0)
    side = min(max(float((hi - lo).max()) * (1 + 2 * margin), MIN_SIDE), 2 * EXTENT)
    centre = np.clip((lo + hi) / 2, -EXTENT + side / 2, EXTENT - side / 2)
    return (centre[0] - side / 2, centre[0] + side / 2, centre[1] - side / 2, centre[1] + side / 2)


def checked(
    prompt: Any, seed: Any, steps: Any, order: Any, caps: Caps, family: Any = "ddim"
) -> tuple[Request, int]:
    """The request and the order k = min(order, T); ``ValueError`` naming the setting and its range."""
    steps_ = as_int("steps", steps)
    if steps_ > caps.max_steps:
        raise ValueError(
            f"steps must be at most {caps.max_steps} in this app (a cap that keeps the machine shared "
            f"fairly); got {steps_}"
        )
    family_ = as_choice(REQUEST["family"], family)
    request = Request(
        prompt=as_text("prompt", prompt),
        seed=as_int("seed", seed, REQUEST["seed"].hi),
        steps=steps_,
        family=family_,
    )
    order_ = as_int("order", order)
    if order_ > caps.max_steps:
        raise ValueError(f"order must be at most {caps.max_steps} in this app; got {order_}")
    SOLVER["order"].check(min(order_, steps_), steps_)  # its lower end; above T it means T
    return request, min(order_, steps_)


def lesson(request: Request, order: int) -> Lesson:
    """Both lanes solved to the end on the same problem (full window, history 2), posed once: the lanes
    differ by their plan's solver only."""
    T = request.steps
    run = pose(load_model(MODEL), request, SolverConfig(order=order, window=T, history=2))
    problem = run.problem
    assert problem is not None
    sequential = sample_sequential(problem).numpy()
    start = Snapshot(0, np.repeat(sequential[-1:], T + 1, axis=0), T, float("nan"), False)
    lanes = {}
    for name in LANES:
        lanes[name] = [start] + [
            Snapshot(it.iteration, it.trajectory.numpy(), it.anchor, it.max_residual, it.converged)
            for it in solve(problem, replace(run.plan, solver=name))
        ]
    return Lesson(request.prompt, T, order, run.plan.tol, sequential, lanes, zoom(sequential), run.family)


def verdict(lesson: Lesson) -> str:
    """One line: who needed how many parallel iterations, and whether both end on the sequential path."""
    last = {name: snaps[-1] for name, snaps in lesson.lanes.items()}
    j, a = last["jacobi"], last["anderson"]
    head = f"**Anderson {a.iteration} vs Jacobi {j.iteration} parallel iterations**"
    if a.iteration < j.iteration:
        head += f" ({j.iteration / a.iteration:.1f}× fewer)"
    head += f" · sequential {SAMPLER_NAMES[lesson.family]}: {lesson.steps} steps"
    gaps = {name: largest_state_distance(s.trajectory, lesson.sequential) for name, s in last.items()}
    if all(s.converged for s in last.values()) and max(gaps.values()) <= lesson.tol:
        return f"{head} · both end on the sequential trajectory (largest distance {max(gaps.values()):.0e})"
    off = [
        f"{SHORT_NAMES[n]} ends {gaps[n]:.1e} from it" + ("" if last[n].converged else " (not converged)")
        for n in LANES
        if gaps[n] > lesson.tol or not last[n].converged
    ]
    return f"{head} · " + "; ".join(off)


def frame_line(lesson: Lesson, k: int) -> str:
    """What frame k shows, lane by lane."""
    T, parts = lesson.steps, []
    for name, s in lesson.at(k).items():
        if s.iteration == 0:
            parts.append(f"{SHORT_NAMES[name]}: every state starts as a copy of x_T")
        elif s.converged:
            parts.append(f"{SHORT_NAMES[name]}: done at iteration {s.iteration} ✓")
        else:
            parts.append(f"{SHORT_NAMES[name]}: {T - s.anchor}/{T} states final")
    order = f"order k = {lesson.order}" + (" (= T)" if lesson.order == T else "")
    return f"Frame {k} of {lesson.frames} · " + " · ".join(parts) + f" · {order}"


def teach_figure(lesson: Lesson, k: int) -> Figure:
    """Two panels over p_0 at frame k, zoomed to the run, with axes, titles and one shared legend."""
    fig = Figure(figsize=(8.8, 4.0), dpi=100)
    fig.subplots_adjust(left=0.085, right=0.745, top=0.87, bottom=0.13, wspace=0.22)
    picture, seq = backdrop(lesson.prompt), lesson.sequential
    x_lo, x_hi, y_lo, y_hi = lesson.view
    handles = []
    for n, (name, snap) in enumerate(lesson.at(k).items()):
        ax = fig.add_subplot(1, 2, n + 1)
        ax.imshow(picture, extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), interpolation="bilinear")
        handles = [
            ax.plot(seq[:, 0], seq[:, 1], "--", color=SEQUENTIAL, lw=1.6, zorder=4)[0],
            ax.plot(*snap.trajectory.T, "-o", color=ITERATE, lw=1.6, ms=3, zorder=5)[0],
            ax.plot(*snap.trajectory[snap.anchor :].T, "-o", color=FINAL_PART, lw=2.0, ms=3, zorder=6)[0],
            ax.plot(*seq[-1], "s", color=SEQUENTIAL, ms=8, mec="black", mew=0.8, zorder=7)[0],
            ax.plot(*seq[0], "*", color=SEQUENTIAL, ms=15, mec="black", mew=0.8, zorder=7)[0],
            ax.plot(*snap.trajectory[0], "o", color="#ff3d3d", ms=8, mec="white", mew=1.2, zorder=8)[0],
        ]
        state = (
            "start: all states = $x_T$"
            if snap.iteration == 0
            else f"iteration {snap.iteration} ✓ converged"
            if snap.converged
            else f"iteration {snap.iteration}: {lesson.steps - snap.anchor}/{lesson.steps} final"
        )
        ax.set_title(f"{LANE_NAMES[name]}\n{state}", fontsize=12)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$", fontsize=12)
        if n == 0:
            ax.set_ylabel("$x_2$", fontsize=12)
        ax.tick_params(labelsize=11)
    labels = [
        "sequential path",
        "iterate $x_T \\to x_0$",
        "final part (≥ anchor)",
        "$x_T$",
        "sequential $x_0$",
        "iterate's $x_0$",
    ]
    fig.legend(handles, labels, loc="center right", fontsize=11, frameon=True, facecolor="#1d1a33",
               labelcolor="white", edgecolor="#1d1a33", borderaxespad=0.3)  # fmt: skip
    return fig


def refuse(err: Exception) -> gr.Error:
    """The error a gradio_client caller gets; the page reads it in the verdict line (no toast)."""
    return gr.Error(str(err), print_exception=False, visible=False)


def teach_run(
    prompt: Any, seed: Any, steps: Any, order: Any, family: Any = "ddim", request: gr.Request = None
) -> Iterator[tuple[Figure, str, Kept]]:
    """Solve both lanes, then stream one frame per parallel iteration (0 … n); the last has the verdict.
    Like Run and Race, one job per session (``ui.serve.jobs``): it replaces the session's running one.
    The lesson is kept counted in the sessions' byte budget (``ui.serve.keep.Kept``)."""
    try:
        lesson_request, order_ = checked(prompt, seed, steps, order, Caps.from_env(), family)
        ticket = JOBS.begin(request, Caps.from_env())
        try:
            result = lesson(lesson_request, order_)  # toy2d: T ≤ the cap costs well under a second
        finally:
            ticket.end()
    except ValueError as err:
        yield gr.skip(), f"**Not run:** {err}", gr.skip()  # the last lesson stays on the plot
        raise refuse(err) from None
    kept = Kept(ticket.session, result)
    for k in range(result.frames):
        yield teach_figure(result, k), frame_line(result, k), kept
    yield teach_figure(result, result.frames), summary(result, result.frames), kept


def at_the_door(named: dict[str, Any]) -> None:
    """/teach's checks before it joins the queue (``ui.run.door``): the request, the order, the words."""
    caps = Caps.from_env()
    args = (named[n] for n in ("prompt", "seed", "steps", "order"))
    request, _ = checked(*args, caps, named["family"])
    load_model(MODEL).encode(request.prompt)  # its words: a parse, no network


def summary(lesson: Lesson, k: int) -> str:
    return f"### {verdict(lesson)}\n{frame_line(lesson, k)}"


def held(state: Kept | Lesson | None) -> Lesson | None:
    """The lesson a session keeps (``Expired`` once the byte budget evicted it)."""
    return state.get() if isinstance(state, Kept) else state


def show(lesson: Kept | Lesson | None, k: Any) -> tuple[Any, Any, Any]:
    """(slider, figure, text) at frame k, clamped to the run: for the slider, previous and next."""
    lesson = held(lesson)
    k = frame_index(k)
    if lesson is None or k is None:
        return gr.skip(), gr.skip(), gr.skip()
    k = min(max(k, 0), lesson.frames)
    return gr.update(value=k), teach_figure(lesson, k), summary(lesson, k)


def previous_frame(lesson: Kept | Lesson | None, k: Any) -> tuple[Any, Any, Any]:
    k = frame_index(k)
    return show(lesson, k - 1 if k is not None else None)


def next_frame(lesson: Kept | Lesson | None, k: Any) -> tuple[Any, Any, Any]:
    k = frame_index(k)
    return show(lesson, k + 1 if k is not None else None)


def stepper_ready(lesson: Kept | Lesson | None) -> tuple[Any, Any, Any, Any]:
    """After a run (or a refusal): the slider spans the lesson's frames and sits on the last; previous
    and next come alive; the Run button is idle again."""
    idle = gr.Button(RUN_LABEL, variant="primary")
    lesson = held(lesson)
    if lesson is None:
        return gr.skip(), gr.skip(), gr.skip(), idle
    n, live = lesson.frames, gr.update(interactive=True)
    return gr.update(minimum=0, maximum=n, value=n, interactive=True), live, live, idle


def locked() -> tuple[Any, Any, Any, Any]:
    frozen = gr.update(interactive=False)
    return frozen, frozen, frozen, gr.Button("Running…", variant="secondary")


def hint(spec: Spec) -> str:
    """A setting's hint without its "(auto: …)" note: this tab has no automatic values."""
    return spec.hint.split(" (auto")[0]


def settings_note(caps: Caps) -> str:
    """One line of hints for the tab's controls, from the settings' declarations."""
    from paratta.models.toy2d import CLUSTERS

    steps, order, seed = REQUEST["steps"], SOLVER["order"], REQUEST["seed"]
    return (
        f"Clusters: {', '.join(CLUSTERS)} (or n, ne, …); empty = all eight · {steps.symbol}: "
        f"{hint(steps)}, at most {caps.max_steps} here · {order.symbol}: {hint(order)}; above T it means T · "
        f"seed: {hint(seed)}"
    )


EXPLANATION = (
    "Each frame is **one parallel iteration**: the whole trajectory x_T → x_0 (orange) is updated at once; "
    "from the anchor up it is final (cyan), by the solver's own records. White dashed: the sequential "
    "trajectory (square: x_T, star: its x_0); red dot: the iterate's x_0. Both solvers use the full window "
    "and the same order; only the update differs. Frame 0 is the starting guess, every state a copy of x_T. "
    "Sampler family: DDIM follows the mixture's exact ε; flow matching takes Euler steps along the same "
    "mixture's exact velocity (the rectified-flow path x_σ = (1 − σ) x_0 + σ ε, as SD3 and Flux): same "
    "clusters, straighter paths (How it works: does the fixed point converge faster?)."
)


def build_teach_tab() -> Any:
    """The 2-D tab's components and events (inside the current Blocks context); returns the run event."""
    caps = Caps.from_env()
    gr.Markdown(
        "**This tab has its own settings: the sidebar's do not apply here.** `toy2d`: eight Gaussian "
        "clusters in 2-D, exact ε, on the CPU."
    )
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(DEFAULTS.prompt, label="Clusters", placeholder="all eight clusters", scale=2)
        seed = gr.Number(
            DEFAULTS.seed, label="Seed", precision=0, minimum=REQUEST["seed"].lo, scale=1, min_width=90
        )
        steps = gr.Slider(
            REQUEST["steps"].lo,
            caps.max_steps,
            DEFAULTS.steps,
            step=1,
            label=f"{REQUEST['steps'].label} {REQUEST['steps'].symbol}",
            scale=2,
        )
        order = gr.Slider(
            SOLVER["order"].lo,
            caps.max_steps,
            DEFAULTS.order,
            step=1,
            label=f"{SOLVER['order'].label} {SOLVER['order'].symbol}",
            scale=2,
        )
        family = gr.Radio(
            [(CHOICE_LABELS[f], f) for f in FAMILIES],
            value=FAMILIES[0],
            label=REQUEST["family"].label,
            scale=2,
            elem_id="teach-family",
        )
        go = gr.Button(RUN_LABEL, variant="primary", elem_id="teach-run", scale=1)
    with gr.Row(equal_height=False):
        previous = gr.Button(
            "◀ Previous", interactive=False, scale=0, min_width=120, elem_id="teach-previous"
        )
        slider = gr.Slider(
            0,
            1,
            0,
            step=1,
            label="Frame",
            show_label=False,
            interactive=False,
            scale=4,
            elem_id="teach-frame",
        )
        following = gr.Button("Next ▶", interactive=False, scale=0, min_width=120, elem_id="teach-next")
    plot = gr.Plot(label="Trajectories over p_0", format="png", show_label=False, elem_id="teach-plot")
    text = gr.Markdown(
        "Press **Run Jacobi and Anderson**: both solvers run, the frames play, then step through them.",
        elem_id="teach-verdict",
    )
    gr.Markdown(f"{EXPLANATION}  \n{settings_note(caps)}", elem_classes="legend")
    state = gr.State(None, time_to_live=3600)

    private: dict[str, Any] = {"api_visibility": "private", "queue": False}
    lesson = [prompt, seed, steps, order, family]
    checked = validator(positional(teach_run), at_the_door)
    # a refusal at the door ends the chain before the stepper and the button change
    started = go.click(lambda *_: locked(), lesson, [slider, previous, following, go], **guarded(checked))
    event = started.then(
        teach_run,
        [prompt, seed, steps, order, family],
        [plot, text, state],
        api_name="teach",
        preprocess=False,
        show_progress="hidden",  # the verdict line says what runs, or why not
        validator=checked,
    )
    for ended in (event.then, event.failure):  # the page runs a .then only after a success
        ended(stepper_ready, state, [slider, previous, following, go], **private)
    outputs = [slider, plot, text]
    stepping: dict[str, Any] = {"api_visibility": "private"}
    slider.input(
        show,
        [state, slider],
        outputs,
        trigger_mode="always_last",
        validator=stepping_validator(show),
        **stepping,
    )
    previous.click(
        previous_frame, [state, slider], outputs, validator=stepping_validator(previous_frame), **stepping
    )
    following.click(
        next_frame, [state, slider], outputs, validator=stepping_validator(next_frame), **stepping
    )
    return event
