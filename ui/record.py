"""What a finished (or stopped) run keeps for scrubbing and downloads: small, picklable, no tensors.

Per iteration: a uint8 preview, the (T,) residual vector and a few numbers. Per run: the
sequential reference and the final trajectory (for "use this run as initialisation").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .settings import RunSettings


@dataclass
class IterationRow:
    """One parallel iteration as the UI shows it (index i of ``residual`` is step i, 0 = least noisy)."""

    iteration: int
    window: tuple[int, int]  # [lo, hi)
    anchor: int  # states >= anchor are final; 0 = done
    evaluations: int  # cumulative network evaluations
    seconds: float  # cumulative solver wall-clock (model + solver), UI excluded
    max_residual: float
    distance: float  # RMS latent distance of this iterate's x_0 to the sequential x_0
    residual: np.ndarray  # (T,) float64, NaN outside the window
    converged: bool = False


@dataclass
class RunRecord:
    """Everything one run leaves behind; lives in a ``gr.State``."""

    settings: RunSettings
    steps: int
    tol: float
    latent_shape: tuple[int, ...]
    rows_per_step: int | None = None  # network rows a timestep costs; None: from the guidance (1 or 2)
    rows: list[IterationRow] = field(default_factory=list)
    previews: list[np.ndarray] = field(default_factory=list)  # uint8 (h, w, 3), one per row
    sequential_preview: np.ndarray | None = None  # uint8 (h, w, 3)
    sequential_seconds: float = 0.0
    sequential_image: np.ndarray | None = None  # uint8 full decode of the sequential x_0
    final_image: np.ndarray | None = None  # uint8 full decode of the last iterate's x_0
    trajectory: np.ndarray | None = None  # float32 (T+1, *latent): the last iterate
    notes: list[str] = field(default_factory=list)  # clamps and other things the stats line must say
    session: str = "local"  # the session whose folder holds its downloads (ui.limits.session_folder)
    stopped: bool = False  # set by Stop: a run still finishing its iteration must not add to it

    @property
    def iterations(self) -> int:
        return len(self.rows)

    @property
    def converged(self) -> bool:
        return bool(self.rows) and self.rows[-1].converged

    def residual_matrix(self, upto: int | None = None) -> np.ndarray:
        """(n, T) residuals of the first ``upto`` iterations (all by default)."""
        rows = self.rows[:upto] if upto is not None else self.rows
        if not rows:
            return np.zeros((0, self.steps))
        return np.stack([r.residual for r in rows])
