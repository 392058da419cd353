"""The Teach tab: its defaults show the acceleration, its figure is legible, caps are refused, frames step."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import matplotlib.text
import numpy as np
import pytest

from paratta.metrics import largest_state_distance
from ui import teach
from ui.serve.limits import Caps
from ui.teach import DEFAULTS, EXTENT, Lesson, checked, lesson, next_frame, previous_frame, teach_figure


@pytest.fixture(scope="module")
def default_lesson() -> Lesson:
    request, order = checked(DEFAULTS.prompt, DEFAULTS.seed, DEFAULTS.steps, DEFAULTS.order, Caps(200, 200))
    return lesson(request, order)


def iterations(result: Lesson) -> dict[str, int]:
    return {name: snaps[-1].iteration for name, snaps in result.lanes.items()}


def test_defaults_show_anderson_ahead_of_jacobi_on_the_sequential_path(default_lesson: Lesson) -> None:
    n = iterations(default_lesson)
    assert n["anderson"] < n["jacobi"] < default_lesson.steps
    assert DEFAULTS.order >= 20 and default_lesson.order == min(DEFAULTS.order, DEFAULTS.steps)
    assert all(snaps[-1].converged for snaps in default_lesson.lanes.values())
    line = teach.verdict(default_lesson)
    assert f"Anderson {n['anderson']} vs Jacobi {n['jacobi']} parallel iterations" in line
    assert "both end on the sequential trajectory" in line
    for snaps in default_lesson.lanes.values():
        assert largest_state_distance(snaps[-1].trajectory, default_lesson.sequential) <= default_lesson.tol


def test_verdict_says_when_a_lane_is_off_the_sequential_path(default_lesson: Lesson) -> None:
    moved = default_lesson.sequential + 0.1
    off = Lesson(**{**default_lesson.__dict__, "sequential": moved})
    assert "both end on" not in teach.verdict(off) and "Jacobi ends 1.0e-01 from it" in teach.verdict(off)


def test_frames_start_from_x_T_and_a_finished_lane_stays_on_its_last_iterate(default_lesson: Lesson) -> None:
    first = default_lesson.at(0)
    for snap in first.values():
        assert snap.iteration == 0 and (snap.trajectory == default_lesson.sequential[-1]).all()
    last = default_lesson.at(default_lesson.frames)
    assert last["jacobi"].iteration == default_lesson.frames
    assert last["anderson"] is default_lesson.lanes["anderson"][-1]
    assert default_lesson.at(10**6) == last and default_lesson.at(-3) == first


def test_view_is_zoomed_to_the_sequential_path(default_lesson: Lesson) -> None:
    x_lo, x_hi, y_lo, y_hi = default_lesson.view
    assert x_hi - x_lo == pytest.approx(y_hi - y_lo)  # square: the plane is not distorted
    seq = default_lesson.sequential
    span = (seq.max(axis=0) - seq.min(axis=0)).max()
    assert span >= 0.5 * (x_hi - x_lo) and x_hi - x_lo < 2 * EXTENT  # the path fills the plot
    assert (seq[:, 0] >= x_lo).all() and (seq[:, 0] <= x_hi).all()
    assert (seq[:, 1] >= y_lo).all() and (seq[:, 1] <= y_hi).all()


def test_figure_has_axes_a_legend_and_legible_text(default_lesson: Lesson) -> None:
    fig = teach_figure(default_lesson, 3)
    width, height = fig.get_size_inches() * fig.dpi
    assert 800 <= width <= 900 and height <= 500  # shown at about its own size in the tab
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_xlabel() and len(ax.get_xticklabels()) > 2 and len(ax.get_yticklabels()) > 2
        assert (ax.get_xlim(), ax.get_ylim()) == (default_lesson.view[:2], default_lesson.view[2:])
        assert "iteration 3" in ax.get_title()
    assert fig.legends and len(fig.legends[0].get_texts()) == 6
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    assert texts and min(t.get_fontsize() * fig.dpi / 72 for t in texts) >= 11  # pixels


def test_previous_and_next_step_one_frame_and_stop_at_the_ends(default_lesson: Lesson) -> None:
    n = default_lesson.frames
    slider, fig, text = next_frame(default_lesson, 2)
    assert (
        slider["value"] == 3 and f"Frame 3 of {n}" in text and "iteration 3" in fig.get_axes()[0].get_title()
    )
    assert previous_frame(default_lesson, 2)[0]["value"] == 1
    assert previous_frame(default_lesson, 0)[0]["value"] == 0
    assert next_frame(default_lesson, n)[0]["value"] == n
    assert all(isinstance(v, type(gr.skip())) for v in next_frame(None, 1))
    for garbage in ("x", None, 1.5):  # raw HTTP to the hidden events: nothing changes, no traceback
        assert all(isinstance(v, type(gr.skip())) for v in next_frame(default_lesson, garbage))
        assert all(isinstance(v, type(gr.skip())) for v in previous_frame(default_lesson, garbage))


def test_tab_wires_the_stepping_buttons_and_the_slider() -> None:
    with gr.Blocks() as demo:
        teach.build_teach_tab()
    buttons = {b._id: b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    wired = {buttons.get(t[0]) or t[1]: f for f in demo.fns.values() for t in f.targets}
    assert wired["◀ Previous"].fn is previous_frame and wired["Next ▶"].fn is next_frame
    assert wired["input"].fn is teach.show
    for f in (wired["◀ Previous"], wired["Next ▶"], wired["input"]):
        assert [type(c) for c in f.inputs] == [gr.State, gr.Slider]
        assert [type(c) for c in f.outputs] == [gr.Slider, gr.Plot, gr.Markdown]


def run_all(*args: object) -> list[tuple[object, str, Lesson]]:
    frames: Iterator[tuple[object, str, Lesson]] = teach.teach_run(*args)
    return list(frames)


def test_run_streams_every_frame_and_ends_on_the_verdict() -> None:
    frames = run_all("north", 1, 12, 12)
    result = frames[-1][2]
    assert len(frames) == result.frames + 1
    assert frames[0][1].startswith("Frame 0 of") and "Anderson" in frames[-1][1].splitlines()[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("north", 0, 101, 20), "steps must be at most 100"),
        (("north", 0, 50, 101), "order must be at most 100"),
        (("north", 0, 50, 0), "order must be"),
        (("north", -1, 50, 20), "seed must be"),
        (("north", 0, "x", 20), "steps must be a number"),
        (("up north", 0, 20, 20), "unknown word 'up'"),
    ],
)
def test_space_caps_and_bad_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, args: tuple[object, ...], named: str
) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/paratta")  # the Space's caps: T ≤ 100
    with pytest.raises(gr.Error, match=named):
        run_all(*args)


def test_order_above_T_means_T_and_T_1_runs() -> None:
    request, order = checked("", 0, 10, 50, Caps(200, 200))
    assert order == 10
    one = lesson(*checked("", 0, 1, 1, Caps(200, 200)))
    assert all(snaps[-1].converged for snaps in one.lanes.values())
    assert np.isfinite(one.sequential).all()
