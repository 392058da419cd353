"""PixArt-α and PixArt-Σ (T5-conditioned DiTs) as paratta ``DiffusionModel``s.

As ``PixArtAlphaPipeline``/``PixArtSigmaPipeline.__call__``: T5 hidden states and their attention mask
for the prompt and the negative prompt in one transformer batch [uncond, cond], guidance u + s·(c − u)
on all output channels, then the learned σ dropped (``out_channels = 2 × in_channels``: the first
half is ε, as the pipeline splits it). With ``use_resolution_binning`` (the pipelines' default) the
size asked is sampled at the nearest size of the transformer's aspect-ratio table, and the decoded
image resized and centre-cropped back to it (``classify_height_width_bin``, ``resize_and_crop_tensor``).
PixArt-α at sample size 128 also feeds the sampled resolution and aspect ratio as micro-conditions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import TEXT_ARGUMENTS, DiffusersModel, Serves, SizeRule, cfg, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class MaskedTextCondition:
    """Hidden states (B, L, D) and attention masks (B, L) of the prompts and the negative prompts."""

    prompt_embeds: Tensor
    prompt_mask: Tensor
    negative_embeds: Tensor
    negative_mask: Tensor


def aspect_ratio_bins(pipeline: str, sample_size: int) -> dict[str, list[float]]:
    """The aspect-ratio table ``pipeline``'s ``__call__`` bins a size with, by its transformer's sample size;
    ``ValueError`` where the pipeline raises "Invalid sample size"."""
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha as alpha
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_sigma as sigma
    from diffusers.pipelines.sana import pipeline_sana as sana

    tables = {
        "PixArtAlphaPipeline": {
            128: alpha.ASPECT_RATIO_1024_BIN, 64: alpha.ASPECT_RATIO_512_BIN, 32: alpha.ASPECT_RATIO_256_BIN,
        },
        "PixArtSigmaPipeline": {
            256: sigma.ASPECT_RATIO_2048_BIN, 128: alpha.ASPECT_RATIO_1024_BIN,
            64: alpha.ASPECT_RATIO_512_BIN, 32: alpha.ASPECT_RATIO_256_BIN,
        },
        "SanaPipeline": {
            128: sana.ASPECT_RATIO_4096_BIN, 64: sigma.ASPECT_RATIO_2048_BIN, 32: alpha.ASPECT_RATIO_1024_BIN,
            16: alpha.ASPECT_RATIO_512_BIN,
        },
    }[pipeline]  # fmt: skip
    if sample_size not in tables:
        raise ValueError(
            f"use_resolution_binning: {pipeline} has no aspect-ratio table for a transformer of sample size "
            f"{sample_size} (it has {', '.join(map(str, tables))}); pass use_resolution_binning=False"
        )
    return tables[sample_size]


class PixArtModel(DiffusersModel):
    """A ``PixArtSigmaPipeline`` or ``PixArtAlphaPipeline`` (PixArt transformer + VAE + T5) for paratta.

    ``height``/``width`` are the size of the images returned (default: the transformer's sample size ×
    ``vae_scale_factor``); with ``use_resolution_binning`` the latents are at the binned size.
    """

    serves = Serves(
        pipelines=("PixArtSigmaPipeline", "PixArtAlphaPipeline"),
        arguments=(
            *TEXT_ARGUMENTS, "eta", "prompt_attention_mask", "negative_prompt_attention_mask",
            "clean_caption", "use_resolution_binning", "max_sequence_length",
        ),
        options=("height", "width", "clean_caption", "use_resolution_binning", "max_sequence_length"),
        guidance="cfg",
        layout="(C, h, w): VAE latents × scaling_factor at the (binned) sampling size",
        draws="randn_tensor((B, C, h, w)) in the text embeddings' dtype at the binned size, "
        "× init_noise_sigma",
    )  # fmt: skip
    default_name = "pixart"
    min_multiple = 8  # what the pipeline's check_inputs takes (after binning)

    @property
    def pipeline_name(self) -> str:
        """The served class this pipeline is (or derives from): its binning table and conditions follow it."""
        served = self.serves.pipelines
        return next(c.__name__ for c in type(self.pipe).__mro__ if c.__name__ in served)

    def size_rule(self) -> SizeRule:
        """Binned: any size (the sampled one is the table's); else multiples of what ``check_inputs`` takes
        and of the transformer's patch."""
        config, f = self.pipe.transformer.config, self.vae_scale_factor
        side = int(config.sample_size) * f
        binned = self.options["use_resolution_binning"]
        return SizeRule(
            (side, side), 1 if binned else math.lcm(self.min_multiple, f * int(config.patch_size))
        )

    def _configure(
        self,
        height: int | None,
        width: int | None,
        clean_caption: bool,
        use_resolution_binning: bool,
        max_sequence_length: int,
        **options: Any,
    ) -> None:
        self.transformer = self.pipe.transformer.eval()
        self.text_encoder = self.pipe.text_encoder.eval()
        config = self.transformer.config
        self.output_size = self.size_rule().resolve(height, width)
        sample = self.output_size
        if use_resolution_binning:
            bins = aspect_ratio_bins(self.pipeline_name, int(config.sample_size))
            sample = self.pipe.image_processor.classify_height_width_bin(*self.output_size, ratios=bins)
        self.sample_size = sample
        f = self.vae_scale_factor
        self.channels = int(config.in_channels)
        self.latent_shape = (self.channels, sample[0] // f, sample[1] // f)
        self.learn_sigma = int(config.out_channels or self.channels) // 2 == self.channels
        self.text_options = {
            "clean_caption": clean_caption,
            "max_sequence_length": max_sequence_length,
            **options,
        }
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.output_size

    def size_of(self, latent_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
        """Binned latents do not say the size asked; unbinned ones do."""
        if self.options["use_resolution_binning"]:
            return None, None
        return super().size_of(latent_shape)

    def condition(self, arguments: dict[str, Any]) -> MaskedTextCondition:
        """T5 on the prompts by the pipeline's own ``encode_prompt`` (its caption cleaning and length)."""
        with torch.inference_mode():
            embeds, mask, negative, negative_mask = self.pipe.encode_prompt(
                arguments.get("prompt"),
                True,
                negative_prompt=arguments.get("negative_prompt", self.call_defaults.get("negative_prompt")),
                num_images_per_prompt=arguments.get("num_images_per_prompt") or 1,
                device=self.device,
                prompt_embeds=arguments.get("prompt_embeds"),
                negative_prompt_embeds=arguments.get("negative_prompt_embeds"),
                prompt_attention_mask=arguments.get("prompt_attention_mask"),
                negative_prompt_attention_mask=arguments.get("negative_prompt_attention_mask"),
                **self.text_options,
            )
        return MaskedTextCondition(embeds, mask, negative, negative_mask)

    def predict(self, x: Tensor, t: Tensor, cond: MaskedTextCondition, guidance: float) -> Tensor:
        """Guided ε for n states at n timesteps; 2n rows [uncond, cond] unless guidance == 1."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        if guidance == 1.0:
            emb, mask = per_row(cond.prompt_embeds, n), per_row(cond.prompt_mask, n)
            return self._split(self._network(lambda: self._transformer(x, t, emb, mask), n))
        emb = torch.cat([per_row(cond.negative_embeds, n), per_row(cond.prompt_embeds, n)])
        mask = torch.cat([per_row(cond.negative_mask, n), per_row(cond.prompt_mask, n)])
        out = self._network(lambda: self._transformer(torch.cat([x, x]), torch.cat([t, t]), emb, mask), 2 * n)
        return self._split(cfg(*out.chunk(2), guidance))

    def _split(self, out: Tensor) -> Tensor:
        """The ε half of a learned-σ output (the pipeline's ``chunk(2, dim=1)[0]``)."""
        return out[:, : self.channels] if self.learn_sigma else out

    def _transformer(self, x: Tensor, t: Tensor, emb: Tensor, mask: Tensor) -> Tensor:
        return self.transformer(
            x,
            encoder_hidden_states=emb,
            encoder_attention_mask=mask,
            timestep=t,
            added_cond_kwargs=self._micro_conditions(x.shape[0], emb.dtype),
            return_dict=False,
        )[0]

    def _micro_conditions(self, rows: int, dtype: torch.dtype) -> dict[str, Tensor | None]:
        """PixArt-α at sample size 128 feeds the sampled (H, W) and H/W as micro-conditions; else none."""
        if self.pipeline_name != "PixArtAlphaPipeline" or self.transformer.config.sample_size != 128:
            return {"resolution": None, "aspect_ratio": None}
        height, width = self.sample_size
        resolution = torch.tensor([height, width], device=self.device, dtype=dtype).repeat(rows, 1)
        aspect_ratio = torch.tensor([float(height / width)], device=self.device, dtype=dtype).repeat(rows, 1)
        return {"resolution": resolution, "aspect_ratio": aspect_ratio}

    def _vae_decode(self, latents: Tensor) -> Tensor:
        """The pipeline's decode: vae.decode(x / scaling_factor), resized and cropped back when binned."""
        with torch.no_grad():
            image = self.vae.decode(
                latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False
            )[0]
        if self.options["use_resolution_binning"]:
            height, width = self.output_size
            image = self.pipe.image_processor.resize_and_crop_tensor(image, width, height)
        return image

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        latents = x0.to(self.device, self.dtype)
        if output_type == "latent":
            return latents
        return self.pipe.image_processor.postprocess(self._vae_decode(latents), output_type=output_type)

    def decode(self, x0: Tensor) -> Tensor:
        with torch.inference_mode():
            image = self._vae_decode(x0.to(self.device, self.dtype))
        return ((image.float().cpu() + 1) / 2).clamp(0, 1)
