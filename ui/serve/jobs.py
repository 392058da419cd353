"""One job per session, and a budget per job: the tickets Run, Race and Teach run under.

- **Budget** (checked between streamed events, and before every network call): a job older than
  ``Caps.budget_s`` ends as if stopped.
- **One job per session**: a session's new job (Run, Race or Teach) replaces the one still running,
  which ends at its next network call as if stopped; a job that starts while a newer one from its
  session is already waiting in the queue ends at once, so only the newest of a burst runs.
- **Stop**: the session's running job is told at once (``stop_session``, from the ``/cancel``
  request that Stop and a client's ``job.cancel()`` send, ``guards.Stops``) and ends at its next
  network call (``Ticket.interrupted``, the plan's interrupt), instead of after its whole batch.

``JOBS`` is the process's one registry of running jobs (the queue it serves is the process's); what a
ticket needs of the app that serves it (its queue) comes with the request that started it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gradio as gr

from paratta.evaluate import Interrupted

from .cache import SWEEP, forget_folder
from .gradio_private import is_job, newer_job_waiting
from .limits import Caps

E = TypeVar("E")

REPLACED = "replaced by a newer job from the same session"
STOPPED = "stopped by the user"
JOB_APIS = frozenset({"run", "race", "teach"})
# Run (and the warm-start chain's runs) and Race share one Gradio concurrency id: together they get the
# queue's concurrency limit (1 on a Space), not one each.
SAMPLER_QUEUE = "sampler"


@dataclass
class Ticket:
    """One job's right to run: ``check()`` names why it must end (budget spent, replaced), else None.
    ``reason`` is written once (by whoever ends the job first) and read by the job's own thread."""

    session: str
    budget_s: float
    waiting: Callable[[str], bool] = lambda session: False  # a newer job of the session is queued
    jobs: Jobs | None = None  # the registry it was issued by
    started: float = field(default_factory=time.monotonic)
    reason: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def check(self) -> str | None:
        if self.reason is None and time.monotonic() - self.started > self.budget_s:
            self.end_with(f"reached this app's time budget of {self.budget_s:g} s per run")
        if self.reason is None and self.newer_waiting():
            self.end_with(REPLACED)
        return self.reason

    def interrupted(self) -> bool:
        """Must the job end now? Its reason is set (Stop, a newer job) or its budget is spent; asked
        before every network call (the plan's interrupt), so it reads no queue."""
        if self.reason is None and time.monotonic() - self.started > self.budget_s:
            self.end_with(f"reached this app's time budget of {self.budget_s:g} s per run")
        return self.reason is not None

    def end_with(self, reason: str) -> None:
        """Ask the job to end at its next event or network call (the first reason given stays)."""
        with _REASONS:
            self.reason = self.reason or reason

    def end(self) -> None:
        """The job has ended: its session may start the next one."""
        if self.jobs is not None:
            self.jobs.end(self)
        self.finished.set()

    def newer_waiting(self) -> bool:
        try:
            return self.waiting(self.session)
        except RuntimeError:  # the queue changed while it was read: ask again at the next event
            return False


_REASONS = threading.Lock()


class Jobs:
    """The running job of each session (at most one)."""

    def __init__(self, wait_s: float = 30.0) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, Ticket] = {}
        self.wait_s = wait_s  # how long a new job waits for the replaced one to hand over

    def begin(self, request: Any, caps: Caps) -> Ticket:
        """A ticket for a new job of ``request``'s session; the session's running job is told to end, and
        this one waits (at most ``wait_s``) until it has, so one session never runs two jobs at once.
        Every job start also sweeps old files (``cache.SWEEP``)."""
        SWEEP()
        waiting = newer_job_waiting(request, SAMPLER_QUEUE, JOB_APIS)
        ticket = Ticket(session_key(request), caps.budget_s, waiting, self)
        with self.lock:
            old = self.current.get(ticket.session)
            self.current[ticket.session] = ticket
        if old is not None:
            old.end_with(REPLACED)
            old.finished.wait(self.wait_s)
        return ticket

    def end(self, ticket: Ticket) -> None:
        with self.lock:
            if self.current.get(ticket.session) is ticket:
                del self.current[ticket.session]
        ticket.finished.set()

    def ask_to_end(self, session: str, reason: str) -> None:
        """The session's running job (if any) ends at its next event."""
        with self.lock:
            ticket = self.current.get(session)
        if ticket is not None:
            ticket.end_with(reason)


JOBS = Jobs()


def bounded(events: Iterator[E], ticket: Ticket) -> Iterator[E]:
    """``events`` until the ticket says stop (checked first and after each one, and inside the source
    before each network call: ``Interrupted``); the source is then closed."""
    try:
        if ticket.check():  # a newer job of the session already waits: this one does no work
            return
        for event in events:
            yield event
            if ticket.check():
                return
    except Interrupted:
        return
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def session_key(request: Any) -> str:
    """The session hash of a ``gr.Request`` (``"local"`` when called without one, as tests do)."""
    return getattr(request, "session_hash", None) or "local"


def is_job_event(fn: Any) -> bool:
    """An event function of Run, Race or Teach (those with a ticket)."""
    return is_job(fn, SAMPLER_QUEUE, JOB_APIS)


def stop_session(session: str) -> None:
    """Stop was pressed (or a client cancelled its job): the session's running job ends at its next
    network call."""
    JOBS.ask_to_end(session, STOPPED)


def forget_session(request: gr.Request) -> None:
    """``demo.unload``: end the session's job and remove its download folder."""
    session = session_key(request)
    JOBS.ask_to_end(session, "the page was closed")
    forget_folder(session)
