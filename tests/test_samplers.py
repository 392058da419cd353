"""Euler and DPM-Solver++ 2M (``paratta.multistep``): the grids and step chains equal diffusers' own, the
sequential sampler equals the pipelines given ``latents=``, ParaTAA ends within its guarantee of it in
fewer iterations than steps, and a scheduler paratta cannot express is named, never swapped silently."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from paratta import Request, SolverConfig, load_model, make_problem, run, sample_sequential
from paratta.metrics import distance
from paratta.models.diffusers.sd import StableDiffusionModel
from paratta.models.diffusers.tiny import tiny_sd_pipeline
from paratta.multistep import (
    DPM_SCHEDULER,
    EULER_SCHEDULER,
    MultistepSchedulerConfig,
    multistep_coefficients,
    multistep_grid,
)
from paratta.planning.plan import resolve
from paratta.schedule import coefficients, sampler_config
from paratta.tools.cli import summary_line

pytestmark = [  # no diffusers logs (conftest); the tiny configs' steps_offset=0 warns
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("quiet_diffusers"),
]

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
CLASSES = {EULER_SCHEDULER: EulerDiscreteScheduler, DPM_SCHEDULER: DPMSolverMultistepScheduler}
VARIANTS = [  # (class, extra config) covering spacing, Karras, the final σ and DPM's end rules
    (EULER_SCHEDULER, {}),
    (EULER_SCHEDULER, {"use_karras_sigmas": True}),
    (EULER_SCHEDULER, {"timestep_spacing": "leading"}),
    (EULER_SCHEDULER, {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
    (EULER_SCHEDULER, {"use_exponential_sigmas": True}),
    (DPM_SCHEDULER, {}),
    (DPM_SCHEDULER, {"use_karras_sigmas": True}),
    (DPM_SCHEDULER, {"timestep_spacing": "leading"}),
    (DPM_SCHEDULER, {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
    (DPM_SCHEDULER, {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
    (DPM_SCHEDULER, {"final_sigmas_type": "sigma_min", "euler_at_final": True}),
    (DPM_SCHEDULER, {"solver_type": "heun", "use_karras_sigmas": True}),
    (DPM_SCHEDULER, {"solver_order": 1}),
]
STEPS = 10
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a network: nonlinear in x and dependent on t."""
    return torch.tanh(x) * 0.7 + 0.3 * torch.sin(3 * x + t.float() / 100)


def paratta_chain(coef, x_T: torch.Tensor) -> torch.Tensor:
    """x_0 by the coefficients alone: x_i = step_i(x_{i+1}) + r_i m_{i+1} (what ``sequential`` does)."""
    x, previous = x_T.double() * coef.init_scale, None
    for i in reversed(range(coef.num_steps)):
        idx = torch.tensor([i])
        out = network(x[None].float(), coef.timesteps[idx]).double()
        x_new = coef.step(idx, x[None], out, None)[0]
        if previous is not None and bool(coef.second[i] != 0):
            x_new = x_new + coef.second[i] * previous
        previous = coef.denoised(idx, x[None], out)[0]
        x = x_new
    return x


@pytest.mark.parametrize("kind,extra", VARIANTS)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_grid_and_step_chain_equal_diffusers(kind, extra, prediction) -> None:
    """σ, t and init_noise_sigma bit for bit; x_0 of the chain (ε, v) to float32 round-off, T = 1…25."""
    for steps in (1, 2, 7, 16, 25):
        scheduler = CLASSES[kind](**SD, **extra, prediction_type=prediction)
        scheduler.set_timesteps(steps)
        config = MultistepSchedulerConfig.from_dict({**dict(scheduler.config), "_class_name": kind})
        sigmas, timesteps, init = multistep_grid(config, steps)
        assert torch.equal(sigmas, scheduler.sigmas) and torch.equal(timesteps, scheduler.timesteps)
        assert timesteps.dtype == scheduler.timesteps.dtype and init == float(scheduler.init_noise_sigma)
        x_T = torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(steps))
        x = x_T[None] * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(network(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        ref = x[0].double()
        ours = paratta_chain(multistep_coefficients(config, steps), x_T)
        assert float((ours - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), steps


def test_euler_is_first_order_dpm_solver_and_second_order_reads_two_rows() -> None:
    """(2): Euler's coefficients are DPM-Solver++ 1's on the same grid; 2M is first order on its
    first step and on the last (final σ = 0) and reads m_{i+1} everywhere else."""
    euler = multistep_coefficients(
        MultistepSchedulerConfig(kind=EULER_SCHEDULER, timestep_spacing="leading"), 20
    )
    dpm1 = multistep_coefficients(
        MultistepSchedulerConfig(kind=DPM_SCHEDULER, timestep_spacing="leading", solver_order=1), 20
    )
    dpm2 = multistep_coefficients(MultistepSchedulerConfig(kind=DPM_SCHEDULER), 20)
    assert not bool(euler.second.any()) and not bool(dpm1.second.any())
    assert dpm2.second[0] == 0 and dpm2.second[-1] == 0 and bool((dpm2.second[1:-1] != 0).all())
    same = MultistepSchedulerConfig(kind=EULER_SCHEDULER, timestep_spacing="linspace")
    e = multistep_coefficients(same, 20)
    assert e.timesteps.dtype == torch.float32 and dpm1.timesteps.dtype == torch.int64
    # on one σ grid the two first-order steps are the same map
    assert torch.allclose(e.p, e.s[:-1] / (e.s[:-1] ** 2 + 1).sqrt() / (e.s[1:] / (e.s[1:] ** 2 + 1).sqrt()))
    assert euler.init_scale == pytest.approx(1.0)  # leading: init_noise_sigma = √(σ_max² + 1)


def test_refused_configs_are_named() -> None:
    for key, value in (
        ("algorithm_type", "sde-dpmsolver++"),
        ("solver_order", 3),
        ("thresholding", True),
        ("use_lu_lambdas", True),
    ):
        with pytest.raises(ValueError, match=key):
            coefficients({"_class_name": DPM_SCHEDULER, key: value}, 10)
    with pytest.raises(ValueError, match="interpolation_type"):
        coefficients({"_class_name": EULER_SCHEDULER, "interpolation_type": "log_linear"}, 10)
    with pytest.raises(ValueError, match="eta must be 0"):
        coefficients({"_class_name": EULER_SCHEDULER}, 10, eta=0.5)


def test_sampler_setting_rejects_what_it_cannot_sample() -> None:
    with pytest.raises(ValueError, match="sampler must be one of auto, ddim, euler"):
        Request(sampler="heun")
    with pytest.raises(ValueError, match="eta must be 0 with sampler dpm\\+\\+2m"):
        Request(sampler="dpm++2m", eta=0.5)
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler"}
    assert sampler_config(flow, "euler") == flow
    with pytest.raises(ValueError, match="sampler must be one of auto, euler for a flow-matching model"):
        sampler_config(flow, "dpm++2m-karras")
    shapes = load_model("shapes")
    with pytest.raises(ValueError, match="sampler must be one of auto, euler"):
        make_problem(shapes, Request("circle", steps=5, family="flow", sampler="euler-karras"))
    converted = sampler_config(shapes.scheduler_config, "dpm++2m-karras")
    assert converted["_class_name"] == DPM_SCHEDULER and converted["use_karras_sigmas"] is True
    assert converted["beta_schedule"] == "linear" and converted["timestep_spacing"] == "leading"
    assert sampler_config(converted, "ddim")["clip_sample"] is False


def pipeline_with(scheduler_class, prediction: str = "epsilon", **config):
    spacing = "trailing" if prediction == "v_prediction" else "leading"
    pipe = tiny_sd_pipeline(prediction, spacing)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **config)
    return pipe


def pipeline_latents(pipe, request: Request, latents: torch.Tensor) -> torch.Tensor:
    return pipe(
        request.prompt,
        negative_prompt=request.negative_prompt,
        guidance_scale=request.guidance,
        num_inference_steps=request.steps,
        latents=latents[None],
        output_type="latent",
    ).images[0]


PIPELINES = [
    ("Euler", EulerDiscreteScheduler, "epsilon", {}),
    ("Euler Karras", EulerDiscreteScheduler, "epsilon", {"use_karras_sigmas": True}),
    ("Euler Karras", EulerDiscreteScheduler, "v_prediction", {"use_karras_sigmas": True}),
    ("DPM++ 2M", DPMSolverMultistepScheduler, "epsilon", {}),
    ("DPM++ 2M Karras", DPMSolverMultistepScheduler, "epsilon", {"use_karras_sigmas": True}),
    ("DPM++ 2M Karras", DPMSolverMultistepScheduler, "v_prediction", {"use_karras_sigmas": True}),
]


@pytest.mark.parametrize("name,cls,prediction,config", PIPELINES)
def test_pipeline_scheduler_is_honoured_and_parataa_ends_within_its_guarantee(name, cls, prediction, config):
    """``--latents`` is the pipeline's ``latents=``: the sequential sampler equals
    ``pipe(..., latents=x, output_type="latent")`` to 1e-4 of the largest latent value, and ParaTAA
    (Jacobi and Anderson, W = T and W < T) ends within tol (RMS) of it in fewer iterations than steps."""
    pipe = pipeline_with(cls, prediction, **config)
    model = StableDiffusionModel(pipe, device="cpu")
    request = Request(PROMPT, NEGATIVE, 0, STEPS, 0.0, 3.0)
    x_T = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no replacement, so no statement
        problem = make_problem(model, request, latents=x_T)
    assert problem.sampler == name and problem.note is None
    ref = pipeline_latents(pipe, request, x_T)
    scale = float(ref.abs().max())
    assert float((sample_sequential(problem)[0].float() - ref).abs().max()) <= 1e-4 * scale
    tol = 1e-3
    for solver in ("jacobi", "anderson"):
        for window in ("device", STEPS // 2):
            last = run(problem, SolverConfig(solver=solver, window=window, tol=tol))
            assert last.converged and last.iteration < STEPS, (solver, window, last.iteration)
            assert last.spent <= tol and distance(last.x0, ref) <= tol, (solver, window)


def test_a_saved_pipeline_keeps_its_scheduler_through_the_registry(tmp_path) -> None:
    folder = tmp_path / "tiny-dpm"
    pipeline_with(DPMSolverMultistepScheduler, use_karras_sigmas=True).save_pretrained(folder)
    model = load_model(str(folder), device="cpu")
    assert model.scheduler_config["_class_name"] == DPM_SCHEDULER
    request = Request(PROMPT, NEGATIVE, 0, 6, 0.0, 3.0)
    x_T = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(2))
    ref = pipeline_latents(model.pipe, request, x_T)
    problem = make_problem(model, request, latents=x_T)
    assert problem.sampler == "DPM++ 2M Karras"
    assert float((sample_sequential(problem)[0].float() - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize(
    "cls", [HeunDiscreteScheduler, EulerAncestralDiscreteScheduler, UniPCMultistepScheduler, "sde", "pndm"]
)
def test_a_scheduler_paratta_cannot_express_is_named_never_swapped_silently(cls) -> None:
    """Sampled with DDIM on its noise schedule, and the run says so: ``Problem.note``, a warning, the
    CLI summary line."""
    if cls == "pndm":  # SD 1.5 ships it
        pipe, expected = pipeline_with(PNDMScheduler), "PNDMScheduler"
    elif cls == "sde":
        pipe = pipeline_with(DPMSolverMultistepScheduler, algorithm_type="sde-dpmsolver++")
        expected = r"DPMSolverMultistepScheduler is not supported \(.*sde-dpmsolver"
    else:
        pipe, expected = pipeline_with(cls), cls.__name__
    model = StableDiffusionModel(pipe, device="cpu")
    with pytest.warns(UserWarning, match="sampling DDIM on its noise schedule"):
        problem = make_problem(model, Request(PROMPT, steps=4))
    assert problem.sampler == "DDIM" and problem.note is not None
    assert re.search(f"the pipeline's {expected}", problem.note)
    line = summary_line(
        {
            "solver": "anderson",
            "iterations": 3,
            "sampler": problem.sampler,
            "steps": 4,
            "converged": True,
            "model_evaluations": 9,
            "seconds": 1.0,
            "output": "x.png",
            "sampler_note": problem.note,
        }
    )
    assert problem.note in line and "for DDIM, T = 4" in line


SAMPLERS = ("ddim", "euler", "euler-karras", "dpm++2m", "dpm++2m-karras")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_on_the_exact_mixture_ends_within_tol_of_its_own_sequential(sampler) -> None:
    """shapes at T = 20: Jacobi and Anderson, W = T and W < T, within the budget rule's tol of the
    sampler's own sequential x_0 and in fewer iterations than steps."""
    model = load_model("shapes")
    problem = make_problem(model, Request("red circle on blue", "", 0, 20, 0.0, 1.0, sampler=sampler))
    reference = sample_sequential(problem)[0]
    tol = resolve(SolverConfig(), 20).tol
    for solver in ("jacobi", "anderson"):
        for window in ("device", 8):
            last = run(problem, SolverConfig(solver=solver, window=window))
            assert last.converged and last.iteration < 20 and distance(last.x0, reference) <= tol


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS[1:])
@pytest.mark.parametrize("model_name", ["shapes", "shapes-unet"])
def test_every_sampler_ends_within_tol_over_seeds(sampler, model_name) -> None:
    model = load_model(model_name)
    for seed in range(6 if model_name == "shapes" else 2):
        for steps in (20, 30) if model_name == "shapes" else (20,):
            request = Request("red circle", "", seed, steps, 0.0, 3.0, sampler=sampler)
            problem = make_problem(model, request)
            reference = sample_sequential(problem)[0]
            last = run(problem, SolverConfig())
            assert last.converged and last.iteration < steps, (seed, steps)
            assert distance(last.x0, reference) <= resolve(SolverConfig(), steps).tol, (seed, steps)


# ---------------------------------------------------------------- the app


def test_the_app_runs_dpm_solver_and_says_so_and_refuses_it_for_a_flow_only_model(
    monkeypatch, tmp_path
) -> None:
    """The app's sampler setting: a DPM++ 2M Karras run ends on its own sequential image and the verdict
    names that sampler; a sampler the model cannot take is refused at the door with the choices."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.run.door import run_validator
    from ui.run.handlers import RUN_OUTPUTS, make_run_handler

    named = dict(
        model="shapes", prompt="red circle on blue", negative_prompt="", seed=0, steps=20, eta=0.0,
        guidance=1.0, solver="anderson", order=20, window=20, history=2, tol="", max_iters=20, init="xT",
        stopping="budget", window_auto=False, family="auto", sampler="dpm++2m-karras",
    )  # fmt: skip
    final = dict(
        zip(RUN_OUTPUTS, list(make_run_handler(["shapes"])(**named, init_state=None))[-1], strict=True)
    )
    assert final["info"]["converged"] and final["info"]["iteration"] < 20
    assert "Same image as sequential DPM++ 2M Karras" in final["stats"], final["stats"]
    validate = run_validator([*named, "init_state"], ["shapes", "toy2d"])
    flow_only = dict(named, model="toy2d", prompt="north", family="flow")
    said = [v.get("message", "") for v in validate(**flow_only, init_state=None) if v.get("message")]
    assert said and "sampler" in said[0] and "euler" in said[0], said
    assert not [v for v in validate(**named, init_state=None) if v.get("message")]
