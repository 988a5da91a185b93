"""Poison uploads in a running stream: a failure injected in one chosen upload among real images (a
Python exception, a hard exit of the Python worker) becomes exactly one `poison` error row, every
other upload lands exactly once, the stream keeps going, and a SIGKILL in the middle of the
narrowing loses and duplicates nothing.

The failure is injected by the test-only setting FRUITS_FAULT_INJECTION (streaming.poison): the
poisoned upload is a real JPEG with a marker appended (decoders ignore bytes after the image).
Nothing waits on the clock: the kill is gated on the stream's own log line, the rest on the tables.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fruits.upload import land
from streaming.job import StreamingJob
from streaming.monitor import read_progress
from support import Layout, start_stream, stop_gracefully, table_rows, wait_until

pytestmark = pytest.mark.slow
MARKER = b"FRUITS-TEST-POISON"


def real_uploads(data_dir: Path, n: int, offset: int) -> list[Path]:
    return sorted((data_dir / "stream").glob("*/*.jpg"))[offset::97][:n]


def land_all(uploads: list[Path], landing: Path, poisoned: Path | None = None) -> list[str]:
    """Land real images (atomic renames), the chosen one with the marker; their paths as the tables write them."""
    for image in uploads:
        land(image.read_bytes() + (MARKER if image == poisoned else b""), landing / image.parent.name / image.name)
    return [f"file:{landing / image.parent.name / image.name}" for image in uploads]


def test_a_python_exception_in_one_upload_becomes_one_poison_row_and_the_stream_goes_on(
    spark, settings, fitted, data_dir: Path, layout: Layout
) -> None:
    uploads = real_uploads(data_dir, 6, offset=11)
    poisoned = uploads[3]
    paths = land_all(uploads, layout.source, poisoned)  # one micro-batch: all there before the first trigger
    run = layout.settings(settings, trigger="500ms", fault_injection=f"raise:{MARKER.decode()}")
    started = time.time()
    job = StreamingJob(run, spark=spark)
    job.start()
    runner = threading.Thread(target=job.run_until_stopped, daemon=True)
    runner.start()
    try:
        wait_until(
            lambda: len(table_rows(layout.output, ["path"])) == 5, 300, "the five good uploads committed", poll=0.5
        )
        later = land_all(real_uploads(data_dir, 1, offset=50), layout.source)  # the stream is still running
        wait_until(lambda: len(table_rows(layout.output, ["path"])) == 6, 300, "the later upload committed")
    finally:
        job.request_stop()
        runner.join(180)
    assert not runner.is_alive()
    job.raise_if_failed()

    results = Counter(r.path for r in table_rows(layout.output, ["path"]))
    assert results == Counter(p for p in paths + later if p != paths[3])  # every other upload, once
    errors = table_rows(layout.errors)
    assert [(e.path, e.reason, e.label, e.size) for e in errors] == [
        (paths[3], "poison", poisoned.parent.name, poisoned.stat().st_size + len(MARKER))
    ]
    assert errors[0].detail == f"RuntimeError: fault injected on an upload containing '{MARKER.decode()}'"
    summary = job.summary()
    assert (summary["rows"], summary["errors"], summary["poisoned"]) == (6, 1, 1)
    batches, _ = read_progress(run.progress_log, since=started)  # this stream's progress lines
    [poisoned_batch] = [b for b in batches if (b.get("error_reasons") or {}).get("poison")]
    assert (poisoned_batch["files"], poisoned_batch["rows"], poisoned_batch["errors"]) == (6, 5, 1)
    assert poisoned_batch["batch"] == errors[0].batch_id


def test_a_worker_killed_by_one_upload_sigkill_while_narrowing_then_restart_is_exactly_once(
    settings, fitted, data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    landing, output, errors = tmp_path / "landing", tmp_path / "results", tmp_path / "errors"
    args = [
        "--source",
        str(landing),
        "--output",
        str(output),
        "--errors",
        str(errors),
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--trigger",
        "500ms",
        "--state-dir",
        str(settings.state_dir),
        "--tracking-uri",
        settings.tracking_uri,
        "--json",
        "-q",
    ]
    monkeypatch.setenv("FRUITS_FAULT_INJECTION", f"exit:{MARKER.decode()}")  # the stream's processes inherit it
    uploads = real_uploads(data_dir, 3, offset=29)
    poisoned = uploads[1]
    paths = land_all(uploads, landing, poisoned)
    log = tmp_path / "stream.log"

    first = start_stream(args, log)
    try:
        wait_until(
            lambda: "narrowing its 3 uploads" in log.read_text(errors="replace"),
            600,
            "the stream to start narrowing the batch down",
            first,
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a lost machine, in the middle of the narrowing
        first.wait(30)
    assert not table_rows(output) and not table_rows(errors)  # killed before the batch committed anything

    second = start_stream(args, log)
    try:
        wait_until(
            lambda: len(table_rows(errors)) == 1 and len(table_rows(output)) == 2,
            600,
            "the batch redone: two rows and the poison one",
            second,
        )
        out = stop_gracefully(second)  # it kept running: a graceful stop, exit 0
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["rows"], summary["errors"], summary["poisoned"]) == (2, 1, 1)

    results = Counter(r.path for r in table_rows(output, ["path"]))
    assert results == Counter([paths[0], paths[2]])  # nothing lost, nothing twice
    [row] = table_rows(errors)
    assert (row.path, row.reason, row.label) == (paths[1], "poison", poisoned.parent.name)
    assert row.detail == "SparkException: Python worker exited unexpectedly (crashed)"
    stderr = log.read_text(errors="replace")
    assert stderr.count(f"poison upload {paths[1]}") == 1  # found once: by the restarted stream
