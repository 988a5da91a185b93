"""Fixtures for the streaming tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    # The source folder does not exist yet: the job must create it.
    return Layout(tmp_path / "landing", tmp_path / "results", tmp_path / "errors", tmp_path / "checkpoint")
