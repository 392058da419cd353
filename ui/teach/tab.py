"""The Teach room's page: its own controls, the player, the panels, the exports; every event's wiring.

Run solves the three lanes (``lanes.lesson``) and shows frame 0; the player then plays the frames on a
``gr.Timer`` at the chosen speed, one parallel iteration per tick, until the last frame or Pause.
Previous, Next and the frame slider step by hand; the view (follow / whole run) redraws the frame
shown. Nothing is recomputed: every frame is drawn from the lanes' records. Export writes the frame
shown as a PNG, or the whole run as a GIF, into the session's download folder (``ui.cache``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..run.door import frame_check, guarded, positional, validator
from ..run.settings import frame_index
from ..serve.cache import session_folder
from ..serve.jobs import JOBS
from ..serve.keep import Kept
from ..serve.limits import Caps
from ..view.controls import CHOICE_LABELS
from . import draw
from .lanes import DEFAULTS, FAMILIES, MODEL, REQUEST, SOLVER, VIEWS, Lesson, checked, lesson
from .text import EXPLANATION, INTRO, lesson_link, numbers, settings_note, summary

RUN_LABEL = "Run the three solvers"
PLAY, PAUSE = "▶ Play", "❚❚ Pause"
SPEEDS = (0.5, 1.0, 2.0, 4.0)  # frames per second
LAMS = tuple(f"{v:g}" for v in (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1000.0))  # offered; any number can be typed
PANEL_IDS = ("teach-jacobi", "teach-global", "teach-taa", "teach-residuals")
FRAMES_QUEUE = "teach-frames"  # stepping, playing and exports: never behind a sampler job in the queue
# The image sidebar's id twice: Gradio prefixes the page's rules (its phone rule for #sidebar among them)
# with three classes, which a body class and one id would not outrank.
CSS = """
body.teach-room #sidebar#sidebar, body.teach-room #presets#presets, body.teach-room .image-room.image-room {
  display: none !important}
#teach-panels {flex-wrap: wrap; gap: 6px}
#teach-panels > div {min-width: 260px}
#teach-verdict h3 {font-size: 1.1em; margin: 0 0 2px 0}
#teach-verdict p {font-size: 0.9em; margin: 0}
"""


def room_js(teaching: bool) -> str:
    """The script a tab's select runs: the Teach tab hides the image sidebar and the presets (``CSS``)."""
    return f"() => {{ document.body.classList.toggle('teach-room', {'true' if teaching else 'false'}); }}"


def as_view(view: Any) -> str:
    if not isinstance(view, str) or view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}; got {view!r}"[:200])
    return view


def refuse(err: Exception) -> gr.Error:
    """The error a gradio_client caller gets; the page reads it in the verdict line (no toast)."""
    return gr.Error(str(err), print_exception=False, visible=False)


def frame(result: Lesson, k: int, mode: str) -> tuple[Any, ...]:
    """Frame k: the three planes and the residual chart, the text, the numbers."""
    return (*draw.panels(result, k, mode), summary(result, k), numbers(result, k, mode))


def teach_run(
    prompt: Any,
    seed: Any,
    steps: Any,
    order: Any,
    family: Any = DEFAULTS.family,
    history: Any = DEFAULTS.history,
    lam: Any = DEFAULTS.lam,
    view: Any = VIEWS[0],
    request: gr.Request = None,
) -> Iterator[tuple[Any, ...]]:
    """Solve the three lanes, then show frame 0 (the page's player plays the rest). Like Run and Race,
    one job per session (``ui.jobs``): it replaces the session's running one."""
    try:
        lesson_request, config = checked(prompt, seed, steps, order, Caps.from_env(), family, history, lam)
        mode = as_view(view)
        ticket = JOBS.begin(request, Caps.from_env())
        try:
            result = lesson(lesson_request, config)  # toy2d: T ≤ the cap costs about a second
        finally:
            ticket.end()
    except ValueError as err:
        skip = (gr.skip(),) * len(PANEL_IDS)
        yield *skip, f"**Not run:** {err}", gr.skip(), gr.skip()  # the last run stays on the page
        raise refuse(err) from None
    yield *frame(result, 0, mode), Kept(ticket.session, result)  # counted in the sessions' byte budget


def held(result: Kept | Lesson | None) -> Lesson | None:
    """The lesson a session keeps (``Expired``, said to the visitor, once the byte budget evicted it)."""
    return result.get() if isinstance(result, Kept) else result


def at_the_door(named: dict[str, Any]) -> None:
    """/teach's checks before it joins the queue (``ui.door``): the settings, the view, the words."""
    settings = (named[n] for n in ("prompt", "seed", "steps", "order"))
    request, _ = checked(*settings, Caps.from_env(), named["family"], named["history"], named["lam"])
    as_view(named["view"])
    from paratta import load_model

    load_model(MODEL).encode(request.prompt)  # its words: a parse, no network


def clamp(result: Kept | Lesson | None, k: Any) -> int | None:
    result = held(result)
    k = frame_index(k)
    return None if result is None or k is None else min(max(k, 0), result.frames)


def show(result: Kept | Lesson | None, k: Any, view: Any) -> tuple[Any, ...]:
    """(slider, frame k) clamped to the run: for the slider, previous, next and the view."""
    result = held(result)
    k = clamp(result, k)
    if k is None or view not in VIEWS:
        return (gr.skip(),) * (3 + len(PANEL_IDS))
    return gr.update(value=k), *frame(result, k, view)


def previous_frame(result: Kept | Lesson | None, k: Any, view: Any) -> tuple[Any, ...]:
    result = held(result)
    k = frame_index(k)
    return show(result, k - 1 if k is not None else None, view)


def next_frame(result: Kept | Lesson | None, k: Any, view: Any) -> tuple[Any, ...]:
    result = held(result)
    k = frame_index(k)
    return show(result, k + 1 if k is not None else None, view)


def player(playing: bool) -> tuple[Any, Any, bool]:
    """(timer, play button, playing) for a player that plays or is paused."""
    return gr.update(active=playing), gr.update(value=PAUSE if playing else PLAY, interactive=True), playing


def advance(result: Kept | Lesson | None, k: Any, view: Any) -> tuple[Any, ...]:
    """One tick of the player: the next frame; on the last one the player pauses."""
    result = held(result)
    k = clamp(result, k)
    if k is None or view not in VIEWS:
        return (gr.skip(),) * (3 + len(PANEL_IDS)) + player(False)
    k = min(k + 1, result.frames)
    return gr.update(value=k), *frame(result, k, view), *player(k < result.frames)


def toggle(result: Kept | Lesson | None, k: Any, playing: Any, speed: Any, view: Any) -> tuple[Any, ...]:
    """Play or Pause. Play from the last frame starts again from frame 0."""
    result = held(result)
    k = clamp(result, k)
    skip = (gr.skip(),) * (3 + len(PANEL_IDS))
    if k is None or view not in VIEWS:
        return skip + player(False)
    if playing is True:
        return skip + player(False)
    if k >= result.frames:
        return gr.update(value=0), *frame(result, 0, view), *interval(speed), *player(True)[1:]
    return skip + interval(speed) + player(True)[1:]


def interval(speed: Any) -> tuple[Any]:
    """The timer at ``speed`` frames per second, running."""
    fps = speed if isinstance(speed, (int, float)) and speed in SPEEDS else 1.0
    return (gr.update(value=1 / fps, active=True),)


def ready(result: Kept | Lesson | None, speed: Any) -> tuple[Any, ...]:
    """After a run: the slider spans the frames from frame 0, the player plays, the stepping and export
    buttons come alive, Run is idle again."""
    result = held(result)
    idle = gr.Button(RUN_LABEL, variant="primary")
    if result is None:
        return (gr.skip(),) * 7 + (False, idle)
    live = gr.update(interactive=True)
    slider = gr.update(minimum=0, maximum=max(result.frames, 1), value=0, interactive=True)
    return (
        slider,
        live,
        live,
        live,
        live,
        *interval(speed),
        gr.update(value=PAUSE, interactive=True),
        True,
        idle,
    )


def unlocked(result: Kept | Lesson | None) -> tuple[Any, ...]:
    """After a refused or failed run: the last run (if any) is still there to step through, paused."""
    result = held(result)
    idle = gr.Button(RUN_LABEL, variant="primary")
    live = gr.update(interactive=result is not None)
    play = gr.update(value=PLAY, interactive=result is not None)
    return live, live, live, live, live, gr.update(active=False), play, False, idle


def locked() -> tuple[Any, ...]:
    frozen = gr.update(interactive=False)
    busy = gr.Button("Running…", variant="secondary")
    return frozen, frozen, frozen, frozen, frozen, gr.update(active=False), frozen, False, busy


def export_frame(result: Kept | Lesson | None, k: Any, view: Any, request: gr.Request = None) -> Any:
    """The frame shown, whole (planes, residuals, legend), as a PNG in the session's folder."""
    result = held(result)
    k = clamp(result, k)
    if k is None or view not in VIEWS:
        return gr.skip()
    path = session_folder(getattr(request, "session_hash", None) or "api") / f"teach_frame_{k:02d}.png"
    path.write_bytes(draw.png(result, k, view))
    return [str(path)]


def export_run(result: Kept | Lesson | None, view: Any, request: gr.Request = None) -> Any:
    """Every frame of the run as an animated GIF in the session's folder."""
    result = held(result)
    if result is None or view not in VIEWS:
        return gr.skip()
    path = session_folder(getattr(request, "session_hash", None) or "api") / "teach_run.gif"
    path.write_bytes(draw.gif(result, view))
    return [str(path)]


def number(label: str, value: float, lo: float | None, hi: float | str | None) -> Any:
    """A whole-number box (compact: the tab fits above the fold with its panels)."""
    top = hi if isinstance(hi, (int, float)) else None
    return gr.Number(value, label=label, precision=0, minimum=lo, maximum=top, min_width=80)


def panel(elem_id: str, label: str) -> gr.Image:
    return gr.Image(
        label=label,
        show_label=False,
        format="png",
        interactive=False,
        elem_id=elem_id,
        min_width=260,
        buttons=["download", "fullscreen"],
    )


def build_teach_tab() -> Any:
    """The Teach room's components and events (inside the current Blocks context); returns the run event."""
    caps = Caps.from_env()
    with gr.Row(equal_height=True, elem_id="teach-settings"):
        prompt = gr.Textbox(
            DEFAULTS.prompt, label="Clusters", placeholder="all eight clusters", min_width=120
        )
        seed = number("Seed", DEFAULTS.seed, REQUEST["seed"].lo, None)
        steps = number(
            f"Steps {REQUEST['steps'].symbol}", DEFAULTS.steps, REQUEST["steps"].lo, caps.max_steps
        )
        family = gr.Dropdown([(CHOICE_LABELS[f], f) for f in FAMILIES], value=DEFAULTS.family, min_width=150,
                             label=REQUEST["family"].label, elem_id="teach-family")  # fmt: skip
        order = number(f"Order {SOLVER['order'].symbol}", DEFAULTS.order, SOLVER["order"].lo, caps.max_steps)
        history = number(
            f"History {SOLVER['history'].symbol}",
            DEFAULTS.history,
            SOLVER["history"].lo,
            SOLVER["history"].hi,
        )
        lam = gr.Dropdown(list(LAMS), value=f"{DEFAULTS.lam:g}", allow_custom_value=True, min_width=90,
                          label=SOLVER["lam"].symbol, elem_id="teach-lam")  # fmt: skip
        go = gr.Button(RUN_LABEL, variant="primary", elem_id="teach-run", min_width=150)
    with gr.Row(equal_height=True, elem_id="teach-player"):
        play = gr.Button(PLAY, interactive=False, scale=0, min_width=100, elem_id="teach-play")
        previous = gr.Button("◀", interactive=False, scale=0, min_width=44, elem_id="teach-previous")
        slider = gr.Slider(0, 1, 0, step=1, label="Frame (parallel iteration)", interactive=False, scale=4,
                           min_width=180, elem_id="teach-frame")  # fmt: skip
        following = gr.Button("▶", interactive=False, scale=0, min_width=44, elem_id="teach-next")
        speed = gr.Dropdown([(f"{s:g} frame/s", s) for s in SPEEDS], value=1.0, label="Speed", scale=1,
                            min_width=110, elem_id="teach-speed")  # fmt: skip
        view = gr.Dropdown(
            list(VIEWS), value=VIEWS[0], label="View", scale=1, min_width=110, elem_id="teach-view"
        )
    text = gr.Markdown(
        f"Press **{RUN_LABEL}**: the three lanes are solved, then the frames play (one per parallel "
        "iteration); pause, step, change the view or export a frame.",
        elem_id="teach-verdict",
    )
    with gr.Row(elem_id="teach-panels"):
        images = [
            panel(PANEL_IDS[0], "Jacobi"),
            panel(PANEL_IDS[1], "Anderson, one γ"),
            panel(PANEL_IDS[2], "TAA"),
            panel(PANEL_IDS[3], "Residual per iteration"),
        ]
    with gr.Row(equal_height=True):
        export_png = gr.Button("Export this frame (PNG)", interactive=False, size="sm", elem_id="teach-png")
        export_gif = gr.Button("Export the run (GIF)", interactive=False, size="sm", elem_id="teach-gif")
    files = gr.File(
        label="Teach exports", file_count="multiple", interactive=False, height=120, elem_id="teach-files"
    )
    with gr.Accordion("Numbers of the frame shown (JSON)", open=False):
        info = gr.JSON(label="frame", elem_id="teach-numbers")
    lesson_line = (
        f"The lesson behind it (fixed point, Anderson as a secant method, GMRES, TAA): {lesson_link()}."
    )
    gr.Markdown(
        f"{INTRO} {EXPLANATION} {lesson_line}  \n{settings_note(caps.max_steps)}", elem_classes="legend"
    )
    timer = gr.Timer(1.0, active=False)
    state = gr.State(None, time_to_live=3600)
    playing = gr.State(False)

    private: dict[str, Any] = {"api_visibility": "private", "queue": False}
    frames: dict[str, Any] = {
        "api_visibility": "private",
        "concurrency_id": FRAMES_QUEUE,
        "concurrency_limit": 4,
    }
    inputs = [prompt, seed, steps, order, family, history, lam, view]
    checked_ = validator(positional(teach_run), at_the_door)
    gates = [slider, previous, following, export_png, export_gif, timer, play, playing, go]
    # a refusal at the door ends the chain before the player and the button change
    started = go.click(lambda *_: locked(), inputs, gates, **guarded(checked_))
    event = started.then(
        teach_run,
        inputs,
        [*images, text, info, state],
        api_name="teach",
        preprocess=False,
        show_progress="hidden",
        validator=checked_,
    )
    event.then(ready, [state, speed], gates, **private)  # the page runs a .then only after a success
    event.failure(unlocked, state, gates, **private)

    shown = [slider, *images, text, info]
    stepping = {**frames, "validator": validator(["result", "k", "view"], frame_check())}
    slider.input(show, [state, slider, view], shown, trigger_mode="always_last", **stepping)
    previous.click(previous_frame, [state, slider, view], shown, **stepping)
    following.click(next_frame, [state, slider, view], shown, **stepping)
    view.change(show, [state, slider, view], shown, **frames)
    timer.tick(advance, [state, slider, view], [*shown, timer, play, playing], trigger_mode="once", **frames)
    play.click(toggle, [state, slider, playing, speed, view], [*shown, timer, play, playing], **frames)
    speed.change(
        lambda s, p: gr.update(value=1 / s if s in SPEEDS else 1.0, active=p),
        [speed, playing],
        timer,
        **private,
    )
    export_png.click(export_frame, [state, slider, view], files, **frames)
    export_gif.click(export_run, [state, view], files, **frames)
    return event
