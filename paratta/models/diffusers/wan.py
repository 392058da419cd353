"""Wan 2.1 text-to-video as a paratta ``DiffusionModel``: 5-D latents, frames out.

As ``WanPipeline.__call__``: umT5 hidden states for the prompt and the negative prompt, the transformer
at t (σ·N of its flow-matching scheduler) on the float32 latents cast to its dtype, guidance
u + s·(c − u) (the pipeline runs the halves as two calls; here one batch [uncond, cond], equal up to
round-off). A state is (C, F, h, w): F = (frames − 1)/4 + 1 latent frames (``num_frames`` rounded to
4k + 1, and the size down to the patch grid, as the pipeline rounds them), drawn in float32. The
decode is the pipeline's: latents · std + mean per channel, the causal video VAE, ``postprocess_video``
(``frames``: (B, F, H, W, 3) for "np"). Wan ships UniPC on flow σ; paratta's flow-matching Euler is
exact for a pipeline given a ``FlowMatchEulerDiscreteScheduler``. Wan 2.2's two transformers
(``boundary_ratio``) and ``expand_timesteps`` are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import DiffusersModel, Serves, SizeRule, cfg, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class VideoTextCondition:
    """umT5 hidden states (B, L, D) of the prompts and of the negative prompts."""

    prompt_embeds: Tensor
    negative_embeds: Tensor


class WanModel(DiffusersModel):
    """A ``WanPipeline`` (Wan 2.1: one ``WanTransformer3DModel``, ``AutoencoderKLWan``, umT5) for paratta."""

    serves = Serves(
        pipelines=("WanPipeline",),
        arguments=(
            "prompt", "negative_prompt", "height", "width", "num_frames", "num_inference_steps",
            "guidance_scale", "num_videos_per_prompt", "generator", "latents", "prompt_embeds",
            "negative_prompt_embeds", "output_type", "max_sequence_length",
        ),
        options=("height", "width", "num_frames", "max_sequence_length"),
        guidance="cfg",
        layout="(C, F, h, w): video latents, F = (frames − 1)/4 + 1 (normalised by the VAE's mean and std)",
        draws="randn_tensor((B, C, F, h, w)) in float32",
        output="frames",
    )  # fmt: skip
    default_name = "wan"
    latent_dtype = torch.float32

    @classmethod
    def check(cls, pipe: Any) -> None:
        if pipe.config.get("boundary_ratio") is not None or pipe.transformer_2 is not None:
            raise ValueError(
                f"{type(pipe).__name__}: this adapter serves Wan 2.1 (one transformer); Wan 2.2's "
                "boundary_ratio switches to transformer_2 along the trajectory, which it does not reproduce"
            )
        if pipe.config.get("expand_timesteps"):
            raise ValueError(
                f"{type(pipe).__name__}: expand_timesteps (Wan 2.2 TI2V's per-token timesteps) "
                "is not reproduced"
            )

    @property
    def vae_scale_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    def size_rule(self) -> SizeRule:
        return SizeRule((self.call_defaults["height"], self.call_defaults["width"]), 16)  # check_inputs

    def _configure(
        self, height: int | None, width: int | None, num_frames: int, max_sequence_length: int
    ) -> None:
        self.transformer = self.pipe.transformer.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        height, width = self.size_rule().resolve(height, width)
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer; got {num_frames!r}")
        temporal = int(self.vae.config.scale_factor_temporal)
        if num_frames % temporal != 1:  # the pipeline rounds to the nearest 4k + 1 below, and warns
            num_frames = num_frames // temporal * temporal + 1
        self.frames = max(num_frames, 1)
        _, ph, pw = self.transformer.config.patch_size  # the pipeline rounds the size down to the patch grid
        f = self.vae_scale_factor
        height, width = height // (f * ph) * (f * ph), width // (f * pw) * (f * pw)
        self.height, self.width = height, width
        latent_frames = (self.frames - 1) // temporal + 1
        self.latent_shape = (int(self.transformer.config.in_channels), latent_frames, height // f, width // f)
        self.max_sequence_length = max_sequence_length
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width

    def condition(self, arguments: dict[str, Any]) -> VideoTextCondition:
        """umT5 on the prompts by the pipeline's own ``encode_prompt``, cast to the transformer's dtype."""
        with torch.inference_mode():
            embeds, negative = self.pipe.encode_prompt(
                prompt=arguments.get("prompt"),
                negative_prompt=arguments.get("negative_prompt"),
                do_classifier_free_guidance=True,
                num_videos_per_prompt=arguments.get("num_videos_per_prompt") or 1,
                prompt_embeds=arguments.get("prompt_embeds"),
                negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
                max_sequence_length=self.max_sequence_length,
                device=self.device,
            )
        dtype = self.transformer.dtype
        return VideoTextCondition(embeds.to(dtype), negative.to(dtype))  # negative: "" when not given

    def predict(self, x: Tensor, t: Tensor, cond: VideoTextCondition, guidance: float) -> Tensor:
        """Guided velocity for n video states at n timesteps t = σ·N; 2n rows [uncond, cond] unless s = 1."""
        n = x.shape[0]
        x = x.to(self.transformer.dtype)
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:
            emb = per_row(cond.prompt_embeds, n)
            return self._network(lambda: self._velocity(x, t, emb), n)
        emb = torch.cat([per_row(cond.negative_embeds, n), per_row(cond.prompt_embeds, n)])
        out = self._network(lambda: self._velocity(torch.cat([x, x]), torch.cat([t, t]), emb), 2 * n)
        return cfg(*out.chunk(2), guidance)

    def _velocity(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]

    def _vae_decode(self, latents: Tensor) -> Tensor:
        """The pipeline's decode: latents · std + mean per channel, then the video VAE: (n, 3, F, H, W)."""
        vae = self.vae
        latents = latents.to(self.device, vae.dtype)
        view = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(view).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(view).to(latents.device, latents.dtype)
        with torch.no_grad():
            return vae.decode(latents / inverse_std + mean, return_dict=False)[0]

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        """``WanPipeline``'s ``frames``: its latents for "latent", else ``postprocess_video`` of a decode."""
        if output_type == "latent":
            return x0.to(self.device, torch.float32)
        return self.pipe.video_processor.postprocess_video(self._vae_decode(x0), output_type=output_type)

    def decode(self, x0: Tensor) -> Tensor:
        """Frames of each video: (n, F, 3, H, W) float32 CPU in [0, 1]."""
        with torch.inference_mode():
            video = self._vae_decode(x0)
        return ((video.float().cpu().permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

    def preview(self, x0: Tensor) -> Tensor:
        """The full decode (no linear map is published for Wan's 16 channels)."""
        return self.decode(x0)
