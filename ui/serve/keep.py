"""What visitors' sessions keep between events, bounded in bytes, and who counts as a visitor.

- **Budget**: the run records, stored trajectories and Teach lessons of all sessions together stay
  within ``state_bytes()`` (``PARATTA_STATE_BYTES``, else ``STATE_SHARE`` of the machine's memory). Each
  holder (a ``RunRecord``, a ``KeptArray``, a ``Kept`` lesson) tells the store its size whenever it
  grows; when the total is over the budget, whole sessions go, least recently used first, never the
  one that just grew.
- **Visitors first**: a session that loaded the page (the page's load event calls ``VISITORS.add``) is
  evicted only when no other session is left to evict, so a flood of made-up session hashes, which
  never load the page, pushes out only each other. ``ui.serve.gradio_private`` applies the same rule
  to the sessions Gradio keeps ``gr.State`` for.
- **Expiry, said**: what an evicted session kept is dropped; the next time the visitor uses it they
  get ``Expired``, a ``gr.Error`` that says so ("your last run expired; run again"), never a traceback.

Holders are held weakly: what Gradio drops (a session's state after its time to live) leaves the
store's count by itself.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Protocol

import gradio as gr
import numpy as np

STATE_SHARE = 0.02  # of the machine's physical memory, when PARATTA_STATE_BYTES is not set
EXPIRED = "your last run expired; run again (the server keeps a bounded amount for each visitor)"


class Expired(gr.Error):
    """What a session kept was evicted; the visitor is told, in the app's own words."""

    def __init__(self) -> None:
        super().__init__(EXPIRED, print_exception=False)


class Holder(Protocol):
    def nbytes(self) -> int: ...

    def expire(self) -> None: ...


def state_bytes() -> int:
    """The byte budget: ``PARATTA_STATE_BYTES`` (a whole number of bytes ≥ 1), else ``STATE_SHARE`` of
    physical memory."""
    text = os.environ.get("PARATTA_STATE_BYTES")
    if text is None:
        return int(STATE_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"PARATTA_STATE_BYTES must be a whole number of bytes ≥ 1; got {text[:40]!r}")
    return int(text)


class Visitors:
    """Sessions that loaded the page, in the order they were last seen (at most ``limit``)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.lock = threading.Lock()
        self.limit = limit
        self.seen: OrderedDict[str, None] = OrderedDict()

    def add(self, session: str) -> None:
        with self.lock:
            self.seen[session] = None
            self.seen.move_to_end(session)
            while len(self.seen) > self.limit:
                self.seen.popitem(last=False)

    def discard(self, session: str) -> None:
        with self.lock:
            self.seen.pop(session, None)

    def __contains__(self, session: object) -> bool:
        return session in self.seen


def victim(order: list[str], visitors: Visitors, keep: str) -> str | None:
    """Which session goes first, from ``order`` (least recently used first): the oldest that did not load
    the page, else the oldest visitor; never ``keep``."""
    others = [s for s in order if s != keep]
    return next((s for s in others if s not in visitors), others[0] if others else None)


class Store:
    """Bytes held per session, by weakly held holders; evicts whole sessions to stay within ``budget``."""

    def __init__(self, budget: int, visitors: Visitors) -> None:
        self.lock = threading.RLock()  # a holder's weakref callback may run inside a locked section
        self.budget = budget
        self.visitors = visitors
        self.sessions: OrderedDict[str, dict[int, tuple[weakref.ref, int]]] = OrderedDict()
        self.total = 0
        self.evicted = 0  # sessions evicted so far (the probe reports it)

    def hold(self, session: str, holder: Holder) -> None:
        """``holder`` (of ``session``) now has ``holder.nbytes()``; evict others while over budget."""
        size = holder.nbytes()
        key = id(holder)
        with self.lock:
            held = self.sessions.setdefault(session, {})
            self.sessions.move_to_end(session)
            if key in held:
                self.total -= held[key][1]
            ref = held[key][0] if key in held else weakref.ref(holder, lambda _: self._gone(session, key))
            held[key] = (ref, size)
            self.total += size
            while self.total > self.budget:
                name = victim(list(self.sessions), self.visitors, keep=session)
                if name is None:
                    break
                self._evict(name)

    def _evict(self, session: str) -> None:
        held = self.sessions.pop(session, {})
        self.total -= sum(size for _, size in held.values())
        self.evicted += 1
        for ref, _ in held.values():
            holder = ref()
            if holder is not None:
                holder.expire()

    def _gone(self, session: str, key: int) -> None:
        with self.lock:
            held = self.sessions.get(session)
            if held is not None and key in held:
                self.total -= held.pop(key)[1]
                if not held:
                    del self.sessions[session]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"kept_bytes": self.total, "kept_sessions": len(self.sessions), "evicted": self.evicted}


VISITORS = Visitors()
STORE = Store(state_bytes(), VISITORS)


class KeptArray:
    """An array a session keeps (the trajectory stored by "use as initialisation"), counted in ``STORE``."""

    def __init__(self, session: str, array: np.ndarray) -> None:
        self.array: np.ndarray | None = array
        STORE.hold(session, self)

    def nbytes(self) -> int:
        return 0 if self.array is None else int(self.array.nbytes)

    def expire(self) -> None:
        self.array = None

    def get(self) -> np.ndarray:
        if self.array is None:
            raise Expired()
        return self.array


class Kept:
    """A value a session keeps whole in a ``gr.State`` (a Teach lesson), counted in ``STORE`` at
    ``nbytes``: the bytes of the numpy arrays in it (``array_bytes``). Its attributes are the value's;
    once evicted, ``get`` and every attribute raise ``Expired``."""

    def __init__(self, session: str, value: Any) -> None:
        self.value: Any = value
        self.size = array_bytes(value)
        STORE.hold(session, self)

    def nbytes(self) -> int:
        return 0 if self.value is None else self.size

    def expire(self) -> None:
        self.value = None

    def get(self) -> Any:
        if self.value is None:
            raise Expired()
        return self.value

    def __getattr__(self, name: str) -> Any:  # only for names Kept itself lacks: the value's
        if name.startswith("_") or name in ("value", "size"):
            raise AttributeError(name)
        return getattr(self.get(), name)


def array_bytes(value: Any) -> int:
    """The bytes of every numpy array in ``value``: in it, its dataclass fields, dicts, lists, tuples."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(array_bytes(v) for v in value)
    fields = getattr(value, "__dataclass_fields__", None)
    return sum(array_bytes(getattr(value, f)) for f in fields) if fields else 0


def visitor(request: gr.Request) -> None:
    """The page's load event: the session that loaded it is a visitor's."""
    session = getattr(request, "session_hash", None)
    if session:
        VISITORS.add(session)
