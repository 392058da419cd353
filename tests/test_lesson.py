"""paratta.lesson: fixed point, Anderson (the solver's own update), secant and GMRES on small problems."""

from __future__ import annotations

import math

import pytest
import torch

from paratta import lesson as toys


def scalar(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=torch.float64)


def test_picard_contracts_by_the_slope_at_the_fixed_point() -> None:
    xs = toys.picard(toys.cosine, scalar(1.0), 80)
    star = float(xs[-1])
    assert abs(math.cos(star) - star) < 1e-12
    errors = [abs(float(x) - star) for x in xs]
    assert toys.rate(errors, 5, 25) == pytest.approx(math.sin(star), rel=2e-3)


@pytest.mark.parametrize("x0", [0.0, 1.0, 2.5])
def test_anderson_with_two_iterates_is_the_secant_method_on_the_residual(x0: float) -> None:
    aa = toys.anderson(toys.cosine, scalar(x0), 8, history=2)
    secant = toys.secant(lambda x: toys.cosine(x) - x, scalar(x0), toys.cosine(scalar(x0)), len(aa) - 2)
    assert len(aa) >= 5
    for a, s in zip(aa, secant, strict=False):
        assert float(a) == pytest.approx(float(s), abs=1e-14)


def test_anderson_with_history_one_is_picard() -> None:
    M, b = toys.linear_toy(6, 0.8, seed=2)
    f = lambda x: M @ x + b  # noqa: E731
    x0 = torch.zeros(6, dtype=torch.float64)
    for a, p in zip(toys.anderson(f, x0, 10, history=1), toys.picard(f, x0, 10), strict=True):
        assert torch.equal(a, p)


def test_secant_converges_superlinearly_where_picard_is_linear() -> None:
    star = float(toys.picard(toys.cosine, scalar(1.0), 200)[-1])
    picard = [abs(float(x) - star) for x in toys.picard(toys.cosine, scalar(1.0), 100)]
    aa = [abs(float(x) - star) for x in toys.anderson(toys.cosine, scalar(1.0), 12, history=2)]
    assert toys.steps_to(aa, 1e-10) <= 7 < 50 <= toys.steps_to(picard, 1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmres_minimises_the_residual_over_the_krylov_space_and_ends_within_n_steps(seed: int) -> None:
    n = 9
    M, b = toys.linear_toy(n, 0.95, seed)
    A = torch.eye(n, dtype=torch.float64) - M
    xs = toys.gmres(A, b, torch.zeros(n, dtype=torch.float64), n)
    residuals = [float((b - A @ x).norm()) for x in xs]
    assert all(r1 <= r0 + 1e-12 for r0, r1 in zip(residuals, residuals[1:], strict=False))
    assert residuals[n] < 1e-10 * residuals[0]
    # x_2 beats every other point of x_0 + span{b, A b} (a few random ones)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        c = torch.randn(2, generator=gen, dtype=torch.float64)
        y = c[0] * b + c[1] * (A @ b)
        assert float((b - A @ y).norm()) >= residuals[2] - 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_memory_anderson_is_gmres_shifted_by_one_application_of_f(seed: int) -> None:
    """Walker & Ni (2011): with every difference kept and λ = 0, x^AA_{k+1} = f(x^GMRES_k)."""
    n = 10
    M, b = toys.linear_toy(n, 0.9, seed)
    f = lambda x: M @ x + b  # noqa: E731
    x0 = torch.zeros(n, dtype=torch.float64)
    aa = toys.anderson(f, x0, n + 1)
    gm = toys.gmres(torch.eye(n, dtype=torch.float64) - M, b, x0, n)
    scale = float(b.norm())
    for k in range(min(n, len(aa) - 1)):
        assert float((aa[k + 1] - f(gm[k])).norm()) < 1e-9 * scale, k
    assert toys.residual_norms(f, aa)[-1] < 1e-10 * scale  # finite termination, as GMRES


def test_more_history_needs_fewer_iterations_on_a_linear_problem() -> None:
    M, b = toys.linear_toy(12, 0.9, 0)
    f = lambda x: M @ x + b  # noqa: E731
    x0 = torch.zeros(12, dtype=torch.float64)
    steps = [toys.steps_to(toys.residual_norms(f, toys.anderson(f, x0, 300, m)), 1e-8) for m in (1, 2, 5)]
    steps.append(toys.steps_to(toys.residual_norms(f, toys.anderson(f, x0, 20)), 1e-8))
    assert None not in steps and steps == sorted(steps, reverse=True) and steps[-1] <= 13


def test_anderson_refuses_history_zero() -> None:
    with pytest.raises(ValueError, match="history"):
        toys.anderson(toys.cosine, scalar(0.0), 3, history=0)
