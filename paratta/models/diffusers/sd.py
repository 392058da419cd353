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
from diffusers import StableDiffusionPipeline
from torch import Tensor

from .base import DiffusersModel, pipeline_scheduler_config, resolve_image_size


@dataclass(frozen=True)
class TextCondition:
    """CLIP hidden states (1, L, D) of prompt and negative prompt ("" → the empty-prompt embedding)."""

    prompt_embeds: Tensor
    negative_embeds: Tensor
    prompt: str
    negative_prompt: str


class StableDiffusionModel(DiffusersModel):
    """A ``StableDiffusionPipeline`` (UNet2DConditionModel + VAE + CLIP text encoder) for paratta.

    ``pipe`` is moved to ``device``/``dtype`` (in place, as ``pipe.to`` does). ``height``/``width``
    default to the pipeline's own default (``unet.config.sample_size × vae_scale_factor``).
    """

    pipeline_class = StableDiffusionPipeline
    default_name = "stable-diffusion"
    takes_negative_prompt = True

    def _check_pipeline(self, pipe: Any) -> None:
        super()._check_pipeline(pipe)
        unet_config = pipe.unet.config
        if getattr(unet_config, "time_cond_proj_dim", None) is not None:
            raise ValueError("guidance-embedded UNets (time_cond_proj_dim, e.g. LCM) are not supported")
        if getattr(unet_config, "addition_embed_type", None) is not None:
            raise ValueError(
                f"UNets with addition_embed_type={unet_config.addition_embed_type!r} are not supported"
            )

    def _configure(self, height: int | None = None, width: int | None = None) -> None:
        self.unet = self.pipe.unet.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        unet_config = self.unet.config
        f = self.vae_scale_factor
        # StableDiffusionPipeline.check_inputs takes multiples of 8 pixels, whatever the VAE's factor f.
        height, width = resolve_image_size(height, width, unet_config.sample_size * f, math.lcm(8, f))
        self.latent_shape = (int(unet_config.in_channels), height // f, width // f)
        # Read after the pipeline's __init__, which rewrites steps_offset 0 → 1 and clip_sample → False.
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    def encode(self, prompt: str, negative_prompt: str = "") -> TextCondition:
        """CLIP-encode both prompts with the pipeline's own ``encode_prompt`` (truncation, clip_skip=None)."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be strings")
        with torch.inference_mode():
            cond, uncond = self.pipe.encode_prompt(
                prompt, self.device, 1, True, negative_prompt=negative_prompt or None
            )
        return TextCondition(cond, uncond, prompt, negative_prompt)

    def predict(self, x: Tensor, t: Tensor, cond: TextCondition, guidance: float) -> Tensor:
        """Guided UNet output for n states at n (possibly different) timesteps; 2n rows unless guidance == 1.

        With a float16 model the guidance combination is done in float32 and returned in float32.
        """
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:
            # u + 1·(c − u) = c: the unconditional half is not needed.
            emb = cond.prompt_embeds.expand(n, -1, -1)
            return self._network(lambda: self._unet(x, t, emb), n)
        emb = torch.cat([cond.negative_embeds.expand(n, -1, -1), cond.prompt_embeds.expand(n, -1, -1)])
        out = self._network(lambda: self._unet(torch.cat([x, x]), torch.cat([t, t]), emb), 2 * n)
        uncond, text = out.chunk(2)
        if out.dtype in (torch.float16, torch.bfloat16):
            uncond, text = uncond.float(), text.float()
        return uncond + guidance * (text - uncond)

    def _unet(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
