"""Flux.1 (rectified-flow transformer with embedded guidance) as a paratta ``DiffusionModel``.

Sampled as ``FluxPipeline.__call__`` samples it: flow-matching Euler (``paratta.samplers.flow``) on the
pipeline's custom grid σ = linspace(1, 1/T, T), shifted by μ from the packed token count, with the
timestep fed as t/1000 in the latents' dtype. Guidance is *embedded* (Flux-dev: the transformer
takes the scale as an input), so one row per timestep; a transformer without ``guidance_embeds``
(Flux-schnell) ignores the scale. The pipeline's true CFG (``true_cfg_scale`` with a negative
prompt) is not offered. States are the pipeline's own *packed* latents, (h/2 · w/2, 4C) per image
(2×2 patches), so ``--latents`` and ``--output-type latent`` match
``pipe(latents=…, output_type="latent")``; ``decode`` unpacks before the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from paratta.registry import TEXT_TO_IMAGE_DEFAULTS

from .base import DiffusersModel, Serves, SizeRule, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class FluxCondition:
    """T5 embeddings (B, L, D), the pooled CLIP embeddings (B, P) and the text position ids (L, 3)."""

    prompt_embeds: Tensor
    pooled: Tensor
    text_ids: Tensor


class FluxModel(DiffusersModel):
    """A ``FluxPipeline`` (Flux transformer + VAE + CLIP + T5) for paratta.

    ``height``/``width`` default to the pipeline's (128 × ``vae_scale_factor``, 1024 px for Flux.1) and
    must be multiples of 2·``vae_scale_factor``; ``max_sequence_length`` is the T5 prompt length (512).
    """

    serves = Serves(
        pipelines=("FluxPipeline",),
        arguments=(
            "prompt", "prompt_2", "num_inference_steps", "guidance_scale", "num_images_per_prompt",
            "generator", "latents", "prompt_embeds", "pooled_prompt_embeds", "output_type", "height", "width",
            "max_sequence_length",
        ),
        options=("height", "width", "max_sequence_length"),
        guidance="embedded",
        layout="(h/2 · w/2, 4C): the pipeline's packed latents (2×2 patches)",
        draws="randn_tensor((B, C, H/f, W/f)) in the text embeddings' dtype, then packed",
    )  # fmt: skip
    default_name = "flux"
    takes_negative_prompt = False

    def size_rule(self) -> SizeRule:
        f = self.vae_scale_factor
        side = self.pipe.default_sample_size * f
        return SizeRule((side, side), 2 * f)

    def _configure(self, height: int | None, width: int | None, max_sequence_length: int) -> None:
        self.transformer = self.pipe.transformer.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        f = self.vae_scale_factor
        height, width = self.size_rule().resolve(height, width)
        self.height, self.width = height, width
        rows, cols = height // f // 2, width // f // 2  # tokens: one per 2×2 latent patch
        self.latent_shape = (rows * cols, int(self.transformer.config.in_channels))
        self.image_seq_len = rows * cols
        self.image_ids = self.pipe._prepare_latent_image_ids(1, rows, cols, self.device, self.dtype)
        self.guidance_embeds = bool(self.transformer.config.guidance_embeds)
        self.max_sequence_length = max_sequence_length
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)
        # The pipeline's defaults: Flux-dev 3.5 and 28 steps; without embedded guidance (Flux-schnell,
        # distilled to few steps) the scale means nothing.
        guidance, steps = (3.5, 28) if self.guidance_embeds else (1.0, 4)
        self.defaults = replace(TEXT_TO_IMAGE_DEFAULTS, guidance=guidance, steps=steps)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width

    def size_of(self, latent_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
        """Packed latents do not say their height and width: (None, None)."""
        return None, None

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """What ``FluxPipeline`` passes to ``set_timesteps``: its custom grid and the token count for μ."""
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "image_seq_len": self.image_seq_len}

    def condition(self, arguments: dict[str, Any]) -> FluxCondition:
        """CLIP (pooled) and T5 on the prompts, by the pipeline's ``encode_prompt``."""
        with torch.inference_mode():
            embeds, pooled, text_ids = self.pipe.encode_prompt(
                prompt=arguments.get("prompt"),
                prompt_2=arguments.get("prompt_2"),
                device=self.device,
                num_images_per_prompt=arguments.get("num_images_per_prompt") or 1,
                prompt_embeds=arguments.get("prompt_embeds"),
                pooled_prompt_embeds=arguments.get("pooled_prompt_embeds"),
                max_sequence_length=self.max_sequence_length,
            )
        return FluxCondition(embeds, pooled, text_ids)

    def predict(self, x: Tensor, t: Tensor, cond: FluxCondition, guidance: float) -> Tensor:
        """Velocity for n packed states at n timesteps t = σ·N: one row each, the scale embedded."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n).to(x.dtype)
        scale = (
            torch.full((n,), guidance, device=self.device, dtype=torch.float32)
            if self.guidance_embeds
            else None
        )
        return self._network(
            lambda: self.transformer(
                hidden_states=x,
                timestep=t / 1000,
                guidance=scale,
                pooled_projections=per_row(cond.pooled, n),
                encoder_hidden_states=per_row(cond.prompt_embeds, n),
                txt_ids=cond.text_ids,
                img_ids=self.image_ids,
                return_dict=False,
            )[0],
            n,
            "Use a smaller window or set max_batch.",
        )

    def draw_batch(self, generator: Any, count: int) -> Tensor:
        """x_T as ``FluxPipeline.prepare_latents`` draws it: N(0, I) in the unpacked layout (B, C, h, w), in
        the model's dtype, then packed into (B, tokens, 4C); float32 on CPU."""
        from diffusers.utils.torch_utils import randn_tensor

        channels = self.latent_shape[1] // 4
        h, w = self.height // self.vae_scale_factor, self.width // self.vae_scale_factor
        noise = randn_tensor(
            (count, channels, h, w), generator=generator, device=self.device, dtype=self.dtype
        )
        return self.pipe._pack_latents(noise, count, channels, h, w).to("cpu", torch.float32)

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        """``FluxPipeline``'s ``images``: the packed latents for ``"latent"``, else unpacked and decoded."""
        if output_type == "latent":
            return x0.to(self.device, self.dtype)
        return super().pipeline_output(self.unpack(x0.to(self.device, self.dtype)), output_type)

    def unpack(self, x: Tensor) -> Tensor:
        """Packed states (n, tokens, 4C) → VAE latents (n, C, h, w), as the pipeline unpacks them."""
        return self.pipe._unpack_latents(x, self.height, self.width, self.vae_scale_factor)

    def decode(self, x0: Tensor) -> Tensor:
        return super().decode(self.unpack(x0))

    def preview(self, x0: Tensor) -> Tensor:
        return super().preview(self.unpack(x0))
