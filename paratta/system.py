"""The triangular nonlinear system of order k, on a window below the anchor.

Unknowns are x_lo…x_{top−1}; x_top (the anchor) is final. With d_s = step_s(x_{s+1}) − a_s x_{s+1}
(network evaluated at the current iterate) and P_{i,s} = a_i a_{i+1} ⋯ a_{s−1}:

    F_i^(k)(x) = P_{i,j} x_j + Σ_{s=i}^{j−1} P_{i,s} d_s,      j = min(i + k, top)

Every order has the sequential trajectory as its unique solution. Two quantities drive the solver:

- the anchor flow y_i = F_i^(top−i)(x), i.e. y_top = x_top, y_i = a_i y_{i+1} + d_i, and the
  anchor residual G_i = y_i − x_i. G measures how far x_i is from where the current network
  outputs carry the anchor: errors accumulated over many steps show up in it, which a
  per-step residual cannot see.
- the order-k residual R_i = F_i^(k)(x) − x_i = G_i − P_{i,j} G_j  (G_top = 0), which
  follows from F_i^(k) = y_i + P_{i,j} (x_j − y_j).

All work is O(window × latent): cumulative sums over the window and elementwise products.

A linear part that reads a band of B rows (``Schedule.linear_part``: x_i = Σ_b A_{i,b} x_{i+b+1} + d_i)
has the same two quantities: ``band_flow`` runs its anchor flow, and F_i^(k) = y_i + Σ_b T_{i,b}
(x_{j+b} − y_{j+b}) with T the homogeneous recurrence unrolled k steps (``band_transfer``), so
R_i = G_i − Σ_b T_{i,b} G_{i+k+b} (``band_order_residual``; G = 0 at and above the anchor).
"""

from __future__ import annotations

import torch
from torch import Tensor


def anchor_flow(a: Tensor, d: Tensor, x_top: Tensor) -> Tensor:
    """y_i for the window rows (row r is index lo + r): y_i = a_i y_{i+1} + d_i from y_top = x_top.

    ``a`` holds a_lo…a_{top−1} (n,), ``d`` the increments (n, D), ``x_top`` the anchor (D,).
    With C_r = Π_{q<r} a_q (relative to lo) and S_r = Σ_{q<r} C_q d_q the recurrence unrolls to
    y_r = (C_n x_top + S_n − S_r) / C_r: two cumulative sums, no loop. The sums run in float64
    whatever the state dtype (cancellation in S_n − S_r). A zero a_q (the "sample" prediction
    type lands there on the last step) makes C vanish: that case takes the exact scan instead.
    """
    if not bool((a > 0).all()):
        return _anchor_scan(a, d, x_top)
    a64, d64 = a.double(), d.double()
    C = torch.cat([a64.new_ones(1), torch.cumprod(a64, 0)])
    S = torch.cat([d64.new_zeros(1, d.shape[1]), torch.cumsum(C[:-1, None] * d64, 0)])
    y = (C[-1] * x_top.double() + S[-1] - S[:-1]) / C[:-1, None]
    return y.to(d.dtype)


def _anchor_scan(a: Tensor, d: Tensor, x_top: Tensor) -> Tensor:
    y = torch.empty_like(d)
    acc = x_top
    for r in range(d.shape[0] - 1, -1, -1):
        acc = a[r] * acc + d[r]
        y[r] = acc
    return y


def order_products(a: Tensor, order: int) -> Tensor:
    """P_{i, min(i+k, top)} for each window row, from a_lo…a_{top−1} (n,)."""
    n = a.shape[0]
    if bool((a > 0).all()):
        logs = torch.cat([a.new_zeros(1), torch.cumsum(a.log(), 0)])  # L_r = Σ_{q<r} log a_q
        r = torch.arange(n, device=a.device)
        j = (r + order).clamp_max(n)
        return (logs[j] - logs[r]).exp()
    p = torch.ones_like(a)
    for m in range(min(order, n)):
        rows = torch.arange(n - m, device=a.device)
        p[rows] = p[rows] * a[rows + m]
    return p


def order_residual(G: Tensor, P: Tensor, order: int) -> Tensor:
    """R_i = G_i − P_{i,j} G_j with j = min(i + k, top) and G_top = 0 (rows: index lo + r)."""
    n = G.shape[0]
    if order >= n:
        return G
    shifted = torch.zeros_like(G)
    shifted[: n - order] = G[order:]
    return G - P[:, None] * shifted


def step_residual(a: Tensor, d: Tensor, x_above: Tensor, x: Tensor) -> Tensor:
    """First-order residual r_i = a_i x_{i+1} + d_i − x_i; ``x_above`` row r holds x_{i+1}."""
    return a[:, None] * x_above + d - x


def rms(v: Tensor) -> Tensor:
    """Root mean square over the latent axis: (n, D) → (n,)."""
    return v.pow(2).mean(1).sqrt()


def band_flow(A: Tensor, d: Tensor, above: Tensor) -> Tensor:
    """y_i = Σ_b A_{i,b} y_{i+b+1} + d_i for the window rows (row r is index lo + r), from y = x at and
    above the anchor. ``A`` (n, B), ``d`` (n, D), ``above`` (B, D): x_top … x_{top+B−1} (zero rows past
    x_T, where A is zero). One row is ``anchor_flow``; a wider band is a scan over the rows (float64)."""
    if A.shape[1] == 1:
        return anchor_flow(A[:, 0], d, above[0])
    n, B = A.shape
    A64 = A.double()
    y = torch.cat([d.new_zeros((n, d.shape[1]), dtype=torch.float64), above.double()])
    for r in range(n - 1, -1, -1):
        y[r] = d[r].double() + A64[r] @ y[r + 1 : r + 1 + B]
    return y[:n].to(d.dtype)


def band_transfer(A: Tensor, order: int) -> Tensor:
    """T (n, B): T_{i,b} with e_i = Σ_b T_{i,b} e_{i+k+b} for e_i = Σ_b A_{i,b} e_{i+b+1} (rows past the
    window count as zero). One recurrence per row, run for all rows at once: k steps of (n, B) work."""
    n, B = A.shape
    if B == 1:
        return order_products(A[:, 0], order)[:, None]
    padded = torch.cat([A, A.new_zeros((order, B))])  # rows past the window: final, e = 0
    rows = torch.arange(n, device=A.device)
    eye = torch.eye(B, dtype=A.dtype, device=A.device)
    # coefficients of e_{r+t}, e_{r+t+1}, … in terms of the boundary e_{r+k…r+k+B−1}, for t = k, then down
    band = [eye[b].expand(n, B) for b in range(B)]
    for t in range(order - 1, -1, -1):
        a = padded[rows + t]  # (n, B): A_{r+t, ·}
        band = [sum(a[:, b : b + 1] * band[b] for b in range(B))] + band[:-1]
    return band[0]


def band_order_residual(G: Tensor, T: Tensor, order: int) -> Tensor:
    """R_i = G_i − Σ_b T_{i,b} G_{i+k+b}, G = 0 at and above the anchor (rows: index lo + r)."""
    n, B = T.shape
    R = G.clone()
    for b in range(B):
        shift = order + b
        if shift < n:
            R[: n - shift] -= T[: n - shift, b : b + 1] * G[shift:]
    return R
