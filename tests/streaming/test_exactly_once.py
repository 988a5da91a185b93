"""A stream killed with SIGKILL while uploads keep arriving restarts with no loss and no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from support import wait_until

from fruits import lake
from fruits.upload import land

pytestmark = pytest.mark.slow
BACKLOG = 12  # uploads landed but not yet committed, at most


def committed_rows(output: Path) -> int:
    return lake.read_table(str(output), columns=["path"]).num_rows if (output / "_spark_metadata").is_dir() else 0


def start_stream(args: list[str], log: Path) -> subprocess.Popen:
    # Own process group: SIGKILL then takes the driver, its JVM and the Python workers at once,
    # like a lost machine; SIGTERM goes to the driver only, like `kill PID` or a scheduler.
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "stream", *args],
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
    stop_feeding = threading.Event()

    def feed() -> None:
        """Uploads arrive before, during and after the kill, at the stream's own pace: the next file
        lands only while fewer than BACKLOG are waiting, so however fast or slow the machine, the
        stream is mid-way through the uploads when it is killed."""
        for src in uploads:
            while len(landed) - committed_rows(output) >= BACKLOG and not stop_feeding.is_set():
                stop_feeding.wait(0.2)
            if stop_feeding.is_set():
                return
            landed.append(land(src.read_bytes(), landing / src.parent.name / src.name))
        feeding_done.set()

    log = tmp_path / "stream.log"
    first = start_stream(args, log)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: committed_rows(output) >= 18, 300, "some committed batches", first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    at_kill = committed_rows(output)
    assert first.returncode == -signal.SIGKILL
    assert at_kill < len(uploads) and not feeding_done.is_set()  # holds by construction: the feeder waits

    second = start_stream(args, log)
    try:
        feeder.join(600)
        assert feeding_done.is_set()
        wait_until(lambda: committed_rows(output) >= len(uploads), 240, "every upload committed", second)
        second.send_signal(signal.SIGTERM)  # graceful: finish the current micro-batch, then exit 0
        out, _ = second.communicate(timeout=120)
    finally:
        stop_feeding.set()
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
