"""Helpers shared by tests: real images, corpora of bad and unusual inputs, waiting on the system."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from fruits.sinks import ERRORS, RESULTS
from hostile_images import png_header_only


def table_rows(uri: Path | str, columns: list[str] | None = None, storage_options: dict | None = None) -> list:
    """The committed rows of a Delta table, read with delta-rs alone (no Spark, nothing of ours)."""
    from types import SimpleNamespace

    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(uri), storage_options=storage_options)
    except TableNotFoundError:
        return []
    return [SimpleNamespace(**row) for row in table.to_pyarrow_table(columns=columns).to_pylist()]


# The start of a script for a fresh interpreter where pyspark and py4j cannot be imported, as in a venv without the
# `spark` extra (AWS Lambda, `fruits emr plan` on a laptop): a meta-path finder refuses them before any other
# finder can find the installed ones.
WITHOUT_SPARK = """
import sys

class NoSpark:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyspark", "py4j"):
            raise ImportError(f"No module named {name!r} (this interpreter has no spark extra)")
        return None

sys.meta_path.insert(0, NoSpark())
try:
    import pyspark
except ImportError:
    pass
else:
    raise SystemExit("the finder did not hide pyspark")
"""

SINK_TIME = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def champion_copy(settings, fitted: dict, name: str) -> str:
    """The session's fitted version registered again as `name`@champion (same model files, same tags):
    a test that moves @champion of its own copy changes nothing for the others."""
    from fruits import registry

    client = registry.connect(settings)
    source = client.get_model_version(fitted["model_name"], fitted["model_version"])
    copy = client.copy_model_version(f"models:/{fitted['model_name']}/{fitted['model_version']}", name)
    for key, value in source.tags.items():
        client.set_model_version_tag(name, copy.version, key, value)
    client.set_registered_model_alias(name, "champion", copy.version)
    return str(copy.version)


def result_rows(*paths: str) -> pa.Table:
    """Results rows as the stream writes them, one per path."""
    return pa.Table.from_pylist(
        [
            {
                "path": p,
                "label": "Kaki",
                "size": 4096,
                "modification_time": SINK_TIME,
                "ingest_time": SINK_TIME,
                "features": [0.5] * 1280,
                "pca": [0.25] * 300,
                "model_name": "fruits-pca",
                "model_version": "1",
                "featurizer_sha256": "ab" * 32,
                "ingest_date": date(2026, 12, 1),
            }
            for p in paths
        ],
        schema=RESULTS.schema,
    )


def error_rows(*paths: str, batch: int = 0) -> pa.Table:
    """Error rows (empty files) as the stream writes them, one per path."""
    return pa.Table.from_pylist(
        [
            {
                "path": p,
                "label": "Kaki",
                "size": 0,
                "modification_time": None,
                "ingest_time": SINK_TIME,
                "reason": "empty",
                "detail": "file has 0 bytes",
                "batch_id": batch,
            }
            for p in paths
        ],
        schema=ERRORS.schema,
    )


# From ../shared/models/keras/README.md: the identity of the genuine ImageNet weights.
SHARED_WEIGHTS_SHA256 = "71e4c4ec4aa24c9c951b9265d6de42e1336dcf614c2214fa6a989208615e232c"


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None, poll: float = 0.3
) -> None:
    """Poll `predicate` until it holds. `timeout` is a generous deadline for a stuck system, never a
    measure of speed: tests gate on what the system has done, not on how long it took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_stream(args: list[str], log: Path) -> subprocess.Popen:
    """`fruits stream ARGS` as a subprocess (stdout piped: the --json line; stderr appended to `log`).

    Own process group: SIGKILL then takes the driver, its JVM and the Python workers at once,
    like a lost machine; SIGTERM goes to the driver only, like `kill PID` or a scheduler.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "stream", *args],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        start_new_session=True,
    )


def stop_gracefully(process: subprocess.Popen) -> str:
    """SIGTERM: finish the current micro-batch, then exit 0. Returns stdout."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=180)
    return out


def kill_mid_stream_then_restart(
    args: list[str],
    log: Path,
    feeder: Feeder,
    total: int,
    kill_after: int = 18,
    while_running: Callable[[subprocess.Popen], None] | None = None,
) -> tuple[int, str, int]:
    """`fruits stream ARGS` with `feeder` uploading meanwhile: SIGKILL the stream's whole process group
    once `kill_after` uploads are committed (a lost machine), start it again, let the feeder finish,
    wait until `total` uploads are committed, then SIGTERM it. `while_running(stream)`, if given, runs
    once the first stream has started, before the feeder does.

    Returns (uploads committed at the kill, the restarted stream's stdout, its exit code).
    """
    first = start_stream(args, log)
    try:
        if while_running is not None:
            while_running(first)
        feeder.start()
        wait_until(lambda: feeder.committed() >= kill_after, 600, "some committed batches", first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    at_kill = feeder.committed()
    assert first.returncode == -signal.SIGKILL
    assert at_kill < total and not feeder.done.is_set()  # holds by construction: the feeder waits
    second = start_stream(args, log)
    try:
        feeder.join(900)
        assert feeder.done.is_set()
        wait_until(lambda: feeder.committed() >= total, 600, "every upload committed", second)
        out = stop_gracefully(second)
    finally:
        feeder.cancelled.set()
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    return at_kill, out, second.returncode


class Feeder(threading.Thread):
    """Uploads `uploads` one by one with `land(src) -> where it landed`, while fewer than `backlog` of
    them wait for the stream (`committed()` counts what the stream has committed): paced on the
    system's progress, never on a timer, so a busy machine only makes it slower."""

    def __init__(
        self, uploads: list[Path], land: Callable[[Path], object], committed: Callable[[], int], backlog: int = 12
    ):
        super().__init__(daemon=True)
        self.uploads, self.land, self.committed, self.backlog = uploads, land, committed, backlog
        self.landed: list = []
        self.done = threading.Event()
        self.cancelled = threading.Event()

    def run(self) -> None:
        for src in self.uploads:
            while len(self.landed) - self.committed() >= self.backlog and not self.cancelled.is_set():
                self.cancelled.wait(0.2)
            if self.cancelled.is_set():
                return
            self.landed.append(self.land(src))
        self.done.set()


@dataclass
class Layout:
    source: Path
    output: Path
    errors: Path
    checkpoint: Path

    def settings(self, base, **changes):
        return base.replace(
            source=str(self.source),
            output=str(self.output),
            errors=str(self.errors),
            checkpoint=str(self.checkpoint),
            **changes,
        )


def copy_classes(
    data_dir: Path, target: Path, classes: list[str], split: str = "stream", per_class: int = 20
) -> list[Path]:
    copied = []
    for cls in classes:
        (target / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((data_dir / split / cls).glob("*.jpg"))[:per_class]:
            copied.append(Path(shutil.copy(src, target / cls / src.name)))
    return copied


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def write_bad_corpus(target: Path, real_jpeg: bytes, oversized_bytes: int) -> dict[str, str]:
    """Files that must become error rows, by name -> expected reason."""
    folder = target / "Bad Inputs"
    folder.mkdir(parents=True, exist_ok=True)
    floats = Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20), "F")
    corpus = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (real_jpeg[: len(real_jpeg) // 3], "truncated"),
        "notes.jpg": (b"shopping list: kumquats, limes\n" * 20, "not_an_image"),
        "script.png": (b"#!/bin/sh\nrm -rf /\n", "not_an_image"),
        "bomb.png": (png_header_only(60_000, 60_000), "too_many_pixels"),
        "float.png": (_encode(floats, "TIFF"), "unsupported_format"),  # a TIFF in disguise: never parsed
        "huge.jpg": (real_jpeg + b"\0" * oversized_bytes, "too_large"),
    }
    for name, (data, _) in corpus.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in corpus.items()}


def write_unusual_valid(target: Path) -> list[str]:
    """Valid images in unusual forms: they must be converted and land in the results."""
    folder = target / "Unusual"
    folder.mkdir(parents=True, exist_ok=True)
    x = np.linspace(0, 255, 120, dtype=np.uint8)[None, :].repeat(90, axis=0)
    rgb = Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 60)], -1), "RGB")
    files = {
        "gray.jpg": _encode(rgb.convert("L"), "JPEG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "deep16.png": _encode(Image.fromarray(x.astype(np.uint16) * 257), "PNG"),
        "UPPER.JPEG": _encode(rgb, "JPEG"),
        "big.jpg": _encode(rgb.resize((4000, 3000)), "JPEG"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return sorted(files)
