"""The lesson's numbers and figures (docs/teach.md): each claim measured here, on the toys and on ``toy2d``.

1. **Fixed point and its rate**: on f(x) = cos x, Picard's error shrinks by |f'(x*)| = sin x* per step;
   on the triangular system each Jacobi iteration makes at least one more state final (``staircase``).
2. **Anderson as a secant method**: Anderson with m = 2 on one unknown *is* the secant method
   (``scalar``); on a linear problem Anderson with every difference kept is GMRES shifted by one
   application of f (``linear``).
3. **One γ per timestep**: TAA against one γ for the window, over seeds and histories (``histories``).

``benchmarks/teach_lesson.py`` prints these numbers and writes the figures; ``tests/test_teach.py``
checks each claim.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from paratta import lesson as toys

from ..serve.limits import Caps
from . import draw
from .lanes import DEFAULTS, LANES, Lesson, checked, lesson, newly_final

CAPS = Caps(1000, 1000)  # the lesson's own runs: no app cap applies


@dataclass(frozen=True)
class Scalar:
    """f(x) = cos x from x_0: errors |x_n − x*| of Picard and of Anderson m = 2, and the secant method's."""

    fixed_point: float
    slope: float  # |f'(x*)| = sin x*
    picard: list[float]
    anderson: list[float]
    secant_gap: float  # largest |x_n(Anderson m = 2) − x_n(secant)|

    def rate(self) -> float:
        """Picard's measured contraction per step, over steps 5 … 25 (the asymptotic regime)."""
        return toys.rate(self.picard, 5, 25)


def scalar(x0: float = 1.0, tol: float = 1e-10) -> Scalar:
    start = torch.tensor([x0], dtype=torch.float64)
    star = toys.picard(toys.cosine, start, 200)[-1]
    picard = [float((x - star).abs()) for x in toys.picard(toys.cosine, start, 60)]
    aa = toys.anderson(toys.cosine, start, 12, history=2)
    secant = toys.secant(lambda x: toys.cosine(x) - x, start, toys.cosine(start), len(aa) - 2)
    gap = max(float((a - s).abs()) for a, s in zip(aa, secant, strict=False))
    return Scalar(float(star), math.sin(float(star)), picard, [float((x - star).abs()) for x in aa], gap)


@dataclass(frozen=True)
class Linear:
    """f(x) = M x + b, M symmetric with eigenvalues in [−0.9, 0.9]: residual norms per iteration."""

    size: int
    picard: list[float]
    anderson: dict[str, list[float]]  # by history: "m = 2", "m = 5", "every difference"
    gmres: list[float]
    shift_gap: float  # largest ‖x^AA_{k+1} − f(x^GMRES_k)‖ over k < size


def linear(size: int = 12, radius: float = 0.9, seed: int = 0, iterations: int = 200) -> Linear:
    M, b = toys.linear_toy(size, radius, seed)
    f = lambda x: M @ x + b  # noqa: E731
    x0 = torch.zeros(size, dtype=torch.float64)
    runs = {f"m = {m}": toys.anderson(f, x0, iterations, m) for m in (2, 5)}
    full = toys.anderson(f, x0, size + 1)
    runs["every difference (m = ∞)"] = full
    gm = toys.gmres(torch.eye(size, dtype=torch.float64) - M, b, x0, size)
    gap = max(float((full[k + 1] - f(gm[k])).norm()) for k in range(min(size, len(full) - 1)))
    return Linear(
        size,
        toys.residual_norms(f, toys.picard(f, x0, iterations)),
        {name: toys.residual_norms(f, xs) for name, xs in runs.items()},
        toys.residual_norms(f, gm),  # f(x) − x = b − (I − M) x: GMRES's own residual
        gap,
    )


def default_lesson(**changes: object) -> Lesson:
    """The Teach tab's defaults (``north``, T = 50, k = T, m = 2, λ = 1e-3), with ``changes``."""
    settings = dict(
        prompt=DEFAULTS.prompt, seed=DEFAULTS.seed, steps=DEFAULTS.steps, order=DEFAULTS.order,
        family=DEFAULTS.family, history=DEFAULTS.history, lam=DEFAULTS.lam,
    ) | changes  # fmt: skip
    named = {k: settings[k] for k in ("prompt", "seed", "steps", "order")}
    return lesson(*checked(**named, caps=CAPS, family=settings["family"], history=settings["history"],
                           lam=settings["lam"]))  # fmt: skip


def iterations(result: Lesson) -> dict[str, int]:
    return {name: snaps[-1].iteration for name, snaps in result.lanes.items()}


def least_gain(result: Lesson) -> dict[str, int]:
    """Per lane, the fewest states any one parallel iteration made final (≥ 1: the triangular structure)."""
    return {name: min(newly_final(snaps)) for name, snaps in result.lanes.items()}


def histories(ms: tuple[int, ...] = (1, 2, 3, 5), seeds: tuple[int, ...] = tuple(range(10))) -> dict:
    """Per history m, per lane: parallel iterations over ``seeds`` at the tab's defaults, and the seeds
    where TAA needed fewer iterations than one γ for the window."""
    out = {}
    for m in ms:
        counts = {name: [] for name in LANES}
        for seed in seeds:
            for name, n in iterations(default_lesson(seed=seed, history=m)).items():
                counts[name].append(n)
        wins = sum(a < g for a, g in zip(counts["anderson"], counts["anderson-global"], strict=True))
        out[m] = {
            "counts": counts,
            "median": {n: statistics.median(v) for n, v in counts.items()},
            "wins": wins,
        }
    return out


def scalar_figure(result: Scalar) -> Figure:
    return draw.curves_figure(
        f"f(x) = cos x from x₀ = 1\nerror |xₙ − x*|; Picard's rate |f′(x*)| = {result.slope:.3f}",
        {"fixed point (Picard)": result.picard[:40], "Anderson m = 2 (= secant)": result.anderson},
        y_label="|xₙ − x*|",
    )


def linear_figure(result: Linear, shown: int = 60) -> Figure:
    curves = {"fixed point (Picard)": result.picard[:shown]}
    curves |= {f"Anderson {name}": r[:shown] for name, r in result.anderson.items()}
    curves["GMRES on (I − M) x = b"] = result.gmres
    return draw.curves_figure(
        f"f(x) = M x + b: {result.size} unknowns, eigenvalues of M in [−0.9, 0.9]\nresidual ‖f(xₙ) − xₙ‖",
        curves,
        y_label="residual norm",
    )


def histories_figure(rows: dict, seeds: int) -> Figure:
    data = {f"m = {m}": row["median"] for m, row in rows.items()}
    return draw.bars_figure(
        f"toy2d, “north”, T = k = 50: median of {seeds} seeds",
        data,
        "parallel iterations",
    )
