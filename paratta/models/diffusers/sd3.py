"""Stable Diffusion 3 / 3.5 (rectified-flow MMDiT) as a paratta ``DiffusionModel``.

Sampled as the pipeline samples it: flow-matching Euler (``paratta.samplers.flow``) on the pipeline's own
``FlowMatchEulerDiscreteScheduler`` config, with μ from the image's token count when the config
shifts dynamically. The guided velocity is ``StableDiffusion3Pipeline.__call__``'s:
v = v_u + s·(v_c − v_u) with the unconditional (negative-prompt) and conditional halves in ONE
transformer batch ordered [uncond, cond], the timestep t = σ·N fed as it is. Three text encoders
(two CLIP, T5); a pipeline without T5 (``text_encoder_3=None``) feeds zeros in its place, as
diffusers does. States are the pipeline's own latents (B, C, h, w), so ``--latents`` and
``--output-type latent`` match ``pipe(latents=…, output_type="latent")``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline
from torch import Tensor

from paratta.registry import TEXT_TO_IMAGE_DEFAULTS

from .base import DiffusersModel, pipeline_scheduler_config, resolve_image_size


@dataclass(frozen=True)
class SD3Condition:
    """Joint text embeddings (1, L, D) and pooled embeddings (1, P) of the prompt and the negative prompt."""

    prompt_embeds: Tensor
    negative_embeds: Tensor
    pooled: Tensor
    negative_pooled: Tensor
    prompt: str
    negative_prompt: str


class StableDiffusion3Model(DiffusersModel):
    """A ``StableDiffusion3Pipeline`` (SD3 transformer + VAE + CLIP, CLIP, T5) for paratta.

    ``height``/``width`` default to the pipeline's (``transformer.config.sample_size × vae_scale_factor``);
    ``max_sequence_length`` is the T5 prompt length the pipeline uses (256 by default).
    """

    pipeline_class = StableDiffusion3Pipeline
    default_name = "stable-diffusion-3"
    takes_negative_prompt = True
    defaults = replace(TEXT_TO_IMAGE_DEFAULTS, guidance=7.0, steps=28)  # the pipeline's own

    def _configure(
        self, height: int | None = None, width: int | None = None, max_sequence_length: int = 256
    ) -> None:
        self.transformer = self.pipe.transformer.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        config = self.transformer.config
        f, p = self.vae_scale_factor, int(config.patch_size)
        limit = config.pos_embed_max_size  # patches per side the position table holds
        height, width = resolve_image_size(
            height, width, config.sample_size * f, f * p, limit * p * f if limit else None
        )
        self.latent_shape = (int(config.in_channels), height // f, width // f)
        self.image_seq_len = (height // f // p) * (width // f // p)  # μ's sequence length, as the pipeline's
        self.max_sequence_length = max_sequence_length
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """What the pipeline passes to ``set_timesteps`` besides T: the token count μ is computed from."""
        return {"image_seq_len": self.image_seq_len}

    def encode(self, prompt: str, negative_prompt: str = "") -> SD3Condition:
        """All three encoders on both prompts, by the pipeline's own ``encode_prompt`` (clip_skip=None)."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be strings")
        with torch.inference_mode():
            cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negative_prompt or None,
                max_sequence_length=self.max_sequence_length,
            )
        return SD3Condition(cond, uncond, pooled, uncond_pooled, prompt, negative_prompt)

    def predict(self, x: Tensor, t: Tensor, cond: SD3Condition, guidance: float) -> Tensor:
        """Guided velocity for n states at n timesteps t = σ·N; 2n rows [uncond, cond] unless guidance == 1.

        With a float16/bfloat16 model the guidance combination is done in float32 and returned in float32.
        """
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:  # u + 1·(c − u) = c: the unconditional half is not needed
            emb, pooled = cond.prompt_embeds.expand(n, -1, -1), cond.pooled.expand(n, -1)
            return self._network(lambda: self._velocity(x, t, emb, pooled), n)
        emb = torch.cat([cond.negative_embeds.expand(n, -1, -1), cond.prompt_embeds.expand(n, -1, -1)])
        pooled = torch.cat([cond.negative_pooled.expand(n, -1), cond.pooled.expand(n, -1)])
        out = self._network(lambda: self._velocity(torch.cat([x, x]), torch.cat([t, t]), emb, pooled), 2 * n)
        uncond, text = out.chunk(2)
        if out.dtype in (torch.float16, torch.bfloat16):
            uncond, text = uncond.float(), text.float()
        return uncond + guidance * (text - uncond)

    def _velocity(self, x: Tensor, t: Tensor, emb: Tensor, pooled: Tensor) -> Tensor:
        return self.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=emb,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
