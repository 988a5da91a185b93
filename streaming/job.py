"""Watch the images prefix; featurize, project and append each new upload to partitioned parquet.

A long-running Spark Structured Streaming job (EMR in production, local[*] here). The model is
resolved from the MLflow registry by alias at start (the version is pinned for the run) and
refused if it was fitted with a different featurizer. Two checkpointed queries, both exactly
once: results (Spark's file sink) and errors (files that cannot become features: empty,
undecodable, too large; one parquet file per micro-batch, written atomically). SIGTERM or
Ctrl-C stops after the current micro-batch; a restart resumes from the checkpoint.

Output (parquet):
  results: path, label, size, modification_time, ingest_time, features[1280], pca[k],
           model_name, model_version, featurizer_sha256; partitioned by ingest_date
  errors:  path, label, size, modification_time, ingest_time, reason, detail, batch_id;
           one file per micro-batch that had errors, not partitioned (errors are few)
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from fruits import registry
from fruits.exceptions import FruitsError, one_line
from fruits.featurize import Featurizer, check_compatible
from fruits.registry import ResolvedModel
from fruits.settings import Settings
from fruits.source import label_from_path
from fruits.spark import ensure_dir, get_spark, qualify
from streaming.frames import PARTITION_COLUMNS, errors_source, results_frame
from streaming.monitor import Monitor, make_listener
from streaming.quarantine import QuarantineWriter, remove_partial_writes

log = logging.getLogger("fruits.stream")
RESULTS_QUERY = "fruits-results"
ERRORS_QUERY = "fruits-errors"
AVAILABLE_NOW = "available-now"
ERRORS_BATCH_FACTOR = 4  # the errors query triggers 4x less often, with 4x more files per batch
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def trigger_options(trigger: str, slower: int = 1) -> dict[str, Any]:
    """'2s' -> processingTime='2000 milliseconds'; 'available-now' -> availableNow=True.

    Whole milliseconds always (Spark rejects '1.5 minutes'); `slower` stretches the interval
    (the errors query runs less often).
    """
    if trigger == AVAILABLE_NOW:
        return {"availableNow": True}
    match = _INTERVAL.match(trigger.strip())
    milliseconds = round(float(match[1]) * _UNIT_MS[match[2]]) if match else 0
    if milliseconds < 1:
        raise FruitsError(f"--trigger must be an interval like 2s, 500ms, 1m or '{AVAILABLE_NOW}', got {trigger!r}")
    return {"processingTime": f"{milliseconds * slower} milliseconds"}


class StreamingJob:
    """The query lifecycle: resolve + check the model, start both queries, stop cleanly, summarise."""

    def __init__(self, settings: Settings, model_uri: str | None = None, spark: SparkSession | None = None):
        self.settings = settings
        self.model_uri = model_uri or f"models:/{settings.model_name}@{settings.alias}"
        self.trigger = trigger_options(settings.trigger)
        self.spark = spark
        self.queries: list[StreamingQuery] = []
        self.resolved: ResolvedModel | None = None
        self.monitor: Monitor | None = None
        self._stop_requested = threading.Event()
        self._stop_now = threading.Event()
        self._started_at = 0.0
        self._listener = None

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        s = self.settings
        uris = [s.source_uri, s.output_uri, s.errors_uri, s.checkpoint_uri]
        self.spark = self.spark or get_spark(s, "fruits-stream", uris=uris)
        client = registry.connect(s)
        self.resolved = registry.resolve(client, self.model_uri)
        featurizer = Featurizer.load(s)
        check_compatible(self.resolved.spec, featurizer.spec, self.resolved.label)
        model = registry.load_spark_model(self.resolved)
        log.info("model %s resolved to version %s (run %s); featurizer %s", self.model_uri, self.resolved.version,
                 self.resolved.run_id, featurizer.spec.describe())

        ensure_dir(self.spark, s.source_uri)  # a stream source must exist when the query starts
        source_root = qualify(self.spark, s.source_uri)
        self.monitor = Monitor(RESULTS_QUERY, s.progress_log)
        self._listener = make_listener(self.monitor)
        self.spark.streams.addListener(self._listener)

        results = results_frame(self.spark, s, s.source_uri, source_root, featurizer, model, self.resolved)
        checkpoint = s.checkpoint_uri.rstrip("/")
        remove_partial_writes(self.spark, s.errors_uri)
        quarantine = QuarantineWriter(
            s, f"{checkpoint}/errors", lambda path: label_from_path(path, source_root), self.monitor.on_errors
        )
        self._started_at = time.perf_counter()
        # Quarantine needs no low latency: fewer, larger batches leave the cores to the
        # featurizer (measured: running it at the results' pace cost a third of the throughput).
        errors_settings = s.replace(max_files_per_trigger=ERRORS_BATCH_FACTOR * s.max_files_per_trigger)
        self.queries.append(
            errors_source(self.spark, errors_settings, s.source_uri, source_root)
            .writeStream.queryName(ERRORS_QUERY)
            .foreachBatch(quarantine)
            .option("checkpointLocation", f"{checkpoint}/errors")
            .trigger(**trigger_options(s.trigger, slower=ERRORS_BATCH_FACTOR))
            .start()
        )
        self.queries.append(
            results.writeStream.queryName(RESULTS_QUERY)
            .format("parquet")
            .outputMode("append")
            .partitionBy(*PARTITION_COLUMNS)
            .option("path", s.output_uri)
            .option("checkpointLocation", f"{checkpoint}/results")
            .trigger(**self.trigger)
            .start()
        )
        log.info("watching %s -> %s (errors %s), trigger %s, at most %d files per batch",
                 s.source_uri, s.output_uri, s.errors_uri, s.trigger, s.max_files_per_trigger)

    # ------------------------------------------------------------------ run / stop
    def run_until_stopped(self, handle_signals: bool = False, timeout: float | None = None) -> None:
        """Block until the queries end (available-now), a stop is requested, or `timeout` passes."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop_requested.is_set():
                active = [q for q in self.queries if q.isActive]
                if not active:
                    break
                active[0].awaitTermination(0.5)  # short waits let Python handle signals
                self.raise_if_failed()
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
        """Block until everything in the source right now is committed by both queries (tests, demos)."""
        for query in self.queries:
            query.processAllAvailable()
        self._drain_progress_events()

    def _drain_progress_events(self) -> None:
        """Progress events reach the listener asynchronously: wait until the monitor has them all."""
        if self.spark is not None:
            self.spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()

    def stop(self, grace_seconds: float = 120.0) -> None:
        """Stop after the micro-batch each query is running now has committed (bounded wait).

        Under a backlog the next batch starts as soon as one commits, so "wait until idle" could
        wait forever: instead, note each busy query's last completed batch and stop once every
        one has moved past it. A batch started meanwhile is interrupted and redone from the
        checkpoint on restart, so nothing is lost or written twice either way.
        """
        deadline = time.monotonic() + grace_seconds
        running = {q.id: _last_batch(q) for q in self.queries if q.isActive and q.status.get("isTriggerActive")}

        def settled(query: StreamingQuery) -> bool:
            return (
                query.id not in running
                or not query.isActive
                or not query.status.get("isTriggerActive")
                or _last_batch(query) > running[query.id]
            )

        while time.monotonic() < deadline and not self._stop_now.is_set() and not all(settled(q) for q in self.queries):
            time.sleep(0.05)
        for query in self.queries:
            if query.isActive:
                query.stop()
        if self._listener is not None and self.spark is not None:
            self._drain_progress_events()  # the last batches must reach the summary
            self.spark.streams.removeListener(self._listener)
            self._listener = None

    def raise_if_failed(self) -> None:
        """A failed query as a one-line FruitsError (the full trace is in Spark's log)."""
        for query in self.queries:
            error = query.exception()
            if error is not None:
                raise FruitsError(f"streaming query {query.name} failed: {one_line(error)}")

    # ------------------------------------------------------------------ report
    def summary(self) -> dict[str, Any]:
        totals = self.monitor.snapshot() if self.monitor else None
        elapsed = time.perf_counter() - self._started_at if self._started_at else 0.0
        summary = {
            "rows": totals.rows if totals else 0,
            "errors": totals.errors if totals else 0,
            "batches": totals.batches if totals else 0,
            "files": totals.input if totals else 0,
            "model_name": self.resolved.name if self.resolved else None,
            "model_version": self.resolved.version if self.resolved else None,
            "seconds": round(elapsed, 2),
            "rows_per_second": round(totals.input / totals.busy_seconds, 1) if totals and totals.busy_seconds else None,
            "output": self.settings.output_uri,
            "errors_output": self.settings.errors_uri,
            "checkpoint": self.settings.checkpoint_uri,
            "progress_log": str(self.settings.progress_log),
        }
        summary.update(totals.latency_percentiles() if totals else {})
        return summary


def _last_batch(query: StreamingQuery) -> int:
    """Id of the last micro-batch the query completed (-1 before the first)."""
    return int((query.lastProgress or {}).get("batchId", -1))
