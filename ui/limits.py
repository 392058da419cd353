"""Bounded work per run and per visitor: a worst-case cost cap, a wall-clock budget, one job per session.

- **Work cap** (checked before a run starts): the most network time a run's settings could cost,
  ``work_bound``, must stay under ``Caps.max_work_s``. The bound is exact in its assumptions: each
  parallel iteration finalises at least one more timestep, so iteration k evaluates at most
  min(W, T − k + 1) states; the sequential reference costs T; guidance doubles the rows; a row costs
  what it was measured to cost for that model (``ROW_MS``).
- **Budget** (checked between streamed events): a run older than ``Caps.budget_s`` ends as if stopped.
- **One job per session**: a session's new job (Run, Race or Teach) replaces the one still running,
  which ends at its next event as if stopped; a job that starts while a newer one from its session is
  already waiting in the queue ends at once, so only the newest of a burst runs.
- **Files**: each session writes its downloads into its own folder, removed when the session ends.
- **Calls**: a call of an event that does not exist, or with fewer inputs than it takes, is answered
  422/404 with the reason before Gradio sees it (``CheckedCalls``).
- **Probe** (``PARATTA_PROBE=1`` only, loopback clients only): ``GET /paratta/probe`` answers the counts of
  what the server holds for its visitors (``server_probe``), for the soak benchmark; read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import torch
from gradio.utils import get_upload_folder

from paratta import SolverConfig

from .settings import Caps, RunSettings, short

E = TypeVar("E")

# Milliseconds per network row (one state, one condition), batch of 50, 1 torch thread, measured on
# the 2-core Intel Xeon @ 2.50 GHz development box (CPU only); the unit of ``Caps.max_work_s``.
ROW_MS = {"toy2d": 0.01, "shapes": 4.1, "shapes-unet": 24.0}
# Other networks (diffusers folders, hub ids): scaled by parameter count from shapes-unet (1.12 M).
MS_PER_PARAMETER = 24.0 / 1_117_667
CACHE_FREQUENCY_S, CACHE_AGE_S = 300, 3600  # Gradio's cache: swept every 5 min, files kept for an hour
STATE_SESSIONS = 200  # sessions whose gr.State Gradio keeps (the oldest go first); PARATTA_STATE_SESSIONS
REPLACED = "replaced by a newer job from the same session"
JOB_APIS = frozenset({"run", "race", "teach"})
# Run (and the warm-start chain's runs) and Race share one Gradio concurrency id: together they get the
# queue's concurrency limit (1 on a Space), not one each.
SAMPLER_QUEUE = "sampler"


def row_ms(name: str, model: Any) -> float:
    """Measured cost of one network row for a built-in; by parameter count for any other network."""
    if name in ROW_MS:
        return ROW_MS[name]
    modules = [m for m in vars(model).values() if isinstance(m, torch.nn.Module)]
    parameters = sum(p.numel() for m in modules for p in m.parameters())
    return max(ROW_MS["shapes"], parameters * MS_PER_PARAMETER)


def evaluation_bound(steps: int, config: SolverConfig) -> int:
    """Most guided evaluations one solve can make: Σ_{k=1}^{K} min(W, T − k + 1) (+ the coarse pass).

    At iteration k the anchor is at most T − k + 1 (one more timestep final per iteration) and the
    window holds min(W, anchor) states; K = min(max_iters, T); an auto window is bounded by W = T.
    """
    cfg = config.resolved(steps)
    W = cfg.window if isinstance(cfg.window, int) else steps  # auto chooses a window ≤ T
    K = min(cfg.max_iters, steps)
    coarse = cfg.coarse_steps if cfg.init == "coarse" else 0
    return coarse + sum(min(W, steps - k + 1) for k in range(1, K + 1))


def work_bound(settings: RunSettings, model: Any, lanes: int = 1) -> tuple[int, float]:
    """(evaluations, seconds of network time) at worst: the sequential reference plus ``lanes`` solves."""
    T = settings.request.steps
    evaluations = T + lanes * evaluation_bound(T, settings.config)
    rows = 2 if settings.request.guidance != 1 else 1  # classifier-free guidance: two rows per state
    return evaluations, evaluations * rows * row_ms(settings.model, model) * area(settings, model) / 1000


def area(settings: RunSettings, model: Any) -> float:
    """The run's image area over the model's own: a row's cost grows at least with the pixels."""
    request, size = settings.request, getattr(model, "image_size", None)
    if size is None or (request.height is None and request.width is None):
        return 1.0
    return (request.height or size[0]) * (request.width or size[1]) / (size[0] * size[1])


def check_work(settings: RunSettings, model: Any, caps: Caps, lanes: int = 1) -> None:
    """``ValueError`` when the settings could cost more network time than ``caps.max_work_s``, naming the
    largest max_iters that would fit (when one does)."""
    evaluations, seconds = work_bound(settings, model, lanes)
    if seconds <= caps.max_work_s:
        return
    fits = [
        k
        for k in range(settings.request.steps, 0, -1)
        if work_bound(_with_max_iters(settings, k), model, lanes)[1] <= caps.max_work_s
    ]
    hint = f"max iterations ≤ {fits[0]} fits" if fits else "no max iterations fits at this T and window"
    raise ValueError(
        f"these settings could need up to {evaluations:,} network evaluations (T = {settings.request.steps}, "
        f"window {settings.config.window or settings.request.steps}, guidance {settings.request.guidance:g}"
        f"{', two solvers' if lanes == 2 else ''}), about {seconds:.0f} s on {settings.model} at worst; the "
        f"cap here is {caps.max_work_s:g} s: lower the steps, the window or max iterations ({hint})"
    )


def _with_max_iters(settings: RunSettings, k: int) -> RunSettings:
    return replace(settings, config=replace(settings.config, max_iters=k))


@dataclass
class Ticket:
    """One job's right to run: ``check()`` names why it must end (budget spent, replaced), else None."""

    session: str
    budget_s: float
    jobs: Jobs
    started: float = field(default_factory=time.monotonic)
    reason: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def check(self) -> str | None:
        if self.reason is None and time.monotonic() - self.started > self.budget_s:
            self.reason = f"reached this app's time budget of {self.budget_s:g} s per run"
        if self.reason is None and self.jobs.newer_waiting(self.session):
            self.reason = REPLACED
        return self.reason

    def end(self) -> None:
        self.jobs.end(self)


class Jobs:
    """The running job of each session (at most one). ``waiting`` tells whether a session has a job of
    ``JOB_APIS`` waiting in Gradio's queue (``queue_probe``); without it, only running jobs are seen."""

    def __init__(self, wait_s: float = 30.0) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, Ticket] = {}
        self.wait_s = wait_s  # how long a new job waits for the replaced one to hand over
        self.waiting: Callable[[str], bool] = lambda session: False

    def begin(self, request: Any, caps: Caps) -> Ticket:
        """A ticket for a new job of ``request``'s session; the session's running job is told to end, and
        this one waits (at most ``wait_s``) until it has, so one session never runs two jobs at once.
        Every job start also sweeps old files (``sweep_files``)."""
        sweep_files()
        ticket = Ticket(session_key(request), caps.budget_s, self)
        with self.lock:
            old = self.current.get(ticket.session)
            self.current[ticket.session] = ticket
        if old is not None:
            old.reason = old.reason or REPLACED
            old.finished.wait(self.wait_s)
        return ticket

    def end(self, ticket: Ticket) -> None:
        with self.lock:
            if self.current.get(ticket.session) is ticket:
                del self.current[ticket.session]
        ticket.finished.set()

    def newer_waiting(self, session: str) -> bool:
        try:
            return self.waiting(session)
        except RuntimeError:  # the queue changed while it was read: ask again at the next event
            return False


JOBS = Jobs()


def queue_probe(demo: Any) -> Callable[[str], bool]:
    """Whether a session has a Run, Race or Teach job waiting in ``demo``'s queue (read-only; Gradio's
    queue keeps waiting events per concurrency id, each with its session hash and function)."""

    def waiting(session: str) -> bool:
        queue = getattr(demo, "_queue", None)
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            for event in list(event_queue.queue):
                job = event.concurrency_id == SAMPLER_QUEUE or getattr(event.fn, "api_name", None) in JOB_APIS
                if job and event.session_hash == session:
                    return True
        return False

    return waiting


def bounded(events: Iterator[E], ticket: Ticket) -> Iterator[E]:
    """``events`` until the ticket says stop (checked first and after each one); the source is then closed."""
    try:
        if ticket.check():  # a newer job of the session already waits: this one does no work
            return
        for event in events:
            yield event
            if ticket.check():
                return
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def session_key(request: Any) -> str:
    """The session hash of a ``gr.Request`` (``"local"`` when called without one, as tests do)."""
    return getattr(request, "session_hash", None) or "local"


def delete_cache() -> tuple[int, int]:
    """``gr.Blocks(delete_cache=(frequency, age))``: every ``frequency`` s, Gradio deletes the files it
    cached (streamed frames, downloads) older than ``age`` s; ``PARATTA_DELETE_CACHE="60,600"`` sets it."""
    text = os.environ.get("PARATTA_DELETE_CACHE", f"{CACHE_FREQUENCY_S},{CACHE_AGE_S}")
    try:
        frequency, age = (int(v) for v in text.split(","))
    except ValueError:
        message = f"PARATTA_DELETE_CACHE must be two whole seconds 'frequency,age'; got {text!r}"
        raise ValueError(message) from None
    return frequency, age


class NoUploads:
    """ASGI middleware: the app has no file inputs, so Gradio's upload route is closed (403) before a
    byte of the body is read. ``launch(max_file_size=0)`` stays as a second guard."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith("/upload"):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": b"this app takes no file uploads"})
            return
        await self.app(scope, receive, send)


# The routes that call an event: the queue's join (by fn_index) and the named API routes (by name).
CALL_PATH = re.compile(r"/(?:queue/join|(?:run|api|call|call/v2)/(?P<api>[^/]+))/?$")


def call_problem(fns: dict[Any, Any], api_name: str | None, body: bytes) -> tuple[int, str] | None:
    """(status, reason) when a call's body names no event of ``fns`` or sends fewer inputs than the event
    takes; None when Gradio can take it as it is (malformed JSON and wrong field types included: its own
    validation answers those with a 422)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    index = payload.get("fn_index")
    if index is not None:
        fn = fns.get(index) if type(index) is int else None
        if fn is None:
            return 422, f"no event with fn_index {short(index)}"
    else:
        fn = next((f for f in fns.values() if api_name is not None and f.api_name == api_name), None)
        if fn is None:
            return 404, f"no API endpoint named {short(api_name)}"
    data = payload.get("data")
    if isinstance(data, list) and len(data) < len(fn.inputs):
        return 422, f"/{fn.api_name or fn.name} takes {len(fn.inputs)} inputs; got {len(data)}"
    return None


class CheckedCalls:
    """ASGI middleware: a POST that calls an event (``CALL_PATH``) is read whole and answered with
    ``call_problem``'s status and reason when it has one; otherwise it goes on to Gradio unchanged.

    Gradio 6.31 answers an unknown fn_index with HTTP 500 and a KeyError traceback in the log, an
    unknown name on /call/v2 the same way, and too few inputs with a ValueError traceback (the client
    gets "Error")."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        post = scope["type"] == "http" and scope.get("method") == "POST"
        match = CALL_PATH.search(scope.get("path", "")) if post else None
        blocks = getattr(scope.get("app"), "get_blocks", None)
        if match is None or blocks is None:
            await self.app(scope, receive, send)
            return
        body = await _whole_body(receive)
        if body is None:  # the client went away
            return
        problem = call_problem(blocks().fns, match.group("api"), body)
        if problem is not None:
            status, reason = problem
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps({"detail": reason}).encode()})
            return
        await self.app(scope, _replay(body, receive), send)


async def _whole_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that first gives ``body`` back whole, then waits on the real one (disconnects)."""
    sent = [False]

    async def again() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


PROBE_PATH = "/paratta/probe"
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def server_probe(demo: Any) -> dict[str, int]:
    """What the server holds for its visitors right now (read-only): sessions with state (Gradio keeps at
    most ``STATE_SESSIONS``) and the state values in them, the queue (waiting, running, sessions with a
    message stream, events known), and the sessions with a running job here (``JOBS``)."""
    holder = getattr(demo, "state_holder", None)
    sessions = list(getattr(holder, "session_data", {}).values())
    queue = getattr(demo, "_queue", None)
    event_queues = list(getattr(queue, "event_queue_per_concurrency_id", {}).values())
    return {
        "sessions": len(sessions),
        "session_capacity": int(getattr(holder, "capacity", 0)),
        "state_values": sum(len(s.state_data) for s in sessions),
        "queue_waiting": sum(len(q.queue) for q in event_queues),
        "queue_running": sum(job is not None for job in list(getattr(queue, "active_jobs", []))),
        "queue_sessions": len(getattr(queue, "pending_messages_per_session", {})),
        "queue_events": len(getattr(queue, "event_ids_to_events", {})),
        "jobs": len(JOBS.current),
    }


class Probe:
    """ASGI middleware: ``GET /paratta/probe`` from a loopback client answers ``server_probe`` as JSON;
    everything else passes through. Installed only with ``PARATTA_PROBE=1`` (``launch_limits``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = (scope.get("client") or ("",))[0]
        blocks = getattr(scope.get("app"), "get_blocks", None)  # Starlette puts the app in the scope
        wanted = scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith(PROBE_PATH)
        if wanted and client in LOOPBACK and blocks is not None:
            counts = await _counted(blocks)
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(counts).encode()})
            return
        await self.app(scope, receive, send)


async def _counted(get_blocks: Callable[[], Any]) -> dict[str, int]:
    """``server_probe`` on the event loop's thread (where the queue changes), retried if a dict changed
    size while it was read (another thread: the session state)."""
    for _ in range(5):
        try:
            return server_probe(get_blocks())
        except RuntimeError:
            continue
    return server_probe(get_blocks())


def state_sessions() -> int:
    """How many sessions' ``gr.State`` Gradio keeps: ``STATE_SESSIONS``, or ``PARATTA_STATE_SESSIONS``
    (a whole number ≥ 1; the soak benchmark lowers it to reach the plateau within a short run)."""
    text = os.environ.get("PARATTA_STATE_SESSIONS", str(STATE_SESSIONS))
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"PARATTA_STATE_SESSIONS must be a whole number ≥ 1; got {short(text)}")
    return int(text)


def launch_limits() -> dict[str, Any]:
    """``demo.launch`` keywords that bound what a visitor can leave on the server (and, with
    ``PARATTA_PROBE=1``, the loopback probe of what it holds)."""
    from starlette.middleware import Middleware

    middleware = [Middleware(NoUploads), Middleware(CheckedCalls)]
    if os.environ.get("PARATTA_PROBE") == "1":
        middleware.append(Middleware(Probe))
    return {
        "max_file_size": 0,
        "app_kwargs": {"middleware": middleware},
        "state_session_capacity": state_sessions(),
    }


def session_folder(session: str) -> Path:
    """This session's folder for downloads (one set per session, overwritten by its next run)."""
    safe = session if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session) else hashlib.sha256(session.encode())
    safe = safe if isinstance(safe, str) else safe.hexdigest()  # never a path made of what a client sent
    folder = Path(tempfile.gettempdir()) / "paratta-sessions" / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_last_sweep = [0.0]


def sweep_files(now: float | None = None) -> None:
    """At most once per ``delete_cache`` frequency: remove the cached files older than its age.

    Gradio 6.31's own ``delete_cache`` misses the images a streaming event yields (they are cached
    through a per-session copy of the component, whose file set the sweep never sees: 85 of 85
    files stayed in a check here), so the app sweeps its cache folder itself. ``app.py`` gives the
    app a cache folder of its own, so no other app's files are touched.
    """
    now = time.time() if now is None else now
    frequency, age = delete_cache()
    if now - _last_sweep[0] < frequency:
        return
    _last_sweep[0] = now
    remove_older(Path(get_upload_folder()), age, now)
    prune(Path(tempfile.gettempdir()) / "paratta-sessions", age)


def remove_older(root: Path, age_s: float, now: float) -> None:
    """Files under ``root`` whose ctime is more than ``age_s`` old (Gradio's own ageing), and the folders
    that leaves empty."""
    for path in sorted(root.rglob("*"), reverse=True) if root.is_dir() else ():
        try:
            if path.is_file() and now - path.stat().st_ctime > age_s:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except (FileNotFoundError, OSError):  # removed meanwhile, or not empty after all
            continue


def prune(root: Path, age_s: float) -> None:
    """Remove session folders untouched for ``age_s`` (API clients may never send the unload event)."""
    now = time.time()
    for folder in root.glob("*") if root.is_dir() else ():
        try:
            if now - folder.stat().st_mtime > age_s:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            continue


def forget_session(request: gr.Request) -> None:
    """``demo.unload``: end the session's job and remove its folder."""
    session = session_key(request)
    with JOBS.lock:
        ticket = JOBS.current.get(session)
    if ticket is not None:
        ticket.reason = ticket.reason or "the page was closed"
    shutil.rmtree(session_folder(session), ignore_errors=True)
