"""The parallel solver reproduces the sequential sampler, and stops, for every setting."""

from __future__ import annotations

import itertools

import pytest
import torch

from paratta import Request, SolverConfig, load_model, make_problem, run, sample_sequential, solve
from paratta.evaluate import NonFiniteError
from paratta.metrics import to_8bit
from paratta.planning.plan import resolve
from paratta.tools.bench import oracle_iteration

TOL = 1e-3


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def toy2d():
    return load_model("toy2d")


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


# Every solver, order, window, history and η, on the 2-D mixture (cheap enough for 20 seeds each).
GRID = [
    ("jacobi", 1, "device", 1),
    ("jacobi", 100, "device", 1),
    ("jacobi", 5, 30, 1),
    ("jacobi", 100, 1, 1),
    ("anderson", 20, "device", 2),
    ("anderson", 100, "device", 3),
    ("anderson", 1, "device", 2),
    ("anderson", 20, 25, 2),
    ("anderson", 20, 1, 2),
    ("anderson-global", 20, "device", 2),
    ("anderson-global", 100, 40, 4),
    ("sequential", 1, "device", 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("solver,order,window,history", GRID)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_exact_on_the_2d_mixture_over_20_seeds(toy2d, solver, order, window, history, eta) -> None:
    for seed in range(20):
        problem = make_problem(toy2d, Request("", "", seed, 100, eta, 1.0))
        reference = sample_sequential(problem)
        last = run(problem, SolverConfig(solver=solver, order=order, window=window, history=history, tol=TOL))
        assert last.converged, (seed, last.iteration)
        assert distance(last.x0, reference[0]) <= TOL, (seed, last.iteration)


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,order,history,init",
    [
        ("jacobi", 100, 1, "xT"),
        ("anderson", 20, 2, "xT"),
        ("anderson-global", 20, 2, "xT"),
        ("anderson", 100, 3, "xT"),
        ("anderson", 20, 2, "coarse"),
        ("anderson", 20, 2, "trajectory"),
    ],
)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_exact_on_the_image_mixture_at_T100_over_20_seeds(shapes, solver, order, history, init, eta) -> None:
    prompts = ["", "circle", "red", "square on black"]
    iterations = []
    for seed in range(20):
        problem = make_problem(shapes, Request(prompts[seed % 4], "", seed, 100, eta, 1.0))
        reference = sample_sequential(problem)
        warm = None
        if init == "trajectory":  # a run with another prompt and the same noise
            other = make_problem(shapes, Request("blue ring", "", seed, 100, eta, 1.0))
            warm = run(other, SolverConfig()).trajectory
        config = SolverConfig(solver=solver, order=order, history=history, init=init, tol=TOL)
        last = run(problem, config, init_trajectory=warm)
        assert last.converged, (seed, last.iteration)
        assert distance(last.x0, reference[0]) <= TOL, (seed, last.iteration)
        iterations.append(last.iteration)
    assert max(iterations) < 50  # the parallel solver must actually be parallel (measured: at most 45)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["xT", "coarse", "trajectory"])
def test_every_initialisation_is_exact(shapes, init) -> None:
    for seed in range(4):
        problem = make_problem(shapes, Request("red circle", "", seed, 50, 0.0, 3.0))
        reference = sample_sequential(problem)
        warm = None
        if init == "trajectory":  # a run with another prompt and the same noise
            other = make_problem(shapes, Request("blue circle", "", seed, 50, 0.0, 3.0))
            warm = run(other, SolverConfig()).trajectory
        config = SolverConfig(init=init)  # the auto tolerance: the bound is its own
        last = run(problem, config, init_trajectory=warm)
        assert last.converged
        assert distance(last.x0, reference[0]) <= resolve(config, 50).tol


def test_window_one_is_the_sequential_sampler(shapes) -> None:
    problem = make_problem(shapes, Request("ring", "", 3, 30, 1.0, 2.0))
    reference = sample_sequential(problem)
    for config in (SolverConfig(solver="sequential"), SolverConfig(solver="anderson", window=1)):
        records = list(solve(problem, config))
        assert len(records) == 30
        # the same steps; only float64 round-off of x_i = a_i x_{i+1} + d_i vs the direct step differs
        assert (records[-1].trajectory - reference).abs().max() < 1e-12


def test_history_one_is_jacobi(shapes) -> None:
    problem = make_problem(shapes, Request("cross", "", 0, 40, 0.0, 3.0))
    a = [r.trajectory for r in solve(problem, SolverConfig(solver="anderson", history=1, order=10))]
    b = [r.trajectory for r in solve(problem, SolverConfig(solver="jacobi", order=10))]
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_order_T_jacobi_makes_the_first_n_states_exact_after_n_iterations(shapes) -> None:
    """Picard's property: after n iterations x_{T−n}…x_T are the sequential states (to round-off)."""
    problem = make_problem(shapes, Request("", "", 1, 25, 0.0, 1.0))
    reference = sample_sequential(problem)
    for n, record in enumerate(solve(problem, SolverConfig(solver="jacobi", order=25, tol=1e-12)), 1):
        assert distance(record.trajectory[25 - n :], reference[25 - n :]) < 1e-9
        assert record.anchor <= 25 - n


def test_anderson_needs_fewer_iterations_than_jacobi(shapes) -> None:
    """The paper's claim, on its own split (under the flow split the two are close: docs/stopping.md)."""
    jac, taa = 0, 0
    for seed in range(3):
        problem = make_problem(shapes, Request("circle", "", seed, 50, 0.0, 3.0))
        jac += run(problem, SolverConfig(solver="jacobi", order=50, split="published")).iteration
        taa += run(problem, SolverConfig(solver="anderson", order=50, split="published")).iteration
    assert taa < jac


@pytest.mark.parametrize(
    "sampler,steps,lag", [("ddim", 50, 1), ("dpm++2m", 20, 1), ("unipc", 20, 1), ("euler-a", 20, 2)]
)
def test_the_flow_split_reaches_the_sequential_image_sooner_and_stops_only_when_exact(
    shapes, sampler, steps, lag
) -> None:
    """The update in the flow frame (``split="flow"``, the default): every run ends within tol and one
    8-bit level of its sequential image, at most two iterations after its oracle and ``lag`` at the
    median, and every one sooner than any run of the published split, at no more network calls."""
    tol = resolve(SolverConfig(), steps).tol
    stops, lags, calls = (
        {"flow": [], "published": []},
        {"flow": [], "published": []},
        {"flow": 0, "published": 0},
    )
    for seed in range(3):
        request = Request("red circle on blue", "", seed, steps, 0.0, 1.0, sampler=sampler)
        problem = make_problem(shapes, request)
        reference = sample_sequential(problem)[0]
        target = to_8bit(shapes, reference)
        for split in stops:
            levels, last = [], None
            for last in solve(problem, SolverConfig(split=split)):
                levels.append(int((to_8bit(shapes, last.x0) - target).abs().max()))
            oracle = oracle_iteration(levels)
            assert last.converged and oracle is not None, (seed, split, levels)
            assert distance(last.x0, reference) <= tol and levels[-1] <= 1, (seed, split)
            assert last.iteration - oracle <= 2, (seed, split, levels)
            stops[split].append(last.iteration)
            lags[split].append(last.iteration - oracle)
            calls[split] += last.evaluations
    assert max(stops["flow"]) < min(stops["published"]), stops
    assert sorted(lags["flow"])[1] <= lag and calls["flow"] <= calls["published"], (lags, calls)


def test_float32_state_matches_float64(shapes) -> None:
    problem = make_problem(shapes, Request("triangle", "", 2, 50, 0.0, 3.0))
    x64 = run(problem, SolverConfig(state_dtype="float64")).x0
    x32 = run(problem, SolverConfig(state_dtype="float32")).x0
    assert x32.dtype == torch.float32
    assert distance(x32.double(), x64) <= TOL


def test_max_batch_chunks_give_the_same_result(shapes) -> None:
    problem = make_problem(shapes, Request("square", "", 0, 30, 0.0, 3.0))
    whole = run(problem, SolverConfig()).x0
    chunked = run(problem, SolverConfig(max_batch=7)).x0
    assert distance(whole, chunked) < 1e-10


def test_records_are_immutable_snapshots_and_the_caller_may_stop(shapes) -> None:
    problem = make_problem(shapes, Request("", "", 0, 50, 0.0, 1.0))
    records = []
    for record in solve(problem, SolverConfig(solver="jacobi")):
        records.append(record)
        if record.iteration == 3:
            break
    assert [r.iteration for r in records] == [1, 2, 3]
    assert not torch.equal(records[0].trajectory, records[2].trajectory)
    assert records[0].evaluations == 50 and records[2].evaluations > records[1].evaluations
    assert records[0].window == (0, 50) and records[0].anchor == 49
    lo, hi = records[1].window
    assert torch.isnan(records[1].residual[hi:]).all() and torch.isfinite(records[1].residual[lo:hi]).all()
    with pytest.raises(AttributeError):
        records[0].iteration = 7


def test_budget_ends_unconverged_within_max_iters(shapes) -> None:
    problem = make_problem(shapes, Request("", "", 0, 50, 0.0, 1.0))
    records = list(solve(problem, SolverConfig(solver="jacobi", max_iters=3)))
    assert len(records) == 3 and not records[-1].converged


@pytest.mark.parametrize("steps,window", itertools.product([1, 2, 7], [1, "device"]))
def test_tiny_T_terminates(toy2d, steps, window) -> None:
    problem = make_problem(toy2d, Request("", "", 0, steps, 1.0, 1.0))
    records = list(solve(problem, SolverConfig(order=min(20, steps), window=window)))
    assert records[-1].converged and len(records) <= steps
    last = records[-1]
    assert distance(last.x0, sample_sequential(problem)[0]) <= TOL


class NaNModel:
    """Wraps a model and poisons its output at one timestep."""

    def __init__(self, inner, bad_t: int) -> None:
        self.inner, self.bad_t = inner, bad_t

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, x, t, cond, guidance):
        out = self.inner.predict(x, t, cond, guidance)
        out[t == self.bad_t] = float("nan")
        return out


def test_non_finite_model_output_names_the_timestep(toy2d) -> None:
    problem = make_problem(toy2d, Request("", "", 0, 20, 0.0, 1.0))
    bad_t = int(problem.coef.timesteps[12])
    poisoned = make_problem(NaNModel(toy2d, bad_t), Request("", "", 0, 20, 0.0, 1.0))
    with pytest.raises(NonFiniteError, match=f"timestep {bad_t}"):
        run(poisoned, SolverConfig())
    with pytest.raises(NonFiniteError, match=f"timestep {bad_t}"):
        sample_sequential(poisoned)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(solver="newton"), "solver"),
        (dict(order=0), "order"),
        (dict(order=51), "order"),
        (dict(window=0), "window"),
        (dict(window=51), "window"),
        (dict(history=0), "history"),
        (dict(history=11), "history"),
        (dict(tol=0.0), "tol"),
        (dict(tol="1e-3"), "tol"),
        (dict(max_iters=0), "max_iters"),
        (dict(max_iters=51), "max_iters"),
        (dict(init="noise"), "init"),
        (dict(max_batch=0), "max_batch"),
        (dict(state_dtype="float16"), "state_dtype"),
        (dict(lam=-1.0), "lam"),
        (dict(order=2.5), "order"),
        (dict(split="eps"), "split"),
    ],
)
def test_bad_settings_raise_value_errors_naming_the_setting(toy2d, kwargs, name) -> None:
    problem = make_problem(toy2d, Request("", "", 0, 50, 0.0, 1.0))
    with pytest.raises(ValueError, match=name):
        next(solve(problem, SolverConfig(**kwargs)))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(eta=1.5), "eta"),
        (dict(eta=-0.1), "eta"),
        (dict(guidance=-1.0), "guidance"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_requests_raise_value_errors_naming_the_setting(toy2d, kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        make_problem(toy2d, Request(**kwargs))


def test_bad_init_trajectory_and_latents(toy2d) -> None:
    problem = make_problem(toy2d, Request("", "", 0, 10, 0.0, 1.0))
    with pytest.raises(ValueError, match="init_trajectory"):
        next(solve(problem, SolverConfig(init="trajectory")))
    with pytest.raises(ValueError, match="shape"):
        next(solve(problem, SolverConfig(init="trajectory"), init_trajectory=torch.zeros(5, 2)))
    with pytest.raises(ValueError, match="latents must have shape"):
        make_problem(toy2d, Request(), latents=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        make_problem(toy2d, Request(), latents=torch.tensor([0.0, float("nan")]))


def test_a_plan_is_made_once_concrete_and_the_iteration_reads_only_it(monkeypatch, tmp_path) -> None:
    import paratta
    from paratta import solver
    from paratta.config import TOLERANCE
    from paratta.planning import calibration
    from paratta.planning import plan as planning

    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path))  # window="auto" below calibrates this CPU
    toy = load_model("toy2d")
    problem = make_problem(toy, Request(prompt="north", seed=1, steps=12))
    plan = paratta.plan(problem, SolverConfig())
    assert (plan.window, plan.order, plan.max_iters, plan.coarse_steps) == (12, 12, 12, 2)
    assert plan.tol == TOLERANCE["budget"] and plan.max_batch is None
    assert plan.group is None and plan.projection is None
    sequential = paratta.plan(problem, SolverConfig(solver="sequential", window=5, order=3, history=4))
    assert (sequential.window, sequential.order, sequential.history) == (1, 1, 1)
    with pytest.raises(ValueError, match=r"window must be .* \(T = 12\); got 13"):
        paratta.plan(problem, SolverConfig(window=13))
    # Solving a plan chooses nothing: the device's window choice is not reached, even for window="auto".
    auto = paratta.plan(problem, SolverConfig(window="auto"))
    monkeypatch.setattr(planning, "choose_window", lambda *a: pytest.fail("the iteration planned"))
    assert torch.equal(solver.run(problem, auto).x0, paratta.run(problem, auto).x0)
    assert torch.equal(paratta.run(problem, plan).x0, paratta.run(problem, SolverConfig()).x0)
    with pytest.raises(ValueError, match="the plan is for T = 12 steps; the problem has T = 10"):
        list(solver.solve(make_problem(toy, Request(prompt="north", steps=10)), plan))
    with pytest.raises(ValueError, match="part of the plan"):
        paratta.run(problem, plan, device="cpu")
