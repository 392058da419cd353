"""Sana (linear-attention DiT over a deep-compression autoencoder, DC-AE) as a paratta ``DiffusionModel``.

As ``SanaPipeline.__call__``: Gemma-2 hidden states and their attention mask (the prompt optionally
prefixed by ``complex_human_instruction``, as its ``encode_prompt`` does) for [uncond, cond] in one
transformer batch, the timestep fed as t · ``timestep_scale``, the output taken in float32 and guided
there, a learned-σ half dropped; x_T drawn in float32 whatever the network's dtype. The states are
DC-AE latents × scaling_factor (32× smaller than the image for Sana's DC-AE). Resolution binning as
PixArt's (``paratta.models.diffusers.pixart``), with Sana's tables; sizes are multiples of 32 pixels.
Sana ships DPM-Solver++ on flow σ; paratta's flow-matching Euler is exact for a pipeline given a
``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import TEXT_ARGUMENTS, Serves, SizeRule
from .pixart import PixArtModel


class SanaModel(PixArtModel):
    """A ``SanaPipeline`` (Sana transformer + DC-AE + Gemma-2) for paratta."""

    serves = Serves(
        pipelines=("SanaPipeline",),
        arguments=(
            *TEXT_ARGUMENTS, "prompt_attention_mask", "negative_prompt_attention_mask", "clean_caption",
            "use_resolution_binning", "max_sequence_length", "complex_human_instruction",
        ),
        options=(
            "height", "width", "clean_caption", "use_resolution_binning", "max_sequence_length",
            "complex_human_instruction",
        ),
        guidance="cfg",
        layout="(C, h, w): DC-AE latents × scaling_factor at the (binned) sampling size",
        draws="randn_tensor((B, C, h, w)) in float32 at the binned size",
    )  # fmt: skip
    default_name = "sana"
    min_multiple = 32
    latent_dtype = torch.float32

    @property
    def vae_scale_factor(self) -> int:
        """DC-AE: 2^(encoder blocks − 1), as ``SanaPipeline.__init__`` computes it."""
        return 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)

    def size_rule(self) -> SizeRule:
        """``SanaPipeline.__call__``'s own default size (1024², whatever the transformer), multiples of 32."""
        rule = super().size_rule()
        return SizeRule((self.call_defaults["height"], self.call_defaults["width"]), rule.multiple)

    def _transformer(self, x: Tensor, t: Tensor, emb: Tensor, mask: Tensor) -> Tensor:
        dtype = self.transformer.dtype
        return self.transformer(
            x.to(dtype),
            encoder_hidden_states=emb.to(dtype),
            encoder_attention_mask=mask,
            timestep=t * self.transformer.config.timestep_scale,
            return_dict=False,
        )[0].float()

    def preview(self, x0: Tensor) -> Tensor:
        """The full DC-AE decode (no linear map is published for its channels)."""
        return self.decode(x0)
