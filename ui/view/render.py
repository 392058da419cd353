"""Pure rendering: numpy in, numpy/bytes/text out. No Gradio, no torch; testable on their own.

The residual heatmap is drawn straight into an RGB array by a colour-map lookup and the curves
with PIL (``ui.view.plot``): both take milliseconds, far less than a matplotlib figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from PIL import Image

from .plot import FRAME, INK, ColourBar, LegendEntry, Series, int_ticks, log_chart, matrix_chart
from .record import IterationRow, RunRecord

LUT = (colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
FINAL = np.array([14, 14, 20], np.uint8)  # above the window: final states, nothing to evaluate
PENDING = np.array([72, 74, 84], np.uint8)  # below the window: not reached yet
EMPTY = np.array([36, 37, 44], np.uint8)  # columns of iterations still to come
WINDOW = (190, 190, 200)  # window edges
FRONTIER = (0, 220, 255)  # the anchor after each iteration: states above it are final
HEATMAP_SIZE = (320, 250)  # pixels: the Run tab's chart slot at 1280 px; pass another slot's size
HEATMAP_LEGEND = (
    "Heatmap: rows are timesteps i, noisiest at the top; columns parallel iterations; colour each state's "
    "residual (log scale, numbers on the bar). Cyan staircase: the solver's anchor after each iteration, "
    "every state above it final. Grey: not reached yet. Colour alone does not mean converged: the "
    "staircase is the solver's own decision."
)


STRIP_FRAMES = 8  # a video is shown as this many evenly spaced frames side by side, at most


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1], (3, H, W) or (H, W, 3), → uint8 (H, W, 3); a video (F, 3, H, W) → its
    frame strip (``frame_strip``)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 4:
        a = frame_strip(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def frame_strip(video: np.ndarray, most: int = STRIP_FRAMES) -> np.ndarray:
    """Frames (F, 3, H, W) → (H, k·W, 3): k = min(F, ``most``) evenly spaced frames, first and last
    included, left to right in time."""
    F = video.shape[0]
    picked = np.unique(np.linspace(0, F - 1, min(F, most)).round().astype(int))
    return np.concatenate([video[f].transpose(1, 2, 0) for f in picked], axis=1)


def shrink(image: np.ndarray, max_side: int = 128) -> np.ndarray:
    """Box-downsample a uint8 (H, W, 3) image by an integer factor so its longer side is ≤ ``max_side``."""
    f = math.ceil(max(image.shape[:2]) / max_side)
    if f <= 1:
        return image
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    blocks = image[:h, :w].reshape(h // f, f, w // f, f, -1).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, target: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale (H, W, C) by the largest integer factor with longer side ≤ ``target``."""
    f = max(1, target // max(image.shape[:2]))
    return image if f == 1 else np.repeat(np.repeat(image, f, axis=0), f, axis=1)


def beside(images: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """uint8 (H, W, 3) images of one height side by side, ``gap`` white columns between two."""
    space = np.full((images[0].shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([part for image in images for part in (space, image)][1:], axis=1)


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (NaN → 0) → uint8 RGB via the magma lookup table."""
    idx = (np.clip(np.nan_to_num(values), 0.0, 1.0) * 255 + 0.5).astype(np.int64)
    return LUT[idx]


def difference_map(a: np.ndarray, b: np.ndarray, gain: float = 10.0) -> tuple[np.ndarray, float]:
    """|a − b| (max over channels, in [0, 1] pixel units) × ``gain``, coloured; and the max difference.

    ``a`` and ``b`` are uint8 (H, W, 3) or float in [0, 1]; they must have the same shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    fa = a.astype(np.float64) / 255 if a.dtype == np.uint8 else a.astype(np.float64)
    fb = b.astype(np.float64) / 255 if b.dtype == np.uint8 else b.astype(np.float64)
    d = np.abs(fa - fb).max(axis=-1)
    return colourise(d * gain), float(d.max()) if d.size else 0.0


@dataclass(frozen=True)
class HeatmapScale:
    """The log10 colour range of a heatmap: ``lo`` is the darkest colour, ``hi`` the brightest."""

    lo: float
    hi: float

    def caption(self) -> str:
        return f"colour: log₁₀ residual from 1e{self.lo:+.0f} (black) to 1e{self.hi:+.0f} (yellow)"

    @classmethod
    def for_tolerance(cls, tol: float, decades: int = 5) -> HeatmapScale:
        """A fixed range for a whole run, so colours compare across iterations: tol/10 … 10^decades × that."""
        lo = math.floor(math.log10(tol)) - 1
        return cls(float(lo), float(lo + decades))


def heatmap_scale(residuals: np.ndarray, tol: float) -> HeatmapScale:
    """Decade-aligned range: one decade below the tolerance up to the largest residual seen."""
    lo = math.floor(math.log10(tol)) - 1
    finite = residuals[np.isfinite(residuals) & (residuals > 0)]
    top = math.ceil(math.log10(finite.max())) if finite.size else lo + 1
    return HeatmapScale(float(lo), float(max(top, lo + 1)))


def staircase(anchors: Sequence[int], T: int) -> list[tuple[float, float]]:
    """The anchor after each iteration as a polyline in (iteration column, timestep) units: column j
    spans x ∈ [j, j+1], index i spans y ∈ [i, i+1], and the anchor a sits on the edge y = a."""
    pts, previous = [], T
    for j, anchor in enumerate(anchors):
        pts += [(j, previous), (j, anchor), (j + 1, anchor)]
        previous = anchor
    return pts


def residual_heatmap(
    residuals: np.ndarray,
    anchors: Sequence[int],
    windows: Sequence[tuple[int, int]],
    tol: float,
    *,
    min_columns: int = 10,
    size: tuple[int, int] = HEATMAP_SIZE,
    scale: HeatmapScale | None = None,
) -> tuple[np.ndarray, HeatmapScale]:
    """Timestep × iteration chart of RMS residuals on a log colour scale, as uint8 (H, W, 3).

    ``residuals`` is (n, T): row j is iteration j + 1, column i is step i (0 = least noisy), NaN
    outside that iteration's window. The chart's rows go from step T−1 (noisiest, top) to step 0
    (bottom), its columns are iterations (at least ``min_columns``, so early frames keep their
    shape), with tick labels on both axes and a colour bar with decade labels. Cells above the
    window are final (near black), below it not reached yet (grey). The window's lower edge is drawn
    light grey and the records' anchors (states ≥ anchor are final) as a cyan staircase: which states
    are converged is the solver's decision, read from its records, not a colour threshold.
    """
    residuals = np.asarray(residuals, dtype=np.float64)
    n, T = residuals.shape
    if len(windows) != n or len(anchors) != n:
        raise ValueError(f"{n} residual rows but {len(windows)} windows and {len(anchors)} anchors")
    scale = scale or heatmap_scale(residuals, tol)
    cols = max(n, min_columns)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(residuals)
    cells = colourise((logs - scale.lo) / (scale.hi - scale.lo))  # (n, T, 3)
    step = np.arange(T)
    for j, (lo, hi) in enumerate(windows):
        outside = np.isnan(residuals[j])
        cells[j, outside & (step >= hi)] = FINAL
        cells[j, outside & (step < lo)] = PENDING
    matrix = np.empty((T, cols, 3), np.uint8)
    matrix[:] = EMPTY
    matrix[:, :n] = cells[:, ::-1].transpose(1, 0, 2)  # rows: step T−1 at the top; columns: iterations

    # The window's top is the previous anchor (the staircase); its bottom is drawn where it is above 0.
    edges = [([(j, lo), (j + 1, lo)], WINDOW, 1) for j, (lo, _) in enumerate(windows) if lo > 0]
    lines = [*edges, (staircase(anchors, T), FRONTIER, 2)] if n else []
    ticks_x = [(j - 0.5, str(j)) for j in int_ticks(1, cols, max(2, size[0] // 45))]
    ticks_y = [(i + 0.5, str(i)) for i in int_ticks(0, max(T - 1, 0), max(2, size[1] // 40))]
    bar = ColourBar(LUT, scale.lo, scale.hi, "residual (RMS)")
    img = matrix_chart(
        matrix,
        x_ticks=ticks_x,
        y_ticks=ticks_y,
        x_label="parallel iteration",
        y_label="timestep i",
        bar=bar,
        lines=lines,
        size=size,
    )
    return img, scale


COLOURS = [(228, 87, 46), (46, 134, 222), (23, 163, 152), (142, 68, 173)]
CHART_SIZE = (320, 250)  # pixels: the Run tab's chart slot at 1280 px; pass another slot's size
STYLE_KEY = (LegendEntry("max residual", INK), LegendEntry("distance to sequential", INK, dashed=True))


def convergence_chart(
    series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    tol: float | dict[str, float],
    marker: int | None = None,
    size: tuple[int, int] = CHART_SIZE,
    bounds: str = "",
) -> np.ndarray:
    """Log-scale curves per solver as an RGB image: max residual (solid) and distance to sequential (dashed).

    ``series`` maps a label to (iterations, max residuals, distances); ``marker`` draws a vertical
    line at that iteration (the one shown while scrubbing). The legend names each solver once by
    its colour and the two line styles once, so it stays short with two solvers in a narrow slot.
    ``tol`` by label draws each solver's own tolerance in its colour where they differ; one tolerance
    is labelled with what it ``bounds`` (its stopping rule's quantity), when given.
    """
    lines = []
    for colour, (its, res, dist) in zip(COLOURS, series.values(), strict=False):
        lines.append(Series("max residual", its, res, colour))
        lines.append(Series("distance to sequential", its, dist, colour, dashed=True))
    if len(series) == 1:  # one solver: its colour says nothing, the styles say everything
        legend = [LegendEntry(e.label, COLOURS[0], e.dashed) for e in STYLE_KEY]
    else:
        legend = [LegendEntry(label, colour) for colour, label in zip(COLOURS, series, strict=False)]
        legend += STYLE_KEY
    tols = tol if isinstance(tol, dict) else dict.fromkeys(series, tol)
    if len(set(tols.values())) == 1:
        t = next(iter(tols.values()))
        hlines = [(t, f"tol {t:g}: bounds {bounds}" if bounds else f"tolerance {t:g}", FRAME)]
    else:
        colours = dict(zip(series, COLOURS, strict=False))
        hlines = [
            (t, f"{label.split()[0].lower()} tol {t:g}", colours[label])
            for label, t in tols.items()
            if label in colours
        ]
    return log_chart(
        lines,
        hlines=hlines,
        vline=marker,
        y_label="RMS, latent units",
        legend=legend,
        size=size,
    )


def gif_bytes(frames: Sequence[np.ndarray], target: int = 192, ms: int = 250, hold_ms: int = 1500) -> bytes:
    """An animated GIF of uint8 (H, W, 3) frames, upscaled nearest, the last frame held longer."""
    if not frames:
        raise ValueError("no frames to animate")
    images = [Image.fromarray(upscale(f, target)) for f in frames]
    buffer = io.BytesIO()
    durations = [ms] * (len(images) - 1) + [hold_ms]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()


CSV_FIELDS = (
    "iteration",
    "window_lo",
    "window_hi",
    "anchor",
    "evaluations",
    "seconds",
    "max_residual",
    "distance_to_sequential",
)


def history_csv(rows: Sequence[IterationRow]) -> str:
    """One line per iteration: the fields above, then r_0 … r_{T−1} (empty outside the window)."""
    steps = len(rows[0].residual) if rows else 0
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, *(f"r_{i}" for i in range(steps))])
    for r in rows:
        writer.writerow(
            [
                r.iteration,
                r.window[0],
                r.window[1],
                r.anchor,
                r.evaluations,
                f"{r.seconds:.6f}",
                repr(r.max_residual),
                repr(r.distance),
                *("" if math.isnan(v) else repr(float(v)) for v in r.residual),
            ]
        )
    return out.getvalue()


def history_json(record: RunRecord) -> str:
    """The settings, the sequential reference's cost and every iteration (NaN → null)."""
    doc = {
        "settings": record.settings.as_dict(),
        "steps": record.steps,
        "tol": record.tol,
        "converged": record.converged,
        "sequential": {"seconds": record.sequential_seconds, "evaluations": record.steps},
        "notes": record.notes,
        "iterations": [
            {
                "iteration": r.iteration,
                "window": list(r.window),
                "anchor": r.anchor,
                "evaluations": r.evaluations,
                "seconds": r.seconds,
                "max_residual": r.max_residual,
                "distance_to_sequential": r.distance,
                "residual": [None if math.isnan(v) else float(v) for v in r.residual],
            }
            for r in record.rows
        ],
    }
    return json.dumps(doc, indent=1)
