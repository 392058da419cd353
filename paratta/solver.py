"""ParaTAA: solve the triangular system by parallel iterations, one batched network call each.

Per iteration, on the window [lo, top) below the anchor x_top (final):

1. one batched network call gives d_s for every unknown in the window;
2. the anchor flow y and the anchor residual G = y − x (``system``) and the order-k residual R;
3. index i is converged when RMS(G_i) ≤ tol · (top − i) / T: the error budget tol of the whole
   trajectory is spent evenly over its T steps, and G_i covers the top − i steps from the anchor.
   u = the noisiest unconverged index. Everything at or above u is set to y: x_u is then computed
   from converged states only, so it is final, and the anchor moves to u (to lo when nothing in
   the window is unconverged). Below u: x ← x + R (Jacobi) or the Anderson update;
4. indices that enter the window as it slides are initialised from the lowest initialised state.

At least one index becomes final per iteration, so the run ends in at most T iterations.

Why this stopping rule. A test on the one-step residual lets errors of size tol pile up over
many steps, and Anderson's errors are smooth and aligned, so they do pile up. A test on G with a
fixed tol bounds each frozen segment, but the segments' errors still add up, and they lie along
the directions the sampler is most sensitive to: on the exact mixture we measured trajectories
that a 2e-4 push at mid-noise sends to another image. Charging each segment only its share of
the budget bounds the accumulated drift of the frozen trajectory by tol (to first order, for a
non-expanding flow), at the price of one to three more iterations.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from . import init as initial
from .anderson import anderson_step
from .config import SolverConfig
from .evaluate import evaluate
from .problem import Problem
from .system import anchor_flow, order_products, order_residual, rms, step_residual


@dataclass(frozen=True)
class Iterate:
    """One parallel iteration, immutable. Index i of per-step arrays is step i (0 = least noisy)."""

    iteration: int  # 1-based
    window: tuple[int, int]  # [lo, hi): the unknowns evaluated in this iteration
    anchor: int  # the anchor after this iteration: states ≥ anchor are final; 0 = done
    residual: Tensor  # (T,) RMS anchor residual G per index before the update; NaN outside the window
    step_residual: Tensor  # (T,) RMS one-step residual r; NaN outside the window
    trajectory: Tensor  # (T+1, *latent) the iterate after the update, x_0 … x_T
    evaluations: int  # cumulative guided network evaluations (one per timestep), init included
    model_seconds: float  # cumulative time inside the network
    solver_seconds: float  # cumulative time in everything else
    converged: bool

    @property
    def x0(self) -> Tensor:
        return self.trajectory[0]

    @property
    def max_residual(self) -> float:
        """Largest RMS anchor residual in the window (NaN-safe)."""
        return float(torch.nan_to_num(self.residual, nan=0.0).max())

    @property
    def seconds(self) -> float:
        return self.model_seconds + self.solver_seconds


def solve(
    problem: Problem,
    config: SolverConfig | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Iterate]:
    """Yield one ``Iterate`` per parallel iteration until the anchor reaches 0 or the budget ends.

    The caller may stop consuming at any time. ``init_trajectory`` is required for ``init="trajectory"``.
    """
    T = problem.steps
    cfg = (config or SolverConfig()).resolved(T)
    if cfg.init == "trajectory" and init_trajectory is None:
        raise ValueError("init='trajectory' needs init_trajectory (a (T+1, *latent) tensor)")
    device = torch.device(device) if device is not None else problem.model.device
    dtype = cfg.dtype
    shape = tuple(problem.x_T.shape)
    coef = problem.coef.to(device, dtype)
    xi = problem.xi.to(device, dtype).flatten(1) if problem.xi is not None else None
    # Seconds are counted only while this generator runs, never while the caller holds a record.
    started = time.perf_counter()
    model_seconds, solver_seconds, evaluations = 0.0, 0.0, 0

    if cfg.init == "trajectory":
        traj = initial.from_trajectory(problem, init_trajectory, device, dtype)
        initialised = 0
    elif cfg.init == "coarse":
        t0 = time.perf_counter()
        traj = initial.coarse_pass(problem, cfg.coarse_steps, device, dtype)
        model_seconds += time.perf_counter() - t0
        evaluations += cfg.coarse_steps
        initialised = 0
    else:
        traj = initial.copies_of_xT(problem, device, dtype)
        initialised = T
    x = traj.flatten(1)  # a view: rows are x_0 … x_T
    history: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=max(cfg.history - 1, 0))
    anderson = cfg.solver in ("anderson", "anderson-global") and cfg.history > 1
    top = T
    for iteration in range(1, cfg.max_iters + 1):
        if iteration > 1:
            started = time.perf_counter()
        model_before = model_seconds if iteration > 1 else 0.0  # iteration 1 also pays for the init
        lo, hi = max(top - cfg.window, 0), top
        if lo < initialised:
            x[lo:initialised] = x[initialised]
            initialised = lo
        rows = torch.arange(lo, top, device=device)

        t0 = time.perf_counter()
        out = evaluate(problem, coef.timesteps[rows], x[lo + 1 : top + 1].view(-1, *shape), cfg.max_batch)
        model_seconds += time.perf_counter() - t0
        evaluations += top - lo

        a = coef.a[lo:top]
        xi_w = xi[lo:top].view(-1, *shape) if xi is not None else None
        d = coef.increment(rows, x[lo + 1 : top + 1].view(-1, *shape), out, xi_w).flatten(1)
        X = x[lo:top]
        G = anchor_flow(a, d, x[top]) - X
        R = order_residual(G, order_products(a, min(cfg.order, top - lo)), min(cfg.order, top - lo))
        g_rms = rms(G)
        budget = cfg.tol * (top - rows).to(g_rms.dtype) / T  # this index's share of tol
        unconverged = (g_rms > budget).nonzero()
        u = lo + int(unconverged[-1]) if unconverged.numel() else lo

        X_new = X + R
        if anderson and u > lo:
            dX, dR = _differences(history, X, R, lo, top)
            if dX is not None:
                X_new = anderson_step(X, R, dX, dR, cfg.lam, cfg.solver == "anderson")
        X_new[u - lo :] = X[u - lo :] + G[u - lo :]
        if anderson:
            valid = torch.zeros(T, dtype=torch.bool, device=device)
            valid[lo:top] = True
            history.append((_pad(X, lo, T), _pad(R, lo, T), valid))
        residual = _full(g_rms, lo, T)
        r_rms = _full(rms(step_residual(a, d, x[lo + 1 : top + 1], X)), lo, T)
        x[lo:top] = X_new
        top = u
        snapshot = traj.clone()
        solver_seconds += time.perf_counter() - started - (model_seconds - model_before)
        yield Iterate(
            iteration=iteration,
            window=(lo, hi),
            anchor=top,
            residual=residual,
            step_residual=r_rms,
            trajectory=snapshot,
            evaluations=evaluations,
            model_seconds=model_seconds,
            solver_seconds=solver_seconds,
            converged=top == 0,
        )
        if top == 0:
            return


def _differences(
    history: deque[tuple[Tensor, Tensor, Tensor]], X: Tensor, R: Tensor, lo: int, top: int
) -> tuple[Tensor | None, Tensor | None]:
    """ΔX_j, ΔR_j (j = 1…m−1) of consecutive iterates on rows [lo, top); zero where an iterate is missing."""
    if not history:
        return None, None
    xs = [X] + [h[0][lo:top] for h in reversed(history)]
    rs = [R] + [h[1][lo:top] for h in reversed(history)]
    ok = [torch.ones(top - lo, dtype=torch.bool, device=X.device)] + [h[2][lo:top] for h in reversed(history)]
    dX = torch.stack([(xs[j] - xs[j + 1]) * (ok[j] & ok[j + 1])[:, None] for j in range(len(history))], 1)
    dR = torch.stack([(rs[j] - rs[j + 1]) * (ok[j] & ok[j + 1])[:, None] for j in range(len(history))], 1)
    return dX, dR


def _pad(v: Tensor, lo: int, T: int) -> Tensor:
    out = v.new_zeros((T, v.shape[1]))
    out[lo : lo + v.shape[0]] = v
    return out


def _full(v: Tensor, lo: int, T: int) -> Tensor:
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    out[lo : lo + v.shape[0]] = v.detach().to("cpu", torch.float64)
    return out


def run(
    problem: Problem,
    config: SolverConfig | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Iterate:
    """Solve to the end and return the last ``Iterate``."""
    records = solve(problem, config, init_trajectory, device)
    last = next(records)
    for last in records:  # noqa: B007 - only the final record is wanted
        pass
    return last
