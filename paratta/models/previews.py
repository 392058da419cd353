"""Latents → RGB: the full VAE decode and cheap previews (a linear map, or a tiny VAE such as TAESD).

Stable Diffusion's (and DiT's, which uses the same VAE) 4-channel latent space is close enough to
linear in colour that a 4×3 matrix gives a recognisable thumbnail: RGB ≈ Σ_c x_c · W[c], in
[−1, 1], at 1/8 of the image size. The factors below are the widely used ones fitted for SD 1.x
on UNet-space latents (already multiplied by the VAE's scaling factor 0.18215), published in
https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204 .
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows: latent channels 0…3; columns: R, G, B. Input: UNet-space latents; output ≈ [−1, 1].
SD_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)

DECODE_CHUNK = 4  # images per VAE call: bounds the decoder's activation memory at 512² and above


def to_unit_range(img: Tensor) -> Tensor:
    """Images in [−1, 1] (any dtype/device) → float32 CPU in [0, 1]."""
    return ((img.detach().float().cpu() + 1) / 2).clamp(0, 1)


def vae_input(vae: Any, x: Tensor) -> Tensor:
    """UNet-space latents → what ``vae.decode`` expects: x / scaling_factor (+ shift_factor when set)."""
    x = x / vae.config.scaling_factor
    shift = vae.config.get("shift_factor")  # SD3's and Flux's VAEs shift; SD's config has no such key
    return x + shift if shift else x


def decode_with_vae(vae: Any, x0: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Full decode, ``DECODE_CHUNK`` images per call: (n, C, h, w) → (n, 3, H, W) float32 CPU in [0, 1]."""
    x0 = x0.detach().to(device=device, dtype=dtype)
    parts = [
        vae.decode(vae_input(vae, x0[s : s + DECODE_CHUNK])).sample
        for s in range(0, x0.shape[0], DECODE_CHUNK)
    ]
    return to_unit_range(torch.cat(parts))


def linear_preview(x0: Tensor, factors: Tensor | tuple = SD_LATENT_RGB, scale: int = 1) -> Tensor:
    """RGB ≈ Σ_c x_c W[c] for 4-channel UNet-space latents, upsampled ×``scale``; float32 CPU [0, 1]."""
    w = torch.as_tensor(factors, dtype=torch.float32, device=x0.device)
    rgb = torch.einsum("nchw,cr->nrhw", x0.detach().float(), w)
    if scale > 1:
        rgb = F.interpolate(rgb, scale_factor=scale, mode="nearest")
    return to_unit_range(rgb)


def preview_latents(x0: Tensor, scale: int, tiny_vae: Any = None, vae: Any = None) -> Tensor:
    """The cheapest faithful preview available, always (n, 3, H, W) float32 CPU in [0, 1].

    ``tiny_vae`` (an ``AutoencoderTiny``: scaling factor 1, decodes UNet-space latents, outputs
    [−1, 1] in diffusers) when given; the linear map for 4-channel latents; else the full ``vae``.
    """
    if tiny_vae is not None:
        p = next(tiny_vae.parameters())
        return to_unit_range(tiny_vae.decode(vae_input(tiny_vae, x0.detach().to(p.device, p.dtype))).sample)
    if x0.shape[1] == 4:
        return linear_preview(x0, SD_LATENT_RGB, scale)
    if vae is None:
        raise ValueError(f"no preview for {x0.shape[1]}-channel latents without a VAE")
    p = next(vae.parameters())
    return decode_with_vae(vae, x0, p.device, p.dtype)
