"""From a RunRecord to what the Run tab shows: images, heatmap, curves, the stats line and its JSON.

Used both while a run streams and when the slider scrubs a finished run (nothing is recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .record import RunRecord
from .render import HeatmapScale, convergence_chart, difference_map, residual_heatmap, upscale

DIFF_GAIN = 10.0
DISPLAY = 256  # on-screen size of the small previews (nearest-neighbour upscaling)
HEATMAP_LEGEND = (
    "Rows: timesteps, noisiest at the top. Columns: iterations. Colour: residual on a log scale, black = "
    "tolerance/10, yellow = 10⁴ × that (white tick on the bar = tolerance). Near-black above the window: "
    "final; grey below it: not reached yet. Cyan staircase: the converged frontier."
)


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


def pair(record: RunRecord, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ParaTAA, sequential) images of iteration k at the same resolution: full decodes at the end."""
    if not record.previews:
        return None, record.sequential_image
    if k == record.iterations and record.final_image is not None and record.sequential_image is not None:
        return record.final_image, record.sequential_image
    return record.previews[k - 1], record.sequential_preview


def heatmap(record: RunRecord, k: int) -> np.ndarray:
    rows = record.rows[:k]
    anchors, windows = [r.anchor for r in rows], [r.window for r in rows]
    scale = HeatmapScale.for_tolerance(record.tol)
    return residual_heatmap(record.residual_matrix(k), anchors, windows, record.tol, scale=scale)[0]


def curves(records: dict[str, RunRecord], tol: float, marker: int | None = None) -> np.ndarray:
    series = {
        label: (
            [r.iteration for r in rec.rows],
            [r.max_residual for r in rec.rows],
            [r.distance for r in rec.rows],
        )
        for label, rec in records.items()
    }
    return convergence_chart(series, tol, marker)


def stats(record: RunRecord, k: int, phase: str) -> tuple[str, dict[str, Any]]:
    """The one-line summary of iteration k and the same numbers as a dict (exposed as JSON)."""
    T = record.steps
    row = record.rows[k - 1]
    final_steps = T - row.anchor
    speedup = T / row.iteration
    image, reference = pair(record, k)
    max_diff = difference_map(image, reference)[1] if image is not None and reference is not None else None
    parts = [
        f"**Iteration {row.iteration}**" + (" ✓ converged" if row.converged else ""),
        f"final timesteps **{final_steps}/{T}**",
        f"model evaluations **{row.evaluations}** in {row.iteration} parallel calls "
        f"(sequential: {T} in {T} calls)",
        f"wall-clock ParaTAA **{fmt_seconds(row.seconds)}**, "
        f"sequential {fmt_seconds(record.sequential_seconds)} (measured, UI excluded)",
        f"speed-up in steps **{T}/{row.iteration} = {speedup:.1f}×**"
        if row.converged
        else "speed-up in steps: once converged",
    ]
    if max_diff is not None:
        parts.append(f"max pixel difference {max_diff:.4f}")
    if phase == "done" and not row.converged:
        parts.append("**ended before convergence**")
    line = " · ".join(parts)
    if record.notes:
        line += "  \nNote: " + "; ".join(record.notes)
    info = {
        "phase": phase,
        "iteration": row.iteration,
        "iterations": record.iterations,
        "steps": T,
        "final_steps": final_steps,
        "converged": row.converged,
        "evaluations": row.evaluations,
        "sequential_evaluations": T,
        "seconds": row.seconds,
        "sequential_seconds": record.sequential_seconds,
        "speedup_steps": speedup if row.converged else None,
        "max_residual": row.max_residual,
        "distance_to_sequential": row.distance,
        "max_pixel_diff": max_diff,
        "window": list(row.window),
        "anchor": row.anchor,
        "notes": list(record.notes),
    }
    return line, info


def frame(record: RunRecord, k: int, phase: str, with_curves: bool = True) -> Frame:
    """The Run tab at iteration k (1-based) of ``record``."""
    image, reference = pair(record, k)
    both = image is not None and reference is not None
    diff = difference_map(image, reference, DIFF_GAIN)[0] if both else None
    line, info = stats(record, k, phase)
    label = str(record.settings.get("solver", "run"))
    return Frame(
        image=upscale(image, DISPLAY) if image is not None else None,
        sequential=upscale(reference, DISPLAY) if reference is not None else None,
        diff=upscale(diff, DISPLAY) if diff is not None else None,
        heatmap=heatmap(record, k),
        curves=curves({label: record}, record.tol, k) if with_curves else None,
        stats=line,
        info=info,
    )
