"""The run generators: pose a run once and drive the library, yielding small picklable events
(``ui.run.events``).

``run_events`` poses the run (``paratta.pose``: its problem, plan, sampler and work; ``Posed``), then
interleaves the sequential reference (streaming its progress) with one event per ``paratta.solve``
iterate, then ``SolveDone`` with the full decode and the last trajectory. ``race_events`` interleaves
two lanes (``interleave``, written once): two solvers or stopping rules on one problem (posed once,
each lane planned on it), or two samplers, each on its own problem against its own sequential
reference. A job's ``interrupt`` (Stop, a newer job, the budget) is asked before every network call,
whose batch the run splits into calls of at most ``CALL_S`` on a CPU. Nothing here re-implements the
solver or touches Gradio.

Wall-clock figures are the time spent inside the library's generators only (``Busy``): the UI's
own work while a generator is suspended at a ``yield`` is not charged to either sampler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from paratta import Iterate, Problem, Run, SolverConfig, iterate_sequential, pose, solve
from paratta.config import STOPPINGS, specs
from paratta.evaluate import Interrupted
from paratta.metrics import distance
from paratta.protocol import DiffusionModel
from paratta.schedule import SPLITS

from ..serve.gpu import DEVICE
from ..serve.keep import KeptArray
from ..serve.models import get_model
from ..view.record import IterationRow, RunSettings
from ..view.render import shrink, to_uint8
from .events import Distances, Event, IterateDone, Posed, ReferenceDone, SequentialStep, SolveDone

T_ = TypeVar("T_")
PREVIEW_SIDE = 128  # stored previews are at most this big: memory stays small for long runs
RACE_SOLVERS = ("jacobi", "anderson")
# The samplers races: each sampler at a step count it is run with (contest: {lane: (sampler, T)}).
SAMPLER_RACES = {
    "samplers": {"DDIM-50": ("ddim", 50), "DPM++ 2M-20": ("dpm++2m", 20)},
    "unipc": {"UniPC-20": ("unipc", 20), "DPM++ 2M-20": ("dpm++2m", 20)},
}
RACES = {
    "solvers": "Jacobi vs Anderson",
    "stopping": "budget vs per-step stopping rule (Anderson)",
    **{
        contest: f"{' vs '.join(lanes)}, each to its own sequential image (Anderson)"
        for contest, lanes in SAMPLER_RACES.items()
    },
    "splits": "flow vs published split: the linear part the update carries (Anderson)",
}
WHOLE = ("window", "max_iters")  # at their T they mean "the whole trajectory", "as many as steps"
REFERENCE_CHUNKS = 8  # the reference advances T/8 steps between two parallel iterations
# The longest one network call may be projected to take on a CPU (its latency table): a batch is split
# into calls this short, so that Stop (asked before each call) ends a run well within a second even
# on a CPU that other work slows down several times.
CALL_S = 0.1
Interrupt = Callable[[], bool]  # a job's "must it end now?" (``ui.serve.jobs.Ticket.interrupted``)


class Busy(Generic[T_]):
    """Iterate over a generator, adding up the time spent inside it (``seconds``)."""

    def __init__(self, iterator: Iterator[T_]) -> None:
        self.iterator, self.seconds = iterator, 0.0

    def __iter__(self) -> Iterator[T_]:
        while True:
            t0 = time.perf_counter()
            item = next(self.iterator, None)
            self.seconds += time.perf_counter() - t0
            if item is None:
                return
            yield item


def posed(
    settings: RunSettings,
    dry: bool = False,
    interrupt: Interrupt | None = None,
    problem: Problem | None = None,
) -> Run:
    """The run of ``settings`` on the app's model, posed once (``paratta.pose``); ``dry`` at the door.
    On a CPU its batches are split into calls of at most ``CALL_S`` (the device's latency table)."""
    call_s = CALL_S if DEVICE == "cpu" else None
    model = get_model(settings.model)
    return pose(
        model, settings.request, settings.config, dry=dry, problem=problem, interrupt=interrupt, call_s=call_s
    )


def preview(model: DiffusionModel, x: torch.Tensor) -> np.ndarray:
    """The model's cheap preview of one state, as a small uint8 (h, w, 3) array."""
    return shrink(to_uint8(model.preview(x[None].to(model.dtype))[0].numpy()), PREVIEW_SIDE)


def decode(model: DiffusionModel, x: torch.Tensor) -> np.ndarray:
    return to_uint8(model.decode(x[None].to(model.dtype))[0].numpy())


def check_init(
    settings: RunSettings, init: dict[str, Any] | None, latent_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """The stored trajectory for init="trajectory", checked against this run's T and ``latent_shape``
    (its posed run's)."""
    if settings.config.init != "trajectory":
        return None
    if not init or init.get("trajectory") is None:
        raise ValueError(
            "init is 'previous run's trajectory' but none is stored: finish a run and press "
            "'Use this run as initialisation' first"
        )
    kept = init["trajectory"]
    traj = kept.get() if isinstance(kept, KeptArray) else np.asarray(kept)  # Expired once evicted
    expected = (settings.request.steps + 1, *latent_shape)
    if traj.shape != expected:
        raise ValueError(
            f"the stored trajectory has T = {traj.shape[0] - 1} and latent shape "
            f"{traj.shape[1:]}; this run needs T = {settings.request.steps} and {tuple(latent_shape)}"
        )
    return torch.from_numpy(traj)


def reference_steps(
    problem: Problem,
    model: DiffusionModel,
    frames: int = 10,
    interrupt: Interrupt | None = None,
) -> Generator[Event | None, None, torch.Tensor]:
    """The sequential reference one step per item: a "sequential" preview event on about ``frames`` of
    the steps, None on the others; then a "reference" event with its full decode. Returns its x_0.
    ``interrupt`` is asked between steps (one network call each): True raises ``Interrupted``."""
    T = problem.steps
    every = max(1, T // frames)
    steps = Busy(iterate_sequential(problem))
    x0 = problem.x_T
    for step in steps:
        if interrupt is not None and interrupt():
            raise Interrupted(f"interrupted during the sequential reference, {T - step.index}/{T} steps done")
        x0, done = step.x, T - step.index
        if step.index == 0 or done % every == 0:
            yield SequentialStep(done, T, steps.seconds, preview(model, step.x))
        else:
            yield None
    yield ReferenceDone(decode(model, x0), steps.seconds)
    return x0


def reference_events(
    problem: Problem, model: DiffusionModel, frames: int = 10, interrupt: Interrupt | None = None
) -> Generator[Event, None, torch.Tensor]:
    """Stream the whole sequential reference (its preview events, then its full decode); return its x_0."""
    reference = Reference(problem, model, frames, interrupt)
    yield from reference.advance()
    assert reference.x0 is not None
    return reference.x0


class Reference:
    """The sequential reference, advanced a few steps at a time: ``run_events`` puts its steps between
    the parallel iterations, so the first parallel frame does not wait for all T steps. ``x0`` is set
    once the last step is done."""

    def __init__(
        self, problem: Problem, model: DiffusionModel, frames: int = 10, interrupt: Interrupt | None = None
    ) -> None:
        self.steps = reference_steps(problem, model, frames, interrupt)
        self.x0: torch.Tensor | None = None

    def advance(self, n: int | None = None) -> Iterator[Event]:
        """The events of the next ``n`` steps (of all remaining steps when None)."""
        taken = 0
        while self.x0 is None and (n is None or taken < n):
            try:
                event = next(self.steps)
            except StopIteration as end:
                self.x0 = end.value
                return
            if event is None or isinstance(event, SequentialStep):
                taken += 1
            if event is not None:
                yield event


def iterate_row(it: Iterate, reference: torch.Tensor | None, seconds: float) -> IterationRow:
    """The UI's row of one iterate; its distance to sequential is NaN until the reference exists."""
    return IterationRow(
        iteration=it.iteration,
        window=tuple(it.window),
        anchor=it.anchor,
        evaluations=it.evaluations,
        seconds=seconds,
        max_residual=it.max_residual,
        distance=distance(it.x0, reference) if reference is not None else float("nan"),
        residual=it.residual.numpy().copy(),
        converged=it.converged,
    )


def solver_events(
    run: Run, reference: torch.Tensor | None, init: torch.Tensor | None, lane: str
) -> Iterator[Event]:
    """One "iterate" event per ``solve`` record of the posed ``run``, then "done" with the full decode
    and the trajectory. Without a reference yet, each iterate event also carries its ``x0`` (for the
    distance, later)."""
    problem = run.problem
    assert problem is not None  # posed with its problem (not dry)
    model = problem.model  # at the request's size, as the problem decodes
    iterates = Busy(solve(problem, run.plan, init_trajectory=init))
    last = None
    for it in iterates:
        last = it
        row = iterate_row(it, reference, iterates.seconds)
        yield IterateDone(lane, row, preview(model, it.x0), it.x0 if reference is None else None)
    if last is not None:
        yield SolveDone(lane, decode(model, last.x0), last.trajectory.to(torch.float32).numpy())


def run_events(
    settings: RunSettings, init: dict[str, Any] | None = None, interrupt: Interrupt | None = None
) -> Iterator[Event]:
    """The run posed once (``Posed``), then the sequential reference and the parallel solver interleaved:
    about T/8 reference steps, one parallel iteration, T/8 steps, … (on a CPU an iteration over W
    timesteps costs about W steps), so the first ParaTAA frame comes early even for a large T.
    Iterations computed before the reference ends get their distance to it in one "distances" event
    (for rows 1…n) once it ends; "done" comes after the whole reference. Picklable events."""
    run = posed(settings, interrupt=interrupt)
    yield Posed(run.detached())
    assert run.problem is not None
    problem, model = run.problem, run.problem.model
    init_trajectory = check_init(settings, init, run.latent_shape)
    chunk = -(-problem.steps // REFERENCE_CHUNKS)
    reference = Reference(problem, model, interrupt=interrupt)
    yield from reference.advance(chunk)
    early: list[torch.Tensor] = []  # x_0 of iterations that came before the reference's x_0
    for event in solver_events(run, None, init_trajectory, "main"):
        if isinstance(event, IterateDone):
            assert event.x0 is not None
            if reference.x0 is None:
                early.append(event.x0)
            else:
                event.row.distance = distance(event.x0, reference.x0)
            yield replace(event, x0=None)
            yield from reference.advance(chunk)
        else:
            yield from reference.advance()  # the verdict compares with the whole reference
        if reference.x0 is not None and early:
            yield Distances(tuple(distance(x0, reference.x0) for x0 in early))
            early = []
        if isinstance(event, SolveDone):
            yield event


def interleave(lanes: dict[str, Iterator[T_]]) -> Iterator[tuple[str, T_]]:
    """Round robin over named iterators: one item of each lane in turn, (lane, item), until all are done.

    The one two-solver loop of the app: the race (Jacobi against Anderson, or two stopping rules) and
    the teaching tab both advance their lanes through it, so neither lane runs ahead of the other.
    """
    live = dict(lanes)
    while live:
        for name in list(live):
            item = next(live[name], _END)
            if item is _END:
                del live[name]
            else:
                yield name, item  # type: ignore[misc]


_END = object()


def split_lane(split: str) -> str:
    """The splits race's lane of ``split`` ("flow split")."""
    return f"{split} split"


def race_lanes(settings: RunSettings, contest: str = "solvers") -> dict[str, RunSettings]:
    """The two lanes of a race, each from x_T: Jacobi against Anderson ("solvers"); the budget stopping
    rule against the published per-step rule with the same solver ("stopping"); or the lanes of
    ``SAMPLER_RACES`` ("samplers": DDIM-50 and DPM++ 2M-20; "unipc": UniPC-20 and DPM++ 2M-20), each
    at its own T and η = 0, with the settings bounded by T (window, order, …) fitted to each lane's T
    (``fitted``); or the update's two linear parts ("splits", ``Schedule.linear_part``) on one problem
    and rule."""
    config = replace(settings.config, init="xT")
    if contest == "stopping":
        return {rule: replace(settings, config=replace(config, stopping=rule)) for rule in STOPPINGS}
    if contest == "splits":
        return {split_lane(split): replace(settings, config=replace(config, split=split)) for split in SPLITS}
    if contest in SAMPLER_RACES:
        return {
            lane: RunSettings(
                settings.model,
                replace(settings.request, sampler=sampler, steps=T, eta=0.0, family="ddim"),
                fitted(config, settings.request.steps, T),
            )
            for lane, (sampler, T) in SAMPLER_RACES[contest].items()
        }
    return {name: replace(settings, config=replace(config, solver=name)) for name in RACE_SOLVERS}


def fitted(config: SolverConfig, given: int, steps: int) -> SolverConfig:
    """``config``, set for T = ``given``, at T = ``steps``: a window over the whole trajectory and max
    iterations T stay so (``WHOLE``); any other number bounded by T (order, coarse steps) above
    ``steps`` is lowered to it; the others are kept."""
    numbers = {n: getattr(config, n) for n, spec in specs(SolverConfig).items() if spec.hi == "T"}
    return replace(
        config,
        **{
            n: steps
            for n, v in numbers.items()
            if isinstance(v, int) and (v > steps or v == given and n in WHOLE)
        },
    )


def race_events(
    settings: RunSettings, contest: str = "solvers", interrupt: Interrupt | None = None
) -> Iterator[Event]:
    """Each lane posed (``Posed``, with its lane; lanes of one request share its problem, posed once and
    planned for each lane), each problem's sequential reference (one for both when they share it: its
    events carry no lane), then the two lanes interleaved one event at a time (``lane`` names one)."""
    lanes = race_lanes(settings, contest)
    shared = len({lane.request for lane in lanes.values()}) == 1
    runs: dict[str, Run] = {}
    for name, lane in lanes.items():
        known = next((r.problem for n, r in runs.items() if lanes[n].request == lane.request), None)
        runs[name] = posed(lane, interrupt=interrupt, problem=known)
        yield Posed(runs[name].detached(), name)
    references: dict[Any, torch.Tensor] = {}  # by request: its reference's x_0
    solvers = {}
    for name, run in runs.items():
        request, problem = lanes[name].request, run.problem
        assert problem is not None
        if request not in references:
            events = reference_events(problem, problem.model, interrupt=interrupt)
            references[request] = yield from tagged(events, "" if shared else name)
        solvers[name] = solver_events(run, references[request], None, name)
    for _, event in interleave(solvers):
        yield event


def tagged(events: Generator[Event, None, T_], lane: str) -> Generator[Event, None, T_]:
    """``events`` with ``lane`` set on each; returns what ``events`` returns."""
    while True:
        try:
            event = next(events)
        except StopIteration as end:
            return end.value
        yield replace(event, lane=lane)  # type: ignore[type-var]
