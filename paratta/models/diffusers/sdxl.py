"""Stable Diffusion XL as a paratta ``DiffusionModel``.

As ``StableDiffusionXLPipeline.__call__`` conditions its UNet: the two CLIP encoders' hidden states side
by side (cross-attention), the second one's pooled embedding and the six micro-conditions (original
size, crop's top-left corner, target size: ``add_time_ids``, as ``_get_add_time_ids`` forms them; the
negative half with its own when ``negative_original_size`` and ``negative_target_size`` are given) as the
``text_time`` added conditions; guidance and batching as Stable Diffusion's. Its scheduler as the hub
ships it, Euler, is sampled as it is (``paratta.samplers``). The decode is the pipeline's: the VAE's
``latents_mean``/``latents_std`` when set, and a float16 VAE with ``force_upcast`` decoded in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import TEXT_ARGUMENTS, Serves, cfg, per_row
from .sd import StableDiffusionModel

MICRO_CONDITIONS = (
    "original_size", "crops_coords_top_left", "target_size",
    "negative_original_size", "negative_crops_coords_top_left", "negative_target_size",
)  # fmt: skip


@dataclass(frozen=True)
class XLCondition:
    """Hidden states (B, L, D), pooled embeddings (B, P) and micro-conditions (1 or B, 6), each with its
    negative half."""

    prompt_embeds: Tensor
    negative_embeds: Tensor
    pooled: Tensor
    negative_pooled: Tensor
    time_ids: Tensor
    negative_time_ids: Tensor


def xl_embeddings(pipe: Any, arguments: dict[str, Any], device: torch.device) -> tuple[Tensor, ...]:
    """(prompt, negative, pooled, negative pooled) as the SDXL pipelines' ``__call__`` forms them."""
    with torch.inference_mode():
        return pipe.encode_prompt(
            prompt=arguments.get("prompt"),
            prompt_2=arguments.get("prompt_2"),
            device=device,
            num_images_per_prompt=arguments.get("num_images_per_prompt") or 1,
            do_classifier_free_guidance=True,
            negative_prompt=arguments.get("negative_prompt"),
            negative_prompt_2=arguments.get("negative_prompt_2"),
            prompt_embeds=arguments.get("prompt_embeds"),
            negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
            pooled_prompt_embeds=arguments.get("pooled_prompt_embeds"),
            negative_pooled_prompt_embeds=arguments.get("negative_pooled_prompt_embeds"),
        )


def projection_dim(pipe: Any, pooled: Tensor) -> int:
    """The pooled width ``_get_add_time_ids`` checks: text_encoder_2's projection, else the pooled's own."""
    encoder = pipe.text_encoder_2
    return int(pooled.shape[-1]) if encoder is None else int(encoder.config.projection_dim)


def xl_decode(pipe: Any, latents: Tensor) -> Tensor:
    """The SDXL pipelines' decode: latents · std / scaling_factor + mean when the VAE states them, else
    / scaling_factor; a float16 VAE with ``force_upcast`` runs in float32 and is cast back."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(dtype=torch.float32)
        latents = latents.to(torch.float32)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        view = (1, -1, 1, 1)
        mean = torch.tensor(mean).view(view).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(view).to(latents.device, latents.dtype)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    return image


class StableDiffusionXLModel(StableDiffusionModel):
    """A ``StableDiffusionXLPipeline`` (UNet with ``text_time`` conditions, two CLIP encoders, VAE)."""

    serves = Serves(
        pipelines=("StableDiffusionXLPipeline",),
        arguments=(
            *TEXT_ARGUMENTS, "eta", "prompt_2", "negative_prompt_2", "pooled_prompt_embeds",
            "negative_pooled_prompt_embeds", *MICRO_CONDITIONS,
        ),
        options=("height", "width", *MICRO_CONDITIONS),
        guidance="cfg",
        layout="(C, h, w): UNet-space latents (the VAE's × scaling_factor)",
        draws="randn_tensor((B, C, H/f, W/f)) in the text embeddings' dtype, × init_noise_sigma",
    )  # fmt: skip
    default_name = "stable-diffusion-xl"

    @classmethod
    def check(cls, pipe: Any) -> None:
        unet_config = pipe.unet.config
        if unet_config.get("addition_embed_type") != "text_time":
            raise ValueError(
                f"{type(pipe).__name__}: its UNet's addition_embed_type is "
                f"{unet_config.get('addition_embed_type')!r}; SDXL's adapter takes 'text_time'"
            )
        if unet_config.get("time_cond_proj_dim") is not None:
            raise ValueError(
                f"{type(pipe).__name__}: guidance-embedded UNets (time_cond_proj_dim, e.g. LCM) "
                "are not supported"
            )

    def _configure(self, height: int | None, width: int | None, **micro: Any) -> None:
        super()._configure(height, width)
        self.micro = micro

    def condition(self, arguments: dict[str, Any]) -> XLCondition:
        embeds, negative, pooled, negative_pooled = xl_embeddings(self.pipe, arguments, self.device)
        ids, negative_ids = self._time_ids(embeds, projection_dim(self.pipe, pooled))
        ids, negative_ids = self._rows(ids, negative_ids, embeds.shape[0])
        return XLCondition(embeds, negative, pooled, negative_pooled, ids, negative_ids)

    def _time_ids(self, embeds: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """(positive, negative) micro-conditions by the pipeline's ``_get_add_time_ids``: original and target
        size default to the image's; the negative half has its own only when both its sizes are given."""
        size, micro = self.image_size, self.micro
        original, target = micro["original_size"] or size, micro["target_size"] or size

        def time_ids(original: Any, crop: Any, target: Any) -> Tensor:
            ids = self.pipe._get_add_time_ids(
                tuple(original),
                tuple(crop),
                tuple(target),
                dtype=embeds.dtype,
                text_encoder_projection_dim=dim,
            )
            return ids.to(self.device)

        ids = time_ids(original, micro["crops_coords_top_left"], target)
        if micro["negative_original_size"] is None or micro["negative_target_size"] is None:
            return ids, ids
        negative = micro["negative_crops_coords_top_left"]
        return ids, time_ids(micro["negative_original_size"], negative, micro["negative_target_size"])

    @staticmethod
    def _rows(ids: Tensor, negative_ids: Tensor, images: int) -> tuple[Tensor, Tensor]:
        """Each image's (positive, negative) ids as the pipeline's rows carry them: it repeats the pair
        [negative, positive] over its 2B rows [uncond × B, cond × B], so uncond row b takes pair[b mod 2]
        and cond row b pair[(B + b) mod 2] (the same as the halves when they are equal or B = 1)."""
        if images == 1 or torch.equal(ids, negative_ids):
            return ids, negative_ids
        pair, rows = torch.cat([negative_ids, ids]), torch.arange(images, device=ids.device)
        return pair[(images + rows) % 2], pair[rows % 2]

    def predict(self, x: Tensor, t: Tensor, cond: XLCondition, guidance: float) -> Tensor:
        """Guided UNet output for n states at n timesteps; 2n rows [uncond, cond] unless guidance == 1."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:
            parts = (cond.prompt_embeds, cond.pooled, cond.time_ids)
            emb, pooled, ids = (per_row(v, n) for v in parts)
            return self._network(lambda: self._unet_xl(x, t, emb, pooled, ids), n)
        halves = [
            (cond.negative_embeds, cond.prompt_embeds),
            (cond.negative_pooled, cond.pooled),
            (cond.negative_time_ids, cond.time_ids),
        ]
        emb, pooled, ids = (torch.cat([per_row(u, n), per_row(c, n)]) for u, c in halves)
        out = self._network(
            lambda: self._unet_xl(torch.cat([x, x]), torch.cat([t, t]), emb, pooled, ids), 2 * n
        )
        return cfg(*out.chunk(2), guidance)

    def _unet_xl(self, x: Tensor, t: Tensor, emb: Tensor, pooled: Tensor, ids: Tensor) -> Tensor:
        added = {"text_embeds": pooled, "time_ids": ids}
        return self.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added, return_dict=False)[0]

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        latents = x0.to(self.device, self.dtype)
        if output_type == "latent":
            return latents
        return self.pipe.image_processor.postprocess(xl_decode(self.pipe, latents), output_type=output_type)

    def decode(self, x0: Tensor) -> Tensor:
        """The pipeline's decode (``xl_decode``), as (n, 3, H, W) float32 CPU in [0, 1]."""
        with torch.inference_mode():
            image = xl_decode(self.pipe, x0.to(self.device, self.dtype))
        return ((image.float().cpu() + 1) / 2).clamp(0, 1)
