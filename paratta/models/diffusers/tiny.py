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
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

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


def tiny_t5_tokenizer(model_max_length: int = 512) -> T5TokenizerFast:
    """A T5-style SentencePiece-Unigram tokenizer built in code (no files, no sentencepiece): pad, eos
    and unk, the word-start marker "▁", and every printable character alone and after "▁"; "</s>" is
    appended to every text, as T5's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("▁" + c, -2.5) for c in chars]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def tiny_vae(
    seed: int = 0,
    latent_channels: int = 4,
    scaling_factor: float = 0.18215,
    shift_factor: float | None = None,
) -> AutoencoderKL:
    """Two-block AutoencoderKL: latents are 2× smaller than the image (vae_scale_factor 2).

    SD3 and Flux VAEs also shift the latents (``shift_factor``); their pipelines require it set.
    """
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
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
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


def _clip(seed: int, tokenizer: CLIPTokenizer, projection: bool, hidden: int = 16) -> Any:
    """A 2-layer CLIP text encoder of width ``hidden`` (with a text projection of the same width for SD3)."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=hidden,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        vocab_size=len(tokenizer.get_vocab()),
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)).eval()


def _t5(seed: int, tokenizer: T5TokenizerFast, width: int = 32) -> T5EncoderModel:
    """A 1-layer T5 encoder of width ``width`` over ``tokenizer``'s vocabulary."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def tiny_sd3_pipeline(
    sample_size: int = 8, with_t5: bool = True, shift: float = 3.0, seed: int = 0, **scheduler: Any
) -> StableDiffusion3Pipeline:
    """Stable-Diffusion-3-shaped pipeline: a 1-layer MMDiT over (4, s, s) latents (patch 2), two CLIP
    text encoders of width 16 (their hidden states concatenated to the T5 width 32, their pooled outputs
    to 32) and a T5 encoder of width 32, or none (``with_t5=False``: the pipeline then feeds zeros, as
    diffusers allows). The scheduler is SD3's (static shift 3) unless ``scheduler`` overrides it."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        pos_embed_max_size=sample_size,
    ).eval()
    tokenizer = tiny_tokenizer()
    tokenizer_3 = tiny_t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift, **scheduler),
        vae=tiny_vae(seed + 1, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_clip(seed + 2, tokenizer, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_clip(seed + 3, tokenizer, projection=True),
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=_t5(seed + 4, tokenizer_3) if with_t5 else None,
        tokenizer_3=tokenizer_3 if with_t5 else None,
    )


FLUX_SCHEDULER: dict[str, Any] = {
    # Flux.1's scheduler as the hub ships it: resolution-dependent ("dynamic") shifting.
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def tiny_flux_pipeline(guidance_embeds: bool = True, seed: int = 0, **scheduler: Any) -> FluxPipeline:
    """Flux-shaped pipeline: a 1 + 1-layer Flux transformer over packed latents (4 VAE channels, 2×2
    patches: 16 per token), a CLIP text encoder of width 16 (pooled) and a T5 encoder of width 32.
    ``guidance_embeds`` is Flux-dev's embedded guidance (Flux-schnell has none). Images are 2× the
    latents; pass ``height``/``width`` (multiples of 4) to the pipeline and the model, the default
    (128 × 2 pixels) is large for a test."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 2, 2),
    ).eval()
    tokenizer = tiny_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{**FLUX_SCHEDULER, **scheduler}),
        vae=tiny_vae(seed + 1, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_clip(seed + 2, tokenizer, projection=False),
        tokenizer=tokenizer,
        text_encoder_2=_t5(seed + 3, tokenizer_2),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
