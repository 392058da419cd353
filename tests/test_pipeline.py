"""``ParaTAAPipeline.from_pipe``: the tiny SD, SD3, Flux and DiT pipelines, called with their own
arguments at a size that is not their default, against ``pipe(...)`` itself; the CLI's
``--height/--width/--seed`` against the same pipelines saved to folders."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler
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
    assert ours.iterations < STEPS and float(np.abs(ours.images - expected).max()) < 1e-2
    with pytest.raises(ValueError, match="'height': paratta does not honour|'height' is not an argument"):
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
    with pytest.raises(ValueError, match="prompt: paratta samples one image per call; got a list of 2"):
        wrapped([PROMPT, PROMPT])
    with pytest.raises(ValueError, match="max_sequence_length must be an integer in \\[1, 512\\]"):
        ParaTAAPipeline.from_pipe(flux)(PROMPT, max_sequence_length=600)
    with pytest.raises(ValueError, match="num_images_per_prompt: paratta samples one image"):
        wrapped(PROMPT, num_images_per_prompt=2)
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
    pndm = tiny_sd_pipeline()
    pndm.scheduler = PNDMScheduler.from_config(pndm.scheduler.config)
    with pytest.raises(ValueError, match="PNDMScheduler"):
        ParaTAAPipeline.from_pipe(pndm)


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
