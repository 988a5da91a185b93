"""One micro-batch, the data path in the order data flows: the source's uploads -> decode, featurize and
project (one pandas UDF) -> result and error rows -> one commit per table.

Spark calls `MicroBatch` (foreachBatch) with the batch's files and its id. It reads every upload
once: files over the size limit are never read; the others are decoded, featurized and projected
by the registered model in one pandas UDF (fruits.featurize with the model's `ProjectionInUdf`,
fruits.project), and collected to the driver as Arrow (a few KB per image: measured in
bench/stream.py); then both Delta tables are committed, each once, with the batch id as their
transaction id (fruits.sinks). A re-run of a committed batch (after a crash) is recognised from the
tables and skipped. A batch that fails on its data (a Python worker killed, a crash in a decoder, a
bug) is narrowed down to the uploads that break it, which become `poison` error rows
(streaming.poison); the batch still commits once.

Two sources hand over the same columns (path, modificationTime, length, content); what each leaves
unread is its strategy:
- `ListingStrategy`, Spark's file source: the size filter is pushed into its scan, so big files are
  never read, nor scanned twice; they, zero-length files (Spark skips them) and files deleted since
  the listing are among the files the checkpoint assigned to the batch and Spark never handed over
  (`absent`);
- `NotificationStrategy` (fruits.notifications) reads nothing it must not: zero-length and over-limit
  objects, and objects deleted or replaced since they were announced, come with no content. A
  Python source cannot prune columns, so these rows stay in the one pass (a second branch would
  download every image again), flagged `unread`.
Either way an unread upload's reason comes from its size, by one rule (fruits.reasons.unread_reason).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import featurize, notifications, project, registry
from fruits.exceptions import one_line
from fruits.featurize import Featurizer, ProjectionInUdf
from fruits.knownmap import KnownMap
from fruits.reasons import unread_reason
from fruits.registry import ResolvedModel
from fruits.settings import Settings
from fruits.sinks import ERRORS, RESULTS, UTC_MICROS, LakeWriter
from fruits.source import as_path_column, file_status, files_assigned_to_batch, label_column, label_from_path
from fruits.storage import CheckpointStore
from streaming import poison
from streaming.answers import AnswerWriter, answers_summary, load_known_map
from streaming.monitor import BatchMetrics, Monitor, error_reasons

log = logging.getLogger("fruits.stream")

LISTING, NOTIFICATIONS = "listing", "notifications"  # the sources' modes, as the progress lines name them
# What the data path keeps of an upload from its source (the tables add its ingest time: fruits.sinks.UPLOAD_FIELDS).
SOURCE_COLUMNS = ["path", "label", "size", "modification_time"]
UNREAD = "unread"  # true: the source handed the upload over without its content
# One row per upload: the upload, its features, what the model says of it, or why there is nothing to say.
# The ingest time is added on the driver (split()): the batch's plan holds no per-batch literal.
ROW_COLUMNS = [*SOURCE_COLUMNS, "features", *project.OUTPUT_COLUMNS, "reason", "detail", UNREAD]

FileStatus = tuple[int, datetime] | None  # a file's (size, modification time) now; None: it is gone


@dataclass
class ActiveModel:
    """The registered model the stream applies, which version it is, and its projection broadcast to the
    Python workers (fruits.project.Projection: applied in the featurizing UDF)."""

    resolved: ResolvedModel
    projection_in_udf: ProjectionInUdf
    projection: project.Projection  # the driver's copy: the answers' top classes (streaming.answers)
    known_map: KnownMap | None = None  # the version's known images (fruits.knownmap); None: logged without one

    @classmethod
    def load(cls, spark: SparkSession, resolved: ResolvedModel) -> ActiveModel:
        """Load the version's PipelineModel and broadcast its Projection; FruitsError if the stream cannot apply it."""
        projection = project.Projection.of(registry.load_spark_model(resolved), resolved.novelty_threshold)
        in_udf = ProjectionInUdf(spark.sparkContext.broadcast(projection), project.OUTPUT_SCHEMA)
        return cls(resolved, in_udf, projection, load_known_map(resolved))

    def release(self) -> None:
        """Drop the broadcast from the driver and the workers (call when no batch uses this model any more)."""
        self.projection_in_udf.broadcast.destroy(blocking=False)


# ----------------------------------------------------------------------------- the sources' strategies
class SourceStrategy(Protocol):
    """What a micro-batch needs to know of the source that planned it."""

    mode: ClassVar[str]  # LISTING or NOTIFICATIONS
    missing: ClassVar[str]  # the detail of an upload handed over without content, neither empty nor too large
    root: str  # the images prefix: labels are the folders under it

    def readable(self, uploads: DataFrame, max_bytes: int) -> DataFrame:
        """The uploads the data path reads (any subset of the batch's too)."""

    def absent(self, spark: SparkSession, batch_id: int, handed: set[str]) -> list[tuple[str, FileStatus]]:
        """Files the source assigned to the batch that Spark did not hand over, with their status now."""

    def counts(self, batch_id: int) -> dict[str, int] | None:
        """What the source counted for the batch (duplicates, backfilled...), for the progress lines."""


@dataclass(frozen=True)
class ListingStrategy:
    """Spark's file source, listing the prefix every trigger (local landing folders, tests, re-reading everything)."""

    root: str
    checkpoint: str | None = None  # the stream's, which records the files of each batch; None: no stream planned it
    mode: ClassVar[str] = LISTING
    missing: ClassVar[str] = "deleted or replaced after it was listed, before it could be read"

    def readable(self, uploads: DataFrame, max_bytes: int) -> DataFrame:
        """Files over the limit are filtered in the scan (never read): they come back as absent files."""
        return uploads.filter(F.col("size") <= max_bytes)

    def absent(self, spark: SparkSession, batch_id: int, handed: set[str]) -> list[tuple[str, FileStatus]]:
        if self.checkpoint is None:
            return []
        assigned = files_assigned_to_batch(spark, self.checkpoint, batch_id)
        if len(assigned) == len(handed):  # the batch holds every file it was assigned: the usual case
            return []
        return [(path, file_status(spark, path)) for path in as_path_column(spark, assigned) if path not in handed]

    def counts(self, batch_id: int) -> dict[str, int] | None:
        return None


@dataclass(frozen=True)
class NotificationStrategy:
    """The upload notifications on an SQS queue (fruits.notifications): every announced upload is handed over;
    those it must not read come without content."""

    root: str
    store: CheckpointStore  # the source's state under the checkpoint: what it counted for each batch
    mode: ClassVar[str] = NOTIFICATIONS
    missing: ClassVar[str] = "deleted or replaced after it was announced, before it could be read"

    def readable(self, uploads: DataFrame, max_bytes: int) -> DataFrame:
        return uploads

    def absent(self, spark: SparkSession, batch_id: int, handed: set[str]) -> list[tuple[str, FileStatus]]:
        return []

    def counts(self, batch_id: int) -> dict[str, int] | None:
        try:
            return notifications.batch_counts(self.store, batch_id)
        except Exception as exc:  # counts are for people: never fail a batch over them
            log.warning("cannot read the notification counts of batch %d: %s", batch_id, one_line(exc))
            return None


# ----------------------------------------------------------------------------- the micro-batch
class MicroBatch:
    """foreachBatch function of the stream: the uploads `source` planned for a batch, through the data path."""

    def __init__(
        self,
        settings: Settings,
        source: SourceStrategy,
        featurizer: Featurizer,
        model: ActiveModel,
        lake: LakeWriter,
        monitor: Monitor,
        answers: AnswerWriter | None = None,
    ):
        self.settings = settings
        self.source = source
        self.featurizer = featurizer
        self.model = model
        self.lake = lake
        self.monitor = monitor
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
            self.monitor.record(
                BatchMetrics(
                    batch_id, 0, 0, 0, 0.0, time.time(), active.resolved.version, replayed=True, source=self.source.mode
                )
            )
            return
        ingest_time = datetime.now(UTC)
        max_bytes = self.settings.max_image_bytes
        rows = self.compute(batch_id, self.inputs(files), active.projection_in_udf)
        rows = with_unread_reasons(rows, max_bytes, self.source.missing)
        results, errors = self.split(rows, batch_id, ingest_time, active.resolved)
        absent = self.source.absent(files.sparkSession, batch_id, set(rows.column("path").to_pylist()))
        if absent:
            errors = pa.concat_tables([errors, absent_rows(absent, batch_id, ingest_time, self.source.root, max_bytes)])
        # App uploads are answered before the results commit: a batch redone after a crash answers them again.
        answered = self.answers.write(results, errors, active, batch_id) if self.answers is not None else []
        computed = time.perf_counter()
        self.lake.commit(batch_id, results, errors)
        committed_at = time.time()
        mtimes = pc.cast(rows.column("modification_time"), pa.int64()).to_pylist()  # epoch microseconds
        self.monitor.record(
            BatchMetrics(
                batch=batch_id,
                files=rows.num_rows + len(absent),
                rows=results.num_rows,
                errors=errors.num_rows,
                seconds=round(time.perf_counter() - started, 3),
                committed_at=committed_at,
                model_version=active.resolved.version,
                commit_seconds=round(time.perf_counter() - computed, 3),
                **prediction_summary(results),
                latencies=tuple(committed_at - us / 1e6 for us in mtimes if us is not None),
                source=self.source.mode,
                source_counts=self.source.counts(batch_id),
                error_reasons=error_reasons(errors),
                **answers_summary(answered),
            )
        )
        if self._applied is not active:  # the previous model's last batch is over
            self._applied.release()
            self._applied = active

    def inputs(self, files: DataFrame) -> DataFrame:
        """The batch's uploads with their label, as the data path reads them (any subset of them too)."""
        uploads = (
            files.withColumn("label", label_column("path", self.source.root))
            .withColumnRenamed("length", "size")
            .withColumnRenamed("modificationTime", "modification_time")
        )
        return self.source.readable(uploads, self.settings.max_image_bytes)

    def compute(self, batch_id: int, inputs: DataFrame, projection: ProjectionInUdf) -> pa.Table:
        """The batch's rows as Arrow (streaming.poison: a batch that fails on its data is narrowed down to
        the uploads that break it, which come back as `poison` rows; other failures are raised)."""
        rows, failure = poison.evaluate(self.rows(inputs, projection))
        if rows is not None:
            return rows
        return poison.isolate(batch_id, inputs, lambda subset: self.rows(subset, projection), failure)

    def rows(self, inputs: DataFrame, projection: ProjectionInUdf) -> DataFrame:
        """Every upload of `inputs` as one row: decoded, featurized and projected (one pandas UDF), or the
        reason it has no features; flagged `unread` when the source handed it over without content."""
        s = self.settings
        uploads = inputs.withColumn(UNREAD, F.col("content").isNull())
        uploads = poison.inject_faults(uploads, s.fault_injection)  # tests only: unchanged unless the setting is on
        featurized = featurize.featurize(uploads, self.featurizer, s.max_image_pixels, projection=projection)
        return featurized.select(*ROW_COLUMNS)

    def split(
        self, rows: pa.Table, batch_id: int, ingest_time: datetime, resolved: ResolvedModel
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
        return (
            results.select(RESULTS.schema.names).cast(RESULTS.schema),
            errors.select(ERRORS.schema.names).cast(ERRORS.schema),
        )


# ----------------------------------------------------------------------------- uploads that were not read
def with_unread_reasons(rows: pa.Table, max_bytes: int, missing: str) -> pa.Table:
    """Rows the source handed over without content, with the reason their size gives (fruits.reasons.unread_reason)."""
    flagged = [i for i, flag in enumerate(rows.column(UNREAD).to_pylist()) if flag]
    if not flagged:
        return rows
    sizes = rows.column("size").to_pylist()
    reasons, details = rows.column("reason").to_pylist(), rows.column("detail").to_pylist()
    for i in flagged:
        reasons[i], details[i] = unread_reason(sizes[i], max_bytes, missing)
    for name, values in (("reason", reasons), ("detail", details)):
        at = rows.schema.get_field_index(name)
        rows = rows.set_column(at, rows.schema.field(at), pa.array(values, rows.schema.field(at).type))
    return rows


def absent_rows(
    absent: list[tuple[str, FileStatus]], batch_id: int, ingest_time: datetime, source_root: str, max_bytes: int
) -> pa.Table:
    """Error rows for files the source listed but Spark never handed over: (path, (size, mtime) or None if gone).

    The scan filters out files over the size limit (too_large: never read) and skips zero-length
    files (empty) and files deleted since the listing (missing); a file that is still there, with
    bytes in it and under the limit, was replaced since the listing, and is missing too.
    """
    rows = []
    for path, status in absent:
        size, modified = status if status is not None else (None, None)
        missing = (
            "deleted after it was listed, before it could be read"
            if size is None
            else f"listed for this micro-batch but not read (now {size:,} bytes): replaced meanwhile?"
        )
        reason, detail = unread_reason(size, max_bytes, missing)
        rows.append(
            {
                "path": path,
                "label": label_from_path(path, source_root),
                "size": size,
                "modification_time": modified,
                "ingest_time": ingest_time,
                "reason": reason,
                "detail": detail,
                "batch_id": batch_id,
            }
        )
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
