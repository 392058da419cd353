"""``ParaTAAPipeline.from_pipe``: the tiny SD, SD3, Flux and DiT pipelines, called with their own
arguments at a size that is not their default, against ``pipe(...)`` itself; the CLI's
``--height/--width/--seed`` against the same pipelines saved to folders."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, LMSDiscreteScheduler
from PIL import Image

from paratta import Iterate, ParaTAAPipeline, SolverConfig
from paratta.models.diffusers.tiny import (
    tiny_dit_pipeline,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
)
from paratta.planning.plan import resolve
from paratta.tools.cli import main

pytestmark = [  # no diffusers logs (conftest)
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("quiet_diffusers"),
]

PROMPT = "a red cat on a mat"
STEPS = 10
SIZE = {"height": 24, "width": 16}  # not the tiny pipelines' default (16×16 for SD and SD3, 256² for Flux)
EXACT = 1e-4  # sequential vs the pipeline: max |Δ| over max |latent|
TOL = resolve(SolverConfig(), STEPS).tol  # the default stopping rule's bound on the RMS distance of x_0
ARGUMENTS = {  # each pipeline's own keyword arguments, beyond prompt, size and seed
    "sd": {"negative_prompt": "blurry", "guidance_scale": 4.0},
    "sd3": {"negative_prompt": "blurry", "guidance_scale": 4.0, "max_sequence_length": 32},
    "flux": {"guidance_scale": 3.5, "max_sequence_length": 32},
}
BUILD = {"sd": tiny_sd_pipeline, "sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}


@pytest.fixture(scope="module")
def pipes() -> dict[str, object]:
    return {name: build() for name, build in BUILD.items()}


def call(pipe, seed: int, **extra):
    """``pipe(...)`` (or a wrapper of it) at SIZE with a seeded generator and no latents."""
    return pipe(
        PROMPT,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        **SIZE,
        **extra,
    )


@pytest.mark.parametrize("name", list(BUILD))
def test_sequential_equals_the_pipeline_and_parataa_lands_within_its_bound(pipes, name: str) -> None:
    pipe, arguments = pipes[name], {**ARGUMENTS[name], "output_type": "latent"}
    expected = call(pipe, 3, **arguments).images
    sequential = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 3, **arguments)
    assert type(sequential.images) is type(expected) and sequential.images.shape == expected.shape
    assert sequential.images.dtype == expected.dtype and sequential.iterations == STEPS
    scale = float(expected.abs().max())
    assert float((sequential.images - expected).abs().max()) <= EXACT * scale

    parataa = call(ParaTAAPipeline.from_pipe(pipe), 3, **arguments)
    assert parataa.converged and isinstance(parataa.iterations, int) and parataa.iterations < STEPS
    gap = (parataa.images.double() - expected.double()).pow(2).mean().sqrt()
    assert float(gap) <= TOL, float(gap)
    assert (
        parataa.residuals.shape == (parataa.iterations, STEPS) and len(parataa.windows) == parataa.iterations
    )
    assert parataa.trajectory.shape == (STEPS + 1, *expected.shape[1:])
    assert parataa.evaluations > 0 and parataa.seconds > 0


@pytest.mark.parametrize("name", list(BUILD))
def test_pil_images_of_the_pipelines_size(pipes, name: str) -> None:
    pipe = pipes[name]
    expected = call(pipe, 5, **ARGUMENTS[name]).images
    images = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 5, **ARGUMENTS[name]).images
    assert isinstance(images, list) and len(images) == 1 and isinstance(images[0], Image.Image)
    assert images[0].size == expected[0].size == (SIZE["width"], SIZE["height"])
    ours, theirs = np.asarray(images[0], dtype=int), np.asarray(expected[0], dtype=int)
    assert np.abs(ours - theirs).max() <= 1  # 8-bit pixels: at most one level of rounding apart


def test_np_and_pt_outputs_and_ddpm_noises_drawn_as_the_pipeline_draws_them(pipes) -> None:
    """η = 1: the generator gives x_T, then one noise per step, as DDIMScheduler.step draws them."""
    pipe = pipes["sd"]
    wrapped = ParaTAAPipeline.from_pipe(pipe, solver="sequential")
    for output_type in ("np", "pt"):
        expected = call(pipe, 7, eta=1.0, guidance_scale=3.0, output_type=output_type).images
        ours = call(wrapped, 7, eta=1.0, guidance_scale=3.0, output_type=output_type).images
        assert type(ours) is type(expected) and ours.shape == expected.shape and ours.dtype == expected.dtype
        assert float(abs(ours - expected).max()) <= 1e-4


@pytest.mark.parametrize("name", ["sd", "flux"])
def test_a_float16_pipeline_draws_its_seed_in_float16(name: str) -> None:
    """A half-precision pipeline draws x_T in float16, which is not a float32 draw rounded: the wrapped
    pipeline stays float16 and lands on its image up to float16 round-off (another draw is O(1) off)."""
    pipe = BUILD[name]().to(dtype=torch.float16)
    arguments = {**ARGUMENTS[name], "output_type": "latent"}
    expected = call(pipe, 3, **arguments).images
    ours = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 3, **arguments).images
    assert pipe.dtype == ours.dtype == expected.dtype == torch.float16
    assert float((ours.float() - expected.float()).abs().max()) <= 1e-2 * float(expected.abs().max())


def test_latents_at_another_size_set_the_size(pipes) -> None:
    """Given latents and no height/width, SD runs at the latents' size, as the pipeline does."""
    pipe = pipes["sd"]
    latents = torch.randn(1, 4, 4, 12, generator=torch.Generator().manual_seed(1))
    common = dict(num_inference_steps=STEPS, guidance_scale=2.0, output_type="latent")
    expected = pipe(PROMPT, latents=latents.clone(), **common).images
    ours = ParaTAAPipeline.from_pipe(pipe, solver="sequential")([PROMPT], latents=latents, **common).images
    assert ours.shape == (1, 4, 4, 12) and float((ours - expected).abs().max()) <= EXACT * float(
        expected.abs().max()
    )


def test_a_model_over_replicas_stays_one_at_another_size(pipes) -> None:
    from paratta import Request, make_problem, run
    from paratta.models.diffusers.load import from_pipeline
    from paratta.parallel.replicas import ReplicatedModel

    model = from_pipeline(pipes["sd3"])
    request = Request(PROMPT, seed=2, steps=6, guidance=3.0, **SIZE)
    problem = make_problem(ReplicatedModel([model, model]), request)
    assert isinstance(problem.model, ReplicatedModel) and problem.model.latent_shape == (4, 12, 8)
    split, single = run(problem), run(make_problem(model, request))
    assert split.iteration == single.iteration  # not bitwise: CPU kernels round by batch size
    assert float((split.x0 - single.x0).abs().max()) <= 1e-5 * float(single.x0.abs().max())
    with pytest.raises(ValueError, match="shapes samples at one size"):
        from paratta import load_model

        make_problem(ReplicatedModel([load_model("shapes")] * 2), Request("red circle", steps=4, height=64))


def test_dit_class_labels_and_its_own_outputs() -> None:
    pipe = tiny_dit_pipeline()
    common = dict(class_labels=[207], guidance_scale=4.0, num_inference_steps=STEPS, output_type="np")
    expected = pipe(generator=torch.Generator().manual_seed(2), **common).images
    ours = ParaTAAPipeline.from_pipe(pipe)(generator=torch.Generator().manual_seed(2), **common)
    assert isinstance(ours.images, np.ndarray) and ours.images.shape == expected.shape == (1, 16, 16, 3)
    # random weights are no denoiser: the count is within T, not a figure (docs/stopping.md)
    assert ours.iterations <= STEPS and float(np.abs(ours.images - expected).max()) < 1e-2
    with pytest.raises(ValueError, match="'height' is not an argument of DiTPipeline"):
        ParaTAAPipeline.from_pipe(pipe)(class_labels=[1], height=32)


def test_records_by_callback_and_by_iterator(pipes) -> None:
    wrapped = ParaTAAPipeline.from_pipe(pipes["sd3"], order=4)
    seen: list[Iterate] = []
    out = call(wrapped, 1, output_type="latent", on_iteration=seen.append)
    assert [r.iteration for r in seen] == list(range(1, out.iterations + 1)) and seen[-1].converged
    assert torch.equal(seen[-1].trajectory, out.trajectory)
    with pytest.raises(AttributeError):
        seen[0].iteration = 7  # immutable
    streamed = list(
        wrapped.iterate(PROMPT, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(1), **SIZE)
    )
    assert len(streamed) == out.iterations and torch.equal(streamed[-1].x0, seen[-1].x0)


def test_the_pipeline_is_wrapped_not_copied(pipes) -> None:
    pipe = pipes["sd"]
    before = {n: p.data_ptr() for n, p in pipe.unet.named_parameters()}
    wrapped = ParaTAAPipeline.from_pipe(pipe)
    assert wrapped.pipe is pipe and wrapped.model.unet is pipe.unet
    assert {n: p.data_ptr() for n, p in pipe.unet.named_parameters()} == before


def test_what_paratta_cannot_honour_is_refused_by_name(pipes) -> None:
    sd, flux, sd3 = pipes["sd"], pipes["flux"], pipes["sd3"]
    wrapped = ParaTAAPipeline.from_pipe(sd)
    with pytest.raises(
        ValueError, match="'max_sequence_length' is not an argument of StableDiffusionPipeline"
    ):
        wrapped(PROMPT, max_sequence_length=32)
    with pytest.raises(ValueError, match="'guidance_rescale': paratta does not honour"):
        wrapped(PROMPT, guidance_rescale=0.7)
    with pytest.raises(ValueError, match="max_sequence_length must be an integer in \\[1, 512\\]"):
        ParaTAAPipeline.from_pipe(flux)(PROMPT, max_sequence_length=600)
    with pytest.raises(ValueError, match="num_images_per_prompt must be a positive integer; got 0"):
        wrapped(PROMPT, num_images_per_prompt=0)
    with pytest.raises(ValueError, match="prompt must be a string or a list of strings"):
        wrapped([PROMPT, 3])
    with pytest.raises(ValueError, match="num_inference_steps: steps must be an integer in \\[1, 1000\\]"):
        wrapped(PROMPT, num_inference_steps=0)
    with pytest.raises(ValueError, match="output_type must be one of pil, np, pt, latent"):
        wrapped(PROMPT, output_type="jpeg")
    with pytest.raises(ValueError, match="height and width must be multiples of 8, got 20×16"):
        wrapped(PROMPT, height=20, width=16)
    with pytest.raises(ValueError, match="height and width must be multiples of 4, got 18×16"):
        ParaTAAPipeline.from_pipe(flux)(PROMPT, height=18, width=16)
    with pytest.raises(ValueError, match="at most 32 for this model"):  # the tiny SD3's position table
        ParaTAAPipeline.from_pipe(sd3)(PROMPT, height=64, width=16)
    with pytest.raises(ValueError, match="unknown setting 'windw'"):
        ParaTAAPipeline.from_pipe(sd, windw=4)
    with pytest.raises(ValueError, match="history must be an integer in \\[1, 10\\]"):
        ParaTAAPipeline.from_pipe(sd, history=0)
    with pytest.raises(ValueError, match="order must be an integer in \\[1, T\\] \\(T = 10\\)"):
        ParaTAAPipeline.from_pipe(sd, order=20)(PROMPT, num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="generator: a list of 3 generators for 2 images"):
        wrapped([PROMPT, PROMPT], generator=[torch.Generator()] * 3)
    lms = tiny_sd_pipeline()  # wrapped, then refused at the call that would sample it
    lms.scheduler = LMSDiscreteScheduler.from_config(lms.scheduler.config)
    with pytest.raises(ValueError, match="'LMSDiscreteScheduler' is not one paratta expresses"):
        ParaTAAPipeline.from_pipe(lms)(PROMPT, num_inference_steps=STEPS)


# ---------------------------------------------------------------- behaving like the pipeline


def test_to_device_dtype_and_components_are_the_pipelines() -> None:
    pipe = tiny_sd_pipeline()
    wrapped = ParaTAAPipeline.from_pipe(pipe, solver="sequential")
    assert wrapped.to("cpu") is wrapped and wrapped.device == pipe.device == torch.device("cpu")
    assert wrapped.dtype == pipe.dtype == torch.float32
    assert wrapped.components.keys() == pipe.components.keys()
    assert all(wrapped.components[k] is v for k, v in pipe.components.items())
    wrapped.to(torch.float16)  # the pipeline moves, and the adapter with it
    assert pipe.dtype == wrapped.dtype == wrapped.model.dtype == torch.float16
    out = wrapped(
        PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="latent"
    )
    assert out.images.dtype == torch.float16
    wrapped.to(dtype=torch.float32)
    assert pipe.unet.dtype == wrapped.model.dtype == torch.float32


def test_a_progress_bar_over_parallel_iterations_as_configured(pipes) -> None:
    wrapped = ParaTAAPipeline.from_pipe(pipes["sd"])
    shown = io.StringIO()
    wrapped.set_progress_bar_config(file=shown, ascii=True)
    out = call(wrapped, 1, output_type="latent")
    assert f"{out.iterations}/{STEPS}" in shown.getvalue() and "anchor 0/10" in shown.getvalue()
    assert pipes["sd"]._progress_bar_config["file"] is shown  # one configuration for both bars
    quiet = io.StringIO()
    wrapped.set_progress_bar_config(file=quiet, disable=True)
    call(wrapped, 1, output_type="latent")
    assert quiet.getvalue() == ""


def test_two_prompts_two_images_each_as_one_system(pipes) -> None:
    """Four images, each its own rows of one batched system: each equals the image pipe(...) returns
    (sequential: to round-off; ParaTAA: each within tol, which the run divides by √4 for the whole)."""
    for name in ("sd", "flux"):
        pipe = pipes[name]
        arguments = {
            **{k: v for k, v in ARGUMENTS[name].items() if k != "negative_prompt"},
            "num_images_per_prompt": 2,
            "output_type": "latent",
        }
        if name == "sd":
            arguments["negative_prompt"] = ["blurry", "dark"]
        prompts = [PROMPT, "a blue dog"]
        expected = pipe(
            prompts,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(2),
            **SIZE,
            **arguments,
        ).images
        assert expected.shape[0] == 4
        for solver in ("sequential", "anderson"):
            wrapped = ParaTAAPipeline.from_pipe(pipe, solver=solver)
            out = wrapped(
                prompts,
                num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(2),
                **SIZE,
                **arguments,
            )
            assert out.images.shape == expected.shape and out.trajectory.shape == (STEPS + 1, *expected.shape)
            if solver == "sequential":
                assert float((out.images - expected).abs().max()) <= EXACT * float(expected.abs().max())
                continue
            per_image = (out.images.double() - expected.double()).pow(2).flatten(1).mean(1).sqrt()
            assert out.converged and out.iterations < STEPS and bool((per_image <= out.tol).all()), per_image
    images = call(ParaTAAPipeline.from_pipe(pipes["sd"]), 2, num_images_per_prompt=2).images
    assert isinstance(images, list) and len(images) == 2 and images[0].size == (16, 24)


def test_a_list_of_generators_draws_each_image_from_its_own(pipes) -> None:
    pipe = pipes["sd"]
    common = dict(num_inference_steps=STEPS, output_type="latent", **SIZE)
    generators = lambda: [torch.Generator().manual_seed(s) for s in (7, 8)]  # noqa: E731
    expected = pipe([PROMPT, PROMPT], generator=generators(), **common).images
    ours = ParaTAAPipeline.from_pipe(pipe, solver="sequential")(
        [PROMPT, PROMPT], generator=generators(), **common
    )
    assert float((ours.images - expected).abs().max()) <= EXACT * float(expected.abs().max())


def test_precomputed_embeddings_pooled_ones_included() -> None:
    from paratta.models.diffusers.tiny import tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline()
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, negative_prompt="blurry", device="cpu"
    )
    given = dict(
        prompt_embeds=embeds, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled, num_inference_steps=STEPS, output_type="latent",
        **SIZE,
    )  # fmt: skip
    expected = pipe(generator=torch.Generator().manual_seed(3), **given).images
    ours = ParaTAAPipeline.from_pipe(pipe, solver="sequential")(
        generator=torch.Generator().manual_seed(3), **given
    )
    assert float((ours.images - expected).abs().max()) <= EXACT * float(expected.abs().max())
    with pytest.raises(ValueError, match="prompt: give a prompt .* or prompt_embeds"):
        ParaTAAPipeline.from_pipe(pipe)(num_inference_steps=STEPS)


def test_the_scheduler_is_read_at_each_call() -> None:
    """A scheduler set after wrapping is the one sampled (DPM-Solver++ 2M: its image, not DDIM's), and
    one paratta cannot sample as the pipeline does is refused with its reason, never ignored."""
    pipe = tiny_sd_pipeline()
    wrapped = ParaTAAPipeline.from_pipe(pipe, solver="sequential")
    ddim = call(wrapped, 4, output_type="latent").images
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    expected = call(pipe, 4, output_type="latent").images
    ours = call(wrapped, 4, output_type="latent").images
    assert float((ours - expected).abs().max()) <= EXACT * float(expected.abs().max())
    assert float((ours - ddim).abs().max()) > 100 * EXACT * float(expected.abs().max())  # not DDIM's image
    wrapped.scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)  # sets the pipeline's
    assert isinstance(pipe.scheduler, LMSDiscreteScheduler)
    with pytest.raises(ValueError, match="scheduler LMSDiscreteScheduler: .*is not one paratta expresses"):
        call(wrapped, 4)


def test_callback_on_step_end_once_per_parallel_iteration(pipes) -> None:
    """``callback_on_step_end(pipe, i, t, {"latents": x_0})`` after each parallel iteration: i counts them,
    t is the noisiest step not final yet, the latents the iterate's x_0; the last are the result."""
    pipe = pipes["sd"]
    seen: list[tuple[int, int, torch.Tensor]] = []

    def callback(p, i, t, kwargs):
        assert p is pipe
        seen.append((i, int(t), kwargs["latents"]))
        return kwargs

    out = call(ParaTAAPipeline.from_pipe(pipe), 3, output_type="latent", callback_on_step_end=callback)
    assert [i for i, _, _ in seen] == list(range(out.iterations))
    assert torch.equal(seen[-1][2], out.images) and seen[-1][2].shape == (1, 4, 12, 8)
    timesteps = [t for _, t, _ in seen]
    assert timesteps == sorted(timesteps, reverse=True) and timesteps[-1] == 1  # the last step: t = 1

    def rewrites(p, i, t, kwargs):
        return {"latents": kwargs["latents"] * 0}

    with pytest.raises(ValueError, match="callback_on_step_end returned new latents"):
        call(ParaTAAPipeline.from_pipe(pipe), 3, callback_on_step_end=rewrites)
    with pytest.raises(ValueError, match="'prompt_embeds' is not given per parallel iteration"):
        call(
            ParaTAAPipeline.from_pipe(pipe), 3, callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        )  # fmt: skip
    from diffusers.callbacks import SDCFGCutoffCallback

    with pytest.raises(ValueError, match="PipelineCallback objects .* are not supported"):
        call(
            ParaTAAPipeline.from_pipe(pipe),
            3,
            callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=0.5),
        )


def test_float16_on_cpu_the_gap_is_the_pipelines_float16_state() -> None:
    """A float16 pipeline keeps its latents in float16 and steps in float16 arithmetic: its own loop with
    a float32 state ends as far from it as paratta (float64 state) does, and paratta is an order of
    magnitude closer to that float32-state loop than the pipeline is."""
    pipe = tiny_sd_pipeline().to(dtype=torch.float16)
    arguments = {**ARGUMENTS["sd"], "output_type": "latent"}
    expected = call(pipe, 3, **arguments).images.float()
    ours = call(ParaTAAPipeline.from_pipe(pipe, solver="sequential"), 3, **arguments).images.float()
    embeds = torch.cat(pipe.encode_prompt(PROMPT, "cpu", 1, True, "blurry")[::-1])
    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    x = call_latents(pipe, 3).float()
    for t in scheduler.timesteps:
        with torch.no_grad():
            u, c = (
                pipe.unet(torch.cat([x, x]).half(), t, encoder_hidden_states=embeds).sample.float().chunk(2)
            )
        x = scheduler.step(u + 4.0 * (c - u), t, x).prev_sample
    scale = float(expected.abs().max())
    pipeline_gap, our_gap = float((x - expected).abs().max()) / scale, float((x - ours).abs().max()) / scale
    assert pipeline_gap > 1e-3 and our_gap < pipeline_gap / 5, (pipeline_gap, our_gap)


def call_latents(pipe, seed: int) -> torch.Tensor:
    """x_T as the pipeline draws it at SIZE (float16 for a float16 pipeline)."""
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, 4, SIZE["height"] // 2, SIZE["width"] // 2)
    return randn_tensor(shape, generator=torch.Generator().manual_seed(seed), dtype=pipe.dtype)


# ---------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def folders(pipes, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pipelines")
    for name, pipe in pipes.items():
        pipe.save_pretrained(root / name, safe_serialization=True)
    return {name: str(root / name) for name in pipes}


@pytest.mark.parametrize("name", list(BUILD))
def test_cli_height_width_and_seed_draw_as_the_pipeline(pipes, folders, name: str, tmp_path) -> None:
    pipe, extra = pipes[name], {k: v for k, v in ARGUMENTS[name].items() if k != "max_sequence_length"}
    guidance = extra["guidance_scale"]
    argv = ["sample", "--model", folders[name], "--prompt", PROMPT, "--steps", str(STEPS), "--seed", "4"]
    argv += ["--guidance", str(guidance), "--height", "24", "--width", "16"]
    if "negative_prompt" in extra:
        argv += ["--negative-prompt", extra["negative_prompt"]]
    out = tmp_path / "x0.npy"
    assert main([*argv, "--solver", "sequential", "--output-type", "latent", "--output", str(out)]) == 0
    expected = call(pipe, 4, output_type="latent", **extra).images[0]
    assert np.abs(np.load(out) - expected.numpy()).max() <= EXACT * float(expected.abs().max())
    png = tmp_path / "image.png"
    assert main([*argv, "--output", str(png)]) == 0
    assert Image.open(png).size == (16, 24)


def test_cli_takes_fluxs_own_packed_latents_at_its_size(pipes, folders, tmp_path) -> None:
    """The packed (tokens, 4C) latents of a 32×32 Flux image, with --height/--width saying the size."""
    pipe = pipes["flux"]
    latents = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(8))
    np.save(tmp_path / "xT.npy", latents.numpy())
    out = tmp_path / "x0.npy"
    argv = ["sample", "--model", folders["flux"], "--prompt", PROMPT, "--steps", "6", "--guidance", "3.5"]
    argv += ["--latents", str(tmp_path / "xT.npy"), "--solver", "sequential", "--output-type", "latent"]
    assert main([*argv, "--height", "32", "--width", "32", "--output", str(out)]) == 0
    expected = pipe(
        PROMPT, latents=latents.clone(), height=32, width=32, num_inference_steps=6, guidance_scale=3.5,
        output_type="latent",
    ).images[0]  # fmt: skip
    assert np.abs(np.load(out) - expected.numpy()).max() <= EXACT * float(expected.abs().max())


def test_cli_refuses_a_size_in_one_line(folders, capsys) -> None:
    base = ["sample", "--model", folders["flux"], "--prompt", PROMPT, "--steps", "4"]
    assert main([*base, "--height", "18"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: height and width must be multiples of 4, got 18×256"
    ]
    assert main(["sample", "--model", "shapes", "--height", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: height and width: shapes samples at one size")
    assert main([*base, "--width", "99999"]) == 2
    assert "width must be an integer in [8, 4096]" in capsys.readouterr().err


# ---------------------------------------------------------------- the app


APP_RUN = dict(
    prompt=PROMPT, negative_prompt="", seed=4, steps=STEPS, eta=0.0, guidance=3.0, solver="anderson",
    order=STEPS, window=STEPS, history=2, tol="", max_iters=STEPS, init="xT", stopping="budget",
    window_auto=False, family="auto",
)  # fmt: skip


def test_the_app_runs_a_diffusers_model_at_a_chosen_size(folders, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.run.door import work_bound
    from ui.run.handlers import RUN_OUTPUTS, make_run_handler
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps
    from ui.serve.models import get_model

    model = folders["sd3"]
    run = make_run_handler([model, "shapes"])
    frames = list(run(model=model, **APP_RUN, height="24", width=16, init_state=None))
    final = dict(zip(RUN_OUTPUTS, frames[-1], strict=True))
    assert final["info"]["converged"] and final["info"]["iteration"] < STEPS
    assert final["record"].latent_shape == (4, 12, 8) and final["record"].settings["height"] == 24
    image = final["image"]
    shape = np.asarray(Image.open(image) if isinstance(image, str) else image).shape
    assert (
        shape[0] % 24 == 0 and shape[0] * 16 == shape[1] * 24
    )  # 24×16, enlarged by a whole factor for display

    with pytest.raises(Exception, match="height and width: shapes samples at one size"):
        list(run(model="shapes", **dict(APP_RUN, prompt="red circle"), height=24, width="", init_state=None))
    with pytest.raises(Exception, match="multiples of 4"):
        list(run(model=model, **APP_RUN, height=18, width=16, init_state=None))
    # The Space's work cap counts the image's area: twice the default size's work passes, 4× the area not.
    settings = parse_settings(**dict(APP_RUN, model=model), caps=Caps.from_env())
    monkeypatch.setenv("PARATTA_MAX_WORK_S", str(2 * work_bound(settings, get_model(model))[1]))
    with pytest.raises(Exception, match="network evaluations"):
        list(run(model=model, **APP_RUN, height=32, width=32, init_state=None))


def test_the_samplers_race_runs_on_sd_and_is_refused_for_a_flow_model(folders, monkeypatch, tmp_path) -> None:
    """SD (its own PNDM replaced by each lane's sampler) races DDIM-50 against DPM++ 2M-20, each lane
    on its own sequential image; SD3 has its flow Euler only, and the race says so before it starts."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.run.handlers import RACE_OUTPUTS, make_race_handler

    race = make_race_handler([folders["sd"], folders["sd3"]])
    named = {k: v for k, v in APP_RUN.items() if k not in ("solver", "init")}
    with pytest.raises(Exception, match="the samplers race cannot run here: sd3 is a flow-matching"):
        list(race(contest="samplers", model=folders["sd3"], **named))
    final = dict(
        zip(RACE_OUTPUTS, list(race(contest="samplers", model=folders["sd"], **named))[-1], strict=True)
    )
    lanes = {"DDIM-50": 50, "DPM++ 2M-20": 20}
    assert {lane: final["info"][lane]["steps"] for lane in lanes} == lanes
    assert all(final["info"][lane]["converged"] and final["info"][lane]["same_image"] for lane in lanes)
    assert "each ended on its own sequential image" in final["stats"]
    assert "the two samplers' own images differ by up to" in final["stats"]


@pytest.mark.slow
def test_the_app_on_a_diffusers_folder_samples_at_a_size_asked_through_gradio_client(
    folders, monkeypatch, tmp_path
) -> None:
    """The app as a user drives it: started on a tiny SD3 folder, /run with height and width over
    gradio_client records latents of that size and ends converged."""
    import httpx
    from gradio_client import Client

    from tests.local import free_port
    from ui.app import build_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    demo = build_demo(folders["sd3"])
    demo.queue(default_concurrency_limit=1)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        settings = dict(APP_RUN, model=folders["sd3"], height=24, width=16)
        result = client.predict(**settings, api_name="/run")  # RUN_OUTPUTS: image first, info seventh
        assert result[6]["converged"] and result[6]["iteration"] < STEPS, result[6]
        with httpx.Client() as http:
            image = Image.open(io.BytesIO(http.get(result[0]["url"], timeout=30).content))
        assert image.height * 16 == image.width * 24, image.size  # 24×16, enlarged by a whole factor
        with pytest.raises(Exception, match="multiples of 4"):
            client.predict(**dict(settings, height=18), api_name="/run")
    finally:
        demo.close()
