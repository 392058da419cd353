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
from torch import Tensor

from paratta.registry import TEXT_TO_IMAGE_DEFAULTS

from .base import TEXT_ARGUMENTS, DiffusersModel, Serves, SizeRule, cfg, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class SD3Condition:
    """Joint text embeddings (B, L, D) and pooled embeddings (B, P) of the prompts and negative prompts."""

    prompt_embeds: Tensor
    negative_embeds: Tensor
    pooled: Tensor
    negative_pooled: Tensor


class StableDiffusion3Model(DiffusersModel):
    """A ``StableDiffusion3Pipeline`` (SD3 transformer + VAE + CLIP, CLIP, T5) for paratta; SD 3.5 (RMS
    query/key norms, dual-attention layers) is the same pipeline class and is served as it is.

    ``height``/``width`` default to the pipeline's (``transformer.config.sample_size × vae_scale_factor``);
    ``max_sequence_length`` is the T5 prompt length the pipeline uses (256 by default).
    """

    serves = Serves(
        pipelines=("StableDiffusion3Pipeline",),
        arguments=(
            *TEXT_ARGUMENTS, "prompt_2", "prompt_3", "negative_prompt_2", "negative_prompt_3",
            "pooled_prompt_embeds", "negative_pooled_prompt_embeds", "max_sequence_length",
        ),
        options=("height", "width", "max_sequence_length"),
        guidance="cfg",
        layout="(C, h, w): the pipeline's latents (the VAE's − shift_factor, × scaling_factor)",
        draws="randn_tensor((B, C, H/f, W/f)) in the text embeddings' dtype",
    )  # fmt: skip
    default_name = "stable-diffusion-3"
    defaults = replace(TEXT_TO_IMAGE_DEFAULTS, guidance=7.0, steps=28)  # the pipeline's own

    def size_rule(self) -> SizeRule:
        config = self.pipe.transformer.config
        f, p = self.vae_scale_factor, int(config.patch_size)
        limit = config.pos_embed_max_size  # patches per side the position table holds
        side = config.sample_size * f
        return SizeRule((side, side), f * p, limit * p * f if limit else None)

    def _configure(self, height: int | None, width: int | None, max_sequence_length: int) -> None:
        self.transformer = self.pipe.transformer.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        config = self.transformer.config
        height, width = self.size_rule().resolve(height, width)
        f, p = self.vae_scale_factor, int(config.patch_size)
        self.latent_shape = (int(config.in_channels), height // f, width // f)
        self.image_seq_len = (height // f // p) * (width // f // p)  # μ's sequence length, as the pipeline's
        self.max_sequence_length = max_sequence_length
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    def schedule_arguments(self, steps: int) -> dict[str, Any]:
        """What the pipeline passes to ``set_timesteps`` besides T: the token count μ is computed from."""
        return {"image_seq_len": self.image_seq_len}

    def condition(self, arguments: dict[str, Any]) -> SD3Condition:
        """All three encoders on the prompts, by the pipeline's own ``encode_prompt`` (clip_skip=None)."""
        with torch.inference_mode():
            embeds = self.pipe.encode_prompt(
                prompt=arguments.get("prompt"),
                prompt_2=arguments.get("prompt_2"),
                prompt_3=arguments.get("prompt_3"),
                device=self.device,
                num_images_per_prompt=arguments.get("num_images_per_prompt") or 1,
                do_classifier_free_guidance=True,
                negative_prompt=arguments.get("negative_prompt"),
                negative_prompt_2=arguments.get("negative_prompt_2"),
                negative_prompt_3=arguments.get("negative_prompt_3"),
                prompt_embeds=arguments.get("prompt_embeds"),
                negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
                pooled_prompt_embeds=arguments.get("pooled_prompt_embeds"),
                negative_pooled_prompt_embeds=arguments.get("negative_pooled_prompt_embeds"),
                max_sequence_length=self.max_sequence_length,
            )
        cond, uncond, pooled, uncond_pooled = embeds
        return SD3Condition(cond, uncond, pooled, uncond_pooled)

    def predict(self, x: Tensor, t: Tensor, cond: SD3Condition, guidance: float) -> Tensor:
        """Guided velocity for n states at n timesteps t = σ·N; 2n rows [uncond, cond] unless guidance == 1.

        With a float16/bfloat16 model the guidance combination is done in float32 and returned in float32.
        """
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:  # u + 1·(c − u) = c: the unconditional half is not needed
            emb, pooled = per_row(cond.prompt_embeds, n), per_row(cond.pooled, n)
            return self._network(lambda: self._velocity(x, t, emb, pooled), n)
        emb = torch.cat([per_row(cond.negative_embeds, n), per_row(cond.prompt_embeds, n)])
        pooled = torch.cat([per_row(cond.negative_pooled, n), per_row(cond.pooled, n)])
        out = self._network(lambda: self._velocity(torch.cat([x, x]), torch.cat([t, t]), emb, pooled), 2 * n)
        return cfg(*out.chunk(2), guidance)

    def _velocity(self, x: Tensor, t: Tensor, emb: Tensor, pooled: Tensor) -> Tensor:
        return self.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=emb,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
