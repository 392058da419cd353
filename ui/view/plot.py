"""Charts drawn with PIL straight into numpy images: a log-scale line chart and a matrix (heatmap) chart.

Matplotlib needs ~0.1–0.2 s per figure on a busy 2-core CPU; these take a few milliseconds, which
keeps the per-iteration UI work far below the solver's own time.

Legibility: every piece of text is ``TEXT_PX`` pixels in the returned image, and the app shows the
images at (about) their native size, so text stays ≥ 11 px on screen as long as a chart is given a
``size`` close to the slot it is shown in (the callers pass the slot's size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT_PX = 13  # every label, tick and legend entry; 11 px on screen even when shown at 85 % of native size
SS = 2  # supersampling of the line chart (anti-aliased lines)
INK, GRID, FRAME = (40, 44, 52), (226, 229, 234), (150, 155, 165)
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    colour: Colour
    dashed: bool = False


@dataclass(frozen=True)
class LegendEntry:
    """A legend line: a short stroke (solid or dashed) in ``colour``, then ``label``."""

    label: str
    colour: Colour
    dashed: bool = False


@dataclass(frozen=True)
class Box:
    """A plotting area in image pixels: [left, right] × [top, bottom]."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


def nice_step(span: float, max_ticks: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … that puts at most ``max_ticks`` ticks on ``span``."""
    step = 1
    while span / step > max_ticks - 1:
        for factor in (2, 2.5, 2):  # 1 → 2 → 5 → 10 → …
            step = int(step * factor)
            if span / step <= max_ticks - 1:
                break
    return step


def int_ticks(lo: int, hi: int, max_ticks: int) -> list[int]:
    """Integer ticks on [lo, hi] at a nice step (from ``lo`` for steps ≤ 2, else its multiples; iteration
    axes, which start at 1, also get 1)."""
    step = nice_step(hi - lo, max_ticks)
    if step <= 2:
        return list(range(lo, hi + 1, step))
    ticks = [v for v in range(lo, hi + 1) if v % step == 0]
    if lo == 1:
        ticks = [1, *(v for v in ticks if v - 1 >= step / 2)]  # iterations count from 1
    return ticks or [lo]


def decade_label(e: int) -> str:
    return f"1e{e}"


def decades(values: np.ndarray, floor: float | None) -> tuple[int, int]:
    """Whole decades [lo, hi] covering the positive finite values (and ``floor`` if given)."""
    v = values[np.isfinite(values) & (values > 0)]
    if floor is not None:
        v = np.append(v, floor)
    if not v.size:
        return -3, 0
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    return lo, max(hi, lo + 1)


def vertical_text(img: Image.Image, text: str, centre: tuple[float, float], size: int) -> None:
    """``text`` rotated 90° (reading upwards), centred on ``centre``."""
    f = font(size)
    probe = ImageDraw.Draw(img)
    w, h = int(probe.textlength(text, font=f)) + 4, int(size * 1.3)
    label = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(label).text((2, 0), text, fill=INK, font=f)
    rotated = label.rotate(90, expand=True)
    img.paste(rotated, (int(centre[0] - rotated.width / 2), int(centre[1] - rotated.height / 2)))


def dashed_line(
    draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], fill: tuple, width: int, dash: float = 10.0
) -> None:
    on, carry = True, 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        length = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while pos < length:
            step = min(dash - carry, length - pos)
            if on:
                a, b = pos / length, (pos + step) / length
                dx, dy = x1 - x0, y1 - y0
                draw.line([(x0 + dx * a, y0 + dy * a), (x0 + dx * b, y0 + dy * b)], fill=fill, width=width)
            pos += step
            carry += step
            if carry >= dash - 1e-9:
                on, carry = not on, 0.0


def legend_layout(entries: Sequence[LegendEntry], width: float, px: int) -> list[list[LegendEntry]]:
    """Entries wrapped into rows that fit ``width``: each is a stroke, its label and a gap before the next."""
    f, probe, s = font(px), ImageDraw.Draw(Image.new("RGB", (1, 1))), px / TEXT_PX
    rows: list[list[LegendEntry]] = [[]]
    used = 0.0
    for e in entries:
        w = 22 * s + probe.textlength(e.label, font=f)
        if rows[-1] and used + w > width:
            rows.append([])
            used = 0.0
        rows[-1].append(e)
        used += w + 12 * s
    return [r for r in rows if r]


def draw_legend(
    draw: ImageDraw.ImageDraw, rows: list[list[LegendEntry]], x0: float, y0: float, px: int
) -> None:
    """The wrapped legend, one row per 1.45 text heights, starting at (x0, y0)."""
    f, s = font(px), px / TEXT_PX
    for r, row in enumerate(rows):
        x, y = x0, y0 + r * 1.45 * px + 0.7 * px
        for e in row:
            seg = [(x, y), (x + 17 * s, y)]
            if e.dashed:
                dashed_line(draw, seg, e.colour, max(1, round(2 * s)), dash=4 * s)
            else:
                draw.line(seg, fill=e.colour, width=max(1, round(2 * s)))
            draw.text((x + 22 * s, y), e.label, fill=INK, font=f, anchor="lm")
            x += 22 * s + draw.textlength(e.label, font=f) + 12 * s


def log_chart(
    series: Sequence[Series],
    *,
    hline: float | None = None,
    hline_label: str = "",
    hlines: Sequence[tuple[float, str, tuple[int, int, int]]] = (),
    vline: float | None = None,
    x_label: str = "parallel iteration",
    y_label: str = "",
    legend: Sequence[LegendEntry] | None = None,
    size: tuple[int, int] = (420, 330),
) -> np.ndarray:
    """Lines (log y) with a decade grid, integer x ticks and a legend below the plot; uint8 (H, W, 3).

    ``legend`` defaults to one entry per series; ``hline_label`` is written on the line itself, at
    its left end; ``hlines`` are more such lines, (value, label, colour), the second one's label at the
    right end so two close lines keep both labels readable. Drawn at ``SS``× and downsampled: lines
    are anti-aliased, text is ``TEXT_PX``.
    """
    W, H = size[0] * SS, size[1] * SS
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    px = TEXT_PX * SS
    f = font(px)
    entries = (
        list(legend) if legend is not None else [LegendEntry(s.label, s.colour, s.dashed) for s in series]
    )
    left = (3.2 * px + 1.6 * px) if y_label else 3.4 * px
    rows = legend_layout(entries, W - 12 * SS, px)
    legend_h = len(rows) * 1.45 * px
    box = Box(left, 0.6 * px, W - 0.9 * px, H - 2.9 * px - legend_h - (0.3 * px if rows else 0))
    ys = np.concatenate([np.asarray(s.y, dtype=float) for s in series]) if series else np.zeros(0)
    levels = ([(hline, hline_label, FRAME)] if hline is not None else []) + list(hlines)
    lowest = min((v for v, _, _ in levels), default=None)
    lo, hi = decades(ys, lowest / 10 if lowest else None)
    x_max = max([max(s.x) for s in series if len(s.x)] + [5])

    def to_x(x: float) -> float:
        return box.left + (x - 1) / max(x_max - 1, 1) * box.width

    def to_y(y: float) -> float:
        y = min(max(y, 10.0**lo), 10.0**hi)
        return box.bottom - (math.log10(y) - lo) / (hi - lo) * box.height

    every = max(1, math.ceil((hi - lo + 1) / max(2, int(box.height / (2.2 * px)))))
    for e in range(lo, hi + 1):
        y = to_y(10.0**e)
        d.line([(box.left, y), (box.right, y)], fill=GRID, width=SS)
        if (e - lo) % every == 0:
            d.text((box.left - 0.4 * px, y), decade_label(e), fill=INK, font=f, anchor="rm")
    for x in int_ticks(1, int(x_max), max(2, int(box.width / (2.6 * px)))):
        d.line([(to_x(x), box.bottom), (to_x(x), box.bottom + 4 * SS)], fill=FRAME, width=SS)
        d.text((to_x(x), box.bottom + 0.45 * px), str(x), fill=INK, font=f, anchor="mt")
    d.rectangle([box.left, box.top, box.right, box.bottom], outline=FRAME, width=SS)
    d.text(((box.left + box.right) / 2, box.bottom + 2.6 * px), x_label, fill=INK, font=f, anchor="md")
    if y_label:
        vertical_text(img, y_label, (0.8 * px, (box.top + box.bottom) / 2), px)
    for k, (value, text, colour) in enumerate(levels):
        dashed_line(d, [(box.left, to_y(value)), (box.right, to_y(value))], colour, SS, dash=4 * SS)
        if text:  # at the left end, where the curves are still far above it (a second: the right end)
            at, anchor = (box.left + 0.3 * px, "lb") if k % 2 == 0 else (box.right - 0.3 * px, "rb")
            at = (at, to_y(value) - 0.25 * px)
            d.rectangle(d.textbbox(at, text, font=f, anchor=anchor), fill="white")
            d.text(at, text, fill=INK if len(levels) == 1 else colour, font=f, anchor=anchor)
    if vline is not None:
        d.line([(to_x(vline), box.top), (to_x(vline), box.bottom)], fill=(90, 95, 105), width=SS)
    for s in series:
        pts = [(to_x(x), to_y(y)) for x, y in zip(s.x, s.y, strict=True) if np.isfinite(y)]
        if not pts:
            continue
        if s.dashed:
            dashed_line(d, pts, s.colour, 2 * SS, dash=7 * SS)
        else:
            if len(pts) > 1:
                d.line(pts, fill=s.colour, width=2 * SS, joint="curve")
            r = 2.5 * SS
            for x, y in pts:
                d.ellipse([x - r, y - r, x + r, y + r], fill=s.colour)
    draw_legend(d, rows, 6 * SS, box.bottom + 2.9 * px, px)
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS))


@dataclass(frozen=True)
class ColourBar:
    """A vertical colour bar: ``lut`` (256, 3) from log10 ``lo`` (bottom) to ``hi`` (top), decade ticks."""

    lut: np.ndarray
    lo: float
    hi: float
    label: str


def matrix_box(size: tuple[int, int], y_label: bool = True) -> Box:
    """Where ``matrix_chart`` puts the matrix in an image of ``size``: room left for the y ticks and
    label, below for the x ticks and label, right for the colour bar, its decade labels and title."""
    px = TEXT_PX
    left = round(3.1 * px + (1.5 * px if y_label else 0))
    return Box(left, round(0.6 * px), size[0] - round(6.2 * px), size[1] - round(3.0 * px))


def matrix_chart(
    cells: np.ndarray,
    *,
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
    bar: ColourBar,
    lines: Sequence[tuple[Sequence[tuple[float, float]], Colour, int]] = (),
    size: tuple[int, int] = (420, 330),
) -> np.ndarray:
    """A matrix of coloured cells with axes and a colour bar; uint8 (H, W, 3).

    ``cells`` is (rows, cols, 3), row 0 drawn at the top, stretched (nearest) over ``matrix_box``.
    Ticks and ``lines`` are in cell units: x from 0 (left edge) to cols, y from 0 (bottom edge) to
    rows. Each line is (points, colour, width); lines of width ≥ 2 get a dark outline so they show
    on any colour.
    """
    W, H = size
    rows, cols = cells.shape[:2]
    box = matrix_box(size, bool(y_label))
    img = Image.new("RGB", (W, H), "white")
    bw, bh = round(box.width), round(box.height)
    r_idx = np.minimum((np.arange(bh) + 0.5) * rows / bh, rows - 1).astype(int)
    c_idx = np.minimum((np.arange(bw) + 0.5) * cols / bw, cols - 1).astype(int)
    img.paste(
        Image.fromarray(np.ascontiguousarray(cells[r_idx][:, c_idx])), (round(box.left), round(box.top))
    )
    d = ImageDraw.Draw(img)
    f, px = font(TEXT_PX), TEXT_PX

    def to_x(x: float) -> float:
        return box.left + x / cols * bw

    def to_y(y: float) -> float:
        return box.top + bh - y / rows * bh

    d.rectangle([box.left - 1, box.top - 1, box.left + bw, box.top + bh], outline=FRAME)
    for x, text in x_ticks:
        d.line([(to_x(x), box.top + bh), (to_x(x), box.top + bh + 4)], fill=FRAME)
        d.text((to_x(x), box.top + bh + 0.45 * px), text, fill=INK, font=f, anchor="mt")
    for y, text in y_ticks:
        d.line([(box.left - 5, to_y(y)), (box.left - 1, to_y(y))], fill=FRAME)
        d.text((box.left - 0.5 * px, to_y(y)), text, fill=INK, font=f, anchor="rm")
    for pts, colour, width in lines:  # over frame and ticks: an anchor of 0 runs along the bottom edge
        xy = [(to_x(x), to_y(y)) for x, y in pts]
        if width >= 2:
            d.line(xy, fill=(10, 10, 14), width=width + 2)
        d.line(xy, fill=colour, width=width)
    d.text((box.left + bw / 2, H - 2), x_label, fill=INK, font=f, anchor="md")
    if y_label:
        vertical_text(img, y_label, (0.8 * px, box.top + bh / 2), px)

    # The colour bar: a ramp from bar.lo (bottom) to bar.hi (top), a label at each whole decade.
    x0, x1 = box.left + bw + 0.6 * px, box.left + bw + 0.6 * px + 12
    ramp = bar.lut[np.linspace(len(bar.lut) - 1, 0, bh).round().astype(int)]
    img.paste(
        Image.fromarray(np.ascontiguousarray(np.repeat(ramp[:, None], 12, axis=1))),
        (round(x0), round(box.top)),
    )
    d.rectangle([x0 - 1, box.top - 1, x1, box.top + bh], outline=FRAME)
    for e in range(math.ceil(bar.lo), math.floor(bar.hi) + 1):
        y = box.top + bh - (e - bar.lo) / (bar.hi - bar.lo) * bh
        d.line([(x1, y), (x1 + 3, y)], fill=INK)
        d.text((x1 + 5, min(max(y, box.top + px / 2), box.top + bh - px / 2)), decade_label(e), fill=INK,
               font=f, anchor="lm")  # fmt: skip
    vertical_text(img, bar.label, (W - 0.8 * px, box.top + bh / 2), px)
    return np.asarray(img)
