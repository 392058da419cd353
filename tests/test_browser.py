"""The app in a real browser: headless Debian Chromium driven by playwright's sync API.

PARATTA_SCREENSHOT=1 also saves a mid-run screenshot to docs/screenshot.png.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"

if not os.path.exists(CHROMIUM):  # pragma: no cover - the dev box and CI image have it
    pytest.skip(f"needs Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "cache"))
        mp.setenv("TMPDIR", str(tmp))
        mp.delenv("SPACE_ID", raising=False)
        mp.setattr(tempfile, "tempdir", None)
        from ui.app import build_demo, launch_options

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo = build_demo()
        demo.queue(default_concurrency_limit=2)
        demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=port,
            quiet=True,
            **launch_options(),
        )
        try:
            yield demo.local_url
        finally:
            demo.close()


@pytest.fixture(scope="module")
def page(url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 980})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#run", timeout=30_000)
            yield page
        finally:
            browser.close()


def test_run_in_the_browser_converges_and_shows_every_image(page: Any) -> None:
    stats = page.locator("#stats")
    page.locator("#run").click()
    if os.environ.get("PARATTA_SCREENSHOT") == "1":
        page.wait_for_function(
            "() => /Iteration ([4-9]|1\\d)/.test(document.querySelector('#stats').innerText)", timeout=60_000
        )
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))  # the viewport: title, controls, live outputs
    page.wait_for_function(
        "() => document.querySelector('#stats').innerText.includes('✓ converged')", timeout=60_000
    )
    text = stats.inner_text()
    assert re.search(r"final timesteps 50/50", text), text
    assert re.search(r"speed-up in steps 50/\d+ = [\d.]+×", text), text
    for elem in ("paratta-image", "sequential-image", "diff-image", "heatmap", "curves"):
        img = page.locator(f"#{elem} img").first
        img.wait_for(state="visible", timeout=10_000)
        assert img.get_attribute("src"), elem
        width = img.evaluate("el => el.naturalWidth")
        assert width >= 200, (elem, width)


def test_how_it_works_renders_the_formulas(page: Any) -> None:
    page.get_by_text("How it works").click()
    page.locator(".katex").first.wait_for(state="visible", timeout=10_000)
    assert page.locator(".katex").count() > 5


def test_stop_button_ends_the_run_and_keeps_what_was_computed(page: Any) -> None:
    page.get_by_role("tab", name="Run").click()
    page.get_by_label("Solver", exact=True).click()
    page.get_by_role("option", name="Jacobi (fixed point)").click()
    page.locator("input[aria-label='number input for Order k']").fill("1")
    page.keyboard.press("Enter")  # plain one-step Jacobi: ~50 iterations if left alone
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
    assert "stopped by the user" in text and "✓ converged" not in text and "ended before convergence" in text
    stopped_at = int(re.search(r"after iteration (\d+)", text).group(1))
    assert stopped_at < 30
    scrub = page.locator("input[aria-label='number input for Scrub iterations (no recomputation)']")
    assert int(scrub.input_value()) == stopped_at
