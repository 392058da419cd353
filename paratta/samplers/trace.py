"""A sampler run on coefficient vectors, and the banded recurrence read off it.

Every sampler paratta solves is linear in what it is given: x_T, the network outputs o_j and the
noises ξ_j it draws, with coefficients that depend on the schedule only. So a sampler's own
``step`` arithmetic, run once on vectors of those coefficients instead of on latents, writes every
state as a row of numbers:

    x_i = C_i · [x_T, o_0 … o_{n−1}, ξ_0 … ξ_{n−1}]        (``Trace``)

Row j of the network is evaluated at x_{j+1} (index 0 is the least noisy state; the first call, row
n − 1, is at x_T), and the sampler reads it through a feature f_j = μ_j x_{j+1} + ν_j o_j — its
prediction of x̂_0, of ε, or the output itself. ``band_form`` then finds, for every step, the shortest
band of features that carries x_{i+1} to x_i:

    (1)  x_i = p_i x_{i+1} + Σ_{b<B_i} w_{i,b} f_{i+b} + c_i ξ_i,

by a least-squares fit of C_i on [C_{i+1}, the features' rows, ξ_i] that must be exact. A one-step
sampler (DDIM, Euler) has B = 1; a multistep one reads the features of the steps before it (DPM-Solver++
2M: 2, 3M: 3, PLMS: 4); a sampler whose carried state is not the state the network sees (UniPC's
corrector, PLMS's warm-up, Heun's second stage) is eliminated into (1) the same way, because x_{i+1}
determines that state given the band. The fit is checked to round-off, so a sampler that is not
banded is refused rather than approximated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT = 1e-9  # (1) must reproduce C_i to this relative error
MAX_BAND = 16  # features one step may read (PNDM's first PLMS step reads back over its Runge–Kutta warm-up)


@dataclass
class Evaluation:
    """What the sampler declared about one network call (row j, at state x_{j+1})."""

    t: float  # the timestep fed to the network
    alpha: float  # x_{j+1} ≈ α x_0 + σ ε, as the sampler reads this state
    sigma: float
    mu: float  # f_j = μ x_{j+1} + ν o_j
    nu: float


class Trace:
    """The sampler's states as coefficient vectors over [x_T, o_0…o_{n−1}, ξ_0…ξ_{n−1}] (float64).

    The sampler calls ``evaluate`` with each state it gives the network (noisiest first) and the
    feature it reads it through, gets back the output o_j, asks ``noise`` for the ξ a step draws, and
    ends with ``finish(x_0)``.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.size = 1 + 2 * n
        self.points = np.zeros((n + 1, self.size))  # x_0 … x_n; x_n = x_T
        self.points[n, 0] = 1.0
        self.evaluations: list[Evaluation] = []
        self.draws = np.zeros(n, dtype=bool)

    @property
    def x_T(self) -> np.ndarray:
        return self.points[self.n].copy()

    @property
    def row(self) -> int:
        """The row of the last evaluation."""
        return self.n - len(self.evaluations)

    def evaluate(
        self, x: np.ndarray, t: float, alpha: float, sigma: float, mu: float, nu: float
    ) -> np.ndarray:
        """Record a network call at state ``x`` whose feature is μ x + ν o; return the output o."""
        j = self.n - 1 - len(self.evaluations)
        if j < 0:
            raise RuntimeError(f"the sampler evaluates more than the {self.n} rows it declared")
        if j == self.n - 1:
            if not np.allclose(x, self.points[self.n], rtol=0, atol=1e-12):
                raise RuntimeError("the first network call must be at x_T")
        else:
            self.points[j + 1] = x
        self.evaluations.append(Evaluation(float(t), float(alpha), float(sigma), float(mu), float(nu)))
        o = np.zeros(self.size)
        o[1 + j] = 1.0
        return o

    def noise(self) -> np.ndarray:
        """ξ drawn by the step of the last evaluated row (from the generator, after x_T, noisiest first)."""
        j = self.row
        self.draws[j] = True
        xi = np.zeros(self.size)
        xi[1 + self.n + j] = 1.0
        return xi

    def finish(self, x0: np.ndarray) -> None:
        if len(self.evaluations) != self.n:
            raise RuntimeError(
                f"the sampler evaluated {len(self.evaluations)} of the {self.n} rows it declared"
            )
        self.points[0] = x0

    def features(self) -> np.ndarray:
        """(n, size): f_j = μ_j x_{j+1} + ν_j o_j, row j."""
        f = np.zeros((self.n, self.size))
        for k, e in enumerate(self.evaluations):
            j = self.n - 1 - k
            f[j] = e.mu * self.points[j + 1]
            f[j, 1 + j] += e.nu
        return f


def band_form(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p (n,), w (n, B), c (n,)) of (1): per step the shortest band that reproduces the trace exactly."""
    n, X, F = trace.n, trace.points, trace.features()
    rows: list[tuple[float, list[float], float]] = []
    for i in range(n):
        target = X[i]
        scale = max(1.0, float(np.abs(target).max()))
        found = None
        for width in range(1, min(MAX_BAND, n - i) + 1):
            columns = [X[i + 1], *F[i : i + width]]
            if trace.draws[i]:
                columns.append(_unit(trace.size, 1 + n + i))
            A = np.stack(columns, 1)
            coef = _fit(A, target)
            if coef is not None and np.abs(A @ coef - target).max() <= EXACT * scale:
                found = coef
                break
        if found is None:
            raise ValueError(f"step {i} of this sampler is not a banded recurrence of width ≤ {MAX_BAND}")
        c = float(found[-1]) if trace.draws[i] else 0.0
        w = found[1 : len(found) - (1 if trace.draws[i] else 0)]
        rows.append((float(found[0]), [float(v) for v in w], c))
    B = max(len(w) for _, w, _ in rows)
    p = np.array([r[0] for r in rows])
    w = np.zeros((n, B))
    for i, (_, wi, _) in enumerate(rows):
        w[i, : len(wi)] = wi
    c = np.array([r[2] for r in rows])
    return p, w, c


def _fit(A: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """The least-squares coefficients of ``target`` on A's columns, by the normal equations on unit columns
    (a few columns; ``band_form`` checks the fit), or None where they are singular."""
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    U = A / norms
    try:
        return np.linalg.solve(U.T @ U, U.T @ target) / norms
    except np.linalg.LinAlgError:
        return None


def _unit(size: int, k: int) -> np.ndarray:
    v = np.zeros(size)
    v[k] = 1.0
    return v
