"""A plan: every setting one solve reads, concrete, made once before the iteration starts.

``SolverConfig`` holds the settings as declared, some of them auto (``None``, ``"auto"``); ``Plan``
holds numbers only, so the iteration never decides anything. ``resolve`` fills the auto settings
that depend only on T (pure, no device); the window and max_batch that depend on the device are
chosen by ``paratta.parallel.plan.plan`` (exported as ``paratta.plan``), which then calls
``resolve`` with them. A plan also carries the process group its network rows are split over (None:
this process evaluates every row) and, when the window was chosen for a device, that choice's
projection with its source (``WindowPlan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .config import STATE_DTYPES, TOLERANCE, Init, SolverConfig, StateDtype, Stopping


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


@dataclass(frozen=True)
class WindowPlan:
    """A window chosen for a device: where its latency curve came from, and what it projects."""

    window: int
    steps: int
    ranks: int
    max_batch: int | None
    source: str  # the latency curve's source (``paratta.parallel.calibration.Curve.source``)
    device: str
    iterations: float  # expected iterations at the chosen window
    projected_s: float  # projected wall-clock at the chosen window
    sequential_s: float  # projected wall-clock of the sequential sampler
    by_window: dict[int, float]  # projected seconds at W = T/8, T/4, T/2, T and the chosen one

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.projected_s if self.projected_s > 0 else math.inf

    def line(self) -> str:
        """One sentence for a stats line or a CLI summary."""
        text = (
            f"window auto: W = {self.window} of T = {self.steps}"
            + (f" over {self.ranks} ranks" if self.ranks > 1 else "")
            + f", projected {self.projected_s:.3g} s against {self.sequential_s:.3g} s sequential "
            f"({self.speedup:.2f}×) on {self.device}, from the {self.source}"
        )
        if self.speedup <= 1.0:
            text += "; on this device parallel sampling cannot beat sequential in wall-clock"
        return text

    def summary(self) -> dict[str, Any]:
        """The fields a JSON summary carries."""
        return {
            "window": self.window,
            "window_source": self.source,
            "window_device": self.device,
            "projected_seconds": round(self.projected_s, 4),
            "projected_sequential_seconds": round(self.sequential_s, 4),
            "projected_iterations": round(self.iterations, 1),
            "max_batch": self.max_batch,
        }


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
    device: torch.device | None = None  # where the solver state lives; None: the model's device
    group: RowGroup | None = None  # ranks sharing each call's rows; None: this process evaluates all
    projection: WindowPlan | None = None  # set when the window or max_batch was chosen for a device

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
    given as numbers; ``paratta.plan`` replaces the window and max_batch when the device chooses them.
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
        device=torch.device(device) if device is not None else None,
        group=group,
    )
