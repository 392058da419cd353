"""The Teach room: three lanes solved by the library, frames that hold every iterate, a player that plays,
pauses and steps, exports, refusals, and the lesson's claims measured on the toys and on toy2d."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import gradio as gr
import matplotlib.text
import numpy as np
import pytest
from PIL import Image

from paratta.metrics import largest_state_distance
from ui import teach
from ui.run.door import positional, validator
from ui.serve.limits import Caps
from ui.teach import draw, lecture, tab, text
from ui.teach.lanes import LANES, VIEWS, Lesson, newly_final

SKIP = type(gr.skip())
D = teach.DEFAULTS
DEFAULTS = (D.prompt, D.seed, D.steps, D.order, D.family, D.history, D.lam, VIEWS[0])  # /teach's inputs


@pytest.fixture(scope="module")
def default_lesson() -> Lesson:
    return lecture.default_lesson()


def test_defaults_show_taa_ahead_of_one_gamma_ahead_of_jacobi(default_lesson: Lesson) -> None:
    n = lecture.iterations(default_lesson)
    assert n["anderson"] < n["anderson-global"] < n["jacobi"] < default_lesson.steps
    assert default_lesson.order == default_lesson.steps  # k = T, where the acceleration shows
    assert all(snaps[-1].converged for snaps in default_lesson.lanes.values())
    line = text.verdict(default_lesson)
    head = f"TAA {n['anderson']} · global Anderson {n['anderson-global']} · Jacobi {n['jacobi']}"
    assert head in line and "all three end on the sequential trajectory" in line
    assert "sequential DDIM: 50 steps" in line
    for snaps in default_lesson.lanes.values():
        assert largest_state_distance(snaps[-1].trajectory, default_lesson.sequential) <= default_lesson.tol


def test_every_lane_is_the_librarys_solver_on_the_same_problem(default_lesson: Lesson) -> None:
    from dataclasses import replace

    from paratta import Request, load_model, make_problem, solve

    problem = make_problem(load_model("toy2d"), Request("north", seed=0, steps=50))
    for name in LANES:
        records = list(solve(problem, replace(default_lesson.config, solver=name)))
        snaps = default_lesson.lanes[name][1:]
        assert len(records) == len(snaps)
        assert all(
            np.array_equal(r.trajectory.numpy(), s.trajectory) for r, s in zip(records, snaps, strict=True)
        )


def test_verdict_says_when_a_lane_is_off_the_sequential_path(default_lesson: Lesson) -> None:
    off = Lesson(**{**default_lesson.__dict__, "sequential": default_lesson.sequential + 0.1})
    line = text.verdict(off)
    assert "all three end on" not in line and "Jacobi ends 1.0e-01 from it" in line


def test_one_step_is_said_in_the_singular() -> None:
    one = lecture.default_lesson(steps=1, order=1)
    assert all(snaps[-1].converged for snaps in one.lanes.values())
    assert "sequential DDIM: 1 step ·" in text.verdict(one) and "1 steps" not in text.verdict(one)


def test_frames_start_from_x_T_and_a_finished_lane_stays_on_its_last_iterate(default_lesson: Lesson) -> None:
    first = default_lesson.at(0)
    for snap in first.values():
        assert snap.iteration == 0 and (snap.trajectory == default_lesson.sequential[-1]).all()
    last = default_lesson.at(default_lesson.frames)
    assert last["jacobi"].iteration == default_lesson.frames
    assert last["anderson"] is default_lesson.lanes["anderson"][-1]
    assert default_lesson.at(10**6) == last and default_lesson.at(-3) == first


def red_marker_pixels(image: np.ndarray) -> int:
    """Pixels of the iterate's x_0 marker (``draw.X0``) in a drawn plane."""
    r, g, b = (int(draw.X0[i : i + 2], 16) for i in (1, 3, 5))
    return int((np.abs(image.astype(int) - [r, g, b]).sum(axis=-1) < 40).sum())


@pytest.mark.parametrize("mode", VIEWS)
def test_every_iterate_of_every_frame_is_inside_its_drawn_view(default_lesson: Lesson, mode: str) -> None:
    """Jacobi's early iterates go tens of units off the ring: each view still holds every state, on the
    axes as drawn, and the iterate's x_0 marker is on the picture."""
    for k in range(default_lesson.frames + 1):
        for name in LANES:
            fig = draw.plane_panel(default_lesson, name, k, mode)
            ax = fig.get_axes()[0]
            (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
            assert x_hi - x_lo == pytest.approx(y_hi - y_lo)  # square: the plane is not distorted
            for points in (default_lesson.at(k)[name].trajectory, default_lesson.sequential):
                assert (points[:, 0] > x_lo).all() and (points[:, 0] < x_hi).all(), (name, k)
                assert (points[:, 1] > y_lo).all() and (points[:, 1] < y_hi).all(), (name, k)
            if k in (1, 3, default_lesson.frames):  # the marker, drawn (the pixels cost a render)
                assert red_marker_pixels(draw.pixels(fig)) > 30, (name, k, mode)


def test_follow_zooms_in_as_the_lane_converges(default_lesson: Lesson) -> None:
    early, late = (default_lesson.view("jacobi", k) for k in (3, default_lesson.frames))
    assert early[1] - early[0] > 10 * (late[1] - late[0])
    whole = default_lesson.view("jacobi", 3, "whole run")
    assert whole == default_lesson.view("anderson", 0, "whole run")  # one view for every lane and frame


def test_panels_are_legible_at_the_size_the_page_shows_them(default_lesson: Lesson) -> None:
    images = draw.panels(default_lesson, 3)
    assert [im.shape for im in images] == [(420, 420, 3)] * 3 + [(draw.CHART_PX, draw.CHART_PX, 3)]
    fig = draw.plane_panel(default_lesson, "anderson", 3)
    ax = fig.get_axes()[0]
    assert ax.get_xlabel() and len(ax.get_xticklabels()) > 2 and "iteration 3" in ax.get_title()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    assert min(t.get_fontsize() * fig.dpi / 72 for t in texts) >= 16  # ≥ 11 px shown at two thirds


def test_the_residual_chart_draws_the_run_so_far(default_lesson: Lesson) -> None:
    start, later = draw.residual_chart(default_lesson, 0, 320), draw.residual_chart(default_lesson, 5, 320)
    solid = tuple(int(draw.LANE_COLOURS["anderson"][i : i + 2], 16) for i in (1, 3, 5))

    def count(image: np.ndarray) -> int:
        return int((np.abs(image.astype(int) - solid).sum(axis=-1) < 30).sum())

    assert count(later) > count(start) + 100  # TAA's solid curve up to frame 5 (the legend has it in both)


def test_show_previous_next_step_one_frame_and_stop_at_the_ends(default_lesson: Lesson) -> None:
    n = default_lesson.frames
    out = tab.next_frame(default_lesson, 2, "follow")
    assert out[0]["value"] == 3 and f"Frame 3 of {n}" in out[5] and out[6]["frame"] == 3
    assert tab.previous_frame(default_lesson, 2, "follow")[0]["value"] == 1
    assert tab.previous_frame(default_lesson, 0, "follow")[0]["value"] == 0
    assert tab.next_frame(default_lesson, n, "follow")[0]["value"] == n
    assert all(isinstance(v, SKIP) for v in tab.next_frame(None, 1, "follow"))
    for garbage in ("x", None, 1.5):  # raw HTTP to the hidden events: nothing changes, no traceback
        assert all(isinstance(v, SKIP) for v in tab.next_frame(default_lesson, garbage, "follow"))
        assert all(isinstance(v, SKIP) for v in tab.show(default_lesson, garbage, "follow"))
    assert all(isinstance(v, SKIP) for v in tab.show(default_lesson, 1, "zoom"))


def test_the_player_plays_one_frame_per_tick_and_pauses_on_the_last(default_lesson: Lesson) -> None:
    n = default_lesson.frames
    out = tab.advance(default_lesson, 4, "follow")
    timer, play, playing = out[-3:]
    assert out[0]["value"] == 5 and timer["active"] is True and play["value"] == tab.PAUSE and playing is True
    out = tab.advance(default_lesson, n - 1, "follow")
    assert out[0]["value"] == n and out[-3]["active"] is False and out[-2]["value"] == tab.PLAY
    assert out[-1] is False


def test_play_pauses_resumes_and_starts_again_from_the_last_frame(default_lesson: Lesson) -> None:
    paused = tab.toggle(default_lesson, 6, True, 2.0, "follow")
    assert isinstance(paused[0], SKIP) and paused[-3]["active"] is False and paused[-1] is False
    resumed = tab.toggle(default_lesson, 6, False, 2.0, "follow")
    assert resumed[-3] == {"__type__": "update", "value": 0.5, "active": True} and resumed[-1] is True
    again = tab.toggle(default_lesson, default_lesson.frames, False, 4.0, "follow")
    assert again[0]["value"] == 0 and again[-3]["value"] == 0.25 and "Frame 0 of" in again[5]


def test_a_failed_run_leaves_the_last_run_to_step_through_paused(default_lesson: Lesson) -> None:
    slider, *_, timer, play, playing, go = tab.unlocked(default_lesson)
    assert slider["interactive"] and timer["active"] is False and play["value"] == tab.PLAY and not playing
    assert go.value == tab.RUN_LABEL
    slider, *_, play, playing, go = tab.unlocked(None)
    assert slider["interactive"] is False and play["interactive"] is False


def test_exports_write_the_frame_as_png_and_the_run_as_gif(
    default_lesson: Lesson, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (png,) = tab.export_frame(default_lesson, 3, "follow")
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 3 * image.height > 3 * 400
    (gif,) = tab.export_run(default_lesson, "whole run")
    animation = Image.open(gif)
    assert animation.format == "GIF" and animation.n_frames == default_lesson.frames + 1
    assert isinstance(tab.export_frame(None, 3, "follow"), SKIP)
    assert isinstance(tab.export_frame(default_lesson, "x", "follow"), SKIP)


def test_run_solves_once_and_shows_frame_0() -> None:
    outputs = list(teach.teach_run("north", 1, 12, 12, "ddim", 3, "1e-2", "whole run"))
    assert len(outputs) == 1
    *images, summary, numbers, result = outputs[0]
    assert len(images) == 4 and summary.startswith("### **Parallel iterations")
    assert numbers["frame"] == 0 and numbers["view"] == "whole run" and set(numbers["lanes"]) == set(LANES)
    assert result.config.history == 3 and result.config.lam == pytest.approx(1e-2)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("north", 0, 101, 20), "steps must be at most 100"),
        (("north", 0, 50, 101), "order must be at most 100"),
        (("north", 0, 50, 0), "order must be"),
        (("north", -1, 50, 20), "seed must be"),
        (("north", 0, "x", 20), "steps must be a number"),
        (("north", 0, 20, 20, "ddim", 0), "history must be"),
        (("north", 0, 20, 20, "ddim", 2, "-1"), "lam must be"),
        (("north", 0, 20, 20, "ddim", 2, "a lot"), "lam must be a number"),
        (("north", 0, 20, 20, "ddim", 2, 1e-3, "zoom"), "view must be one of"),
        (("up north", 0, 20, 20), "unknown word 'up'"),
    ],
)
def test_space_caps_and_bad_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...], named: str
) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/paratta")  # the Space's caps: T ≤ 100
    every = (*args, *DEFAULTS[len(args) :])  # as the page sends them: every input
    answer = validator(positional(tab.teach_run), tab.at_the_door)(*every)
    said = [a["message"] for a in answer if not a["is_valid"]]
    assert len(said) == 1 and re.search(named, said[0]), answer  # at the door, on one input
    if "unknown word" not in named:  # the handler refuses the rest too (a call that skips the door)
        with pytest.raises(gr.Error, match=named):
            list(teach.teach_run(*args))


def test_order_above_T_means_T() -> None:
    request, config = teach.checked("", 0, 10, 50, Caps(200, 200))
    assert config.order == 10 and config.window == 10 and request.steps == 10


def test_tab_wires_the_player_the_stepping_and_the_exports() -> None:
    with gr.Blocks() as demo:
        teach.build_teach_tab()
    buttons = {b._id: b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    wired = {(buttons.get(t[0]) or t[1]): f.fn for f in demo.fns.values() for t in f.targets}
    assert wired[tab.PLAY] is tab.toggle and wired["◀"] is tab.previous_frame and wired["▶"] is tab.next_frame
    assert (
        wired["Export this frame (PNG)"] is tab.export_frame
        and wired["Export the run (GIF)"] is tab.export_run
    )
    assert wired["tick"] is tab.advance and wired["input"] is tab.show
    assert any(isinstance(b, gr.Timer) and not b.active for b in demo.blocks.values())
    assert "teach-room', true" in tab.room_js(True) and "teach-room', false" in tab.room_js(False)


def test_the_lesson_is_linked_where_it_can_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/paratta")
    assert "https://huggingface.co/spaces/someone/paratta/blob/main/docs/teach.md" in text.lesson_link()
    monkeypatch.setenv("SPACE_ID", "../../x y")
    assert "http" not in text.lesson_link()


# The lesson's claims (docs/teach.md), each measured.


def test_lesson_fixed_point_rate_and_secant() -> None:
    s = lecture.scalar()
    assert s.rate() == pytest.approx(s.slope, rel=2e-3) and s.secant_gap < 1e-14
    assert lecture.toys.steps_to(s.anderson, 1e-10) < lecture.toys.steps_to(s.picard, 1e-10) / 5


def test_lesson_anderson_with_every_difference_is_gmres_shifted() -> None:
    lin = lecture.linear()
    assert lin.shift_gap < 1e-10
    full = lecture.toys.steps_to(lin.anderson["every difference (m = ∞)"], 1e-8)
    assert full <= lin.size + 1 < lecture.toys.steps_to(lin.anderson["m = 5"], 1e-8)


def test_lesson_each_jacobi_iteration_makes_at_least_one_more_state_final(default_lesson: Lesson) -> None:
    assert min(lecture.least_gain(default_lesson).values()) >= 1
    jacobi = default_lesson.lanes["jacobi"]
    assert sum(newly_final(jacobi)) == default_lesson.steps  # ... and the staircase reaches T


def test_lesson_a_large_lambda_switches_anderson_off() -> None:
    n = lecture.iterations(lecture.default_lesson(lam=1000.0))
    assert n["anderson"] == n["anderson-global"] == n["jacobi"]


@pytest.mark.slow
def test_lesson_one_gamma_per_timestep_beats_one_gamma_for_the_window() -> None:
    rows = lecture.histories(ms=(1, 2, 3), seeds=(0, 1, 2))
    assert len(set(rows[1]["counts"]["anderson"] + rows[1]["counts"]["jacobi"])) == 1  # m = 1: no Anderson
    for m in (2, 3):
        assert rows[m]["wins"] == 3, rows[m]
        assert (
            rows[m]["median"]["anderson"] < rows[m]["median"]["anderson-global"] < rows[m]["median"]["jacobi"]
        )


def test_the_frame_png_is_what_the_export_writes(default_lesson: Lesson) -> None:
    image = Image.open(io.BytesIO(draw.png(default_lesson, 4)))
    assert image.size[0] > 4 * 400 and image.size[1] > 420
