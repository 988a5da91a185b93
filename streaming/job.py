"""The streaming job's lifecycle: resolve and check the model, run ONE query, stop cleanly, summarise.

A long-running Spark Structured Streaming job (EMR in production, local[*] here). The model is
resolved from the MLflow registry by alias at start (the version is pinned for the run) and
refused if it was fitted with a different featurizer. Each micro-batch is streaming.batch's
MicroBatch: every upload read once, both Delta tables committed once (fruits.sinks).

Stopping: SIGTERM or Ctrl-C, `request_stop()`, or a `_stop` marker file/object under the
checkpoint (what `fruits emr stop` writes on a cluster, where signals do not reach the Python
driver) all stop after the current micro-batch; a second signal stops at once. Whatever is
interrupted is redone from the checkpoint on restart, and the tables skip what they already have.

Source: the upload notifications on an SQS queue when `settings.notifications` names one
(fruits.notifications: no listing but a periodic backfill), else Spark's file source, which lists
the prefix on every trigger (local landing folders, tests, and the way to re-read everything).

Background threads (not with --trigger available-now): every `maintenance_interval` the tables'
small files are compacted and unreferenced ones vacuumed (fruits.lake.maintain; compaction
commits alongside the stream's appends without conflict, so ingestion never pauses for it), and
every `model_refresh_interval` the model alias is re-resolved: a new compatible champion is
swapped in between micro-batches with no restart (streaming.models).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from fruits import lake, notifications, registry, source
from fruits.contracts import STOP_MARKER  # under the checkpoint: stop after the current micro-batch
from fruits.exceptions import FruitsError, one_line
from fruits.featurize import Featurizer, check_compatible
from fruits.settings import AVAILABLE_NOW, Settings, interval_seconds
from fruits.sinks import LakeWriter
from fruits.spark import ensure_dir, get_spark, hadoop_fs, qualify, storage_errors
from streaming.answers import open_answers
from streaming.batch import (
    LISTING,
    NOTIFICATIONS,
    ActiveModel,
    ListingStrategy,
    MicroBatch,
    NotificationStrategy,
    SourceStrategy,
)
from streaming.lease import CheckpointLease
from streaming.models import ModelWatcher
from streaming.monitor import MIRROR_EVERY_S, Monitor, ProgressMirror

log = logging.getLogger("fruits.stream")
QUERY_NAME = "fruits-stream"
IDENTITY_FILE = "fruits-stream.json"  # under the checkpoint: this stream's id (the tables' app id)
STOP_MARKER_POLL_S = 5.0
# Every Py4J proxy the driver has called a method on sits in a reference cycle (JavaObject <-> its
# JavaMembers, py4j#548), so only Python's cycle collector frees it, and only then does the JVM let go
# of the Java object: each micro-batch's Dataset with its plan, file list and Hadoop-configuration
# broadcast. Left to Python's own schedule these piled up in the JVM for minutes (bench/soak.py).
PY4J_COLLECT_EVERY_S = 30.0


def trigger_options(trigger: str) -> dict[str, Any]:
    """'2s' -> processingTime='2000 milliseconds'; 'available-now' -> availableNow=True."""
    if trigger == AVAILABLE_NOW:
        return {"availableNow": True}
    seconds = interval_seconds(trigger, "--trigger", extra=f"or '{AVAILABLE_NOW}'")
    return {"processingTime": f"{round(seconds * 1000)} milliseconds"}  # whole ms: Spark rejects '1.5 minutes'


class StreamingJob:
    """Start, run until stopped, stop after the current micro-batch, summarise."""

    def __init__(self, settings: Settings, model_uri: str | None = None, spark: SparkSession | None = None):
        self.settings = settings
        self.source_mode = NOTIFICATIONS if settings.notifications else LISTING
        self.model_uri = model_uri or settings.model_uri
        self.trigger = trigger_options(settings.trigger)
        self.maintenance_every = settings.maintenance_interval_seconds
        self.model_refresh_every = settings.model_refresh_interval_seconds
        self.spark = spark
        self.query: StreamingQuery | None = None
        self.batch: MicroBatch | None = None
        self.monitor = Monitor(settings.progress_log, ProgressMirror.under_checkpoint(settings))
        self.app_id: str | None = None
        self._stop_requested = threading.Event()
        self._stop_now = threading.Event()
        self._background: list[threading.Thread] = []
        self._lease: CheckpointLease | None = None
        self._started_at = 0.0

    @property
    def resolved(self) -> registry.ResolvedModel | None:
        return self.batch.model.resolved if self.batch else None

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        s = self.settings
        # The notification source reads S3 with boto3: only the listing makes Spark itself read the source.
        uris = [s.checkpoint_uri] if self.source_mode == NOTIFICATIONS else [s.source_uri, s.checkpoint_uri]
        self.spark = self.spark or get_spark(s, "fruits-stream", uris=uris)
        client = registry.connect(s)
        resolved = registry.resolve(client, self.model_uri)
        featurizer = Featurizer.load(s)
        check_compatible(resolved.spec, featurizer.spec, resolved.label)
        model = ActiveModel.load(self.spark, resolved)
        log.info(
            "model %s resolved to version %s (run %s); featurizer %s",
            self.model_uri,
            resolved.version,
            resolved.run_id,
            featurizer.spec.describe(),
        )

        checkpoint = s.checkpoint_uri.rstrip("/")
        self._lease = CheckpointLease(self.spark, checkpoint)
        self._lease.acquire()  # one stream per checkpoint: a second one stops here, before any work
        self.app_id = stream_identity(self.spark, checkpoint, s)
        self.clear_stop_marker()
        files, uploads = self._source(checkpoint)
        self.batch = MicroBatch(
            s,
            uploads,
            featurizer=featurizer,
            model=model,
            lake=LakeWriter(s, self.app_id),
            monitor=self.monitor,
            answers=open_answers(s, uploads.root),
        )
        self._started_at = time.perf_counter()
        self.query = (
            files.writeStream.queryName(QUERY_NAME)
            .foreachBatch(self.batch)
            .option("checkpointLocation", checkpoint)
            .trigger(**self.trigger)
            .start()
        )
        if s.trigger != AVAILABLE_NOW:  # a drain is short: nothing to maintain or swap meanwhile
            if self.monitor.mirror is not None:
                self._run_in_background(
                    "progress-mirror", lambda: self.monitor.mirror.run(MIRROR_EVERY_S, self._stop_requested)
                )
            if self.maintenance_every:
                self._run_in_background("lake-maintenance", self._maintain_periodically)
            if self.model_refresh_every:
                watcher = ModelWatcher(
                    client,
                    self.model_uri,
                    featurizer.spec,
                    lambda: self.batch.model,
                    lambda resolved: ActiveModel.load(self.spark, resolved),
                    self._swap_model,
                    self.monitor.swapped,
                    self.monitor.refused,
                )
                self._run_in_background(
                    "model-watch", lambda: watcher.run(self.model_refresh_every, self._stop_requested)
                )
        via = f"the notifications on {s.notifications}" if s.notifications else "listing it every trigger"
        log.info(
            "watching %s (%s) -> %s (errors %s), trigger %s, at most %d files per batch",
            s.source_uri,
            via,
            s.output_uri,
            s.errors_uri,
            s.trigger,
            s.max_files_per_trigger,
        )

    def _source(self, checkpoint: str) -> tuple[DataFrame, SourceStrategy]:
        """The streaming DataFrame of uploads (binaryFile columns), and what MicroBatch needs to know of it."""
        s = self.settings
        if self.source_mode == NOTIFICATIONS:
            config = notifications.reader_config(
                s,
                drain=s.trigger == AVAILABLE_NOW,
                partitions=self.spark.sparkContext.defaultParallelism,
                log_level=logging.getLevelName(log.getEffectiveLevel()),
            )
            return notifications.read_stream(self.spark, config), NotificationStrategy(
                s.source_uri.rstrip("/"), config.store()
            )
        ensure_dir(self.spark, s.source_uri)  # a stream source must exist when the query starts
        files = source.read_images(self.spark, s.source_uri, stream=True, max_files_per_trigger=s.max_files_per_trigger)
        return files, ListingStrategy(qualify(self.spark, s.source_uri), checkpoint)

    def _run_in_background(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._background.append(thread)

    def _swap_model(self, model: ActiveModel) -> None:
        self.batch.model = model  # one attribute write: the next micro-batch reads it once, at its start

    # ------------------------------------------------------------------ run / stop
    def run_until_stopped(self, handle_signals: bool = False, timeout: float | None = None) -> None:
        """Block until the query ends (available-now), a stop is requested, or `timeout` passes."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        deadline = None if timeout is None else time.monotonic() + timeout
        next_marker_check = time.monotonic() + STOP_MARKER_POLL_S
        next_collect = time.monotonic() + PY4J_COLLECT_EVERY_S
        try:
            while not self._stop_requested.is_set() and self.query is not None and self.query.isActive:
                self.query.awaitTermination(0.5)  # short waits let Python handle signals
                self.raise_if_failed()
                if self._lease is not None and self._lease.lost.is_set():
                    self.stop()
                    raise FruitsError("another stream took this checkpoint over (this one looked dead): stopped")
                if time.monotonic() >= next_marker_check:
                    next_marker_check = time.monotonic() + STOP_MARKER_POLL_S
                    if self.stop_marker_present():
                        log.info("stop marker %s found: stopping after the current micro-batch", self._marker_uri())
                        self._stop_requested.set()
                if time.monotonic() >= next_collect:
                    next_collect = time.monotonic() + PY4J_COLLECT_EVERY_S
                    collect_py4j_garbage()
                if deadline is not None and time.monotonic() > deadline:
                    break
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.raise_if_failed()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            log.warning("%s again: stopping now; the interrupted micro-batch is redone on restart", name)
            self._stop_now.set()
            return
        log.info("%s received: stopping after the current micro-batch (again to stop now)", name)
        self._stop_requested.set()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def process_available(self) -> None:
        """Block until everything in the source right now is committed (tests, demos)."""
        if self.query is not None:
            self.query.processAllAvailable()

    def stop(self, grace_seconds: float = 120.0) -> None:
        """Stop after the micro-batch running now has committed (bounded wait).

        A batch Spark starts in the meantime is interrupted; it is redone from the checkpoint on
        restart and the tables skip anything it had already committed.
        """
        self._stop_requested.set()
        deadline = time.monotonic() + grace_seconds
        while (
            self.batch is not None
            and self.batch.running.is_set()
            and not self._stop_now.is_set()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        if self.query is not None and self.query.isActive:
            self.query.stop()
        for thread in self._background:
            thread.join(timeout=grace_seconds)
        self._background = []
        if self.monitor.mirror is not None:
            self.monitor.mirror.flush()
        if self.batch is not None and self.batch.answers is not None:
            self.batch.answers.close()
        if self.query is not None and self.stop_marker_present():
            self.clear_stop_marker()
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def raise_if_failed(self) -> None:
        """A failed query as a one-line FruitsError (the full trace is in Spark's log)."""
        error = self.query.exception() if self.query is not None else None
        if error is not None:
            raise FruitsError(f"the stream failed: {cause_of(error)}")

    # ------------------------------------------------------------------ stop marker
    def _marker_uri(self) -> str:
        return f"{self.settings.checkpoint_uri.rstrip('/')}/{STOP_MARKER}"

    def stop_marker_present(self) -> bool:
        try:
            fs, path = hadoop_fs(self.spark, self._marker_uri())
            return bool(fs.exists(path))
        except Exception as exc:  # a storage hiccup must not stop the stream
            log.warning("cannot check the stop marker %s: %s", self._marker_uri(), one_line(exc))
            return False

    def clear_stop_marker(self) -> None:
        with storage_errors(self._marker_uri(), "delete"):
            fs, path = hadoop_fs(self.spark, self._marker_uri())
            if fs.exists(path):
                fs.delete(path, False)

    # ------------------------------------------------------------------ maintenance
    def _maintain_periodically(self) -> None:
        while not self._stop_requested.wait(self.maintenance_every):
            for uri in (self.settings.output_uri, self.settings.errors_uri):
                try:
                    lake.maintain(self.settings, uri)
                except Exception as exc:  # the next pass tries again; ingestion goes on regardless
                    log.warning("maintenance of %s failed: %s", uri, one_line(exc))

    # ------------------------------------------------------------------ report
    def summary(self) -> dict[str, Any]:
        totals = self.monitor.snapshot()
        resolved = self.resolved
        elapsed = time.perf_counter() - self._started_at if self._started_at else 0.0
        summary = {
            "source_mode": self.source_mode,
            "source_counts": dict(totals.source_counts) if self.source_mode == NOTIFICATIONS else None,
            "notification_queue": self.settings.notifications,
            "rows": totals.rows,
            "errors": totals.errors,
            "poisoned": totals.poisoned,  # of `errors`: uploads that failed their batch (streaming.poison)
            "batches": totals.batches,
            "files": totals.files,
            "model_name": resolved.name if resolved else None,
            "model_version": resolved.version if resolved else None,
            "model_versions": totals.model_versions,  # every version the batches used, in order
            "model_swaps": totals.model_swaps,
            "seconds": round(elapsed, 2),
            "rows_per_second": round(totals.files / totals.busy_seconds, 1) if totals.busy_seconds else None,
            "output": self.settings.output_uri,
            "errors_output": self.settings.errors_uri,
            "checkpoint": self.settings.checkpoint_uri,
            "progress_log": str(self.settings.progress_log),
        }
        summary.update(totals.latency_percentiles())
        return summary


def collect_py4j_garbage() -> None:
    """Run Python's cycle collector (see PY4J_COLLECT_EVERY_S)."""
    started = time.perf_counter()
    freed = gc.collect()
    log.debug("gc.collect(): %d objects freed in %.0f ms", freed, (time.perf_counter() - started) * 1000)


def stream_identity(spark: SparkSession, checkpoint: str, settings: Settings) -> str:
    """This stream's id, kept in its checkpoint: created at the first start, read at every restart.

    The tables record each micro-batch under this id, so a new checkpoint (a reset stream, whose
    batch ids start again at 0) is never mistaken for the old one.
    """
    uri = f"{checkpoint}/{IDENTITY_FILE}"
    jvm = spark.sparkContext._jvm
    with storage_errors(uri, "use the checkpoint"):
        fs, path = hadoop_fs(spark, uri)
        if not fs.exists(path):
            identity = {
                "app_id": f"fruits-stream-{uuid.uuid4()}",
                "results": settings.output_uri,
                "errors": settings.errors_uri,
            }
            stream = fs.create(path, False)  # no overwrite: a concurrent first start fails here, not later
            try:
                stream.write(bytearray(json.dumps(identity).encode()))
            finally:
                stream.close()
        reader = fs.open(path)
        try:
            identity = json.loads(bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(reader)).decode())
        finally:
            reader.close()
    for table, now in (("results", settings.output_uri), ("errors", settings.errors_uri)):
        if identity.get(table) not in (None, now):
            log.warning("this checkpoint wrote its %s to %s before, now to %s", table, identity[table], now)
    return identity["app_id"]


def cause_of(error: Any) -> str:
    """The message a person needs from a failed query: our own FruitsError if the batch raised one."""
    text = str(error)
    marker = "fruits.exceptions.FruitsError: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0]
    return one_line(error)
