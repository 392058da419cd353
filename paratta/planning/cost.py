"""One cost model: what a run's network calls cost on the device they run on.

A timestep costs r network rows (``rows_per_step``: two under classifier-free guidance, one for a
model that takes guidance as an input, Flux); a call on n rows costs ℓ(n), read from a measured
batch-latency table (``LatencyTable.call_ms``); an iteration over W timesteps is W · r rows in calls
of at most ``max_batch`` timesteps (``iteration_ms``). The table is the device's own:

- on a GPU, the table shipped in ``paratta/data/latency.json`` for the model (the auto window may
  instead calibrate this GPU, ``calibration.curve``: it runs where the GPU is in hand);
- on a CPU, or a GPU with no table for the model, the CPU table shipped in
  ``paratta/data/latency-cpu.json`` (written by ``benchmarks/cpu_latency.py``); a network without
  its own row there is charged shapes-unet's, scaled by its parameter count (at least shapes').

The worst case of a solve (``evaluation_bound``): each parallel iteration finalises at least one
more timestep, so iteration k evaluates at most min(W, T − k + 1) timesteps, for K = min(max_iters, T)
iterations, after a coarse pass of ``coarse_steps`` single steps when the plan starts with one.
``work_bound`` charges that, and the T single steps of the sequential reference, with the table;
``work`` keeps it for every K = 1 … T (``Work``), so a caller can say which budget would fit. A row's
cost grows at least with the pixels: a run at another image size than the model's own is charged
its area ratio (``area``). ``call_steps``: the most timesteps one call may hold to last at most a
given time, for a solve that must answer an interrupt promptly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

import torch

from paratta.protocol import DiffusionModel

from .latency import TABLE_NAME, TABLE_PATH, Curve, LatencyTable, iteration_ms, load_tables
from .plan import Plan

CPU_TABLE_PATH = TABLE_PATH.with_name("latency-cpu.json")
CPU_TABLE_NAME = "paratta/data/latency-cpu.json"
SCALED_FROM = "shapes-unet"  # a network without its own CPU row is charged this one's, per parameter
FLOOR = "shapes"  # … and at least this one's


@lru_cache(maxsize=1)
def _cpu_tables() -> tuple[dict[str, LatencyTable], dict[str, int]]:
    """The CPU tables by model, and each measured network's parameter count."""
    models = json.loads(CPU_TABLE_PATH.read_text(encoding="utf-8"))["models"]
    return load_tables(CPU_TABLE_PATH), {k: int(v["parameters"]) for k, v in models.items()}


def parameters(model: Any) -> int:
    """The parameters of every torch module a model holds as an attribute."""
    modules = [m for m in vars(model).values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() for m in modules for p in m.parameters())


def cost_table(name: str, model: Any, device: torch.device | str) -> Curve:
    """The latency table that charges ``model`` (called ``name``) on ``device`` (see the module doc),
    made non-decreasing in the rows (a call on more rows costs at least what one on fewer does), so
    that charging the most timesteps an iteration may evaluate bounds what it costs."""
    key, gpu = name.strip().rstrip("/"), torch.device(device).type == "cuda"
    shipped = load_tables().get(key) if gpu else None
    if shipped is not None:
        return Curve(_envelope(shipped), f"the GPU latency table ({shipped.device}) in {TABLE_NAME}")
    tables, counts = _cpu_tables()
    where = "the CPU latency table" + (" (no GPU table for this model)" if gpu else "")
    if key in tables:
        return Curve(_envelope(tables[key]), f"{where} ({tables[key].device}) in {CPU_TABLE_NAME}")
    base = tables[SCALED_FROM]
    factor = parameters(model) / counts[SCALED_FROM]
    floor = tables[FLOOR]  # a small network still costs what the smallest embedded image model does
    ms = tuple(max(m * factor, floor.call_ms(r)) for r, m in zip(base.rows, base.ms, strict=True))
    scaled = LatencyTable(key, base.device, base.rows, ms, base.dtype, base.date)
    source = (
        f"{where} ({base.device}) in {CPU_TABLE_NAME}: {SCALED_FROM}'s, × {factor:.3g} for its parameters"
    )
    return Curve(_envelope(scaled), source)


def _envelope(table: LatencyTable) -> LatencyTable:
    """The table with each latency raised to the largest at fewer rows."""
    ms = tuple(accumulate(table.ms, max))
    return LatencyTable(table.model, table.device, table.rows, ms, table.dtype, table.date)


def evaluation_bound(plan: Plan) -> int:
    """Most timesteps one solve can evaluate: Σ_{k=1}^{K} min(W, T − k + 1), plus the coarse pass."""
    T, K = plan.steps, min(plan.max_iters, plan.steps)
    coarse = plan.coarse_steps if plan.init == "coarse" else 0
    return coarse + sum(min(plan.window, T - k + 1) for k in range(1, K + 1))


def work_bound(plan: Plan, per_step: int, table: LatencyTable, lanes: int = 1) -> tuple[int, float]:
    """(timesteps evaluated, seconds of network time) at worst: the sequential reference and
    ``lanes`` solves of ``plan``, each timestep ``per_step`` rows, charged with ``table``."""
    T, K = plan.steps, min(plan.max_iters, plan.steps)
    one = table.call_ms(per_step)
    coarse = plan.coarse_steps if plan.init == "coarse" else 0
    solve_ms = coarse * one + sum(
        iteration_ms(table, min(plan.window, T - k + 1), per_step, plan.max_batch) for k in range(1, K + 1)
    )
    return T + lanes * evaluation_bound(plan), (T * one + lanes * solve_ms) / 1000


@dataclass(frozen=True)
class Work:
    """What a run's network calls may cost at worst on its device, charged with ``source``: its
    sequential reference (T single steps), and its solve stopped after K = 1 … T iterations (index
    K − 1; the plan's own K is ``iterations``), in timesteps evaluated and milliseconds, times ``area``."""

    reference: tuple[int, float]  # (timesteps, ms)
    solves: tuple[tuple[int, float], ...]  # (timesteps, ms) after K iterations, the coarse pass included
    iterations: int
    area: float
    source: str

    def solve(self, iterations: int | None = None) -> tuple[int, float]:
        """(timesteps, ms) of the solve stopped after ``iterations`` (default the plan's K; at most T)."""
        k = min(self.iterations if iterations is None else iterations, len(self.solves))
        return self.solves[k - 1]

    def bound(self, solves: int = 1, iterations: int | None = None) -> tuple[int, float]:
        """(timesteps evaluated, seconds) at worst: the reference and ``solves`` solves of this plan, as
        ``work_bound`` charges them."""
        evaluations, ms = self.solve(iterations)
        seconds = (self.reference[1] + solves * ms) / 1000 * self.area
        return self.reference[0] + solves * evaluations, seconds


def work(plan: Plan, per_step: int, curve: Curve, area: float = 1.0) -> Work:
    """``work_bound`` of ``plan`` for every iteration budget K = 1 … T (``Work``)."""
    T, table = plan.steps, curve.table
    one = table.call_ms(per_step)
    coarse = plan.coarse_steps if plan.init == "coarse" else 0
    iterations = [
        (
            min(plan.window, T - k + 1),
            iteration_ms(table, min(plan.window, T - k + 1), per_step, plan.max_batch),
        )
        for k in range(1, T + 1)
    ]
    steps = accumulate(n for n, _ in iterations)
    ms = accumulate(m for _, m in iterations)
    solves = tuple((coarse + n, coarse * one + m) for n, m in zip(steps, ms, strict=True))
    return Work((T, T * one), solves, min(plan.max_iters, T), area, curve.source)


def area(model: DiffusionModel, height: int | None, width: int | None) -> float:
    """A run's image area over ``model``'s own size: a row's cost grows at least with the pixels."""
    size = model.image_size if model.takes_image_size else None
    if size is None or (height is None and width is None):
        return 1.0
    return (height or size[0]) * (width or size[1]) / (size[0] * size[1])


def call_steps(table: LatencyTable, per_step: int, seconds: float, most: int) -> int:
    """The most timesteps (≤ ``most``) one network call may hold and last at most ``seconds`` on
    ``table`` (non-decreasing, as ``cost_table`` makes it); at least one."""
    fits = [n for n in range(1, most + 1) if table.call_ms(n * per_step) <= 1000 * seconds]
    return max(fits, default=1)
