"""One micro-batch, the whole data path in one place: source -> decode -> featurize -> project -> sinks.

Spark calls `MicroBatch` (foreachBatch) with the batch's files and its id. It reads every upload
once: files over the size limit are never read (the size filter is pushed into the scan); the
others are decoded and featurized in one pandas UDF, projected by the registered model, and
collected to the driver as Arrow (a few KB per image: measured in bench/stream.py); then both
Delta tables are committed, each once, with the batch id as their transaction id
(fruits.sinks). A re-run of a committed batch (after a crash) is recognised from the tables and
skipped. Files the source assigned to the batch but Spark never handed over (zero-length, over
the size limit, or deleted since they were listed) become error rows too. A batch that fails on its
data (a Python worker killed, a crash in a decoder, a bug) is narrowed down to the uploads that
break it, which become `poison` error rows (streaming.poison); the batch still commits once.

Two sources feed it the same columns (path, modificationTime, length, content). The file source
(listing) gets the size filter pushed into its scan, so big files are never read, nor scanned
twice: they are among the files the batch was assigned and not handed, classified by size. The
notification source reads nothing it must not (zero-length and over-limit objects come with no
content, as do objects deleted or replaced since they were announced), and a Python source cannot
prune columns: its rows are classified in ONE pass, since a second branch would download every
image again.
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
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import featurize, project, registry, source
from fruits.featurize import Featurizer, HeadInUdf
from fruits.knownmap import KnownMap
from fruits.registry import ResolvedModel
from fruits.settings import Settings
from fruits.sinks import ERRORS, RESULTS, UTC_MICROS, LakeWriter
from streaming import poison
from streaming.answers import AnswerWriter, answers_summary, load_known_map
from streaming.monitor import BatchMetrics, Monitor, error_reasons

log = logging.getLogger("fruits.stream")

UPLOAD_COLUMNS = ["path", "label", "size", "modification_time"]
# One row per file: the upload, its features, what the model says of it, or why there is nothing to say.
# The ingest time is added on the driver (split()): the batch's plan holds no per-batch literal.
ROW_COLUMNS = [*UPLOAD_COLUMNS, "features", *project.OUTPUT_COLUMNS, "reason", "detail"]


@dataclass
class ActiveModel:
    """The registered model the stream applies, which version it is, and its arithmetic broadcast to
    the Python workers (fruits.project.Projection: applied in the featurizing UDF)."""

    resolved: ResolvedModel
    head: HeadInUdf
    projection: project.Projection  # the driver's copy: the answers' top classes (streaming.answers)
    known_map: KnownMap | None = None  # the version's known images (fruits.knownmap); None: logged without one

    @classmethod
    def load(cls, spark: SparkSession, resolved: ResolvedModel) -> ActiveModel:
        """Load the version's PipelineModel and broadcast its Projection; FruitsError if the stream cannot apply it."""
        projection = project.Projection.of(registry.load_spark_model(resolved), resolved.novelty_threshold)
        return cls(resolved, HeadInUdf(spark.sparkContext.broadcast(projection), project.OUTPUT_SCHEMA), projection,
                   load_known_map(resolved))

    def release(self) -> None:
        """Drop the broadcast from the driver and the workers (call when no batch uses this model any more)."""
        self.head.broadcast.destroy(blocking=False)


LISTING, NOTIFICATIONS = "listing", "notifications"


class MicroBatch:
    """foreachBatch function of the stream. `absent_files(batch_id, seen_paths)` lists the files the
    source assigned to the batch that are not in it (listing mode), as (path, (size, mtime) or None);
    `source_counts(batch_id)` what the notification source counted for it (duplicates...)."""

    def __init__(
        self,
        settings: Settings,
        source_root: str,
        featurizer: Featurizer,
        model: ActiveModel,
        lake: LakeWriter,
        monitor: Monitor,
        absent_files: Callable[[int, set[str]], list[tuple[str, tuple[int, datetime] | None]]] | None = None,
        source: str = LISTING,
        source_counts: Callable[[int], dict[str, int]] | None = None,
        answers: AnswerWriter | None = None,
    ):
        self.settings = settings
        self.source_root = source_root
        self.featurizer = featurizer
        self.model = model
        self.lake = lake
        self.monitor = monitor
        self.absent_files = absent_files
        self.source = source
        self.source_counts = source_counts
        self.answers = answers  # streaming.answers: app uploads -> the answers store
        self.running = threading.Event()  # set while a batch is being processed (the job's graceful stop)
        self._applied = model  # the model of the last batch: released once a swapped-in one has run a batch

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
                                             replayed=True, source=self.source))
            return
        ingest_time = datetime.now(timezone.utc)
        rows = self.compute(batch_id, self.inputs(files), active.head)
        results, errors = self.split(rows, batch_id, ingest_time, active.resolved)
        absent = self.absent_files(batch_id, set(rows.column("path").to_pylist())) if self.absent_files else []
        if absent:
            errors = pa.concat_tables([errors, absent_rows(absent, batch_id, ingest_time, self.source_root,
                                                           self.settings.max_image_bytes)])
        # App uploads are answered before the results commit: a batch redone after a crash answers them again.
        answered = self.answers.write(results, errors, active, batch_id) if self.answers is not None else []
        computed = time.perf_counter()
        self.lake.commit(batch_id, results, errors)
        committed_at = time.time()
        mtimes = pc.cast(rows.column("modification_time"), pa.int64()).to_pylist()  # epoch microseconds
        self.monitor.record(BatchMetrics(
            batch=batch_id, files=rows.num_rows + len(absent), rows=results.num_rows, errors=errors.num_rows,
            seconds=round(time.perf_counter() - started, 3), committed_at=committed_at,
            model_version=active.resolved.version,
            commit_seconds=round(time.perf_counter() - computed, 3),
            **prediction_summary(results),
            latencies=tuple(committed_at - us / 1e6 for us in mtimes if us is not None),
            source=self.source, source_counts=self.source_counts(batch_id) if self.source_counts else None,
            error_reasons=error_reasons(errors), **answers_summary(answered),
        ))
        if self._applied is not active:  # the previous model's last batch is over
            self._applied.release()
            self._applied = active

    def compute(self, batch_id: int, inputs: DataFrame, head: HeadInUdf) -> pa.Table:
        """The batch's rows as Arrow (streaming.poison: a batch that fails on its data is narrowed down to
        the uploads that break it, which come back as `poison` rows; other failures are raised)."""
        rows, failure = poison.evaluate(self.rows(inputs, head))
        if rows is not None:
            return rows
        return poison.isolate(batch_id, inputs, lambda subset: self.rows(subset, head), failure)

    def inputs(self, files: DataFrame) -> DataFrame:
        """The batch's uploads with their label, as the data path reads them (any subset of them too)."""
        images = (
            files.withColumn("label", source.label_column("path", self.source_root))
            .withColumnRenamed("length", "size")
            .withColumnRenamed("modificationTime", "modification_time")
        )
        if self.source == NOTIFICATIONS:
            return images
        # Files over the limit are filtered in the scan (never read) and come back as absent files.
        return images.filter(F.col("size") <= self.settings.max_image_bytes)

    def rows(self, inputs: DataFrame, head: HeadInUdf) -> DataFrame:
        """Every upload of `inputs` as one row: features and the model's outputs, or the reason there are none."""
        s = self.settings
        inputs = poison.inject_faults(inputs, s.fault_injection)  # tests only: unchanged unless the setting is on
        if self.source == NOTIFICATIONS:
            return self.rows_in_one_pass(inputs, head)
        featurized = featurize.featurize(inputs, self.featurizer, s.max_image_pixels, head=head)
        return featurized.select(*ROW_COLUMNS)

    def rows_in_one_pass(self, images: DataFrame, head: HeadInUdf) -> DataFrame:
        """Rows whose content the source left out are classified by size: over the limit -> too_large,
        0 bytes -> empty, otherwise missing (deleted or replaced after it was announced)."""
        limit = self.settings.max_image_bytes
        featurized = featurize.featurize(images.withColumn("_unread", F.col("content").isNull()), self.featurizer,
                                         self.settings.max_image_pixels, head=head).drop("content")
        size = F.col("size")
        unread = F.col("_unread")
        classified = featurized.select(
            *[c for c in featurized.columns if c not in ("reason", "detail", "_unread")],
            F.when(size > limit, F.lit("too_large")).when(unread & (size == 0), F.lit("empty"))
            .when(unread, F.lit("missing")).otherwise(F.col("reason")).alias("reason"),
            F.when(size > limit, too_large_detail(limit))
            .when(unread & (size == 0), F.lit("file has 0 bytes"))
            .when(unread, F.lit("deleted or replaced after it was announced, before it could be read"))
            .otherwise(F.col("detail")).alias("detail"),
        )
        return classified.select(*ROW_COLUMNS)

    def split(self, rows: pa.Table, batch_id: int, ingest_time: datetime, resolved: ResolvedModel
              ) -> tuple[pa.Table, pa.Table]:
        """The batch's rows -> (results rows, error rows), with the columns each table adds."""
        rows = rows.append_column("ingest_time", pa.array([ingest_time] * rows.num_rows, UTC_MICROS))
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


def too_large_detail(limit: int) -> Column:
    return F.format_string(f"%,d bytes is over the {limit:,}-byte limit; not read", "size")


def absent_rows(absent: list[tuple[str, tuple[int, datetime] | None]], batch_id: int, ingest_time: datetime,
                source_root: str, max_bytes: int) -> pa.Table:
    """Error rows for files the source listed but Spark never handed over: (path, (size, mtime) or None if gone).

    The scan filters out files over the size limit (too_large: never read) and skips zero-length
    files (empty) and files deleted since the listing (missing); a file that is still there, with
    bytes in it and under the limit, was replaced since the listing, and is missing too.
    """
    rows = []
    for path, status in absent:
        size, modified = status if status is not None else (None, None)
        reason, detail = (
            ("missing", "deleted after it was listed, before it could be read") if size is None
            else ("empty", "file has 0 bytes") if size == 0
            else ("too_large", f"{size:,} bytes is over the {max_bytes:,}-byte limit; not read") if size > max_bytes
            else ("missing", f"listed for this micro-batch but not read (now {size:,} bytes): replaced meanwhile?")
        )
        rows.append({"path": path, "label": source.label_from_path(path, source_root), "size": size,
                     "modification_time": modified, "ingest_time": ingest_time, "reason": reason,
                     "detail": detail, "batch_id": batch_id})
    return pa.Table.from_pylist(rows, schema=ERRORS.schema)


def prediction_summary(results: pa.Table) -> dict:
    """What the model said about a batch: rows per predicted class, mean confidence, novel fraction.

    Empty when the model has no classifier head (its `prediction` column is all null) or the batch has no rows;
    `novel_fraction` is None when the model has no novelty threshold (`is_novel` all null).
    """
    if "prediction" not in results.column_names or results.column("prediction").null_count == results.num_rows:
        return {}
    counts = pc.value_counts(results.column("prediction")).to_pylist()
    return {
        "predictions": {c["values"]: c["counts"] for c in counts if c["values"] is not None},
        "mean_confidence": mean_of(results.column("confidence")),
        "novel_fraction": mean_of(pc.cast(results.column("is_novel"), pa.float64())),
    }


def mean_of(column: pa.ChunkedArray) -> float | None:
    """The mean of a column's non-null values, rounded; None when all are null (what the model cannot produce)."""
    mean = pc.mean(column).as_py()
    return None if mean is None else round(mean, 4)
