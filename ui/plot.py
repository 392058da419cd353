"""A small log-scale line chart drawn with PIL straight into a numpy image.

Matplotlib needs ~0.1–0.2 s per figure on a busy 2-core CPU; this takes a few milliseconds, which
keeps the per-iteration UI work far below the solver's own time. Drawn at 2× and downsampled for
anti-aliasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SS = 2  # supersampling factor
INK, GRID, FRAME = (40, 44, 52), (226, 229, 234), (150, 155, 165)


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    colour: tuple[int, int, int]
    dashed: bool = False


@lru_cache(maxsize=4)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


def decades(values: np.ndarray, floor: float | None) -> tuple[int, int]:
    """Whole decades [lo, hi] covering the positive finite values (and ``floor`` if given)."""
    v = values[np.isfinite(values) & (values > 0)]
    if floor is not None:
        v = np.append(v, floor)
    if not v.size:
        return -3, 0
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    return lo, max(hi, lo + 1)


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


def log_chart(
    series: Sequence[Series],
    *,
    hline: float | None = None,
    hline_label: str = "",
    vline: float | None = None,
    x_label: str = "parallel iteration",
    y_label: str = "",
    size: tuple[int, int] = (520, 330),
) -> np.ndarray:
    """Lines (log y) with decade grid, integer x ticks, a legend; uint8 (H, W, 3)."""
    W, H = size[0] * SS, size[1] * SS
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, small = font(12 * SS), font(11 * SS)
    left, right, top, bottom = 58 * SS, W - 12 * SS, 12 * SS, H - 40 * SS
    ys = np.concatenate([np.asarray(s.y, dtype=float) for s in series]) if series else np.zeros(0)
    lo, hi = decades(ys, hline / 10 if hline else None)
    x_max = max([max(s.x) for s in series if len(s.x)] + [5])

    def px(x: float) -> float:
        return left + (x - 1) / max(x_max - 1, 1) * (right - left)

    def py(y: float) -> float:
        y = min(max(y, 10.0**lo), 10.0**hi)
        return bottom - (math.log10(y) - lo) / (hi - lo) * (bottom - top)

    every = max(1, (hi - lo + 5) // 6)
    for e in range(lo, hi + 1):
        y = py(10.0**e)
        d.line([(left, y), (right, y)], fill=GRID, width=SS)
        if (e - lo) % every == 0:
            label = f"1e{e:+d}".replace("+", "")
            d.text((left - 6 * SS, y), label, fill=INK, font=small, anchor="rm")
    step = max(1, math.ceil(x_max / 10))
    for x in range(1, int(x_max) + 1, step):
        d.line([(px(x), bottom), (px(x), bottom + 4 * SS)], fill=FRAME, width=SS)
        d.text((px(x), bottom + 6 * SS), str(x), fill=INK, font=small, anchor="mt")
    d.rectangle([left, top, right, bottom], outline=FRAME, width=SS)
    d.text(((left + right) / 2, H - 4 * SS), x_label, fill=INK, font=f, anchor="md")
    if y_label:
        label = Image.new("RGB", (int(d.textlength(y_label, font=f)) + 4, 16 * SS), "white")
        ImageDraw.Draw(label).text((2, 0), y_label, fill=INK, font=f)
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (2 * SS, int((top + bottom) / 2 - rotated.height / 2)))
    if hline is not None:
        dashed_line(d, [(left, py(hline)), (right, py(hline))], FRAME, SS, dash=4 * SS)
    if vline is not None:
        d.line([(px(vline), top), (px(vline), bottom)], fill=(90, 95, 105), width=SS)
    for s in series:
        pts = [(px(x), py(y)) for x, y in zip(s.x, s.y, strict=True) if np.isfinite(y)]
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
    entries = [(s.label, s.colour, s.dashed) for s in series]
    if hline_label:
        entries.append((hline_label, FRAME, True))
    if entries:
        line_h = 15 * SS
        width = max(d.textlength(t, font=small) for t, _, _ in entries) + 34 * SS
        x0, y0 = right - width - 6 * SS, top + 6 * SS
        d.rectangle(
            [x0, y0, x0 + width, y0 + line_h * len(entries) + 6 * SS],
            fill=(255, 255, 255),
            outline=GRID,
            width=SS,
        )
        for i, (text, colour, dashed) in enumerate(entries):
            y = y0 + 3 * SS + line_h * i + line_h / 2
            seg = [(x0 + 6 * SS, y), (x0 + 26 * SS, y)]
            if dashed:
                dashed_line(d, seg, colour, 2 * SS, dash=5 * SS)
            else:
                d.line(seg, fill=colour, width=2 * SS)
            d.text((x0 + 30 * SS, y), text, fill=INK, font=small, anchor="lm")
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS))
