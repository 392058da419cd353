"""The Teach room's pictures: the plane of each lane (matplotlib), the residual per iteration (the
app's own PIL chart, ``ui.plot``), a whole frame (PNG) and the run (GIF), and the lesson's figures
(matplotlib; docs/teach.md).

A panel is one square figure, so the page can set them side by side on a projector and one under
another on a phone, each at about its own size (text ≥ 11 px on screen, ``TEXT_PT``). A plane draws,
over the density p_0 of the prompt's clusters, every state x_0 … x_T of the lane's iterate against the
sequential trajectory; the part from the anchor up (final by the solver's own records) in cyan.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from paratta import load_model

from ..view.plot import INK, TEXT_PX, LegendEntry, Series, font, log_chart
from .lanes import LANE_NAMES, LANES, MODEL, SHORT_NAMES, Lesson

TEXT_PT = 13  # at DPI 100 the smallest text (ticks, TEXT_PT − 1) is 16.7 px: 11 px on screen at two thirds
DPI = 100
PANEL_IN = 4.2  # a plane's side in inches: 420 px
CHART_PX = 320  # the residual chart's side: its text (``ui.plot.TEXT_PX``) stays ≥ 12 px where it is shown
EXTENT = 3.4  # the density picture covers [−EXTENT, EXTENT]²: the ring of radius 2 and its tails
BACKDROP_PX = 640  # its pixels per side: 94 in the narrowest view, smooth once interpolated
ITERATE, FINAL_PART, SEQUENTIAL, X0 = "#ff7a3d", "#22d3ee", "white", "#ff3d3d"
LANE_COLOURS = {"jacobi": "#4b5563", "anderson-global": "#7c3aed", "anderson": "#ea580c"}
EMPTY = "#120a33"  # the density picture's colour where p_0 is nil (outside the ring)


@lru_cache(maxsize=8)
def backdrop(prompt: str) -> np.ndarray:
    """RGB picture of p_0 on [−EXTENT, EXTENT]² for the prompt (colour ∝ √p, so the tails stay visible);
    a view crops it, and shows ``EMPTY`` beyond it, where p_0 is nil."""
    from paratta.models.toy2d import colour_map

    log_p = load_model(MODEL).density_grid(1.0, EXTENT, BACKDROP_PX, prompt)
    return colour_map(np.sqrt(np.exp(log_p - log_p.max())))


def status(lesson: Lesson, name: str, k: int) -> str:
    """A lane's state at frame k in a few words (a panel's second title line)."""
    s = lesson.at(k)[name]
    if s.iteration == 0:
        return "start: every state = x_T"
    if s.converged:
        return f"iteration {s.iteration} ✓ converged"
    return f"iteration {s.iteration}: {s.final(lesson.steps)}/{lesson.steps} final"


def draw_plane(ax: Axes, lesson: Lesson, name: str, k: int, mode: str) -> None:
    """Lane ``name`` at frame k over p_0, in its view (``Lesson.view``)."""
    snap, seq = lesson.at(k)[name], lesson.sequential
    x_lo, x_hi, y_lo, y_hi = lesson.view(name, k, mode)
    ax.set_facecolor(EMPTY)
    ax.imshow(backdrop(lesson.prompt), extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), interpolation="bilinear")
    ax.plot(*seq.T, "--", color=SEQUENTIAL, lw=1.6, zorder=4)
    ax.plot(*snap.trajectory.T, "-o", color=ITERATE, lw=1.6, ms=3, zorder=5)
    ax.plot(*snap.trajectory[snap.anchor :].T, "-o", color=FINAL_PART, lw=2.0, ms=3, zorder=6)
    ax.plot(*seq[-1], "s", color=SEQUENTIAL, ms=8, mec="black", mew=0.8, zorder=7)
    ax.plot(*seq[0], "*", color=SEQUENTIAL, ms=14, mec="black", mew=0.8, zorder=7)
    ax.plot(*snap.trajectory[0], "o", color=X0, ms=8, mec="white", mew=1.2, zorder=8)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")
    ax.set_title(f"{LANE_NAMES[name]}\n{status(lesson, name, k)}", fontsize=TEXT_PT, y=1.0)
    ax.set_xlabel("x₁", fontsize=TEXT_PT, labelpad=1)
    ax.set_ylabel("x₂", fontsize=TEXT_PT, labelpad=1)
    ax.tick_params(labelsize=TEXT_PT - 1)
    ax.locator_params(nbins=5)


def residual_series(lesson: Lesson, name: str) -> tuple[list[int], list[float]]:
    """(iterations 1 … n, the largest RMS residual in the window before each update) of one lane."""
    snaps = lesson.lanes[name][1:]
    return [s.iteration for s in snaps], [s.max_residual for s in snaps]


def tint(colour: str, share: float = 0.7) -> tuple[int, int, int]:
    """``colour`` mixed with ``share`` of white: a faint copy of a lane's line."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return tuple(int(v) for v in np.round(rgb + (255 - rgb) * share))  # type: ignore[return-value]


def residual_chart(lesson: Lesson, k: int, side: int) -> np.ndarray:
    """Every lane's residual per iteration (log scale) as an RGB image ``side`` pixels square: the whole
    run faint, up to frame k solid, a line at frame k; the legend gives each lane's iteration count."""
    series, legend = [], []
    for name in LANES:
        its, res = residual_series(lesson, name)
        solid = tint(LANE_COLOURS[name], 0.0)
        series.append(Series(name, its, res, tint(LANE_COLOURS[name])))
        shown = sum(i <= k for i in its)
        series.append(Series(name, its[:shown], res[:shown], solid))
        legend.append(LegendEntry(f"{SHORT_NAMES[name]}: {its[-1] if its else 0}", solid))
    return log_chart(
        series,
        vline=k if k >= 1 else None,
        x_label=f"parallel iteration (frame {k} of {lesson.frames})",
        y_label="largest residual, RMS",
        legend=legend,
        size=(side, side),
    )


def figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def pixels(fig: Figure) -> np.ndarray:
    """The figure as uint8 RGB (H, W, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]


def plane_panel(lesson: Lesson, name: str, k: int, mode: str = "follow", dpi: int = DPI) -> Figure:
    """One lane's plane at frame k, a square ``PANEL_IN`` inches wide."""
    fig = figure(PANEL_IN, PANEL_IN, dpi)
    fig.subplots_adjust(left=0.15, right=0.97, top=0.86, bottom=0.12)
    draw_plane(fig.add_subplot(), lesson, name, k, mode)
    return fig


def panels(lesson: Lesson, k: int, mode: str = "follow", dpi: int = DPI) -> list[np.ndarray]:
    """Frame k as the page shows it: one plane per lane, then the residual chart (uint8 RGB, square).
    The chart is drawn at the size the page shows it (``CHART_PX``): its text has a fixed pixel size."""
    planes = [pixels(plane_panel(lesson, n, k, mode, dpi)) for n in LANES]
    return planes + [residual_chart(lesson, k, round(CHART_PX * dpi / DPI))]


def composite(images: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """The panels of a frame side by side (the chart scaled to the planes' height), the key under them."""
    side = images[0].shape[0]
    row = [Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS) for im in images]
    px = max(11, round(TEXT_PX * side / (PANEL_IN * DPI)))
    key = (
        "orange: the iterate x_T → x_0 · cyan: its final part (≥ anchor) · white dashed: the sequential path "
    )
    key += "(square x_T, star x_0) · red dot: the iterate's x_0"
    out = Image.new("RGB", (len(row) * side + (len(row) - 1) * gap, side + 2 * px), "white")
    for n, im in enumerate(row):
        out.paste(im, (n * (side + gap), 0))
    ImageDraw.Draw(out).text((gap, side + px), key, fill=INK, font=font(px), anchor="lm")
    return np.asarray(out)


def png(lesson: Lesson, k: int, mode: str = "follow") -> bytes:
    """Frame k whole (the page's panels and the key) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(composite(panels(lesson, k, mode))).save(buffer, format="PNG")
    return buffer.getvalue()


def gif(lesson: Lesson, mode: str = "follow", ms: int = 700, hold_ms: int = 2500, dpi: int = 60) -> bytes:
    """The run as an animated GIF: every frame whole, at ``dpi``; the last frame held longer."""
    frames = [Image.fromarray(composite(panels(lesson, k, mode, dpi))) for k in range(lesson.frames + 1)]
    frames = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for im in frames]
    buffer = io.BytesIO()
    durations = [ms] * (len(frames) - 1) + [hold_ms]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buffer.getvalue()


def log_axes(ax: Axes, title: str, x_label: str, y_label: str) -> None:
    ax.set_yscale("log")
    ax.set_title(title, fontsize=TEXT_PT)
    ax.set_xlabel(x_label, fontsize=TEXT_PT)
    ax.set_ylabel(y_label, fontsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT - 1)
    ax.grid(True, which="major", color="#e5e7eb", lw=0.8)
    ax.legend(fontsize=TEXT_PT - 1)


def curves_figure(
    title: str,
    curves: dict[str, Sequence[float]],
    x_label: str = "iteration",
    y_label: str = "error",
    first: int = 0,
) -> Figure:
    """One log-scale chart of a few named curves (a lesson figure), x from ``first``."""
    fig = figure(6.4, 4.0)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.86, bottom=0.14)
    ax = fig.add_subplot()
    palette = ["#4b5563", "#7c3aed", "#ea580c", "#0891b2", "#16a34a"]
    for (label, ys), colour in zip(curves.items(), palette, strict=False):
        pts = [(n + first, y) for n, y in enumerate(ys) if y > 0 and math.isfinite(y)]
        ax.plot(*zip(*pts, strict=True), "-o", ms=3.5, lw=1.8, color=colour, label=label)
    log_axes(ax, title, x_label, y_label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def staircase_figure(lesson: Lesson) -> Figure:
    """States final after each parallel iteration, per lane, against the guarantee (one per iteration)."""
    fig = figure(6.4, 4.0)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.14)
    ax = fig.add_subplot()
    n = lesson.frames
    ax.plot([0, n], [0, n], ":", color="#111827", lw=1.5, label="guaranteed: one per iteration")
    for name in LANES:
        snaps = lesson.lanes[name]
        ax.step(
            [s.iteration for s in snaps],
            [s.final(lesson.steps) for s in snaps],
            where="post",
            lw=2,
            color=LANE_COLOURS[name],
            label=f"{LANE_NAMES[name]}: {snaps[-1].iteration} iterations",
        )
    ax.set_ylim(0, lesson.steps * 1.8)  # the legend above the staircases
    ax.set_yticks([v for v in range(0, lesson.steps + 1, 10)])
    ax.set_title(f"states final after each parallel iteration (T = {lesson.steps})", fontsize=TEXT_PT)
    ax.set_xlabel("parallel iteration", fontsize=TEXT_PT)
    ax.set_ylabel("final states (≥ anchor)", fontsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT - 1)
    ax.grid(True, color="#e5e7eb", lw=0.8)
    ax.legend(fontsize=TEXT_PT - 1, loc="upper left")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def bars_figure(title: str, rows: dict[str, dict[str, float]], y_label: str) -> Figure:
    """Grouped bars: for each group (e.g. a history m), one bar per lane."""
    fig = figure(6.4, 4.0)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.14)
    ax = fig.add_subplot()
    groups = list(rows)
    width = 0.8 / len(LANES)
    for j, name in enumerate(LANES):
        xs = [g + (j - 1) * width for g in range(len(groups))]
        ys = [rows[g][name] for g in groups]
        ax.bar(xs, ys, width, color=LANE_COLOURS[name], label=LANE_NAMES[name])
        for x, y in zip(xs, ys, strict=True):
            ax.text(x, y + 0.2, f"{y:g}", ha="center", va="bottom", fontsize=TEXT_PT - 2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.35 * max(max(row.values()) for row in rows.values()))
    ax.set_title(title, fontsize=TEXT_PT)
    ax.set_ylabel(y_label, fontsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT - 1)
    ax.legend(fontsize=TEXT_PT - 1, loc="upper center", ncol=len(LANES), columnspacing=0.8, handlelength=1.2)
    ax.grid(True, axis="y", color="#e5e7eb", lw=0.8)
    return fig
