"""A plan: every setting one solve reads, concrete, made once before the iteration starts.

``SolverConfig`` holds the settings as declared, some of them auto (``None``, ``"auto"``,
``"device"``); ``Plan`` holds numbers only, so the iteration never decides anything. Planning is
two steps: ``resolve`` fills the auto settings that depend only on T (pure, no device); ``plan``
(``paratta.plan``) then lets the device choose the window and max_batch where the config leaves
them to it (``window.choose_window``: a latency table, a cached calibration, or one made now), and,
over a group, broadcasts rank 0's choice so that every rank solves with the same window.

A plan also carries the process group its network rows are split over (None: this process
evaluates every row), the window choice with its projection and source when the device made one
(``WindowChoice``), and an interrupt: a check the network evaluation makes before each call, which
ends the solve when it answers True (``paratta.evaluate.Interrupted``).

Rows are split over ranks only when ``group`` is passed (the CLI under torchrun passes the group it
joined): a call inside a process group set up by someone else solves the whole window alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from paratta.config import STATE_DTYPES, TOLERANCE, Init, SolverConfig, StateDtype, Stopping
from paratta.problem import Problem
from paratta.schedule import Split

from .window import WindowChoice, choose_window, device_chooses


class RowGroup(Protocol):
    """Ranks that share each network call's rows (``paratta.parallel.distributed.Group``)."""

    rank: int
    world: int

    def gather_rows(
        self,
        compute: Callable[[int, int], Tensor],
        n: int,
        row_shape: tuple[int, ...],
        dtype: torch.dtype,
        t0: int,
    ) -> Tensor:
        """All n rows on every rank, in order; this rank computes ``compute(start, stop)`` for its share."""
        ...

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        ...


@dataclass(frozen=True)
class Plan:
    """One solve's settings, all concrete (see ``SolverConfig`` for each one's meaning)."""

    steps: int  # T: the plan is for a problem of this many steps
    solver: str  # as given; "sequential" is planned as Jacobi on one unknown (window, order, history 1)
    window: int
    order: int
    history: int
    stopping: Stopping
    tol: float
    tol2: float
    max_iters: int
    lam: float
    init: Init
    coarse_steps: int
    max_batch: int | None  # None: every timestep of the window in one call
    state_dtype: StateDtype
    split: Split = "flow"  # the update's linear part (``Schedule.linear_part``)
    device: torch.device | None = None  # where the solver state lives; None: the model's device
    group: RowGroup | None = None  # ranks sharing each call's rows; None: this process evaluates all
    projection: WindowChoice | None = None  # set when the window or max_batch was chosen for a device
    interrupt: Callable[[], bool] | None = None  # asked before each network call; True ends the solve

    @property
    def dtype(self) -> torch.dtype:
        return STATE_DTYPES[self.state_dtype]


def resolve(
    config: SolverConfig,
    steps: int,
    *,
    device: torch.device | str | None = None,
    group: RowGroup | None = None,
) -> Plan:
    """``config`` made concrete for a T = ``steps`` run (``ValueError`` naming a setting outside its range).

    Auto settings: order min(20, T), max_iters T, tol the stopping rule's own (``TOLERANCE``),
    coarse_steps max(2, T // 10), window T and max_batch None (every timestep in one call) unless
    given as numbers; ``plan`` replaces the window and max_batch when the device chooses them.
    ``solver="sequential"`` is the sequential sampler as a solve: window 1, order 1, history 1
    (Jacobi on one unknown at a time: each iteration finalises one step).
    """
    config.validate(steps)
    given_window = config.window if isinstance(config.window, int) else None
    given_batch = config.max_batch if isinstance(config.max_batch, int) else None
    sequential = config.solver == "sequential"
    return Plan(
        steps=steps,
        solver=config.solver,
        window=1 if sequential else given_window or steps,
        order=1 if sequential else min(20, steps) if config.order is None else config.order,
        history=1 if sequential else config.history,
        stopping=config.stopping,
        tol=TOLERANCE[config.stopping] if config.tol is None else config.tol,
        tol2=config.tol2,
        max_iters=steps if config.max_iters is None else config.max_iters,
        lam=config.lam,
        init=config.init,
        coarse_steps=max(2, steps // 10) if config.coarse_steps is None else config.coarse_steps,
        max_batch=given_batch,
        state_dtype=config.state_dtype,
        split="published" if sequential else config.split,
        device=torch.device(device) if device is not None else None,
        group=group,
    )


def plan(
    problem: Problem,
    config: SolverConfig | None = None,
    device: torch.device | str | None = None,
    group: RowGroup | None = None,
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
