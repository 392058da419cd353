"""``paratta.plan``: a run's settings made concrete for its device and process group, once.

The iteration (``paratta.solver``) reads a ``Plan`` and decides nothing. Everything that needs the
device or the group happens here, before it: the auto window and max_batch (``window.choose_window``:
a latency table, a cached calibration, or a calibration made now), and, over a group, rank 0's
choice broadcast so that every rank solves with the same window. ``solve`` and ``run`` are the
public entry: given a ``SolverConfig`` they plan once, then iterate; given a ``Plan`` they iterate.

Rows are split over ranks only when ``group`` is passed (the CLI under torchrun passes the group it
joined): a call inside a process group set up by someone else solves the whole window alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import Tensor

from paratta import solver
from paratta.config import SolverConfig
from paratta.plans import Plan, resolve
from paratta.problem import Problem
from paratta.solver import Iterate

from .distributed import Group
from .window import choose_window, device_chooses


def plan(
    problem: Problem,
    config: SolverConfig | None = None,
    device: torch.device | str | None = None,
    group: Group | None = None,
) -> Plan:
    """The concrete plan of one solve of ``problem`` (``ValueError`` naming a setting outside its range).

    ``device`` is where the solver state lives (default: the model's); the window is chosen for the
    model's device. Over a ``group`` every rank must call this together: rank 0 chooses, all get it.
    """
    config = config or SolverConfig()
    planned = resolve(config, problem.steps, device=device, group=group)  # checked before any measurement
    network = torch.device(problem.model.device)
    if not device_chooses(config, network):
        return planned
    ranks = group.world if group is not None else 1
    if group is None or group.world == 1:
        chosen = choose_window(problem, config, network, ranks)
    else:
        mine = choose_window(problem, config, network, ranks) if group.rank == 0 else None
        chosen = group.broadcast(mine)  # type: ignore[assignment]
    window = chosen.window if config.solver != "sequential" else planned.window
    return replace(planned, window=window, max_batch=chosen.max_batch, projection=chosen)


def solve(
    problem: Problem,
    config: SolverConfig | Plan | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
    group: Group | None = None,
) -> Iterator[Iterate]:
    """``paratta.solver.solve`` on ``config``'s plan (made here once when a config is given)."""
    return solver.solve(problem, _planned(problem, config, device, group), init_trajectory)


def run(
    problem: Problem,
    config: SolverConfig | Plan | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
    group: Group | None = None,
) -> Iterate:
    """Solve to the end and return the last ``Iterate`` (see ``solve``)."""
    return solver.run(problem, _planned(problem, config, device, group), init_trajectory)


def _planned(
    problem: Problem,
    config: SolverConfig | Plan | None,
    device: torch.device | str | None,
    group: Group | None,
) -> Plan:
    if not isinstance(config, Plan):
        return plan(problem, config, device, group)
    if device is not None or group is not None:
        raise ValueError("device and group are part of the plan: pass them to paratta.plan, not with a plan")
    return config
