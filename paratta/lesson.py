"""Small problems where fixed-point iteration and Anderson acceleration can be watched (the Teach lesson).

The diffusion system is a fixed point x = F(x) too large to look at; these are the same iterations
on problems of one to a few dozen unknowns, with the update taken from the solver itself
(``paratta.anderson.anderson_step``, one row, so its triangular and global forms coincide):

1. **fixed point** (Picard): x_{n+1} = f(x_n); near x* the error shrinks by |f'(x*)| per step
   (by the spectral radius of M for f(x) = M x + b);
2. **Anderson** with history m: x_{n+1} = x_n + r_n − (ΔX + ΔR) γ, with r = f(x) − x and
   γ = argmin ‖r_n − ΔR γ‖² (+ λ‖γ‖²) over the last m − 1 differences. With m = 2 on one unknown,
   γ = r_n / Δr and the step is x_n − r_n Δx / Δr: the **secant** method on r(x) = 0;
3. **GMRES** on (I − M) x = b: x_k minimises ‖b − (I − M) x‖ over x_0 + K_k. Anderson with every
   difference kept (m = ∞, λ = 0) is GMRES in disguise on a linear problem (Walker & Ni 2011):
   x^AA_{k+1} = f(x^GMRES_k).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .anderson import anderson_step

Map = Callable[[Tensor], Tensor]


def picard(f: Map, x0: Tensor, iterations: int) -> list[Tensor]:
    """x_0 … x_n of the plain fixed-point iteration x_{n+1} = f(x_n)."""
    xs = [x0]
    for _ in range(iterations):
        xs.append(f(xs[-1]))
    return xs


def anderson(
    f: Map, x0: Tensor, iterations: int, history: int | None = None, lam: float = 0.0, rtol: float = 1e-14
) -> list[Tensor]:
    """x_0 … x_n of type-II Anderson acceleration (mixing 1) with the solver's own update.

    ``history`` is m, the iterates remembered (m − 1 differences; m = 1 is Picard); None keeps every
    iterate. The first step has no difference yet and is a fixed-point step. The list ends early once
    ‖r_n‖ ≤ rtol ‖r_0‖: x_n is then a fixed point to round-off, and γ would only fit round-off.
    """
    if history is not None and history < 1:
        raise ValueError(f"history must be at least 1; got {history}")
    xs, rs = [x0], [f(x0) - x0]
    floor = rtol * float(rs[0].norm())
    for _ in range(iterations):
        if float(rs[-1].norm()) <= floor:
            break
        keep = len(xs) if history is None else min(history, len(xs))
        x, r = xs[-1], rs[-1]
        if keep < 2:
            x_new = x + r
        else:
            back_x, back_r = xs[-keep:][::-1], rs[-keep:][::-1]  # newest first, as the solver keeps them
            dX = torch.stack([back_x[j] - back_x[j + 1] for j in range(keep - 1)])
            dR = torch.stack([back_r[j] - back_r[j + 1] for j in range(keep - 1)])
            x_new = anderson_step(x[None], r[None], dX[None], dR[None], lam, triangular=False)[0]
        xs.append(x_new)
        rs.append(f(x_new) - x_new)
    return xs


def secant(g: Map, x0: Tensor, x1: Tensor, iterations: int) -> list[Tensor]:
    """x_0, x_1, … of the secant method on the scalar equation g(x) = 0: x_{n+1} = x_n − g_n Δx / Δg."""
    xs = [x0, x1]
    for _ in range(iterations):
        a, b = xs[-2], xs[-1]
        ga, gb = g(a), g(b)
        xs.append(b - gb * (b - a) / (gb - ga))
    return xs


def gmres(A: Tensor, b: Tensor, x0: Tensor, iterations: int) -> list[Tensor]:
    """x_0 … x_n of GMRES on A x = b: x_k = argmin ‖b − A x‖ over x ∈ x_0 + K_k(A, r_0), with
    K_k = span{r_0, A r_0, …, A^{k−1} r_0} (an orthonormal basis by Arnoldi, a least-squares solve)."""
    r0 = b - A @ x0
    beta = float(r0.norm())
    xs, basis = [x0], [r0 / beta] if beta > 0 else []
    for k in range(1, iterations + 1):
        if len(basis) < k:  # the Krylov space stopped growing: x_{k−1} is exact
            xs.append(xs[-1])
            continue
        V = torch.stack(basis, 1)  # (n, k)
        y = torch.linalg.lstsq(A @ V, r0[:, None]).solution[:, 0]
        xs.append(x0 + V @ y)
        w = A @ basis[-1]
        for v in basis:  # modified Gram-Schmidt
            w = w - (v @ w) * v
        if float(w.norm()) > 1e-12 * beta:
            basis.append(w / w.norm())
    return xs


def linear_toy(size: int = 12, radius: float = 0.9, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(M, b): f(x) = M x + b with M symmetric, its eigenvalues evenly spread over [−radius, radius]
    (so Picard contracts by ``radius`` per step at worst), b standard normal; float64."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
    M = Q @ torch.diag(torch.linspace(-radius, radius, size, dtype=torch.float64)) @ Q.T
    return M, torch.randn(size, generator=gen, dtype=torch.float64)


def cosine(x: Tensor) -> Tensor:
    """The scalar toy f(x) = cos x: one fixed point x* ≈ 0.739, where |f'(x*)| = sin x* ≈ 0.67."""
    return torch.cos(x)


def residual_norms(f: Map, xs: list[Tensor]) -> list[float]:
    """‖f(x_n) − x_n‖ for each iterate."""
    return [float((f(x) - x).norm()) for x in xs]


def steps_to(errors: list[float], tol: float) -> int | None:
    """The first n with errors[n] ≤ tol (None if never)."""
    return next((n for n, e in enumerate(errors) if e <= tol), None)


def rate(errors: list[float], first: int, last: int) -> float:
    """Mean contraction per step from ``first`` to ``last``: (e_last / e_first)^(1 / (last − first))."""
    return math.exp((math.log(errors[last]) - math.log(errors[first])) / (last - first))
