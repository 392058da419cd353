"""Batch-latency tables, and the wall-clock they project on the hardware ParaTAA was made for.

On a CPU a batch of W network rows costs many single calls, so a parallel iteration buys little
there (``calibration`` measures how little); on a GPU a batch costs about one call until the device
is full. The honest way to show what
the method is for is to take the *measured* latency of one network call at each batch size on a
GPU (``paratta/data/latency.json``, written by ``benchmarks/gpu_latency.py``) and charge each
iteration of a run with it:

    projected ParaTAA   = Σ_iterations latency(rows evaluated in that iteration)
    projected sequential = T · latency(rows of one step)

A timestep is one row, or two under classifier-free guidance (guidance ≠ 1: conditional and
unconditional halves in one batch). ``latency`` interpolates linearly between measured batch sizes;
beyond the largest one the batch is split into chunks of that size (as ``max_batch`` does). Every
figure made here is a projection and is labelled so (``Projection.label``); none is measured here.
A table travels with where it comes from (``Curve``: shipped, calibrated here, scaled), and every
speedup is a ``Projection``'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paratta.protocol import DiffusionModel

TABLE_PATH = Path(__file__).resolve().parents[1] / "data" / "latency.json"
TABLE_NAME = "paratta/data/latency.json"
NO_TABLE = "no latency table measured for this model on a GPU"


@dataclass(frozen=True)
class LatencyTable:
    """Median latency ``ms[j]`` of one network call on ``rows[j]`` batch rows, for one model on one device."""

    model: str
    device: str
    rows: tuple[int, ...]
    ms: tuple[float, ...]
    dtype: str = ""
    date: str = ""

    def __post_init__(self) -> None:
        if not self.rows or len(self.rows) != len(self.ms):
            raise ValueError(f"latency table for {self.model}: rows and ms must be non-empty, equally long")
        if any(b <= a for a, b in zip(self.rows, self.rows[1:], strict=False)) or self.rows[0] < 1:
            raise ValueError(f"latency table for {self.model}: rows must be increasing positive batch sizes")
        if not all(math.isfinite(m) and m > 0 for m in self.ms):
            raise ValueError(f"latency table for {self.model}: ms must be positive numbers")

    def call_ms(self, rows: int) -> float:
        """Latency of one call on ``rows`` batch rows: linear between measured sizes; chunked beyond the
        largest (a call that does not fit is split, as ``max_batch`` splits it); below the smallest,
        the smallest's (a call costs at least its fixed overhead)."""
        if rows <= 0:
            return 0.0
        largest = self.rows[-1]
        if rows > largest:
            full, rest = divmod(rows, largest)
            return full * self.ms[-1] + self.call_ms(rest)
        if rows <= self.rows[0]:
            return self.ms[0]
        j = next(j for j, r in enumerate(self.rows) if r >= rows)
        r0, r1, m0, m1 = self.rows[j - 1], self.rows[j], self.ms[j - 1], self.ms[j]
        return m0 + (m1 - m0) * (rows - r0) / (r1 - r0)


@dataclass(frozen=True)
class Curve:
    """A latency table and where it comes from (said wherever a figure made from it is shown)."""

    table: LatencyTable
    source: str  # a shipped table, a calibration (cached or made now, with its date), a scaled table


@dataclass(frozen=True)
class Projection:
    """Projected seconds of a run and of the sequential sampler on the table's device."""

    parallel_s: float
    sequential_s: float
    device: str

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.parallel_s if self.parallel_s > 0 else math.inf

    @property
    def label(self) -> str:
        return (
            f"projected on {self.device} from a measured batch-latency table ({TABLE_NAME}), "
            "not measured here"
        )


def rows_per_step(guidance: float, model: DiffusionModel | None = None) -> int:
    """Network rows one timestep costs: the model's declared ``rows_per_timestep`` (one per image),
    twice that under classifier-free guidance (s ≠ 1) unless the guidance is an input of its network
    (``classifier_free`` False: Flux). Without a model: one image under classifier-free guidance."""
    rows, doubled = (1, True) if model is None else (model.rows_per_timestep, model.classifier_free)
    return rows * (2 if doubled and guidance != 1 else 1)


def iteration_ms(
    table: LatencyTable, timesteps: int, per_step: int, max_batch: int | None = None, ranks: int = 1
) -> float:
    """ℓ of one parallel iteration over ``timesteps``: each rank's share (``ranks``), in calls of at
    most ``max_batch`` timesteps (as ``evaluate`` splits it), ``per_step`` rows per timestep."""
    share = -(-timesteps // ranks)
    chunk = min(share, max_batch) if max_batch else share
    if chunk <= 0:
        return 0.0
    full, rest = divmod(share, chunk)
    return full * table.call_ms(chunk * per_step) + table.call_ms(rest * per_step)


def project(
    table: LatencyTable,
    timesteps_per_iteration: Sequence[int],
    steps: int,
    guidance: float,
    max_batch: int | None = None,
    sequential_steps_before: int = 0,
    per_step: int | None = None,
) -> Projection:
    """Σ_iterations latency(rows of that iteration) against T · latency(rows of one step).

    ``timesteps_per_iteration`` are the window sizes evaluated, one per parallel iteration;
    ``max_batch`` (timesteps per call) splits an iteration into several calls, as the solver does;
    ``sequential_steps_before`` charges an initialisation run step by step (the coarse pass);
    ``per_step`` overrides the rows a timestep costs (``rows_per_step(guidance, model)``).
    """
    per_step = per_step or rows_per_step(guidance)
    one_step_ms = table.call_ms(per_step)
    parallel_ms = sequential_steps_before * one_step_ms
    for timesteps in timesteps_per_iteration:
        parallel_ms += iteration_ms(table, timesteps, per_step, max_batch)
    return Projection(parallel_ms / 1000, steps * one_step_ms / 1000, table.device)


def load_tables(path: Path = TABLE_PATH) -> dict[str, LatencyTable]:
    """Every model's table in the file, under its key and each of its aliases; {} when none is measured."""
    if not path.exists():
        return {}
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    device = str(doc.get("device", "a GPU"))
    tables: dict[str, LatencyTable] = {}
    for key, entry in doc.get("models", {}).items():
        table = LatencyTable(
            model=key,
            device=device,
            rows=tuple(int(r) for r in entry["rows"]),
            ms=tuple(float(m) for m in entry["ms"]),
            dtype=str(entry.get("dtype", "")),
            date=str(doc.get("date", "")),
        )
        for name in (key, *entry.get("aliases", ())):
            tables[name] = table
    return tables


def table_for(model: str, path: Path = TABLE_PATH) -> LatencyTable | None:
    """The measured table of ``model`` (a built-in name, hub id or alias), or None (say ``NO_TABLE``)."""
    return load_tables(path).get(model.strip().rstrip("/"))
