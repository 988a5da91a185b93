"""People using the app, simulated: an HTTP visitor (what the page's script does) and a phone's browser
(headless Chromium from Debian's package, driven by Playwright). Shared by the demo, bench/app.py and
the tests; development tooling like the rest of demo/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

CHROMIUM = Path("/usr/bin/chromium")  # `make browser`; Playwright cannot download its own browsers here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 1}
NO_CHROMIUM = f"no {CHROMIUM}: `make browser` installs it (apt-get install chromium, as root)"


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class FromAddress(HTTPAdapter):
    """Connections from another loopback address (127.0.0.2...): another client, as far as the app can tell."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Visitor:
    """A browser-like HTTP client: it opens the page first (cookie + CSRF token), then posts with both."""

    def __init__(self, base: str, address: str | None = None):
        self.base = base
        self.http = requests.Session()
        if address:
            self.http.mount("http://", FromAddress(address))
        page = self.http.get(base + "/", timeout=30)
        page.raise_for_status()
        self.token = re.search(r'data-csrf="([0-9a-f]{64})"', page.text)[1]
        self.presigned = 'data-presigned="yes"' in page.text

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.base + path, timeout=60, **kwargs)

    def post(
        self, path: str, token: str | None = "page", origin: str | None = "self", **kwargs: Any
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["X-CSRF-Token"] = self.token if token == "page" else token
        if origin is not None:
            headers["Origin"] = self.base if origin == "self" else origin
        return self.http.post(self.base + path, headers=headers, timeout=60, **kwargs)

    def upload(
        self, content: bytes, name: str = "photo.jpg", consent: bool = False, **kwargs: Any
    ) -> requests.Response:
        return self.post(
            "/api/uploads",
            files={"photo": (name, content, "image/jpeg")},
            data={"consent": "yes" if consent else "no"},
            **kwargs,
        )

    def send(self, content: bytes, consent: bool = False) -> tuple[int, str | None]:
        """Send a JPEG the way the page does: to the app, or (on S3) to the bucket with a presigned POST.
        Returns (HTTP status of the step that stored it, the upload id or None)."""
        if not self.presigned:
            sent = self.upload(content, consent=consent)
            return sent.status_code, sent.json()["upload_id"] if sent.status_code == 201 else None
        grant = self.post("/api/uploads/presign", json={"content_type": "image/jpeg", "consent": consent})
        if grant.status_code != 201:
            return grant.status_code, None
        body = grant.json()
        stored = requests.post(
            body["url"], data=body["fields"], files={"file": ("photo.jpg", content, "image/jpeg")}, timeout=60
        )
        return (201, body["upload_id"]) if stored.ok else (stored.status_code, None)

    def wait_for_answer(self, upload_id: str, timeout: float = 120.0) -> dict[str, Any] | None:
        """Poll as the page does (app/static/app.js: every 0.3 s for 8 s, then backing off to 2 s) until the
        answer is there; None past `timeout`."""
        started, delay = time.monotonic(), 0.3
        while time.monotonic() - started < timeout:
            view = self.get(f"/api/answers/{upload_id}").json()
            if view.get("status") not in (None, "pending"):
                return view
            time.sleep(delay)
            if time.monotonic() - started > 8.0:
                delay = min(2.0, delay * 1.5)
        return None
