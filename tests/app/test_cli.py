"""`fruits app` (a real process serving on 127.0.0.1) and `fruits lake purge-private` (the retention rule)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from demo.emulated_aws import free_port
from fruits import appuploads
from support import wait_until

pytestmark = pytest.mark.slow


def fruits(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_fruits_app_serves_the_page_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "app.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "app", "--port", str(port), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
    )
    try:

        def page() -> requests.Response | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            except requests.ConnectionError:
                return None

        wait_until(lambda: page() is not None, 120, "the app to listen", process)
        response = page()
        assert response.status_code == 200 and "Take or choose a photo" in response.text
        assert "server" not in response.headers and "content-security-policy" in response.headers
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, log.read_text()[-2000:]
    assert (
        out.splitlines()[0] == f"Fruits! app on http://127.0.0.1:{port}/ (the team's numbers: /ops). Ctrl-C stops it."
    )
    assert "127.0.0.1:" + str(port) not in log.read_text().replace(f"http://127.0.0.1:{port}", "")  # no peers logged


def test_bad_app_input_is_a_one_line_error(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for args, env, message in [
            (["--port", "70000"], {}, "--port must be between 1 and 65535, got 70000"),
            (["--port", str(busy.getsockname()[1])], {}, "cannot listen on 127.0.0.1"),
            (["--source", "s3://bucket/images/"], {}, "FRUITS_APP_SECRET must be set"),
            (["--port", "8080"], {"FRUITS_APP_UPLOAD_EXPIRY": "1d"}, "between 1s and 1h"),
        ]:
            done = fruits("app", "--state-dir", str(tmp_path), *args, env=env)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith("fruits app: error: ") and message in done.stderr
    finally:
        busy.close()
    done = fruits("app", "--port", "many")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--host" in fruits("app", "--help").stdout


def test_purge_private_deletes_only_old_uploads_made_without_consent(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    old, recent = time.time() - 2 * 86400, time.time() - 3600
    files = {}
    for name, consent, mtime in [
        ("old-private", False, old),
        ("new-private", False, recent),
        ("old-consented", True, old),
    ]:
        upload_id = appuploads.new_upload_id()
        path = landing / appuploads.upload_key(upload_id, consent)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8\xff photo")
        os.utime(path, (mtime, mtime))
        files[name] = path
    leftover = landing / "app" / "private" / ".0123.jpg.abc.part"  # a temporary file a crash left
    leftover.write_bytes(b"half")
    os.utime(leftover, (old, old))
    labelled = landing / "Banana" / "r_1_100.jpg"  # the team's labelled uploads: never the app's business
    labelled.parent.mkdir()
    labelled.write_bytes(b"\xff\xd8\xff")
    os.utime(labelled, (old, old))

    done = fruits("lake", "purge-private", "--source", str(landing), "--state-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["deleted"], summary["retention"]) == (1, "1d")
    assert not files["old-private"].exists() and not leftover.exists()
    assert files["new-private"].exists() and files["old-consented"].exists() and labelled.exists()

    done = fruits(
        "lake", "purge-private", "--source", str(landing), "--state-dir", str(tmp_path), "--retention", "30m", "--json"
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["deleted"] == 1 and not files["new-private"].exists()

    done = fruits("lake", "purge-private", "--source", "s3://bucket/images/", "--state-dir", str(tmp_path))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "lifecycle rule" in done.stderr
