"""What the run generators (``ui.run.session``) hand to the handlers: one small frozen record per event.

Records are picklable (a ZeroGPU worker sends them across processes) and hold no tensors but the
solver's x_0, which ``run_events`` drops before an event leaves it. ``Posed`` comes first and carries
the run as posed (``paratta.Run``, detached from its problem). ``kind`` names each for logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from paratta import Run

from ..view.record import IterationRow


@dataclass(frozen=True)
class Posed:
    """The run was posed (``paratta.pose``: its plan, sampler, size, work bound; a window the device
    chose), detached from its problem; ``lane`` names a race's lane ("" the run's)."""

    kind: ClassVar[str] = "posed"
    run: Run
    lane: str = ""


@dataclass(frozen=True)
class SequentialStep:
    """The sequential reference has done ``step`` of ``steps``; ``preview`` is its current state."""

    kind: ClassVar[str] = "sequential"
    step: int
    steps: int
    seconds: float
    preview: np.ndarray
    lane: str = ""  # a race lane's own reference; "" the run's (or both lanes')


@dataclass(frozen=True)
class ReferenceDone:
    """The sequential reference has ended; ``image`` is the full decode of its x_0."""

    kind: ClassVar[str] = "reference"
    image: np.ndarray
    seconds: float
    lane: str = ""  # as in SequentialStep


@dataclass(frozen=True)
class IterateDone:
    """One parallel iteration of ``lane``; ``x0`` travels only until the reference exists."""

    kind: ClassVar[str] = "iterate"
    lane: str
    row: IterationRow
    preview: np.ndarray
    x0: torch.Tensor | None = None


@dataclass(frozen=True)
class Distances:
    """Once the reference has ended: the distances of the iterations that came before it (rows 1…n)."""

    kind: ClassVar[str] = "distances"
    values: tuple[float, ...]


@dataclass(frozen=True)
class SolveDone:
    """``lane`` has ended: the full decode of its x_0 and its last trajectory (for warm starts)."""

    kind: ClassVar[str] = "done"
    lane: str
    image: np.ndarray
    trajectory: np.ndarray


Event = Posed | SequentialStep | ReferenceDone | IterateDone | Distances | SolveDone
