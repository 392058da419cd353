"""Stable Diffusion (1.x, 2.x incl. v-prediction) as a paratta ``DiffusionModel``.

The guided output is the pipeline's own:  o = o_u + s·(o_c − o_u), with the unconditional
(negative-prompt) and conditional halves in ONE UNet batch ordered [uncond, cond], as
``StableDiffusionPipeline.__call__`` orders them. The states are UNet-space latents
(VAE latents × ``scaling_factor``), so x_T ~ N(0, I) exactly as the pipeline draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import TEXT_ARGUMENTS, DiffusersModel, Serves, SizeRule, cfg, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class TextCondition:
    """Text-encoder hidden states (B, L, D) of the prompts and of the negative prompts, one per image."""

    prompt_embeds: Tensor
    negative_embeds: Tensor


def text_embeddings(pipe: Any, arguments: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
    """(prompt, negative) embeddings as ``StableDiffusionPipeline.__call__`` forms them: its own
    ``encode_prompt`` with classifier-free guidance on (the negative half is used only when s > 1)."""
    with torch.inference_mode():
        return pipe.encode_prompt(
            arguments.get("prompt"),
            device,
            arguments.get("num_images_per_prompt") or 1,
            True,
            arguments.get("negative_prompt"),
            prompt_embeds=arguments.get("prompt_embeds"),
            negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
        )


class StableDiffusionModel(DiffusersModel):
    """A ``StableDiffusionPipeline`` (UNet2DConditionModel + VAE + CLIP text encoder) for paratta.

    ``height``/``width`` default to the pipeline's (``unet.config.sample_size × vae_scale_factor``).
    """

    serves = Serves(
        pipelines=("StableDiffusionPipeline",),
        arguments=(*TEXT_ARGUMENTS, "eta"),
        options=("height", "width"),
        guidance="cfg",
        layout="(C, h, w): UNet-space latents (the VAE's × scaling_factor)",
        draws="randn_tensor((B, C, H/f, W/f)) in the text embeddings' dtype, × init_noise_sigma",
    )
    default_name = "stable-diffusion"

    @classmethod
    def check(cls, pipe: Any) -> None:
        unet_config = pipe.unet.config
        if unet_config.get("time_cond_proj_dim") is not None:
            raise ValueError(
                f"{type(pipe).__name__}: guidance-embedded UNets (time_cond_proj_dim, e.g. LCM) "
                "are not supported"
            )
        if unet_config.get("addition_embed_type") is not None:
            raise ValueError(
                f"{type(pipe).__name__}: UNets with addition_embed_type="
                f"{unet_config.addition_embed_type!r} are not supported by StableDiffusionPipeline's adapter"
            )

    def size_rule(self) -> SizeRule:
        f = self.vae_scale_factor  # check_inputs takes multiples of 8 pixels, whatever f
        side = self.pipe.unet.config.sample_size * f
        return SizeRule((side, side), math.lcm(8, f))

    def _configure(self, height: int | None, width: int | None) -> None:
        self.unet = self.pipe.unet.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        height, width = self.size_rule().resolve(height, width)
        f = self.vae_scale_factor
        self.latent_shape = (int(self.unet.config.in_channels), height // f, width // f)
        # Read after the pipeline's __init__, which rewrites steps_offset 0 → 1 and clip_sample → False.
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    def condition(self, arguments: dict[str, Any]) -> TextCondition:
        return TextCondition(*text_embeddings(self.pipe, arguments, self.device))

    def predict(self, x: Tensor, t: Tensor, cond: TextCondition, guidance: float) -> Tensor:
        """Guided UNet output for n states at n (possibly different) timesteps; 2n rows unless guidance == 1.

        With a float16 model the guidance combination is done in float32 and returned in float32.
        """
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:  # u + 1·(c − u) = c: the unconditional half is not needed
            emb = per_row(cond.prompt_embeds, n)
            return self._network(lambda: self._unet(x, t, emb), n)
        emb = torch.cat([per_row(cond.negative_embeds, n), per_row(cond.prompt_embeds, n)])
        out = self._network(lambda: self._unet(torch.cat([x, x]), torch.cat([t, t]), emb), 2 * n)
        return cfg(*out.chunk(2), guidance)

    def _unet(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
