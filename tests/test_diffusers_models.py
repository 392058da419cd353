"""The diffusers adapters (Stable Diffusion, DiT) against diffusers' own pipelines, on tiny random models.

Random-weight networks are not ε-consistent, so trajectories grow large (|x_0| up to ~300 for
the tiny DiT); exactness is therefore checked relative to the output scale: float32 round-off is
~1e-6 relative, and the bound used is 1e-5 relative.
"""

from __future__ import annotations

import json
import time

import diffusers
import pytest
import torch

from paratta import Request, SolverConfig, load_model, make_problem, run, sample_sequential
from paratta.models.diffusers.base import ModelOutOfMemoryError
from paratta.models.diffusers.dit import DiTModel
from paratta.models.diffusers.load import from_pipeline, load_diffusers_model
from paratta.models.diffusers.sd import StableDiffusionModel
from paratta.models.diffusers.tiny import (
    save_tiny_sd,
    tiny_autoencoder_tiny,
    tiny_dit_pipeline,
    tiny_sd_pipeline,
)
from paratta.protocol import DiffusionModel

# The tiny configs keep steps_offset=0 on purpose; diffusers warns when the pipeline rewrites it.
pytestmark = [  # no diffusers logs (conftest)
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("quiet_diffusers"),
]

REL = 1e-5  # exactness vs diffusers, relative to max |x_0|: float32 round-off is ~1e-6
STEPS = 10
# The solver's tol bounds each frozen segment against its own anchor; the segments' errors can add up
# (measured up to ~1.7·tol at T = 100), so converged runs use tol = 5e-4 for a 1e-3 RMS bound.
TOL = 5e-4
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def sd() -> tuple[StableDiffusionModel, object]:
    pipe = tiny_sd_pipeline()
    return StableDiffusionModel(pipe, device="cpu"), pipe


@pytest.fixture(scope="module")
def sd_v() -> tuple[StableDiffusionModel, object]:
    pipe = tiny_sd_pipeline("v_prediction", "trailing")
    return StableDiffusionModel(pipe, device="cpu"), pipe


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).abs().max()) / max(1.0, float(ref.abs().max()))


def rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).pow(2).mean().sqrt())


def pipeline_latents(pipe, request: Request, latents: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' sequential sample; x_T from ``latents`` or, like paratta, from the seeded CPU generator."""
    kwargs = {"latents": latents[None]} if latents is not None else {}
    return pipe(
        request.prompt,
        negative_prompt=request.negative_prompt,
        guidance_scale=request.guidance,
        num_inference_steps=request.steps,
        eta=request.eta,
        generator=torch.Generator().manual_seed(request.seed),
        output_type="latent",
        **kwargs,
    ).images[0]


# ---------------------------------------------------------------- Stable Diffusion


def test_sd_model_attributes(sd):
    model, pipe = sd
    assert isinstance(model, DiffusionModel)
    assert model.latent_shape == (4, 8, 8) and model.image_size == (16, 16)
    assert model.takes_negative_prompt and model.takes_image_size and model.families == ("ddim",)
    assert model.vocabulary is None and model.labels is None and model.frames is None
    assert model.rows_per_timestep == 1 and model.classifier_free and model.defaults.requires_prompt
    # StableDiffusionPipeline.__init__ rewrote steps_offset 0 → 1; the adapter reads the rewritten config.
    assert model.scheduler_config["steps_offset"] == 1 == pipe.scheduler.config.steps_offset
    assert model.scheduler_config["_class_name"] == "DDIMScheduler"


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("variant", ["epsilon", "v_prediction"])
def test_sd_sequential_matches_pipeline(sd, sd_v, variant, eta):
    """Same seed → same x_T and (η > 0) same ξ draws: diffusers draws x_T, then one ξ per step."""
    model, pipe = sd if variant == "epsilon" else sd_v
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, seed=3, steps=STEPS, eta=eta, guidance=4.0)
    problem = make_problem(model, request)
    ref = pipeline_latents(pipe, request)
    x32 = sample_sequential(problem, dtype=torch.float32)[0]
    x64 = sample_sequential(problem, dtype=torch.float64)[0]
    assert rel_err(x32, ref) < REL, (variant, eta, rel_err(x32, ref))
    assert rel_err(x64, ref) < REL, (variant, eta, rel_err(x64, ref))


@pytest.mark.parametrize("given", [False, True])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_sd_draw_order_matches_pipeline_with_and_without_latents(sd, eta, given):
    """A pipeline given ``latents=`` draws no x_T: the first draw of the generator is ξ_{T−1}, so the
    problem must not draw x_T either (it used to, and the DDPM noises were off by one draw)."""
    model, pipe = sd
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, seed=5, steps=STEPS, eta=eta, guidance=3.0)
    x_T = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(11)) if given else None
    problem = make_problem(model, request, latents=x_T)
    ref = pipeline_latents(pipe, request, latents=x_T)
    assert rel_err(sample_sequential(problem, dtype=torch.float32)[0], ref) < REL, (eta, given)


def test_sd_given_latents_and_empty_negative_prompt(sd):
    """``latents=`` path; negative prompt "" is the empty-prompt embedding, as in the pipeline."""
    model, pipe = sd
    request = Request(prompt=PROMPT, negative_prompt="", seed=0, steps=STEPS, guidance=7.5)
    x_T = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(42))
    problem = make_problem(model, request, latents=x_T)
    ref = pipeline_latents(pipe, request, latents=x_T)
    assert rel_err(sample_sequential(problem, dtype=torch.float32)[0], ref) < REL
    empty = model.encode("", "")
    assert torch.equal(model.encode(PROMPT, "").negative_embeds, empty.prompt_embeds)


def test_sd_guidance_one_skips_unconditional_half(sd):
    model, pipe = sd
    rows = []
    handle = model.unet.register_forward_pre_hook(lambda mod, args: rows.append(args[0].shape[0]))
    try:
        cond = model.encode(PROMPT, NEGATIVE)
        x, t = torch.randn(3, 4, 8, 8), torch.tensor([981, 500, 1])
        with torch.inference_mode():
            out1 = model.predict(x, t, cond, 1.0)
            model.predict(x, t, cond, 2.0)
            ref = model.unet(x, t, encoder_hidden_states=cond.prompt_embeds.expand(3, -1, -1)).sample
    finally:
        handle.remove()
    assert rows[:2] == [3, 6]
    assert torch.equal(out1, ref)


def test_sd_rows_at_different_timesteps_match_single_rows(sd):
    """A batched call at mixed timesteps = the same rows one at a time (the parallel solver relies on it)."""
    model, _ = sd
    cond = model.encode(PROMPT, NEGATIVE)
    x, t = (
        torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1)),
        torch.tensor([901, 601, 301, 1]),
    )
    with torch.inference_mode():
        batched = model.predict(x, t, cond, 5.0)
        single = torch.cat([model.predict(x[i : i + 1], t[i : i + 1], cond, 5.0) for i in range(4)])
    assert rel_err(batched, single) < REL


@pytest.mark.parametrize("solver", ["anderson", "jacobi"])
def test_sd_parataa_converges_to_pipeline_output(sd, solver):
    model, pipe = sd
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, seed=7, steps=STEPS, eta=1.0, guidance=4.0)
    problem = make_problem(model, request)
    ref = pipeline_latents(pipe, request)
    last = run(problem, SolverConfig(solver=solver, order=STEPS, tol=TOL))
    assert last.converged and last.iteration < STEPS
    assert rms(last.x0, ref) < 1e-3, rms(last.x0, ref)


def test_sd_v_prediction_parataa_converges(sd_v):
    model, pipe = sd_v
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    request = Request(prompt=PROMPT, seed=2, steps=STEPS, guidance=3.0)
    last = run(make_problem(model, request), SolverConfig(solver="anderson", order=STEPS, tol=TOL))
    assert last.converged and rms(last.x0, pipeline_latents(pipe, request)) < 1e-3


def test_max_batch_chunking_matches_unchunked(sd):
    model, _ = sd
    problem = make_problem(model, Request(prompt=PROMPT, seed=1, steps=STEPS, guidance=3.0))
    whole = run(problem, SolverConfig(solver="anderson", order=STEPS))
    chunked = run(problem, SolverConfig(solver="anderson", order=STEPS, max_batch=3))
    # Not bitwise: CPU convolutions round differently for different batch sizes.
    assert chunked.iteration == whole.iteration
    assert rel_err(chunked.trajectory, whole.trajectory) < REL


def test_sd_float16_model_with_float64_state():
    """A half-precision network with a float64 solver state runs and stays near the float32 result."""
    model16 = StableDiffusionModel(tiny_sd_pipeline(), device="cpu", dtype=torch.float16)
    model32 = StableDiffusionModel(tiny_sd_pipeline(), device="cpu")
    request = Request(prompt=PROMPT, seed=1, steps=STEPS, guidance=3.0)
    x16 = sample_sequential(make_problem(model16, request))[0]
    x32 = sample_sequential(make_problem(model32, request))[0]
    assert x16.dtype == torch.float64 and rel_err(x16, x32) < 3e-3
    last = run(make_problem(model16, request), SolverConfig(solver="anderson", order=STEPS, tol=TOL))
    assert last.converged and rms(last.x0, x16) < 1e-3


def test_decode_and_previews(sd):
    model, pipe = sd
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images = model.decode(x0)
    with torch.inference_mode():
        ref = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert torch.allclose(images, ((ref + 1) / 2).clamp(0, 1), atol=1e-6)
    preview = model.preview(x0)
    assert preview.shape == (3, 3, 16, 16) and preview.dtype == torch.float32
    assert 0 <= float(preview.min()) and float(preview.max()) <= 1 and float(preview.std()) > 0
    with_tiny = StableDiffusionModel(tiny_sd_pipeline(), device="cpu", tiny_vae=tiny_autoencoder_tiny())
    tiny_preview = with_tiny.preview(x0)
    assert (
        tiny_preview.shape == (3, 3, 16, 16)
        and 0 <= float(tiny_preview.min()) <= float(tiny_preview.max()) <= 1
    )


def test_out_of_memory_becomes_a_clear_error(sd, monkeypatch):
    model, _ = sd
    cond = model.encode(PROMPT)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "_unet", oom)
    with pytest.raises(ModelOutOfMemoryError, match="smaller window or set max_batch") as info:
        model.predict(torch.zeros(2, 4, 8, 8), torch.tensor([1, 1]), cond, 4.0)
    assert isinstance(info.value, MemoryError) and "4 network rows" in str(info.value)

    def other(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "_unet", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        model.predict(torch.zeros(1, 4, 8, 8), torch.tensor([1]), cond, 4.0)


# ---------------------------------------------------------------- DiT


def test_dit_sequential_matches_pipeline_and_manual_loop():
    """DiTPipeline takes no ``latents``: compare its decoded images, and the latents of a manual DDIM loop."""
    pipe = tiny_dit_pipeline()
    model = DiTModel(pipe, device="cpu")
    assert model.latent_shape == (4, 8, 8) and not model.takes_negative_prompt and model.learn_sigma
    request = Request(prompt="207", seed=5, steps=STEPS, guidance=4.0)
    problem = make_problem(model, request)
    x32 = sample_sequential(problem, dtype=torch.float32)[0]
    x64 = sample_sequential(problem, dtype=torch.float64)[0]

    scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([207, 1000])  # [cond, null] as DiTPipeline orders them
    with torch.inference_mode():
        for t in scheduler.timesteps:
            out = pipe.transformer(torch.cat([x, x]), timestep=t[None].expand(2), class_labels=labels).sample
            cond, uncond = out[:, :4].chunk(2)  # learn_sigma: keep the ε half
            x = scheduler.step(uncond + 4.0 * (cond - uncond), t, x).prev_sample
    assert rel_err(x32, x[0]) < REL and rel_err(x64, x[0]) < REL

    images = pipe(
        class_labels=[207],
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=STEPS,
        output_type="pt",
    ).images
    assert float((model.decode(x32[None]) - images).abs().max()) < 1e-4

    last = run(problem, SolverConfig(solver="anderson", order=STEPS, tol=TOL))
    assert last.converged and rms(last.x0, x64) < 1e-3


def test_dit_class_prompts():
    labelled = DiTModel(
        tiny_dit_pipeline(id2label={0: "tench, Tinca tinca", 1: "goldfish", 2: "great white shark"})
    )
    assert labelled.encode("Goldfish").class_ids.tolist() == [1]
    assert labelled.encode("tinca tinca").class_ids.tolist() == [0]
    assert labelled.encode(" 2 ").class_ids.tolist() == [2]
    assert (
        labelled.encode("").class_ids.tolist() == [1000] and labelled.encode("").null_id == 1000
    )  # unconditional
    with pytest.raises(ValueError, match="goldfish"):
        labelled.encode("goldfsh")
    with pytest.raises(ValueError, match="outside"):
        labelled.encode("1000")
    bare = DiTModel(tiny_dit_pipeline())
    with pytest.raises(ValueError, match="integer|class id"):
        bare.encode("goldfish")
    # declared: class-conditional, one size, its labels; shown with a class it knows, else unconditional
    assert labelled.labels["goldfish"] == 1 and not bare.labels and labelled.vocabulary is None
    assert not labelled.takes_image_size and not labelled.defaults.requires_prompt
    assert (
        bare.defaults.prompt == ""
        and DiTModel(tiny_dit_pipeline(id2label={207: "golden retriever"})).defaults.prompt
        == "golden retriever"
    )


# ---------------------------------------------------------------- loading


def test_load_folder_through_registry(tmp_path):
    folder = save_tiny_sd(tmp_path / "tiny-sd")
    model = load_model(str(folder))
    assert isinstance(model, StableDiffusionModel) and model.name == "tiny-sd"
    assert model.device.type == "cpu" and model.dtype == torch.float32  # the defaults without CUDA
    assert model.scheduler_config["steps_offset"] == 1
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, seed=3, steps=STEPS, guidance=4.0)
    ref = pipeline_latents(tiny_sd_pipeline(), request)  # same seeds → same weights as the saved pipeline
    assert rel_err(sample_sequential(make_problem(model, request), dtype=torch.float32)[0], ref) < REL


def test_unsupported_pipeline(tmp_path):
    folder = tmp_path / "ddpm"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    with pytest.raises(ValueError, match="DDPMPipeline.*StableDiffusionPipeline, StableDiffusionXLPipeline"):
        load_diffusers_model(str(folder))
    unet = diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        layers_per_block=1,
    )
    with pytest.raises(ValueError, match="DDPMPipeline"):
        from_pipeline(diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        load_diffusers_model(str(tmp_path / "empty"))


@pytest.mark.parametrize("hub_offline_env", [True, False])
def test_unknown_hub_id_offline(monkeypatch, tmp_path, hub_offline_env):
    """No network here: with or without HF_HUB_OFFLINE the error names the id, within a few seconds."""
    if hub_offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    name = "nobody-here/no-such-model-paratta"
    start = time.perf_counter()
    with pytest.raises(ValueError, match=name) as info:
        load_model(name)
    assert time.perf_counter() - start < 8
    if hub_offline_env:
        assert "offline" in str(info.value)
