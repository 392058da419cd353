"""The Teach tab in a real browser, at 1280×800 and 390×844: headless Chromium driven by playwright.

What a lecturer must get: the tab alone on the screen (no image sidebar, no presets), a run that plays,
pauses and steps, every lane's iterate inside its drawn view in every frame, a frame exported as PNG
and the run as GIF, a refusal said at the door, and panels readable on a phone.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image

from tests.local import CHROMIUM, CHROMIUM_ARGS, free_port

if not os.path.exists(CHROMIUM):  # pragma: no cover - the dev box and CI image have it
    pytest.skip(f"needs Chromium at {CHROMIUM}", allow_module_level=True)

pytestmark = pytest.mark.slow

SCREENS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
PLANES = ("#teach-jacobi", "#teach-global", "#teach-taa")
RED = np.array([0xFF, 0x3D, 0x3D])  # the iterate's x_0 marker (ui.teach.draw.X0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setenv("TMPDIR", str(tmp))
        mp.delenv("SPACE_ID", raising=False)
        mp.setattr(tempfile, "tempdir", None)
        from ui.app import build_demo, launch_options

        demo = build_demo()
        demo.queue(default_concurrency_limit=2)
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                    **launch_options())  # fmt: skip
        try:
            yield demo.local_url
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_teach(browser: Any, server: str, screen: str) -> Any:
    page = browser.new_page(viewport=SCREENS[screen])
    page.failures = []
    page.on("response", lambda r: r.status >= 500 and page.failures.append(f"{r.url}: HTTP {r.status}"))
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_selector("#run", timeout=60_000)
    page.wait_for_timeout(1000)  # the page's own start-up events
    page.get_by_role("tab", name="Teach (2-D)").click()
    page.locator("#teach-run").wait_for(state="visible")
    return page


@pytest.fixture(params=list(SCREENS))
def teach_page(request: pytest.FixtureRequest, browser: Any, server: str) -> Iterator[Any]:
    page = open_teach(browser, server, request.param)
    page.screen = request.param
    try:
        yield page
    finally:
        page.close()


def frame(page: Any) -> int:
    return int(page.locator("#teach-frame input[type=number]").input_value())


def run(page: Any) -> None:
    page.locator("#teach-run").click()
    page.wait_for_function(
        "() => /Parallel iterations/.test(document.querySelector('#teach-verdict').innerText)",
        timeout=120_000,
    )
    page.wait_for_function("() => document.querySelector('#teach-run').innerText === 'Run the three solvers'")


def picture(page: Any, selector: str) -> np.ndarray:
    src = page.locator(f"{selector} img").first.get_attribute("src")
    body = page.request.get(urljoin(page.url, src)).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)


def show(page: Any, k: int) -> None:
    """Wait until frame k's text and its three planes are on the page."""
    page.wait_for_function(
        f"() => document.querySelector('#teach-verdict').innerText.includes('Frame {k} of')", timeout=30_000
    )
    page.wait_for_function(
        """(ids) => ids.every(id => { const i = document.querySelector(id + ' img');
                                      return i && i.complete && i.naturalWidth > 0; })""",
        arg=list(PLANES),
        timeout=30_000,
    )


def test_the_tab_stands_alone_and_plays_pauses_and_resumes(teach_page: Any) -> None:
    page = teach_page
    for hidden in ("#sidebar", "#presets", "#run"):
        assert not page.locator(hidden).is_visible(), hidden  # nothing of the image sidebar beside the tab
    run(page)
    assert page.locator("#teach-play").inner_text().endswith("Pause")  # a run plays at once
    page.wait_for_function(
        "() => +document.querySelector('#teach-frame input[type=number]').value >= 2", timeout=20_000
    )
    page.locator("#teach-play").click()
    page.wait_for_function("() => document.querySelector('#teach-play').innerText.endsWith('Play')")
    page.wait_for_timeout(600)  # a tick already in flight lands
    paused_at = frame(page)
    page.wait_for_timeout(2500)  # 2.5 frames at the speed of 1 frame/s
    assert frame(page) == paused_at
    page.locator("#teach-next").click()
    show(page, paused_at + 1)
    assert frame(page) == paused_at + 1
    page.locator("#teach-play").click()
    page.wait_for_function(
        f"() => +document.querySelector('#teach-frame input[type=number]').value > {paused_at + 1}",
        timeout=20_000,
    )
    assert not page.failures, page.failures
    page.get_by_role("tab", name="Run").click()
    page.locator("#sidebar").wait_for(state="visible", timeout=5_000)  # leaving the tab brings it back


def test_every_iterate_is_inside_the_view_in_every_frame(browser: Any, server: str) -> None:
    """Each plane of each frame, as the browser got it, shows the iterate's x_0 marker (Jacobi's early
    iterates are tens of units off the ring). The pictures do not depend on the screen: the desktop's."""
    page = open_teach(browser, server, "desktop")
    try:
        run(page)
        page.locator("#teach-play").click()  # pause, then step by hand
        page.wait_for_function("() => document.querySelector('#teach-play').innerText.endsWith('Play')")
        last = int(re.search(r"Frame \d+ of (\d+)", page.locator("#teach-verdict").inner_text()).group(1))
        page.locator("#teach-frame input[type=number]").fill("0")
        page.locator("#teach-frame input[type=number]").press("Enter")
        for k in range(last + 1):
            if k:
                page.locator("#teach-next").click()
            show(page, k)
            for plane in PLANES:
                red = (np.abs(picture(page, plane) - RED).sum(axis=-1) < 40).sum()
                assert red > 30, (k, plane, red)
    finally:
        page.close()


def test_a_frame_exports_as_png_and_the_run_as_gif(teach_page: Any) -> None:
    page = teach_page
    run(page)
    page.locator("#teach-play").click()
    page.wait_for_function("() => document.querySelector('#teach-play').innerText.endsWith('Play')")
    for button, name, magic in (
        ("#teach-png", "teach_frame_", b"\x89PNG"),
        ("#teach-gif", "teach_run.gif", b"GIF8"),
    ):
        page.locator(button).click()
        link = page.locator(f"#teach-files a[href*='{name}']").first
        link.wait_for(timeout=120_000)
        body = page.request.get(urljoin(page.url, link.get_attribute("href"))).body()
        assert body.startswith(magic) and len(body) > 10_000, (name, body[:8])
    gif = Image.open(io.BytesIO(body))
    last = int(re.search(r"Frame \d+ of (\d+)", page.locator("#teach-verdict").inner_text()).group(1))
    assert gif.n_frames == last + 1


def test_a_refusal_is_said_at_the_door_and_run_is_idle_again(teach_page: Any) -> None:
    page = teach_page
    page.get_by_label("Clusters").fill("up north")
    page.locator("#teach-run").click()
    message = page.get_by_text(re.compile("unknown word 'up'")).filter(visible=True).first
    message.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(500)
    assert page.locator("#teach-run").inner_text() == "Run the three solvers"
    box = message.bounding_box()
    assert box and 0 <= box["x"] and box["x"] + box["width"] <= SCREENS[page.screen]["width"] + 1


def test_on_a_phone_each_panel_spans_the_screen_and_nothing_overflows(browser: Any, server: str) -> None:
    page = open_teach(browser, server, "phone")
    try:
        run(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= SCREENS["phone"]["width"]
        for panel in (*PLANES, "#teach-residuals"):
            box = page.locator(f"{panel} img").first.bounding_box()
            assert box and box["width"] >= 320, (panel, box)  # the 420-px plane at ≥ 3/4: text ≥ 12 px
        assert not page.locator("#sidebar-top").is_visible()  # the image prompt and Run are not beside it
    finally:
        page.close()
