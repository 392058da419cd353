"""Anderson mixing for the triangular system: Triangular (TAA) and global.

With the last m iterates of the window, ΔX_j and ΔR_j (j = 1…m−1) are differences of
consecutive iterates and of their order-k residuals. Type-II Anderson with mixing 1 sets

    x ← x + R − (ΔX + ΔR) γ,       γ = (ΔRᵀΔR + λ'I)⁻¹ ΔRᵀ R.

TAA (Tang et al. 2024) gives each index i its own γ_i, fitted only on the rows it depends on,
i.e. i and the noisier indices q ≥ i in the window:

    B_i = Σ_{q≥i} ΔR(q)ᵀ ΔR(q),   g_i = Σ_{q≥i} ΔR(q)ᵀ R(q),   γ_i = (B_i + λ'I)⁻¹ g_i

a suffix cumulative sum of per-index (m−1)×(m−1) Gram blocks and a batched solve: O(window ×
latent × m²), never window × window. Global Anderson (one γ for the whole window) is the same
with the sum over all q — the standard, structure-blind variant, kept as a teaching contrast.

λ' = λ · tr(B_i)/(m−1): the regulariser is relative to the Gram scale, so the same λ works
whether residuals are 1 or 1e-4 (an absolute λ would switch Anderson off near convergence).
"""

from __future__ import annotations

import torch
from torch import Tensor


def anderson_step(
    X: Tensor, R: Tensor, dX: Tensor, dR: Tensor, lam: float, triangular: bool = True
) -> Tensor:
    """One Anderson update of the window rows.

    X, R: (n, D) current iterate and residual; dX, dR: (n, h, D) with h = m − 1 difference
    columns, zero where an index lacks that history (it then takes the plain update there).
    Row r is index lo + r, so "noisier" means a larger row.
    """
    h = dR.shape[1]
    B = torch.einsum("nkd,nld->nkl", dR, dR)
    g = torch.einsum("nkd,nd->nk", dR, R)
    if triangular:
        B = B.flip(0).cumsum(0).flip(0)
        g = g.flip(0).cumsum(0).flip(0)
    else:
        B = B.sum(0, keepdim=True).expand_as(B)
        g = g.sum(0, keepdim=True).expand_as(g)
    trace = B.diagonal(dim1=1, dim2=2).sum(1)
    tiny = torch.finfo(B.dtype).tiny ** 0.5
    reg = (lam * trace / h + tiny)[:, None, None] * torch.eye(h, dtype=B.dtype, device=B.device)
    gamma = torch.linalg.solve(B + reg, g[..., None])[..., 0]
    return X + R - torch.einsum("nk,nkd->nd", gamma, dX + dR)
