"""The work cap: the most network time a run's settings could cost, checked before a run starts.

``work_bound`` must stay under ``Caps.max_work_s``. The bound is exact in its assumptions: each parallel
iteration finalises at least one more timestep, so iteration k evaluates at most min(W, T − k + 1)
states; the sequential reference costs T; guidance doubles the rows; a row costs what it was measured
to cost for that model (``ROW_MS``).

The app's other server parts: ``ui.jobs`` (one job per session, the time budget), ``ui.guards`` (what a
visitor may send and leave), ``ui.cache`` (files on disk), ``ui.keep`` (what sessions keep in memory).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from paratta import SolverConfig

from .settings import Caps, RunSettings

# Milliseconds per network row (one state, one condition), batch of 50, 1 torch thread, measured on
# the 2-core Intel Xeon @ 2.50 GHz development box (CPU only); the unit of ``Caps.max_work_s``.
ROW_MS = {"toy2d": 0.01, "shapes": 4.1, "shapes-unet": 24.0}
# Other networks (diffusers folders, hub ids): scaled by parameter count from shapes-unet (1.12 M).
MS_PER_PARAMETER = 24.0 / 1_117_667


def row_ms(name: str, model: Any) -> float:
    """Measured cost of one network row for a built-in; by parameter count for any other network."""
    if name in ROW_MS:
        return ROW_MS[name]
    modules = [m for m in vars(model).values() if isinstance(m, torch.nn.Module)]
    parameters = sum(p.numel() for m in modules for p in m.parameters())
    return max(ROW_MS["shapes"], parameters * MS_PER_PARAMETER)


def evaluation_bound(steps: int, config: SolverConfig) -> int:
    """Most guided evaluations one solve can make: Σ_{k=1}^{K} min(W, T − k + 1) (+ the coarse pass).

    At iteration k the anchor is at most T − k + 1 (one more timestep final per iteration) and the
    window holds min(W, anchor) states; K = min(max_iters, T); an auto window is bounded by W = T.
    """
    cfg = config.resolved(steps)
    W = cfg.window if isinstance(cfg.window, int) else steps  # auto chooses a window ≤ T
    K = min(cfg.max_iters, steps)
    coarse = cfg.coarse_steps if cfg.init == "coarse" else 0
    return coarse + sum(min(W, steps - k + 1) for k in range(1, K + 1))


def work_bound(settings: RunSettings, model: Any, lanes: int = 1) -> tuple[int, float]:
    """(evaluations, seconds of network time) at worst: the sequential reference plus ``lanes`` solves."""
    T = settings.request.steps
    evaluations = T + lanes * evaluation_bound(T, settings.config)
    rows = 2 if settings.request.guidance != 1 else 1  # classifier-free guidance: two rows per state
    return evaluations, evaluations * rows * row_ms(settings.model, model) / 1000


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
