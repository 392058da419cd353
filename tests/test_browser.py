"""The app in a real browser at 1280×800: headless Debian Chromium driven by playwright's sync API.

What a first-time visitor must get: the verdict after a default run, with the ParaTAA image, the
verdict and the heatmap inside the viewport; no broken image over many runs; controls that follow T;
clear messages instead of server errors. (Screenshots: ``benchmarks/screenshots.py``.)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.local import CHROMIUM, CHROMIUM_ARGS, free_port

VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# How far an image panel's label badge reaches into its image, in pixels (≤ 0: it ends above it).
BADGE_OVER = """(id) => {
  const img = document.querySelector(`#${id} img`);
  const badge = document.querySelector(`#${id} [data-testid=block-label]`);
  return img && badge ? badge.getBoundingClientRect().bottom - img.getBoundingClientRect().top : null;
}"""
VERDICT = (
    "() => /Same image|Not converged|not the same image/.test(document.querySelector('#stats').innerText)"
)
PANELS = ("paratta-image", "sequential-image", "diff-image", "heatmap", "curves")
# True once the Run button's box and the page's height have not changed for 500 ms and the fonts are in.
SETTLED = """() => {
  const run = document.querySelector('#run');
  if (!run) return false;
  const r = run.getBoundingClientRect();
  const key = [r.top, r.left, r.width, r.height, document.documentElement.scrollHeight].join();
  const s = window.__settled || (window.__settled = {key: '', since: performance.now()});
  if (s.key !== key) { s.key = key; s.since = performance.now(); return false; }
  return document.fonts.status === 'loaded' && performance.now() - s.since > 500;
}"""

if not os.path.exists(CHROMIUM):  # pragma: no cover - the dev box and CI image have it
    pytest.skip(f"needs Chromium at {CHROMIUM}", allow_module_level=True)

pytestmark = pytest.mark.slow


class Collect(logging.Handler):
    """Every server log record at ERROR or with a traceback (h11's Content-Length errors among them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from serve(tmp_path_factory)


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app opened on a tiny random-weight Stable Diffusion folder (``app.py --model FOLDER``), whose
    image size is a setting of the page."""
    from paratta.models.diffusers.tiny import save_tiny_sd

    yield from serve(tmp_path_factory, str(save_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")))


def serve(tmp_path_factory: pytest.TempPathFactory, extra_model: str | None = None) -> Iterator[Any]:
    """The app on 127.0.0.1 as ``app.py`` serves it (``extra_model``: its ``--model``), its server
    errors recorded."""
    tmp = tmp_path_factory.mktemp("gradio")
    errors = Collect()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setenv("TMPDIR", str(tmp))
        mp.delenv("SPACE_ID", raising=False)
        mp.setattr(tempfile, "tempdir", None)
        from ui.app import build_demo, launch_options
        from ui.serve.guards import launch_limits

        port = free_port()
        demo = build_demo(extra_model)
        demo.queue(default_concurrency_limit=2)
        demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=port,
            quiet=True,
            **launch_limits(),  # as app.py serves it: Stop ends the session's job at its next call
            **launch_options(),
        )
        loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
        for lg in loggers:
            lg.addHandler(errors)
        try:
            yield type("Server", (), {"url": demo.local_url, "errors": errors})
        finally:
            for lg in loggers:
                lg.removeHandler(errors)
            demo.close()


@pytest.fixture(scope="module")
def browser(server: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Any) -> Iterator[Any]:
    """A fresh page (a fresh session) per test, recording failed file requests and HTTP 5xx answers."""
    yield from open_page(browser, server, VIEWPORT)


def open_page(browser: Any, server: Any, viewport: dict[str, int]) -> Iterator[Any]:
    """The page at ``viewport``, once the app is drawn and still; closed after the test."""
    page = browser.new_page(viewport=viewport)
    page.failures = []
    page.on("requestfailed", lambda r: broken(r) and page.failures.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 500 and page.failures.append(f"{r.url}: HTTP {r.status}"))
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#run", timeout=60_000)
    page.wait_for_function(SETTLED, polling=100, timeout=60_000)  # a click before this may land elsewhere
    try:
        yield page
    finally:
        page.close()


def broken(request: Any) -> bool:
    """A served file that failed (net::ERR_CONTENT_LENGTH_MISMATCH when a cached image is rewritten while
    it is read). Aborted loads are not failures: a streamed image replaced before it finished loading,
    or the event stream closed when a job ends."""
    return "/file=" in request.url and "ERR_ABORTED" not in (request.failure or "")


def sidebar_number(page: Any, label: str) -> Any:
    """The number box of a sidebar slider (the Teach tab has boxes of the same names)."""
    return page.locator(f"#sidebar-rest input[aria-label='number input for {label}']")


def set_number(page: Any, label: str, value: int) -> None:
    box = sidebar_number(page, label)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(400)  # the steps_changed event answers


def visitor_click(page: Any, selector: str, viewport: dict[str, int] = VIEWPORT) -> None:
    """A click where a visitor sees the element, with the mouse: it never scrolls the page. (Playwright's
    ``click`` retries a click whose target is covered or moving with ``scrollIntoView`` at block end,
    center, then start: on a busy machine the page ended at window.scrollY == 436, which is the Run
    button's top, scrolled by the test and not by the app.)"""
    box = page.locator(selector).first.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], (selector, box)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hit = f"(() => {{ const e = document.elementFromPoint({x}, {y}); return !!e?.closest('{selector}'); }})()"
    page.wait_for_function(hit, timeout=10_000)  # nothing over it: the mouse lands on the element
    page.mouse.click(x, y)


def run_to_verdict(page: Any, click: Any = None) -> str:
    """Press Run and wait for this run's verdict (not the last run's, still on screen at first)."""
    (click or (lambda: page.locator("#run").click()))()
    page.wait_for_function("() => document.querySelector('#run').innerText !== 'Run'", timeout=10_000)
    page.wait_for_function("() => document.querySelector('#run').innerText === 'Run'", timeout=120_000)
    page.wait_for_function(VERDICT, timeout=10_000)
    return page.locator("#stats").inner_text()


def images_intact(page: Any) -> list[str]:
    """Panels whose image is missing or failed to load (naturalWidth 0 after loading)."""
    broken = []
    for elem in PANELS:
        img = page.locator(f"#{elem} img").first
        img.wait_for(state="visible", timeout=10_000)
        ok = img.evaluate("el => el.complete ? el.naturalWidth > 0 : new Promise(r => { el.onload = () => "
                          "r(el.naturalWidth > 0); el.onerror = () => r(false); })")  # fmt: skip
        if not ok:
            broken.append(elem)
    return broken


def test_default_run_ends_on_a_verdict_with_image_and_heatmap_above_the_fold(page: Any) -> None:
    assert page.evaluate("window.scrollY") == 0
    text = run_to_verdict(page, lambda: visitor_click(page, "#run"))
    assert re.search(
        r"✓ Same image as sequential DDIM — \d+ parallel iterations instead of 50 steps", text
    ), text
    assert re.search(r"largest pixel difference [01]/255", text), text
    assert "on a CPU a batch of W network evaluations costs many single calls" in text
    assert page.evaluate("window.scrollY") == 0, "the page scrolled by itself during the run"
    for elem in ("stats", "paratta-image", "heatmap"):
        box = page.locator(f"#{elem}").first.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (elem, box)
    assert not images_intact(page) and not page.failures
    assert page.locator("#run").inner_text() == "Run"  # back from "Running…"
    for panel in ("paratta-image", "sequential-image", "diff-image"):
        assert page.evaluate(BADGE_OVER, panel) <= 0, panel  # the badge ends above the image


def test_twenty_default_runs_no_broken_image_and_no_server_traceback(page: Any, server: Any) -> None:
    server.errors.records.clear()
    for n in range(20):
        text = run_to_verdict(page)
        assert "Same image" in text, (n, text)
        assert not images_intact(page), n
        page.wait_for_function("() => document.querySelector('#run').innerText === 'Run'", timeout=30_000)
    assert not page.failures, page.failures
    assert not server.errors.records, [r.getMessage() for r in server.errors.records]


def test_a_run_with_the_solver_details_open_uses_the_auto_tolerance(page: Any) -> None:
    """The tolerance box, once its accordion opens, is empty (auto) and a run from it succeeds; a
    gr.Number there showed and sent 0, which the run refused."""
    page.get_by_text("Solver details").click()
    box = page.get_by_label("Tolerance").first
    box.wait_for(state="visible")
    assert box.input_value() == ""
    assert "✓ Same image as sequential DDIM" in run_to_verdict(page)


def test_order_and_window_grow_back_when_T_grows_again(page: Any) -> None:
    set_number(page, "Steps T", 2)
    assert sidebar_number(page, "Window W").input_value() == "2"
    set_number(page, "Steps T", 100)
    assert sidebar_number(page, "Window W").input_value() == "100"
    assert int(sidebar_number(page, "Order k").input_value()) >= 20
    text = run_to_verdict(page)
    assert "instead of 100 steps" in text, text


def test_steps_one_is_a_clear_answer_not_a_server_error(page: Any) -> None:
    set_number(page, "Steps T", 1)
    text = run_to_verdict(page)
    assert "1 step: nothing to run in parallel" in text, text
    set_number(page, "Steps T", 0)  # below the declared range: the slider clamps it, nothing breaks
    assert "1 step" in run_to_verdict(page) and sidebar_number(page, "Steps T").input_value() == "1"
    assert not page.failures, page.failures


def test_a_refused_run_says_why_at_the_setting_and_keeps_the_last_result(page: Any) -> None:
    verdict = run_to_verdict(page)
    page.locator("#prompt textarea").fill("purple dragon on blue")
    page.locator("#run").click()  # refused at the door (ui.run.door): the message shows on the prompt
    page.wait_for_function("() => /unknown word 'dragon'/.test(document.querySelector('#prompt').innerText)")
    page.wait_for_timeout(500)
    assert page.locator("#run").inner_text() == "Run"  # not left "Running…"
    assert page.locator("#stats").inner_text() == verdict
    assert page.locator("#paratta-image img").first.get_attribute("src")  # the last good run stays
    assert not page.failures, page.failures


def test_run_from_the_race_tab_shows_the_run(page: Any) -> None:
    page.get_by_role("tab", name="Race").click()
    page.locator("#run").click()
    page.locator("#stats").wait_for(state="visible", timeout=10_000)
    page.wait_for_function(VERDICT, timeout=120_000)


def test_a_samplers_race_names_its_lanes_and_shows_both_sequential_references(page: Any) -> None:
    page.get_by_role("tab", name="Race").click()
    page.get_by_text("DDIM-50 vs DPM++ 2M-20").click()
    for title in ("DDIM-50", "DPM++ 2M-20", "Sequential: DDIM-50 | DPM++ 2M-20"):
        page.get_by_text(title, exact=True).first.wait_for(timeout=10_000)  # the panels' titles
    page.locator("#race").click()
    page.wait_for_function(
        "() => /each ended on its own sequential/.test(document.querySelector('#race-stats').innerText)",
        timeout=120_000,
    )
    # The image loads after the verdict's text lands; the two references sit side by side.
    beside = (
        "() => [...document.querySelectorAll('#race-sequential img')]"
        ".some(i => i.naturalWidth > 2 * i.naturalHeight)"
    )
    page.wait_for_function(beside, timeout=30_000)
    assert not page.failures, page.failures


def test_stop_shows_one_consistent_frame_and_a_second_stop_changes_nothing(page: Any) -> None:
    page.get_by_label("Solver", exact=True).click()
    page.get_by_role("option", name="Jacobi (fixed point)").click()
    set_number(page, "Order k", 1)  # plain one-step Jacobi: ~50 iterations if left alone
    page.locator("#run").click()
    page.wait_for_function(
        "() => /Iteration [2-9]/.test(document.querySelector('#stats').innerText)", timeout=60_000
    )
    page.locator("#stop").click()
    page.wait_for_function(
        "() => document.querySelector('#stats').innerText.includes('stopped by the user')", timeout=10_000
    )
    page.wait_for_timeout(1500)  # a run that had not really stopped would overwrite the stats by now
    text = page.locator("#stats").inner_text()
    assert "Not converged" in text and "Same image" not in text
    stopped_at = int(re.search(r"after iteration (\d+)", text).group(1))
    scrub = page.locator("input[aria-label='number input for Scrub iterations (no recomputation)']")
    assert int(scrub.input_value()) == stopped_at < 30
    page.locator("#stop").click()
    page.wait_for_timeout(1000)
    assert page.locator("#stats").inner_text().count("stopped by the user") == 1
    assert page.locator("#run").inner_text() == "Run"


@pytest.mark.parametrize("viewport", [VIEWPORT, PHONE], ids=["1280", "390"])
def test_steps_typed_then_enter_then_run_answers_for_those_steps(
    browser: Any, server: Any, viewport: dict[str, int]
) -> None:
    """A visitor types T, presses Enter (no Tab, no click elsewhere) and presses Run: the answer is a
    verdict for that T, not a refusal of order or window left at the old T."""
    for page in open_page(browser, server, viewport):
        box = sidebar_number(page, "Steps T")
        box.fill("30")
        box.press("Enter")
        said = run_to_verdict(page)
        assert "instead of 30 steps" in said, said


def test_on_a_phone_a_run_ends_on_its_verdict_and_no_badge_covers_an_image(browser: Any, server: Any) -> None:
    for page in open_page(browser, server, PHONE):
        visitor_click(page, "#run", PHONE)
        page.wait_for_function("() => document.querySelector('#run').innerText === 'Run'", timeout=120_000)
        text = stats_say(page, "Same image as sequential DDIM")
        box = page.locator("#stats").bounding_box()  # the verdict sits right under Run: in view
        assert box and 0 <= box["y"] < PHONE["height"], box
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
        for panel in ("paratta-image", "sequential-image", "diff-image"):
            assert page.evaluate(BADGE_OVER, panel) <= 0, panel  # the badge ends above the image
        assert "parallel iterations instead of 50 steps" in text


def test_how_it_works_renders_the_formulas(page: Any) -> None:
    page.get_by_text("How it works").click()
    page.locator(".katex").first.wait_for(state="visible", timeout=10_000)
    assert page.locator(".katex").count() > 5


def test_on_a_phone_how_it_works_fits_the_screen_or_scrolls_in_its_box(browser: Any, server: Any) -> None:
    """Every formula ends inside the screen, or sits in a box that scrolls sideways."""
    for page in open_page(browser, server, PHONE):
        page.get_by_text("How it works").click()
        page.locator(".katex-display").first.wait_for(state="visible", timeout=10_000)
        overflowing = page.evaluate(
            """(width) => [...document.querySelectorAll('.katex')].filter((e) => {
                 const r = e.getBoundingClientRect();
                 if (r.width === 0 || r.right <= width + 1) return false;
                 for (let p = e; p; p = p.parentElement) {
                   const o = getComputedStyle(p).overflowX;
                   const fits = p.getBoundingClientRect().right <= width + 1;
                   if ((o === 'auto' || o === 'scroll') && fits) return false;
                 }
                 return true;
               }).map((e) => e.textContent.slice(0, 40))""",
            PHONE["width"],
        )
        assert page.locator(".katex").count() > 5 and not overflowing, overflowing
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_model_switch_brings_its_defaults_and_a_preset_fills_the_controls(page: Any) -> None:
    page.locator("#sidebar-rest").get_by_label("Model", exact=True).click()
    page.get_by_role("option", name="shapes-unet").click()
    page.wait_for_function(
        "() => document.querySelector('#prompt textarea').value === 'red circle'", timeout=10_000
    )
    page.get_by_text("Sampler: seed, DDIM/DDPM, guidance").click()  # a collapsed group
    guidance = page.locator("#sidebar-rest input[aria-label='number input for Guidance s']")
    assert float(guidance.input_value()) == 3.0  # the model's own guidance, not an unconditional blob
    page.get_by_text("Small window W = 10").click()
    window = "#sidebar-rest input[aria-label='number input for Window W']"
    page.wait_for_function(f"() => document.querySelector(\"{window}\").value === '10'", timeout=10_000)
    assert page.locator("#prompt textarea").input_value() == "red circle on blue"  # the preset's model


def test_the_warm_start_preset_runs_twice_and_pays(page: Any) -> None:
    page.get_by_role("button", name=re.compile("Warm start")).click()
    said = stats_say(page, "Same image")
    first = int(re.search(r"(\d+) parallel iterations", said).group(1))
    page.get_by_text(re.compile("Stored the final trajectory of “red circle on blue”")).wait_for(
        timeout=120_000
    )
    page.wait_for_function("() => document.querySelector('#run').innerText === 'Running…'", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#run').innerText === 'Run'", timeout=120_000)
    # the second run's own verdict (a fast run may end before the page has drawn its first frame)
    page.wait_for_function(
        "(first) => { const t = document.querySelector('#stats').innerText;"
        " return /Same image/.test(t) && t !== first; }",
        arg=said,
        timeout=60_000,
    )
    text = page.locator("#stats").inner_text()
    assert "processing" not in text  # no raw queue line as the headline
    warm = int(re.search(r"(\d+) parallel iterations", text).group(1))
    assert warm < first, (first, warm)  # 10× tighter, from its own trajectory: fewer iterations
    assert page.locator("#prompt textarea").input_value() == "red circle on blue"


# ---------------------------------------------------------------- the first minute (issue 27)

IDLE = "(b) => document.querySelector(b).innerText === ({'#run': 'Run', '#race': 'Race'})[b]"


def stats_say(page: Any, pattern: str, where: str = "#stats") -> str:
    page.wait_for_function(
        f"() => new RegExp({pattern!r}).test(document.querySelector('{where}').innerText)", timeout=60_000
    )
    return page.locator(where).inner_text()


def uncovered(page: Any, selector: str) -> list[str]:
    """Points of the element's text box (a 9×3 grid) where another element is on top of it."""
    return covered(page.locator(selector))


def covered(element: Any) -> list[str]:
    """``uncovered`` for a located element."""
    return element.evaluate(
        """(el) => {
          const r = el.getBoundingClientRect(), hidden = [];
          for (let i = 1; i < 10; i++) for (let j = 1; j < 4; j++) {
            const x = r.left + r.width * i / 10, y = r.top + r.height * j / 4;
            const top = document.elementFromPoint(x, y);
            if (top && !el.contains(top)) hidden.push(`${Math.round(x)},${Math.round(y)}: ${top.className}`);
          }
          return hidden;
        }"""
    )


def test_use_as_initialisation_says_under_the_button_why_not_before_a_run_and_what_it_kept_after(
    page: Any,
) -> None:
    page.get_by_role("button", name="Use this run as initialisation").click()
    said = page.get_by_text(re.compile("Not stored: No finished run to use yet")).first
    said.wait_for(state="visible", timeout=10_000)
    box, button = said.bounding_box(), page.get_by_role("button", name="Use this run as initialisation")
    assert box and 0 < box["y"] - button.bounding_box()["y"] < 120, box  # right under it
    run_to_verdict(page)
    button.click()  # now there is a run to keep
    page.get_by_text(re.compile("Stored the final trajectory of “red circle on blue”")).wait_for(
        timeout=10_000
    )


def test_no_stray_button_on_the_page(page: Any) -> None:
    texts = [b.inner_text().strip() for b in page.locator("button").all() if b.is_visible()]
    assert not [t for t in texts if t.startswith(("Running", "Racing"))], texts


SAMPLER, DETAILS = "Sampler: seed, DDIM/DDPM, guidance", "Solver details"  # the sidebar's accordions
# A refused setting, as a visitor sets it: (the accordion it sits in or None, its label, what is typed);
# then the start of what the page says.
REFUSALS: dict[str, tuple[tuple[str | None, str, str], str]] = {
    "prompt": ((None, "Prompt", "purple elephant"), "unknown word 'elephant'"),
    "seed": ((SAMPLER, "Seed", "-5"), "seed must be an integer in [0, 4294967295]; got -5"),
    "seed 1e26": (
        (SAMPLER, "Seed", "1e26"),
        "seed 1e+26 is too large: type a whole number from 0 to 4294967295",
    ),
    "tolerance": ((DETAILS, "Tolerance", "0"), "tol must be a number in [1e-12, 10]; got 0"),
    "size": ((None, "Height", "100000"), "height must be an integer in [8, 4096]; got 100000"),
    "work cap": ((None, "Steps T", "200"), "these settings could need up to "),  # a race: two solvers
}


def refuse(page: Any, case: str) -> str:
    """Set the case's refused setting on the page; returns the start of its message."""
    (group, label, typed), said = REFUSALS[case]
    if case == "work cap":  # the page allows it; the model's worst case is over the cap
        page.locator("#sidebar-rest").get_by_label("Model", exact=True).click()
        page.get_by_role("option", name="shapes-unet").click()
        page.wait_for_function("() => document.querySelector('#prompt textarea').value === 'red circle'")
        set_number(page, label, int(typed))
        return said
    if group is not None:
        page.get_by_text(group).click()
    box = (
        page.locator("#prompt textarea")
        if label == "Prompt"
        else page.locator("#sidebar").get_by_label(label)
    )
    box.fill(typed)
    box.press("Tab")
    return said


def said_by_the_button(page: Any, button: str, said: str, viewport: dict[str, int]) -> str:
    """The door's message under ``button`` once it says ``said``: inside the viewport, in full, nothing
    over it."""
    note = page.locator(f".door-note[data-for='{button[1:]}']")
    page.wait_for_function(
        "([b, said]) => (document.querySelector(`.door-note[data-for='${b}']`)?.textContent || '')"
        ".startsWith(said)",
        arg=[button[1:], said],
        timeout=60_000,
    )
    page.wait_for_timeout(300)  # scrolled into view by now
    box = note.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"] + 1, (button, box)
    assert not covered(note), covered(note)
    return note.inner_text()


@pytest.mark.parametrize("viewport", [VIEWPORT, PHONE], ids=["1280", "390"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refusal_is_said_under_the_button_pressed_in_view_and_the_buttons_are_idle_again(
    browser: Any, request: pytest.FixtureRequest, case: str, viewport: dict[str, int]
) -> None:
    """Refused at the door: the run never queues, the message is under its input (maybe out of view)
    and under Run, in view; the same from the Race tab. (The image size is a setting of the diffusers
    models only.)"""
    server = request.getfixturevalue("sd_server" if case == "size" else "server")
    for page in open_page(browser, server, viewport):
        said = refuse(page, case)
        page.locator("#run").click()
        text = said_by_the_button(page, "#run", said, viewport)
        at_input = page.locator("#sidebar .validation-error").first.inner_text()
        assert at_input.strip() == text.strip()  # and under its input
        if case == "work cap":  # the whole message, down to what fits
            assert re.search(r"the cap here is 1200 s: .*\(max iterations ≤ \d+ fits\)$", text.strip()), text
        page.wait_for_function(IDLE, arg="#run", timeout=10_000)
        assert page.locator("#stats").inner_text().startswith("Press Run")  # nothing ran
        page.get_by_role("tab", name="Race").click()
        page.locator("#race").click()
        said_by_the_button(page, "#race", said, viewport)
        assert page.locator(".door-note[data-for='run']").inner_text() == ""  # said once, where pressed
        page.wait_for_function(IDLE, arg="#race", timeout=10_000)
        assert not page.failures, page.failures


def test_run_and_race_are_idle_again_after_stop(page: Any) -> None:
    set_number(page, "Steps T", 200)
    for tab, button, busy in (("Run", "#run", "Running…"), ("Race", "#race", "Racing…")):
        page.get_by_role("tab", name=tab).click()
        page.locator(button).click()
        page.wait_for_function(f"() => document.querySelector('{button}').innerText === '{busy}'")
        page.wait_for_timeout(1500)
        page.locator("#stop").click()
        page.wait_for_function(IDLE, arg=button, timeout=10_000)


def type_number(page: Any, label: str, value: int) -> None:
    """As a visitor does: type, press Enter, go on to the next field (a value out of range is set to the
    range's end when the box loses focus)."""
    box = sidebar_number(page, label)
    box.fill(str(value))
    box.press("Enter")
    box.press("Tab")
    page.wait_for_timeout(400)


def test_clamps_are_said_in_words(page: Any) -> None:
    type_number(page, "Steps T", 0)
    note = page.locator("#sidebar-rest .clamp-note").first
    assert "Steps T: 0 is below 1, so it is 1" in note.inner_text()
    type_number(page, "Steps T", 100000)
    assert "Steps T: 100000 is above 200 (the most here), so it is 200" in note.inner_text()
    window = "#sidebar-rest input[aria-label='number input for Window W']"
    page.wait_for_function(f"() => document.querySelector(\"{window}\").value === '200'")  # fitted to T
    set_number(page, "Window W", 120)
    set_number(page, "Steps T", 50)
    page.wait_for_function("() => /Window W 120 → 50/.test(document.querySelector('#panel-note').innerText)")
    type_number(page, "Window W", 80)  # above T: the page sets it to T and says so
    assert (
        "Window W: 80 is above 50 (the most here), so it is 50" in page.locator("#sidebar-rest").inner_text()
    )


def test_flow_is_offered_only_for_a_model_that_has_it_and_not_carried_over(page: Any) -> None:
    family = page.locator("#sidebar-rest").get_by_label("flow matching (Euler, v)")
    family.check()
    page.locator("#sidebar-rest").get_by_label("Model", exact=True).click()
    page.get_by_role("option", name="shapes-unet").click()
    page.wait_for_function("() => document.querySelector('#prompt textarea').value === 'red circle'")
    assert page.locator("#sidebar-rest").get_by_label("flow matching (Euler, v)").count() == 0
    assert page.locator("#sidebar-rest").get_by_label("the model's own").is_checked()


def test_an_empty_prompt_says_what_it_sampled(page: Any) -> None:
    page.locator("#prompt textarea").fill("")
    text = run_to_verdict(page)
    assert "empty prompt: a sample of everything the model draws" in text, text


def test_every_hint_of_the_sidebar_fits_in_three_lines(page: Any) -> None:
    for title in ("Sampler: seed, DDIM/DDPM, guidance", "Solver details"):
        page.get_by_text(title).click()
    page.wait_for_timeout(500)
    lines = page.evaluate(
        """() => [...document.querySelectorAll('#sidebar [data-testid="block-info"]')]
             .filter((e) => e.offsetParent !== null)
             .map((e) => [e.innerText, e.getBoundingClientRect().height /
                          parseFloat(getComputedStyle(e).lineHeight)])"""
    )
    assert lines and all(n <= 3.2 for _, n in lines), sorted(lines, key=lambda x: -x[1])[:3]


# Last in the module: the run it stops is the largest here, and its end is checked before the next test.
def test_stop_before_the_first_parallel_iteration_says_so_and_the_server_is_free_again(page: Any) -> None:
    page.locator("#sidebar-rest").get_by_label("Model", exact=True).click()
    page.get_by_role("option", name="shapes-unet").click()
    page.wait_for_function("() => document.querySelector('#prompt textarea').value === 'red circle'")
    set_number(page, "Steps T", 100)  # its first parallel iteration takes seconds on a CPU
    page.locator("#run").click()
    page.wait_for_function(
        "() => /Sequential reference: step/.test(document.querySelector('#stats').innerText)"
    )
    page.locator("#stop").click()
    said = stats_say(page, "Stopped")
    assert said.startswith("Stopped before the first parallel iteration"), said
    # When Gradio's cancel lands before the run's own end, it marks the outputs with its bare "Error"
    # badge (its status tracker, as Gradio 6 draws it): the page hides it, the sentence says it all.
    badge = """() => { const t = document.createElement('div'); t.dataset.testid = 'status-tracker';
      t.innerHTML = '<div class="clear-status"></div> <span class="error">Error</span>';
      document.querySelector('#stats').appendChild(t); return getComputedStyle(t).display; }"""
    assert page.evaluate(badge) == "none" and "Error" not in page.locator("#stats").inner_text()
    page.wait_for_function(IDLE, arg="#run", timeout=10_000)
    set_number(page, "Steps T", 10)  # the server answers the next run at once: the stopped one has ended
    assert "instead of 10 steps" in run_to_verdict(page)
