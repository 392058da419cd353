"""The app carries the posed run: one pose per job in the app and the Teach tab, Stop at the next
network call, the Teach lesson in the byte budget, the panel as the sidebar reads, and Gradio's private
API where the app expects it."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

FAST: dict[str, Any] = dict(
    model="toy2d", prompt="north", negative_prompt="", seed=0, steps=20, eta=0.0, guidance=1.0,
    solver="anderson", order=20, window=20, history=2, tol="", max_iters=20, init="xT", stopping="budget",
)  # fmt: skip


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    for name in ("SPACE_ID", "PARATTA_BUDGET_S", "PARATTA_MAX_WORK_S"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def counting(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every run ``module`` poses (its ``pose``), kept in order."""
    posed: list[Any] = []
    real = module.pose

    def pose(*args: Any, **kwargs: Any) -> Any:
        posed.append(real(*args, **kwargs))
        return posed[-1]

    monkeypatch.setattr(module, "pose", pose)
    return posed


def test_a_run_is_posed_once_and_its_record_reads_the_run(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui.run import door, handlers, session

    at_door, in_job = counting(door, monkeypatch), counting(session, monkeypatch)
    updates = list(handlers.make_run_handler(["toy2d"])(**FAST, window_auto=False, init_state=None))
    record = updates[-1][handlers.RUN_OUTPUTS.index("record")]
    assert len(in_job) == 1 and in_job[0].problem is not None  # the job poses its run once
    assert at_door and all(run.problem is None for run in at_door)  # the door's checks pose dry
    run = in_job[0]
    assert record.settings.run is not None and record.settings.run.plan == run.detached().plan
    assert (record.steps, record.tol, record.sampler) == (run.steps, run.plan.tol, run.sampler)
    assert record.settings["window"] == run.plan.window == 20 and record.settings.config.window == 20
    assert record.converged


def test_a_race_poses_each_lane_on_one_problem(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from paratta.planning import pose as planning
    from ui.run import handlers, session

    in_job = counting(session, monkeypatch)
    made: list[Any] = []
    real = planning.make_problem
    monkeypatch.setattr(planning, "make_problem", lambda *a, **k: made.append(1) or real(*a, **k))
    race = {k: v for k, v in FAST.items() if k not in ("solver", "init")}
    last = list(handlers.make_race_handler(["toy2d"])(**race, contest="solvers"))[-1]
    assert len(in_job) == 2 and len(made) == 1 and in_job[0].problem is in_job[1].problem
    assert [run.plan.solver for run in in_job] == ["jacobi", "anderson"]
    info = last[handlers.RACE_OUTPUTS.index("info")]
    assert info["jacobi"]["converged"] and info["anderson"]["converged"]


def test_the_teach_tab_poses_its_lesson_once_and_keeps_it_in_the_byte_budget(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    from paratta.planning import pose as planning
    from ui.serve import keep
    from ui.serve.keep import EXPIRED, Kept, Store, Visitors
    from ui.teach import lanes, tab

    posed = counting(lanes, monkeypatch)
    made: list[Any] = []
    real = planning.make_problem
    monkeypatch.setattr(planning, "make_problem", lambda *a, **k: made.append(1) or real(*a, **k))
    store = Store(10**9, Visitors())
    monkeypatch.setattr(keep, "STORE", store)
    frames = list(tab.teach_run("north", 0, 12, 12, "ddim", request=SimpleNamespace(session_hash="lecture")))
    kept = frames[-1][-1]
    # each lane posed, all on one problem (as a race's lanes are)
    assert len(posed) == len(lanes.LANES) and len(made) == 1
    assert all(run.problem is posed[0].problem for run in posed)
    assert isinstance(kept, Kept) and kept.get().lanes
    assert store.counts()["kept_bytes"] == kept.nbytes() > 12 * 2 * 8  # its trajectories, in bytes
    assert tab.show(kept, 1, lanes.VIEWS[0])[0]["value"] == 1
    store.budget = 1
    other = Kept("another visitor", kept.get())  # over the budget: the lecture's lesson is evicted
    with pytest.raises(gr.Error, match=EXPIRED.split(";")[0]):
        tab.show(kept, 1, lanes.VIEWS[0])
    assert store.counts()["kept_sessions"] == 1 and other.get() is not None


class Counting:
    """A model whose ``predict`` calls are counted; Stop is pressed while call ``stop_at`` runs."""

    def __init__(self, inner: Any, stop_at: int, stop: Any) -> None:
        self._inner, self.calls, self.stop_at, self.stop = inner, 0, stop_at, stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def predict(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self.stop_at:
            self.stop()  # the /cancel request, from another thread, while this batch runs
        return self._inner.predict(*args)


@pytest.mark.parametrize("stop_at", [3, 40])  # during the sequential reference; mid-batch of an iteration
def test_stop_ends_a_run_at_its_next_network_call(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int
) -> None:
    from paratta import load_model
    from ui.run import door, handlers, session
    from ui.serve.jobs import JOBS, STOPPED, stop_session

    visitor = SimpleNamespace(session_hash=f"stopper-{stop_at}")
    model = Counting(load_model("toy2d"), stop_at, lambda: stop_session(visitor.session_hash))
    for module in (door, session, handlers):
        monkeypatch.setattr(module, "get_model", lambda name: model)
    monkeypatch.setattr(session, "CALL_S", 1e-9)  # one timestep per call: an iteration is 20 calls
    tickets: list[Any] = []
    begin = JOBS.begin
    monkeypatch.setattr(JOBS, "begin", lambda *a: tickets.append(begin(*a)) or tickets[-1])
    updates = list(handlers.make_run_handler(["toy2d"])(**FAST, init_state=None, request=visitor))
    assert model.calls == stop_at  # the call in flight ended; no other began
    assert tickets[0].reason == STOPPED and tickets[0].finished.is_set()
    records = [u[-1] for u in updates if isinstance(u[-1], handlers.RunRecord)]
    if stop_at > 20:  # iterations were shown: Stop's own event shows the last one whole
        record = records[-1]
        assert not record.stopped and 0 < record.iterations and record.final_image is None
        shown = dict(zip(handlers.STOP_OUTPUTS, handlers.after_stop(record), strict=True))
        assert f"stopped by the user after iteration {record.iterations}" in shown["stats"]
    else:
        assert not records


def test_a_cancel_request_tells_the_sessions_job_before_gradio_cancels_it(isolated: Path) -> None:
    import gradio as gr
    from gradio.routes import App

    from ui.serve.guards import Stops
    from ui.serve.jobs import JOBS, SAMPLER_QUEUE, STOPPED
    from ui.serve.limits import Caps

    with gr.Blocks() as blocks:
        button = gr.Button()
        button.click(lambda: None, api_name="run", concurrency_id=SAMPLER_QUEUE)
        button.click(lambda: None, api_name="other")
    blocks.queue()
    app = App.create_app(blocks)
    passed: list[bytes] = []

    async def gradio(scope: Any, receive: Any, send: Any) -> None:
        passed.append((await receive())["body"])

    async def cancel(fn_index: int, session: str) -> None:
        body = json.dumps({"session_hash": session, "fn_index": fn_index, "event_id": "e"}).encode()
        scope = {"type": "http", "method": "POST", "path": app.url_path_for("cancel_event"), "app": app}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await Stops(gradio)(scope, receive, None)

    job, other = (
        JOBS.begin(SimpleNamespace(session_hash=s), Caps(10, 10)) for s in ("cancelled", "untouched")
    )
    try:
        asyncio.run(cancel(1, "untouched"))  # not a job's event: nothing is told
        asyncio.run(cancel(0, "cancelled"))
        assert job.reason == STOPPED and job.interrupted() and other.reason is None
        assert len(passed) == 2 and json.loads(passed[1])["fn_index"] == 0  # Gradio gets the body unchanged
    finally:
        job.end()
        other.end()


def test_the_panel_reads_as_the_sidebar_and_the_api_keeps_its_order() -> None:
    from ui.view.controls import DETAILS, MAIN, RUN_INPUT_NAMES, SAMPLER, TOP, WIDGETS

    groups = [w.group for w in WIDGETS.values()]
    order = [TOP, MAIN, SAMPLER, DETAILS]  # the sidebar, top to bottom
    assert groups == sorted(groups, key=order.index)  # WIDGETS lists each group's inputs in one run
    assert sorted(RUN_INPUT_NAMES) == sorted(WIDGETS) and len(set(RUN_INPUT_NAMES)) == len(RUN_INPUT_NAMES)
    assert RUN_INPUT_NAMES[:3] == (
        "model",
        "prompt",
        "negative_prompt",
    )  # a positional call keeps its meaning


def test_the_page_asks_each_model_what_it_declares(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The panel's families, samplers, size and words, and the door's prompt checks, read the model's
    declared capabilities (``paratta.protocol``): the mixtures have both families and a vocabulary, a
    text-to-image pipeline reads any text and needs a prompt, DiT parses class names offline."""
    from dataclasses import replace

    import gradio as gr

    from paratta import load_model
    from paratta.models.diffusers.load import from_pipeline
    from paratta.models.diffusers.tiny import tiny_dit_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline
    from ui.run import door
    from ui.serve import models as served
    from ui.view import controls

    shapes, toy, unet = (load_model(name) for name in ("shapes", "toy2d", "shapes-unet"))
    sd, sd3 = from_pipeline(tiny_sd_pipeline()), from_pipeline(tiny_sd3_pipeline())
    dit = from_pipeline(tiny_dit_pipeline(id2label={0: "tench, Tinca tinca", 207: "golden retriever"}))
    assert [served.has_both_families(m) for m in (shapes, toy, unet, sd, sd3, dit)] == [1, 1, 0, 0, 0, 0]
    assert controls.families(shapes) == ["auto", "ddim", "flow"] and controls.families(sd3) == [
        "auto",
        "flow",
    ]
    assert "ddim" not in controls.samplers(sd3) and {"unipc", "dpm++2m"} <= set(controls.samplers(sd3))
    assert controls.samplers(shapes) == controls.samplers(sd) == list(controls.REQUEST["sampler"].choices)
    assert (
        served.image_size(sd) == sd.image_size and served.image_size(shapes) is served.image_size(dit) is None
    )
    assert (
        not controls.size_update("height", shapes)["visible"] and controls.size_update("width", sd)["visible"]
    )
    assert served.vocabulary(shapes) == dict(shapes.vocabulary) and served.vocabulary(sd) == {}
    assert "red" in controls.words(shapes) and controls.words(sd) == ""
    offline = {m.name: served.encodes_offline(m) for m in (shapes, toy, unet, sd, sd3, dit)}
    assert offline == {shapes.name: True, toy.name: True, unet.name: True, sd.name: False, sd3.name: False,
                       dit.name: True}  # fmt: skip

    # The door: "needs a prompt" is the model's own ``defaults.requires_prompt``; a class name DiT does not
    # know is refused before the queue (its parse runs no network), any text passes for a text encoder.
    named = dict(FAST, model="sd", prompt="", steps=4, order=4, window=4, max_iters=4)
    models = {"sd": sd, "dit": dit}
    monkeypatch.setattr(door, "get_model", lambda name: models[name])
    with pytest.raises(gr.Error, match="prompt is empty: this model needs a text prompt"):
        door.settle(["sd"], named)
    models["sd"] = replace_defaults(sd, replace(sd.defaults, requires_prompt=False))
    assert door.settle(["sd"], named)[0].request.prompt == ""
    settings, _ = door.settle(["dit"], dict(named, model="dit", prompt="tabby cat"))
    with pytest.raises(ValueError, match="tabby cat"):
        door.check_words(settings)
    door.check_words(door.settle(["dit"], dict(named, model="dit", prompt="golden retriever"))[0])
    door.check_words(door.settle(["sd"], dict(named, prompt="any words at all"))[0])


def replace_defaults(model: Any, defaults: Any) -> Any:
    """A shallow copy of ``model`` that declares ``defaults``."""
    import copy

    other = copy.copy(model)
    other.defaults = defaults
    return other
