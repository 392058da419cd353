"""Screenshots of the app for the README: a default run at 1280×800 (desktop) and at 390×844 (phone),
and the Teach tab at its defaults on both screens, paused on frame ``TEACH_FRAME``.

    python benchmarks/screenshots.py                      # writes docs/screenshot*.png
    python benchmarks/screenshots.py --out /tmp           # elsewhere
    python benchmarks/screenshots.py --only screenshot_teach_phone.png

Starts the app in-process on a free port, drives the system Chromium (/usr/bin/chromium) with
Playwright, presses Run (or the Teach tab's Run), waits for the verdict and photographs the viewport.
Prints where the verdict, the ParaTAA image and the heatmap sit on each screen (all inside the
viewport on the desktop), and for Teach where its verdict and first plane sit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCREENS = {"screenshot.png": (1280, 800), "screenshot_phone.png": (390, 844)}
TEACH_SCREENS = {"screenshot_teach.png": (1280, 800), "screenshot_teach_phone.png": (390, 844)}
TEACH_FRAME = 4  # Jacobi still far off the path (its view zoomed out), TAA close to it
VERDICT = (
    "() => /Same image|Not converged|not the same image/.test(document.querySelector('#stats').innerText)"
)


def serve() -> tuple[Any, str]:
    """The app on a free local port, its temp files in a throwaway folder."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="paratta-shots-"))
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from tests.local import free_port
    from ui.app import build_demo, launch_options

    port = free_port()
    demo = build_demo()
    demo.queue(default_concurrency_limit=2)
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_options()
    )
    return demo, demo.local_url


def boxes(page: Any) -> dict[str, tuple[int, int] | None]:
    """(top, bottom) in CSS pixels of the parts a visitor must see without scrolling."""
    out = {}
    for name in ("#stats", "#paratta-image", "#heatmap", "#run"):
        box = page.locator(name).first.bounding_box()
        out[name] = None if box is None else (round(box["y"]), round(box["y"] + box["height"]))
    return out


def teach_boxes(page: Any) -> dict[str, tuple[int, int] | None]:
    out = {}
    for name in ("#teach-verdict", "#teach-jacobi", "#teach-residuals"):
        box = page.locator(name).first.bounding_box()
        out[name] = None if box is None else (round(box["y"]), round(box["y"] + box["height"]))
    return out


def shoot_teach(page: Any, path: Path, width: int) -> None:
    """The Teach tab at its defaults: run, pause, go to ``TEACH_FRAME``; on a phone from the verdict down."""
    page.get_by_role("tab", name="Teach (2-D)").click()
    page.locator("#teach-run").click()
    page.wait_for_function(
        "() => /Parallel iterations/.test(document.querySelector('#teach-verdict').innerText)",
        timeout=120_000,
    )
    page.locator("#teach-play").click()  # pause
    page.wait_for_function("() => document.querySelector('#teach-play').innerText.endsWith('Play')")
    box = page.locator("#teach-frame input[type=number]")
    box.fill(str(TEACH_FRAME))
    box.press("Enter")
    page.wait_for_function(
        f"() => document.querySelector('#teach-verdict').innerText.includes('Frame {TEACH_FRAME} of')"
    )
    page.wait_for_timeout(1500)  # the panels load
    if width < 600:
        page.evaluate("document.querySelector('#teach-verdict').scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
    page.screenshot(path=str(path))


def shoot(url: str, out: Path, only: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    from tests.local import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for name, (width, height) in TEACH_SCREENS.items():
                if only and name not in only:
                    continue
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector("#run", timeout=60_000)
                page.wait_for_timeout(1000)
                shoot_teach(page, out / name, width)
                print(f"{name} {width}×{height}: {teach_boxes(page)}")
                page.close()
            for name, (width, height) in SCREENS.items():
                if only and name not in only:
                    continue
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector("#run", timeout=60_000)
                page.locator("#run").click()
                page.wait_for_function(VERDICT, timeout=120_000)
                page.wait_for_timeout(800)  # the last images load
                if width < 600:  # on a phone: from the Run button down, the results right under it
                    page.evaluate("document.querySelector('#run').scrollIntoView({block: 'start'})")
                    page.wait_for_timeout(300)
                page.screenshot(path=str(out / name))
                print(f"{name} {width}×{height}: {boxes(page)}")
                page.close()
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--only", nargs="+", choices=[*SCREENS, *TEACH_SCREENS], help="these screenshots only"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    demo, url = serve()
    try:
        shoot(url, args.out, args.only)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
