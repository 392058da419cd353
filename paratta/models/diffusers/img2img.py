"""Image-to-image for Stable Diffusion and SDXL: the system over the pipeline's last steps.

``pipe(prompt, image=…, strength=s, num_inference_steps=T)`` runs the last k = min(⌊T·s⌋, T) steps of
its scheduler's T-step grid (``get_timesteps``: from step T − k), from the encoded image noised to the
first of them (``prepare_latents``: the VAE's sample drawn from the generator, then one noise draw, then
the scheduler's ``add_noise``). Those k steps are a triangular system like any other: its x_T is that
noised latent (carried into the solver's space by ``Schedule.input_scale``), its steps the sampler's
from step T − k (``paratta.samplers.coefficients(..., begin=T − k)``, which restarts a multistep
sampler's history there, as the scheduler does). The adapter calls the pipeline's own ``get_timesteps``
and ``prepare_latents``, so x_T is the pipeline's to the bit and the generator is left where the
pipeline leaves it (the η-noises come next). PNDM is refused: the pipeline's cut of its timestep list
is not PNDM's run from a begin step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from paratta.samplers import parse
from paratta.samplers.pndm import PNDMConfig

from .base import TEXT_ARGUMENTS, Serves
from .sd import StableDiffusionModel
from .sdxl import MICRO_CONDITIONS, StableDiffusionXLModel


class Img2Img:
    """What the image-to-image adapters add to their text-to-image one: the image, the strength, the start."""

    def encode(self, prompt: str, negative_prompt: str = "") -> Any:
        """Refused: an image-to-image pipeline samples from an image, which only its call takes."""
        raise ValueError(
            f"{type(self.pipe).__name__} samples from an image: call "  # type: ignore[attr-defined]
            "ParaTAAPipeline.from_pipe(pipe)(prompt, image=…, strength=…); the app and the CLI sample "
            "text to image (load the text-to-image pipeline of the same weights)"
        )

    def image_size_of(self, image: Any) -> tuple[Tensor, tuple[int, int]]:
        """The pipeline's preprocessed image (B, 3, H, W) and the size it samples at (H, W)."""
        pixels = self.pipe.image_processor.preprocess(image)  # type: ignore[attr-defined]
        return pixels, (int(pixels.shape[-2]), int(pixels.shape[-1]))

    def start(
        self, arguments: dict[str, Any], pixels: Tensor, steps: int, count: int, generator: Any
    ) -> tuple[int, Tensor]:
        """(the step the run begins at, T − k, and x_T of ``count`` images (count, *latent): the
        scheduler's sample there, float32 CPU), by the pipeline's own ``get_timesteps`` and
        ``prepare_latents``."""
        pipe, strength = self.pipe, arguments["strength"]  # type: ignore[attr-defined]
        if isinstance(strength, bool) or not (isinstance(strength, (int, float)) and 0 <= strength <= 1):
            raise ValueError(f"strength must be in [0, 1]; got {strength!r}")
        k = min(int(steps * strength), steps)
        if k < 1:
            raise ValueError(
                f"strength {strength:g} × num_inference_steps {steps} leaves no step to run "
                "(it needs ⌊T·s⌋ ≥ 1)"
            )
        if isinstance(parse(self.scheduler_config), PNDMConfig):  # type: ignore[attr-defined]
            raise ValueError(
                f"{type(pipe).__name__} with PNDMScheduler: the pipeline drops the first T − ⌊T·strength⌋ "
                "entries of PNDM's timestep list, which its warm-up entries make longer than T, and PNDM "
                "restarts its step counter there: not PNDM's run from a begin step; use another sampler"
            )
        device, dtype = self.device, self.dtype  # type: ignore[attr-defined]
        pipe.scheduler.set_timesteps(steps, device=device)
        timesteps, _ = pipe.get_timesteps(steps, strength, device)
        per_prompt = count // self._prompts(arguments)
        with torch.no_grad():
            latents = pipe.prepare_latents(
                pixels, timesteps[:1].repeat(count), count // per_prompt, per_prompt, dtype, device, generator
            )
        return steps - k, latents.to("cpu", torch.float32)

    @staticmethod
    def _prompts(arguments: dict[str, Any]) -> int:
        prompt = arguments.get("prompt")
        if isinstance(prompt, list):
            return len(prompt)
        if prompt is None and arguments.get("prompt_embeds") is not None:
            return int(arguments["prompt_embeds"].shape[0])
        return 1


IMAGE_ARGUMENTS = tuple(a for a in TEXT_ARGUMENTS if a not in ("height", "width", "latents")) + (
    "image",
    "strength",
)


class StableDiffusionImg2ImgModel(Img2Img, StableDiffusionModel):
    """A ``StableDiffusionImg2ImgPipeline``: Stable Diffusion from an image noised to ``strength``."""

    serves = Serves(
        pipelines=("StableDiffusionImg2ImgPipeline",),
        arguments=(*IMAGE_ARGUMENTS, "eta"),
        options=("height", "width"),
        guidance="cfg",
        layout="(C, h, w): UNet-space latents at the image's size",
        draws="the image's VAE sample, then randn_tensor((B, C, h, w)), mixed by the scheduler's "
        "add_noise at the first of the last ⌊T·strength⌋ steps",
        replicates=("__call__",),
    )
    default_name = "stable-diffusion-img2img"


class StableDiffusionXLImg2ImgModel(Img2Img, StableDiffusionXLModel):
    """A ``StableDiffusionXLImg2ImgPipeline``: SDXL from an image noised to ``strength``; the micro-conditions
    of its ``_get_add_time_ids`` (the aesthetic scores where the pipeline requires them)."""

    serves = Serves(
        pipelines=("StableDiffusionXLImg2ImgPipeline",),
        arguments=(
            *IMAGE_ARGUMENTS, "eta", "prompt_2", "negative_prompt_2", "pooled_prompt_embeds",
            "negative_pooled_prompt_embeds", *MICRO_CONDITIONS, "aesthetic_score", "negative_aesthetic_score",
        ),
        options=("height", "width", *MICRO_CONDITIONS, "aesthetic_score", "negative_aesthetic_score"),
        guidance="cfg",
        layout="(C, h, w): UNet-space latents at the image's size",
        draws="the image's VAE sample (normalised by the VAE's mean and std when set), then "
        "randn_tensor((B, C, h, w)), mixed by the scheduler's add_noise at the first of the last "
        "⌊T·strength⌋ steps",
        replicates=("__call__",),
    )  # fmt: skip
    default_name = "stable-diffusion-xl-img2img"

    def _time_ids(self, embeds: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """(positive, negative) micro-conditions by the img2img pipeline's own ``_get_add_time_ids``."""
        size, micro = self.image_size, self.micro
        original, target = micro["original_size"] or size, micro["target_size"] or size
        ids, negative = self.pipe._get_add_time_ids(
            tuple(original),
            tuple(micro["crops_coords_top_left"]),
            tuple(target),
            micro["aesthetic_score"],
            micro["negative_aesthetic_score"],
            tuple(micro["negative_original_size"] or original),
            tuple(micro["negative_crops_coords_top_left"]),
            tuple(micro["negative_target_size"] or target),
            dtype=embeds.dtype,
            text_encoder_projection_dim=dim,
        )
        return ids.to(self.device), negative.to(self.device)

    @staticmethod
    def _rows(ids: Tensor, negative_ids: Tensor, images: int) -> tuple[Tensor, Tensor]:
        """The img2img pipeline repeats each half over its own B rows: every image has the pair as it is."""
        return ids, negative_ids
