"""``window="auto"``: the window of least projected wall-clock, from a device's measured latency curve."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from pathlib import Path

import pytest

import paratta
from paratta import Request, SolverConfig, load_model, make_problem, run, sample_sequential
from paratta.config import TOLERANCE
from paratta.metrics import distance
from paratta.planning import calibration
from paratta.planning.latency import LatencyTable, load_tables, project
from paratta.planning.window import choose, iteration_model


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def candidates(T: int) -> list[int]:
    return [T // 8, T // 4, T // 2, T]


@pytest.mark.parametrize("name, guidance", [("sd15-unet", 7.5), ("dit-xl-2-256", 4.0), ("shapes-unet", 3.0)])
@pytest.mark.parametrize("T", [50, 100])
def test_auto_is_within_10_percent_of_the_best_window_on_the_h200_table(name: str, guidance: float, T: int):
    table = load_tables()[name]
    W, t = choose(table, T, guidance, eta=0.0)
    assert t[W] <= 1.1 * min(t[c] for c in candidates(T))
    if name != "shapes-unet":  # where the batch is not free, the full window is not the fastest
        assert W < T and t[W] < t[T]


def test_a_flat_then_linear_curve_picks_the_knee() -> None:
    rows = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    table = LatencyTable("synthetic", "test", rows, tuple(10.0 * max(1.0, r / 32) for r in rows))
    assert choose(table, 100, guidance=1.0, eta=0.0)[0] == 32
    assert choose(table, 100, guidance=3.0, eta=0.0)[0] == 16  # two rows per timestep
    assert choose(table, 100, guidance=1.0, eta=0.0, ranks=2)[0] == 64  # each rank takes half


def test_the_iteration_model_follows_measured_runs() -> None:
    """(2) against Anderson on shapes at T = 50 and the windows a choice compares: the growth as W
    shrinks (what moves the choice) within a fifth, the counts themselves within a quarter."""
    model = load_model("shapes")

    def measured(W: int) -> float:
        problems = [make_problem(model, Request("red circle on blue", seed=s, steps=50)) for s in range(2)]
        return statistics.median(run(p, SolverConfig(window=W)).iteration for p in problems)

    n = {W: measured(W) for W in candidates(50)}
    for W in candidates(50):
        expected = iteration_model().iterations(50, W, 0.0)
        growth = expected / iteration_model().iterations(50, 50, 0.0)
        assert abs(n[W] / n[50] - growth) <= 0.2 * growth, (W, n, growth)
        assert abs(n[W] - expected) <= 0.25 * expected, (W, n, expected)


@pytest.mark.slow
def test_auto_on_measured_runs_of_shapes_unet_is_within_10_percent_of_the_best() -> None:
    """Not the model's iterations but real solves: each window's run, charged with the H200 table."""
    table = load_tables()["shapes-unet"]
    problem = make_problem(load_model("shapes-unet"), Request("red circle", steps=50, guidance=3.0))
    W_auto, _ = choose(table, 50, 3.0, 0.0)

    def projected(W: int) -> float:
        windows = [hi - lo for lo, hi in (it.window for it in _solve(problem, W))]
        return project(table, windows, 50, 3.0).parallel_s

    best = min(projected(W) for W in candidates(50))
    assert projected(W_auto) <= 1.1 * best


def _solve(problem, W: int):
    from paratta import solve

    return list(solve(problem, SolverConfig(window=W)))


def test_calibration_is_cached_reused_and_a_corrupt_cache_is_refused(cache: Path, monkeypatch) -> None:
    problem = make_problem(load_model("shapes"), Request("red circle", steps=10))
    calls = []
    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = calibration.curve(problem, problem.model.device)
    second = calibration.curve(problem, problem.model.device)
    assert len(calls) == 1 and "made now" in first.source and "cached in" in second.source
    assert second.table == first.table
    (path,) = cache.glob("latency-*.json")
    assert json.loads(path.read_text())["key"]["model"] == "shapes"
    path.write_text("{ not json")
    with pytest.warns(RuntimeWarning, match=f"latency cache {path} refused"):
        third = calibration.curve(problem, problem.model.device)
    assert len(calls) == 2 and "made now" in third.source
    assert json.loads(path.read_text())["table"]["rows"] == list(third.table.rows)  # rewritten whole
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "key": {**doc["key"], "model": "another"}}))
    with pytest.warns(RuntimeWarning, match="key does not match"):
        calibration.curve(problem, problem.model.device)
    assert len(calls) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good cache is read silently
        calibration.curve(problem, problem.model.device)
    assert len(calls) == 3


def test_calibration_measures_every_size_up_to_T_with_guidance_rows(cache: Path) -> None:
    problem = make_problem(load_model("shapes"), Request("red circle", steps=12, guidance=2.0))
    table = calibration.calibrate(problem, problem.model.device, repeats=1)
    assert table.rows == (2, 4, 8, 16, 24)  # 1, 2, 4, 8, 12 timesteps, two rows each
    assert all(ms > 0 for ms in table.ms) and table.device == calibration.device_name(problem.model.device)


def test_auto_on_this_cpu_solves_exactly_and_says_what_it_chose(cache: Path) -> None:
    problem = make_problem(load_model("shapes"), Request("red circle", steps=30))
    planned = paratta.plan(problem, SolverConfig(window="auto"), "cpu")
    plan = planned.projection
    assert plan is not None and isinstance(planned.window, int) and 1 <= planned.window <= 30
    assert plan.window == planned.window and plan.by_window[30] > 0 and plan.sequential_s > 0
    line = plan.line()
    assert f"W = {plan.window} of T = 30" in line and "calibration on this device" in line
    assert ("cannot beat sequential" in line) == (plan.speedup <= 1.0)
    last = run(problem, SolverConfig(window="auto"))
    assert last.converged and distance(last.x0, sample_sequential(problem)[0]) <= TOLERANCE["budget"]
    default = paratta.plan(problem, SolverConfig(), "cpu")  # CPU default: W = T, nothing measured
    assert default.projection is None and default.window == 30


def test_cli_window_auto_reports_the_choice(cache: Path, tmp_path: Path, capsys) -> None:
    from paratta.tools.cli import main

    out = tmp_path / "x.png"
    assert main(["sample", "--steps", "12", "--window", "auto", "--json", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1 <= summary["window"] <= 12 and summary["window_source"].startswith("calibration on this device")
    assert summary["projected_seconds"] > 0 and summary["projected_sequential_seconds"] > 0
    assert main(["sample", "--steps", "12", "--json", "--output", str(out)]) == 0
    default = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert default["window"] == 12 and default["window_source"] == "default on cpu: W = T"
    assert main(["sample", "--window", "wide", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--window: an integer in [1, T] or 'auto'; got 'wide'" in err


APP_RUN = dict(model="shapes", prompt="red circle on blue", negative_prompt="", seed=0, steps=12, eta=0.0,
               guidance=1.0, solver="anderson", order=12, window=12, history=2, tol="", max_iters=12,
               init="xT", stopping="budget")  # fmt: skip


def test_the_app_runs_the_auto_window_and_says_what_it_chose(
    cache: Path, tmp_path: Path, monkeypatch
) -> None:
    from ui.run.handlers import make_run_handler
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    assert parse_settings(**APP_RUN, caps=Caps(200, 200), window_auto=True).config.window == "auto"
    with pytest.raises(ValueError, match="window_auto must be true or false"):
        parse_settings(**APP_RUN, caps=Caps(200, 200), window_auto="yes")
    updates = list(make_run_handler(["shapes"])(**APP_RUN, window_auto=True, init_state=None))
    stats, record = updates[-1][5], updates[-1][8]
    assert "window auto: W = " in stats and "calibration on this device" in stats
    assert isinstance(record.settings["window"], int) and record.converged
    assert record.rows[0].window[1] - record.rows[0].window[0] == record.settings["window"]


def test_zero_gpu_asks_for_the_runs_own_bound_within_the_budget(monkeypatch) -> None:
    from ui.run.handlers import ZERO_GPU_MARGIN_S, gpu_seconds
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    monkeypatch.setenv("SPACE_ID", "user/paratta")  # the Space's budget: 30 s a run
    light = parse_settings(**APP_RUN, caps=Caps.from_env())
    heavy = parse_settings(**dict(APP_RUN, model="shapes-unet", steps=100, window=100, max_iters=100,
                                  order=20, guidance=3.0), caps=Caps.from_env())  # fmt: skip
    assert ZERO_GPU_MARGIN_S < gpu_seconds(light) < gpu_seconds(heavy)
    # On the GPU (shapes-unet's H200 table) the heavy race's bound is seconds: a budget below it caps it.
    monkeypatch.setenv("PARATTA_BUDGET_S", "2")
    assert gpu_seconds(heavy, "solvers") == math.ceil(Caps.from_env().budget_s) + ZERO_GPU_MARGIN_S
