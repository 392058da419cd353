"""A small trained diffusion network: a prompt-conditional pixel-space UNet for the coloured shapes.

Unlike the exact-score mixture (``paratta.models.shapes``), this model's ε comes from a real
network, diffusers' ``UNet2DModel`` (≈1.1 M parameters, 3×32×32 pixels in [−1, 1]), trained by
``python -m paratta.tools.train_unet`` on jittered ``shapes_dataset`` images with the embedded
scheduler's betas, so its samples carry real network error and its trajectories are those of an
actual learned model. The network outputs ε̂ or v̂ (``network_prediction`` in the JSON beside the
weights); ``predict`` always returns ε̂, the embedded scheduler's prediction type, so the DDIM
grid and coefficients are exactly the mixture model's.

Conditioning is by attributes, not text: ``shapes.parse_prompt`` turns the prompt into at most
one value per category (shape, colour, background, size, position); each category has its own
learned embedding table with one extra "unspecified" entry, and the condition vector (the sum
of the five embeddings) is added to the UNet's timestep embedding through ``class_labels``
(``class_embed_type="identity"``). The empty prompt (everything unspecified) is the
unconditional branch of classifier-free guidance; a negative prompt's attributes replace it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from paratta.models.mixture import embedded_scheduler_config
from paratta.models.shapes import BACKGROUNDS, CATEGORIES, COLOURS, POSITIONS, SHAPES, SIZES, parse_prompt
from paratta.registry import BUILTIN_MODELS
from paratta.samplers.ddim import DDIMConfig
from paratta.samplers.grids import alpha_bar_at, alphas_cumprod

NETWORK_PREDICTIONS = ("epsilon", "v_prediction")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "shapes_unet.safetensors"

# The values each attribute embedding knows, in table order; index len(values) is "unspecified".
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}

# UNet2DModel config (diffusers-style, explicit): three resolutions 32 → 16 → 8, one resnet per
# block, self-attention only at 8×8; time embedding dim = 4 × 32 = 128, which is also the
# dimension of the attribute condition fed through ``class_labels``.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 32,
    "add_attention": True,
    "class_embed_type": "identity",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}


def condition_dim(unet_config: dict[str, Any]) -> int:
    """Width of UNet2DModel's time embedding (positional embedding: 4 × first block width)."""
    return 4 * int(unet_config["block_out_channels"][0])


def network_output_to_eps(out: Tensor, x: Tensor, alpha_bar: Tensor, prediction: str) -> Tensor:
    """ε̂ from the raw network output: itself for "epsilon", √ᾱ v̂ + √(1−ᾱ) x_t for "v_prediction".

    ``alpha_bar`` holds ᾱ_t per row (n,). With v̂, x̂_0 = √ᾱ x_t − √(1−ᾱ) v̂ stays bounded at
    high noise, where ε̂ from an ε-network is divided by √ᾱ ≈ 0.007 to give x̂_0.
    """
    if prediction == "epsilon":
        return out
    if prediction != "v_prediction":
        raise ValueError(f"network prediction must be one of {NETWORK_PREDICTIONS}, got {prediction!r}")
    ab = alpha_bar.to(out.dtype).view(-1, *([1] * (out.dim() - 1)))
    return ab.sqrt() * out + (1 - ab).sqrt() * x.to(out.dtype)


class AttributeEncoder(nn.Module):
    """One embedding table per attribute category (+1 "unspecified" row); the condition is their sum."""

    def __init__(self, dim: int, values: dict[str, tuple[str, ...]] | None = None) -> None:
        super().__init__()
        self.values = dict(values or ATTRIBUTE_VALUES)
        self.tables = nn.ModuleDict({c: nn.Embedding(len(v) + 1, dim) for c, v in self.values.items()})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.5)

    def unspecified(self) -> list[int]:
        """Per-category index of the "unspecified" entry, in ``CATEGORIES`` order."""
        return [len(self.values[c]) for c in CATEGORIES]

    def indices(self, attrs: dict[str, str]) -> list[int]:
        """Table indices (``CATEGORIES`` order) for an attribute dict; a missing category is unspecified."""
        return [self.values[c].index(attrs[c]) if c in attrs else len(self.values[c]) for c in CATEGORIES]

    def forward(self, idx: Tensor) -> Tensor:
        """Indices (n, 5) in ``CATEGORIES`` order → condition vectors (n, dim)."""
        return sum(self.tables[c](idx[:, k]) for k, c in enumerate(CATEGORIES))  # type: ignore[return-value]


class ShapesUNetNetwork(nn.Module):
    """UNet2DModel + attribute encoder: the raw network output F(x_t, t, attributes).

    F is ε̂ or v̂ depending on how it was trained (``NETWORK_PREDICTIONS``); ``ShapesUNetModel``
    always turns it into ε̂, the embedded scheduler's prediction type.
    """

    def __init__(self, unet_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.unet_config = dict(unet_config or UNET_CONFIG)
        self.unet = UNet2DModel(**self.unet_config)
        self.encoder = AttributeEncoder(condition_dim(self.unet_config))

    def forward(self, x: Tensor, t: Tensor, idx: Tensor) -> Tensor:
        return self.unet(x, t, class_labels=self.encoder(idx)).sample


def prompt_attributes(prompt: str) -> dict[str, str]:
    """The prompt's attributes, one value per category; ``ValueError`` on unknown words or two values."""
    query = parse_prompt(prompt)
    out: dict[str, str] = {}
    for category, values in query.items():
        if len(values) > 1:
            raise ValueError(
                f"prompt {prompt!r} names several {category} values ({', '.join(sorted(values))}); "
                f"the shapes-unet model takes one {category} per prompt"
            )
        out[category] = next(iter(values))
    return out


@dataclass(frozen=True)
class UNetCondition:
    """What ``ShapesUNetModel.encode`` returns: attribute indices (2, 5) = [conditional, unconditional]."""

    indices: Tensor
    prompt: str
    negative_prompt: str

    @property
    def attributes(self) -> dict[str, str]:
        """The positive prompt's attributes (unspecified categories left out)."""
        return {
            c: ATTRIBUTE_VALUES[c][i]
            for c, i in zip(CATEGORIES, self.indices[0].tolist(), strict=True)
            if i < len(ATTRIBUTE_VALUES[c])
        }


class ShapesUNetModel:
    """The trained shapes UNet; implements ``paratta.protocol.DiffusionModel``."""

    name = "shapes-unet"
    defaults = BUILTIN_MODELS["shapes-unet"].defaults
    takes_negative_prompt = True
    labels = None
    families = ("ddim",)
    takes_image_size = False
    image_size = (32, 32)
    frames = None
    rows_per_timestep = 1
    classifier_free = True

    def __init__(
        self,
        network: ShapesUNetNetwork,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.network = network.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.latent_shape: tuple[int, ...] = (3, 32, 32)
        self.scheduler_config = embedded_scheduler_config()
        self.metadata = dict(metadata or {})
        self.network_prediction: str = self.metadata.get("network_prediction", "epsilon")
        if self.network_prediction not in NETWORK_PREDICTIONS:
            raise ValueError(f"unknown network_prediction {self.network_prediction!r}")
        config = DDIMConfig.from_dict(self.scheduler_config)
        self.alphas_cumprod = alphas_cumprod(config).to(device=self.device, dtype=torch.float32)
        self.vocabulary = dict(ATTRIBUTE_VALUES)

    def encode(self, prompt: str, negative_prompt: str = "") -> UNetCondition:
        """Attribute indices [prompt, negative prompt (empty: unconditional)]; ``ValueError`` on bad ones."""
        enc = self.network.encoder
        rows = [enc.indices(prompt_attributes(prompt)), enc.indices(prompt_attributes(negative_prompt))]
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        return UNetCondition(indices=idx, prompt=prompt, negative_prompt=negative_prompt)

    @torch.no_grad()
    def predict(self, x: Tensor, t: Tensor, cond: UNetCondition, guidance: float) -> Tensor:
        """Guided ε = u + s(c − u) at timesteps ``t`` (n,); both halves in one batch. Fractional t
        (Euler's Karras grids) reach the network as they are, as a diffusers pipeline passes them."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if not torch.is_floating_point(t):
            t = t.long()
        xin = x.to(device=self.device, dtype=self.dtype)
        idx = cond.indices.to(self.device)
        if guidance == 1 or torch.equal(idx[0], idx[1]):
            out = self.network(xin, t, idx[:1].expand(n, -1)).float()
        else:
            both = self.network(torch.cat([xin, xin]), torch.cat([t, t]), idx.repeat_interleave(n, dim=0))
            out_c, out_u = both[:n].float(), both[n:].float()
            out = out_u + guidance * (out_c - out_u)  # ε̂ is affine in the output with the same x_t
        ab = alpha_bar_at(self.alphas_cumprod, t)
        return network_output_to_eps(out, xin.float(), ab, self.network_prediction).to(x.dtype)

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """Nothing beyond the step count: the embedded grid is the scheduler's own."""
        return {}

    def draw_latents(self, generator: torch.Generator | None) -> Tensor:
        """x_T ~ N(0, I), float32 on CPU, as ``torch.randn`` draws it from ``generator``."""
        return torch.randn((1, *self.latent_shape), generator=generator)[0]

    def decode(self, x0: Tensor) -> Tensor:
        return ((x0.detach().float().cpu() + 1) / 2).clamp(0, 1)

    def preview(self, x0: Tensor) -> Tensor:
        return self.decode(x0)


def load_network(path: str | Path = WEIGHTS_PATH) -> tuple[ShapesUNetNetwork, dict[str, Any]]:
    """The network from a safetensors file and the JSON config beside it (same stem, ``.json``)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"shapes-unet weights not found at {path}; train them with "
            "`python -m paratta.tools.train_unet --out paratta/models/weights/shapes_unet.safetensors`"
        )
    meta_path = path.with_suffix(".json")
    metadata: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    unet_config = metadata.get("unet_config", UNET_CONFIG)
    unet_config = {k: tuple(v) if isinstance(v, list) else v for k, v in unet_config.items()}
    network = ShapesUNetNetwork(unet_config)
    network.load_state_dict(load_file(str(path)))
    return network, metadata


def build_shapes_unet_model(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    weights: str | Path = WEIGHTS_PATH,
) -> ShapesUNetModel:
    """The committed trained shapes UNet (``paratta/models/weights/shapes_unet.safetensors``), offline."""
    start = time.perf_counter()
    network, metadata = load_network(weights)
    model = ShapesUNetModel(network, device=device, dtype=dtype, metadata=metadata)
    model.metadata["load_seconds"] = time.perf_counter() - start
    return model
