"""Flow matching (SD3, Flux): the schedule against diffusers, the exact velocity of the embedded
mixtures, the tiny SD3/Flux adapters against their pipelines, and ParaTAA on all of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_calculate_shift

from paratta import Request, SolverConfig, coefficients, load_model, make_problem, run, sample_sequential
from paratta.config import TOLERANCE
from paratta.models.diffusers.flux import FluxModel
from paratta.models.diffusers.load import from_pipeline
from paratta.models.diffusers.sd3 import StableDiffusion3Model
from paratta.models.diffusers.tiny import tiny_flux_pipeline, tiny_sd3_pipeline
from paratta.models.mixture import IsotropicMixture, mixture_eps, mixture_velocity
from paratta.planning.plan import resolve
from paratta.samplers import family
from paratta.samplers.flow import FlowEulerConfig
from paratta.samplers.flow import grid as flow_sigmas
from paratta.samplers.grids import calculate_shift
from paratta.tools.cli import main

pytestmark = [  # no diffusers logs (conftest)
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("quiet_diffusers"),
]

EXACT = 1e-4  # sequential flow sampler vs the diffusers pipeline, max |Δ| on latents
PROMPT = "a red circle"
FLUX_SIZE = {"height": 16, "width": 16, "max_sequence_length": 32}  # 16 packed tokens, a short T5 prompt


def rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).pow(2).mean().sqrt())


# ---------------------------------------------------------------- the schedule


SCHEDULES = [  # (scheduler config, set_timesteps keywords); "flux" stands for Flux's custom grid
    ({}, {}),
    ({"shift": 3.0}, {}),  # SD3
    ({"shift": 3.0}, {"sigmas": "flux"}),
    ({"use_dynamic_shifting": True, "shift": 3.0}, {"mu": 0.8}),
    ({"use_dynamic_shifting": True}, {"mu": calculate_shift(4096), "sigmas": "flux"}),  # Flux at 1024²
    ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, {"mu": 1.3}),
    ({"shift": 2.0, "shift_terminal": 0.1}, {}),
    ({"invert_sigmas": True}, {}),
    ({"shift": 3.0, "use_karras_sigmas": True}, {}),
    ({"use_exponential_sigmas": True}, {}),
    ({"use_beta_sigmas": True}, {}),
    ({"num_train_timesteps": 500, "shift": 1.7}, {}),
]


@pytest.mark.parametrize(("config", "given"), SCHEDULES)
@pytest.mark.parametrize("steps", [2, 7, 28])
def test_sigmas_and_timesteps_equal_set_timesteps(config: dict, given: dict, steps: int) -> None:
    kwargs = {**given, **({"sigmas": np.linspace(1.0, 1 / steps, steps)} if "sigmas" in given else {})}
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    scheduler.set_timesteps(steps, **kwargs)
    sigmas, timesteps = flow_sigmas(FlowEulerConfig.from_dict(dict(scheduler.config)), steps, **kwargs)
    assert torch.equal(sigmas, scheduler.sigmas) and torch.equal(timesteps, scheduler.timesteps)


def test_mu_is_the_pipelines_and_follows_the_sequence_length() -> None:
    for n in (16, 256, 1024, 4096):
        assert calculate_shift(n) == diffusers_calculate_shift(n)
        assert calculate_shift(n, 256, 4096, 0.5, 1.16) == diffusers_calculate_shift(n, 256, 4096, 0.5, 1.16)
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}
    small = coefficients(config, 10, image_seq_len=256).sigma
    large = coefficients(config, 10, image_seq_len=4096).sigma
    assert (large[:-1] > small[:-1]).all()  # a larger image is shifted towards noise
    explicit = coefficients(config, 10, mu=calculate_shift(4096)).sigma
    assert torch.equal(explicit, large)


@pytest.mark.parametrize("config", [{"shift": 3.0}, {"invert_sigmas": True}])
def test_every_step_equals_the_schedulers_step(config: dict) -> None:
    steps = 9
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    scheduler.set_timesteps(steps)
    coef = coefficients({"_class_name": "FlowMatchEulerDiscreteScheduler", **config}, steps)
    assert torch.equal(coef.timesteps, scheduler.timesteps.flip(0))
    assert torch.allclose(coef.a, torch.ones_like(coef.a), rtol=0, atol=1e-12)  # the Euler step adds to x
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 3, generator=g)
    for k, t in enumerate(scheduler.timesteps):
        v = torch.randn(1, 4, 3, 3, generator=g)
        i = steps - 1 - k
        expected = scheduler.step(v, t, x, return_dict=False)[0]
        f = coef.features(torch.tensor([i]), x.double(), v.double())
        ours = coef.step(i, x[0].double(), v[0].double(), f, None)
        assert (ours - expected.double()).abs().max() < 1e-6
        x = expected
    noise = coef.noise  # the per-step rule's σ_i: the noise level x_i lands on, 0 for x_0
    assert float(noise[0]) == 0 and bool((noise[1:] > 0).all()) and bool((noise.diff() > 0).all())


def test_refused_schedulers_are_named() -> None:
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler"}
    with pytest.raises(ValueError, match="'KDPM2DiscreteScheduler'"):
        coefficients({"_class_name": "KDPM2DiscreteScheduler"}, 10)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        coefficients({**flow, "use_dynamic_shifting": True}, 10)
    with pytest.raises(ValueError, match="eta must be 0"):
        coefficients(flow, 10, eta=0.5)
    with pytest.raises(ValueError, match="use_karras_sigmas, use_beta_sigmas"):
        coefficients({**flow, "use_karras_sigmas": True, "use_beta_sigmas": True}, 10)
    with pytest.raises(ValueError, match="non-finite"):
        coefficients({**flow, "shift_terminal": 0.1}, 1)
    with pytest.raises(ValueError, match="mu: DDIMScheduler takes no mu"):
        coefficients({"_class_name": "DDIMScheduler"}, 10, mu=1.0)
    with pytest.raises(ValueError, match="eta must be 0 with family flow"):
        Request(family="flow", eta=1.0)
    assert family({}) == "ddim" and family(flow) == "flow"


def test_a_pipeline_with_a_scheduler_paratta_cannot_express_is_refused() -> None:
    """Loaded, then refused with the reason where a run is made (by the library, or at the wrapper's call)."""
    pipe = tiny_sd3_pipeline()
    pipe.scheduler = FlowMatchHeunDiscreteScheduler()
    model = from_pipeline(pipe, device="cpu")  # loads: another sampler may be asked for by name
    with pytest.raises(ValueError, match="'FlowMatchHeunDiscreteScheduler' is not one paratta expresses"):
        make_problem(model, Request("a cat", steps=4))
    from paratta import ParaTAAPipeline

    with pytest.raises(ValueError, match="FlowMatchHeunDiscreteScheduler: .*is not one paratta expresses"):
        ParaTAAPipeline.from_pipe(pipe)("a red cat", num_inference_steps=2)  # refused at the call


# ---------------------------------------------------------------- the embedded flow models


def test_velocity_of_one_gaussian_is_exact() -> None:
    """One component N(μ, s² I): E[x_0 | x_σ] = μ + (1 − σ) s² (x − (1 − σ) μ) / ((1 − σ)² s² + σ²)."""
    mu, s = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 0.3
    mix = IsotropicMixture.create(mu, s)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for sigma in (0.01, 0.3, 0.7, 1.0):
        mean = mu + (1 - sigma) * s**2 * (x - (1 - sigma) * mu) / ((1 - sigma) ** 2 * s**2 + sigma**2)
        v = mixture_velocity(x, sigma, mix, torch.zeros(1))
        assert (v - (x - mean) / sigma).abs().max() < 1e-12


def test_velocity_matches_a_monte_carlo_posterior_and_the_exact_eps() -> None:
    toy = load_model("toy2d")
    mix, weights = toy.mixture, toy.encode("").log_weights[0]
    g = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn(4, 2, generator=g, dtype=torch.float64)
    k = torch.randint(mix.num_components, (200_000,), generator=g)
    x0 = mix.means[k] + mix.variances[k].sqrt()[:, None] * torch.randn(k.shape[0], 2, generator=g).double()
    for sigma in (0.6, 0.9, 1.0):
        v = mixture_velocity(x, sigma, mix, weights)
        # Self-normalised importance sampling of E[ε − x_0 | x_σ = x] with x_0 from p_0.
        for row, point in enumerate(x):
            w = torch.softmax(-((point - (1 - sigma) * x0) ** 2).sum(1) / (2 * sigma**2), 0)
            estimate = (w[:, None] * ((point - (1 - sigma) * x0) / sigma - x0)).sum(0)
            assert (v[row] - estimate).abs().max() < 0.03
        if sigma < 1:  # the same field from ε* of the rescaled DDPM state x_σ / r
            r = math.hypot(1 - sigma, sigma)
            ab = ((1 - sigma) / r) ** 2
            eps = mixture_eps(x / r, torch.tensor(ab, dtype=torch.float64), mix, weights)
            x0_hat = (x / r - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            assert ((x - x0_hat) / sigma - v).abs().max() < 1e-10


def test_the_embedded_flow_sampler_is_the_schedulers_euler_loop() -> None:
    toy = load_model("toy2d").with_family("flow")
    problem = make_problem(load_model("toy2d"), Request("north", seed=2, steps=12, family="flow"))
    assert problem.model is toy and toy.mixture is load_model("toy2d").mixture  # a view, shared components
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(toy.scheduler_config)
    scheduler.set_timesteps(12)
    x = problem.x_T[None].clone()
    for t in scheduler.timesteps:
        x = scheduler.step(toy.predict(x, t[None], problem.cond, 1.0), t, x, return_dict=False)[0]
    assert (sample_sequential(problem, dtype=torch.float32)[0] - x[0]).abs().max() < 1e-5


CONFIGS = [
    SolverConfig(solver="jacobi"),
    SolverConfig(solver="anderson"),
    SolverConfig(solver="anderson", window=8, order=3),
    SolverConfig(solver="anderson-global"),
    SolverConfig(solver="anderson", stopping="per-step"),
    SolverConfig(solver="anderson", init="coarse"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.solver}-{c.window}-{c.stopping}-{c.init}")
def test_parataa_on_the_embedded_flow_mixture_ends_on_the_sequential_sample(config: SolverConfig) -> None:
    problem = make_problem(
        load_model("toy2d"), Request("north", seed=1, steps=30, guidance=2.0, family="flow")
    )
    reference = sample_sequential(problem)
    last = run(problem, config)
    assert last.converged and last.iteration < problem.steps
    if config.stopping == "budget":  # the bound on x_0; the published rule bounds none
        assert rms(last.x0, reference[0]) <= resolve(config, 30).tol
    else:
        assert rms(last.x0, reference[0]) < 1e-2


def test_shapes_flow_lands_on_its_images_in_fewer_iterations_than_steps() -> None:
    shapes = load_model("shapes")
    problem = make_problem(shapes, Request("red circle on blue", seed=0, steps=25, family="flow"))
    reference = sample_sequential(problem)
    last = run(problem, SolverConfig())
    assert last.converged and last.iteration < 25 and rms(last.x0, reference[0]) <= TOLERANCE["budget"]
    assert shapes.family == "ddim" and problem.model.family == "flow"  # the shared model is untouched
    nearest = (shapes.images.flatten(1) - last.x0.float().flatten()).pow(2).mean(1).sqrt().min()
    assert nearest < 0.1  # an image of the mixture (its component std is 0.06)


def test_a_ddim_only_model_refuses_the_flow_family() -> None:
    with pytest.raises(ValueError, match="shapes-unet is a DDIM .* family 'flow'"):
        make_problem(load_model("shapes-unet"), Request("red circle", steps=10, family="flow"))


def test_replicas_sample_the_flow_family_split_over_devices() -> None:
    from paratta.parallel.replicas import ReplicatedModel

    toy = load_model("toy2d")
    replicated = ReplicatedModel([toy, toy])
    request = Request("north", seed=4, steps=10, family="flow")
    problem = make_problem(replicated, request)
    assert isinstance(problem.model, ReplicatedModel) and problem.model is replicated.with_family("flow")
    single = make_problem(toy, request)
    assert torch.equal(run(problem).x0, run(single).x0)


# ---------------------------------------------------------------- tiny SD3 and Flux


@pytest.fixture(scope="module")
def sd3() -> tuple[StableDiffusion3Model, object]:
    pipe = tiny_sd3_pipeline()
    return from_pipeline(pipe, device="cpu", dtype=torch.float32), pipe


@pytest.fixture(scope="module")
def flux() -> tuple[FluxModel, object]:
    pipe = tiny_flux_pipeline()
    return from_pipeline(pipe, device="cpu", dtype=torch.float32, **FLUX_SIZE), pipe


def test_sd3_sequential_equals_the_pipeline_with_and_without_latents(sd3) -> None:
    model, pipe = sd3
    assert model.latent_shape == (4, 8, 8) and model.scheduler_config["shift"] == 3.0
    request = Request(PROMPT, "blurry", seed=3, steps=8, guidance=4.0)
    drawn = sample_sequential(make_problem(model, request), dtype=torch.float32)[0]
    generator = torch.Generator().manual_seed(3)  # the pipeline draws x_T as paratta does
    common = dict(negative_prompt="blurry", guidance_scale=4.0, num_inference_steps=8, output_type="latent")
    expected = pipe(PROMPT, generator=generator, **common).images[0]
    assert (drawn - expected).abs().max() <= EXACT
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    given = sample_sequential(make_problem(model, request, latents), dtype=torch.float32)[0]
    assert (given - pipe(PROMPT, latents=latents.clone(), **common).images[0]).abs().max() <= EXACT


def test_sd3_without_t5_and_with_dynamic_shifting_equals_the_pipeline() -> None:
    pipe = tiny_sd3_pipeline(with_t5=False, use_dynamic_shifting=True)
    model = from_pipeline(pipe, device="cpu", dtype=torch.float32)
    request = Request(PROMPT, seed=5, steps=6, guidance=1.0)  # guidance 1: one row per timestep
    problem = make_problem(model, request)
    ours = sample_sequential(problem, dtype=torch.float32)[0]
    expected = pipe(
        PROMPT,
        latents=problem.x_T[None].clone(),
        guidance_scale=1.0,
        num_inference_steps=6,
        output_type="latent",
    ).images[0]
    assert (ours - expected).abs().max() <= EXACT


def test_flux_sequential_equals_the_pipeline_on_packed_latents(flux) -> None:
    model, pipe = flux
    assert model.latent_shape == (16, 16) and model.image_size == (16, 16)
    request = Request(PROMPT, seed=2, steps=8, guidance=3.5)
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(4))  # (1, tokens, 4C)
    for given in (latents, None):
        problem = make_problem(model, request, given)
        ours = sample_sequential(problem, dtype=torch.float32)[0]
        expected = pipe(
            PROMPT,
            latents=problem.x_T[None].clone(),
            guidance_scale=3.5,
            num_inference_steps=8,
            output_type="latent",
            **FLUX_SIZE,
        ).images[0]
        assert (ours - expected).abs().max() <= EXACT
    image = model.decode(ours[None])
    assert image.shape == (1, 3, 16, 16) and 0 <= float(image.min()) <= float(image.max()) <= 1


@pytest.mark.parametrize("name", ["sd3", "flux"])
@pytest.mark.parametrize(
    "config",
    [
        SolverConfig(solver="jacobi"),
        SolverConfig(solver="anderson"),
        SolverConfig(solver="anderson", window=4),
    ],
    ids=["jacobi", "anderson", "anderson-W4"],
)
@pytest.mark.parametrize("with_latents", [False, True], ids=["drawn", "latents"])
def test_parataa_on_tiny_flow_pipelines_ends_on_the_sequential_sample(
    request: pytest.FixtureRequest, name: str, config: SolverConfig, with_latents: bool
) -> None:
    model, _ = request.getfixturevalue(name)
    latents = torch.randn((1, *model.latent_shape), generator=torch.Generator().manual_seed(7))
    problem = make_problem(
        model, Request(PROMPT, seed=1, steps=12, guidance=3.0), latents if with_latents else None
    )
    reference = sample_sequential(problem)
    last = run(problem, config)
    assert last.converged and last.iteration < problem.steps
    assert rms(last.x0, reference[0]) <= resolve(config, 12).tol


def test_cli_writes_the_pipelines_own_latents(sd3, tmp_path) -> None:
    model, pipe = sd3
    folder = tmp_path / "tiny-sd3"
    pipe.save_pretrained(folder, safe_serialization=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    np.save(tmp_path / "xT.npy", latents.numpy())
    out = tmp_path / "x0.npy"
    argv = ["sample", "--model", str(folder), "--prompt", PROMPT, "--steps", "8", "--guidance", "3"]
    argv += ["--solver", "sequential"]
    argv += ["--latents", str(tmp_path / "xT.npy"), "--output-type", "latent", "--output", str(out)]
    assert main(argv) == 0
    expected = pipe(
        PROMPT, latents=latents.clone(), guidance_scale=3.0, num_inference_steps=8, output_type="latent"
    )
    assert np.abs(np.load(out) - expected.images[0].numpy()).max() <= EXACT


def test_model_defaults_are_the_pipelines(sd3, flux) -> None:
    from paratta.registry import model_defaults

    assert (model_defaults("x/sd3", sd3[0]).guidance, model_defaults("x/sd3", sd3[0]).steps) == (7.0, 28)
    assert (model_defaults("x/flux", flux[0]).guidance, model_defaults("x/flux", flux[0]).steps) == (3.5, 28)


# ---------------------------------------------------------------- the app


APP_RUN = dict(
    model="toy2d", prompt="north", negative_prompt="", seed=0, steps=20, eta=0.0, guidance=1.0,
    solver="anderson", order=20, window=20, history=2, tol="", max_iters=20, init="xT", stopping="budget",
    window_auto=False, family="flow",
)  # fmt: skip


def test_the_app_runs_and_races_the_flow_family_to_its_sequential_point(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    from ui.run.handlers import RACE_OUTPUTS, RUN_OUTPUTS, make_race_handler, make_run_handler
    from ui.view.controls import RACE_INPUT_NAMES, RUN_INPUT_NAMES

    final = dict(
        zip(RUN_OUTPUTS, list(make_run_handler(["toy2d"])(**APP_RUN, init_state=None))[-1], strict=True)
    )
    info, record = final["info"], final["record"]
    assert info["converged"] and info["iteration"] < 20 and record.settings["family"] == "flow"
    assert "Same point as sequential flow-matching Euler" in final["stats"]  # toy2d: a point of the plane
    assert final["heatmap"] is not None and final["curves"] is not None
    raced = {n: APP_RUN[n] for n in RACE_INPUT_NAMES if n in APP_RUN} | {"contest": "solvers"}
    last = dict(zip(RACE_OUTPUTS, list(make_race_handler(["toy2d"])(**raced))[-1], strict=True))
    assert last["info"]["jacobi"]["converged"] and last["info"]["anderson"]["converged"]
    assert "sequential flow-matching Euler point" in last["stats"]
    assert (
        RUN_INPUT_NAMES[-4:] == RACE_INPUT_NAMES[-4:] == ("family", "height", "width", "sampler")
    )  # new API inputs at the end
    refused = make_run_handler(["shapes-unet"])(
        **dict(APP_RUN, model="shapes-unet", prompt="red circle"), init_state=None
    )
    with pytest.raises(Exception, match="family 'flow'"):
        list(refused)


def test_the_teach_tab_solves_the_flow_family_on_the_same_clusters() -> None:
    from ui import teach
    from ui.serve.limits import Caps

    lesson = teach.lesson(*teach.checked("north", 0, 12, 12, Caps(200, 200), "flow"))
    assert lesson.family == "flow" and "sequential flow-matching Euler: 12 steps" in teach.verdict(lesson)
    assert "all three end on the sequential trajectory" in teach.verdict(lesson)
    frames = list(teach.teach_run("north", 0, 12, 12, "flow"))
    assert frames[-1][-1].family == "flow"
