"""The app's only reads and writes of Gradio's private objects (its queue and its session state), for
what Gradio's public API does not give. ``requirements.txt`` pins ``gradio==`` because of this module:
a new Gradio is checked here first (``tests/test_limits.py`` drives each function).

- ``newer_job_waiting``: whether a session has a Run, Race or Teach waiting in the queue (``_queue``:
  waiting events per concurrency id, each with its session hash and function).
- ``visitors_first``: the sessions Gradio keeps ``gr.State`` for (``state_holder``, an LRU of at most
  ``state_session_capacity``) evict sessions that never loaded the page before visitors' (``ui.keep``).
- ``held``: counts of what the server holds (sessions, state values, queue), for the probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradio.state_holder import StateHolder

from .keep import VISITORS, victim


def blocks_of(request: Any) -> Any:
    """The ``gr.Blocks`` serving a ``gr.Request`` (None without one, as when a test calls a handler)."""
    app = getattr(getattr(request, "request", None), "app", None)
    get_blocks = getattr(app, "get_blocks", None)
    return get_blocks() if get_blocks is not None else None


def newer_job_waiting(request: Any, is_job: Callable[[Any], bool]) -> Callable[[str], bool]:
    """A check of whether ``session`` has an event ``is_job(event)`` waiting in the queue of the app that
    serves ``request`` (never, without one)."""
    queue = getattr(blocks_of(request), "_queue", None)

    def waiting(session: str) -> bool:
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            for event in list(event_queue.queue):
                if event.session_hash == session and is_job(event):
                    return True
        return False

    return waiting


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
    """Give ``app``'s state holder the visitors-first eviction (once; Gradio made it at launch)."""
    holder = getattr(app, "state_holder", None)
    if type(holder) is StateHolder:
        holder.__class__ = VisitorsFirst


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
