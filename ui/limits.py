"""The work cap: the most network time a run's settings could cost, checked before a run starts.

``work_bound`` must stay under ``Caps.max_work_s``: the library's cost model (``paratta.parallel.cost``)
on the run's plan, with the model's rows per timestep and the latency table of the device it runs on.

The app's other server parts: ``ui.jobs`` (one job per session, the time budget), ``ui.guards`` (what a
visitor may send and leave), ``ui.cache`` (files on disk), ``ui.keep`` (what sessions keep in memory).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from paratta import SolverConfig
from paratta.parallel import cost
from paratta.parallel.latency import rows_per_step
from paratta.plans import resolve

from .gpu import DEVICE
from .settings import Caps, RunSettings


def evaluation_bound(steps: int, config: SolverConfig) -> int:
    """Most timesteps one solve of ``config`` can evaluate (``paratta.parallel.cost.evaluation_bound``;
    an auto window is bounded by W = T)."""
    return cost.evaluation_bound(resolve(config, steps))


def work_bound(settings: RunSettings, model: Any, lanes: int = 1, device: str = DEVICE) -> tuple[int, float]:
    """(evaluations, seconds of network time) at worst on ``device``: the sequential reference plus
    ``lanes`` solves (``paratta.parallel.cost.work_bound``; ``model`` may be None for a built-in)."""
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


def check_work(settings: RunSettings, model: Any, caps: Caps, lanes: int = 1) -> None:
    """``ValueError`` when the settings could cost more network time than ``caps.max_work_s``, naming the
    largest max_iters that would fit (when one does)."""
    evaluations, seconds = work_bound(settings, model, lanes)
    if seconds <= caps.max_work_s:
        return
    fits = [
        k
        for k in range(settings.request.steps, 0, -1)
        if work_bound(_with_max_iters(settings, k), model, lanes)[1] <= caps.max_work_s
    ]
    hint = f"max iterations ≤ {fits[0]} fits" if fits else "no max iterations fits at this T and window"
    raise ValueError(
        f"these settings could need up to {evaluations:,} network evaluations (T = {settings.request.steps}, "
        f"window {settings.config.window or settings.request.steps}, guidance {settings.request.guidance:g}"
        f"{', two solvers' if lanes == 2 else ''}), about {seconds:.0f} s on {settings.model} at worst; the "
        f"cap here is {caps.max_work_s:g} s: lower the steps, the window or max iterations ({hint})"
    )


def _with_max_iters(settings: RunSettings, k: int) -> RunSettings:
    return replace(settings, config=replace(settings.config, max_iters=k))
