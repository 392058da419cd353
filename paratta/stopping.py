"""The two stopping rules: which states of the window may be frozen, i.e. where the anchor moves.

Notation (``solver``): the window holds steps i = lo…top−1 below the anchor x_top; y is the anchor
flow (y_top = x_top, y_i = a_i y_{i+1} + d_i(x_{i+1})), G = y − x the anchor residual and
r_i = a_i x_{i+1} + d_i − x_i the one-step residual. Freezing [u, top) sets those states to y.

**budget** (the default). Let z be the trajectory the solver outputs. A state frozen in an
iteration is z_i = y_i = a_i z_{i+1} + d_i(x_{i+1}): its increment was evaluated at the iterate
x_{i+1}, which differs from z_{i+1} = y_{i+1} by G_{i+1} (and by nothing at the anchor). So z solves
the sequential recurrence up to one defect per step,

    (1)  δ_i = d_i(x_{i+1}) − d_i(z_{i+1}),      ‖δ_i‖ ≤ L_i ‖G_{i+1}‖,

with L_i the sensitivity of the increment d_i. A banded sampler's step (``paratta.schedule``:
d_i = own_i(x_{i+1}) + Σ_{b≥1} w_{i,b} f_{i+b}(x_{i+b+1}), f the feature row i + b is read through) has a
defect from each input; they are evaluated in the same window, except for the steps just below the
anchor, which read the features of final rows as their last evaluation left them (at iterates G away):

    (1') ‖δ_i‖ ≤ L_i ‖G_{i+1}‖ + Σ_{b≥1} B_{i,b} ‖G_{i+b+1}‖,      B_{i,b} = |w_{i,b}| L^f_{i+b},

L_i now the sensitivity of own_i and L^f_v that of f_v to x_{v+1}. The error of x_0 is the sum of the
defects carried to step 0 by the sampler's flow, e_0 = Σ_i Φ_{0←i} δ_i. The flow's error recursion is
‖e_i‖ ≤ K_i ‖e_{i+1}‖ + Σ_b B_{i,b} ‖e_{i+b+1}‖, so with M_i = max_{j≥i} ‖e_j‖,
M_i ≤ max(K_i + Σ_b B_{i,b}, 1) M_{i+1} + ‖δ_i‖ and to first order

    (2)  ‖e_0‖ ≤ Σ_i Φ_i ‖δ_i‖,      Φ_i = Π_{q<i} max(K_q + Σ_b B_{q,b}, 1),

with K_q the gain of step q's own row (B = 0 for one-row samplers: DDIM, Euler, flow Euler). The rule
keeps the right-hand side of (2), charged as the run goes, at most tol:

    (3)  c(u) = MARGIN · [ Σ_{v=u}^{top−1} Φ_v (L_v RMS(G_{v+1}) + Σ_b B_{v,b} RMS(G_{v+b+1}))
                           + Σ_{v<u} Σ_{b: v+b ≥ u} Φ_v B_{v,b} RMS(G_{v+b+1}) ]     (freezing [u, top))

with G = 0 from the anchor up, and ∞ for a term whose RMS(G) > CAP · tol, where first order does not
hold. G_u is not charged (z_u = y_u is computed from frozen states) and c(top − 1) = 0. The last sum
is the defect that the steps below u, not frozen yet, will take from the features of rows frozen now
(Φ_v = 1 below the window; nothing at the end, u = 0); freezing charges it once, so a step below a
later anchor reads them for free.

    (4)  the end:   when lo = 0 and spent + c(0) ≤ tol, the whole window is frozen (u = 0);
    (5)  otherwise: u is the lowest index with spent + c(v) ≤ PARTIAL · tol · (T − v) / T for every
                    v in [u, top): freezes short of the end share PARTIAL of tol in proportion to the
                    steps they make final; what one leaves unspent carries forward.

The reserve (1 − PARTIAL of tol) is kept for (4): an error frozen early is carried to x_0, where a
network may amplify it, while the end freezes everything that remains at once. L_i and K_i are
measured (6): from step i's last two evaluations, L_i ≈ RMS(Δd_i) / RMS(Δx_{i+1}) and
K_i ≈ RMS(a_i Δx_{i+1} + Δd_i) / RMS(Δx_{i+1}) (d_i: the own-row term), L^f_i ≈ RMS(Δf_i) / RMS(Δx_{i+1});
1 where step i has no earlier evaluation. So x_0 is
within tol (RMS, latent units) of the sequential x_0 to first order; tests/test_stopping.py checks
the true defects of the output against the charged budget, docs/stopping.md what this guarantees.

**per-step** (Tang et al. 2024): step i is converged when

    (7)  ρ_i = RMS(r_i) ≤ tol   or   ρ_i ≤ tol2 · σ_i,      σ_i the noise level of x_i (``Schedule.noise``:
                                                               VP √(1 − ᾱ); flow: σ itself),

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


def band_reads(w: Tensor, Lf: Tensor, lo: int, top: int) -> Tensor:
    """B_{v,b} = |w_{v,b}| L^f_{v+b} of (1') for the steps v = lo − (B − 1) … top − 1, b = 1 … B − 1, where
    the row read, v + b, is in the window [lo, top) (``Lf`` per window row); zero elsewhere: a row above
    the anchor is final, or its feature's defect was charged when it was frozen."""
    band = w.shape[1]
    v = torch.arange(lo - (band - 1), top, device=Lf.device)
    out = Lf.new_zeros((v.shape[0], band - 1))
    for b in range(1, band):
        row = v + b
        ok = (v >= 0) & (row >= lo) & (row < top)
        out[ok, b - 1] = w[v[ok], b].abs().to(Lf.dtype) * Lf[row[ok] - lo]
    return out


def budget_anchor(
    g_rms: Tensor,
    L: Tensor,
    K: Tensor,
    spent: float,
    tol: float,
    T: int,
    lo: int,
    floor: float = 0.0,
    reads: Tensor | None = None,
) -> tuple[int, float]:
    """The budget rule's anchor u and the charge of freezing [u, top): (3)–(5).

    Window rows are i = lo…top−1: ``g_rms`` is RMS(G_i), ``L`` the sensitivity L_i and ``K`` the
    step's gain K_i; ``reads`` (a banded sampler, ``band_reads``) holds B_{v,b} of (1') for the steps
    v = lo − (B − 1) … top − 1. Partial freezes (5) charge L_v no less than ``floor``; the end (4)
    charges the measured L. Either way spent stays ≤ tol.
    """
    n = g_rms.shape[0]
    extra = 0 if reads is None else reads.shape[1]  # B − 1
    Bw = reads[extra:] if reads is not None else L.new_zeros((n, 0))  # B_{v,b} of the window's steps
    g = torch.cat([g_rms, g_rms.new_zeros(extra + 1)]).double()  # RMS(G) per row, 0 from the anchor up
    over = g > CAP * tol  # first order does not hold there
    # Φ_v of (2): the gain of the steps below v within the window
    gain = (K + Bw.sum(1)).clamp_min(1.0).double()
    amplification = torch.cat([gain.new_ones(1), torch.cumprod(gain, 0)[:-1]])
    inf = float("inf")

    def term(weight: Tensor, rows: Tensor) -> Tensor:  # MARGIN · weight · RMS(G_rows), ∞ past first order
        out = MARGIN * weight.double() * g[rows]
        return torch.where(over[rows] & (weight > 0), torch.full_like(out, inf), out)

    r = torch.arange(n, device=g_rms.device)

    def charges(sensitivity: Tensor) -> Tensor:  # (3): c(u) per window row u
        own = MARGIN * amplification * sensitivity.double() * g[r + 1]
        own = torch.where(over[r + 1], torch.full_like(own, inf), own)
        defect = own + sum(
            (term(amplification * Bw[:, b - 1], r + b + 1) for b in range(1, extra + 1)), 0 * own
        )
        total = defect.flip(0).cumsum(0).flip(0)
        # steps below u read the features of rows frozen now, evaluated at x_{row+1}: Φ B RMS(G_{row+1})
        left = torch.zeros_like(total)
        for k in range(1, extra + 1):  # step v = u − k
            v = r - k
            phi = torch.where(v >= 0, amplification[v.clamp_min(0)], torch.ones_like(amplification))
            for b in range(k, extra + 1):  # it reads row v + b ≥ u
                left = left + term(phi * reads[v + extra, b - 1], v + b + 1)
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
