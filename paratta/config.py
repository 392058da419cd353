"""Solver settings, validated in one place (the CLI, the bench and the app all go through here)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

SOLVERS = ("sequential", "jacobi", "anderson", "anderson-global")
INITS = ("xT", "trajectory", "coarse")
STATE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class SolverConfig:
    """How to solve the triangular system.

    Attributes:
        solver: "sequential" (window 1, T iterations), "jacobi" (plain fixed point),
            "anderson" (Triangular Anderson Acceleration) or "anderson-global" (one γ per window).
        order: k, steps each equation is unrolled (1…T); None means min(20, T), the reference default.
        window: W, unknowns per parallel iteration (1…T); None means T.
        history: m, iterates Anderson remembers (1…10); m = 1 is plain fixed point.
        tol: error budget of the whole trajectory (RMS, latent units), spent evenly over the T steps;
            the converged x_0 is within about tol of the sequential x_0.
        max_iters: iteration budget (1…T); None means T, where termination is guaranteed.
        lam: relative Tikhonov regularisation λ of the Anderson least-squares problem.
        init: "xT" (copies of x_T), "trajectory" (a given one) or "coarse" (a cheap sequential pass).
        coarse_steps: steps of the coarse pass; None means max(2, T // 10).
        max_batch: timesteps per network call (each is two rows under guidance); None means all.
        state_dtype: precision of the solver state ("float64" or "float32").
    """

    solver: str = "anderson"
    order: int | None = None
    window: int | None = None
    history: int = 2
    tol: float = 1e-3
    max_iters: int | None = None
    lam: float = 1e-3
    init: str = "xT"
    coarse_steps: int | None = None
    max_batch: int | None = None
    state_dtype: str = "float64"

    def validate(self, steps: int) -> None:
        """Raise ``ValueError`` naming the first setting outside its range for a T = ``steps`` run."""
        _choice("solver", self.solver, SOLVERS)
        _choice("init", self.init, INITS)
        _choice("state_dtype", self.state_dtype, tuple(STATE_DTYPES))
        if self.order is not None:
            _int_range("order", self.order, 1, steps)
        if self.window is not None:
            _int_range("window", self.window, 1, steps)
        _int_range("history", self.history, 1, 10)
        if self.max_iters is not None:
            _int_range("max_iters", self.max_iters, 1, steps)
        if self.coarse_steps is not None:
            _int_range("coarse_steps", self.coarse_steps, 1, steps)
        if self.max_batch is not None:
            _int_range("max_batch", self.max_batch, 1, 1 << 20)
        _float_range("tol", self.tol, 1e-12, 10.0)
        _float_range("lam", self.lam, 0.0, 1e3)

    def resolved(self, steps: int) -> SolverConfig:
        """Fill the None defaults for a T = ``steps`` run; "sequential" becomes window-1 Jacobi."""
        self.validate(steps)
        cfg = replace(
            self,
            order=min(20, steps) if self.order is None else self.order,
            window=steps if self.window is None else self.window,
            max_iters=steps if self.max_iters is None else self.max_iters,
            coarse_steps=max(2, steps // 10) if self.coarse_steps is None else self.coarse_steps,
        )
        if cfg.solver == "sequential":
            cfg = replace(cfg, window=1, order=1, history=1)
        return cfg

    @property
    def dtype(self) -> torch.dtype:
        return STATE_DTYPES[self.state_dtype]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")


def _float_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}]; got {value!r}")
