"""The app's pure render functions: heatmap, difference map, CSV/JSON history, GIF, previews."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from ui.view.plot import TEXT_PX, LegendEntry, int_ticks, legend_layout, matrix_box, nice_step
from ui.view.record import IterationRow, RunRecord
from ui.view.render import (
    CHART_SIZE,
    COLOURS,
    EMPTY,
    FINAL,
    FRONTIER,
    HEATMAP_SIZE,
    LUT,
    PENDING,
    WINDOW,
    convergence_chart,
    difference_map,
    gif_bytes,
    heatmap_scale,
    history_csv,
    history_json,
    residual_heatmap,
    shrink,
    staircase,
    to_uint8,
    upscale,
)

DARK = 120  # a pixel darker than this in every channel is ink (text) on the white margins


def cell(img: np.ndarray, T: int, cols: int, iteration: int, step: int) -> np.ndarray:
    """Centre pixel of the heatmap cell for (iteration j, 0-based; step i)."""
    box = matrix_box((img.shape[1], img.shape[0]))
    x = box.left + (iteration + 0.5) * round(box.width) / cols
    y = box.top + (T - 1 - step + 0.5) * round(box.height) / T
    return img[int(y), int(x)]


def ink_rows(region: np.ndarray) -> np.ndarray:
    """Row indices of ``region`` that hold text (dark pixels)."""
    return np.where((region < DARK).all(axis=-1).any(axis=1))[0]


def test_heatmap_shape_log_scale_and_nan_regions() -> None:
    T, tol = 10, 1e-3
    res = np.full((3, T), np.nan)
    res[0, 4:10] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1.0]  # window [4, 10)
    res[1, 2:7] = 1e-2  # window [2, 7): steps >= 7 final
    res[2, 0:3] = 1e-3
    anchors, windows = [7, 3, 0], [(4, 10), (2, 7), (0, 3)]
    img, scale = residual_heatmap(res, anchors, windows, tol, min_columns=4, size=(400, 300))
    assert img.dtype == np.uint8 and img.shape == (300, 400, 3)
    assert (scale.lo, scale.hi) == (-4.0, 0.0)
    # Log scale: decades are evenly spaced along the lookup table, 1e-4 → darkest, 1 → brightest.
    for step, expected in [(4, 0), (5, 64), (6, 128), (7, 191), (8, 255)]:
        assert tuple(cell(img, T, 4, 0, step)) == tuple(LUT[expected]), step
    assert tuple(cell(img, T, 4, 0, 1)) == tuple(PENDING)  # below the window: not reached
    assert tuple(cell(img, T, 4, 1, 8)) == tuple(FINAL)  # above the window: final
    assert tuple(cell(img, T, 4, 3, 5)) == tuple(EMPTY)  # a column still to come
    # The window's lower edge (step 4 in iteration 1, step 2 in iteration 2) is drawn; none at 0.
    box = matrix_box((400, 300))
    for j, lo in [(0, 4), (1, 2)]:
        y, x = (
            int(box.top + (T - lo) * round(box.height) / T),
            int(box.left + (j + 0.5) * round(box.width) / 4),
        )
        assert (img[y - 1 : y + 2, x] == WINDOW).all(axis=-1).any(), j


def test_heatmap_draws_the_records_anchors_not_a_tolerance_threshold() -> None:
    T, size = 8, (400, 300)
    res = np.full((2, T), 1e-2)  # every residual far above tol: colour says "not converged"
    img, scale = residual_heatmap(res, [5, 0], [(0, 8), (0, 5)], 1e-3, min_columns=2, size=size)
    box = matrix_box(size)
    cw, ch = round(box.width) / 2, round(box.height) / T
    # Anchor 5 after iteration 1: the staircase runs along the edge between step 5 and step 4.
    y = int(box.top + (T - 5) * ch)
    row = img[y - 1 : y + 2, int(box.left + cw * 0.3) : int(box.left + cw * 0.9)]
    assert (row == FRONTIER).all(axis=-1).any(axis=0).all()
    assert not (img[int(y + ch / 2), int(box.left + cw / 2)] == FRONTIER).all()
    # Anchor 0 after iteration 2: the staircase reaches the bottom edge in the second column.
    bottom = img[
        int(box.bottom) - 2 : int(box.bottom) + 1, int(box.left + cw * 1.3) : int(box.left + cw * 1.9)
    ]
    assert (bottom == FRONTIER).all(axis=-1).any(axis=0).all()
    # The colour bar is the colour map alone: no mark at the tolerance (which is not the rule applied).
    bar = img[
        int(box.top) : int(box.bottom),
        int(box.right + 0.6 * TEXT_PX) + 2 : int(box.right + 0.6 * TEXT_PX) + 10,
    ]
    lut = {tuple(c) for c in LUT}
    assert all(tuple(px) in lut for px in bar.reshape(-1, 3))


def test_staircase_follows_the_anchors() -> None:
    assert staircase([7, 3, 0], 10) == [
        (0, 10),
        (0, 7),
        (1, 7),
        (1, 7),
        (1, 3),
        (2, 3),
        (2, 3),
        (2, 0),
        (3, 0),
    ]
    assert staircase([], 10) == []


def test_heatmap_has_tick_labels_on_both_axes_and_the_colour_bar() -> None:
    T, size = 50, HEATMAP_SIZE
    res = np.full((4, T), 1e-2)
    img, scale = residual_heatmap(res, [40, 30, 20, 10], [(0, 50)] * 4, 1e-3, size=size)
    box = matrix_box(size)
    assert img.shape == (size[1], size[0], 3)
    # y ticks: text left of the matrix beside every tick (steps 0, 10, …, 40).
    left = img[:, int(box.left) - 2 * TEXT_PX : int(box.left) - 4]
    for i in range(0, T, 10):
        y = int(box.top + (T - 1 - i + 0.5) * round(box.height) / T)
        assert ink_rows(left[y - 4 : y + 5]).size, i
    # x ticks: text under the matrix, at least as tall as an 11 px font's digits (~0.73 em).
    under = img[
        int(box.bottom) + 2 : int(box.bottom) + 2 + int(1.4 * TEXT_PX), int(box.left) : int(box.right)
    ]
    rows = ink_rows(under)
    assert rows.size and rows.max() - rows.min() + 1 >= 0.73 * 11
    # Colour bar: a decade label at each whole decade of the scale.
    right = img[:, int(box.right + 0.6 * TEXT_PX) + 14 : size[0] - 2 * TEXT_PX]
    for e in range(int(scale.lo), int(scale.hi) + 1):
        y = box.bottom - (e - scale.lo) / (scale.hi - scale.lo) * round(box.height)
        y = int(min(max(y, box.top + TEXT_PX / 2), box.bottom - TEXT_PX / 2))
        assert ink_rows(right[y - 4 : y + 5]).size, e
    assert TEXT_PX >= 11


@pytest.mark.parametrize("size", [(420, 330), (280, 340), (600, 300)])
def test_charts_take_the_size_they_are_given(size: tuple[int, int]) -> None:
    img, _ = residual_heatmap(np.full((3, 20), 1e-2), [15, 8, 0], [(0, 20)] * 3, 1e-3, size=size)
    assert img.shape == (size[1], size[0], 3)
    chart = convergence_chart({"jacobi": ([1, 2], [1.0, 0.1], [0.5, 0.05])}, 1e-3, size=size)
    assert chart.shape == (size[1], size[0], 3)


def test_ticks_are_few_and_round() -> None:
    assert [nice_step(s, 6) for s in (4, 9, 20, 49, 99, 199)] == [1, 2, 5, 10, 20, 50]
    assert int_ticks(0, 49, 6) == [0, 10, 20, 30, 40]
    assert int_ticks(1, 10, 6) == [1, 3, 5, 7, 9]
    assert int_ticks(1, 40, 5) == [1, 10, 20, 30, 40]


def test_heatmap_all_nan_and_zero_residuals_do_not_crash() -> None:
    res = np.full((1, 5), np.nan)
    res[0, 0] = 0.0
    img, scale = residual_heatmap(res, [0], [(0, 1)], 1e-3)
    assert img.shape[2] == 3 and np.isfinite(scale.lo) and scale.hi > scale.lo
    empty, _ = residual_heatmap(np.zeros((0, 5)), [], [], 1e-3)
    assert tuple(cell(empty, 5, 10, 5, 2)) == tuple(EMPTY)


def test_heatmap_scale_is_decade_aligned() -> None:
    s = heatmap_scale(np.array([[3e-5, 0.4, np.nan]]), 1e-3)
    assert (s.lo, s.hi) == (-4.0, 0.0)
    assert "1e-4" in s.caption() and "1e+0" in s.caption()


def test_difference_map_amplifies_and_reports_max() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0] = 51  # 0.2 of the range
    img, max_diff = difference_map(a, b, gain=2.0)
    assert max_diff == pytest.approx(0.2)
    assert tuple(img[1, 2]) == tuple(LUT[round(0.4 * 255)])
    assert tuple(img[0, 0]) == tuple(LUT[0])
    with pytest.raises(ValueError):
        difference_map(a, np.zeros((2, 2, 3), np.uint8))


def test_preview_conversions() -> None:
    x = np.linspace(0, 1, 3 * 8 * 8).reshape(3, 8, 8)
    u = to_uint8(x)
    assert u.shape == (8, 8, 3) and u.dtype == np.uint8 and u.max() == 255 and u.min() == 0
    assert upscale(u, 64).shape == (64, 64, 3) and (upscale(u, 64)[::8, ::8] == u).all()
    assert shrink(np.zeros((512, 512, 3), np.uint8), 128).shape == (128, 128, 3)


def _record(T: int = 4) -> RunRecord:
    from paratta import Request, SolverConfig
    from ui.view.record import RunSettings

    settings = RunSettings("shapes-unet", Request("red circle", steps=T), SolverConfig(solver="anderson"))
    rec = RunRecord(settings=settings, steps=T, tol=1e-3, latent_shape=(3, 2, 2))
    rec.rows = [
        IterationRow(1, (0, 4), 2, 4, 0.5, 0.3, 0.2, np.array([0.1, 0.2, 0.3, 0.05])),
        IterationRow(2, (0, 2), 0, 6, 0.75, 1e-4, 5e-5, np.array([1e-4, 2e-5, np.nan, np.nan]), True),
    ]
    rec.sequential_seconds = 0.25
    return rec


def test_csv_round_trip() -> None:
    rec = _record()
    rows = list(csv.DictReader(io.StringIO(history_csv(rec.rows))))
    assert len(rows) == 2
    assert rows[1]["iteration"] == "2" and rows[1]["anchor"] == "0" and rows[1]["window_hi"] == "2"
    assert float(rows[0]["r_2"]) == 0.3 and rows[1]["r_2"] == ""
    assert float(rows[1]["max_residual"]) == 1e-4 and float(rows[1]["distance_to_sequential"]) == 5e-5
    back = np.array([[float(r[f"r_{i}"]) if r[f"r_{i}"] else np.nan for i in range(4)] for r in rows])
    np.testing.assert_array_equal(back, rec.residual_matrix())


def test_json_round_trip() -> None:
    rec = _record()
    doc = json.loads(history_json(rec))
    assert doc["steps"] == 4 and doc["converged"] is True and doc["settings"]["solver"] == "anderson"
    assert doc["sequential"] == {"seconds": 0.25, "evaluations": 4}
    assert [it["iteration"] for it in doc["iterations"]] == [1, 2]
    assert doc["iterations"][1]["residual"] == [1e-4, 2e-5, None, None]
    assert doc["iterations"][0]["window"] == [0, 4]


def test_gif_has_one_frame_per_preview() -> None:
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 80, 160, 240)]
    gif = Image.open(io.BytesIO(gif_bytes(frames, target=32)))
    assert gif.n_frames == 4 and gif.size == (32, 32)
    with pytest.raises(ValueError):
        gif_bytes([])


def test_convergence_chart_draws_each_solver_in_its_colour() -> None:
    series = {"jacobi": ([1, 2, 3], [1.0, 0.1, 1e-4], [0.5, 0.05, 0.0]), "anderson": ([1], [1.0], [0.5])}
    img = convergence_chart(series, 1e-3, marker=2)
    assert img.shape == (CHART_SIZE[1], CHART_SIZE[0], 3) and img.dtype == np.uint8
    for colour in COLOURS[:2]:
        close = np.abs(img.astype(int) - colour).sum(-1) < 30
        assert close.sum() > 25, colour  # a one-point series: its dot and its legend stroke
    assert not (np.abs(img.astype(int) - COLOURS[2]).sum(-1) < 30).any()  # no third solver
    # Log scale: the jacobi residual falls 4 decades, so its line spans most of the plot height.
    rows = np.where((np.abs(img.astype(int) - COLOURS[0]).sum(-1) < 30).any(1))[0]
    assert rows.max() - rows.min() > 0.6 * img.shape[0]


def test_legend_keeps_a_one_solver_chart_to_one_row_and_wraps_when_narrow() -> None:
    key = [LegendEntry("max residual", COLOURS[0]), LegendEntry("distance to sequential", COLOURS[0], True)]
    assert [len(r) for r in legend_layout(key, CHART_SIZE[0] - 12, TEXT_PX)] == [2]
    assert [len(r) for r in legend_layout(key, 150, TEXT_PX)] == [1, 1]


def test_the_tolerance_line_says_what_each_rule_bounds() -> None:
    """One rule per chart: its tolerance line names the quantity the rule bounds (the label is drawn,
    so the chart differs from an unlabelled one); every stopping rule has its quantity."""
    from paratta.config import STOPPINGS
    from ui.view.views import BOUNDS

    assert set(BOUNDS) == set(STOPPINGS)
    series = {"anderson": ([1, 2, 3], [1.0, 0.1, 1e-3], [0.5, 0.05, 1e-4])}
    plain = convergence_chart(series, 1e-3)
    for words in BOUNDS.values():
        assert not np.array_equal(convergence_chart(series, 1e-3, bounds=words), plain)
