"""Fixtures for the app: its real server (uvicorn on 127.0.0.1), local settings, a known map of real images,
the browser."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from app.main import create_app
from app.serve import BackgroundServer
from demo.visitors import launch_chromium
from fruits.knownmap import KnownMap
from fruits.settings import Settings

KNOWN_CLASSES = ["Banana", "Kumquats", "Limes", "Pepper Red"]
PER_CLASS = 3


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings.load(state_dir=tmp_path / "state", source=str(tmp_path / "landing"))


@pytest.fixture
def known(data_dir: Path) -> KnownMap:
    """A known map of 12 real subset/ images (paths as Spark lists them), each class in its own corner of
    the map: the app reads labels, paths and xy (the projections are the stream's business)."""
    files = [p for name in KNOWN_CLASSES for p in sorted((data_dir / "subset" / name).glob("*.jpg"))[:PER_CLASS]]
    corners = {"Banana": (0.1, 0.1), "Kumquats": (0.9, 0.1), "Limes": (0.1, 0.9), "Pepper Red": (0.9, 0.9)}
    xy = (
        np.array([corners[p.parent.name] for p in files], dtype=np.float32)
        + np.float32(0.02) * np.arange(len(files), dtype=np.float32)[:, None] % 3
    )
    return KnownMap(
        labels=tuple(p.parent.name for p in files),
        paths=tuple(f"file:{p}" for p in files),
        pca=np.zeros((len(files), 3), dtype=np.float32),
        xy=xy,
    )


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """serve(settings, **create_app options) -> the base URL of the app on a real uvicorn server."""
    servers: list[BackgroundServer] = []

    def start(settings: Settings, **options) -> str:
        server = BackgroundServer(create_app(settings, **options)).__enter__()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package (the journeys are skipped without it: app_support.needs_chromium).
    One per module: Playwright's sync API keeps an event loop running in this thread while it is open, and
    the demo's app step (tests/demo) opens its own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
