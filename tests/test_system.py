"""The triangular system and the Anderson update, against their definitions written out densely."""

from __future__ import annotations

import pytest
import torch

from paratta.anderson import anderson_step
from paratta.system import (
    anchor_flow,
    band_flow,
    band_order_residual,
    band_transfer,
    order_products,
    order_residual,
    step_residual,
)


def dense_F(a: torch.Tensor, d: torch.Tensor, x: torch.Tensor, order: int) -> torch.Tensor:
    """F_i^(k)(x) = P_{i,j} x_j + Σ_{s=i}^{j−1} P_{i,s} d_s, j = min(i+k, top), written out term by term.

    Rows r = 0…n−1 are the unknowns, x has n+1 rows (the last is the anchor)."""
    n = d.shape[0]
    out = torch.empty_like(d)
    for i in range(n):
        j = min(i + order, n)
        acc = torch.prod(a[i:j]) * x[j]
        for s in range(i, j):
            acc = acc + torch.prod(a[i:s]) * d[s]
        out[i] = acc
    return out


@pytest.mark.parametrize("n,order", [(1, 1), (5, 1), (5, 2), (7, 3), (7, 7), (7, 20), (12, 5)])
@pytest.mark.parametrize("with_zero", [False, True])
def test_order_residual_equals_the_written_out_system(n: int, order: int, with_zero: bool) -> None:
    g = torch.Generator().manual_seed(n * 31 + order)
    a = 0.8 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    if with_zero:
        a[0] = 0.0  # "sample" prediction lands on a_0 = 0; the products must not divide by it
    d = torch.randn(n, 6, generator=g, dtype=torch.float64)
    x = torch.randn(n + 1, 6, generator=g, dtype=torch.float64)
    k = min(order, n)
    G = anchor_flow(a, d, x[n]) - x[:n]
    R = order_residual(G, order_products(a, k), k)
    torch.testing.assert_close(R, dense_F(a, d, x, order) - x[:n])
    torch.testing.assert_close(G, dense_F(a, d, x, n) - x[:n])
    torch.testing.assert_close(step_residual(a, d, x[1:], x[:n]), dense_F(a, d, x, 1) - x[:n])


def test_sequential_trajectory_is_the_fixed_point_of_every_order() -> None:
    g = torch.Generator().manual_seed(0)
    n = 9
    a = 0.9 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64)
    d = torch.randn(n, 4, generator=g, dtype=torch.float64)
    x = torch.empty(n + 1, 4, dtype=torch.float64)
    x[n] = torch.randn(4, generator=g, dtype=torch.float64)
    for i in reversed(range(n)):
        x[i] = a[i] * x[i + 1] + d[i]
    for order in range(1, n + 1):
        assert dense_F(a, d, x, order).sub(x[:n]).abs().max() < 1e-12
        G = anchor_flow(a, d, x[n]) - x[:n]
        assert order_residual(G, order_products(a, order), order).abs().max() < 1e-12


def dense_band_F(A: torch.Tensor, d: torch.Tensor, x: torch.Tensor, order: int) -> torch.Tensor:
    """F_i^(k)(x) of x_i = Σ_b A_{i,b} x_{i+b+1} + d_i: the recurrence substituted for every row below
    j = min(i + k, n), the iterate kept from j on (rows n… are final), term by term, one row at a time."""
    n, B = A.shape
    out = torch.empty_like(d)
    for i in range(n):
        j = min(i + order, n)

        def value(r: int, j: int = j) -> torch.Tensor:
            if r >= j:
                return x[r]
            return d[r] + sum(A[r, b] * value(r + b + 1) for b in range(B))

        out[i] = value(i)
    return out


@pytest.mark.parametrize("B", [2, 3])
@pytest.mark.parametrize("n,order", [(1, 1), (5, 1), (5, 2), (7, 3), (7, 7), (8, 20), (9, 4)])
def test_band_residuals_equal_the_written_out_system(n: int, order: int, B: int) -> None:
    """A linear part reading B rows (a multistep term's band carried): G and the order-k residual R
    against the system written out, the rows read above the window final (x_top … x_{top+B−1})."""
    g = torch.Generator().manual_seed(n * 7 + order + B)
    A = torch.cat([0.8 + 0.5 * torch.rand(n, 1, generator=g), -0.3 * torch.rand(n, B - 1, generator=g)], 1)
    A = A.double()
    d = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x = torch.randn(n + B, 5, generator=g, dtype=torch.float64)  # x_lo … x_top … x_{top+B−1}
    k = min(order, n)
    G = band_flow(A, d, x[n : n + B]) - x[:n]
    torch.testing.assert_close(G, dense_band_F(A, d, x, n) - x[:n])
    torch.testing.assert_close(
        band_order_residual(G, band_transfer(A, k), k), dense_band_F(A, d, x, k) - x[:n]
    )
    one = A[:, :1]  # one row is the published system itself
    G1 = band_flow(one, d, x[n : n + 1]) - x[:n]
    torch.testing.assert_close(G1, anchor_flow(one[:, 0], d, x[n]) - x[:n])
    torch.testing.assert_close(
        band_order_residual(G1, band_transfer(one, k), k), order_residual(G1, order_products(one[:, 0], k), k)
    )


def dense_taa(X, R, dX, dR, lam, triangular):
    """γ_i = (B_i + λ tr(B_i)/h I)⁻¹ g_i with B_i, g_i summed over q ≥ i (or all q), one row at a time."""
    n, h, _ = dR.shape
    out = torch.empty_like(X)
    for i in range(n):
        rows = range(i, n) if triangular else range(n)
        B = sum(dR[q] @ dR[q].T for q in rows)
        gv = sum(dR[q] @ R[q] for q in rows)
        reg = lam * torch.trace(B) / h + torch.finfo(B.dtype).tiny ** 0.5
        gamma = torch.linalg.solve(B + reg * torch.eye(h, dtype=B.dtype), gv)
        out[i] = X[i] + R[i] - gamma @ (dX[i] + dR[i])
    return out


@pytest.mark.parametrize("triangular", [True, False])
@pytest.mark.parametrize("h", [1, 3])
def test_anderson_step_equals_its_definition(triangular: bool, h: int) -> None:
    g = torch.Generator().manual_seed(h)
    n, D = 6, 10
    X, R = (
        torch.randn(n, D, generator=g, dtype=torch.float64),
        torch.randn(n, D, generator=g, dtype=torch.float64),
    )
    dX, dR = (torch.randn(n, h, D, generator=g, dtype=torch.float64) for _ in range(2))
    dX[0], dR[0] = 0, 0  # an index without history
    got = anderson_step(X, R, dX, dR, 1e-3, triangular)
    torch.testing.assert_close(got, dense_taa(X, R, dX, dR, 1e-3, triangular))
    if triangular:
        # the noisiest row depends on nothing below it: moving lower rows must not change it
        R2 = R.clone()
        R2[:3] += 1.0
        assert torch.equal(anderson_step(X, R2, dX, dR, 1e-3, True)[-1], got[-1])


def test_anderson_without_history_is_the_plain_update() -> None:
    X, R = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    zeros = torch.zeros(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(anderson_step(X, R, zeros, zeros, 1e-3), X + R)
