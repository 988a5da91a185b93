"""One micro-batch, the whole data path in one place: source -> decode -> featurize -> project -> sinks.

Spark calls `MicroBatch` (foreachBatch) with the batch's files and its id. It reads every upload
once: files over the size limit are never read (the size filter is pushed into the scan); the
others are decoded and featurized in one pandas UDF, projected by the registered model, and
collected to the driver as Arrow (a few KB per image: measured in bench/stream.py); then both
Delta tables are committed, each once, with the batch id as their transaction id
(fruits.sinks). A re-run of a committed batch (after a crash) is recognised from the tables and
skipped. Files the source assigned to the batch but Spark never handed over (zero-length, or
deleted since they were listed) become error rows too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits import featurize, project, source
from fruits.featurize import Featurizer
from fruits.registry import ResolvedModel
from fruits.settings import Settings
from fruits.sinks import ERRORS, RESULTS, LakeWriter
from streaming.monitor import BatchMetrics, Monitor

log = logging.getLogger("fruits.stream")

ROW_COLUMNS = ["path", "label", "size", "modification_time", "ingest_time", "features", "pca", *project.HEAD_COLUMNS,
               "reason", "detail"]


@dataclass
class ActiveModel:
    """The registered model the stream applies, and which version it is."""

    resolved: ResolvedModel
    model: PipelineModel


class MicroBatch:
    """foreachBatch function of the stream. `absent_files(batch_id, seen_paths)` lists the files the
    source assigned to the batch that are not in it (listing mode), as (path, size or None)."""

    def __init__(
        self,
        settings: Settings,
        source_root: str,
        featurizer: Featurizer,
        model: ActiveModel,
        lake: LakeWriter,
        monitor: Monitor,
        absent_files: Callable[[int, set[str]], list[tuple[str, int | None]]] | None = None,
    ):
        self.settings = settings
        self.source_root = source_root
        self.featurizer = featurizer
        self.model = model
        self.lake = lake
        self.monitor = monitor
        self.absent_files = absent_files
        self.running = threading.Event()  # set while a batch is being processed (the job's graceful stop)

    def __call__(self, files: DataFrame, batch_id: int) -> None:
        self.running.set()
        try:
            self.process(files, batch_id)
        finally:
            self.running.clear()

    def process(self, files: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        active = self.model  # one model for the whole batch, even if another is swapped in meanwhile
        if self.lake.done(batch_id):
            self.monitor.record(BatchMetrics(batch_id, 0, 0, 0, 0.0, time.time(), active.resolved.version,
                                             replayed=True))
            return
        ingest_time = datetime.now(timezone.utc)
        rows = self.rows(files, ingest_time, active.model, active.resolved.novelty_threshold).toArrow()
        results, errors = self.split(rows, batch_id, ingest_time, active.resolved)
        absent = self.absent_files(batch_id, set(rows.column("path").to_pylist())) if self.absent_files else []
        if absent:
            errors = pa.concat_tables([errors, absent_rows(absent, batch_id, ingest_time, self.source_root)])
        computed = time.perf_counter()
        self.lake.commit(batch_id, results, errors)
        committed_at = time.time()
        mtimes = pc.cast(rows.column("modification_time"), pa.int64()).to_pylist()  # epoch microseconds
        self.monitor.record(BatchMetrics(
            batch=batch_id, files=rows.num_rows + len(absent), rows=results.num_rows, errors=errors.num_rows, seconds=round(time.perf_counter() - started, 3),
            committed_at=committed_at, model_version=active.resolved.version,
            commit_seconds=round(time.perf_counter() - computed, 3),
            latencies=tuple(committed_at - us / 1e6 for us in mtimes if us is not None),
        ))

    def rows(self, files: DataFrame, ingest_time: datetime, model: PipelineModel,
             novelty_threshold: float | None = None) -> DataFrame:
        """Every file of the batch as one row: features and projection, or the reason there are none."""
        s = self.settings
        images = (
            files.withColumn("label", source.label_column("path", self.source_root))
            .withColumnRenamed("length", "size")
            .withColumnRenamed("modificationTime", "modification_time")
            .withColumn("ingest_time", F.lit(ingest_time).cast("timestamp"))
        )
        too_large = images.filter(F.col("size") > s.max_image_bytes).select(
            "path", "label", "size", "modification_time", "ingest_time",
            F.lit(None).cast("array<float>").alias("features"), F.lit(None).cast("array<float>").alias("pca"),
            *[F.lit(None).cast(kind).alias(name) for name, kind in project.HEAD_COLUMNS.items()],
            F.lit("too_large").alias("reason"),
            F.format_string(f"%,d bytes is over the {s.max_image_bytes:,}-byte limit; not read", "size").alias("detail"),
        )
        readable = images.filter(F.col("size") <= s.max_image_bytes)
        featurized = featurize.featurize(readable, self.featurizer, s.max_image_pixels).drop("content")
        projected = project.project(featurized, model, novelty_threshold)
        return too_large.unionByName(projected.select(*ROW_COLUMNS))

    def split(self, rows: pa.Table, batch_id: int, ingest_time: datetime, resolved: ResolvedModel
              ) -> tuple[pa.Table, pa.Table]:
        """The batch's rows -> (results rows, error rows), with the columns each table adds."""
        good = pc.is_null(rows.column("reason"))
        results = rows.filter(good)
        n = results.num_rows
        results = (
            results.append_column("model_name", pa.array([resolved.name] * n, pa.string()))
            .append_column("model_version", pa.array([resolved.version] * n, pa.string()))
            .append_column("featurizer_sha256", pa.array([self.featurizer.spec.weights_sha256] * n, pa.string()))
            .append_column("ingest_date", pa.array([ingest_time.date()] * n, pa.date32()))
        )
        errors = rows.filter(pc.invert(good))
        errors = errors.append_column("batch_id", pa.array([batch_id] * errors.num_rows, pa.int64()))
        return results.select(RESULTS.schema.names).cast(RESULTS.schema), errors.select(ERRORS.schema.names).cast(
            ERRORS.schema)


def absent_rows(absent: list[tuple[str, int | None]], batch_id: int, ingest_time: datetime, source_root: str
                ) -> pa.Table:
    """Error rows for files the source listed but Spark never handed over: (path, size or None if gone)."""
    rows = []
    for path, size in absent:
        reason, detail = (("missing", "deleted after it was listed, before it could be read") if size is None
                          else ("empty", "file has 0 bytes"))
        rows.append({"path": path, "label": source.label_from_path(path, source_root), "size": size,
                     "modification_time": None, "ingest_time": ingest_time, "reason": reason, "detail": detail,
                     "batch_id": batch_id})
    return pa.Table.from_pylist(rows, schema=ERRORS.schema)
