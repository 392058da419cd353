"""A 2-D teaching model: eight Gaussian clusters on a ring, with exact ε and a picture of the density.

p_0 = Σ_k (1/8) N(μ_k, s² I), μ_k = R (cos θ_k, sin θ_k), θ_k = 45°·k, each cluster named by its
compass direction. Small enough to watch every trajectory of a sampler on top of p_t.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from paratta.models.mixture import MixtureModel, mask_log_weights, mixture_log_density
from paratta.models.shapes import prompt_words, unknown_words_error
from paratta.registry import BUILTIN_MODELS

CLUSTERS = ("east", "northeast", "north", "northwest", "west", "southwest", "south", "southeast")
ALIASES = {
    "e": "east",
    "ne": "northeast",
    "n": "north",
    "nw": "northwest",
    "w": "west",
    "sw": "southwest",
    "s": "south",
    "se": "southeast",
    "right": "east",
    "top": "north",
    "left": "west",
    "bottom": "south",
}
STOP_WORDS = frozenset(
    {"a", "an", "the", "on", "with", "background", "in", "of", "at", "and", "or", "cluster"}
)
RADIUS = 2.0  # R: ring radius, about two noise stds, so the clusters separate late in sampling
SCALE = 0.25  # s: cluster std
EXTENT = 3.0  # the picture shows [−EXTENT, EXTENT]²
IMAGE_SIZE = 64
# A dark-blue → teal → yellow colour map (a coarse viridis), for the density picture.
_CMAP_STOPS = np.array(
    [[0.07, 0.04, 0.20], [0.13, 0.35, 0.55], [0.15, 0.62, 0.55], [0.55, 0.82, 0.30], [0.99, 0.91, 0.15]]
)


def cluster_means() -> Tensor:
    """μ_k on the ring, (8, 2), x to the right and y up."""
    theta = torch.arange(len(CLUSTERS), dtype=torch.float64) * (2 * math.pi / len(CLUSTERS))
    return RADIUS * torch.stack([theta.cos(), theta.sin()], dim=1)


def vocabulary() -> dict[str, tuple[str, ...]]:
    return {"cluster": CLUSTERS, "ignored": tuple(sorted(STOP_WORDS))}


def parse_prompt(prompt: str) -> set[str]:
    """Cluster names in a prompt (aliases resolved); empty set = every cluster."""
    words = [ALIASES.get(w, w) for w in prompt_words(prompt)]
    unknown = [w for w in words if w not in CLUSTERS and w not in STOP_WORDS]
    if unknown:
        aliases = ", ".join(f"{a}={c}" for a, c in ALIASES.items())
        vocabulary_text = (
            f"cluster: {', '.join(CLUSTERS)}; aliases: {aliases}; ignored: {', '.join(sorted(STOP_WORDS))}"
        )
        raise unknown_words_error(unknown, prompt, vocabulary_text)
    return {w for w in words if w in CLUSTERS}


def grid_points(extent: float, n: int) -> Tensor:
    """The (n·n, 2) points of an n×n picture of [−extent, extent]², row 0 at the top (y = +extent)."""
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * extent - extent
    y, x = torch.meshgrid(c.flip(0), c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → RGB in [0, 1], shape (…, 3)."""
    pos = np.linspace(0, 1, len(_CMAP_STOPS))
    return np.stack([np.interp(values, pos, _CMAP_STOPS[:, ch]) for ch in range(3)], axis=-1)


class Toy2DModel(MixtureModel):
    """Eight labelled 2-D clusters with exact ε; implements ``DiffusionModel`` (latent_shape (2,))."""

    name = "toy2d"
    defaults = BUILTIN_MODELS["toy2d"].defaults
    image_size = (IMAGE_SIZE, IMAGE_SIZE)  # a picture of p_0 with the point on it

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.means = cluster_means()
        super().__init__(self.means, SCALE, device, dtype)
        self.vocabulary = vocabulary()
        self._backdrop = self._density_picture(self.density_grid(1.0, EXTENT, IMAGE_SIZE))

    def _select(self, prompt: str) -> Tensor:
        names = parse_prompt(prompt)
        return mask_log_weights(torch.tensor([not names or c in names for c in CLUSTERS]))

    def density_grid(
        self, t_or_alpha_bar: int | float, extent: float = EXTENT, n: int = 128, prompt: str = ""
    ) -> np.ndarray:
        """log p_t on an n×n grid of [−extent, extent]²: row 0 at y = +extent (top), column 0 at x = −extent.

        An int is a timestep t (ᾱ_t from the schedule); a float is ᾱ itself (1.0 gives p_0).
        """
        if isinstance(t_or_alpha_bar, (int, np.integer)) and not isinstance(t_or_alpha_bar, bool):
            alpha_bar = float(self.alphas_cumprod[int(t_or_alpha_bar)])
        else:
            alpha_bar = float(t_or_alpha_bar)
            if not 0.0 < alpha_bar <= 1.0:
                raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
        log_p = mixture_log_density(grid_points(extent, n), alpha_bar, self.mixture, self._select(prompt))
        return log_p.reshape(n, n).cpu().numpy()

    @staticmethod
    def _density_picture(log_p: np.ndarray) -> np.ndarray:
        """(H, W, 3) picture of a density: colour by √(p / max p), which keeps the tails visible."""
        return colour_map(np.sqrt(np.exp(log_p - log_p.max())))

    def decode(self, x0: Tensor) -> Tensor:
        """Points (n, 2) → (n, 3, 64, 64) pictures of p_0, each point a red dot (clamped to the frame)."""
        points = x0.detach().double().cpu().numpy().reshape(-1, 2)
        c = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE * 2 * EXTENT - EXTENT
        px, py = c[None, None, :], c[::-1][None, :, None]
        inside = np.clip(points, -EXTENT, EXTENT)
        dist = np.hypot(px - inside[:, 0, None, None], py - inside[:, 1, None, None])
        pixel = 2 * EXTENT / IMAGE_SIZE
        alpha = 1 / (1 + np.exp((dist - 2.0 * pixel) / (0.35 * pixel)))  # soft dot of radius 2 pixels
        dot = np.array([0.95, 0.15, 0.1])
        rgb = self._backdrop[None] * (1 - alpha[..., None]) + dot * alpha[..., None]
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).float().clamp(0, 1)

    def preview(self, x0: Tensor) -> Tensor:
        return self.decode(x0)


def build_toy2d_model(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Toy2DModel:
    return Toy2DModel(device=device, dtype=dtype)
