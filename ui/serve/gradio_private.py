"""The app's only reads and writes of Gradio's private objects, for what Gradio's public API does not
give. ``requirements.txt`` pins ``gradio==`` because of this module, and ``check`` lists every private
name used here that the installed Gradio lacks (``tests/test_limits.py`` fails naming the version).

- ``newer_job_waiting``: whether a session has a job waiting in the queue (``Blocks._queue``: waiting
  events per concurrency id, each with its session hash and function).
- ``cancelled``: the session and event of a ``/cancel`` request (the route Stop and a client's
  ``job.cancel()`` post to, and its body, ``CancelBody``), read before Gradio cancels the event.
- ``events_of``: the events a call may name (by ``fn_index`` or API name) and their inputs
  (``Blocks.fns``), for the checks of malformed calls; ``blocks_of_app``: the Blocks an ASGI app serves.
- ``visitors_first``: the sessions Gradio keeps ``gr.State`` for (``App.state_holder``, an LRU of at
  most ``state_session_capacity``) evict sessions that never loaded the page before visitors'
  (``ui.serve.keep``): the app's holder is replaced, before it holds a session, by one that does.
- ``held``: counts of what the server holds (sessions, state values, queue), for the probe.
- ``cache_folder``: where Gradio caches the files it serves (``gradio.utils.get_upload_folder``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.data_classes import CancelBody
from gradio.queueing import Event, EventQueue
from gradio.routes import App
from gradio.state_holder import StateHolder
from gradio.utils import get_upload_folder

from .keep import VISITORS, victim

CANCEL_ROUTE = "cancel_event"  # the name of Gradio's POST /gradio_api/cancel


def blocks_of(request: Any) -> Any:
    """The ``gr.Blocks`` serving a ``gr.Request`` (None without one, as when a test calls a handler)."""
    return blocks_of_app(getattr(getattr(request, "request", None), "app", None))


def blocks_of_app(app: Any) -> Any:
    """The ``gr.Blocks`` an ASGI app serves (Starlette puts the app in a request's scope); None for
    another app."""
    get_blocks = getattr(app, "get_blocks", None)
    return get_blocks() if get_blocks is not None else None


def is_job(fn: Any, concurrency_id: str, api_names: Collection[str]) -> bool:
    """An event function (``BlockFunction``) of the concurrency id or of one of the API names."""
    return fn.concurrency_id == concurrency_id or getattr(fn, "api_name", None) in api_names


def newer_job_waiting(request: Any, concurrency_id: str, api_names: Collection[str]) -> Callable[[str], bool]:
    """A check of whether ``session`` has an event of ``concurrency_id`` or of one of ``api_names``
    waiting in the queue of the app that serves ``request`` (never, without one)."""
    queue = getattr(blocks_of(request), "_queue", None)

    def waiting(session: str) -> bool:
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            for event in list(event_queue.queue):
                if event.session_hash == session and is_job(event.fn, concurrency_id, api_names):
                    return True
        return False

    return waiting


def cancelled(app: Any, path: str, body: bytes) -> tuple[str, Any] | None:
    """(session hash, the event's function) of a POST to ``path`` that cancels an event of ``app``;
    None for any other request (or a body Gradio will refuse itself)."""
    blocks = blocks_of_app(app)
    if blocks is None or not path.rstrip("/").endswith(app.url_path_for(CANCEL_ROUTE)):
        return None
    try:
        payload = json.loads(body)
        session, index = payload["session_hash"], payload["fn_index"]
    except (ValueError, KeyError, TypeError):
        return None
    fn = blocks.fns.get(index) if isinstance(session, str) and type(index) is int else None
    return (session, fn) if fn is not None else None


@dataclass(frozen=True)
class EventInfo:
    """What a call may know of an event: its API name (None: none), its function's name, its inputs."""

    api_name: str | None
    name: str
    inputs: tuple[Any, ...]  # the input components; only their number is read


def events_of(app: Any) -> dict[int, EventInfo]:
    """The events of ``app`` by fn_index (``Blocks.fns``)."""
    fns = blocks_of_app(app).fns
    return {k: EventInfo(fn.api_name, fn.name, tuple(fn.inputs)) for k, fn in fns.items()}


class VisitorsFirst(StateHolder):
    """Gradio's session-state holder, evicting (at its capacity) the least recently used session that
    did not load the page, and a visitor's only when no such session is left; never the session being
    served. An evicted session leaves ``VISITORS`` too."""

    def update(self, session_id: str) -> None:
        with self.lock:
            if session_id in self.session_data:
                self.session_data.move_to_end(session_id)
            while len(self.session_data) > self.capacity:
                name = victim(list(self.session_data), VISITORS, keep=session_id)
                if name is None:
                    break
                del self.session_data[name]
                self.time_last_used.pop(name, None)
                VISITORS.discard(name)


def visitors_first(app: Any) -> None:
    """Give ``app`` a state holder with the visitors-first eviction, in place of the one Gradio made at
    launch (once; called before the app serves its first call, so the old one holds no session, and
    whatever it holds is carried over)."""
    holder = getattr(app, "state_holder", None)
    if type(holder) is not StateHolder:
        return
    new = VisitorsFirst()
    with holder.lock:
        new.__dict__.update(holder.__dict__)  # capacity, sessions, their times, the lock, the Blocks
        app.state_holder = new
        blocks = getattr(holder, "blocks", None)
        if getattr(blocks, "state_holder", None) is holder:
            blocks.state_holder = new


def held(blocks: Any) -> dict[str, int]:
    """What the server holds for its visitors right now (read-only): sessions with state and their
    capacity, the state values in them, the queue (waiting, running, sessions with a message stream,
    events known)."""
    holder = getattr(blocks, "state_holder", None)
    sessions = list(getattr(holder, "session_data", {}).values())
    queue = getattr(blocks, "_queue", None)
    event_queues = list(getattr(queue, "event_queue_per_concurrency_id", {}).values())
    return {
        "sessions": len(sessions),
        "session_capacity": int(getattr(holder, "capacity", 0)),
        "state_values": sum(len(s.state_data) for s in sessions),
        "queue_waiting": sum(len(q.queue) for q in event_queues),
        "queue_running": sum(job is not None for job in list(getattr(queue, "active_jobs", []))),
        "queue_sessions": len(getattr(queue, "pending_messages_per_session", {})),
        "queue_events": len(getattr(queue, "event_ids_to_events", {})),
    }


def cache_folder() -> str:
    """The folder Gradio caches the files it serves in (``GRADIO_TEMP_DIR``, else its default)."""
    return get_upload_folder()


def check() -> list[str]:
    """Every private name this module reads or writes that the installed Gradio lacks, one line each
    (empty: this Gradio has them all). Builds a one-button app offline; starts no server."""
    with gr.Blocks() as blocks:
        gr.Button().click(lambda: None, api_name="probe", concurrency_id="probe")
    blocks.queue()
    app = App.create_app(blocks)
    fn = blocks.fns[0]
    event = Event("session", fn, None, None)  # type: ignore[arg-type]
    queue = blocks._queue
    holder = app.state_holder
    expected: list[tuple[str, Callable[[], bool]]] = [
        ("App.get_blocks", lambda: blocks_of_app(app) is blocks),
        ("App.state_holder, a StateHolder", lambda: type(holder) is StateHolder),
        ("StateHolder.{capacity, session_data, time_last_used, lock, update}", lambda: all(
            hasattr(holder, a) for a in ("capacity", "session_data", "time_last_used", "lock", "update"))),
        ("Blocks.state_session_capacity", lambda: isinstance(blocks.state_session_capacity, int)),
        ("Blocks._queue.{event_queue_per_concurrency_id, active_jobs, pending_messages_per_session, "
         "event_ids_to_events}", lambda: all(hasattr(queue, a) for a in (
            "event_queue_per_concurrency_id", "active_jobs", "pending_messages_per_session",
            "event_ids_to_events"))),
        ("EventQueue.queue", lambda: EventQueue("probe", 1).queue == []),
        ("Event.{session_hash, fn, concurrency_id}", lambda: (event.session_hash, event.fn) == ("session", fn)
            and is_job(event.fn, "probe", ())),
        ("Blocks.fns: BlockFunction.{api_name, name, inputs, concurrency_id}",
            lambda: events_of(app) == {0: EventInfo("probe", "<lambda>", ())}),
        ("POST /cancel (route cancel_event) with CancelBody {session_hash, fn_index, event_id}", lambda:
            set(CancelBody.model_fields) == {"session_hash", "fn_index", "event_id"}
            and cancelled(app, app.url_path_for(CANCEL_ROUTE), b'{"session_hash": "s", "fn_index": 0}')
            == ("s", fn)),
        ("gradio.utils.get_upload_folder", lambda: isinstance(cache_folder(), str)),
    ]  # fmt: skip
    missing = []
    for name, present in expected:
        try:
            ok = present()
        except Exception as err:  # an attribute gone, a signature changed: named, not raised
            ok, name = False, f"{name} ({type(err).__name__}: {err})"
        if not ok:
            missing.append(name)
    return missing
