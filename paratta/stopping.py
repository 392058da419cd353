"""The two stopping rules: which states of the window may be frozen, i.e. where the anchor moves.

Notation (``solver``): the window holds steps i = lo…top−1 below the anchor x_top; y is the anchor
flow (y_top = x_top, y_i = a_i y_{i+1} + d_i(x_{i+1})), G = y − x the anchor residual and
r_i = a_i x_{i+1} + d_i − x_i the one-step residual. Freezing [u, top) sets those states to y.

**budget** (the default). Let z be the trajectory the solver outputs. A state frozen in an
iteration is z_i = y_i = a_i z_{i+1} + d_i(x_{i+1}): its increment was evaluated at the iterate
x_{i+1}, which differs from z_{i+1} = y_{i+1} by G_{i+1} (and by nothing at the anchor). So z solves
the sequential recurrence up to one defect per step,

    (1)  δ_i = d_i(x_{i+1}) − d_i(z_{i+1}),      ‖δ_i‖ ≤ L_i ‖G_{i+1}‖,

with L_i the sensitivity of the increment d_i. A step that reads two rows (DPM-Solver++ 2M:
d_i = own_i(x_{i+1}) + r_i m_{i+1}(x_{i+2}), m the predicted x̂_0, ``paratta.multistep``) has a defect
from each input; the second one is evaluated in the same window, except for the step just below the
anchor, which reads m_top as step top's last evaluation left it (at an iterate G_{top+1} away from z):

    (1') ‖δ_i‖ ≤ L_i ‖G_{i+1}‖ + B_{i+1} ‖G_{i+2}‖,      B_v = |r_{v−1}| L^m_v,

L_i now the sensitivity of own_i and L^m_v that of m_v to x_{v+1}. The error of x_0 is the sum of the
defects carried to step 0 by the sampler's flow, e_0 = Σ_i Φ_{0←i} δ_i. The flow's error recursion
is ‖e_i‖ ≤ K_i ‖e_{i+1}‖ + B_{i+1} ‖e_{i+2}‖ ≤ (K_i + B_{i+1}) max(‖e_{i+1}‖, ‖e_{i+2}‖), so to first order

    (2)  ‖e_0‖ ≤ Σ_i Φ_i ‖δ_i‖,      Φ_i = Π_{q<i} max(K_q + B_{q+1}, 1),

with K_q the gain of step q's own row (B = 0 for one-row samplers: DDIM, Euler, flow Euler). The rule
keeps the right-hand side of (2), charged as the run goes, at most tol:

    (3)  c(u) = MARGIN · [ Σ_{v=u}^{top−2} Φ_v L_v RMS(G_{v+1}) + Σ_{v=u}^{top−3} Φ_v B_{v+1} RMS(G_{v+2})
                           + Φ_{u−1} B_u RMS(G_{u+1}) ]                (the charge of freezing [u, top))

and ∞ for a term whose RMS(G) > CAP · tol, where first order does not hold. G_u is not charged
(z_u = y_u is computed from frozen states) and c(top − 1) = 0. The last term is the defect that
step u − 1, not frozen yet, will take from m_u evaluated now (Φ_{lo−1} = 1 below the window; zero at
the end, u = 0); freezing charges it once, so the step just below a later anchor reads it for free.

    (4)  the end:   when lo = 0 and spent + c(0) ≤ tol, the whole window is frozen (u = 0);
    (5)  otherwise: u is the lowest index with spent + c(v) ≤ PARTIAL · tol · (T − v) / T for every
                    v in [u, top): freezes short of the end share PARTIAL of tol in proportion to the
                    steps they make final; what one leaves unspent carries forward.

The reserve (1 − PARTIAL of tol) is kept for (4): an error frozen early is carried to x_0, where a
network may amplify it, while the end freezes everything that remains at once. L_i and K_i are
measured (6): from step i's last two evaluations, L_i ≈ RMS(Δd_i) / RMS(Δx_{i+1}) and
K_i ≈ RMS(a_i Δx_{i+1} + Δd_i) / RMS(Δx_{i+1}) (d_i: the own-row term), L^m_i ≈ RMS(Δm_i) / RMS(Δx_{i+1});
1 where step i has no earlier evaluation. So x_0 is
within tol (RMS, latent units) of the sequential x_0 to first order; tests/test_stopping.py checks
the true defects of the output against the charged budget, docs/stopping.md what this guarantees.

**per-step** (Tang et al. 2024): step i is converged when

    (7)  ρ_i = RMS(r_i) ≤ tol   or   ρ_i ≤ tol2 · σ_i,      σ_i = √(1 − ᾱ_i⁻)  (flow: σ_i itself;
                                                               Euler, DPM-Solver++: s_i/√(s_i² + 1)),

and u is the noisiest unconverged step (lo if none). It bounds no distance to the sequential
output: per-step errors of size tol add up along the trajectory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .system import rms

CAP = 10.0  # (3): a defect is estimated to first order only where RMS(G) ≤ CAP · tol
MARGIN = 1.5  # (3): charges are first-order estimates, so the rule spends at most tol / MARGIN of them
PARTIAL = 0.25  # (5): the share of tol that freezes short of the end may spend


def budget_anchor(
    g_rms: Tensor,
    L: Tensor,
    K: Tensor,
    spent: float,
    tol: float,
    T: int,
    lo: int,
    floor: float = 0.0,
    below: Tensor | None = None,
) -> tuple[int, float]:
    """The budget rule's anchor u and the charge of freezing [u, top): (3)–(5).

    Window rows are i = lo…top−1: ``g_rms`` is RMS(G_i), ``L`` the sensitivity L_i and ``K`` the
    step's gain K_i; ``below`` (two-row steps) holds B_v = |r_{v−1}| L^m_v of (1'). Partial freezes (5)
    charge L_v no less than ``floor``; the end (4) charges the measured L. Either way spent stays ≤ tol.
    """
    n = g_rms.shape[0]
    B = below if below is not None else torch.zeros_like(L)
    B_next = torch.cat([B[1:], B.new_zeros(1)])  # B_{v+1} per row v
    amplification = torch.cat([K.new_ones(1), torch.cumprod((K + B_next).clamp_min(1.0), 0)[:-1]])  # Φ_v
    inf = float("inf")

    def charges(sensitivity: Tensor) -> Tensor:  # (3): c(v) per window row v
        defect = torch.zeros(n, dtype=torch.float64, device=g_rms.device)
        defect[:-1] = (MARGIN * amplification[:-1] * sensitivity[:-1] * g_rms[1:]).double()
        defect[:-1][g_rms[1:] > CAP * tol] = inf
        if n > 2:  # the second input, x_{v+2}, below the anchor
            second = (MARGIN * amplification[:-2] * B_next[:-2] * g_rms[2:]).double()
            second[(g_rms[2:] > CAP * tol) & (B_next[:-2] > 0)] = inf
            defect[:-2] += second
        total = defect.flip(0).cumsum(0).flip(0)
        # the step below u reads m_u, evaluated at x_{u+1}: Φ_{u−1} B_u RMS(G_{u+1})
        left = torch.zeros(n, dtype=torch.float64, device=g_rms.device)
        phi_below = torch.cat([K.new_ones(1), amplification[:-1]])
        left[:-1] = (MARGIN * phi_below[:-1] * B[:-1] * g_rms[1:]).double()
        left[:-1][(g_rms[1:] > CAP * tol) & (B[:-1] > 0)] = inf
        return total + left

    charge = charges(L)
    # (4) the end
    if lo == 0 and spent + float(charge[0]) <= tol:
        return 0, float(charge[0])
    # (5) a partial freeze
    if floor > 0:
        charge = charges(L.clamp_min(floor))
    v = torch.arange(lo, lo + n, device=g_rms.device, dtype=torch.float64)
    ok = spent + charge <= PARTIAL * tol * (T - v) / T
    failing = (~ok).nonzero()
    first_ok = min(int(failing[-1]) + 1, n - 1) if failing.numel() else 0  # rows ≥ this all pass
    return lo + first_ok, float(charge[first_ok])


def sensitivity(
    inputs: Tensor, increments: Tensor, a: Tensor, last_inputs: Tensor, last_increments: Tensor, known: Tensor
) -> tuple[Tensor, Tensor]:
    """(6): L_i and K_i per window row from this evaluation (x_{i+1} = ``inputs``, d_i = ``increments``,
    rows flattened) and the step's previous one (``last_*``, valid where ``known``); 1 elsewhere."""
    dx, dd = inputs - last_inputs, increments - last_increments
    size = rms(dx)
    known = known & (size > 0)
    size = size.clamp_min(torch.finfo(size.dtype).tiny)
    one = torch.ones_like(size)
    L = torch.where(known, rms(dd) / size, one)
    K = torch.where(known, rms(a[:, None] * dx + dd) / size, one)
    return L, K


def per_step_anchor(r_rms: Tensor, sigma: Tensor, tol: float, tol2: float, lo: int) -> int:
    """(7): the noisiest step i with ρ_i > tol and ρ_i > tol2 · σ_i, else ``lo``."""
    unconverged = ((r_rms > tol) & (r_rms > tol2 * sigma)).nonzero()
    return lo + int(unconverged[-1]) if unconverged.numel() else lo
