"""The demo's app step: the public app beside the running stream, and one photo sent through its page.

The app is served on the stream's own settings (its landing folder, answers store and registry)
from a thread of the demo, on a free port of 127.0.0.1; its URL is printed. A phone-sized headless
Chromium (Debian's package, `make browser`) opens the page, sends one test/ photo through the file
input, and waits until the page shows the answer the stream wrote. Without chromium the step is
skipped, saying why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from app.main import create_app
from app.serve import BackgroundServer
from demo.visitors import CHROMIUM, NO_CHROMIUM, PHONE, launch_chromium
from fruits.settings import Settings

log = logging.getLogger("fruits.demo")
ANSWER_TIMEOUT_S = 120.0


def photo_through_the_app(settings: Settings, photo: Path, screenshot: Path) -> dict[str, Any]:
    """Serve the app, send `photo` through its page in headless Chromium, return what the page showed."""
    if not CHROMIUM.exists():
        log.warning("app step skipped: %s", NO_CHROMIUM)
        return {"skipped": NO_CHROMIUM}
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with BackgroundServer(create_app(settings)) as server:
        print(f"the app is on {server.url}/ (the team's numbers: {server.url}/ops)", flush=True)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_context(**PHONE).new_page()
                page.goto(server.url + "/")
                started = time.perf_counter()
                page.set_input_files("#photo", str(photo))
                title = page.locator("#answer-title")
                try:
                    page.wait_for_function(
                        "() => document.getElementById('answer-title').textContent.length > 0",
                        timeout=ANSWER_TIMEOUT_S * 1000,
                    )
                except PlaywrightTimeout:
                    log.warning("no answer on the app's page within %.0f s", ANSWER_TIMEOUT_S)
                    return {
                        "url": server.url,
                        "photo": str(photo),
                        "error": f"no answer within {ANSWER_TIMEOUT_S:.0f} s",
                    }
                seconds = time.perf_counter() - started
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                shown = {
                    "answer": title.inner_text(),
                    "message": page.locator("#answer-message").inner_text(),
                    "upload_id": page.url.rsplit("/u/", 1)[-1],
                }
            finally:
                browser.close()
    log.info(
        "through the app: %s of %s -> %r (%s), %.1f s from the tap to the answer on the page",
        photo.name,
        photo.parent.name,
        shown["answer"],
        shown["message"],
        seconds,
    )
    return {
        "url": server.url,
        "photo": str(photo),
        "expected": photo.parent.name,
        **shown,
        "seconds": round(seconds, 2),
        "screenshot": str(screenshot),
    }
