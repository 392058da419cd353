"""Every pipeline class paratta serves, against ``pipe(...)`` itself, on tiny random-weight pipelines built
in code (``paratta.models.diffusers.tiny``): at a size that is not square and with a seeded generator,
the sequential solver equals the pipeline's latents to 1e-4 of their largest value, and ParaTAA ends
within its stopping guarantee in fewer parallel iterations than steps. Then what each pipeline adds
(resolution binning, Sana's instruction, img2img's strength, frames) and what is refused, by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableDiffusionPipeline,
)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_256_BIN
from PIL import Image

from paratta import ParaTAAPipeline, Request, make_problem
from paratta.models.diffusers import tiny
from paratta.models.diffusers.load import from_pipeline

pytestmark = [  # no diffusers logs (conftest)
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("quiet_diffusers"),
]

STEPS = 10
EXACT = 1e-4  # sequential vs the pipeline: max |Δ| over max |latent|
PROMPT = "a red cat on a mat"
IMAGE = Image.fromarray((np.random.default_rng(0).random((24, 16, 3)) * 255).astype(np.uint8))  # 24×16


def flow_euler(pipe):
    """Sana and Wan with flow Euler (their shipped multistep samplers on flow σ: tested below)."""
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return pipe


# name → (builder, the call's arguments beyond prompt, steps, generator and output_type); every size
# is non-square (DiT's one size is its transformer's; img2img's is the image's, 24×16)
CASES = {
    "sd": (tiny.tiny_sd_pipeline, {"height": 24, "width": 16, "negative_prompt": "blurry"}),
    "sdxl": (tiny.tiny_sdxl_pipeline, {"height": 24, "width": 16, "negative_prompt": "blurry"}),  # Euler
    "sd-img2img": (tiny.tiny_sd_img2img_pipeline, {"image": IMAGE, "strength": 0.7}),
    "sdxl-img2img": (tiny.tiny_sdxl_img2img_pipeline, {"image": IMAGE, "strength": 0.7}),
    "dit": (tiny.tiny_dit_pipeline, {"class_labels": [207]}),
    "sd3": (tiny.tiny_sd3_pipeline, {"height": 24, "width": 16, "max_sequence_length": 32}),
    "sd3.5": (lambda: tiny.tiny_sd3_pipeline(large=True), {"height": 24, "width": 16}),
    "flux": (tiny.tiny_flux_pipeline, {"height": 24, "width": 16, "max_sequence_length": 32}),
    "pixart-sigma": (tiny.tiny_pixart_pipeline, {"height": 48, "width": 32, "use_resolution_binning": False}),
    "pixart-alpha": (
        lambda: tiny.tiny_pixart_pipeline(sigma=False),
        {"height": 48, "width": 32, "use_resolution_binning": False},
    ),
    "sana": (
        lambda: flow_euler(tiny.tiny_sana_pipeline()),
        {"height": 128, "width": 64, "use_resolution_binning": False, "complex_human_instruction": None},
    ),
    "wan": (lambda: flow_euler(tiny.tiny_wan_pipeline()), {"height": 48, "width": 32, "num_frames": 5}),
}


def call(pipe, seed: int, arguments: dict, **extra):
    """``pipe(...)`` or a wrapper of it: the case's arguments, STEPS, guidance 4, a seeded CPU generator."""
    text = {} if "class_labels" in arguments else {"prompt": PROMPT}
    return pipe(
        **(text | arguments),
        num_inference_steps=STEPS,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )


def result(out):
    """The tensor a pipeline's output holds: ``frames`` for a video, else ``images``."""
    return out.frames if hasattr(out, "frames") else out.images


@pytest.mark.parametrize("name", list(CASES))
def test_each_pipeline_sequential_is_its_pipe_and_parataa_lands_within_its_bound(name: str) -> None:
    build, arguments = CASES[name]
    pipe = build()
    latent = {"output_type": "pt" if name == "dit" else "latent"}  # DiT returns no latents
    expected = result(call(pipe, 5, arguments, **latent))
    sequential = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 5, arguments, **latent)
    assert sequential.images.shape == expected.shape and sequential.images.dtype == expected.dtype
    scale = float(expected.abs().max())
    assert float((sequential.images - expected).abs().max()) <= EXACT * scale, name

    # random weights are no denoiser: on the default flow split (a denoiser's linearisation) the count is
    # held to the triangular bound; the published split ends in fewer iterations than steps
    published = call(ParaTAAPipeline.from_pipe(pipe, split="published"), 5, arguments, **latent)
    assert published.converged and published.iterations < published.steps, (name, published.iterations)
    parataa = call(ParaTAAPipeline.from_pipe(pipe), 5, arguments, **latent)
    assert parataa.converged and parataa.iterations <= parataa.steps, (name, parataa.iterations)
    if name != "dit":  # the bound is on latents; DiT's output is its decoded image
        gap = float((parataa.images.double() - expected.double()).pow(2).mean().sqrt())
        assert gap <= parataa.tol, (name, gap)


def test_sdxl_micro_conditions_are_the_pipelines() -> None:
    """Original size, crop corner and target size, and the negative half's own, as SDXL forms them."""
    pipe = tiny.tiny_sdxl_pipeline()
    micro = {
        "original_size": (64, 32), "crops_coords_top_left": (4, 0), "target_size": (32, 16),
        "negative_original_size": (16, 16), "negative_target_size": (24, 16),
    }  # fmt: skip
    arguments = {"height": 24, "width": 16, **micro, "output_type": "latent"}
    for prompts in ([PROMPT], [PROMPT, "a dog"]):  # two images: the pipeline's rows interleave the ids
        expected = call(pipe, 2, {**arguments, "prompt": prompts}).images
        ours = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 2, {**arguments, "prompt": prompts})
        assert float((ours.images - expected).abs().max()) <= EXACT * float(expected.abs().max())


def test_pixart_bins_the_size_and_crops_the_image_back() -> None:
    """With its default resolution binning, PixArt samples at its table's size for the aspect ratio and
    resizes and crops the decoded image back to the size asked: paratta the same, image for image."""
    pipe = tiny.tiny_pixart_pipeline()
    arguments = {"height": 40, "width": 24}  # ratio 5:3 → the 256 table's nearest bin
    expected = call(pipe, 1, arguments, output_type="np").images
    wrapped = ParaTAAPipeline.from_pipe(pipe, solver="sequential")
    problem, _ = wrapped.problem(PROMPT, **arguments, num_inference_steps=STEPS, guidance_scale=4.0)
    binned = pipe.image_processor.classify_height_width_bin(40, 24, ratios=ASPECT_RATIO_256_BIN)
    assert problem.model.latent_shape == (4, binned[0] // 8, binned[1] // 8) and binned != (40, 24)
    ours = call(wrapped, 1, arguments, output_type="np").images
    assert ours.shape == expected.shape == (1, 40, 24, 3)
    assert float(np.abs(ours - expected).max()) <= 1e-3


def test_sana_with_its_instruction_and_binning() -> None:
    """Sana's defaults: the complex human instruction prefixed to the prompt, binning to its 512 table."""
    pipe = flow_euler(tiny.tiny_sana_pipeline())
    arguments = {"height": 320, "width": 192, "output_type": "latent"}
    expected = call(pipe, 4, arguments).images
    ours = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 4, arguments).images
    assert ours.shape == expected.shape and expected.shape[-2:] != (10, 6)  # binned, not 320/32 × 192/32
    assert float((ours - expected).abs().max()) <= EXACT * float(expected.abs().max())


def test_wan_returns_frames_as_the_pipeline_does() -> None:
    pipe = flow_euler(tiny.tiny_wan_pipeline())
    arguments = {"height": 48, "width": 32, "num_frames": 6}  # rounded to 5 = 4·1 + 1, as the pipeline does
    expected = call(pipe, 3, arguments, output_type="np").frames
    out = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 3, arguments, output_type="np")
    assert out.frames is out.images and out.frames.shape == expected.shape == (1, 5, 48, 32, 3)
    assert float(np.abs(out.frames - expected).max()) <= 1e-3
    model = from_pipeline(pipe, height=48, width=32, num_frames=5)
    assert model.frames == 5 and model.latent_shape == (16, 2, 6, 4)
    video = model.decode(out.trajectory[0][None])
    assert video.shape == (1, 5, 3, 48, 32) and 0 <= float(video.min()) and float(video.max()) <= 1


def test_img2img_strength_runs_the_last_steps_and_eta_draws_after_the_image() -> None:
    pipe = tiny.tiny_sd_img2img_pipeline()
    for strength, eta in ((0.35, 0.0), (1.0, 1.0)):
        arguments = {"image": IMAGE, "strength": strength, "eta": eta, "output_type": "latent"}
        expected = call(pipe, 6, arguments).images
        out = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 6, arguments)
        assert out.steps == int(STEPS * strength)
        assert float((out.images - expected).abs().max()) <= EXACT * float(expected.abs().max())
    with pytest.raises(ValueError, match="strength 0.05 × num_inference_steps 10 leaves no step"):
        call(ParaTAAPipeline.from_pipe(pipe), 6, {"image": IMAGE, "strength": 0.05})
    with pytest.raises(ValueError, match="image: StableDiffusionImg2ImgPipeline samples from an image"):
        call(ParaTAAPipeline.from_pipe(pipe), 6, {"strength": 0.5})


# ---------------------------------------------------------------- refused, by name and with the reason


def test_the_schedulers_sana_and_wan_ship_are_sampled_as_they_are() -> None:
    """Sana ships DPM-Solver++ on flow σ and Wan UniPC on flow σ: each sampled as the pipeline samples it."""
    cases = (
        (tiny.tiny_sana_pipeline(), CASES["sana"][1], "DPMSolverMultistepScheduler"),
        (tiny.tiny_wan_pipeline(), CASES["wan"][1], "UniPCMultistepScheduler"),
    )
    for pipe, arguments, shipped in cases:
        assert type(pipe.scheduler).__name__ == shipped and pipe.scheduler.config.use_flow_sigmas
        expected = result(call(pipe, 2, arguments, output_type="latent"))
        sequential = call(
            ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 2, arguments, output_type="latent"
        )
        assert float((sequential.images - expected).abs().max()) <= EXACT * float(expected.abs().max()), (
            shipped
        )
        parataa = call(ParaTAAPipeline.from_pipe(pipe), 2, arguments, output_type="latent")
        gap = float((parataa.images.double() - expected.double()).pow(2).mean().sqrt())
        assert parataa.converged and parataa.iterations < STEPS and gap <= parataa.tol, (shipped, gap)


def test_img2img_with_a_multistep_sampler_begins_where_the_pipeline_does() -> None:
    """DPM-Solver++ 2M restarts its history at strength's cut, as the scheduler does from its begin index."""
    pipe = tiny.tiny_sd_img2img_pipeline()
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    arguments = {"image": IMAGE, "strength": 0.7, "output_type": "latent"}
    expected = call(pipe, 0, arguments).images
    ours = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 0, arguments)
    assert ours.steps == 7 and float((ours.images - expected).abs().max()) <= EXACT * float(
        expected.abs().max()
    )
    with pytest.raises(ValueError, match="samples from an image: call ParaTAAPipeline"):
        make_problem(from_pipeline(pipe), Request(PROMPT, steps=4))  # the app's and the CLI's way


def test_dit_with_euler_is_refused_with_what_its_pipeline_does() -> None:
    """DiTPipeline never scales x_T by init_noise_sigma and steps from scale_model_input's output: its
    Euler image is not Euler's, so the wrapper says so rather than give another image."""
    pipe = tiny.tiny_dit_pipeline()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DiTPipeline with EulerDiscreteScheduler: .*init_noise_sigma"):
        ParaTAAPipeline.from_pipe(pipe)(class_labels=[1], num_inference_steps=2)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)  # init σ 1: served
    expected = call(pipe, 1, {"class_labels": [3, 5]}, output_type="pt").images
    ours = call(
        ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 1, {"class_labels": [3, 5]}, output_type="pt"
    )
    assert float((ours.images - expected).abs().max()) <= 1e-4


def test_what_a_pipeline_adds_beyond_its_adapter_is_refused_by_name() -> None:
    sd35 = tiny.tiny_sd3_pipeline(large=True)
    with pytest.raises(ValueError, match="'skip_guidance_layers': paratta does not honour this argument"):
        ParaTAAPipeline.from_pipe(sd35)(PROMPT, skip_guidance_layers=[0])
    wan22 = flow_euler(tiny.tiny_wan_pipeline())
    wan22.register_to_config(boundary_ratio=0.5)
    with pytest.raises(ValueError, match="WanPipeline: this adapter serves Wan 2.1 .*boundary_ratio"):
        ParaTAAPipeline.from_pipe(wan22)


def test_a_subclass_is_served_by_its_base_adapter_unless_it_changes_what_it_reproduces() -> None:
    class Community(StableDiffusionPipeline):  # adds nothing to the sampling
        pass

    class Rewritten(StableDiffusionPipeline):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    parts = tiny.tiny_sd_pipeline().components
    community = Community(**parts)
    community.scheduler = DDIMScheduler.from_config(community.scheduler.config)
    arguments = {"height": 24, "width": 16, "output_type": "latent"}
    expected = call(community, 2, arguments).images
    ours = call(ParaTAAPipeline.from_pipe(community, solver="sequential"), 2, arguments).images
    assert float((ours - expected).abs().max()) <= EXACT * float(expected.abs().max())
    with pytest.raises(
        ValueError, match="Rewritten overrides StableDiffusionPipeline.__call__: paratta reproduces"
    ):
        ParaTAAPipeline.from_pipe(Rewritten(**parts))


# ---------------------------------------------------------------- the CLI takes each through the registry


@pytest.mark.parametrize("name", ["sdxl", "pixart-sigma", "wan"])
def test_the_cli_samples_each_folder_as_its_pipeline(name: str, tmp_path, capsys) -> None:
    from paratta.tools.cli import main

    build, arguments = CASES[name]
    pipe = build()
    pipe.save_pretrained(tmp_path / name, safe_serialization=True)
    size = {k: arguments[k] for k in ("height", "width")}
    argv = [
        "sample",
        "--model",
        str(tmp_path / name),
        "--prompt",
        PROMPT,
        "--steps",
        str(STEPS),
        "--seed",
        "4",
    ]
    argv += ["--guidance", "4", "--height", str(size["height"]), "--width", str(size["width"])]
    out = tmp_path / "x0.npy"
    latent = [*argv, "--solver", "sequential", "--output-type", "latent", "--output", str(out)]
    assert main(latent) == 0
    frames = {"num_frames": 81} if name == "wan" else {}  # the CLI runs the pipeline's own default
    expected = result(
        pipe(PROMPT, **size, **frames, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
             generator=torch.Generator().manual_seed(4))
    )[0]  # fmt: skip
    assert np.abs(np.load(out) - expected.float().numpy()).max() <= EXACT * float(expected.abs().max())
    if name == "wan":  # a video: its frames side by side
        assert main([*argv, "--output", str(tmp_path / "strip.png")]) == 0
        assert Image.open(tmp_path / "strip.png").size == (81 * size["width"], size["height"])


def test_the_app_shows_a_video_as_a_frame_strip_each_iteration(tmp_path, monkeypatch) -> None:
    """Wan through the app: every iteration's preview and the final image are frame strips (eight evenly
    spaced frames of the pipeline's default 81, side by side), and the run ends converged."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.run.handlers import RUN_OUTPUTS, make_run_handler
    from ui.view.render import STRIP_FRAMES

    tiny.tiny_wan_pipeline().save_pretrained(tmp_path / "wan", safe_serialization=True)
    folder = str(tmp_path / "wan")
    named = dict(
        prompt=PROMPT, negative_prompt="", seed=4, steps=STEPS, eta=0.0, guidance=4.0, solver="anderson",
        order=STEPS, window=STEPS, history=2, tol="", max_iters=STEPS, init="xT", stopping="budget",
        window_auto=False, family="auto",
    )  # fmt: skip
    frames = list(make_run_handler([folder])(model=folder, **named, height=48, width=32, init_state=None))
    final = dict(zip(RUN_OUTPUTS, frames[-1], strict=True))
    assert final["info"]["converged"], final["info"]
    image = final["image"]
    shape = np.asarray(Image.open(image) if isinstance(image, str) else image).shape
    assert shape[1] * 48 == shape[0] * STRIP_FRAMES * 32, shape  # 8 frames of 48×32, side by side
    previews = final["record"].previews
    assert previews and all(p.shape[1] == STRIP_FRAMES * p.shape[0] * 32 // 48 for p in previews)
