"""The Teach room's words: the verdict, what a frame shows, its numbers, and the lines under the plot."""

from __future__ import annotations

import os
import re
from typing import Any

from .lanes import LANES, SAMPLER_NAMES, SHORT_NAMES, SOLVER, Lesson, gaps, newly_final


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def verdict(lesson: Lesson) -> str:
    """One line: each lane's parallel iterations, and whether every lane ends on the sequential path."""
    last = {name: snaps[-1] for name, snaps in lesson.lanes.items()}
    counts = " · ".join(f"{SHORT_NAMES[n]} {last[n].iteration}" for n in reversed(LANES))
    head = f"**Parallel iterations: {counts}**"
    j, a = last["jacobi"].iteration, last["anderson"].iteration
    if 0 < a < j:
        head += f" (TAA {j / a:.1f}× fewer than Jacobi)"
    head += f" · sequential {SAMPLER_NAMES[lesson.family]}: {plural(lesson.steps, 'step')}"
    off = gaps(lesson)
    if all(s.converged for s in last.values()) and max(off.values()) <= lesson.tol:
        return (
            f"{head} · all three end on the sequential trajectory (largest distance {max(off.values()):.0e})"
        )
    said = [
        f"{SHORT_NAMES[n]} ends {off[n]:.1e} from it" + ("" if last[n].converged else " (not converged)")
        for n in LANES
        if off[n] > lesson.tol or not last[n].converged
    ]
    return f"{head} · " + "; ".join(said)


def settings_line(lesson: Lesson) -> str:
    T, c = lesson.steps, lesson.config
    order = f"k = {lesson.order}" + (" (= T)" if lesson.order == T else "")
    return f"{order}, m = {c.history}, λ = {c.lam:g}"


def frame_line(lesson: Lesson, k: int) -> str:
    """What frame k shows, lane by lane: the states final, and how many this iteration made final."""
    T, parts = lesson.steps, []
    for name, s in lesson.at(k).items():
        if s.iteration == 0:
            parts.append(f"{SHORT_NAMES[name]}: every state a copy of x_T")
        elif s.converged:
            parts.append(f"{SHORT_NAMES[name]}: done at iteration {s.iteration} ✓")
        else:
            gained = newly_final(lesson.lanes[name])[s.iteration - 1]
            parts.append(f"{SHORT_NAMES[name]}: {s.final(T)}/{T} final (+{gained})")
    return f"Frame {k} of {lesson.frames} · " + " · ".join(parts) + f" · {settings_line(lesson)}"


def summary(lesson: Lesson, k: int) -> str:
    return f"### {verdict(lesson)}\n{frame_line(lesson, k)}"


def numbers(lesson: Lesson, k: int, mode: str) -> dict[str, Any]:
    """The frame's numbers (the JSON under the plot): per lane its iteration, final states, residual,
    distance to the sequential trajectory, its x_0, the box its states span and the view drawn."""
    from paratta.metrics import largest_state_distance

    lanes = {}
    for name, s in lesson.at(k).items():
        lo, hi = s.trajectory.min(axis=0), s.trajectory.max(axis=0)
        lanes[name] = {
            "iteration": s.iteration,
            "final_states": s.final(lesson.steps),
            "converged": s.converged,
            "max_residual": None if s.iteration == 0 else s.max_residual,
            "distance_to_sequential": largest_state_distance(s.trajectory, lesson.sequential),
            "x0": [round(float(v), 6) for v in s.trajectory[0]],
            "states_box": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])],
            "view": [float(v) for v in lesson.view(name, k, mode)],
        }
    return {"frame": k, "frames": lesson.frames, "view": mode, "steps": lesson.steps, "lanes": lanes}


def settings_note(max_steps: int) -> str:
    """One line of hints for the tab's controls, from the settings' declarations."""
    from paratta.models.toy2d import CLUSTERS

    order, history, lam = SOLVER["order"], SOLVER["history"], SOLVER["lam"]
    return (
        f"Clusters: {', '.join(CLUSTERS)} (or n, ne, …); empty = all eight · T at most {max_steps} here · "
        f"{order.symbol}: {hint(order.hint)}; above T it means T · {history.symbol}: {hint(history.hint)} · "
        f"{lam.symbol}: {hint(lam.hint)}; a large λ turns Anderson into Jacobi"
    )


def hint(text: str) -> str:
    """A declared hint without its "(auto: …)" note: this tab has no automatic values."""
    return text.split(" (auto")[0]


INTRO = (
    "`toy2d`: eight Gaussian clusters in 2-D with an exact ε, on the CPU: three solvers of the same "
    "triangular system, frame by frame."
)
EXPLANATION = (
    "Each frame is **one parallel iteration**: the whole trajectory x_T → x_0 (orange) is updated at once; "
    "from the anchor up it is final (cyan), by the solver's own records, and each iteration makes at least "
    "one more state final (the +n). White dashed: the sequential trajectory (square: x_T, star: its x_0); "
    "red dot: the iterate's x_0. Three lanes, one problem, the full window and the same order k: **Jacobi** "
    "(plain fixed point), **Anderson with one γ** for the whole window, and **TAA**, one γ per timestep "
    "fitted on the rows that timestep depends on. Right: each lane's largest residual per iteration "
    "(log scale). *Follow* zooms each plane to its iterate; *whole run* holds every iterate of the run. "
    "Sampler family: DDIM follows the mixture's exact ε; flow matching takes Euler steps along the same "
    "mixture's exact velocity: same clusters, straighter paths."
)


def lesson_link() -> str:
    """Where the lesson (docs/teach.md) can be read: the Space's own copy on a Space, else the file."""
    space = os.environ.get("SPACE_ID")
    if space and re.fullmatch(r"[\w.-]+/[\w.-]+", space):
        return f"[docs/teach.md](https://huggingface.co/spaces/{space}/blob/main/docs/teach.md)"
    return "`docs/teach.md` in the repository"
