"""ParaTAA: solve the triangular system by parallel iterations, one batched network call each.

Each iteration works on the window [lo, top) below the anchor x_top (final) in five steps:

1. **evaluate**: one batched network call gives the increments d_s for every unknown in the window;
2. **residuals**: the anchor flow y (y_top = x_top, y_i = a_i y_{i+1} + d_i), the anchor residual
   G = y − x, the order-k residual R (``system``) and the one-step residual r;
3. **stop test**: the lowest index u the stopping rule lets the anchor move to;
4. **update**: indices u…top−1 are set to y (their inputs are final, so x_u is final: the anchor
   moves to u); below u, x ← x + R (Jacobi) or the Anderson update;
5. **record**: an immutable ``Iterate``.

Indices entering the window as it slides start from the lowest initialised state. The anchor
moves by at least one index per iteration (u ≤ top − 1 always passes), so a run ends within T.

The default stopping rule, ``budget``. Let z be the trajectory the solver finally outputs. A state
frozen in an iteration is z_i = y_i = a_i z_{i+1} + d_i(x_{i+1}): its increment was evaluated at
the iterate x_{i+1}, which differs from the frozen z_{i+1} = y_{i+1} by G_{i+1} (and by nothing at
the anchor). So z solves the sequential recurrence up to a one-step defect per step

    δ_i = d_i(x_{i+1}) − d_i(z_{i+1}),      ‖δ_i‖ ≤ L_i ‖G_{i+1}‖,

with L_i the network step's sensitivity (Lipschitz constant of d_i) along the way the iterates
move. The error of x_0 is the sum of these defects carried to step 0 by the sampler's own flow:
e_0 = Σ_i Φ_{0←i} δ_i. Where that flow does not expand errors (‖Φ‖ ≤ 1), ‖e_0‖ ≤ Σ_i L_i ‖G_{i+1}‖
to first order. The rule keeps that sum ≤ tol:

- freezing [u, top) is charged c(u) = Σ_{i=u}^{top−2} L_i RMS(G_{i+1}) (G_u is not charged: z_u is
  y_u, computed from the frozen states above it; and c(top − 1) = 0);
- the end: once the window reaches step 0, everything is frozen as soon as spent + c(0) ≤ tol;
- before that, u is the lowest index with spent + c(v) ≤ ¼ · tol · (T − v) / T for every v in
  [u, top): freezes short of the end share a quarter of tol in proportion to the steps they make
  final, and what one leaves unspent carries forward. The other three quarters wait for the end:
  an error frozen early is carried to x_0 (on a trained network, amplified), and a budget spent on
  it would be missing when the whole remaining window could be frozen — with all of tol shared out
  this way runs ended 2–3 iterations after their image was exact, with this split 1
  (docs/BENCHMARKS.md);
- L_i is measured, not assumed: consecutive iterates give L_i ≈ ‖Δd_i‖ / ‖Δx_{i+1}‖ (RMS ratio of
  the change of the increment and of its input between step i's last two evaluations); where
  step i has no earlier evaluation, L_i = 1.

So the whole run is charged at most tol, and x_0 is within tol (RMS, latent units) of the
sequential x_0 to first order, wherever the flow does not expand errors. The auto tol, 2e-3, is about
a quarter of an 8-bit level of pixels in [−1, 1] (``config.TOLERANCE``). Both approximations are
checked on the output in tests/test_stopping.py: the true defects of the final trajectory (the
network evaluated at z) add up to no more than the charged budget. The flow assumption holds on the
exact mixture (x_0 ends well inside tol); the trained ``shapes-unet`` expands the errors frozen early,
which is what the end's reserve absorbs (docs/BENCHMARKS.md: "max distance" stays below tol).
L_i, measured along the way the iterates move, can miss the way G points: one warm-started
``shapes-unet`` run ended 8.7e-3 from sequential with 8.8e-4 charged, an error frozen early, so from a
given trajectory (``init="trajectory"``) partial freezes take L_i as at least 1, the previous rule's
assumption; the end uses the measured L_i.
The rule before this one charged each index its share tol · (top − i) / T of RMS(G_i) itself:
the same bound with L ≤ 1, no carry-over and no reserve, which cost 3–4 iterations after the image
was exact because L_i is 0.02–0.3 for most steps (d_i = b_i ε is small for small steps).

The ``per-step`` rule is the published one (Tang et al. 2024): step i is converged when its
one-step residual ρ_i = RMS(a_i x_{i+1} + d_i − x_i) ≤ tol or ≤ tol2 · σ_i, with σ_i = √(1 − ᾱ_i⁻)
the noise level of the state x_i (``noise_level``); u is the noisiest unconverged
index. It bounds no distance to the sequential image: per-step errors of size tol add up, and
Anderson's are aligned (tests/test_stopping.py has a seed where it ends on another image).
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
    each step (its input x_{i+1} and increment d_i), from which the sensitivity L_i is measured."""

    history: deque[tuple[Tensor, Tensor, Tensor]]  # (X, R, valid) padded to (T, D)
    inputs: Tensor  # (T, D) x_{i+1} at step i's last evaluation
    increments: Tensor  # (T, D) d_i at that evaluation
    evaluated: Tensor  # (T,) bool: step i has been evaluated
    spent: float = 0.0  # budget rule: charged so far


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
    shape = tuple(problem.x_T.shape)
    coef = problem.coef.to(device, cfg.dtype)
    xi = problem.xi.to(device, cfg.dtype).flatten(1) if problem.xi is not None else None
    noise = noise_level(coef.alpha_bar_prev)
    clock = _Clock()
    clock.resume()
    traj, initialised, evaluations = _initial(problem, cfg, init_trajectory, device, clock)
    x = traj.flatten(1)  # a view: rows are x_0 … x_T
    memory = _Memory(
        deque(maxlen=max(cfg.history - 1, 0)),
        torch.zeros_like(x[1:]),
        torch.zeros_like(x[1:]),
        torch.zeros(T, dtype=torch.bool, device=device),
    )
    anderson = cfg.solver in ("anderson", "anderson-global") and cfg.history > 1
    # From a warm start the iterates first move along the difference of two trajectories only, so
    # early ratios underestimate L in the directions G points: partial freezes get no credit below 1
    # there (measured: one shapes-unet DDIM-50 run from "red ring" ended 4 levels off without; with
    # the guard on the end too, runs stopped 2–3 iterations later).
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

        # 1. evaluate
        with clock.network():
            out = evaluate(problem, coef.timesteps[rows], x[lo + 1 : top + 1].view(-1, *shape), cfg.max_batch)
        evaluations += top - lo
        xi_w = xi[lo:top].view(-1, *shape) if xi is not None else None
        d = coef.increment(rows, x[lo + 1 : top + 1].view(-1, *shape), out, xi_w).flatten(1)

        # 2. residuals
        X = x[lo:top]
        G = anchor_flow(a, d, x[top]) - X
        k = min(cfg.order, top - lo)
        R = order_residual(G, order_products(a, k), k)
        g_rms, r_rms = rms(G), rms(step_residual(a, d, x[lo + 1 : top + 1], X))

        # 3. stop test
        if cfg.stopping == "per-step":
            u = per_step_anchor(r_rms, noise[lo:top], cfg.tol, cfg.tol2, lo)
        else:
            L, K = _sensitivity(memory, x, d, a, lo, top)
            u, charge = budget_anchor(g_rms, L, K, memory.spent, cfg.tol, T, lo, floor)
            memory.spent += charge
        _remember_evaluation(memory, x, d, lo, top)

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


CAP = 10.0  # a defect is estimated to first order only where RMS(G) ≤ CAP · tol
MARGIN = 1.5  # charges are first-order estimates: the rule spends at most tol / MARGIN of true defects
PARTIAL = 0.25  # the share of tol that freezes short of the end may spend; the rest ends the run


def budget_anchor(
    g_rms: Tensor, L: Tensor, K: Tensor, spent: float, tol: float, T: int, lo: int, floor: float = 0.0
) -> tuple[int, float]:
    """The budget rule's anchor u and the charge of freezing [u, top) (see the module docstring).

    Window rows are i = lo…top−1: ``g_rms`` is RMS(G_i), ``L`` the increment's sensitivity L_i and
    ``K`` the step's gain K_i. The defect of step v is charged MARGIN · Φ_v · L_v · RMS(G_{v+1}), with
    Φ_v = Π_{lo ≤ q < v} max(K_q, 1) its measured amplification on the way to x_0, and is not allowed
    (charged ∞) where RMS(G_{v+1}) > CAP · tol: first order only holds for small residuals. Freezing
    [u, top) costs c(u) = Σ_{v=u}^{top−2} of those; partial freezes charge L_v no less than ``floor``.

    1. The end: when the window reaches step 0 and spent + c(0) ≤ tol, everything is frozen (u = 0).
    2. Otherwise u is the lowest index with spent + c(v) ≤ PARTIAL · tol · (T − v) / T for every v in
       [u, top): freezes short of the end share a quarter of tol in proportion to the steps they
       finalise, and what one leaves unspent carries forward. c(top − 1) = 0: u = top − 1 always passes.

    Either way spent stays ≤ tol. Keeping three quarters for the end is what lets a run stop one
    iteration after its image is exact: the errors frozen early are carried (and, on a trained network,
    amplified) to x_0, and a budget spent on them is missing when the whole remaining window could
    be frozen (docs/BENCHMARKS.md: stop − oracle 2–3 with the whole of tol shared, 1 with this split).
    """
    n = g_rms.shape[0]
    amplification = torch.cat([K.new_ones(1), torch.cumprod(K.clamp_min(1.0), 0)[:-1]])

    def charges(sensitivity: Tensor) -> Tensor:  # c(v) = Σ_{s ≥ v} defect_s, per window row v
        defect = torch.zeros(n, dtype=torch.float64, device=g_rms.device)
        defect[:-1] = (MARGIN * amplification[:-1] * sensitivity[:-1] * g_rms[1:]).double()
        defect[:-1][g_rms[1:] > CAP * tol] = float("inf")
        return defect.flip(0).cumsum(0).flip(0)

    charge = charges(L)
    # 1. the end
    if lo == 0 and spent + float(charge[0]) <= tol:
        return 0, float(charge[0])
    # 2. a partial freeze
    if floor > 0:
        charge = charges(L.clamp_min(floor))
    v = torch.arange(lo, lo + n, device=g_rms.device, dtype=torch.float64)
    ok = spent + charge <= PARTIAL * tol * (T - v) / T
    failing = (~ok).nonzero()
    first_ok = min(int(failing[-1]) + 1, n - 1) if failing.numel() else 0  # rows ≥ this all pass
    return lo + first_ok, float(charge[first_ok])


def per_step_anchor(r_rms: Tensor, sigma: Tensor, tol: float, tol2: float, lo: int) -> int:
    """The published rule's anchor: the noisiest step i with ρ_i > tol and ρ_i > tol2 · σ_i, else lo."""
    unconverged = ((r_rms > tol) & (r_rms > tol2 * sigma)).nonzero()
    return lo + int(unconverged[-1]) if unconverged.numel() else lo


def noise_level(alpha_bar_prev: Tensor) -> Tensor:
    """σ_i = √(1 − ᾱ_i⁻): the noise level of x_i, the state step i lands on (0 for a last step onto ᾱ = 1)."""
    return (1 - alpha_bar_prev).clamp_min(0).sqrt()


def _sensitivity(
    memory: _Memory, x: Tensor, d: Tensor, a: Tensor, lo: int, top: int
) -> tuple[Tensor, Tensor]:
    """Per window row, from step i's last two evaluations (1 where unknown): the increment's
    sensitivity L_i ≈ RMS(Δd_i) / RMS(Δx_{i+1}) and the whole step's gain K_i ≈ RMS(a_i Δx_{i+1} + Δd_i)
    / RMS(Δx_{i+1})."""
    dx, dd = x[lo + 1 : top + 1] - memory.inputs[lo:top], d - memory.increments[lo:top]
    size = rms(dx)
    known = memory.evaluated[lo:top] & (size > 0)
    size = size.clamp_min(torch.finfo(size.dtype).tiny)
    one = torch.ones_like(size)
    L = torch.where(known, rms(dd) / size, one)
    K = torch.where(known, rms(a[:, None] * dx + dd) / size, one)
    return L, K


def _remember_evaluation(memory: _Memory, x: Tensor, d: Tensor, lo: int, top: int) -> None:
    memory.inputs[lo:top] = x[lo + 1 : top + 1]
    memory.increments[lo:top] = d
    memory.evaluated[lo:top] = True


def _initial(
    problem: Problem, cfg: SolverConfig, init_trajectory: Tensor | None, device: torch.device, clock: _Clock
) -> tuple[Tensor, int, int]:
    """The initial trajectory (T+1, *latent), the lowest initialised index, and the evaluations spent."""
    if cfg.init == "trajectory":
        return initial.from_trajectory(problem, init_trajectory, device, cfg.dtype), 0, 0
    if cfg.init == "coarse":
        with clock.network():  # a sequential pass: charged to the network, and counted as evaluations
            traj = initial.coarse_pass(problem, cfg.coarse_steps, device, cfg.dtype)
        return traj, 0, cfg.coarse_steps
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
