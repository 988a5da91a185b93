"""Which failures make a poison upload, and which stop the stream: real Spark failures, classified.

A Python exception or a dead Python worker in the data path is the data's fault (narrowed down,
one error row); storage, the network, our own FruitsError and the source's reader are not, and a
micro-batch that meets them, or a commit that fails, still stops the stream with nothing written.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F

from fruits import registry, source
from fruits.exceptions import FruitsError
from fruits.reasons import MAX_DETAIL
from fruits.settings import Settings
from fruits.sinks import LakeWriter
from streaming import poison
from streaming.batch import ActiveModel, ListingStrategy, MicroBatch
from streaming.monitor import Monitor
from support import table_rows

MARKER = "FRUITS-TEST-POISON"


def failure_of(action) -> BaseException:
    try:
        action()
    except Exception as exc:  # the point: what Spark raises
        return exc
    raise AssertionError("the Spark job did not fail")


def udf_failure(spark, body) -> BaseException:
    """What the driver gets when a Python UDF runs `body()` in a real Python worker, on the third row.
    (`body` is a closure, shipped by value: the workers cannot import this test module.)"""

    @F.pandas_udf("long")
    def step(ids: pd.Series) -> pd.Series:
        if (ids == 2).any():
            body()
        return ids

    return failure_of(lambda: spark.range(4).select(step("id")).toArrow())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_python_exception_or_a_dead_worker_is_the_datas_fault(spark) -> None:
    def raise_runtime_error() -> None:
        raise RuntimeError("decoder exploded\nsecond line of the message")

    def exit_hard() -> None:
        os._exit(3)

    assert poison.poison_detail(udf_failure(spark, raise_runtime_error)) == "RuntimeError: decoder exploded"
    crashed = poison.poison_detail(udf_failure(spark, exit_hard))
    assert crashed == "SparkException: Python worker exited unexpectedly (crashed)"


def test_storage_the_network_and_our_own_errors_are_not(spark, tmp_path: Path) -> None:
    port = closed_port()

    def unreachable_s3() -> None:
        import boto3
        from botocore.config import Config

        boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="eu-west-3",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2),
        ).get_object(Bucket="b", Key="k")

    def refused() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=2)

    def ours() -> None:
        raise FruitsError("cannot commit micro-batch 3: the table is gone")

    def not_deployed() -> None:
        import fruits_module_missing_on_the_workers  # noqa: F401

    for body, expected in (
        (unreachable_s3, "botocore.exceptions.EndpointConnectionError"),
        (refused, "ConnectionRefusedError"),
        (ours, "fruits.exceptions.FruitsError"),
        (not_deployed, "ModuleNotFoundError"),
    ):
        exc = udf_failure(spark, body)
        assert expected in str(exc)  # the real failure reached the driver...
        assert poison.poison_detail(exc) is None  # ...and is not taken for a poison upload

    # The JVM failing to read a file it listed (storage): not poison either.
    folder = tmp_path / "files"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(b"\xff\xd8" + b"0" * 64)
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "false")
    try:
        listed = spark.read.format("binaryFile").load(str(folder))
        listed.select("path").collect()
        (folder / "b.jpg").unlink()
        exc = failure_of(listed.toArrow)
    finally:
        spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    assert "FileNotFoundException" in str(exc) and poison.poison_detail(exc) is None
    assert poison.poison_detail(KeyboardInterrupt()) is None and poison.poison_detail(ValueError("x")) is None


def test_reading_tracebacks_and_splitting_groups() -> None:
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nKeyError: 'k'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "b.py", line 2, in h\n    raise X\n'
        "ValueError: bad\nmore text\n"
    )
    assert poison.last_exception_line(chained) == "ValueError: bad"
    assert poison.python_failure(chained) == "ValueError: bad"
    reader = chained.replace("b.py", "/site-packages/fruits/notifications/reads.py")
    assert poison.python_failure(reader) is None  # the source's own reader failing is the source's problem
    assert poison.bounded("x" * 1000) == "x" * (MAX_DETAIL - 3) + "..."
    assert poison.bounded("a\x1b[31mb\nsecond line") == "a\\x1b[31mb"  # one line, escaped
    assert poison.split([0, 1, 2, 3, 4, 5, 6, 7, 8]) == [[4, 5, 6, 7, 8], [0, 1, 2, 3]]
    assert poison.split([4, 5, 6]) == [[6], [5], [4]]  # the caller pops: 4 is tried first


def test_fault_injection_is_off_by_default_and_checked(spark) -> None:
    frame = spark.range(1).select(F.lit(b"bytes").alias("content"))
    assert poison.inject_faults(frame, None) is frame  # nothing in the plan when off
    assert Settings.load(env={}).fault_injection is None
    assert Settings.load(env={"FRUITS_FAULT_INJECTION": f"exit:{MARKER}"}).fault_injection == f"exit:{MARKER}"
    with pytest.raises(FruitsError, match="FRUITS_FAULT_INJECTION must be raise:MARKER or exit:MARKER"):
        Settings.load(env={"FRUITS_FAULT_INJECTION": "segfault"})
    injected = poison.inject_faults(frame, f"raise:{MARKER}")
    assert injected.toArrow().column("content").to_pylist() == [b"bytes"]  # no marker: passes through


@pytest.fixture
def micro_batch(spark, settings, fitted, featurizer, tmp_path: Path):
    """A MicroBatch on the session's champion, writing to tables of this test (a listing no stream planned)."""

    def make(**changes) -> MicroBatch:
        run = settings.replace(output=str(tmp_path / "results"), errors=str(tmp_path / "errors"), **changes)
        resolved = registry.resolve(registry.connect(run), "models:/fruits-pca@champion")
        return MicroBatch(
            run,
            ListingStrategy(str(tmp_path / "landing")),
            featurizer,
            ActiveModel.load(spark, resolved),
            LakeWriter(run, "test-stream"),
            Monitor(None),
        )

    return make


def land_images(data_dir: Path, landing: Path, n: int, poisoned: int | None = None) -> list[Path]:
    landed = []
    for i, image in enumerate(sorted((data_dir / "stream").glob("*/*.jpg"))[5::111][:n]):
        target = landing / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes() + (MARKER.encode() if i == poisoned else b""))
        landed.append(target)
    return landed


def test_a_storage_failure_while_reading_a_batch_stops_it_with_nothing_written(
    spark, micro_batch, data_dir: Path, tmp_path: Path, caplog
) -> None:
    landing = tmp_path / "landing"
    landed = land_images(data_dir, landing, 3)
    batch = micro_batch()
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "false")
    try:
        files = source.read_images(spark, str(landing))
        files.select("path").collect()  # listed...
        landed[1].unlink()  # ...then gone: the read fails in the JVM, as with storage that stops answering
        with pytest.raises(Exception, match="FileNotFoundException"):
            batch(files, 0)
    finally:
        spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    assert not table_rows(tmp_path / "results") and not table_rows(tmp_path / "errors")
    assert "narrowing" not in caplog.text and "retrying" not in caplog.text


def test_a_commit_that_fails_stops_the_batch_and_is_never_an_error_row(
    spark, micro_batch, data_dir: Path, tmp_path: Path, caplog
) -> None:
    landing = tmp_path / "landing"
    land_images(data_dir, landing, 2)
    (tmp_path / "errors").write_text("not a table: the errors table cannot be written")
    (landing / "Bad").mkdir()
    (landing / "Bad" / "notes.jpg").write_bytes(b"not an image")  # an error row, for a table that cannot take it
    batch = micro_batch()
    with pytest.raises(Exception, match="Invalid table location"):  # delta-rs's own error, raised as it is
        batch(source.read_images(spark, str(landing)), 0)
    assert "retrying" not in caplog.text and "poison" not in caplog.text
    assert not table_rows(tmp_path / "results")  # the errors commit failed: the results one never happened


def test_a_data_path_broken_for_every_upload_stops_the_batch_but_a_batch_of_poison_is_committed(
    spark, micro_batch, data_dir: Path, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    [upload] = land_images(data_dir, landing, 1, poisoned=None)
    # Every JPEG holds "JFIF": the upload fails, and so does the known-good image. Our bug, not the upload's.
    broken = micro_batch(fault_injection="raise:JFIF")
    with pytest.raises(FruitsError, match=r"every upload fails .* and so does a known-good image"):
        broken(source.read_images(spark, str(landing)), 0)
    assert not table_rows(tmp_path / "results") and not table_rows(tmp_path / "errors")

    # The same batch where the upload carries the marker and the known-good image does not: a poison row.
    upload.write_bytes(upload.read_bytes() + MARKER.encode())
    micro_batch(fault_injection=f"raise:{MARKER}")(source.read_images(spark, str(landing)), 0)
    assert not table_rows(tmp_path / "results")
    assert [(e.path, e.reason) for e in table_rows(tmp_path / "errors")] == [(f"file:{upload}", "poison")]
