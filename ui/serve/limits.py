"""What one visitor may cost the machine: the caps (``Caps``), and the work a job's posed runs may
cost at worst (``job_work``), which must stay under ``Caps.max_work_s`` before a job starts.

The work of one run is the library's (``paratta.Run.work``: its sequential reference and its solve,
charged with the latency table of the device it runs on, for every iteration budget); a job adds up
its runs, counting once the reference that a race's two lanes share. ``ui.run.door`` checks it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from paratta import Run
from paratta.config import MAX_PROMPT


@dataclass(frozen=True)
class Caps:
    """Per-run limits so one visitor cannot hog a shared machine (stricter on a Hugging Face Space).

    ``budget_s``: wall-clock seconds a run may take before it ends as if stopped; ``max_work_s``: the
    most network time a run may be able to cost at worst (``job_work``), in seconds of the device's
    latency table. Both can be set with ``PARATTA_BUDGET_S`` and ``PARATTA_MAX_WORK_S``.
    """

    max_steps: int
    max_window: int
    budget_s: float = 300.0
    max_work_s: float = 1200.0

    @classmethod
    def from_env(cls) -> Caps:
        on_space = bool(os.environ.get("SPACE_ID"))
        steps, budget, work = (100, 30.0, 150.0) if on_space else (200, 300.0, 1200.0)
        budget = seconds("PARATTA_BUDGET_S", os.environ.get("PARATTA_BUDGET_S", budget))
        work = seconds("PARATTA_MAX_WORK_S", os.environ.get("PARATTA_MAX_WORK_S", work))
        if budget <= 0 or work <= 0:
            raise ValueError("PARATTA_BUDGET_S and PARATTA_MAX_WORK_S must be positive numbers of seconds")
        return cls(steps, steps, budget, work)

    def text(self) -> str:
        """The one line under the controls that states the limits."""
        return (
            f"Limits here: T ≤ {self.max_steps}, window ≤ {self.max_window}, prompt ≤ {MAX_PROMPT} "
            f"characters; a run ends after {self.budget_s:g} s as if stopped; settings that could need "
            f"over {self.max_work_s:g} s of network time are refused; one job per visitor: a new Run, "
            "Race or Teach replaces the one still running."
        )


def seconds(name: str, value: object) -> float:
    """A number of seconds from the environment; ``ValueError`` naming the variable."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds; got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number of seconds; got {value!r}")
    return number


def shared(runs: Sequence[Run]) -> bool:
    """Do the runs share one problem (the same request on the same model: one sequential reference)?"""
    return len(runs) > 1 and len({(r.model, r.request) for r in runs}) == 1


def job_work(runs: Sequence[Run], iterations: Sequence[int | None] | None = None) -> tuple[int, float]:
    """(timesteps evaluated, seconds of network time) at worst of a job's runs on their device: one
    sequential reference for runs that share their problem (``shared``), else each run's own, and every
    run's solve stopped after its ``iterations`` (None: its plan's own budget)."""
    budgets = list(iterations) if iterations is not None else [None] * len(runs)
    if shared(runs):
        reference, ms = runs[0].work.reference
        solves = [run.work.solve(k) for run, k in zip(runs, budgets, strict=True)]
        total_ms = ms + sum(m for _, m in solves)
        return reference + sum(e for e, _ in solves), total_ms / 1000 * runs[0].work.area
    bounds = [run.work.bound(1, k) for run, k in zip(runs, budgets, strict=True)]
    return sum(e for e, _ in bounds), sum(s for _, s in bounds)
