"""One ParaTAA run across several processes: torch.distributed, launched by ``torchrun``.

Per parallel iteration the window's W unknowns are W independent network evaluations. Each rank
evaluates a balanced contiguous share of those rows (``shares``), an ``all_gather`` reassembles
them in order on every rank (``gather_rows``), and every rank then computes the identical solver
update from identical inputs: the state never travels, only the network outputs do (W rows per
iteration, the smallest message this split can have). A row is one timestep, so a guided row
pair (conditional, unconditional) stays on one rank: the model's ``predict`` batches both halves.

Failure. Before the data gather every rank sends a small status record (``exchange_status``): ok
or the error it raised (type and message), plus the window it is evaluating. Any error makes every
rank raise ``RankFailure`` carrying the failing rank's message; a rank whose window differs from
the others' (ranks out of step) does too. The same record ends a command (``finish``), so a rank
that fails outside the solver still meets its peers at their next exchange. A collective that does
not complete within the group's timeout (set explicitly in ``init_from_env``) raises
``CollectiveTimeout`` (gloo), whose message names the ranks that did not answer a roll call in the
rendezvous store (``roll_call``): a rank that was killed; NCCL's watchdog aborts the process after the
same timeout.

Backends: NCCL when the run's device is CUDA (one device per rank, ``cuda:LOCAL_RANK``), gloo on CPU.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

MESSAGE_BYTES = 1000  # an error message longer than this is cut
_HEADER = 4  # int64 fields before the message: flag, window rows n, first timestep, message length
OK, BAD_INPUT, FAILED = 0, 1, 2  # status flags; BAD_INPUT: the rank raised a ValueError


class RankFailure(RuntimeError):
    """A rank raised: every rank raises this, with the failing rank's message."""

    def __init__(self, rank: int, message: str, bad_input: bool = False) -> None:
        super().__init__(f"rank {rank}: {message}")
        self.rank, self.message, self.bad_input = rank, message, bad_input


class CollectiveTimeout(RuntimeError):
    """A collective did not complete: a peer stopped, crashed or is stuck past the timeout."""


@dataclass
class Timers:
    """Seconds this rank spent in its network share and in collectives (waiting for peers included)."""

    network: float = 0.0
    communication: float = 0.0

    def reset(self) -> None:
        self.network, self.communication = 0.0, 0.0


@dataclass(frozen=True)
class Group:
    """This rank's view of the process group that shares each iteration's network evaluations.

    A solve splits its rows over a group only when its plan carries one (``paratta.plan(...,
    group=...)``); ``init_from_env`` makes one from torchrun's environment, ``adopt`` from a process
    group the caller set up itself.
    """

    rank: int
    world: int
    device: torch.device  # where collective buffers live: cuda:LOCAL_RANK under NCCL, else cpu
    timeout_s: float | None
    handle: dist.ProcessGroup | None = None  # None: the default (world) group
    timers: Timers = field(default_factory=Timers, compare=False)

    def gather_rows(
        self,
        compute: Callable[[int, int], Tensor],
        n: int,
        row_shape: tuple[int, ...],
        dtype: torch.dtype,
        t0: int,
    ) -> Tensor:
        """``gather_rows`` over this group (``paratta.planning.plan.RowGroup``)."""
        return gather_rows(self, compute, n, row_shape, dtype, t0)

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (a pickled object: a plan's choice, made once)."""
        box = [obj]
        send = lambda: dist.broadcast_object_list(box, src=0, group=self.handle)  # noqa: E731
        _collective(self, send, "the plan broadcast")
        return box[0]


_group: Group | None = None  # the group this process joined from torchrun's environment (init_from_env)
_failures = 0  # failed collectives in this process: each gets its own roll call
ROLL_CALL_S = 3.0  # how long the ranks left wait for each other after a failed collective


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets its environment)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def backend_for(device: torch.device | str | None) -> str:
    """NCCL when the run's device is CUDA (or unspecified with CUDA present), gloo otherwise."""
    if device is None:
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(timeout_s: float = 300.0, device: torch.device | str | None = None) -> Group:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) and make it the one ``evaluate`` splits over.

    ``timeout_s`` bounds every collective. Under NCCL the rank's CUDA device is ``cuda:LOCAL_RANK``
    and becomes the current one, so ``"cuda"`` means that device everywhere in this process.
    """
    global _group
    if not launched():
        raise ValueError("no torchrun environment: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT must be set")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a number of seconds > 0; got {timeout_s!r}")
    backend = backend_for(device)
    comm_device = torch.device("cpu")
    options = {}
    if backend == "nccl":
        comm_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(comm_device)
        options["device_id"] = comm_device
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **options)
    _group = Group(dist.get_rank(), dist.get_world_size(), comm_device, timeout_s)
    return _group


def current() -> Group | None:
    """The group this process joined with ``init_from_env`` (the CLI under torchrun), else None.

    A process group initialised by someone else is never adopted here: a library call inside a
    user's own DDP job solves alone unless that user passes a group (``adopt``).
    """
    return _group


def adopt(handle: dist.ProcessGroup | None = None, timeout_s: float | None = None) -> Group:
    """This rank's ``Group`` over an initialised process group (``handle``; None: the default one),
    for a caller that set torch.distributed up itself and wants a solve split over it."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("group: no torch.distributed process group is initialised")
    nccl = dist.get_backend(handle) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return Group(dist.get_rank(handle), dist.get_world_size(handle), device, timeout_s, handle)


def shutdown() -> None:
    """Leave the process group (idempotent)."""
    global _group
    _group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shares(n: int, world: int) -> list[tuple[int, int]]:
    """Balanced contiguous row ranges [start, stop) of n rows over ``world`` ranks, in rank order.

    The first n mod world ranks take one row more, so shares differ by at most one row.
    """
    base, extra = divmod(n, world)
    bounds = [0]
    for r in range(world):
        bounds.append(bounds[-1] + base + (r < extra))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _status_record(error: BaseException | None, n: int, t0: int) -> Tensor:
    """flag, n, t0, message length (int64), then the UTF-8 message, packed into one uint8 tensor."""
    message = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES]
    flag = OK if error is None else BAD_INPUT if isinstance(error, ValueError) else FAILED
    header = torch.tensor([flag, n, t0, len(message)], dtype=torch.int64).view(torch.uint8)
    body = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8)
    body[: len(message)] = torch.frombuffer(bytearray(message), dtype=torch.uint8) if message else body[:0]
    return torch.cat([header, body])


def _collective(group: Group, call: Callable[[], object], what: str) -> None:
    """Run one collective, counting its time; a failed or timed-out one becomes ``CollectiveTimeout``."""
    t0 = time.perf_counter()
    try:
        call()
        if group.device.type == "cuda":
            torch.cuda.synchronize(group.device)  # NCCL is asynchronous: count the transfer itself
    except RuntimeError as err:  # gloo's timeouts and closed connections (DistError is one)
        limit = f"{group.timeout_s:g} s" if group.timeout_s else "the group's"
        raise CollectiveTimeout(
            f"rank {group.rank}: {what} did not complete within {limit} timeout "
            f"(a peer stopped, crashed or is stuck){_lost_text(roll_call(group))}: {err}"
        ) from err
    finally:
        group.timers.communication += time.perf_counter() - t0


def roll_call(group: Group, grace_s: float = ROLL_CALL_S) -> list[int] | None:
    """After a failed collective: the ranks that do not answer within ``grace_s`` (lost or stuck).

    Each rank that gets here writes its name under this failure's key in the group's rendezvous store
    and waits for the others'; the ranks missing at the deadline are returned. None when the store
    itself cannot be reached (its host is gone), so nothing can be said.
    """
    global _failures
    _failures += 1
    prefix = f"paratta/roll-call/{_failures}"
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"{prefix}/{group.rank}", "here")
        missing = set(range(group.world)) - {group.rank}
        deadline = time.monotonic() + grace_s
        while missing and time.monotonic() < deadline:
            missing = {r for r in missing if not store.check([f"{prefix}/{r}"])}
            time.sleep(0.05)
    except (RuntimeError, ValueError, AttributeError):
        return None
    return sorted(missing)


def _lost_text(lost: list[int] | None) -> str:
    if not lost:
        return ""
    names = ", ".join(f"rank {r}" for r in lost)
    return f"; lost: {names} (no answer to the roll call within {ROLL_CALL_S:g} s)"


def exchange_status(group: Group, error: BaseException | None, n: int = -1, t0: int = -1) -> None:
    """Tell every rank whether this one failed, and check that all evaluate the same window (n, t0).

    Raises ``RankFailure`` on every rank when any rank failed (the lowest failing rank's message) or
    when the ranks' windows differ; returns normally only when all ranks are ok and in step.
    """
    record = _status_record(error, n, t0).to(group.device)
    records = [torch.empty_like(record) for _ in range(group.world)]
    _collective(group, lambda: dist.all_gather(records, record, group=group.handle), "the status exchange")
    windows = set()
    for rank, rec in enumerate(records):
        rec = rec.cpu()
        flag, rn, rt0, length = rec[: 8 * _HEADER].view(torch.int64).tolist()
        if flag != OK:
            message = bytes(rec[8 * _HEADER : 8 * _HEADER + length].tolist()).decode(errors="replace")
            raise RankFailure(rank, message, bad_input=flag == BAD_INPUT) from error
        windows.add((rn, rt0))
    if len(windows) > 1:
        raise RankFailure(group.rank, f"ranks out of step: windows (rows, first timestep) {sorted(windows)}")


def gather_rows(
    group: Group,
    compute: Callable[[int, int], Tensor],
    n: int,
    row_shape: tuple[int, ...],
    dtype: torch.dtype,
    t0: int = -1,
) -> Tensor:
    """All n rows on every rank, in order: this rank computes ``compute(start, stop)`` for its share.

    Shares are padded to the largest one for ``all_gather`` and trimmed after. ``row_shape`` and
    ``dtype`` describe one row (a rank with no rows still sends its padding). ``t0`` (the window's
    first timestep) is checked to agree across ranks. Returns a tensor on ``group.device``.
    """
    spans = shares(n, group.world)
    start, stop = spans[group.rank]
    local, error = None, None
    started = time.perf_counter()
    try:
        if stop > start:
            local = compute(start, stop)
            if group.device.type == "cuda":
                torch.cuda.synchronize()
    except Exception as err:  # any failure is reported to every rank, not left to hang them
        error = err
    group.timers.network += time.perf_counter() - started
    exchange_status(group, error, n, t0)
    width = max(b - a for a, b in spans)
    send = torch.zeros((width, *row_shape), dtype=dtype, device=group.device)
    if local is not None:
        send[: stop - start] = local.to(group.device, dtype)
    parts = [torch.empty_like(send) for _ in range(group.world)]
    _collective(group, lambda: dist.all_gather(parts, send, group=group.handle), "the row gather")
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, spans, strict=True)])


def finish(group: Group | None, error: BaseException | None) -> None:
    """End a command in step with the peers: report this rank's outcome once more.

    A rank that failed outside an exchange meets its peers at their next exchange, which then
    raises its message everywhere. Nothing to do after a ``RankFailure`` (every rank already knows).
    """
    if group is None or isinstance(error, (RankFailure, CollectiveTimeout)):
        return
    exchange_status(group, error)


@contextmanager
def in_step(group: Group | None) -> Iterator[None]:
    """A block that every rank leaves together: an exception on one rank (anywhere in the block, not
    only in the network) becomes ``RankFailure`` with its message on every rank, instead of a hang."""
    try:
        yield
    except Exception as err:
        finish(group, err)  # raises RankFailure on every rank (or a timeout)
        raise
    finish(group, None)


def report_failure(error: RankFailure | CollectiveTimeout) -> int:
    """Say a failure once (rank 0 says an agreed one; a timeout is said by each rank that saw it),
    let the peers reach the same point, leave the group; the CLI's exit status (2)."""
    group = current()
    agreed = isinstance(error, RankFailure)
    if not agreed or group is None or group.rank == 0:
        print(f"error: {error}", file=sys.stderr, flush=True)
    if agreed and group is not None:
        # Every rank raised at the same exchange: wait here so that torchrun, which stops the others
        # as soon as one rank exits with an error, cannot cut rank 0 off before it has said why.
        with suppress(RuntimeError):
            dist.barrier(group=group.handle)
    shutdown()
    return 2
