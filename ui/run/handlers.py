"""Event handlers of the Run and Race tabs: consume the session's events, keep a RunRecord, render views.

A job's settings are checked (``door.settle``) before it replaces the session's running one; its run
is posed once in the session generator, whose first event (``Posed``) makes the record: the views read
the run from there. The session generators may run in a ZeroGPU worker (``ui.serve.gpu``); figures
and files are made here, outside it. Library ``ValueError``s (bad prompt words, window > T, …) become
``gr.Error`` with the library's own message, so the app keeps serving. A streamed update sends only
the outputs that changed (``Screen``); the last one carries plain values for all outputs, so a
gradio_client user's ``job.result()`` holds images, text and dicts, never update records.

Stop (and a newer job, and the time budget) reach a running job through its ticket, which the run's
plan asks before every network call (``ui.serve.jobs``): a stopped run leaves its last whole
iteration to Stop's own event (``after_stop``).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from paratta.evaluate import NonFiniteError

from ..serve.cache import session_folder
from ..serve.gpu import ZERO_GPU, gpu, release_memory
from ..serve.jobs import JOBS, STOPPED, Ticket, bounded
from ..serve.keep import KeptArray
from ..serve.limits import Caps
from ..serve.models import get_model
from ..view import views
from ..view.record import RunRecord, RunSettings
from ..view.render import beside, gif_bytes, history_csv, history_json, upscale
from .door import check_contest, check_init, job_bound, race_settings, settle, user_error
from .events import Distances, IterateDone, Posed, ReferenceDone, SequentialStep, SolveDone
from .session import SAMPLER_RACES, SPLITS, Interrupt, race_events, race_lanes, run_events, split_lane
from .settings import frame_index

ZERO_GPU_MARGIN_S = 10  # beyond a run's own bound: loading onto the GPU and the final decode


def gpu_seconds(settings: RunSettings, race: str | None = None) -> int:
    """The ZeroGPU time a run (or the race ``race``) asks for: its worst-case network time on the GPU
    (``door.job_bound``: its runs posed dry there), within the per-run budget, plus a margin."""
    caps = Caps.from_env()
    work = job_bound(settings, get_model(settings.model), race, device="cuda")[1]  # on the GPU it asks for
    return math.ceil(min(caps.budget_s, work)) + ZERO_GPU_MARGIN_S


def zero_gpu(events: Callable[..., Iterator[Any]], race: bool = False) -> Callable[..., Iterator[Any]]:
    """``events(settings, …)`` on ZeroGPU (where ``spaces`` is installed), asking for ``gpu_seconds`` of
    a run, or of a race (``events(settings, contest)``)."""
    if race:
        return gpu(events, duration=lambda settings, contest="solvers", *_: gpu_seconds(settings, contest))
    return gpu(events, duration=lambda settings, *_, **__: gpu_seconds(settings))


gpu_run_events = zero_gpu(run_events)
gpu_race_events = zero_gpu(race_events, race=True)

# Outputs of /run and /race, in the order ui.app passes their components (gr.State last: not in the API).
RUN_OUTPUTS = ("image", "sequential", "diff", "heatmap", "curves", "stats", "info", "downloads", "record")
# The race's two lanes fill slots a and b in the order of ``race_lanes``: Jacobi and Anderson, the
# budget and the per-step stopping rule, or the two samplers.
RACE_OUTPUTS = ("a", "b", "sequential", "a_heatmap", "b_heatmap", "curves", "stats", "info")
RACE_LABELS = {
    "jacobi": "Jacobi",
    "anderson": "Anderson",
    "budget": "Budget rule",
    "per-step": "Per-step rule",
    **{lane: lane for lanes in SAMPLER_RACES.values() for lane in lanes},
    **{split_lane(split): split_lane(split).capitalize() for split in SPLITS},
}
SCRUB_OUTPUTS = RUN_OUTPUTS[:7]


def interrupt(ticket: Ticket) -> Interrupt | None:
    """What the run asks before every network call: the ticket's, unless the run goes to a ZeroGPU
    worker (another process: there the job ends between its events)."""
    return None if ZERO_GPU else ticket.interrupted


class Screen:
    """The current value of every output of one event; each ``show`` returns them all, in order.

    An output whose value has not changed since it was last sent goes out as ``gr.skip()``: Gradio
    writes every image it is handed to a cache file named by its content, so re-sending the same image
    rewrites a file the browser may be reading (a broken image, and h11's "Too little data for declared
    Content-Length"). ``show(final=True)`` sends every value once more, so the last update a
    gradio_client user gets is complete; an image already sent goes out then as a PNG file named by
    its content in ``folder``, which Gradio copies into its cache atomically and only once, so the
    file the browser may still be reading is never rewritten.
    """

    def __init__(self, names: tuple[str, ...], folder: Path | None = None) -> None:
        self.names = names
        self.folder = folder
        self.values: dict[str, Any] = {}  # an output never given keeps what the page shows
        self.sent: dict[str, Any] = {}

    def show(self, final: bool = False, **values: Any) -> tuple[Any, ...]:
        self.values.update(values)
        out = []
        for n in self.names:
            if n not in self.values:
                out.append(None if final else gr.skip())
                continue
            value = self.values[n]
            unchanged = n in self.sent and same(self.sent[n], value)
            if unchanged and not final:
                out.append(gr.skip())
            elif unchanged and isinstance(value, np.ndarray) and self.folder is not None:
                out.append(png_file(value, self.folder))
            else:
                out.append(value)
            self.sent[n] = value
        return tuple(out)


def final_images_folder(session: str) -> Path:
    """The session's folder for the final update's images, emptied of the previous job's (Gradio has
    copied those into its cache by now: it copies while the update is sent)."""
    folder = session_folder(session)
    for old in folder.glob("*.png"):
        old.unlink(missing_ok=True)
    return folder


def png_file(image: np.ndarray, folder: Path) -> str:
    """``image`` as ``folder/<sha1 of its pixels>.png``, written once, by rename (never in place)."""
    path = folder / f"{hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()}.png"
    if not path.exists():
        staging = folder / f".{path.name}.tmp"
        Image.fromarray(image).save(staging, format="PNG")
        os.replace(staging, path)
    return str(path)


def same(a: Any, b: Any) -> bool:
    """Equal values (arrays by content): an output that need not be sent again."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, RunRecord) or isinstance(b, RunRecord):
        return False  # a gr.State: cheap to send, and mutated in place
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def refusal(names: tuple[str, ...], err: gr.Error) -> tuple[Any, ...]:
    """The update a refused or failed job sends before its error: the message in the status line (and
    the info JSON), every other output left as it was — the session's last good run stays usable."""
    shown = {"stats": f"**Not run:** {err.message}", "info": {"phase": "error", "error": err.message}}
    return tuple(shown.get(n, gr.skip()) for n in names)


def guarded(events: Iterator[Any]) -> Iterator[Any]:
    """Re-raise the library's input errors and NaN reports as user-facing ``gr.Error``."""
    try:
        yield from events
    except (ValueError, NonFiniteError) as err:
        raise user_error(err) from None


def scrub_update(k: int, interactive: bool) -> dict[str, Any]:
    """The iteration slider at k of k (a Gradio slider needs maximum > minimum, hence max(k, 2))."""
    return gr.update(maximum=max(k, 2), value=k, interactive=interactive and k > 1)


def lock_scrub() -> dict[str, Any]:
    return gr.update(interactive=False)


def scrub_ready(record: RunRecord | None) -> dict[str, Any]:
    return scrub_update(record.iterations, True) if record is not None and record.rows else gr.skip()


def write_downloads(record: RunRecord) -> list[str]:
    """GIF of the previews, residual history as CSV and JSON, in the session's own folder: each run
    overwrites the last one's set, and the folder goes when the session ends (``jobs.forget_session``).
    """
    folder = session_folder(record.session)
    names = ("paratta_previews.gif", "paratta_residuals.csv", "paratta_run.json")
    (folder / names[0]).write_bytes(gif_bytes(record.previews))
    (folder / names[1]).write_text(history_csv(record.rows))
    (folder / names[2]).write_text(history_json(record))
    return [str(folder / n) for n in names]


def sequential_view(event: SequentialStep | ReferenceDone, record: RunRecord) -> dict[str, Any]:
    """Outputs while the sequential reference streams, and once it is done (its full decode)."""
    record.sequential_seconds = event.seconds
    if isinstance(event, ReferenceDone):
        record.sequential_image = event.image
        stats = (
            f"Sequential reference done: {record.steps} steps in "
            f"{views.fmt_seconds(record.sequential_seconds)}. The parallel solver's frames follow…"
        )
        return {"sequential": upscale(event.image, views.DISPLAY), "stats": stats}
    # Its state x_t is still noise for most of the steps: shown beside ParaTAA's x̂_0 it would contradict
    # it, so the panel stays empty until the reference's x_0 is there, and the line says how far it is.
    record.sequential_preview = event.preview
    stats = (
        f"Sequential reference: step {event.step}/{event.steps}, "
        f"{views.fmt_seconds(event.seconds)}; the parallel solver's iterations come in between."
    )
    return {
        "sequential": None,
        "stats": stats,
        "info": {"phase": "sequential", "step": event.step, "steps": event.steps},
    }


def frame_outputs(record: RunRecord, k: int, phase: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    f = views.frame(record, k, phase)
    f.info["ui_seconds"] = time.perf_counter() - t0
    return {
        "image": f.image,
        "sequential": f.sequential,
        "diff": f.diff,
        "heatmap": f.heatmap,
        "curves": f.curves,
        "stats": f.stats,
        "info": f.info,
    }


def make_run_handler(models: list[str]) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The /run handler: the panel's inputs by setting name (``controls.WIDGETS``, the API's parameter
    names), the stored initialisation (a ``gr.State``), and the request, which Gradio fills."""

    def run(
        request: gr.Request | None = None, init_state: Any = None, **named: Any
    ) -> Iterator[tuple[Any, ...]]:
        screen = Screen(RUN_OUTPUTS)
        # An output this run has not set yet stays as it was: a refused or failed run leaves the last
        # good run's panels, downloads and record (scrub, "use as initialisation") in place.
        screen.values.update(dict.fromkeys(RUN_OUTPUTS, gr.skip()))
        try:
            settings, (dry,) = settle(models, named)
            try:  # refused before it may replace the session's running job
                check_init(settings, init_state, dry.latent_shape)
            except ValueError as err:
                raise user_error(err) from None
            ticket = JOBS.begin(request, Caps.from_env())
        except gr.Error as err:
            yield refusal(RUN_OUTPUTS, err)
            raise
        record: RunRecord | None = None  # made from the run once it is posed (the first event)
        screen.folder = final_images_folder(ticket.session)
        try:
            yield screen.show(stats="Starting…", info={"phase": "start"})
            for event in guarded(bounded(gpu_run_events(settings, init_state, interrupt(ticket)), ticket)):
                if ticket.interrupted():  # ended meanwhile: no frame is drawn for it
                    break
                if isinstance(event, Posed):
                    record = RunRecord.of(settings, event.run, ticket.session)
                    continue
                assert record is not None
                if record.stopped:  # Stop was handled already; what it showed stays true
                    return
                match event:
                    case SequentialStep() if record.rows:  # between parallel iterations: its progress only
                        sequential_view(event, record)
                    case ReferenceDone() if record.rows:
                        yield screen.show(sequential=sequential_view(event, record)["sequential"])
                    case SequentialStep() | ReferenceDone():  # a new run: the last one's panels go
                        cleared = dict.fromkeys(("image", "diff", "heatmap", "curves", "downloads"))
                        yield screen.show(**cleared, **sequential_view(event, record))
                    case Distances():  # the reference has ended: the first iterations' distances
                        for row, distance in zip(record.rows, event.values, strict=False):
                            row.distance = distance
                    case IterateDone():
                        record.rows.append(event.row)
                        record.previews.append(event.preview)
                        outputs = frame_outputs(record, record.iterations, "parallel")
                        if record.sequential_image is None:  # the reference panel streams on its own
                            del outputs["sequential"]
                        yield screen.show(**outputs, record=record)
                    case SolveDone():
                        record.final_image = event.image
                        record.trajectory = event.trajectory
                        yield screen.show(
                            final=True,
                            **frame_outputs(record, record.iterations, "done"),
                            downloads=write_downloads(record),
                        )
            ended = record is None or (not record.stopped and record.final_image is None)
            if ticket.reason and ticket.reason != STOPPED and ended:  # Stop's own event shows its end
                yield screen.show(final=True, **ended_early(record, ticket.reason))
        except gr.Error as err:
            yield refusal(RUN_OUTPUTS, err)
            raise
        finally:
            ticket.end()
            release_memory()

    return run


def ended_early(record: RunRecord | None, reason: str) -> dict[str, Any]:
    """A run ended by its limits (time budget, a newer job of its session) ends as if stopped: its last
    iteration whole, scrubbable and downloadable, with the reason in the stats line."""
    if record is None or not record.rows:
        line = f"**Stopped** during the sequential reference: {reason}. Nothing to show yet: lower the steps."
        return {"stats": line, "info": {"phase": "stopped", "reason": reason}}
    if not record.claim_stop():  # Stop has shown this run's end already
        return {}
    k = record.iterations
    record.notes.append(f"stopped after iteration {k}: {reason}")
    return {**frame_outputs(record, k, "done"), "downloads": write_downloads(record), "record": record}


def scrub(record: RunRecord | None, k: Any) -> tuple[Any, ...]:
    """Show iteration k of the stored run (nothing is recomputed)."""
    k = frame_index(k)
    if record is None or not record.rows or k is None:  # a hidden event: garbage changes nothing
        return tuple(gr.skip() for _ in SCRUB_OUTPUTS)
    k = min(max(k, 1), record.iterations)
    return Screen(SCRUB_OUTPUTS).show(**frame_outputs(record, k, "scrub"))


STOP_OUTPUTS = (*SCRUB_OUTPUTS, "downloads", "slider")


def after_stop(record: RunRecord | None, in_flight: bool = False) -> tuple[Any, ...]:
    """Once Stop has cancelled a run: show its last iteration whole (images, heatmap, curves and stats
    of the same k: the iteration may have been computed but not shown yet), scrubbable and downloadable.
    A run ``in_flight`` with no iteration of its own yet (``record`` is still the last run's, or none)
    ends with a sentence saying so. A second Stop, or a Stop after the run ended, changes nothing."""
    if record is None or not record.rows or not record.claim_stop():
        if in_flight:
            line = "**Stopped** before the first parallel iteration: nothing to show yet."
            return Screen(STOP_OUTPUTS).show(stats=line, info={"phase": "stopped", "reason": STOPPED})
        return tuple(gr.skip() for _ in STOP_OUTPUTS)
    k = record.iterations
    record.notes.append(f"stopped by the user after iteration {k}")
    outputs = frame_outputs(record, k, "done")
    return Screen(STOP_OUTPUTS).show(
        **outputs, downloads=write_downloads(record), slider=scrub_update(k, True)
    )


def check_usable(record: RunRecord | None) -> RunRecord:
    """The run whose final trajectory can be kept; ``gr.Error`` naming why not (none, stopped, expired)."""
    if record is None or record.trajectory is None:
        raise gr.Error(
            "No finished run to use yet: run to the end first (a stopped run keeps no trajectory).",
            print_exception=False,
        )
    return record


def why_not_usable(record: RunRecord | None) -> Any:
    """The Use button's answer on the page when there is nothing to keep: /use_as_init is then refused
    at the door, on its one input, a ``gr.State`` the page cannot show a message on; this says it
    under the button instead (and nothing when the run can be kept)."""
    try:
        check_usable(record)
    except gr.Error as err:
        return f"**Not stored:** {err.message}"
    return gr.skip()


def use_as_init(record: RunRecord | None) -> tuple[dict[str, Any], str]:
    """Keep the last run's final trajectory for a next run with init = previous run's trajectory."""
    record = check_usable(record)
    s = record.settings
    stored = {
        "trajectory": KeptArray(record.session, record.trajectory),  # counted in the sessions' budget
        "steps": record.steps,
        "model": s.model,
        "prompt": s.request.prompt,
    }
    note = (
        f"Stored the final trajectory of “{s.request.prompt}” (T = {record.steps}, model {s.model}). "
        "Choose *previous run's trajectory* as initialisation; the next run must use the same T."
    )
    return stored, note


def make_race_handler(models: list[str]) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The /race handler: the run's inputs less solver and init (each lane sets its own), and the contest."""

    def race(
        request: gr.Request | None = None, contest: Any = "solvers", **named: Any
    ) -> Iterator[tuple[Any, ...]]:
        try:
            try:
                check_contest(contest)
            except ValueError as err:
                raise user_error(err) from None
            settings, _ = settle(models, race_settings(named), race=contest)
            ticket = JOBS.begin(request, Caps.from_env())
        except gr.Error as err:
            yield refusal(RACE_OUTPUTS, err)
            raise
        try:
            yield from race_frames(settings, contest, ticket)
        except gr.Error as err:
            yield refusal(RACE_OUTPUTS, err)
            raise
        finally:
            ticket.end()
            release_memory()

    return race


def race_frames(settings: RunSettings, contest: str, ticket: Ticket) -> Iterator[tuple[Any, ...]]:
    """The race's updates; a race ended by its limits keeps its frames and says why."""
    lanes = race_lanes(settings, contest)
    records: dict[str, RunRecord] = {}  # by lane, in lane order: made as each lane is posed
    screen = Screen(RACE_OUTPUTS, final_images_folder(ticket.session))
    yield screen.show(stats="Starting…", info={"phase": "start"})
    for event in guarded(bounded(gpu_race_events(settings, contest, interrupt(ticket)), ticket)):
        if ticket.interrupted():  # ended meanwhile: no frame is drawn for it
            break
        if isinstance(event, Posed):
            records[event.lane] = RunRecord.of(lanes[event.lane], event.run, ticket.session)
            continue
        if isinstance(event, SequentialStep | ReferenceDone):
            yield screen.show(**reference_view(event, records))
            continue
        assert isinstance(event, IterateDone | SolveDone)
        lane = event.lane
        if isinstance(event, IterateDone):
            records[lane].rows.append(event.row)
            records[lane].previews.append(event.preview)
        else:
            records[lane].final_image = event.image
        finished = all(r.final_image is not None for r in records.values())
        yield screen.show(final=finished, **race_view(records, lane))
    if ticket.reason and ticket.reason != STOPPED:  # a race stopped by the user shows what it had
        line = f"**Stopped:** {ticket.reason}."
        yield screen.show(final=True, stats="  \n".join(filter(None, (line, screen.values["stats"]))))


def reference_view(event: SequentialStep | ReferenceDone, records: dict[str, RunRecord]) -> dict[str, Any]:
    """A race's sequential panel and line: the one reference of both lanes (``event.lane`` empty), or
    each lane's own, shown side by side in lane order once they are done."""
    lanes = [records[event.lane]] if event.lane else list(records.values())
    view = sequential_view(event, lanes[0])
    for r in lanes[1:]:
        r.sequential_preview, r.sequential_image = lanes[0].sequential_preview, lanes[0].sequential_image
        r.sequential_seconds = lanes[0].sequential_seconds
    if not event.lane:
        return {"sequential": view["sequential"], "stats": view["stats"]}
    ends = [r.sequential_image for r in records.values() if r.sequential_image is not None]
    done = [upscale(image, views.DISPLAY) for image in ends]
    return {"sequential": beside(done) if done else None, "stats": f"**{event.lane}** · {view['stats']}"}


def race_view(records: dict[str, RunRecord], lane: str) -> dict[str, Any]:
    """Update the lane that moved (slot a or b, in lane order), the shared curves (each lane's own
    tolerance) and the stats."""
    record = records[lane]
    slot = "ab"[list(records).index(lane)]
    f = views.frame(
        record, record.iterations, "done" if record.final_image is not None else "parallel", with_curves=False
    )
    lines, info = [], {}
    for name, r in records.items():
        if r.rows:
            info[name] = views.stats(r, r.iterations, "parallel")[1]
            lines.append(f"**{RACE_LABELS[name]}** — {views.lane_line(r)}")
    verdict = views.race_verdict({RACE_LABELS[n]: r for n, r in records.items()})
    live = {RACE_LABELS[n]: r for n, r in records.items() if r.rows}
    return {
        slot: f.image,
        f"{slot}_heatmap": f.heatmap,
        "curves": views.curves(live, {RACE_LABELS[n]: r.tol for n, r in records.items() if r.rows}),
        "stats": "  \n".join(([verdict] if verdict else []) + lines),
        "info": info,
    }
