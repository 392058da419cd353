"""Tiny random-weight diffusers pipelines built from configs: offline, seeded, deterministic.

Used by the tests and by ``benchmarks/sd_speed.py --tiny``; imported only on demand (diffusers is slow).
Nothing here touches the hub. Each builder seeds torch before constructing every module, so two
calls give bit-identical weights. The sizes follow the ecosystem notes (a 25-step guided run of
the tiny Stable Diffusion takes well under a second on 2 CPU cores).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

# Imported here (not at module level in paratta) because diffusers is slow to import.
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SD_SCHEDULER: dict[str, Any] = {
    # SD 1.x's scheduler, as the hub ships it (minus the PNDM-only keys); steps_offset=0 on purpose:
    # StableDiffusionPipeline.__init__ rewrites it to 1 and the adapter must read the rewritten value.
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer with no merges: two special tokens plus every printable character, alone
    and as a word end (``c</w>``). ``model_max_length=77`` or the pipeline pads to ~1e30."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        model_max_length=77,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def tiny_vae(seed: int = 0, latent_channels: int = 4) -> AutoencoderKL:
    """Two-block AutoencoderKL: latents are 2× smaller than the image (vae_scale_factor 2)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.18215,
    ).eval()


def tiny_autoencoder_tiny(seed: int = 0) -> AutoencoderTiny:
    """A TAESD-shaped AutoencoderTiny with one upsampling stage (matches ``tiny_vae``'s 2× factor)."""
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).eval()


def tiny_sd_pipeline(
    prediction_type: str = "epsilon",
    timestep_spacing: str = "leading",
    sample_size: int = 8,
    seed: int = 0,
) -> StableDiffusionPipeline:
    """Stable-Diffusion-shaped pipeline: UNet (32, 64) with cross-attention, 2-block VAE, 2-layer CLIP.

    ``prediction_type="v_prediction"`` with ``timestep_spacing="trailing"`` is the SD 2.x style.
    Latents are (4, sample_size, sample_size); images are 2× that.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    vae = tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=len(tokenizer.get_vocab()),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    scheduler = DDIMScheduler.from_config(
        {**SD_SCHEDULER, "prediction_type": prediction_type, "timestep_spacing": timestep_spacing}
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_dit_pipeline(
    sample_size: int = 8, learn_sigma: bool = True, id2label: dict[int, str] | None = None, seed: int = 0
) -> DiTPipeline:
    """DiT-shaped pipeline: a 2-layer DiTTransformer2DModel over (4, s, s) latents, 1000 classes.

    ``num_embeds_ada_norm`` stays 1000 because DiTPipeline hard-codes the null class id 1000.
    With ``learn_sigma`` the transformer outputs 8 channels (ε and the variance), like DiT-XL/2.
    No ``id2label`` unless given: prompts are then integer class ids. (diffusers initialises the
    adaLN-zero and output layers at random, not at zero as the DiT paper does, so the untrained
    network is not the zero map.)
    """
    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8 if learn_sigma else 4,
        num_layers=2,
        sample_size=sample_size,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_num_groups=32,
    ).eval()
    vae = tiny_vae(seed + 1)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.0001,
        beta_end=0.02,
        clip_sample=False,
    )
    return DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=id2label)


def save_tiny_sd(folder: str | Path, **kwargs: Any) -> Path:
    """``tiny_sd_pipeline(**kwargs).save_pretrained(folder)``; returns the folder."""
    folder = Path(folder)
    tiny_sd_pipeline(**kwargs).save_pretrained(folder, safe_serialization=True)
    return folder
