"""Helpers shared by the app's tests: a visitor with its CSRF token, photos with GPS in their EXIF, the browser."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import ExifTags, Image
from requests.adapters import HTTPAdapter

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (make browser); Playwright cannot download its own here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="no /usr/bin/chromium: `make browser` installs it (as root with apt)")
GPS_MAKE = "FruitPhone-GPS-Test"


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def with_gps(src: Path) -> bytes:
    """A real JPEG re-saved with EXIF a phone would write: its make and a GPS position (Paris)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = GPS_MAKE
    exif[ExifTags.Base.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
                                   ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (2.0, 21.0, 7.0)}
    out = io.BytesIO()
    with Image.open(src) as img:
        img.save(out, "JPEG", exif=exif, quality=95)
    content = out.getvalue()
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the premise holds
    return content


class FromAddress(HTTPAdapter):
    """Connections from another loopback address (127.0.0.2...): another client, as far as the app can tell."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Visitor:
    """A browser-like HTTP client: it opens the page first (cookie + token), then posts with both."""

    def __init__(self, base: str, address: str | None = None):
        self.base = base
        self.http = requests.Session()
        if address:
            self.http.mount("http://", FromAddress(address))
        page = self.http.get(base + "/", timeout=30)
        page.raise_for_status()
        self.token = re.search(r'data-csrf="([0-9a-f]{64})"', page.text)[1]

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.base + path, timeout=60, **kwargs)

    def post(self, path: str, token: str | None = "page", origin: str | None = "self", **kwargs: Any
             ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["X-CSRF-Token"] = self.token if token == "page" else token
        if origin is not None:
            headers["Origin"] = self.base if origin == "self" else origin
        return self.http.post(self.base + path, headers=headers, timeout=60, **kwargs)

    def upload(self, content: bytes, name: str = "photo.jpg", consent: bool = False, **kwargs: Any
               ) -> requests.Response:
        return self.post("/api/uploads", files={"photo": (name, content, "image/jpeg")},
                         data={"consent": "yes" if consent else "no"}, **kwargs)
