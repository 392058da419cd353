"""The Gradio app in-process, driven by gradio_client as a user of the documented API would."""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.local import free_port

# Run outputs, in order (gradio_client gets all but the last, a gr.State that is not part of the API).
IMAGE, SEQUENTIAL, DIFF, HEATMAP, CURVES, STATS, INFO, DOWNLOADS, RECORD = range(9)
DEFAULTS: dict[str, Any] = dict(
    model="shapes",
    prompt="red circle on blue",
    negative_prompt="",
    seed=0,
    steps=50,
    eta=0.0,
    guidance=1.0,
    solver="anderson",
    order=20,
    window=50,
    history=2,
    tol=1e-3,
    max_iters=50,
    init="xT",
    stopping="budget",
)
FAST = dict(DEFAULTS, model="toy2d", prompt="north", steps=20, order=20, window=20, max_iters=20)


def typed(**values: Any) -> Any:
    """The RunSettings the app makes of these control values."""
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    return parse_settings(**values, caps=Caps(200, 200))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setenv("TMPDIR", str(tmp / "tmp"))
        mp.delenv("SPACE_ID", raising=False)
        (tmp / "tmp").mkdir()
        mp.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

        from ui.app import build_demo
        from ui.run import handlers

        events: list[str] = []  # every event the session generator hands to the UI, for the Stop test

        def recording(*args: Any, _inner: Any = handlers.gpu_run_events) -> Iterator[Any]:
            for event in _inner(*args):
                events.append(event.kind)
                yield event

        mp.setattr(handlers, "gpu_run_events", recording)
        demo = build_demo()
        demo.queue(default_concurrency_limit=2)
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
        try:
            yield SimpleNamespace(local_url=demo.local_url, events=events)
        finally:
            demo.close()


def client(app: Any) -> Any:
    """A client that leaves files on the server (downloading every streamed image is slow)."""
    from gradio_client import Client

    return Client(app.local_url, verbose=False, download_files=False)


def fetch(file: dict[str, Any]) -> bytes:
    import httpx

    response = httpx.get(file["url"], timeout=30)
    response.raise_for_status()
    return response.content


def pixels(file: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(fetch(file))).convert("RGB"), dtype=np.int16)


def test_a_run_of_toy2d_reports_the_distance_of_its_point_not_pixels(app: Any) -> None:
    final = client(app).predict(**dict(DEFAULTS, model="toy2d", prompt="north"), api_name="/run")
    assert final[INFO]["same_image"], final[STATS]
    said = r"✓ \*\*Same point as sequential DDIM\*\* — .*; x₀ is \d\.\de-\d\d from the sequential x₀ "
    assert re.search(said + r"\(Euclidean, in the plane's units\)", final[STATS]), final[STATS]


def test_run_streams_every_iteration_and_ends_on_the_sequential_image(app: Any) -> None:
    c = client(app)
    job = c.submit(**DEFAULTS, api_name="/run")
    updates = list(job)
    final = job.result()
    phases = [u[INFO].get("phase") for u in updates if isinstance(u[INFO], dict)]
    assert "sequential" in phases and phases.count("parallel") >= 3, phases
    info = final[INFO]
    assert info["phase"] == "done" and info["converged"] and info["final_steps"] == 50
    assert 1 < info["iteration"] < 50  # far fewer parallel iterations than steps
    assert info["max_pixel_diff"] <= 2 / 255
    assert info["distance_to_sequential"] < 1e-2
    # The returned PNGs themselves: ParaTAA's last image is the sequential one (within one grey level).
    ours, reference = pixels(final[IMAGE]), pixels(final[SEQUENTIAL])
    assert ours.shape == reference.shape == (256, 256, 3)
    assert np.abs(ours - reference).max() <= 2
    assert pixels(final[HEATMAP]).shape[0] >= 50
    n = info["iteration"]
    assert (
        f"✓ **Same image as sequential DDIM** — **{n} parallel iterations** instead of 50 steps"
        in final[STATS]
    )
    assert f"({50 / n:.1f}× fewer); largest pixel difference {info['max_pixel_levels']}/255" in final[STATS]
    assert "on a CPU a batch of W network evaluations costs many single calls" in final[STATS]
    assert "no latency table measured for this model on a GPU" in final[STATS]
    # An unchanged output is sent once, not every frame (re-sending rewrites the file being served):
    # the sequential reference does not change while the parallel frames stream.
    parallel = [u for u in updates if isinstance(u[INFO], dict) and u[INFO].get("phase") == "parallel"]
    assert all(u[SEQUENTIAL] == {"__type__": "update"} for u in parallel[1:])
    # Downloads: a GIF with one frame per iteration, the residual history as CSV.
    files = {Path(f["orig_name"]).suffix: f for f in final[DOWNLOADS]}
    assert set(files) == {".gif", ".csv", ".json"}
    assert Image.open(io.BytesIO(fetch(files[".gif"]))).n_frames == info["iteration"]
    rows = list(csv.DictReader(io.StringIO(fetch(files[".csv"]).decode())))
    assert len(rows) == info["iteration"] and rows[-1]["anchor"] == "0"


@pytest.mark.slow
def test_stop_ends_the_run_within_an_iteration_and_the_app_keeps_serving(app: Any) -> None:
    c = client(app)
    slow = dict(DEFAULTS, solver="jacobi", order=1)  # ~50 iterations if left alone
    app.events.clear()
    job = c.submit(**slow, api_name="/run")
    deadline = time.monotonic() + 60
    while app.events.count("iterate") < 2:
        assert time.monotonic() < deadline and not job.done(), "run did not start"
        time.sleep(0.05)
    job.cancel()
    time.sleep(2.0)  # an iteration is ~0.5 s here: the server must have stopped by now
    seen = app.events.count("iterate")
    time.sleep(1.5)
    assert app.events.count("iterate") == seen < 20, app.events
    assert "done" not in app.events
    result = c.predict(**FAST, api_name="/run")
    assert result[INFO]["converged"]


@pytest.mark.slow
def test_bad_input_is_a_clear_error_and_the_next_run_works(app: Any) -> None:
    from gradio_client.exceptions import ValidationError

    c = client(app)
    bad = [
        (dict(prompt="purple dragon on blue"), "unknown word 'dragon'"),
        (dict(window=60), "window must be an integer in [1, T] or 'auto' (T = 50)"),
        (dict(seed="abc"), "seed must be a number"),
        (dict(steps=500), "at most 200"),
        (dict(init="trajectory"), "none is stored"),
        (dict(model="elsewhere/model"), "model must be one of"),
    ]
    for change, message in bad:
        with pytest.raises(ValidationError, match=re.escape(message)):
            c.predict(**dict(DEFAULTS, **change), api_name="/run")
    assert c.predict(**FAST, api_name="/run")[INFO]["converged"]


@pytest.mark.slow
def test_two_clients_at_once_both_finish(app: Any) -> None:
    results: dict[int, Any] = {}

    def go(seed: int) -> None:
        results[seed] = client(app).predict(
            **dict(DEFAULTS, steps=20, window=20, max_iters=20, seed=seed), api_name="/run"
        )

    threads = [threading.Thread(target=go, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [1, 2]
    assert all(r[INFO]["converged"] and r[INFO]["max_pixel_diff"] <= 2 / 255 for r in results.values())
    assert not np.array_equal(pixels(results[1][IMAGE]), pixels(results[2][IMAGE]))  # different seeds


@pytest.mark.slow
def test_previous_trajectory_as_initialisation(app: Any) -> None:
    from gradio_client.exceptions import ValidationError

    c = client(app)  # one client = one session: the stored trajectory lives in its gr.State
    cold = c.predict(**FAST, api_name="/run")[INFO]
    c.predict(api_name="/use_as_init")
    warm = c.predict(**dict(FAST, init="trajectory"), api_name="/run")[INFO]
    assert warm["converged"] and warm["iteration"] < cold["iteration"]
    with pytest.raises(ValidationError, match="T = 20"):
        longer = dict(FAST, init="trajectory", steps=30, window=30, max_iters=30)
        c.predict(**longer, api_name="/run")


def test_race_streams_both_solvers_to_the_sequential_image(app: Any) -> None:
    c = client(app)
    args = {k: v for k, v in FAST.items() if k not in ("solver", "init")}
    job = c.submit(*args.values(), api_name="/race")
    updates = list(job)
    final = job.result()
    lanes = [set(u[-1]) for u in updates if isinstance(u[-1], dict) and "phase" not in u[-1]]
    assert {"jacobi"} in lanes or {"jacobi", "anderson"} in lanes
    info = final[-1]
    assert info["jacobi"]["converged"] and info["anderson"]["converged"]
    assert info["anderson"]["iteration"] <= info["jacobi"]["iteration"]


@pytest.mark.parametrize(
    "contest,lanes", [("samplers", ("ddim", 50, "dpm++2m", 20)), ("unipc", ("unipc", 20, "dpm++2m", 20))]
)
def test_a_samplers_race_ends_each_sampler_on_its_own_sequential_image(app: Any, contest, lanes) -> None:
    """DDIM-50 or UniPC-20 against DPM++ 2M-20: each lane converges to the image its own sampler gives
    sequentially, the one /run gives for that sampler and T; the verdict says each lane's parallel and
    sequential counts."""
    from ui.run.session import SAMPLER_RACES

    c = client(app)
    args = {k: v for k, v in FAST.items() if k not in ("solver", "init")}
    a, b, _, _, _, _, stats, info = c.predict(**args, contest=contest, api_name="/race")
    first, second = SAMPLER_RACES[contest]
    lanes = {first: (lanes[0], lanes[1], a), second: (lanes[2], lanes[3], b)}
    assert set(info) == set(lanes), info
    for lane, (sampler, T, image) in lanes.items():
        assert info[lane]["steps"] == T and info[lane]["converged"] and info[lane]["same_image"], info[lane]
        assert f"**{lane}**: " in stats and f"(sequential: {T} calls one after another)" in stats
        alone = dict(FAST, sampler=sampler, steps=T, window=T, order=min(20, T), max_iters=T)
        run = c.predict(**alone, api_name="/run")
        assert run[INFO]["iteration"] == info[lane]["iteration"]  # the same solve, run on its own
        assert np.array_equal(pixels(run[IMAGE]), pixels(image))
    assert "each ended on its own sequential point (distances " in stats, stats  # toy2d: points


def test_a_splits_race_ends_both_lanes_on_one_sequential_image_and_the_flow_split_sooner(app: Any) -> None:
    """The update's two linear parts on one problem: both lanes end on the same sequential image (the
    split changes how the iterates move, never the fixed point), the flow split in fewer iterations."""
    c = client(app)
    args = {k: v for k, v in FAST.items() if k not in ("solver", "init")}
    a, b, _, _, _, _, stats, info = c.predict(**args, contest="splits", api_name="/race")
    assert set(info) == {"flow split", "published split"}, info
    flow, published = info["flow split"], info["published split"]
    assert flow["converged"] and published["converged"] and flow["same_image"] and published["same_image"]
    assert flow["iteration"] < published["iteration"], (flow, published)
    assert "**Flow split wins**" in stats and "both ended on the sequential DDIM point" in stats, stats


@pytest.mark.slow
def test_teach_tab_runs_both_solvers(app: Any) -> None:
    from gradio_client.exceptions import ValidationError

    c = client(app)
    *panels, summary, numbers = c.predict("", 3, 20, 1, api_name="/teach")
    assert len(panels) == 4 and all(p["url"].endswith(".png") for p in panels)
    assert "Jacobi" in summary and "TAA" in summary and "iterations" in summary
    assert numbers["frame"] == 0 and set(numbers["lanes"]) == {"jacobi", "anderson-global", "anderson"}
    with pytest.raises(ValidationError, match="unknown word 'up'"):
        c.predict("up north", 3, 20, 1, api_name="/teach")


def test_scrub_and_stop_handlers_use_the_stored_record(tmp_path: Path, monkeypatch: Any) -> None:
    """The private events (slider, after-Stop), called directly on a record from a real run."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from ui.run.handlers import after_stop, make_run_handler, scrub

    run = make_run_handler(["shapes", "toy2d"])
    outs = list(run(**FAST, init_state=None))
    record = outs[-1][RECORD]
    n = record.iterations
    assert n > 2 and record.converged and record.trajectory.shape == (21, 2)
    first = scrub(record, 1)
    assert first[INFO]["iteration"] == 1 and first[INFO]["phase"] == "scrub"
    assert not np.array_equal(first[IMAGE], scrub(record, n)[IMAGE])
    assert scrub(record, 99)[INFO]["iteration"] == n  # clamped to the run
    for garbage in ("x", None, [1], 1.5, float("nan")):  # raw HTTP to the hidden event: nothing changes
        assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in scrub(record, garbage))
    # A run cut short by Stop: downloads and scrubbing for what exists, and the stats say so; every
    # panel shows the same iteration (the last one computed may not have been shown yet).
    record.final_image = None
    del record.rows[2:], record.previews[2:]
    *frame, files, slider = after_stop(record)
    assert len(files) == 3 and all(os.path.exists(f) for f in files)
    assert slider["maximum"] == 2 and "stopped by the user after iteration 2" in frame[STATS]
    assert frame[INFO]["iteration"] == 2 and "Not converged" in frame[STATS]
    assert np.array_equal(frame[IMAGE], scrub(record, 2)[IMAGE])
    # A second Stop changes nothing and adds no second note.
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in after_stop(record))
    assert record.notes.count("stopped by the user after iteration 2") == 1


def test_settings_refuse_empty_prompt_for_a_text_model() -> None:
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    args = dict(DEFAULTS, model="some/stable-diffusion", prompt="  ")
    with pytest.raises(ValueError, match="prompt is empty"):
        parse_settings(**args, caps=Caps(200, 200), needs_prompt=True)
    args["model"] = "shapes"  # the embedded model's empty prompt means "any shape"
    assert parse_settings(**args, caps=Caps(200, 200)).request.prompt == ""
    with pytest.raises(ValueError, match="steps must be at most 40"):
        parse_settings(**DEFAULTS, caps=Caps(40, 100))


def test_zerogpu_wrapper_gets_picklable_arguments_and_events(monkeypatch: Any) -> None:
    """With the ``spaces`` package, the GPU generators run in a worker: arguments and every yielded
    value cross a process boundary by pickle. A stand-in ``spaces.GPU`` does exactly that."""
    import pickle
    import sys
    import types

    from ui.run.handlers import zero_gpu
    from ui.run.session import race_events, run_events
    from ui.run.settings import parse_settings
    from ui.serve.gpu import gpu
    from ui.serve.limits import Caps

    durations: list[int] = []

    def GPU(duration: Any = 60) -> Any:  # noqa: N802 - the real decorator's name
        def decorate(fn: Any) -> Any:
            def worker(*args: Any) -> Iterator[Any]:
                durations.append(duration(*args) if callable(duration) else duration)  # ZeroGPU's dynamic
                for value in fn(*pickle.loads(pickle.dumps(args))):
                    yield pickle.loads(pickle.dumps(value))

            return worker

        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    settings = parse_settings(**FAST, caps=Caps(200, 200))
    events = list(gpu(run_events)(settings, None))
    assert durations and events[-1].kind == "done" and events[-1].trajectory.shape == (21, 2)
    lanes = {e.lane for e in zero_gpu(race_events, race=True)(settings) if e.kind == "done"}
    assert lanes == {"jacobi", "anderson"}
    assert all(isinstance(d, int) and d > 0 for d in durations)


@pytest.fixture(scope="module")
def sd_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app opened on a tiny random-weight Stable Diffusion folder, as ``app.py --model FOLDER`` does."""
    from paratta.models.diffusers.tiny import save_tiny_sd
    from ui.app import build_demo

    tmp = tmp_path_factory.mktemp("sd")
    folder = str(save_tiny_sd(tmp / "tiny-sd"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setattr(tempfile, "tempdir", str(tmp))
        demo = build_demo(extra_model=folder)
        demo.queue(default_concurrency_limit=2)
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
        try:
            yield SimpleNamespace(local_url=demo.local_url, folder=folder)
        finally:
            demo.close()


def test_stable_diffusion_needs_a_prompt_and_matches_sequential(sd_app: Any) -> None:
    from gradio_client.exceptions import ValidationError

    c = client(sd_app)
    sd = dict(DEFAULTS, model=sd_app.folder, guidance=5.0, steps=10, window=10, order=10, max_iters=10)
    with pytest.raises(ValidationError, match="prompt is empty"):
        c.predict(**dict(sd, prompt=" "), api_name="/run")
    final = c.predict(**dict(sd, prompt="a red fox"), api_name="/run")
    info = final[INFO]
    assert info["converged"] and info["max_pixel_diff"] <= 2 / 255
    assert pixels(final[IMAGE]).shape == pixels(final[SEQUENTIAL]).shape


def test_reference_and_parallel_iterations_interleave_and_distances_arrive() -> None:
    """The first ParaTAA frame does not wait for all T reference steps; once the reference ends, the
    earlier iterations get their distance to it, and "done" comes after the whole reference."""
    from ui.run.session import run_events
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    settings = parse_settings(**dict(DEFAULTS, steps=100, window=100, max_iters=100), caps=Caps(200, 200))
    kinds, distances = [], []
    for event in run_events(settings):
        kinds.append(event.kind)
        distances += getattr(event, "values", [])
    assert kinds.index("iterate") < kinds.index("reference") < kinds.index("done") == len(kinds) - 1
    assert kinds.count("distances") == 1 and len(distances) == kinds[: kinds.index("reference")].count(
        "iterate"
    )
    assert all(np.isfinite(distances)) and distances[0] > distances[-1]


def test_screen_sends_an_unchanged_output_once_and_everything_at_the_end() -> None:
    from ui.run.handlers import Screen

    screen = Screen(("image", "stats"))
    image = np.zeros((4, 4, 3), np.uint8)
    assert screen.show(image=image, stats="a")[0] is image
    again = screen.show(image=image.copy(), stats="b")  # same pixels, a new array
    assert again[0] == {"__type__": "update"} and again[1] == "b"
    assert screen.show(final=True)[0] is not None and screen.show(final=True)[1] == "b"


def test_the_final_update_sends_an_image_already_sent_as_a_file_written_once(tmp_path: Path) -> None:
    """Re-sending the same array would make Gradio rewrite the cache file the browser may be reading
    (defect 1); a content-named file is copied into the cache atomically, and only once."""
    from ui.run.handlers import Screen

    screen = Screen(("image",), folder=tmp_path)
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    screen.show(image=image)
    path = screen.show(final=True)[0]
    assert isinstance(path, str) and np.array_equal(np.asarray(Image.open(path)), image)
    written = os.stat(path).st_mtime_ns
    assert screen.show(final=True)[0] == path and os.stat(path).st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no staging file left


def test_steps_changed_lets_order_window_and_budget_follow_T_back_up() -> None:
    from ui.view.controls import steps_changed

    order, window, budget, last, note = steps_changed(2, 20, 50, 50, 50)  # T 50 → 2
    assert (order["value"], window["value"], budget["value"], last) == (2, 2, 2, 2)
    assert note == "Lowered to T = 2 (none may exceed T): Order k 20 → 2."  # a clamp is said, not silent
    order, window, budget, last, note = steps_changed(100, 2, 2, 2, 2)  # T 2 → 100: back to the auto values
    assert (order["value"], window["value"], budget["value"], last, note) == (20, 100, 100, 100, "")
    order, window, _, _, _ = steps_changed(100, 20, 10, 50, 50)  # a window set below T is kept
    assert (order["value"], window["value"]) == (20, 10)
    assert all(
        u == {"__type__": "update"} for u in steps_changed("1e9", 20, 50, 50, 50)
    )  # not a T: no change
    assert steps_changed(1, 20, 50, 50, 50)[1]["value"] == 1  # T = 1 is a valid run


def test_verdict_says_same_image_only_when_it_is_true() -> None:
    from ui.view.record import IterationRow, RunRecord
    from ui.view.views import race_verdict, stats, verdict

    def record(converged: bool, level: int, solver: str = "anderson", iterations: int = 14) -> RunRecord:
        settings = typed(**dict(DEFAULTS, solver=solver))
        r = RunRecord(settings=settings, steps=50, tol=1e-3, latent_shape=(3, 8, 8))
        r.rows = [
            IterationRow(k, (0, 50), 0 if converged and k == iterations else 7, 50 * k, 0.1 * k, 1e-2, 1e-5,
                         np.full(50, 1e-3), converged and k == iterations)
            for k in range(1, iterations + 1)
        ]  # fmt: skip
        r.previews = [np.zeros((8, 8, 3), np.uint8)] * iterations
        r.sequential_preview = r.sequential_image = np.zeros((8, 8, 3), np.uint8)
        r.final_image = np.full((8, 8, 3), level, np.uint8)
        return r

    same = verdict(record(True, 1), 14)
    assert same.startswith("✓ **Same image as sequential DDIM** — **14 parallel iterations** instead of 50")
    assert "(3.6× fewer); largest pixel difference 1/255" in same
    assert "not the same image" in verdict(record(True, 3), 14) and "3/255" in verdict(record(True, 3), 14)
    assert verdict(record(False, 0), 14).startswith("✗ **Not converged**")
    line = stats(record(True, 0, solver="jacobi"), 14, "done")[0]
    assert "Jacobi: " in line and "ParaTAA" not in line  # each solver under its own name
    race = race_verdict({"Jacobi": record(True, 0, "jacobi", 21), "Anderson": record(True, 1)})
    assert "**Anderson wins**: 14 parallel iterations against 21 (7 fewer, 33%)" in race
    assert "both ended on the sequential DDIM image" in race


def test_a_model_of_points_is_judged_by_the_distance_of_its_points_in_the_planes_units() -> None:
    from ui.view.record import IterationRow, RunRecord
    from ui.view.views import race_verdict, verdict

    def record(
        rms: float, converged: bool = True, solver: str = "anderson", iterations: int = 9
    ) -> RunRecord:
        settings = typed(**dict(DEFAULTS, model="toy2d", solver=solver))
        r = RunRecord(settings=settings, steps=50, tol=1e-3, latent_shape=(2,))
        r.rows = [
            IterationRow(k, (0, 50), 0 if converged and k == iterations else 7, 50 * k, 0.1 * k, 1e-2, rms,
                         np.full(50, 1e-3), converged and k == iterations)
            for k in range(1, iterations + 1)
        ]  # fmt: skip
        r.previews = [np.zeros((8, 8, 3), np.uint8)] * iterations
        r.sequential_preview = r.sequential_image = np.zeros((8, 8, 3), np.uint8)
        r.final_image = np.full((8, 8, 3), 200, np.uint8)  # the dots' pictures are not what is compared
        return r

    close = verdict(record(1e-5), 9)
    assert close.startswith("✓ **Same point as sequential DDIM** — **9 parallel iterations** instead of 50")
    assert "x₀ is 1.4e-05 from the sequential x₀ (Euclidean, in the plane's units)" in close
    assert "/255" not in close and "pixel" not in close
    far = verdict(record(0.2), 9)
    assert "not the same point" in far and "x₀ is 2.8e-01 from the sequential x₀" in far
    assert "not yet the sequential DDIM point" in verdict(record(1e-5, converged=False), 9)
    race = race_verdict({"Jacobi": record(2e-5, solver="jacobi", iterations=12), "Anderson": record(1e-5)})
    assert "both ended on the sequential DDIM point (distances 1.4e-05 and 2.8e-05)" in race


def test_wall_clock_comes_with_its_reason_and_a_labelled_projection_where_a_table_exists(
    monkeypatch: Any,
) -> None:
    from paratta.planning.latency import LatencyTable
    from ui.view import views
    from ui.view.record import IterationRow, RunRecord

    settings = typed(**dict(DEFAULTS, guidance=3.0, steps=4, order=4, window=4, max_iters=4))
    r = RunRecord(settings=settings, steps=4, tol=1e-3, latent_shape=(3, 8, 8))
    r.rows = [
        IterationRow(k, (0, 4), 4 - k, 4 * k, 0.1, 1e-2, 1e-5, np.full(4, 1e-3), k == 4) for k in (1, 2, 3, 4)
    ]
    monkeypatch.setattr(views, "latency_table", lambda model: None)
    line, info = views.wall_clock(r, 4)
    assert "on a CPU a batch of W network evaluations costs many single calls" in line
    assert "no latency table measured for this model on a GPU" in line and info["projection"] is None
    table = LatencyTable(model="shapes", device="NVIDIA H200", rows=(1, 2, 8), ms=(1.0, 1.0, 2.0))
    monkeypatch.setattr(views, "latency_table", lambda model: table)
    line, info = views.wall_clock(r, 4)  # 4 iterations of 4 guided timesteps = 8 rows: 2 ms each
    assert info["projection"]["parallel_s"] == pytest.approx(8e-3)
    assert info["projection"]["sequential_s"] == pytest.approx(4e-3)  # T × one guided step (2 rows)
    assert "**Projected**" in line and "projected on NVIDIA H200 from a measured batch-latency table" in line
    assert "not measured here" in line
    line, info = views.wall_clock(r, 3)  # not converged yet: its time, no ratio
    assert "**Projected** for these 3 iterations: ParaTAA 6 ms" in line and "no speed-up is claimed" in line
    assert "×" not in line and info["projection"]["sequential_s"] is None


def test_progress_line_says_why_the_preview_stands_still() -> None:
    from ui.view.record import IterationRow, RunRecord
    from ui.view.views import progress

    r = RunRecord(settings=typed(**dict(DEFAULTS, window=10)), steps=50, tol=1e-3, latent_shape=(3, 8, 8))
    row = IterationRow(3, (38, 48), 45, 30, 0.3, 1e-1, float("nan"), np.full(50, np.nan))
    line = progress(r, row)
    assert "**Iteration 3** · 5/50 timesteps final" in line
    assert "the window (steps 38–47) has not reached x₀ yet" in line
    assert "not reached" not in progress(r, IterationRow(9, (0, 10), 5, 90, 0.9, 1e-2, 0.1, np.zeros(50)))


def test_a_stopping_race_runs_each_rule_at_its_own_tolerance_unless_one_is_given() -> None:
    from paratta.config import TOLERANCE
    from paratta.planning.plan import resolve
    from ui.run.session import race_lanes

    lanes = race_lanes(typed(**dict(DEFAULTS, tol="")), "stopping")
    assert {rule: resolve(s.config, 50).tol for rule, s in lanes.items()} == TOLERANCE
    given = race_lanes(typed(**dict(DEFAULTS, tol=5e-4)), "stopping")
    assert {resolve(s.config, 50).tol for s in given.values()} == {5e-4}


def test_a_stopping_race_says_iterations_and_evaluations_of_each_rule_at_its_tolerance() -> None:
    from ui.view.record import IterationRow, RunRecord
    from ui.view.views import race_verdict

    def lane(stopping: str, tol: float, iterations: int, evaluations: int) -> RunRecord:
        r = RunRecord(
            settings=typed(**dict(DEFAULTS, stopping=stopping)), steps=50, tol=tol, latent_shape=(3,)
        )
        r.rows = [IterationRow(k, (0, 50), 0, evaluations * k // iterations, 0.1, 1e-4, 1e-5, np.zeros(50),
                               k == iterations) for k in range(1, iterations + 1)]  # fmt: skip
        r.previews = [np.zeros((8, 8, 3), np.uint8)] * iterations
        r.sequential_preview = r.sequential_image = r.final_image = np.zeros((8, 8, 3), np.uint8)
        return r

    text = race_verdict(
        {"Budget rule": lane("budget", 2e-3, 11, 362), "Per-step rule": lane("per-step", 1e-3, 12, 305)}
    )
    assert "wins" not in text  # fewer iterations and fewer evaluations went to different rules
    assert "**Budget rule** (tol 0.002): 11 parallel iterations, 362 network evaluations" in text
    assert "**Per-step rule** (tol 0.001): 12 parallel iterations, 305 network evaluations" in text


def test_the_page_is_built_without_a_warning() -> None:
    """A clean start: Gradio checks every event's function against its inputs when the page is built
    (the load and unload events take the request Gradio fills in, typed as such)."""
    import warnings

    from ui.app import build_demo

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_demo()


def test_stop_before_a_run_has_drawn_says_so_and_a_stop_when_idle_changes_nothing() -> None:
    """``after_stop``: a run in flight with no iteration of its own (the state still holds the last run,
    or none) ends on a sentence; with no run in flight, Stop changes nothing."""
    from ui.run.handlers import STOP_OUTPUTS, after_stop
    from ui.view.record import RunRecord

    finished = RunRecord(settings=typed(**DEFAULTS), steps=50, tol=1e-3, latent_shape=(3,))
    finished.final_image = np.zeros((8, 8, 3), np.uint8)
    for last in (None, finished):
        shown = dict(zip(STOP_OUTPUTS, after_stop(last, in_flight=True), strict=True))
        assert "Stopped** before the first parallel iteration" in shown["stats"], shown["stats"]
        assert shown["info"]["phase"] == "stopped"
        idle = after_stop(last, in_flight=False)
        assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in idle), idle


def test_the_prompt_hint_fits_the_kind_of_model() -> None:
    """An embedded model's own words, a text encoder's any words, a class-conditional model's classes."""
    from paratta.models.diffusers.dit import DiTModel
    from paratta.models.diffusers.sd import StableDiffusionModel
    from paratta.models.diffusers.tiny import tiny_dit_pipeline, tiny_sd_pipeline
    from ui.serve.models import get_model
    from ui.view.controls import prompt_hint

    def hint(model: Any) -> str:
        return prompt_hint(model, model.defaults)

    assert hint(get_model("shapes")).startswith("only this model's words")
    sd = hint(StableDiffusionModel(tiny_sd_pipeline(), device="cpu"))
    assert "any words" in sd and "required" in sd and "vocabulary" not in sd
    dit = DiTModel(tiny_dit_pipeline(id2label={0: "tench", 1: "goldfish"}), device="cpu")
    assert hint(dit).startswith("one of its class names")
