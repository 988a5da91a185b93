"""A stream killed with SIGKILL while uploads keep arriving restarts with no loss and no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fruits import lake

pytestmark = pytest.mark.slow


def land(src: Path, landing: Path) -> Path:
    """Upload like a phone app would to a local landing dir: hidden temp name, atomic rename."""
    target = landing / src.parent.name / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{src.name}.part")
    temp.write_bytes(src.read_bytes())
    os.replace(temp, target)
    return target


def committed_rows(output: Path) -> int:
    return lake.read_table(str(output), columns=["path"]).num_rows if (output / "_spark_metadata").is_dir() else 0


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"stream exited with {process.returncode} while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_stream(args: list[str], log: Path) -> subprocess.Popen:
    # Own process group: SIGKILL then takes the driver, its JVM and the Python workers at once,
    # like a lost machine; SIGTERM goes to the driver only, like `kill PID` or a scheduler.
    return subprocess.Popen(
        [sys.executable, "-m", "fruits.cli", "stream", *args],
        stdout=subprocess.PIPE, stderr=log.open("ab"), text=True, start_new_session=True,
    )


def test_sigkill_mid_stream_then_restart_is_exactly_once(settings, fitted, data_dir: Path, tmp_path: Path, spark):
    landing, output, errors, checkpoint = (tmp_path / n for n in ("landing", "results", "errors", "checkpoint"))
    uploads = sorted((data_dir / "stream").glob("*/*.jpg"))[::4]  # 160 files over all 32 classes
    args = [
        "--source", str(landing), "--output", str(output), "--errors", str(errors), "--checkpoint", str(checkpoint),
        "--trigger", "500ms", "--max-files-per-trigger", "6",
        "--state-dir", str(settings.state_dir), "--tracking-uri", settings.tracking_uri, "--json", "-q",
    ]
    landed: list[Path] = []
    feeding_done = threading.Event()

    def feed() -> None:  # a steady trickle for the whole test: before, during and after the kill
        for src in uploads:
            landed.append(land(src, landing))
            time.sleep(0.12)
        feeding_done.set()

    log = tmp_path / "stream.log"
    first = start_stream(args, log)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: committed_rows(output) >= 18, 180, "some committed batches", first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    at_kill = committed_rows(output)
    assert first.returncode == -signal.SIGKILL
    assert at_kill < len(uploads) and not feeding_done.is_set(), "the kill must happen mid-stream"

    second = start_stream(args, log)
    try:
        feeder.join(120)
        assert feeding_done.is_set()
        wait_until(lambda: committed_rows(output) >= len(uploads), 240, "every upload committed", second)
        second.send_signal(signal.SIGTERM)  # graceful: finish the current micro-batch, then exit 0
        out, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model_version"] == fitted["model_version"] and summary["errors"] == 0
    assert 0 < summary["rows"] <= len(uploads) - at_kill + 6  # the restart did the rest (and at most redid one batch)

    rows = spark.read.parquet(str(output)).select("path", "label").collect()
    counts = Counter(Path(r.path.removeprefix("file:")) for r in rows)
    assert set(counts) == set(landed) and len(landed) == len(uploads)  # nothing lost
    assert max(counts.values()) == 1  # nothing twice
    assert all(r.label == Path(r.path).parent.name for r in rows)
    assert committed_rows(output) == len(uploads)  # pyarrow via the commit log agrees with Spark
