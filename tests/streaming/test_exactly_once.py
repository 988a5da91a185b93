"""Exactly once with real processes: SIGKILL mid-stream then restart, and the same stream started twice.

Uploads are fed at the stream's own pace (a bounded backlog of uncommitted files), never on a
timer, so both tests hold however busy the machine is.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from fruits.upload import land
from support import Feeder, kill_mid_stream_then_restart, start_stream, stop_gracefully, table_rows, wait_until

pytestmark = pytest.mark.slow
BACKLOG = 12  # uploads landed but not yet committed, at most


def committed(output: Path) -> int:
    return len(table_rows(output, ["path"]))


def feeder_for(uploads: list[Path], landing: Path, output: Path) -> Feeder:
    """Lands uploads in the landing folder while fewer than BACKLOG of them wait for the stream."""
    return Feeder(
        uploads,
        lambda src: land(src.read_bytes(), landing / src.parent.name / src.name),
        lambda: committed(output),
        BACKLOG,
    )


def stream_args(tmp_path: Path, settings) -> tuple[list[str], Path, Path]:
    landing, output = tmp_path / "landing", tmp_path / "results"
    args = [
        "--source",
        str(landing),
        "--output",
        str(output),
        "--errors",
        str(tmp_path / "errors"),
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--trigger",
        "500ms",
        "--max-files-per-trigger",
        "6",
        "--state-dir",
        str(settings.state_dir),
        "--tracking-uri",
        settings.tracking_uri,
        "--json",
        "-q",
    ]
    return args, landing, output


def assert_each_upload_once(output: Path, landed: list[Path], expected: int) -> None:
    """Read by engines that know nothing of Spark: delta-rs, Polars, DuckDB."""
    rows = table_rows(output, ["path", "label"])
    counts = Counter(Path(r.path.removeprefix("file:")) for r in rows)
    assert len(landed) == expected and set(counts) == set(landed)  # nothing lost
    assert max(counts.values()) == 1  # nothing twice
    assert all(r.label == Path(r.path).parent.name for r in rows)
    assert pl.read_delta(str(output)).select(pl.col("path").n_unique()).item() == pl.read_delta(str(output)).height
    dataset = DeltaTable(str(output)).to_pyarrow_dataset()  # noqa: F841  (DuckDB scans it by name)
    assert duckdb.sql("select count(*), count(distinct path) from dataset").fetchall() == [(expected, expected)]


def test_sigkill_mid_stream_then_restart_is_exactly_once(settings, fitted, data_dir: Path, tmp_path: Path):
    args, landing, output = stream_args(tmp_path, settings)
    uploads = sorted((data_dir / "stream").glob("*/*.jpg"))[::4]  # 160 files over all 32 classes
    feeder = feeder_for(uploads, landing, output)
    log = tmp_path / "stream.log"
    at_kill, out, code = kill_mid_stream_then_restart(args, log, feeder, len(uploads))
    assert code == 0, log.read_text()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model_version"] == fitted["model_version"] and summary["errors"] == 0
    assert 0 < summary["rows"] <= len(uploads) - at_kill + 6  # the restart did the rest (and at most redid one batch)
    assert_each_upload_once(output, feeder.landed, len(uploads))


def test_the_same_stream_started_twice_refuses_the_second_and_writes_nothing_twice(
    settings, fitted, data_dir: Path, tmp_path: Path
):
    args, landing, output = stream_args(tmp_path, settings)
    uploads = sorted((data_dir / "stream").glob("*/*.jpg"))[1::8]  # 80 files over all 32 classes
    feeder = feeder_for(uploads, landing, output)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_stream(args, first_log)
    feeder.start()
    try:
        wait_until(lambda: committed(output) >= 6, 600, "the first stream's first batches", first)
        second = start_stream(args, second_log)  # an operator's mistake: the same checkpoint and tables
        second.wait(300)
        assert second.returncode == 1, second_log.read_text()[-3000:]
        last = second_log.read_text().strip().splitlines()[-1]
        assert last.startswith("fruits stream: error: another stream holds checkpoint "), last
        assert f"pid {first.pid}" in last
        assert first.poll() is None  # the first one goes on
        feeder.join(900)
        assert feeder.done.is_set()
        wait_until(lambda: committed(output) >= len(uploads), 600, "every upload committed", first)
        stop_gracefully(first)
    finally:
        feeder.cancelled.set()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, first_log.read_text()[-3000:]
    assert_each_upload_once(output, feeder.landed, len(uploads))
