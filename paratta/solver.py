"""ParaTAA: solve the triangular system by parallel iterations, one batched network call each.

Each iteration works on the window [lo, top) below the anchor x_top (final) in five steps:

1. **evaluate**: one batched network call gives the increments d_s for every unknown in the window;
2. **residuals**: the anchor flow y (y_top = x_top, y_i = a_i y_{i+1} + d_i), the anchor residual
   G = y − x and the one-step residual r, which the stopping rule reads, and the order-k residual R
   (``system``) that drives the update: of the same published split, or of the linear part
   ``Plan.split`` names (``Schedule.linear_part`` (4): the same evaluations, another part carried);
3. **stop test**: the lowest index u the stopping rule lets the anchor move to (``stopping``);
4. **update**: indices u…top−1 are set to y (their inputs are final, so x_u is final: the anchor
   moves to u); below u, x ← x + R (Jacobi) or the Anderson update (``anderson``);
5. **record**: an immutable ``Iterate``.

Indices entering the window as it slides start from the lowest initialised state. The anchor
moves by at least one index per iteration (u ≤ top − 1 always passes), so a run ends within T.

The iteration reads a ``Plan`` only (``paratta.planning.plan``): every setting already a number, the
process group (if any) already chosen. Planning (an auto window, a calibration, a collective to
agree on it) happens before, once, in ``paratta.plan``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from . import init as initial
from .anderson import anderson_step
from .evaluate import evaluate
from .planning.plan import Plan
from .problem import Problem
from .stopping import band_reads, budget_anchor, per_step_anchor, sensitivity
from .system import (
    anchor_flow,
    band_flow,
    band_order_residual,
    band_transfer,
    order_products,
    order_residual,
    rms,
    step_residual,
)


@dataclass(frozen=True)
class Iterate:
    """One parallel iteration, immutable. Index i of per-step arrays is step i (0 = least noisy)."""

    iteration: int  # 1-based
    window: tuple[int, int]  # [lo, hi): the unknowns evaluated in this iteration
    anchor: int  # the anchor after this iteration: states ≥ anchor are final; 0 = done
    residual: Tensor  # (T,) RMS anchor residual G per index before the update; NaN outside the window
    step_residual: Tensor  # (T,) RMS one-step residual r (the per-step rule's test); NaN outside the window
    trajectory: Tensor  # (T+1, *latent) the iterate after the update, x_0 … x_T
    evaluations: int  # cumulative guided network evaluations (one per timestep), init included
    model_seconds: float  # cumulative time inside the network
    solver_seconds: float  # cumulative time in everything else
    converged: bool
    spent: float = 0.0  # budget rule: the error bound charged so far (≤ tol)

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


class _Clock:
    """Seconds inside the network and in everything else, counted only while the generator runs
    (never while the caller holds a record)."""

    def __init__(self) -> None:
        self.model, self.solver = 0.0, 0.0
        self._start, self._model_at_start = 0.0, 0.0

    def resume(self) -> None:
        self._start, self._model_at_start = time.perf_counter(), self.model

    def pause(self) -> None:
        elapsed = time.perf_counter() - self._start
        self.solver += elapsed - (self.model - self._model_at_start)

    @contextmanager
    def network(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.model += time.perf_counter() - t0


@dataclass
class _Memory:
    """What the iteration keeps between calls: Anderson's last iterates and the last evaluation of
    each row (its input x_{i+1}, the own-row term of d_i and, for a banded sampler, the feature f_i),
    from which the sensitivities are measured; a step just below the anchor reads the features of the
    final rows above it from here, as their last evaluation left them (their defect was charged then)."""

    history: deque[tuple[Tensor, Tensor, Tensor]]  # (X, R, valid) padded to (T, D)
    inputs: Tensor  # (T, D) x_{i+1} at row i's last evaluation
    own: Tensor  # (T, D) the own-row term of d_i at that evaluation
    features: Tensor  # (T, D) f_i at that evaluation ((T, 0) for a one-row sampler)
    evaluated: Tensor  # (T,) bool: row i has been evaluated
    spent: float = 0.0  # budget rule: charged so far


def solve(problem: Problem, plan: Plan, init_trajectory: Tensor | None = None) -> Iterator[Iterate]:
    """Yield one ``Iterate`` per parallel iteration until the anchor reaches 0 or the budget ends.

    The caller may stop consuming at any time. ``init_trajectory`` is required for ``init="trajectory"``.
    """
    T, cfg = problem.steps, plan
    if plan.steps != T:
        raise ValueError(f"the plan is for T = {plan.steps} steps; the problem has T = {T}")
    if cfg.init == "trajectory" and init_trajectory is None:
        raise ValueError("init='trajectory' needs init_trajectory (a (T+1, *latent) tensor)")
    device = plan.device if plan.device is not None else problem.model.device
    shape = tuple(problem.x_T.shape)
    coef = problem.coef.to(device, cfg.dtype)
    xi = problem.xi.to(device, cfg.dtype).flatten(1) if problem.xi is not None else None
    noise = coef.noise  # the per-step rule's σ_i, each family's own
    clock = _Clock()
    clock.resume()
    traj, initialised, evaluations = _initial(problem, cfg, init_trajectory, device, clock)
    x = traj.flatten(1)  # a view: rows are x_0 … x_T
    band = coef.band  # B: the rows one step reads (``paratta.schedule``)
    memory = _Memory(
        deque(maxlen=max(cfg.history - 1, 0)),
        torch.zeros_like(x[1:]),
        torch.zeros_like(x[1:]),
        torch.zeros_like(x[1:]) if band > 1 else x.new_zeros((T, 0)),
        torch.zeros(T, dtype=torch.bool, device=device),
    )
    anderson = cfg.solver in ("anderson", "anderson-global") and cfg.history > 1
    # The update's linear part (4); None: the published one, which the stopping rule certifies.
    A = coef.linear_part(cfg.split) if cfg.split != "published" else None
    # From a warm start the iterates first move along the difference of two trajectories only, so
    # early ratios underestimate L in the directions G points: partial freezes get no credit below 1.
    floor = 1.0 if cfg.init == "trajectory" else 0.0
    top = T
    for iteration in range(1, cfg.max_iters + 1):
        if iteration > 1:
            clock.resume()
        lo = max(top - cfg.window, 0)
        if lo < initialised:  # states entering the window start from the lowest initialised one
            x[lo:initialised] = x[initialised]
            initialised = lo
        rows = torch.arange(lo, top, device=device)
        a = coef.a[lo:top]
        inputs = x[lo + 1 : top + 1]

        # 1. evaluate
        with clock.network():
            out = evaluate(
                problem,
                coef.timesteps[rows],
                inputs.view(-1, *shape),
                cfg.max_batch,
                cfg.group,
                cfg.interrupt,
            )
        evaluations += top - lo
        out = out.flatten(1)
        f = coef.features(rows, inputs, out)
        own = coef.own(rows, inputs, out, f, xi[lo:top] if xi is not None else None)
        d = own + coef.band_term(rows, _above(f, memory.features, top, band)) if band > 1 else own

        # 2. residuals
        X = x[lo:top]
        G = anchor_flow(a, d, x[top]) - X
        k = min(cfg.order, top - lo)
        if A is None:
            R = order_residual(G, order_products(a, k), k)
        else:
            G_update = _split_residual(A[lo:top], a[:, None] * inputs + d, x, memory.inputs, lo, top)
            R = band_order_residual(G_update, band_transfer(A[lo:top], k), k)
        g_rms, r_rms = rms(G), rms(step_residual(a, d, inputs, X))

        # 3. stop test
        if cfg.stopping == "per-step":
            u = per_step_anchor(r_rms, noise[lo:top], cfg.tol, cfg.tol2, lo)
        else:
            known = memory.evaluated[lo:top]
            L, K = sensitivity(inputs, own, a, memory.inputs[lo:top], memory.own[lo:top], known)
            if A is not None and band == 1:  # iterates moved by another linear part than the certified
                # one need not probe the directions the network ignores, where the step's gain is a_i
                # itself; a banded step's gain in Φ carries its band's measured terms besides
                K = torch.maximum(K, a.abs().to(K.dtype))
            reads = None
            if (
                band > 1
            ):  # (1'): step v reads f_{v+b}, whose sensitivity to x_{v+b+1} is measured on row v + b
                Lf, _ = sensitivity(inputs, f, 0 * a, memory.inputs[lo:top], memory.features[lo:top], known)
                reads = band_reads(coef.w, Lf, lo, top)
            u, charge = budget_anchor(g_rms, L, K, memory.spent, cfg.tol, T, lo, floor, reads)
            memory.spent += charge
        _remember_evaluation(memory, inputs, own, f if band > 1 else None, lo, top)

        # 4. update
        X_new = X + R
        if anderson and u > lo:
            dX, dR = _differences(memory.history, X, R, lo, top)
            if dX is not None:
                X_new = anderson_step(X, R, dX, dR, cfg.lam, cfg.solver == "anderson")
        X_new[u - lo :] = X[u - lo :] + G[u - lo :]  # = y: computed from final states only
        if anderson:
            valid = torch.zeros(T, dtype=torch.bool, device=device)
            valid[lo:top] = True
            memory.history.append((_pad(X, lo, T), _pad(R, lo, T), valid))
        x[lo:top] = X_new
        top = u

        # 5. record
        snapshot = traj.clone()
        clock.pause()
        yield Iterate(
            iteration=iteration,
            window=(lo, lo + g_rms.shape[0]),
            anchor=top,
            residual=_full(g_rms, lo, T),
            step_residual=_full(r_rms, lo, T),
            trajectory=snapshot,
            evaluations=evaluations,
            model_seconds=clock.model,
            solver_seconds=clock.solver,
            converged=top == 0,
            spent=memory.spent,
        )
        if top == 0:
            return


def _split_residual(A: Tensor, step: Tensor, x: Tensor, evaluated_at: Tensor, lo: int, top: int) -> Tensor:
    """G of (4) on the window: y_i = Σ_b A_{i,b} y_{i+b+1} + d'_i from the final states at and above the
    anchor, d'_i = step_i − Σ_b A_{i,b} x'_{i+b+1}, x' where row i + b was evaluated: the iterate in the
    window, a final row's last evaluation above it (``evaluated_at``), zero past x_T (A is zero there)."""
    n, B = A.shape
    T = x.shape[0] - 1
    points = torch.cat([x[lo + 1 : top + 1], evaluated_at[top : min(top + B - 1, T)]])
    points = torch.cat([points, points.new_zeros((n + B - 1 - points.shape[0], points.shape[1]))])
    d = step - sum(A[:, b : b + 1] * points[b : b + n] for b in range(B))
    above = x.new_zeros((B, x.shape[1]))
    above[: min(B, T + 1 - top)] = x[top : top + B]
    return band_flow(A, d, above) - x[lo:top]


def _above(f: Tensor, remembered: Tensor, top: int, band: int) -> Tensor:
    """(n, B − 1, D): f_{i+1} … f_{i+B−1} for each window row i — this call's features, then the
    remembered ones of the final rows above the anchor, zero beyond x_T."""
    n, T = f.shape[0], remembered.shape[0]
    extra = remembered[top : min(top + band - 1, T)]
    pad = f.new_zeros((band - 1 - extra.shape[0], f.shape[1]))
    column = torch.cat([f, extra, pad])
    return torch.stack([column[b : b + n] for b in range(1, band)], 1)


def _remember_evaluation(
    memory: _Memory, inputs: Tensor, own: Tensor, f: Tensor | None, lo: int, top: int
) -> None:
    memory.inputs[lo:top] = inputs
    memory.own[lo:top] = own
    if f is not None:
        memory.features[lo:top] = f
    memory.evaluated[lo:top] = True


def _initial(
    problem: Problem, cfg: Plan, init_trajectory: Tensor | None, device: torch.device, clock: _Clock
) -> tuple[Tensor, int, int]:
    """The initial trajectory (T+1, *latent), the lowest initialised index, and the evaluations spent."""
    if cfg.init == "trajectory":
        return initial.from_trajectory(problem, init_trajectory, device, cfg.dtype), 0, 0
    if cfg.init == "coarse":
        with clock.network():  # a sequential pass: charged to the network, and counted as evaluations
            traj, calls = initial.coarse_pass(problem, cfg.coarse_steps, device, cfg.dtype)
        return traj, 0, calls
    return initial.copies_of_xT(problem, device, cfg.dtype), problem.steps, 0


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


def run(problem: Problem, plan: Plan, init_trajectory: Tensor | None = None) -> Iterate:
    """Solve to the end and return the last ``Iterate``."""
    records = solve(problem, plan, init_trajectory)
    last = next(records)
    for last in records:  # noqa: B007 - only the final record is wanted
        pass
    return last
