"""The Teach room's run: Jacobi, global Anderson and Triangular Anderson solved on the same 2-D problem.

Each lane is ``paratta.solve`` on one ``Problem`` with the tab's settings (order, history m, λ; the
full window, the default stopping rule), only the solver differs. Its records become ``Snapshot``s,
one per parallel iteration, with frame 0 the starting guess (every state a copy of x_T). The lanes
are solved to the end first (``toy2d`` takes milliseconds), so the frames can be played, paused and
stepped without anything being recomputed, and the verdict is known from the start.

The view of a frame holds every state of the iterate it draws: *follow* zooms each lane to its own
iterate at that frame (and the sequential path), *whole run* fixes one view over every iterate of
every lane and frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from paratta import Request, SolverConfig, load_model, model_defaults, pose, sample_sequential, solve
from paratta.config import specs
from paratta.metrics import largest_state_distance

from ..run.settings import as_choice, as_float, as_int, as_text
from ..serve.limits import Caps

MODEL = "toy2d"
LANES = ("jacobi", "anderson-global", "anderson")
LANE_NAMES = {
    "jacobi": "Jacobi (fixed point)",
    "anderson-global": "Anderson, one γ",
    "anderson": "TAA, γ per step",
}
SHORT_NAMES = {"jacobi": "Jacobi", "anderson-global": "global Anderson", "anderson": "TAA"}
REQUEST, SOLVER = specs(Request), specs(SolverConfig)
FAMILIES = tuple(f for f in REQUEST["family"].choices if f != "auto")  # toy2d has both; "auto" is DDIM
SAMPLER_NAMES = {"ddim": "DDIM", "flow": "flow-matching Euler"}
VIEWS = ("follow", "whole run")
MIN_SIDE = 1.0  # a view is at least this wide, so a short path keeps its context
MARGIN = 0.12  # of the view's side, on each side of what it must hold

View = tuple[float, float, float, float]  # x_lo, x_hi, y_lo, y_hi (square)


@dataclass(frozen=True)
class LectureDefaults:
    """The tab's own starting point: the model's prompt, seed and steps (registry and ``Request``),
    the order raised to T, where the acceleration shows (counts by order: docs/teach.md), the
    declared history and λ."""

    prompt: str = model_defaults(MODEL).prompt
    seed: int = REQUEST["seed"].default
    steps: int = model_defaults(MODEL).steps
    order: int = model_defaults(MODEL).steps  # k = T: every equation unrolled to the anchor
    family: str = FAMILIES[0]
    history: int = SOLVER["history"].default
    lam: float = SOLVER["lam"].default


DEFAULTS = LectureDefaults()


@dataclass(frozen=True)
class Snapshot:
    """One lane after ``iteration`` parallel iterations (0 = the initial guess: every state = x_T)."""

    iteration: int
    trajectory: np.ndarray  # (T+1, 2): x_0 … x_T
    anchor: int  # states ≥ anchor are final
    max_residual: float  # the largest RMS anchor residual in the window before this update (NaN at 0)
    converged: bool

    def final(self, steps: int) -> int:
        """How many of the T states are final (by the solver's own records)."""
        return steps - self.anchor


@dataclass(frozen=True)
class Lesson:
    """A finished run of every lane: everything the frames, the verdict and the stepping need."""

    prompt: str
    steps: int
    config: SolverConfig  # the shared settings (order, history, λ, window T); each lane sets its solver
    tol: float  # the stopping rule's tolerance (latent RMS)
    sequential: np.ndarray  # (T+1, 2)
    lanes: dict[str, list[Snapshot]]  # per lane, iterations 0 … n
    family: str = "ddim"  # the sampler family every lane solves

    @property
    def order(self) -> int:
        return int(self.config.order or 0)

    @property
    def frames(self) -> int:
        """The last frame index: the slowest lane's iteration count."""
        return max(len(s) for s in self.lanes.values()) - 1

    def at(self, k: int) -> dict[str, Snapshot]:
        """Each lane at frame k (a lane that finished earlier stays on its last iterate)."""
        return {name: snaps[min(max(k, 0), len(snaps) - 1)] for name, snaps in self.lanes.items()}

    def view(self, name: str, k: int, mode: str = "follow") -> View:
        """The square view of lane ``name`` at frame k: it holds every state of that iterate and the
        sequential path (``follow``), or every iterate of every lane and frame (``whole run``)."""
        if mode == "whole run":
            every = [s.trajectory for snaps in self.lanes.values() for s in snaps]
            return square(np.concatenate([self.sequential, *every]))
        return square(np.concatenate([self.sequential, self.at(k)[name].trajectory]))


def square(points: np.ndarray) -> View:
    """The smallest square holding ``points`` (n, 2) with a margin of ``MARGIN`` of its side on each
    side, at least ``MIN_SIDE`` wide."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = max(float((hi - lo).max()) / (1 - 2 * MARGIN), MIN_SIDE)
    cx, cy = (lo + hi) / 2
    return (cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2)


def checked(
    prompt: Any,
    seed: Any,
    steps: Any,
    order: Any,
    caps: Caps,
    family: Any = DEFAULTS.family,
    history: Any = DEFAULTS.history,
    lam: Any = DEFAULTS.lam,
) -> tuple[Request, SolverConfig]:
    """The request and the lanes' shared settings: order k = min(order, T), history m, λ, window T.
    ``ValueError`` naming the setting and its range (the app's caps on top of the declared ones)."""
    steps_ = as_int("steps", steps)
    if steps_ > caps.max_steps:
        raise ValueError(
            f"steps must be at most {caps.max_steps} in this app (a cap that keeps the machine shared "
            f"fairly); got {steps_}"
        )
    request = Request(
        prompt=as_text("prompt", prompt),
        seed=as_int("seed", seed, REQUEST["seed"].hi),
        steps=steps_,
        family=as_choice(REQUEST["family"], family),
    )
    order_ = as_int("order", order)
    if order_ > caps.max_steps:
        raise ValueError(f"order must be at most {caps.max_steps} in this app; got {order_}")
    config = SolverConfig(
        order=min(order_, steps_),  # above T it means T; its lower end is checked here
        window=steps_,
        history=as_int("history", history),
        lam=as_float("lam", lam),
        split="published",  # the lesson is the published iteration: Anderson's gain over Jacobi is there
    )
    config.validate(steps_)
    return request, config


def lesson(request: Request, config: SolverConfig) -> Lesson:
    """Every lane solved to the end on the same problem, by the library's solver."""
    model = load_model(MODEL)
    first = pose(model, request, replace(config, solver=LANES[0]))  # the lanes share its problem
    problem = first.problem
    assert problem is not None  # posed in full
    sequential = sample_sequential(problem).numpy()
    T = request.steps
    start = Snapshot(0, np.repeat(sequential[-1:], T + 1, axis=0), T, float("nan"), False)
    lanes = {}
    for name in LANES:
        run = (
            first if name == LANES[0] else pose(model, request, replace(config, solver=name), problem=problem)
        )
        lanes[name] = [start] + [
            Snapshot(it.iteration, it.trajectory.numpy(), it.anchor, it.max_residual, it.converged)
            for it in solve(problem, run.plan)
        ]
    tol = first.plan.tol
    family = "flow" if request.family == "flow" else "ddim"
    return Lesson(request.prompt, T, config, tol, sequential, lanes, family)


def gaps(lesson: Lesson) -> dict[str, float]:
    """Each lane's last iterate: its largest RMS distance to the sequential trajectory, over the states."""
    return {n: largest_state_distance(s[-1].trajectory, lesson.sequential) for n, s in lesson.lanes.items()}


def newly_final(snaps: list[Snapshot]) -> list[int]:
    """States made final by each parallel iteration 1 … n (the anchor's moves): at least 1 each, the
    triangular structure's guarantee."""
    return [a.anchor - b.anchor for a, b in zip(snaps, snaps[1:], strict=False)]
