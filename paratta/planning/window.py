"""``window="auto"``: the window W of least projected wall-clock on this device.

A parallel iteration over W timesteps is one network call on W · r rows (r = 2 under classifier-free
guidance), split across the ranks of a process group, and a run takes n(W) iterations:

    (1)  t(W) = n(W) · ℓ(⌈W / ranks⌉ · r)               ℓ: the device's batch-latency curve
    (2)  n(W) = min(T, n_T · (1 + κ (T/W − 1)))          n_T = a_η + b_η · log2 T
    (3)  t_seq = T · ℓ(r)                                 the sequential sampler

Auto picks W* = argmin_{1 ≤ W ≤ T} t(W), the larger W on a tie. (2) is a fit of measured iteration
counts (``paratta/data/iterations.json``, written by ``benchmarks/window_model.py``): κ says how fast
the iterations grow as the window shrinks; n_T scales t(W) and does not move W*. ℓ comes from
``calibration.curve`` (a shipped table for this device, a cached calibration, or a new one). Every
time made here is a projection and says so (``WindowChoice.line``). ``paratta.plan`` calls this
once per run, before the iteration.

``max_batch="auto"`` on CUDA: as many timesteps per call as fit in ``MEMORY_SHARE`` of the free
memory, from the peak memory one calibration call takes per timestep; on a CPU: all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from paratta.config import SolverConfig
from paratta.problem import Problem

from .calibration import curve
from .latency import Curve, LatencyTable, Projection, iteration_ms, rows_per_step

MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "iterations.json"
MEMORY_SHARE = (
    0.8  # of the free GPU memory a call may take: the solver's state and the allocator need the rest
)


@dataclass(frozen=True)
class IterationModel:
    """(2): n(W) from κ_η and the full-window fit n_T = a_η + b_η log2 T, fitted at η = 0 and η = 1
    and interpolated linearly in η between them."""

    kappa: dict[str, float]  # "0", "1" → κ
    full_window: dict[str, dict[str, float]]  # "0", "1" → {"a", "b"}

    def full(self, T: int, eta: float) -> float:
        lo, hi = self.full_window["0"], self.full_window["1"]
        a, b = (lo[k] + eta * (hi[k] - lo[k]) for k in ("a", "b"))
        return max(1.0, a + b * math.log2(T))

    def iterations(self, T: int, W: int, eta: float) -> float:
        kappa = self.kappa["0"] + eta * (self.kappa["1"] - self.kappa["0"])
        return min(float(T), self.full(T, eta) * (1 + kappa * (T / W - 1)))


@dataclass(frozen=True)
class WindowChoice:
    """A window chosen for a device: where its latency curve came from, and what it projects."""

    window: int
    steps: int
    ranks: int
    max_batch: int | None
    source: str  # the latency curve's source (``Curve.source``)
    iterations: float  # expected iterations at the chosen window
    projection: Projection  # the chosen window's wall-clock against sequential, on the curve's device
    by_window: dict[int, float]  # projected seconds at W = T/8, T/4, T/2, T and the chosen one

    @property
    def device(self) -> str:
        return self.projection.device

    @property
    def projected_s(self) -> float:
        return self.projection.parallel_s

    @property
    def sequential_s(self) -> float:
        return self.projection.sequential_s

    @property
    def speedup(self) -> float:
        return self.projection.speedup

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


@lru_cache(maxsize=1)
def iteration_model(path: Path = MODEL_PATH) -> IterationModel:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return IterationModel({k: float(v) for k, v in doc["kappa"].items()}, doc["full_window"])


def choose(
    table: LatencyTable,
    T: int,
    guidance: float,
    eta: float,
    ranks: int = 1,
    max_batch: int | None = None,
    network: Any = None,
) -> tuple[int, dict[int, float]]:
    """W* of (1)–(2) and t(W) in seconds for every W = 1…T (``network``: the model, for its rows)."""
    model = iteration_model()
    per_step = rows_per_step(guidance, network)
    t = {
        W: model.iterations(T, W, eta) * iteration_ms(table, W, per_step, max_batch, ranks) / 1000
        for W in range(1, T + 1)
    }
    best = min(t.values())
    return max(W for W, s in t.items() if s <= best * (1 + 1e-12)), t


def auto_max_batch(problem: Problem, device: torch.device) -> int | None:
    """As many timesteps per call as fit in ``MEMORY_SHARE`` of the free CUDA memory; None on a CPU."""
    if device.type != "cuda":
        return None
    model, n = problem.model, min(problem.steps, 4)
    x = problem.x_T[None].expand(n, *problem.x_T.shape).to(model.device, model.dtype)
    t = problem.coef.timesteps[:n].to(model.device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        model.predict(x, t, problem.cond, problem.guidance)
    torch.cuda.synchronize(device)
    per_step = max(1, (torch.cuda.max_memory_allocated(device) - base) // n)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(MEMORY_SHARE * free // per_step))


def device_chooses(config: SolverConfig, device: torch.device) -> bool:
    """Does ``config`` leave the window or max_batch to the device ("auto", or "device" on CUDA)?"""
    if config.solver == "sequential":
        return config.max_batch == "auto"
    default_auto = config.window == "device" and device.type == "cuda"
    return config.window == "auto" or default_auto or config.max_batch == "auto"


def choose_window(
    problem: Problem, config: SolverConfig, device: torch.device, ranks: int = 1
) -> WindowChoice:
    """The window of least projected wall-clock on ``device`` over ``ranks`` (a given window kept),
    and max_batch "auto" as a number; a calibration when no table or cached one fits."""
    T, eta = problem.steps, float(problem.request.eta)
    max_batch = auto_max_batch(problem, device) if config.max_batch == "auto" else config.max_batch
    measured: Curve = curve(problem, device)
    W, t = choose(measured.table, T, problem.guidance, eta, ranks, max_batch, problem.model)
    if isinstance(config.window, int):
        W = config.window
    shown = {w: t[w] for w in sorted({max(1, T // 8), max(1, T // 4), max(1, T // 2), T, W})}
    sequential_s = T * measured.table.call_ms(rows_per_step(problem.guidance, problem.model)) / 1000
    return WindowChoice(
        window=W,
        steps=T,
        ranks=ranks,
        max_batch=max_batch,
        source=measured.source,
        iterations=iteration_model().iterations(T, W, eta),
        projection=Projection(t[W], sequential_s, measured.table.device),
        by_window=shown,
    )
