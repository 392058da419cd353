"""The work cap: the most network time a run's settings could cost, checked before a run starts.

``work_bound`` must stay under ``Caps.max_work_s``: the library's cost model (``paratta.planning.cost``)
on the run's plan, with the model's rows per timestep and the latency table of the device it runs on.

The app's other server parts: ``ui.jobs`` (one job per session, the time budget), ``ui.guards`` (what a
visitor may send and leave), ``ui.cache`` (files on disk), ``ui.keep`` (what sessions keep in memory).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from paratta import SolverConfig
from paratta.planning import cost
from paratta.planning.latency import rows_per_step
from paratta.planning.plan import resolve

from .gpu import DEVICE
from .session import race_lanes
from .settings import Caps, RunSettings


def evaluation_bound(steps: int, config: SolverConfig) -> int:
    """Most timesteps one solve of ``config`` can evaluate (``paratta.planning.cost.evaluation_bound``;
    an auto window is bounded by W = T)."""
    return cost.evaluation_bound(resolve(config, steps))


def work_bound(settings: RunSettings, model: Any, lanes: int = 1, device: str = DEVICE) -> tuple[int, float]:
    """(evaluations, seconds of network time) at worst on ``device``: the sequential reference plus
    ``lanes`` solves (``paratta.planning.cost.work_bound``; ``model`` may be None for a built-in)."""
    plan = resolve(settings.config, settings.request.steps)  # an auto window is bounded by W = T
    table = cost.cost_table(settings.model, model, device).table
    evaluations, seconds = cost.work_bound(
        plan, rows_per_step(settings.request.guidance, model), table, lanes
    )
    return evaluations, seconds * area(settings, model)


def area(settings: RunSettings, model: Any) -> float:
    """The run's image area over the model's own: a row's cost grows at least with the pixels."""
    request, size = settings.request, getattr(model, "image_size", None)
    if size is None or (request.height is None and request.width is None):
        return 1.0
    return (request.height or size[0]) * (request.width or size[1]) / (size[0] * size[1])


def job_bound(
    settings: RunSettings, model: Any, race: str | None = None, device: str = DEVICE
) -> tuple[int, float]:
    """(evaluations, seconds) at worst of a run (its reference and one solve) or of the race ``race``
    (``ui.session.race_lanes``): two solves beside the one reference of their shared problem, or each
    lane's own reference and solve."""
    if race is None:
        return work_bound(settings, model, 1, device)
    lanes = list(race_lanes(settings, race).values())
    if len({lane.request for lane in lanes}) == 1:
        return work_bound(settings, model, 2, device)
    bounds = [work_bound(lane, model, 1, device) for lane in lanes]
    return sum(e for e, _ in bounds), sum(s for _, s in bounds)


def check_work(settings: RunSettings, model: Any, caps: Caps, race: str | None = None) -> None:
    """``ValueError`` when a run's (or the race ``race``'s) settings could cost more network time than
    ``caps.max_work_s``, naming the largest max_iters that would fit (when one does)."""
    evaluations, seconds = job_bound(settings, model, race)
    if seconds <= caps.max_work_s:
        return
    fits = [
        k
        for k in range(settings.request.steps, 0, -1)
        if job_bound(_with_max_iters(settings, k), model, race)[1] <= caps.max_work_s
    ]
    hint = f"max iterations ≤ {fits[0]} fits" if fits else "no max iterations fits at this T and window"
    lanes = race_lanes(settings, race).values() if race is not None else [settings]
    steps = " and ".join(sorted({str(lane.request.steps) for lane in lanes}, key=int, reverse=True))
    own_steps = all(lane.request.steps == settings.request.steps for lane in lanes)  # not a race's own T
    lower = "the steps, the window or max iterations" if own_steps else "the window or max iterations"
    raise ValueError(
        f"these settings could need up to {evaluations:,} network evaluations (T = {steps}, "
        f"window {settings.config.window or settings.request.steps}, guidance {settings.request.guidance:g}"
        f"{', two solvers' if race is not None else ''}), about {seconds:.0f} s on {settings.model} at "
        f"worst; the cap here is {caps.max_work_s:g} s: lower {lower} ({hint})"
    )


def _with_max_iters(settings: RunSettings, k: int) -> RunSettings:
    return replace(settings, config=replace(settings.config, max_iters=k))
