"""From a RunRecord to what the Run tab shows: images, heatmap, curves, the verdict and stats, their JSON.

Used both while a run streams and when the slider scrubs a finished run (nothing is recomputed).
The verdict leads with the hardware-free figure (parallel iterations against T sequential steps)
and says plainly whether the image is the sequential one; wall-clock measured here comes with its
reason, and a GPU projection only where a measured latency table exists (``paratta.planning.latency``).
What the run is (its sampler, tolerance, plan) is read from its record, as its posed run said it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from paratta.planning.latency import NO_TABLE, LatencyTable, Projection, project, table_for

from ..serve.gpu import DEVICE
from .record import IterationRow, RunRecord
from .render import HeatmapScale, convergence_chart, difference_map, residual_heatmap, upscale

DIFF_GAIN = 10.0
DISPLAY = 256  # on-screen size of the small previews (nearest-neighbour upscaling)
SAME_LEVELS = 1  # "same image": no 8-bit pixel level differs by more than this
SOLVER_NAMES = {
    "sequential": "Sequential",
    "jacobi": "Jacobi",
    "anderson": "ParaTAA",
    "anderson-global": "Anderson (global γ)",
}
WHY_CPU = (
    "on a CPU a batch of W network evaluations costs many single calls (the Auto window box measures "
    "how many and picks the fastest W here); on a GPU about one until the device is full"
)
WHY_GPU = "on a GPU a batch of W evaluations costs about one call until the device is full"
SAID_AS = {"flow Euler": "flow-matching Euler"}  # a library sampler name, as the page says it


@dataclass
class Frame:
    """One update of the Run tab (plain values: numpy images, text, a dict)."""

    image: np.ndarray | None
    sequential: np.ndarray | None
    diff: np.ndarray | None
    heatmap: np.ndarray | None
    curves: np.ndarray | None
    stats: str
    info: dict[str, Any]


def fmt_seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def sampler_name(record: RunRecord) -> str:
    """What the sequential reference is: the run's sampler (``paratta.Run.sampler``: a multistep one,
    flow-matching Euler), DDIM(η) said as DDIM (η = 0), DDPM (η = 1) or DDIM (η = …)."""
    name = record.sampler or ("flow Euler" if record.settings["family"] == "flow" else "DDIM")
    if name.startswith("DDIM"):
        eta = record.settings.request.eta
        return "DDIM" if eta == 0 else "DDPM" if eta == 1 else f"DDIM (η = {eta:g})"
    return SAID_AS.get(name, name)


def solver_name(record: RunRecord) -> str:
    return SOLVER_NAMES.get(record.settings["solver"], record.settings["solver"])


def pair(record: RunRecord, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ParaTAA, sequential) images of iteration k at the same resolution: full decodes at the end."""
    if not record.previews:
        return None, record.sequential_image
    if k == record.iterations and record.final_image is not None and record.sequential_image is not None:
        return record.final_image, record.sequential_image
    # Until the reference has ended its preview is of some step t > 0: nothing to compare with yet.
    return record.previews[k - 1], record.sequential_preview if record.sequential_image is not None else None


def pixel_levels(record: RunRecord, k: int) -> int | None:
    """Largest 8-bit pixel difference between iteration k's image and the sequential one (None: no pair)."""
    image, reference = pair(record, k)
    if image is None or reference is None:
        return None
    return int(round(difference_map(image, reference)[1] * 255))


def point_distance(record: RunRecord, k: int) -> float | None:
    """Euclidean distance, in the plane's units, from iteration k's point x₀ to the sequential one (the
    row's RMS distance times √n); None before the reference has ended."""
    d = record.rows[k - 1].distance
    return float(d * np.sqrt(np.prod(record.latent_shape))) if np.isfinite(d) else None


def gap(record: RunRecord, k: int) -> str | None:
    """How far iteration k's result is from the sequential one, in its own units: the largest 8-bit pixel
    difference of two images ("3/255"), or the distance of two points ("2.1e-05"); None: no pair yet."""
    if record.points:
        d = point_distance(record, k)
        return f"{d:.1e}" if d is not None else None
    levels = pixel_levels(record, k)
    return f"{levels}/255" if levels is not None else None


def same(record: RunRecord, k: int) -> bool:
    """Iteration k converged onto the sequential result: an image no 8-bit level further than
    ``SAME_LEVELS`` from it, or a point within the tolerance (an RMS, as the stopping rule bounds it)."""
    if not record.rows[k - 1].converged:
        return False
    if record.points:
        return bool(record.rows[k - 1].distance <= record.tol)  # the RMS; NaN before the reference ends
    levels = pixel_levels(record, k)
    return levels is not None and levels <= SAME_LEVELS


def result(record: RunRecord) -> str:
    """What a run ends on: an image, or a point of the plane."""
    return "point" if record.points else "image"


def gap_name(record: RunRecord) -> str:
    return "distances" if record.points else "largest pixel differences"


def how_far(record: RunRecord, k: int) -> str:
    """The verdict's clause on the gap to the sequential result, units named."""
    said = gap(record, k)
    if said is None:
        return f"no sequential {result(record)} to compare"
    if record.points:
        return f"x₀ is {said} from the sequential x₀ (Euclidean, in the plane's units)"
    return f"largest pixel difference {said}"


@lru_cache(maxsize=16)
def latency_table(model: str) -> LatencyTable | None:
    return table_for(model)


def projection(record: RunRecord, k: int) -> Projection | None:
    """Iterations 1…k charged with the measured GPU batch latency of this model; None without a table."""
    table = latency_table(record.settings.model)
    if table is None:
        return None
    s = record.settings  # as the run's plan made them concrete
    coarse = s["coarse_steps"] if s["init"] == "coarse" else 0  # run step by step before iteration 1
    windows = [hi - lo for lo, hi in (r.window for r in record.rows[:k])]
    # The batch as asked: the app's split of a CPU batch into short calls (for Stop) is not a GPU's.
    given = s.config.max_batch if isinstance(s.config.max_batch, int) else None
    return project(table, windows, record.steps, s.request.guidance, given, coarse, record.rows_per_step)


def verdict(record: RunRecord, k: int) -> str:
    """The headline of iteration k of a finished run: same image as sequential or not, and the steps saved.

    Only says "same image" when it is true: converged and no pixel more than one 8-bit level off.
    """
    T, row = record.steps, record.rows[k - 1]
    sampler, thing = sampler_name(record), result(record)
    n = row.iteration
    diff = how_far(record, k)
    steps = f"**{plural(n, 'parallel iteration')}** instead of {plural(T, 'step')} ({T / n:.1f}× fewer)"
    if T == 1:
        steps = "1 step: nothing to run in parallel"
    elif record.settings["solver"] == "sequential":
        steps = f"{n} iterations of one step each: the sequential sampler itself, no speed-up"
    if not row.converged:
        why = "stopped" if record.stopped else f"the budget of {n} iterations ended"
        return (
            f"✗ **Not converged** — {why} with {T - row.anchor}/{T} timesteps final: "
            f"not yet the sequential {sampler} {thing} ({diff})"
        )
    if same(record, k):
        return f"✓ **Same {thing} as sequential {sampler}** — {steps}; {diff}"
    return (
        f"≈ **Converged to tolerance {record.tol:g}, but not the same {thing}** — {steps}; {diff} "
        f"(the tolerance is an RMS in latent units; a smaller one brings the {thing} closer)"
    )


def wall_clock(record: RunRecord, k: int) -> tuple[str, dict[str, Any]]:
    """Wall-clock measured here, its reason beside it, and the labelled GPU projection (or why none)."""
    row = record.rows[k - 1]
    name = solver_name(record)
    why = WHY_CPU if DEVICE == "cpu" else WHY_GPU
    line = (
        f"Wall-clock measured here ({DEVICE}, UI excluded): {name} {fmt_seconds(row.seconds)}, "
        f"sequential {fmt_seconds(record.sequential_seconds)} — {why}."
    )
    p = projection(record, k)
    if p is None:
        return line + f" GPU projection: {NO_TABLE}.", {"projection": None}
    if not row.converged:  # the sequential image is not reached yet: no speed-up to claim
        line += (
            f" **Projected** for these {plural(k, 'iteration')}: {name} {fmt_seconds(p.parallel_s)}, "
            f"{p.label}; not converged, so no speed-up is claimed."
        )
        info = {"parallel_s": p.parallel_s, "sequential_s": None, "device": p.device, "label": p.label}
        return line, {"projection": info}
    line += (
        f" **Projected**: {name} {fmt_seconds(p.parallel_s)}, sequential {fmt_seconds(p.sequential_s)} "
        f"({p.speedup:.1f}×), {p.label}."
    )
    info = {"parallel_s": p.parallel_s, "sequential_s": p.sequential_s, "device": p.device, "label": p.label}
    return line, {"projection": info}


def progress(record: RunRecord, row: IterationRow) -> str:
    """The headline while a run streams; says why the preview stands still when x₀ is not reached yet."""
    T = record.steps
    line = f"**Iteration {row.iteration}** · {T - row.anchor}/{T} timesteps final"
    lo, hi = row.window
    if lo > 0:
        line += (
            f" · the window (steps {lo}–{hi - 1}) has not reached x₀ yet: the ParaTAA image stays as it "
            "is until it slides down"
        )
    return line


def stats(record: RunRecord, k: int, phase: str) -> tuple[str, dict[str, Any]]:
    """The headline (verdict once the run ended), one line of numbers, and the same as a dict (JSON)."""
    T = record.steps
    row = record.rows[k - 1]
    levels = pixel_levels(record, k)
    finished = record.final_image is not None or record.stopped
    ended = phase == "done" or (phase == "scrub" and k == record.iterations and finished)
    head = verdict(record, k) if ended else progress(record, row)
    details = (
        f"{solver_name(record)}: {row.evaluations} network evaluations in {row.iteration} parallel calls "
        f"(sequential: {T} in {T}) · max residual {row.max_residual:.1e} · "
        + (
            f"distance to sequential {row.distance:.1e} (RMS, latent units)"
            if np.isfinite(row.distance)
            else "distance to sequential: once the reference has ended"
        )
    )
    clock, extra = wall_clock(record, k)
    line = f"### {head}\n{details}  \n{clock}"
    if record.notes:
        line += "  \nNote: " + "; ".join(record.notes)
    info = {
        "phase": phase,
        "iteration": row.iteration,
        "iterations": record.iterations,
        "steps": T,
        "final_steps": T - row.anchor,
        "converged": row.converged,
        "same_image": same(record, k),  # for a model of points: the same point
        "verdict": head if ended else None,
        "evaluations": row.evaluations,
        "sequential_evaluations": T,
        "seconds": row.seconds,
        "sequential_seconds": record.sequential_seconds,
        "speedup_steps": T / row.iteration if row.converged else None,
        "max_residual": row.max_residual,
        "distance_to_sequential": row.distance,
        "max_pixel_diff": None if levels is None else difference_map(*pair(record, k))[1],
        "max_pixel_levels": levels,
        "window": list(row.window),
        "anchor": row.anchor,
        "stopped": record.stopped,
        "notes": list(record.notes),
        **extra,
    }
    return line, info


def heatmap(record: RunRecord, k: int) -> np.ndarray:
    rows = record.rows[:k]
    anchors, windows = [r.anchor for r in rows], [r.window for r in rows]
    scale = HeatmapScale.for_tolerance(record.tol)
    return residual_heatmap(record.residual_matrix(k), anchors, windows, record.tol, scale=scale)[0]


# What each stopping rule's tolerance bounds, for the tolerance line of the curves.
BOUNDS = {"budget": "the distance", "per-step": "step residuals"}


def curves(
    records: dict[str, RunRecord], tol: float | dict[str, float], marker: int | None = None
) -> np.ndarray:
    rules = {rec.settings.config.stopping for rec in records.values()}
    series = {
        label: (
            [r.iteration for r in rec.rows],
            [r.max_residual for r in rec.rows],
            [r.distance for r in rec.rows],
        )
        for label, rec in records.items()
    }
    return convergence_chart(series, tol, marker, bounds=BOUNDS[rules.pop()] if len(rules) == 1 else "")


def frame(record: RunRecord, k: int, phase: str, with_curves: bool = True) -> Frame:
    """The Run tab at iteration k (1-based) of ``record``."""
    image, reference = pair(record, k)
    both = image is not None and reference is not None
    diff = difference_map(image, reference, DIFF_GAIN)[0] if both else None
    line, info = stats(record, k, phase)
    return Frame(
        image=upscale(image, DISPLAY) if image is not None else None,
        sequential=upscale(reference, DISPLAY) if reference is not None else None,
        diff=upscale(diff, DISPLAY) if diff is not None else None,
        heatmap=heatmap(record, k),
        curves=curves({solver_name(record): record}, record.tol, k) if with_curves else None,
        stats=line,
        info=info,
    )


def lane_line(record: RunRecord) -> str:
    """One race lane's latest iteration in a line (the lane's name goes in front of it)."""
    T, row = record.steps, record.rows[-1]
    state = "✓ converged" if row.converged else f"{T - row.anchor}/{T} timesteps final"
    return (
        f"iteration **{row.iteration}** · {state} · max residual {row.max_residual:.1e} · "
        f"{row.evaluations} evaluations · wall-clock here {fmt_seconds(row.seconds)}"
    )


def race_verdict(records: dict[str, RunRecord]) -> str:
    """Who won, by how many iterations, and whether both ended on the sequential image."""
    done = {name: r for name, r in records.items() if r.rows and r.final_image is not None}
    if len(done) < len(records) or len(records) != 2:
        return ""
    (a, ra), (b, rb) = sorted(done.items(), key=lambda item: item[1].iterations)
    sampler = sampler_name(ra)
    gaps = {name: gap(r, r.iterations) for name, r in done.items()}
    both_same = all(same(r, r.iterations) for r in done.values())
    thing, apart = result(ra), gap_name(ra)
    if (ra.steps, sampler) != (rb.steps, sampler_name(rb)):
        return samplers_verdict(((a, ra), (b, rb)), gaps, both_same)
    ending = (
        f"both ended on the sequential {sampler} {thing} ({apart} {gaps[a]} and {gaps[b]})"
        if both_same
        else f"not both on the sequential {thing}: "
        + ", ".join(
            f"{n} {'converged' if r.converged else 'not converged'}, {gaps[n]}" for n, r in done.items()
        )
    )
    if ra.tol != rb.tol or ra.settings["stopping"] != rb.settings["stopping"]:
        # Two stopping rules, each at its own tolerance: fewer iterations (parallel calls, the GPU's
        # wall-clock) and fewer evaluations (total work) can go to different lanes; say both.
        lanes = "; ".join(
            f"**{n}** (tol {r.tol:g}): {plural(r.iterations, 'parallel iteration')}, "
            f"{r.rows[-1].evaluations} network evaluations"
            for n, r in ((a, ra), (b, rb))
        )
        return (
            f"### {lanes}\nFewer iterations means fewer parallel calls (wall-clock on a GPU); fewer "
            f"evaluations, less total work — {ending}"
        )
    if ra.iterations == rb.iterations:
        return f"### **A tie**: {ra.iterations} iterations each — {ending}"
    fewer = rb.iterations - ra.iterations
    return (
        f"### **{a} wins**: {ra.iterations} parallel iterations against {rb.iterations} "
        f"({fewer} fewer, {fewer / rb.iterations:.0%}) — {ending}"
    )


def samplers_verdict(
    lanes: tuple[tuple[str, RunRecord], ...], gaps: dict[str, str | None], both_same: bool
) -> str:
    """Two samplers, each solved against its own sequential image: the parallel iterations and network
    evaluations of each beside its sequential step count, and how far apart the two samplers' images are."""
    said = "; ".join(
        f"**{n}**: {plural(r.iterations, 'parallel iteration')}, {r.rows[-1].evaluations} network "
        f"evaluations (sequential: {r.steps} calls one after another)"
        for n, r in lanes
    )
    thing, apart = result(lanes[0][1]), gap_name(lanes[0][1])
    ending = (
        f"each ended on its own sequential {thing} ({apart} "
        + " and ".join(f"{gaps[n]}" for n, _ in lanes)
        + ")"
        if both_same
        else f"not both on their sequential {thing}s: "
        + ", ".join(f"{n} {'' if r.converged else 'not '}converged, {gaps[n]}" for n, r in lanes)
    )
    images = [r.sequential_image for _, r in lanes]
    between = (
        f"; the two samplers' own images differ by up to {round(difference_map(*images)[1] * 255)}/255"
        if thing == "image" and all(i is not None and i.shape == images[0].shape for i in images)
        else ""
    )
    return (
        f"### {said}\nFewer iterations means fewer parallel calls (wall-clock on a GPU) — {ending}{between}"
    )
