"""A run posed once (paratta.pose): what it holds, dry and not, its work bound, and its interrupt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import paratta
from paratta import Request, SolverConfig, load_model, pose
from paratta.evaluate import Interrupted
from paratta.planning import cost
from paratta.planning.plan import resolve


class Refusing:
    """A model that refuses the network: ``encode`` and ``predict`` raise (a dry pose calls neither)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, *args: Any) -> Any:
        raise AssertionError("a dry pose encoded the prompt")

    def predict(self, *args: Any) -> Any:
        raise AssertionError("a dry pose called the network")


def test_a_dry_pose_states_what_the_full_one_does_without_the_network() -> None:
    shapes = load_model("shapes")
    request = Request("red circle on blue", seed=3, steps=30, sampler="dpm++2m-karras")
    config = SolverConfig(order=10, window=12)
    full = pose(shapes, request, config)
    dry = pose(Refusing(shapes), request, config, dry=True)
    assert full.problem is not None and dry.problem is None
    assert replace(full, problem=None) == dry  # sampler, note, size, rows, plan and work all agree
    assert dry.sampler == "DPM++ 2M Karras" and dry.family == "ddim" and dry.size is None
    assert (dry.plan.window, dry.plan.order, dry.rows_per_step, dry.latent_shape) == (12, 10, 1, (3, 32, 32))
    flow = pose(load_model("toy2d"), Request("north", steps=10, family="flow"), dry=True)
    assert flow.family == "flow" and flow.sampler == "flow Euler"
    with pytest.raises(ValueError, match="window must be"):
        pose(shapes, request, SolverConfig(window=31), dry=True)
    auto = pose(shapes, request, SolverConfig(window="auto"), dry=True)  # nothing calibrated: W = T bounds it
    assert auto.plan.window == 30 and auto.plan.projection is None


def test_the_work_bound_is_the_cost_models_for_every_iteration_budget() -> None:
    unet = load_model("shapes-unet")
    request = Request("red circle", steps=40, guidance=3.0)
    config = SolverConfig(window=16, init="coarse")
    run = pose(unet, request, config, dry=True)
    table = cost.cost_table("shapes-unet", unet, "cpu").table
    assert run.rows_per_step == 2 and run.work.source.startswith("the CPU latency table")
    for k in (1, 7, 40):
        planned = resolve(replace(config, max_iters=k), 40)
        assert run.work.bound(1, k) == cost.work_bound(planned, 2, table)
        assert run.work.bound(2, k) == cost.work_bound(planned, 2, table, lanes=2)
    assert run.work.bound() == run.work.bound(1, 40) and run.work.bound(1, 99) == run.work.bound(1, 40)


def test_call_s_splits_a_batch_into_calls_that_stay_short_on_the_table() -> None:
    unet = load_model("shapes-unet")
    request = Request("red circle", steps=30, guidance=3.0)
    whole = pose(unet, request, dry=True)
    split = pose(unet, request, dry=True, call_s=0.2)
    table = cost.cost_table("shapes-unet", unet, "cpu").table
    assert whole.plan.max_batch is None and split.plan.max_batch is not None
    n = split.plan.max_batch
    assert table.call_ms(2 * n) <= 200 < table.call_ms(2 * (n + 1))
    assert split.work == whole.work  # the bound charges the batch the plan would make
    assert pose(load_model("toy2d"), Request(steps=30), dry=True, call_s=0.2).plan.max_batch is None


def test_an_interrupt_between_chunks_ends_the_solve_at_the_next_call() -> None:
    toy = load_model("toy2d")
    calls: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(toy, name)

        def predict(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
            calls.append(x.shape[0])
            return toy.predict(x, *args)

    asked = lambda: len(calls) >= 3  # noqa: E731  (Stop is pressed while the third chunk runs)
    run = pose(Counting(), Request("north", steps=20), SolverConfig(window=20, max_batch=4), interrupt=asked)
    assert run.plan.interrupt is asked and run.detached().plan.interrupt is None
    records = paratta.solve(run.problem, run.plan)
    with pytest.raises(Interrupted):
        next(records)
    assert calls == [4, 4, 4]  # the first iteration's batch of 20 ended after its third call of 4
    plain = pose(toy, Request("north", steps=20), SolverConfig(window=20, max_batch=4))
    assert paratta.run(plain.problem, plain.plan).converged  # no interrupt: the same plan runs to the end


def test_the_cli_and_the_pipeline_pose_each_run_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_diffusers: None
) -> None:
    from paratta.models.diffusers import pipeline
    from paratta.models.diffusers.tiny import tiny_sd_pipeline
    from paratta.tools import cli

    posed: list[Any] = []

    def counted(real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            posed.append(real(*args, **kwargs))
            return posed[-1]

        return wrapper

    monkeypatch.setattr(cli, "pose", counted(cli.pose))
    assert cli.main(["sample", "--model", "toy2d", "--steps", "8", "--output", str(tmp_path / "x.png")]) == 0
    assert len(posed) == 1 and posed[0].problem is not None
    monkeypatch.setattr(pipeline, "pose", counted(pipeline.pose))
    pp = paratta.ParaTAAPipeline.from_pipe(tiny_sd_pipeline())
    out = pp("a red cat", height=16, width=16, num_inference_steps=6, output_type="latent")
    assert len(posed) == 2 and out.steps == 6 and posed[1].size == (16, 16)
