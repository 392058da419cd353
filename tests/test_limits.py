"""A public Space's limits (issue 11): bounded work, disk and memory per visitor, a clean error for bad input.

Handlers are driven directly where that suffices (fast); the queue, the upload route, the cache sweep
and the API's error flow through a server started here on 127.0.0.1 with a one-job queue, as on a Space.
"""

from __future__ import annotations

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

from tests.local import free_port

IMAGE, SEQUENTIAL, DIFF, HEATMAP, CURVES, STATS, INFO, DOWNLOADS, RECORD = range(9)
BASE: dict[str, Any] = dict(
    model="shapes",
    prompt="red circle on blue",
    negative_prompt="",
    seed=0,
    steps=10,
    eta=0.0,
    guidance=1.0,
    solver="anderson",
    order=10,
    window=10,
    history=2,
    tol=1e-3,
    max_iters=10,
    init="xT",
    stopping="budget",
)
# Deliberately slow: Jacobi at order 1 with a tolerance it cannot meet early takes ~T iterations of T rows.
SLOW = dict(BASE, steps=100, window=100, max_iters=100, order=1, solver="jacobi", tol=1e-12)


def run_handler() -> Any:
    from ui.run.handlers import make_run_handler

    return make_run_handler(["shapes", "toy2d", "shapes-unet"])


def drain(updates: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(updates)


def last_value(updates: list[tuple[Any, ...]], index: int) -> Any:
    """The last value an output was given (``gr.skip()`` leaves the previous one)."""
    values = [
        u[index] for u in updates if not (isinstance(u[index], dict) and u[index].get("__type__") == "update")
    ]
    return values[-1] if values else None


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temp folders of this test only; no Space, defaults for every limit."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    for name in ("SPACE_ID", "PARATTA_BUDGET_S", "PARATTA_MAX_WORK_S", "PARATTA_DELETE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


# ---- work bound per run --------------------------------------------------------------------------


def test_time_budget_ends_a_slow_run_as_if_stopped(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARATTA_BUDGET_S", "3")
    updates = drain(run_handler()(**SLOW, init_state=None))
    stats, record = last_value(updates, STATS), last_value(updates, RECORD)
    assert "time budget of 3 s" in stats and "stopped after iteration" in stats
    assert record.stopped and 0 < record.iterations < 100 and record.final_image is None
    files = last_value(updates, DOWNLOADS)
    assert [Path(f).name for f in files] == [
        "paratta_previews.gif",
        "paratta_residuals.csv",
        "paratta_run.json",
    ]
    assert all(Path(f).stat().st_size > 0 for f in files)


def test_race_and_teach_are_under_the_same_limits(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from ui.run.handlers import make_race_handler
    from ui.teach import teach_run

    monkeypatch.setenv("PARATTA_BUDGET_S", "3")
    race = {k: v for k, v in SLOW.items() if k not in ("solver", "init")}
    updates = drain(make_race_handler(["shapes"])(**race))
    assert "time budget of 3 s" in last_value(updates, 6)  # the race's stats line
    monkeypatch.setenv("SPACE_ID", "user/paratta")
    for args, message in [((123, 3, 50, 20), "prompt must be text"), (("north", 3, 200, 20), "at most 100")]:
        with pytest.raises(gr.Error, match=message):
            list(teach_run(*args))  # the refusal is shown in the verdict line, then raised


def test_work_cap_refuses_t200_unet_on_a_cpu_space_and_names_what_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ui.run.door import check_work
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    monkeypatch.setenv("SPACE_ID", "user/paratta")
    caps = Caps.from_env()
    unet = dict(BASE, model="shapes-unet", prompt="red circle", guidance=3.0)

    def check(race: str | None = None, **change: Any) -> None:
        settings = parse_settings(**dict(unet, **change), caps=caps)
        check_work(settings, None, caps, race)  # built-ins cost what was measured: no model needed

    with pytest.raises(ValueError, match="steps must be at most 100"):
        check(steps=200, window=200, order=20, max_iters=200)
    with pytest.raises(ValueError, match=r"cap here is 150 s.*max iterations ≤ 21 fits"):
        check(steps=100, window=100, order=20, max_iters=100)
    check(steps=100, window=100, order=20, max_iters=21)
    check(steps=60, window=60, order=20, max_iters=60)  # one solver fits …
    with pytest.raises(ValueError, match="two solvers"):  # … a race pays for both lanes
        check("solvers", steps=60, window=60, order=20, max_iters=60)
    monkeypatch.delenv("SPACE_ID")
    caps = Caps.from_env()  # elsewhere (a CPU box of one's own) the cap is larger: T = 200 allowed, within it
    check(steps=200, window=200, order=20, max_iters=106)


def test_evaluation_bound_holds_for_a_worst_case_run() -> None:
    """The cap's bound is a bound: a run that cannot converge early stays within it (toy2d: instant)."""
    from paratta import Request, SolverConfig, load_model, make_problem, pose, solve

    request = Request(prompt="north", seed=1, steps=30)
    problem = make_problem(load_model("toy2d"), request)
    for window, solver in ((30, "jacobi"), (7, "anderson"), (1, "jacobi")):
        config = SolverConfig(solver=solver, order=1, window=window, tol=1e-12)
        last = list(solve(problem, config))[-1]
        evaluation_bound = pose(load_model("toy2d"), request, config, dry=True).work.solve()[0]  # the cap's
        assert last.evaluations <= evaluation_bound
        assert evaluation_bound <= 30 * window


def test_one_job_per_session_a_new_run_replaces_the_running_one(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui.run import handlers

    log: list[tuple[str, float]] = []
    inner = handlers.gpu_run_events

    def logged(settings: Any, init: Any, *interrupt: Any) -> Iterator[dict[str, Any]]:
        name = "A" if settings.request.seed == 1 else "B"
        for event in inner(settings, init, *interrupt):
            log.append((name, time.monotonic()))
            yield event

    monkeypatch.setattr(handlers, "gpu_run_events", logged)
    session = SimpleNamespace(session_hash="visitor-1")
    first: list[tuple[Any, ...]] = []
    started = threading.Event()

    def run_first() -> None:
        for update in run_handler()(**dict(SLOW, seed=1), init_state=None, request=session):
            first.append(update)
            if any(n == "A" for n, _ in log[3:]):
                started.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    assert started.wait(60)
    import gradio as gr

    from ui.serve.jobs import JOBS

    with pytest.raises(gr.Error, match="none is stored"):  # a refused job replaces nothing
        drain(run_handler()(**dict(BASE, init="trajectory"), init_state=None, request=session))
    assert JOBS.current["visitor-1"].reason is None
    second = drain(run_handler()(**dict(BASE, seed=2), init_state=None, request=session))
    thread.join(60)
    assert not thread.is_alive()
    assert "replaced by a newer job from the same session" in last_value(first, STATS)
    assert last_value(second, INFO)["converged"]
    a_last = max(t for n, t in log if n == "A")
    b_first = min(t for n, t in log if n == "B")
    assert a_last < b_first  # never two jobs of one session at once


def test_memory_is_handed_back_after_every_job_and_not_for_a_refusal(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    from ui.run import handlers
    from ui.serve import gpu

    calls: list[int] = []
    monkeypatch.setattr(handlers, "release_memory", lambda: calls.append(1))
    drain(run_handler()(**BASE, init_state=None))
    assert calls == [1]
    with pytest.raises(gr.Error):
        drain(run_handler()(**dict(BASE, tol=-1), init_state=None))
    assert calls == [1]
    gpu.release_memory()  # gc, CUDA's cache where there is one, glibc's malloc_trim: never raises


def test_after_stop_writes_one_file_set_however_often_it_is_called(isolated: Path) -> None:
    from ui.run.handlers import after_stop
    from ui.serve.cache import session_folder

    updates = run_handler()(**SLOW, init_state=None, request=SimpleNamespace(session_hash="visitor-2"))
    record = None
    for update in updates:
        record = update[RECORD] if not isinstance(update[RECORD], dict) else record
        if record is not None and record.iterations >= 2:
            break
    updates.close()  # what Stop does: the generator is cancelled
    first = after_stop(record)
    for _ in range(5):
        again = after_stop(record)
        assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in again)
    assert record.stopped and any(isinstance(v, list) and len(v) == 3 for v in first)
    assert len(list(session_folder("visitor-2").iterdir())) == 3


# ---- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(prompt=123), "prompt must be text"),
        (dict(prompt=["red", "circle"]), "prompt must be text"),
        (dict(prompt="x" * 10_000_000), "at most 500 characters; got 10,000,000 characters"),
        (dict(negative_prompt={"a": 1}), "negative_prompt must be text"),
        (dict(seed=2**32), r"seed must be an integer in \[0, 4294967295\]"),
        (dict(seed=str(2**63)), r"seed must be an integer in \[0, 4294967295\]"),
        (dict(seed=float(2**53 + 2)), r"seed 9.0072e\+15 is too large: type a whole number from 0 to"),
        (dict(window=float(2**53 + 2)), "cannot hold integers above 2\\*\\*53 exactly"),
        (dict(seed=1.5), "seed must be a whole number"),
        (dict(steps=True), "steps must be an integer"),
        (dict(tol=float("nan")), "tol must be a finite number"),
        (dict(tol=0), r"tol must be a number in \[1e-12, 10\]"),
        (dict(tol="tiny"), "tol must be a number"),
        (dict(guidance="lots"), "guidance must be a number"),
        (dict(solver="y" * 100_000), "solver must be one of"),
        (dict(init=None), "init must be one of"),
        (dict(window=11), r"window must be an integer in \[1, T\] or 'auto' \(T = 10\)"),
    ],
)
def test_every_input_is_type_checked_with_a_short_message(change: dict[str, Any], message: str) -> None:
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    with pytest.raises(ValueError, match=message) as err:
        parse_settings(**dict(BASE, **change), caps=Caps(200, 200))
    assert len(str(err.value)) < 300  # a huge input never comes back as a huge message


def test_an_empty_tolerance_box_is_auto_and_a_typed_one_a_number() -> None:
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    for blank in ("", "  ", None):
        assert parse_settings(**dict(BASE, tol=blank), caps=Caps(200, 200)).config.tol is None
    assert parse_settings(**dict(BASE, tol=" 2e-3 "), caps=Caps(200, 200)).config.tol == 2e-3


def test_seeds_are_exact_up_to_2_32_minus_1_from_an_int_a_float_or_digits() -> None:
    from ui.run.settings import parse_settings
    from ui.serve.limits import Caps

    for seed in (2**32 - 1, str(2**32 - 1), float(2**32 - 1), " 123456789 ", 7.0, 0):
        settings = parse_settings(**dict(BASE, seed=seed), caps=Caps(200, 200))
        assert settings.request.seed == int(str(seed).strip().split(".")[0])


def test_every_unknown_word_is_named_non_ascii_included() -> None:
    from paratta.models import shapes, toy2d

    with pytest.raises(ValueError, match="unknown words '红色', '圆圈'"):
        shapes.parse_prompt("红色 圆圈")
    with pytest.raises(ValueError, match="unknown words 'dragon', 'wizard'"):
        shapes.parse_prompt("purple dragon on blue wizard")
    with pytest.raises(ValueError, match="unknown words '北', 'up'"):
        toy2d.parse_prompt("north 北 up")
    with pytest.raises(ValueError) as err:
        shapes.parse_prompt("z" * 10_000_000)
    assert len(str(err.value)) < 1000  # an unknown 10 MB word does not come back as a 20 MB error


def test_characters_that_are_not_words_are_refused_by_name() -> None:
    from paratta.models import shapes, toy2d

    for prompt, named in [
        ("red circle 😀 on blue", "U+1F600 GRINNING FACE"),
        ("red\u200bcircle", "U+200B ZERO WIDTH SPACE"),
        ("red \u202ecircle", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("red\x00circle", "U+0000"),
        ("e\u0301 circle", "U+0301 COMBINING ACUTE ACCENT"),
    ]:
        for parse in (shapes.parse_prompt, toy2d.parse_prompt):
            with pytest.raises(ValueError, match=re.escape(f"neither words nor separators: {named}")):
                parse(prompt)
    assert shapes.parse_prompt("red circle, on blue!\t(large)")  # punctuation and whitespace separate
    with pytest.raises(ValueError, match="and 4 more"):
        shapes.parse_prompt("".join(chr(0x1F600 + k) for k in range(10)))


# ---- malformed calls and the probe (issue 20: found by benchmarks/soak.py) --------------------------


def fake_fns() -> dict[int, Any]:
    run = SimpleNamespace(api_name="run", name="run", inputs=[None] * 16)
    stop = SimpleNamespace(api_name=None, name="<lambda>", inputs=[])
    return {13: run, 29: stop}


def test_a_call_of_no_event_or_with_too_few_inputs_is_refused_with_the_reason() -> None:
    import json

    from ui.serve.guards import call_problem

    def problem(body: Any, api: str | None = None) -> Any:
        return call_problem(fake_fns(), api, body if isinstance(body, bytes) else json.dumps(body).encode())

    assert problem({"data": [], "fn_index": 9999}) == (422, "no event with fn_index 9999")
    assert problem({"data": [], "fn_index": "13"})[0] == 422  # an index is an int, never a text
    assert problem({"data": ["shapes", "red"], "fn_index": 13}) == (422, "/run takes 16 inputs; got 2")
    assert problem({"data": [1]}, api="run") == (422, "/run takes 16 inputs; got 1")
    assert problem({"data": []}, api="nothing") == (404, "no API endpoint named 'nothing'")
    assert problem({"data": [None] * 16, "fn_index": 13}) is None  # a good call goes on to Gradio
    assert problem({"data": [], "fn_index": 29}) is None  # Stop: no inputs
    assert problem({"prompt": "x"}, api="run") is None  # /call/v2's named inputs: Gradio fills the rest
    assert problem(b"{not json") is None and problem(["a"]) is None  # Gradio's own 422 answers these


def test_the_probe_answers_loopback_only_and_only_when_turned_on_and_the_state_cap_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import json

    from ui.serve.guards import Probe, launch_limits

    queue = SimpleNamespace(
        event_queue_per_concurrency_id={"sampler": SimpleNamespace(queue=[1, 2])},
        active_jobs=[None, [1]],
        pending_messages_per_session={"a": 1},
        event_ids_to_events={"e": 1, "f": 2, "g": 3},
    )
    holder = SimpleNamespace(session_data={"a": SimpleNamespace(state_data={1: 1, 2: 2})}, capacity=200)
    app = SimpleNamespace(get_blocks=lambda: SimpleNamespace(state_holder=holder, _queue=queue))
    passed: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        passed.append(scope["path"])

    def get(client: str, path: str = "/paratta/probe") -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "client": (client, 1), "app": app}
        asyncio.run(Probe(inner)(scope, None, send))
        return sent

    counts = json.loads(get("127.0.0.1")[1]["body"])
    assert {"kept_bytes", "kept_sessions", "evicted"} <= counts.keys()  # ui.serve.keep's store
    assert {k: v for k, v in counts.items() if not k.startswith(("kept", "evicted"))} == {
        "sessions": 1, "session_capacity": 200, "state_values": 2, "queue_waiting": 2, "queue_running": 1,
        "queue_sessions": 1, "queue_events": 3, "jobs": 0,
    }  # fmt: skip
    assert get("10.0.0.7") == [] and get("127.0.0.1", "/config") == []
    assert passed == ["/paratta/probe", "/config"]  # everything else goes on to the app
    monkeypatch.delenv("PARATTA_PROBE", raising=False)
    assert launch_limits()["state_session_capacity"] == 200
    monkeypatch.setenv("PARATTA_STATE_SESSIONS", "40")  # the soak's lower cap, reached in a short run
    assert launch_limits()["state_session_capacity"] == 40
    for bad in ("0", "many", "-3"):
        monkeypatch.setenv("PARATTA_STATE_SESSIONS", bad)
        with pytest.raises(ValueError, match="PARATTA_STATE_SESSIONS must be a whole number"):
            launch_limits()
    monkeypatch.delenv("PARATTA_STATE_SESSIONS")
    assert Probe not in [m.cls for m in launch_limits()["app_kwargs"]["middleware"]]
    monkeypatch.setenv("PARATTA_PROBE", "1")
    assert Probe in [m.cls for m in launch_limits()["app_kwargs"]["middleware"]]


# ---- what sessions keep: bounded in bytes, visitors first ------------------------------------------


def visit(session: str, **change: Any) -> Any:
    """A run of ``session`` through the handler (as the queue calls it); its record (the gr.State)."""
    request = SimpleNamespace(session_hash=session)
    return last_value(drain(run_handler()(**dict(BASE, **change), init_state=None, request=request)), RECORD)


def test_state_is_bounded_in_bytes_the_oldest_session_goes_first_and_is_told(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    from ui.run.door import use_validator
    from ui.run.handlers import after_stop, scrub, use_as_init, why_not_usable
    from ui.serve.keep import EXPIRED, STORE, Store, Visitors

    one = visit("budget-probe").nbytes()  # what one run keeps (PNG previews, float32 trajectory)
    assert 0 < one < 200_000
    store = Store(int(2.5 * one), Visitors())  # room for two runs' records
    monkeypatch.setattr(STORE, "hold", store.hold)
    records = {s: visit(s, seed=k) for k, s in enumerate(("oldest", "older", "newest"))}
    stored = use_as_init(records["older"])[0]  # "older" keeps its trajectory for a warm start as well
    records["newest"] = visit("newest", seed=7)  # "newest" runs again: the budget is spent
    assert records["oldest"].expired and records["older"].expired and not records["newest"].expired
    assert store.total <= store.budget and set(store.sessions) == {"newest"}
    assert records["newest"].converged and use_as_init(records["newest"])[0]["trajectory"].get() is not None
    for handler in (use_as_init, lambda r: scrub(r, 1), after_stop):  # the evicted visitor is told
        with pytest.raises(gr.Error, match="your last run expired; run again"):
            handler(records["oldest"])
    answer = use_validator(use_as_init)(records["oldest"])  # at the door, before the queue
    assert answer["is_valid"] is False and answer["message"] == EXPIRED
    assert why_not_usable(records["oldest"]) == f"**Not stored:** {EXPIRED}"  # and under the button
    assert why_not_usable(None).startswith("**Not stored:** No finished run to use yet")
    assert why_not_usable(records["newest"]) == gr.skip()  # nothing to say: the event stores it
    warm = run_handler()(
        **dict(BASE, init="trajectory"), init_state=stored, request=SimpleNamespace(session_hash="older")
    )
    with pytest.raises(gr.Error, match="your last run expired"):
        drain(warm)


def test_gradio_has_every_private_name_the_app_uses() -> None:
    """``ui.serve.gradio_private`` is the only reader and writer of Gradio's private objects; a Gradio
    that moved one of them fails here, by name and version, before the app misbehaves on a Space."""
    import gradio as gr

    from ui.serve.gradio_private import check

    missing = check()
    assert not missing, f"Gradio {gr.__version__} lacks what ui/serve/gradio_private.py uses: {missing}"


def test_a_flood_of_made_up_sessions_evicts_no_visitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio's session state (the gr.State of each session) and the byte store both evict sessions
    that never loaded the page before any visitor's."""
    from gradio.state_holder import StateHolder

    from ui.serve import gradio_private, keep
    from ui.serve.gradio_private import VisitorsFirst, visitors_first
    from ui.serve.keep import KeptArray, Store, Visitors

    visitors = Visitors()
    monkeypatch.setattr(gradio_private, "VISITORS", visitors)
    app = SimpleNamespace(state_holder=StateHolder())
    app.state_holder.capacity = 5
    app.state_holder.blocks = SimpleNamespace(default_config=SimpleNamespace(blocks={}), blocks={})
    visitors_first(app)
    holder = app.state_holder
    assert type(holder) is VisitorsFirst
    holder["visitor"]
    visitors.add("visitor")  # the page's load event
    for n in range(500):
        holder[f"made-up-{n}"]
    assert "visitor" in holder and len(holder.session_data) == 5 and "made-up-499" in holder
    store = Store(10_000, visitors)
    monkeypatch.setattr(keep, "STORE", store)
    kept = KeptArray("visitor", np.zeros(1000, np.float32))
    for n in range(200):
        KeptArray(f"made-up-{n}", np.zeros(1000, np.float32))
    assert kept.get() is not None and store.total <= store.budget


# ---- through a server, as on a Space (one job at a time) ----------------------------------------


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("space")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setenv("TMPDIR", str(tmp / "tmp"))
        mp.setenv("PARATTA_DELETE_CACHE", "1,2")  # sweep every second, files older than 2 s
        mp.setenv("PARATTA_PROBE", "1")  # the loopback probe of sessions and queue (the soak benchmark's)
        mp.delenv("SPACE_ID", raising=False)
        (tmp / "tmp").mkdir()
        mp.setattr(tempfile, "tempdir", None)

        from ui.app import build_demo
        from ui.serve.guards import launch_limits

        demo = build_demo()
        demo.queue(default_concurrency_limit=1, max_size=32)
        demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=free_port(),
            quiet=True,
            **launch_limits(),
        )
        try:
            yield SimpleNamespace(url=demo.local_url, demo=demo, tmp=tmp)
        finally:
            demo.close()


def client(space: Any) -> Any:
    from gradio_client import Client

    return Client(space.url, verbose=False, download_files=False)


def folder_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@pytest.mark.slow
def test_uploads_are_refused_and_nothing_is_stored(space: Any) -> None:
    import httpx

    before = folder_size(space.tmp)
    reply = httpx.post(space.url + "gradio_api/upload", files={"files": ("big.bin", b"x" * 5_000_000)})
    assert reply.status_code == 403
    assert folder_size(space.tmp)[1] <= before[1] + 1000


@pytest.mark.slow
def test_api_errors_are_refused_at_the_door_and_keep_the_previous_run(space: Any) -> None:
    from gradio_client.exceptions import ValidationError

    c = client(space)
    good = c.predict(**BASE, api_name="/run")
    assert good[INFO]["converged"]
    for change, message in [
        (dict(prompt=123), "prompt must be text"),
        (dict(prompt="q" * 10_000_000), "at most 500"),
        (dict(prompt="red 圆圈 wizard"), "unknown words '圆圈', 'wizard'"),
        (dict(init="trajectory", steps=12, window=12, order=12, max_iters=12), "none is stored|T = 12"),
    ]:
        job = c.submit(**dict(BASE, **change), api_name="/run")
        with pytest.raises(ValidationError, match=message) as err:
            job.result()
        assert len(str(err.value)) < 1500
        assert job.outputs() == []  # never queued: nothing streamed, the page keeps what it shows
    note = c.predict(api_name="/use_as_init")  # the good run is still the session's run (state not sent)
    assert "Stored the final trajectory" in note


@pytest.mark.slow
def test_bad_input_is_answered_before_other_sessions_busy_runs_finish(space: Any) -> None:
    """Two slow runs of other visitors hold the one-job queue; a run with an out-of-range setting, a
    race, a Teach and a "use as initialisation" from a third visitor are answered with their message
    while both are still busy, and both busy runs still finish."""
    from gradio_client.exceptions import ValidationError

    busy = [
        client(space).submit(**dict(SLOW, steps=60, window=60, max_iters=60, seed=s), api_name="/run")
        for s in (1, 2)
    ]
    for job in busy:
        joined(job)
    visitor = client(space)
    refusals = [
        (lambda: visitor.predict(**dict(BASE, steps=0), api_name="/run"), r"steps.*\[1, "),
        (lambda: visitor.predict(**dict(BASE, window=-3), api_name="/run"), "window"),
        (lambda: visitor.predict(**race_args(steps=10**6), api_name="/race"), "steps must be"),
        (lambda: visitor.predict("north", 0, 0, 4, "ddim", api_name="/teach"), "steps"),
        (lambda: visitor.predict(api_name="/use_as_init"), "No finished run"),
    ]
    for call, message in refusals:
        with pytest.raises(ValidationError, match=message):
            call()
    assert not busy[1].done()  # answered while the second busy run still waits or runs
    for job in busy:
        assert job.result()[INFO]["phase"] == "done"


def race_args(**change: Any) -> dict[str, Any]:
    """/race's arguments by name: the run's less the two each lane sets itself."""
    return {n: v for n, v in BASE.items() if n not in ("solver", "init")} | change


def joined(job: Any) -> None:
    """Wait until the job is in the server's queue (or beyond), at most 30 s."""
    deadline = time.monotonic() + 30
    while job.status().code.name in ("STARTING", "JOINING_QUEUE") and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_a_burst_from_one_session_runs_only_its_newest_job(space: Any) -> None:
    c = client(space)
    jobs = []
    for change in (*(dict(SLOW, seed=s) for s in range(3)), dict(BASE, seed=9)):
        jobs.append(c.submit(**change, api_name="/run"))
        joined(jobs[-1])  # the client joins the queue from a thread: keep the submission order
    results = [job.result() for job in jobs]
    assert results[-1][INFO]["converged"]
    for r in results[:-1]:
        assert "replaced by a newer job from the same session" in r[STATS]


@pytest.mark.slow
def test_fifty_runs_leave_the_temp_folders_bounded(space: Any) -> None:
    """Every file Gradio caches for the runs (streamed frames, downloads) is seen; with a sweep every
    second of files older than 2 s, what stays after the 50th run and one more is a run's worth."""
    c = client(space)
    tiny = dict(BASE, model="toy2d", prompt="north", steps=4, window=4, order=4, max_iters=4)
    seen: dict[Path, int] = {}
    for seed in range(50):
        c.predict(**dict(tiny, seed=seed), api_name="/run")
        seen |= {p: p.stat().st_size for p in space.tmp.rglob("*") if p.is_file()}
    time.sleep(3)  # every file of the 50 runs is now older than 2 s: the next job's start sweeps them
    c.predict(**dict(tiny, seed=99), api_name="/run")
    files, size = folder_size(space.tmp)
    assert sum(seen.values()) > 10 * size and len(seen) > 10 * files, (len(seen), files, size)
    assert size < 1_000_000 and files < 100
    sessions = space.tmp / "tmp" / "paratta-sessions"
    assert len([p for p in sessions.rglob("*") if p.is_file()]) <= 3 * 4  # one set per session at most


@pytest.mark.slow
def test_the_limits_are_stated_under_the_controls(space: Any) -> None:
    from ui.serve.limits import Caps

    texts = [b.value for b in space.demo.blocks.values() if getattr(b, "elem_id", None) == "limits"]
    assert texts == [Caps.from_env().text()]
    assert "replaces the one still running" in texts[0]
    queues = {fn.api_name: fn.concurrency_id for fn in space.demo.fns.values()}
    assert queues["run"] == queues["race"]  # Run and Race share the concurrency limit, not one each


@pytest.mark.slow
def test_malformed_calls_get_a_reason_and_leave_no_traceback(
    space: Any, capfd: pytest.CaptureFixture
) -> None:
    """Found by the soak: Gradio 6.31 answered an unknown fn_index with HTTP 500 (a KeyError traceback in
    the log) and too few inputs with a ValueError traceback."""
    import httpx

    from ui.view.controls import RUN_INPUT_NAMES

    run_inputs = len(RUN_INPUT_NAMES) + 1  # and the stored initialisation (a gr.State)
    api = space.url + "gradio_api/"
    capfd.readouterr()
    short_run = {"data": ["shapes", "red"], "fn_index": fn_index(space, "run"), "session_hash": "soak2"}
    for path, body, status, reason in [
        ("queue/join", {"data": [], "fn_index": 9999, "session_hash": "s1"}, 422, "no event with fn_index"),
        ("queue/join", short_run, 422, f"/run takes {run_inputs} inputs; got 2"),
        ("call/run", {"data": ["shapes"]}, 422, f"/run takes {run_inputs} inputs; got 1"),
        ("call/v2/nothing", {"prompt": "x"}, 404, "no API endpoint named 'nothing'"),
    ]:  # fmt: skip
        reply = httpx.post(api + path, json=body, timeout=30)
        assert (reply.status_code, reply.json()["detail"][: len(reason)]) == (status, reason), reply.text
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err


def fn_index(space: Any, api_name: str) -> int:
    return next(i for i, fn in space.demo.fns.items() if fn.api_name == api_name)


@pytest.mark.slow
def test_the_probe_counts_sessions_and_an_empty_queue_after_a_run(space: Any) -> None:
    import httpx

    client(space).predict(**BASE, api_name="/run")
    counts = httpx.get(space.url + "paratta/probe", timeout=10).json()
    assert counts["sessions"] >= 1 and counts["session_capacity"] == 200
    assert counts["queue_waiting"] == counts["jobs"] == counts["queue_events"] == 0


def test_a_flux_model_is_charged_one_row_per_timestep_in_the_work_bound_and_the_zero_gpu_request(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flux takes guidance as an input of its network: a guided timestep is one row, not two."""
    import math

    import torch

    from paratta import Request, SolverConfig
    from paratta.models.diffusers.load import from_pipeline
    from paratta.models.diffusers.tiny import tiny_flux_pipeline, tiny_sd_pipeline
    from paratta.planning import cost
    from paratta.planning.plan import resolve
    from ui.run import handlers
    from ui.run.door import work_bound
    from ui.serve.limits import Caps
    from ui.view.record import RunSettings

    flux = from_pipeline(tiny_flux_pipeline(), device="cpu", dtype=torch.float32, height=16, width=16)
    sd = from_pipeline(tiny_sd_pipeline(), device="cpu")
    config = SolverConfig(window=100)

    def settings(name: str, guidance: float) -> RunSettings:
        return RunSettings(name, Request("a cat", steps=100, guidance=guidance), config)

    for device in ("cpu", "cuda"):  # the CPU table; on a GPU, the CPU table too (no GPU table for it)
        one_row = cost.work_bound(resolve(config, 100), 1, cost.cost_table("flux", flux, device).table)
        assert work_bound(settings("flux", 3.5), flux, device=device) == one_row
        assert work_bound(settings("flux", 1.0), flux, device=device) == one_row
        guided, plain = (work_bound(settings("sd", s), sd, device=device)[1] for s in (7.5, 1.0))
        assert guided > plain  # a guided SD timestep is two rows
    models = {"flux": flux, "sd": sd}
    monkeypatch.setattr(handlers, "get_model", lambda name: models[name])
    one_row_s = cost.work_bound(resolve(config, 100), 1, cost.cost_table("flux", flux, "cuda").table)[1]
    expected = math.ceil(min(Caps.from_env().budget_s, one_row_s)) + handlers.ZERO_GPU_MARGIN_S
    assert handlers.gpu_seconds(settings("flux", 3.5)) == expected
    assert handlers.gpu_seconds(settings("sd", 7.5)) > handlers.gpu_seconds(settings("sd", 1.0))
