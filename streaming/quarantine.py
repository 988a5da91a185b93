"""The errors (quarantine) table: every file that cannot become features, with why.

The errors query runs this for each micro-batch (foreachBatch), because a file sink cannot see
every bad input: Spark's file scan silently drops zero-length files, and files over the size
limit must not be read at all. Per batch, on the batch's own file list:

1. paths, sizes and times of every file in the batch (no content read);
2. files the source assigned to the batch (its log in the checkpoint, the only record Spark
   keeps of them) but absent from the scan: zero-length files -> "empty", files deleted
   since they were listed -> "missing";
3. files over `max_image_bytes` -> "too_large", never read;
4. the rest are decoded with the same `images.load_rgb` the featurizer uses -> its reason.

Exactly once: a batch's rows go to ONE parquet file named after the batch id, written to a
hidden temp name and renamed into place (Hadoop FileSystem, so file://, s3a:// and s3:// alike).
Spark re-runs an unfinished batch with the same files and timestamp, and the re-run
overwrites the same file: no loss, no duplicates. Batches without errors write nothing.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits import decode
from fruits.settings import Settings
from fruits.spark import hadoop_fs

log = logging.getLogger("fruits.stream")

TEMP_PREFIX = "_tmp-"
ERROR_SCHEMA_FIELDS = ("path", "label", "size", "modification_time", "ingest_time", "reason", "detail", "batch_id")


def batch_file_name(batch_id: int) -> str:
    return f"batch-{batch_id:012d}.parquet"


def source_batch_files(spark, source_log: str, batch_id: int) -> list[str]:
    """Paths the file source assigned to `batch_id`, read from its log in the checkpoint.

    The log is `<checkpoint>/sources/0/<batch>` (every 10th batch compacted into
    `<batch>.compact`, holding all earlier entries too): a "v1" line, then one JSON object per
    file. Paths are converted the way Spark's FileStreamSource.getBatch converts them, so they
    compare equal to the `path` column.
    """
    fs, folder = hadoop_fs(spark, source_log)
    jvm = spark.sparkContext._jvm
    for name in (str(batch_id), f"{batch_id}.compact"):
        log_file = jvm.org.apache.hadoop.fs.Path(folder, name)
        if not fs.exists(log_file):
            continue
        stream = fs.open(log_file)
        try:
            text = bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode()
        finally:
            stream.close()
        entries = [json.loads(line) for line in text.splitlines()[1:] if line.strip()]
        return [
            str(jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(e["path"])))
            for e in entries
            if e.get("batchId") == batch_id
        ]
    raise FileNotFoundError(f"no source log for batch {batch_id} under {source_log}")


def file_size(spark, path: str) -> int | None:
    """Size in bytes, or None if the file no longer exists (any storage, via Hadoop)."""
    fs, hpath = hadoop_fs(spark, path)
    return int(fs.getFileStatus(hpath).getLen()) if fs.exists(hpath) else None


def error_rows(
    batch: DataFrame, settings: Settings, batch_id: int, label_of: Callable[[str], str | None], listed: list[str]
) -> list[dict]:
    """The quarantine rows of one micro-batch (a plain DataFrame over the batch's files).

    `listed` are the files the source assigned to the batch, zero-length ones included.
    """
    meta = batch.select("path", "label", "size", "modification_time", "ingest_time").collect()
    ingest_time = meta[0].ingest_time if meta else datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []

    seen = {r.path for r in meta}
    for path in listed:
        if path in seen:
            continue
        # Spark's scan drops zero-length files, and skips files deleted since the listing.
        size = file_size(batch.sparkSession, path)
        if size is None:
            rows.append(_row(path, label_of(path), None, None, ingest_time, "missing",
                             "deleted after it was listed, before it could be read", batch_id))
        else:
            rows.append(_row(path, label_of(path), size, None, ingest_time, "empty", "file has 0 bytes", batch_id))

    for r in meta:
        if r.size > settings.max_image_bytes:
            detail = f"{r.size:,} bytes is over the {settings.max_image_bytes:,}-byte limit; not read"
            rows.append(_row(r.path, r.label, r.size, r.modification_time, r.ingest_time, "too_large", detail, batch_id))

    if any(r.size <= settings.max_image_bytes for r in meta):
        readable = batch.filter(F.col("size") <= settings.max_image_bytes)
        checked = decode_reasons(readable, settings.max_image_pixels).filter(F.col("reason").isNotNull())
        for r in checked.select("path", "label", "size", "modification_time", "reason", "detail").collect():
            rows.append(_row(r.path, r.label, r.size, r.modification_time, ingest_time, r.reason, r.detail, batch_id))
    return sorted(rows, key=lambda row: row["path"])


def decode_reasons(df: DataFrame, max_pixels: int, content_col: str = "content") -> DataFrame:
    """Add `reason`/`detail` by decoding only (no model): null for a good image."""

    @F.pandas_udf("reason string, detail string")
    def check_udf(contents: pd.Series) -> pd.DataFrame:
        reasons, details = [], []
        for data in contents:
            try:
                decode.decode(data, max_pixels)
                reasons.append(None)
                details.append(None)
            except decode.Rejected as exc:
                reasons.append(exc.reason)
                details.append(exc.detail)
        return pd.DataFrame({"reason": reasons, "detail": details})

    return df.withColumn("_checked", check_udf.asNondeterministic()(F.col(content_col))).select(*df.columns, "_checked.*")


def _row(path, label, size, mtime, ingest_time, reason, detail, batch_id) -> dict[str, Any]:
    return dict(zip(ERROR_SCHEMA_FIELDS, (path, label, size, mtime, ingest_time, reason, detail, batch_id), strict=True))


def to_parquet_bytes(rows: list[dict]) -> bytes:
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("size", pa.int64()),
            ("modification_time", pa.timestamp("us", tz="UTC")),
            ("ingest_time", pa.timestamp("us", tz="UTC")),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("batch_id", pa.int64()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def write_atomically(spark, directory: str, name: str, payload: bytes) -> str:
    """Write `payload` to directory/name via a hidden temp file and a rename (replacing any old copy)."""
    fs, folder = hadoop_fs(spark, directory)
    jvm = spark.sparkContext._jvm
    final = jvm.org.apache.hadoop.fs.Path(folder, name)
    temp = jvm.org.apache.hadoop.fs.Path(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")  # '_': readers skip it
    fs.mkdirs(folder)
    stream = fs.create(temp, True)
    try:
        stream.write(bytearray(payload))
    finally:
        stream.close()
    if fs.exists(final):
        fs.delete(final, False)
    if not fs.rename(temp, final):
        fs.delete(temp, False)
        raise OSError(f"could not rename {temp} to {final}")
    return str(final)


def remove_partial_writes(spark, directory: str) -> int:
    """Delete temp files a killed write left behind (readers skip '_' names, but they pile up)."""
    fs, folder = hadoop_fs(spark, directory)
    if not fs.exists(folder):
        return 0
    leftovers = [s.getPath() for s in fs.listStatus(folder) if s.getPath().getName().startswith(TEMP_PREFIX)]
    for path in leftovers:
        fs.delete(path, False)
    if leftovers:
        log.info("removed %d partial quarantine write(s) from %s", len(leftovers), directory)
    return len(leftovers)


class QuarantineWriter:
    """foreachBatch function of the errors query."""

    def __init__(
        self,
        settings: Settings,
        checkpoint: str,
        label_of: Callable[[str], str | None],
        on_errors: Callable[[int, int], None],
    ):
        self.settings = settings
        self.source_log = f"{checkpoint.rstrip('/')}/sources/0"
        self.label_of = label_of
        self.on_errors = on_errors

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        listed = source_batch_files(batch.sparkSession, self.source_log, batch_id)
        rows = error_rows(batch, self.settings, batch_id, self.label_of, listed)
        if rows:
            target = write_atomically(batch.sparkSession, self.settings.errors_uri, batch_file_name(batch_id),
                                      to_parquet_bytes(rows))
            log.warning("quarantined %d file(s) in errors batch %d -> %s", len(rows), batch_id, target)
        self.on_errors(batch_id, len(rows))
