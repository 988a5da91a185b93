"""Helpers shared by the app's tests: photos with GPS in their EXIF; the visitor and browser come from demo.visitors."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import ExifTags, Image

from demo.visitors import CHROMIUM, NO_CHROMIUM

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
GPS_MAKE = "FruitPhone-GPS-Test"
ANSWER_TIMEOUT_S = 180.0  # a generous deadline for a stuck system, not a measure of speed (bench/app.py measures)


def with_gps(src: Path) -> bytes:
    """A real JPEG re-saved with EXIF a phone would write: its make and a GPS position (Paris)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = GPS_MAKE
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 21.0, 7.0),
    }
    out = io.BytesIO()
    with Image.open(src) as img:
        img.save(out, "JPEG", exif=exif, quality=95)
    content = out.getvalue()
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the premise holds
    return content


# ----------------------------------------------------------------------------- journeys in a browser
class Phone:
    """One person's phone: a fresh browser context at a phone's size that records what the console
    says (a Content-Security-Policy violation or a script error shows up there)."""

    def __init__(self, browser: Any, url: str):
        from demo.visitors import PHONE

        self.context = browser.new_context(**PHONE)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        self.page.goto(url)

    def answer(self, timeout_s: float = ANSWER_TIMEOUT_S) -> str:
        """The answer's title once the page shows it (the page polls the app; the stream writes the answer)."""
        from playwright.sync_api import expect

        title = self.page.locator("#answer-title")
        expect(title).not_to_be_empty(timeout=timeout_s * 1000)
        return title.inner_text()

    def images_loaded(self, selector: str) -> list[bool]:
        """For each image the selector matches: loaded and decoded (a broken thumbnail has no natural width)."""
        return self.page.eval_on_selector_all(selector, "images => images.map(i => i.complete && i.naturalWidth > 0)")

    def close(self) -> None:
        self.context.close()


def screenshot(phone: Phone, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    phone.page.screenshot(path=str(path), full_page=True)
    return path


def first_answered(url: str, photos: list[Path], wanted: Callable[[dict], bool], what: str) -> Path:
    """The first photo whose answer, asked through the app's endpoints as the page does, is `wanted`: the
    journeys then show a person that photo. The model decides (a test/ photo it names right, an
    extra_classes/ photo it flags), so a refit model with other mistakes changes the pick, not the test."""
    from demo.visitors import Visitor

    visitor = Visitor(url)
    for photo in photos:
        status, upload_id = visitor.send(photo.read_bytes())
        assert status == 201, f"sending {photo}: {status}"
        view = visitor.wait_for_answer(upload_id, timeout=ANSWER_TIMEOUT_S)
        assert view is not None, f"no answer for {photo} within {ANSWER_TIMEOUT_S:.0f} s"
        if wanted(view):
            return photo
    raise AssertionError(f"none of {len(photos)} photos is {what}")
