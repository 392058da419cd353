"""The banded schedule: every sampler paratta solves, as one lower-triangular recurrence.

Index i = 0 is the least noisy state; row j of the network is evaluated at x_{j+1} (timestep t_j) and
read through its feature f_j (x̂_0, ε or the output itself, as the sampler reads it):

    (1)  f_j = μ_j x_{j+1} + ν_j o_j
    (2)  x_i = p_i x_{i+1} + Σ_{b<B} w_{i,b} f_{i+b} + c_i ξ_i  [+ κ_i (clip(x̂_0) − x̂_0) at row i, DDIM's
                                                                   clip_sample: the one non-linear term]

``paratta.samplers`` builds (1)–(2) for each sampler from diffusers' own ``step`` (``samplers.trace``).
The parallel solver takes the published split of (2) (Tang et al. 2024): the linear part is x_{i+1}
with every network output held fixed,

    (3)  a_i = p_i + w_{i,0} μ_i,      x_i = a_i x_{i+1} + d_i,
         d_i = w_{i,0} (f_i − μ_i x_{i+1}) + c_i ξ_i  +  Σ_{b≥1} w_{i,b} f_{i+b}
               └──── ``own``: reads row i alone ────┘    └─ the band: rows above ─┘

so DDIM, Euler and flow Euler (B = 1) have d_i = ``own`` alone, and a multistep sampler adds the
features of the rows above, which one batched call evaluates with row i.

Any slopes s_j assumed for ∂f_j/∂x_{j+1} give the same recurrence, d taking what A leaves out:

    (4)  x_i = Σ_b A_{i,b} x_{i+b+1} + d'_i,      A_{i,b} = [b = 0] p_i + w_{i,b} s_{i+b},

so the triangular system keeps the sequential trajectory as its only solution whatever A; A decides
how a correction at the inputs reaches x_i within one iteration (a linearisation of each step).
``linear_part`` gives two: "published" is (3) (s = μ on the own row, the band held), "flow" the
flow-matching frame for every sampler — x/(α + σ) moves while x̂_0 and ε̂ are held, so both have slope
κ_j = 1/(α_j + σ_j) and the output its reading's (``reading``) — with the band carried too. It lies
between ε held (right where x̂_0 follows x, at low noise) and x̂_0 held (right where the prediction
ignores x, at high noise), and it is flow Euler's own split (A = 1). Everything is float64 on the CPU
until ``to``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

import torch
from torch import Tensor

Frame = Literal["vp", "flow"]  # x = α x_0 + σ ε with α = √(1 − σ²) (VP) or α = 1 − σ (rectified flow)
Split = Literal["flow", "published"]  # (4): the linear part the solver's update carries
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class Schedule:
    """A sampler as (1)–(3), n network rows (n = T for most samplers; PLMS evaluates T + 1).

    Per row j (shape (n,)): ``timesteps``, the level (``alpha``, ``sigma``) the sampler reads x_{j+1} at,
    and the feature coefficients ``mu``, ``nu``. Per step i: ``p``, ``w`` (n, B), ``c`` and ``draws``
    (step i takes a fresh ξ_i from the generator). ``final_noise`` is the noise level of x_0.
    """

    timesteps: Tensor  # (n,) what the model's ``predict`` receives for row j
    alpha: Tensor  # (n,)
    sigma: Tensor  # (n,)
    mu: Tensor  # (n,)
    nu: Tensor  # (n,)
    p: Tensor  # (n,)
    w: Tensor  # (n, B)
    c: Tensor  # (n,)
    draws: Tensor  # (n,) bool
    final_noise: float
    init_scale: float  # x_T = the drawn (or given) latents × init_scale (e.g. Euler's init_noise_sigma)
    input_scale: float  # x_T = the scheduler's sample at the first step × input_scale (Euler's 1/√(σ² + 1))
    frame: Frame
    prediction_type: str  # what the network's output is: epsilon, v_prediction, sample, flow_prediction
    clip: float | None  # DDIM's clip_sample_range when it clips x̂_0
    clip_weight: Tensor | None  # (n,) κ_i of (2) when it clips
    name: str  # the sampler as people name it: "DPM++ 2M Karras"

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def band(self) -> int:
        """B: the rows one step reads (1: every step reads its own row only)."""
        return int(self.w.shape[1])

    @property
    def a(self) -> Tensor:
        """(3): the coefficient of x_{i+1} with every network output held fixed."""
        return self.p + self.w[:, 0] * self.mu

    def linear_part(self, split: Split) -> Tensor:
        """(4): A (n, B) of ``split``; a coefficient that would read a row past x_T is zero."""
        if split == "published":
            return self.a[:, None]
        if split != "flow":
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        j = torch.arange(self.num_steps, device=self.mu.device)
        kappa = 1 / (self.alpha + self.sigma)
        read_x, read_out = self.reading(j)
        s = self.mu + self.nu * (kappa - read_x) / read_out  # the output's slope when x̂_0's is κ
        s = torch.cat([s, s.new_zeros(self.band - 1)])
        A = self.w * torch.stack([s[b : b + self.num_steps] for b in range(self.band)], 1)
        A[:, 0] += self.p
        return A

    @property
    def noise(self) -> Tensor:
        """(n,) the noise level of x_i (the per-step rule's σ_i): row i − 1's input level, x_0's last."""
        return torch.cat([self.sigma.new_tensor([self.final_noise]), self.sigma[:-1]])

    @property
    def input_noise(self) -> Tensor:
        """(n,) the noise level of x_{i+1}, where row i is evaluated."""
        return self.sigma

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Schedule:
        """A copy on ``device``, every coefficient in ``dtype`` (timesteps keep theirs, draws stay bool)."""
        moved = {
            f.name: getattr(self, f.name).to(device=device, dtype=dtype)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor) and f.name not in ("timesteps", "draws")
        }
        return replace(self, timesteps=self.timesteps.to(device), draws=self.draws.to(device), **moved)

    def _view(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view((-1,) + (1,) * (x.dim() - 1))

    def features(self, j: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """(1) for rows ``j`` (n,) from their inputs ``x`` = x_{j+1} and outputs ``out`` (n, *latent)."""
        return self._view(self.mu[j], x) * x + self._view(self.nu[j], x) * out

    def own(self, i: Tensor, x: Tensor, out: Tensor, f: Tensor, xi: Tensor | None) -> Tensor:
        """(3): the part of d_i that reads row i alone, from x_{i+1} = ``x``, its output and its feature."""
        d = self._view(self.w[i, 0], x) * (f - self._view(self.mu[i], x) * x)
        if xi is not None:
            d = d + self._view(self.c[i], x) * xi
        return d + self.clipped(i, x, out)

    def clipped(self, i: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """κ_i (clip(x̂_0) − x̂_0) of (2) at row i (zero when the sampler does not clip)."""
        if self.clip is None or self.clip_weight is None:
            return torch.zeros_like(x)
        x0 = self.prediction(i, x, out, clip=False)[0]
        return self._view(self.clip_weight[i], x) * (x0.clamp(-self.clip, self.clip) - x0)

    def band_term(self, i: Tensor, above: Tensor) -> Tensor:
        """(3): Σ_{b≥1} w_{i,b} f_{i+b}; ``above`` (n, B − 1, *latent) holds f_{i+1} … f_{i+B−1}."""
        w = self.w[i, 1:].view(*self.w[i, 1:].shape, *(1,) * (above.dim() - 2))
        return (w * above).sum(1)

    def step(self, i: int, x: Tensor, out: Tensor, band: Tensor, xi: Tensor | None) -> Tensor:
        """(2) for one step i: x_{i+1} = ``x``, its output ``out`` and the features f_i … f_{i+B−1} =
        ``band`` (B, *latent), zero beyond x_T. The sequential sampler's own arithmetic."""
        w = self.w[i].view(-1, *(1,) * x.dim())
        new = self.p[i] * x + (w * band).sum(0)
        if self.clip is not None:
            new = new + self.clipped(torch.tensor([i], device=x.device), x[None], out[None])[0]
        return new + self.c[i] * xi if xi is not None and bool(self.draws[i]) else new

    def apply(self, inputs: Tensor, out: Tensor, xi: Tensor | None) -> Tensor:
        """(2) for every step at once: x_i from the inputs x_{i+1} (n, *latent) of a whole trajectory and
        their outputs — what a trajectory must equal, step by step, to be the sampler's."""
        i = torch.arange(self.num_steps, device=inputs.device)
        f = self.features(i, inputs, out)
        x = self._view(self.a, inputs) * inputs + self.own(i, inputs, out, f, xi)
        if self.band == 1:
            return x
        above = [torch.cat([f[b:], f.new_zeros((b, *f.shape[1:]))]) for b in range(1, self.band)]
        return x + self.band_term(i, torch.stack(above, 1))

    def reading(self, j: Tensor) -> tuple[Tensor, Tensor]:
        """(r_x, r_o) per row j: x̂_0 = r_x x_{j+1} + r_o o_j, the output read as ``prediction_type`` says."""
        alpha, sigma = self.alpha[j], self.sigma[j]
        if self.prediction_type == "epsilon":  # x = α x̂_0 + σ ε
            return 1 / alpha, -sigma / alpha
        if self.prediction_type == "v_prediction":  # v = α ε − σ x̂_0, α² + σ² = 1
            return alpha, -sigma
        if self.prediction_type == "flow_prediction":  # v = ε − x̂_0, α = 1 − σ
            return torch.ones_like(alpha), -sigma
        return torch.zeros_like(alpha), torch.ones_like(alpha)  # sample

    def prediction(self, j: Tensor, x: Tensor, out: Tensor, clip: bool = True) -> tuple[Tensor, Tensor]:
        """(x̂_0, ε̂) at row j from x_{j+1} = ``x`` and the network's output, read as ``prediction_type``
        says (x̂_0 clamped when DDIM clips, unless ``clip`` is False); ε̂ from x = α x̂_0 + σ ε̂."""
        alpha, sigma = self._view(self.alpha[j], x), self._view(self.sigma[j], x)
        read_x, read_out = self.reading(j)
        x0 = self._view(read_x, x) * x + self._view(read_out, x) * out
        if self.clip is not None and clip:
            x0 = x0.clamp(-self.clip, self.clip)
        return x0, (x - alpha * x0) / sigma

    def jump(self, j: Tensor, x: Tensor, out: Tensor, level: Tensor) -> Tensor:
        """The state at noise level ``level`` along row j's own prediction: α(level) x̂_0 + level ε̂ — how
        a sampler goes between two noise levels (DDIM's move; the straight line in the flow frame)."""
        x0, eps = self.prediction(j, x, out)
        alpha = 1 - level if self.frame == "flow" else (1 - level**2).clamp_min(0).sqrt()
        return alpha * x0 + level * eps
