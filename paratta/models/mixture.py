"""The exact ε of a noised isotropic Gaussian mixture: a "network" with no training error.

Data distribution  p_0 = Σ_k π_k N(μ_k, s_k² I)  in D dimensions. The forward process
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε keeps it a mixture:

    p_t = Σ_k π_k N(√ᾱ_t μ_k, v_k I),        v_k = ᾱ_t s_k² + 1 − ᾱ_t

and the ε the network would ideally predict is  ε*(x, t) = −√(1−ᾱ_t) ∇ log p_t(x):

    ε*(x, t) = √(1−ᾱ_t) Σ_k w_k (x − √ᾱ_t μ_k) / v_k
             = √(1−ᾱ_t) (x Σ_k w_k/v_k − √ᾱ_t Σ_k (w_k/v_k) μ_k)

with posterior responsibilities  w_k ∝ π_k N(x; √ᾱ_t μ_k, v_k I)  (a softmax of log-terms).
Squared distances come from ‖x‖² − 2√ᾱ x·μ_k + ᾱ‖μ_k‖² (one matmul), so nothing of size
n × K × D is ever formed. Everything runs in float64 whatever the input dtype.

Weights are given as log-weights so that a condition can drop components with −inf.

The same mixture under the rectified-flow path x_σ = (1 − σ) x_0 + σ ε (SD3, Flux) has the exact
velocity v*(x, σ) = E[ε − x_0 | x_σ = x] = (x − E[x_0 | x]) / σ, since ε = (x_σ − (1 − σ) x_0) / σ.
The path is the DDPM one rescaled: x_σ / r = √ᾱ x_0 + √(1 − ᾱ) ε with r = √((1 − σ)² + σ²) and
√ᾱ = (1 − σ) / r, so the responsibilities and the posterior mean

    E[x_0 | x_t] = Σ_k w_k ((1 − ᾱ) μ_k + √ᾱ s_k² x_t) / v_k        (x_t = x_σ / r)

come from the same distance computation as ε*. A ``MixtureModel`` predicts ε* for DDIM(η) and v*
for flow-matching Euler (``with_family``): the same distribution, sampled by either family.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paratta.protocol import ModelDefaults
from paratta.samplers.ddim import DDIMConfig
from paratta.samplers.grids import alpha_bar_at, alphas_cumprod


def embedded_scheduler_config() -> dict[str, Any]:
    """The DDIMScheduler config of the embedded models: DDPM's linear betas, with SD 1.x's conventions."""
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
    }


def embedded_flow_scheduler_config() -> dict[str, Any]:
    """The flow-matching scheduler of the embedded models: diffusers' defaults, i.e. shift 1 (σ evenly
    spaced from 1 to 1/N, then 0: the plain rectified-flow grid)."""
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}


SCHEDULER_CONFIGS = {"ddim": embedded_scheduler_config, "flow": embedded_flow_scheduler_config}


@dataclass(frozen=True)
class IsotropicMixture:
    """Components of p_0, float64, with ‖μ_k‖² precomputed (the weights live in the condition)."""

    means: Tensor  # μ_k, (K, D)
    variances: Tensor  # s_k², (K,)
    means_sq: Tensor  # ‖μ_k‖², (K,)

    @classmethod
    def create(
        cls, means: Tensor, scales: Tensor | float, device: torch.device | str = "cpu"
    ) -> IsotropicMixture:
        mu = means.reshape(means.shape[0], -1).to(device=device, dtype=torch.float64)
        s = torch.as_tensor(scales, dtype=torch.float64, device=device).expand(mu.shape[0])
        return cls(means=mu, variances=(s**2).contiguous(), means_sq=(mu * mu).sum(1))

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])


def _prepare(x: Tensor, alpha_bar: Tensor | float, mix: IsotropicMixture) -> tuple[Tensor, Tensor]:
    x64 = x.reshape(x.shape[0], -1).to(device=mix.means.device, dtype=torch.float64)
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x64.device).reshape(-1).expand(x64.shape[0])
    return x64, ab


def component_log_likelihoods(x64: Tensor, ab: Tensor, mix: IsotropicMixture) -> tuple[Tensor, Tensor]:
    """log N(x; √ᾱ μ_k, v_k I) and v_k, both (n, K), for float64 x (n, D) and ᾱ (n,)."""
    v = ab[:, None] * mix.variances[None, :] + (1 - ab)[:, None]
    # ‖x − √ᾱ μ‖² by expansion; clamp because round-off can make a tiny distance negative.
    sq = (x64 * x64).sum(1, keepdim=True) - 2 * ab.sqrt()[:, None] * (x64 @ mix.means.T)
    sq = (sq + ab[:, None] * mix.means_sq[None, :]).clamp_min(0)
    return -0.5 * (sq / v + mix.dim * torch.log(2 * math.pi * v)), v


def _check_log_weights(log_weights: Tensor, mix: IsotropicMixture) -> Tensor:
    lw = log_weights.to(device=mix.means.device, dtype=torch.float64)
    if lw.shape[-1] != mix.num_components:
        raise ValueError(f"log_weights has {lw.shape[-1]} entries, the mixture {mix.num_components}")
    if torch.isneginf(lw).all(-1).any():
        raise ValueError("log_weights leave no component with positive weight")
    return lw


def _scaled_responsibilities(
    x: Tensor, alpha_bar: Tensor | float, mix: IsotropicMixture, log_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(x, ᾱ, w_k / v_k): float64 states (n, D), ᾱ (n,) and the responsibilities over the component
    variances, (n, K) or (G, n, K); ε* and E[x_0 | x_t] are both weighted sums with these weights."""
    x64, ab = _prepare(x, alpha_bar, mix)
    lw = _check_log_weights(log_weights, mix)
    log_lik, v = component_log_likelihoods(x64, ab, mix)
    return x64, ab, torch.softmax(lw.unsqueeze(-2) + log_lik, dim=-1) / v


def mixture_eps(
    x: Tensor,
    alpha_bar: Tensor | float,
    mix: IsotropicMixture,
    log_weights: Tensor,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """ε*(x, t) of the module docstring, batched over rows with their own ᾱ_t.

    Args:
        x: states (n, D) (any trailing shape is flattened).
        alpha_bar: ᾱ_t per row, (n,) or a scalar.
        mix: the components.
        log_weights: log π_k, (K,) or (G, K) for G weightings of the same components (e.g. the
            conditional and unconditional halves of guidance) sharing one distance computation.
        out_dtype: output dtype; default x's.

    Returns:
        ε of shape (n, D), or (G, n, D) when log_weights is (G, K).
    """
    x64, ab, u = _scaled_responsibilities(x, alpha_bar, mix, log_weights)
    eps = (1 - ab).sqrt()[:, None] * (x64 * u.sum(-1, keepdim=True) - ab.sqrt()[:, None] * (u @ mix.means))
    return eps.to(out_dtype or x.dtype)


def mixture_x0(
    x: Tensor,
    alpha_bar: Tensor | float,
    mix: IsotropicMixture,
    log_weights: Tensor,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """E[x_0 | x_t] of the module docstring under x_t = √ᾱ x_0 + √(1−ᾱ) ε; shapes as ``mixture_eps``.

    Well defined at ᾱ = 0 (pure noise: the prior mean), where x̂_0 from ε* would divide by √ᾱ.
    """
    x64, ab, u = _scaled_responsibilities(x, alpha_bar, mix, log_weights)
    x0 = (1 - ab)[:, None] * (u @ mix.means) + ab.sqrt()[:, None] * x64 * (u @ mix.variances)[..., None]
    return x0.to(out_dtype or x.dtype)


def mixture_velocity(
    x: Tensor,
    sigma: Tensor | float,
    mix: IsotropicMixture,
    log_weights: Tensor,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """v*(x, σ) = (x − E[x_0 | x_σ = x]) / σ under x_σ = (1 − σ) x_0 + σ ε, for σ in (0, 1], batched
    over rows with their own σ; shapes as ``mixture_eps``."""
    x64 = x.reshape(x.shape[0], -1).to(device=mix.means.device, dtype=torch.float64)
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x64.device).reshape(-1).expand(x64.shape[0])
    r = ((1 - s) ** 2 + s**2).sqrt()  # x_σ / r is the DDPM state at √ᾱ = (1 − σ) / r
    x0 = mixture_x0(x64 / r[:, None], ((1 - s) / r) ** 2, mix, log_weights, out_dtype=torch.float64)
    return ((x64 - x0) / s[:, None]).to(out_dtype or x.dtype)


def guided_mixture_eps(
    x: Tensor, alpha_bar: Tensor, mix: IsotropicMixture, log_weights: Tensor, guidance: float
) -> Tensor:
    """Classifier-free guidance ε_u + s(ε_c − ε_u) with log_weights (2, K) = [conditional, unconditional].

    The unconditional half is skipped when it cannot matter (s = 1, or identical weightings).
    Combined in float64, returned in x's dtype.
    """
    return _guided(mixture_eps, x, alpha_bar, mix, log_weights, guidance)


def guided_mixture_velocity(
    x: Tensor, sigma: Tensor, mix: IsotropicMixture, log_weights: Tensor, guidance: float
) -> Tensor:
    """v_u + s(v_c − v_u), as SD3 guides its velocity; as ``guided_mixture_eps`` otherwise. (v is affine
    in ε at a fixed σ < 1, so this is the same guided field as guidance on ε.)"""
    return _guided(mixture_velocity, x, sigma, mix, log_weights, guidance)


def _guided(
    field: Callable[..., Tensor],
    x: Tensor,
    level: Tensor,
    mix: IsotropicMixture,
    log_weights: Tensor,
    guidance: float,
) -> Tensor:
    if guidance == 1 or torch.equal(log_weights[0], log_weights[1]):
        return field(x, level, mix, log_weights[0])
    cond, uncond = field(x, level, mix, log_weights, out_dtype=torch.float64)
    return (uncond + guidance * (cond - uncond)).to(x.dtype)


def mixture_log_density(
    x: Tensor, alpha_bar: Tensor | float, mix: IsotropicMixture, log_weights: Tensor
) -> Tensor:
    """log p_t(x) = logsumexp_k(log π_k + log N(x; √ᾱ μ_k, v_k I)), π normalised; float64, (n,) or (G, n)."""
    x64, ab = _prepare(x, alpha_bar, mix)
    lw = _check_log_weights(log_weights, mix)
    lw = lw - torch.logsumexp(lw, dim=-1, keepdim=True)
    log_lik, _ = component_log_likelihoods(x64, ab, mix)
    return torch.logsumexp(lw.unsqueeze(-2) + log_lik, dim=-1)


@dataclass(frozen=True)
class MixtureCondition:
    """What ``encode`` returns for a mixture model: log-weights (2, K) = [conditional, unconditional].

    Following Stable Diffusion's negative-prompt convention, the unconditional half is the
    mixture restricted to the negative prompt's components (all of them when it is empty).
    """

    log_weights: Tensor
    prompt: str
    negative_prompt: str

    @property
    def num_matching(self) -> int:
        """Number of components the (positive) prompt keeps."""
        return int(torch.isfinite(self.log_weights[0]).sum())


def mask_log_weights(mask: Tensor) -> Tensor:
    """Uniform log-weights over the components where ``mask`` is True, −inf elsewhere (float64)."""
    return torch.where(mask, 0.0, -math.inf).to(torch.float64)


class MixtureModel:
    """A ``DiffusionModel`` whose ε is a mixture's exact ε: the shared part of the embedded models.

    A subclass sets ``name`` and says which components a prompt keeps (``_select``: log-weights
    over the K means); ε is computed in float64 and returned in the state's dtype. ``with_family("flow")``
    is the same model with the flow-matching scheduler, predicting the exact velocity instead.
    """

    family = "ddim"  # which field ``predict`` returns: ε* (DDIM) or v* (flow matching)

    name = "mixture"
    defaults: ModelDefaults  # each embedded model's own (``paratta.registry.BUILTIN_MODELS``)
    takes_negative_prompt = True
    vocabulary: Mapping[str, tuple[str, ...]] | None = None  # the words its prompts are parsed into
    labels = None
    families = ("ddim", "flow")  # ε* and v* of the same distribution (``with_family``)
    takes_image_size = False
    image_size: tuple[int, int] | None = None
    frames = None
    rows_per_timestep = 1
    classifier_free = True

    def __init__(self, means: Tensor, scale: float, device: torch.device | str, dtype: torch.dtype) -> None:

        self.device, self.dtype = torch.device(device), dtype
        self.latent_shape: tuple[int, ...] = tuple(means.shape[1:])
        self.scale = scale
        self.mixture = IsotropicMixture.create(means, scale, self.device)
        self.scheduler_config = embedded_scheduler_config()
        self.alphas_cumprod = alphas_cumprod(DDIMConfig.from_dict(self.scheduler_config)).to(self.device)
        self._families: dict[str, MixtureModel] = {"ddim": self}  # shared by every view of this mixture

    def with_family(self, family: str) -> MixtureModel:
        """This mixture as sampler family ``family`` ("ddim" or "flow") sees it: a view that shares the
        components and changes only the scheduler config and what ``predict`` returns."""
        if family not in SCHEDULER_CONFIGS:
            raise ValueError(f"family must be one of {', '.join(SCHEDULER_CONFIGS)}; got {family!r}")
        if family not in self._families:
            view = copy.copy(self)
            view.family, view.scheduler_config = family, SCHEDULER_CONFIGS[family]()
            self._families[family] = view
        return self._families[family]

    @property
    def num_components(self) -> int:
        return self.mixture.num_components

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """Nothing beyond the step count: the embedded grids are the schedulers' own."""
        return {}

    def draw_latents(self, generator: torch.Generator | None) -> Tensor:
        """x_T ~ N(0, I), float32 on CPU, as ``torch.randn`` draws it from ``generator``."""
        return torch.randn((1, *self.latent_shape), generator=generator)[0]

    def _select(self, prompt: str) -> Tensor:
        raise NotImplementedError

    def encode(self, prompt: str, negative_prompt: str = "") -> MixtureCondition:
        """Log-weights [prompt's components, negative prompt's components]; ``ValueError`` on bad prompts."""
        log_weights = torch.stack([self._select(prompt), self._select(negative_prompt)]).to(self.device)
        return MixtureCondition(log_weights=log_weights, prompt=prompt, negative_prompt=negative_prompt)

    def predict(self, x: Tensor, t: Tensor, cond: MixtureCondition, guidance: float) -> Tensor:
        """Exact guided ε at timesteps ``t`` (n,), one ᾱ_t per row (integer, or fractional as Euler's
        Karras grids give them); for the flow family the exact guided velocity at t = σ N."""
        flat = x.reshape(x.shape[0], -1)
        t = torch.as_tensor(t, device=self.device).reshape(-1)
        if self.family == "flow":
            sigma = t.double() / self.scheduler_config["num_train_timesteps"]
            out = guided_mixture_velocity(flat, sigma, self.mixture, cond.log_weights, guidance)
        else:  # Euler's fractional timesteps: ᾱ by diffusers' own σ ↔ t interpolation
            alpha_bar = alpha_bar_at(self.alphas_cumprod, t)
            out = guided_mixture_eps(flat, alpha_bar, self.mixture, cond.log_weights, guidance)
        return out.reshape(x.shape).to(x.dtype)


def nearest_component(x: Tensor, mix: IsotropicMixture) -> Tensor:
    """Index of the mean closest to each row of x (n, …): which image a final sample landed on."""
    x64 = x.reshape(x.shape[0], -1).to(device=mix.means.device, dtype=torch.float64)
    sq = mix.means_sq[None, :] - 2 * (x64 @ mix.means.T)  # ‖x − μ‖² − ‖x‖²
    return sq.argmin(1)
