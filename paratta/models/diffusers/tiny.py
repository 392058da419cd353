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
    AutoencoderDC,
    AutoencoderKL,
    AutoencoderKLWan,
    AutoencoderTiny,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    Gemma2Config,
    Gemma2Model,
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
    blocks: tuple[int, ...] = (32, 64),
) -> AutoencoderKL:
    """A small AutoencoderKL, one block per entry of ``blocks`` (their widths): latents 2^(len − 1)× smaller
    than the image (the default two blocks: 2×).

    SD3 and Flux VAEs also shift the latents (``shift_factor``); their pipelines require it set.
    """
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(blocks),
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
    sample_size: int = 8,
    with_t5: bool = True,
    shift: float = 3.0,
    seed: int = 0,
    large: bool = False,
    **scheduler: Any,
) -> StableDiffusion3Pipeline:
    """Stable-Diffusion-3-shaped pipeline: a 1-layer MMDiT over (4, s, s) latents (patch 2), two CLIP
    text encoders of width 16 (their hidden states concatenated to the T5 width 32, their pooled outputs
    to 32) and a T5 encoder of width 32, or none (``with_t5=False``: the pipeline then feeds zeros, as
    diffusers allows). The scheduler is SD3's (static shift 3) unless ``scheduler`` overrides it.
    ``large``: SD 3.5's transformer (RMS-normalised queries and keys, a dual-attention first layer,
    as SD 3.5 Medium has), served by the same pipeline class."""
    torch.manual_seed(seed)
    sd35 = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if large else {}
    transformer = SD3Transformer2DModel(
        **sd35,
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


def tiny_unet_xl(sample_size: int = 8, projection: int = 16, seed: int = 0) -> UNet2DConditionModel:
    """An SDXL-shaped UNet: ``text_time`` added conditions (the pooled text embedding and the six size
    and crop numbers, each embedded in ``addition_time_embed_dim``), cross-attention width 32 (the two
    CLIP encoders' hidden states side by side)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + projection,
        norm_num_groups=32,
    ).eval()


def _sdxl_parts(sample_size: int, seed: int) -> dict[str, Any]:
    tokenizer = tiny_tokenizer()
    return {
        "vae": tiny_vae(seed + 1, scaling_factor=0.13025),
        "text_encoder": _clip(seed + 2, tokenizer, projection=False),
        "text_encoder_2": _clip(seed + 3, tokenizer, projection=True),
        "tokenizer": tokenizer,
        "tokenizer_2": tiny_tokenizer(),
        "unet": tiny_unet_xl(sample_size, seed=seed),
        # SDXL's scheduler as the hub ships it: Euler on SD's betas, leading spacing, steps_offset 1
        "scheduler": EulerDiscreteScheduler.from_config({**SD_SCHEDULER, "steps_offset": 1}),
    }


def tiny_sdxl_pipeline(sample_size: int = 8, seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL-shaped pipeline: the ``tiny_unet_xl`` UNet, two CLIP text encoders of width 16 (the second
    with a projection: the pooled embedding), a 2-block VAE and SDXL's Euler scheduler; no watermark."""
    return StableDiffusionXLPipeline(**_sdxl_parts(sample_size, seed), add_watermarker=False)


def tiny_sdxl_img2img_pipeline(sample_size: int = 8, seed: int = 0) -> StableDiffusionXLImg2ImgPipeline:
    """``tiny_sdxl_pipeline``'s modules as SDXL's image-to-image pipeline."""
    return StableDiffusionXLImg2ImgPipeline(**_sdxl_parts(sample_size, seed), add_watermarker=False)


def tiny_sd_img2img_pipeline(**kwargs: Any) -> StableDiffusionImg2ImgPipeline:
    """``tiny_sd_pipeline(**kwargs)``'s modules as Stable Diffusion's image-to-image pipeline."""
    return StableDiffusionImg2ImgPipeline(**tiny_sd_pipeline(**kwargs).components)


PIXART_SCHEDULER: dict[str, Any] = {
    # PixArt's as the hub ships it: DPM-Solver++ 2M on DDPM's linear betas (α: DPMSolverMultistep;
    # Σ: the same class); the pipelines also run DDIM on it.
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


def tiny_pixart_pipeline(sigma: bool = True, seed: int = 0) -> PixArtSigmaPipeline | PixArtAlphaPipeline:
    """PixArt-shaped pipeline (Σ, or α with ``sigma=False``): a 1-layer ``PixArtTransformer2DModel``
    (``ada_norm_single``, patch 2) predicting the learned σ beside ε (``out_channels = 2 × 4``), a T5
    encoder of width 32, a 4-block VAE of width 8 (8× smaller latents, as PixArt's) and PixArt's
    DPM-Solver++ scheduler. Sample size 32, so resolution binning has its 256-pixel table: the
    pipeline's default image is 256×256 px; pass sizes (multiples of 16) or bin them."""
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        norm_num_groups=32,
        cross_attention_dim=16,
        sample_size=32,
        patch_size=2,
        caption_channels=32,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    parts = {
        "transformer": transformer,
        "vae": tiny_vae(seed + 1, blocks=(8, 8, 8, 8)),
        "text_encoder": _t5(seed + 2, tokenizer),
        "tokenizer": tokenizer,
        "scheduler": DPMSolverMultistepScheduler.from_config(PIXART_SCHEDULER),
    }
    return PixArtSigmaPipeline(**parts) if sigma else PixArtAlphaPipeline(**parts)


def tiny_sana_pipeline(seed: int = 0) -> SanaPipeline:
    """Sana-shaped pipeline: a 1-layer ``SanaTransformer2DModel`` (linear attention, patch 1, sample size
    16 so that resolution binning has its 512 table), a 6-stage ``AutoencoderDC`` of width 8 (DC-AE:
    latents 32× smaller than the image, as Sana's), a 1-layer ``Gemma2Model`` text encoder (eager
    attention) over ``tiny_t5_tokenizer``, and Sana's scheduler as the hub ships it (DPM-Solver++ on
    flow σ, shift 3)."""
    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=16,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
        encoder_block_out_channels=(8,) * 6,
        decoder_block_out_channels=(8,) * 6,
        encoder_qkv_multiscales=((),) * 5 + ((5,),),
        decoder_qkv_multiscales=((),) * 5 + ((5,),),
        encoder_layers_per_block=(1,) * 6,
        decoder_layers_per_block=(1,) * 6,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    tokenizer = tiny_t5_tokenizer(model_max_length=4096)  # Sana's instruction is ~900 characters long
    torch.manual_seed(seed + 2)
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            pad_token_id=0,
            attn_implementation="eager",
        )
    ).eval()
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="linear", prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return SanaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def tiny_wan_pipeline(seed: int = 0) -> WanPipeline:
    """Wan-2.1-shaped text-to-video pipeline: a 2-layer ``WanTransformer3DModel`` (patch (1, 2, 2)), an
    ``AutoencoderKLWan`` (z_dim 16; 4× in time, 8× in space), a T5 encoder of width 32, and Wan's
    scheduler as the hub ships it (UniPC on flow σ, shift 3). Latents are (16, F, h, w),
    F = (frames − 1)/4 + 1."""
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=_t5(seed + 2, tokenizer), vae=vae, transformer=transformer,
        scheduler=scheduler,
    )  # fmt: skip
