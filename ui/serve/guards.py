"""The server's guards: what a visitor can send and what they can leave on the server.

- **Uploads** (``NoUploads``): the app has no file inputs, so the upload route is closed.
- **Calls** (``CheckedCalls``): a call of an event that does not exist, or with fewer inputs than it
  takes, is answered 422/404 with the reason before Gradio sees it; every call also makes sure the
  app's session state evicts made-up sessions before visitors' (``gradio_private.visitors_first``).
- **Stop** (``Stops``): a request that cancels a Run, Race or Teach (the Stop button's, a client's
  ``job.cancel()``) tells the session's job at once (``jobs.stop_session``), before Gradio waits for
  the job's current update to end: the job ends at its next network call.
- **Session state**: Gradio keeps ``gr.State`` for at most ``state_sessions()`` sessions.
- **Probe** (``PARATTA_PROBE=1`` only, loopback clients only): ``GET /paratta/probe`` answers the counts of
  what the server holds for its visitors (``server_probe``), for the soak benchmark; read-only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from .gradio_private import blocks_of_app, cancelled, events_of, held, visitors_first
from .jobs import JOBS, is_job_event, stop_session
from .keep import STORE

STATE_SESSIONS = 200  # sessions whose gr.State Gradio keeps (the oldest go first); PARATTA_STATE_SESSIONS
# The routes that call an event: the queue's join (by fn_index) and the named API routes (by name).
CALL_PATH = re.compile(r"/(?:queue/join|(?:run|api|call|call/v2)/(?P<api>[^/]+))/?$")
PROBE_PATH = "/paratta/probe"
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages that quote what a visitor sent."""
    text = repr(value) if not isinstance(value, (str, bytes)) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[:limit] + "…"


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


def call_problem(fns: dict[Any, Any], api_name: str | None, body: bytes) -> tuple[int, str] | None:
    """(status, reason) when a call's body names no event of ``fns`` (by index: each with its
    ``api_name``, ``name`` and ``inputs``, ``gradio_private.events_of``) or sends fewer inputs than the
    event takes; None when Gradio can take it as it is (malformed JSON and wrong field types included:
    its own validation answers those with a 422)."""
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
        if match is None or blocks_of_app(scope.get("app")) is None:
            await self.app(scope, receive, send)
            return
        visitors_first(scope["app"])
        body = await _whole_body(receive)
        if body is None:  # the client went away
            return
        problem = call_problem(events_of(scope["app"]), match.group("api"), body)
        if problem is not None:
            status, reason = problem
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps({"detail": reason}).encode()})
            return
        await self.app(scope, _replay(body, receive), send)


class Stops:
    """ASGI middleware: a POST that cancels a job's event (``gradio_private.cancelled``) first tells the
    session's job to end (``jobs.stop_session``), then goes on to Gradio unchanged, which cancels the
    event once the job's current update has returned: at its next network call, not its batch's end."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        post = scope["type"] == "http" and scope.get("method") == "POST"
        if not post or not scope.get("path", "").rstrip("/").endswith("/cancel"):
            await self.app(scope, receive, send)
            return
        body = await _whole_body(receive)
        if body is None:
            return
        found = cancelled(scope.get("app"), scope.get("path", ""), body)
        if found is not None and is_job_event(found[1]):
            stop_session(found[0])
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


def server_probe(demo: Any) -> dict[str, int]:
    """What the server holds for its visitors right now (read-only): Gradio's session state and queue
    (``gradio_private.held``), the sessions with a running job here (``JOBS``), and the bytes the
    sessions' runs keep (``keep.STORE``)."""
    return {**held(demo), "jobs": len(JOBS.current), **STORE.counts()}


class Probe:
    """ASGI middleware: ``GET /paratta/probe`` from a loopback client answers ``server_probe`` as JSON;
    everything else passes through. Installed only with ``PARATTA_PROBE=1`` (``launch_limits``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = (scope.get("client") or ("",))[0]
        app = scope.get("app")  # Starlette puts the app in the scope
        wanted = scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith(PROBE_PATH)
        if wanted and client in LOOPBACK and blocks_of_app(app) is not None:
            counts = await _counted(lambda: blocks_of_app(app))
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

    middleware = [Middleware(NoUploads), Middleware(CheckedCalls), Middleware(Stops)]
    if os.environ.get("PARATTA_PROBE") == "1":
        middleware.append(Middleware(Probe))
    return {
        "max_file_size": 0,
        "app_kwargs": {"middleware": middleware},
        "state_session_capacity": state_sessions(),
    }
