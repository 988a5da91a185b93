"""Observability: one log line per micro-batch, the same numbers as JSON lines, and run totals.

The results query's numbers come from a StreamingQueryListener and `observe()` metrics
computed as each batch flowed (no extra pass over the data); the errors query reports its
committed error rows itself (the quarantine writer calls `on_errors`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql.streaming import StreamingQueryListener

from streaming.frames import RESULTS_METRICS

log = logging.getLogger("fruits.stream")
PROGRESS_LOG_MAX_BYTES = 16 * 1024 * 1024
LATENCY_WINDOW = 100_000  # per-file latencies kept for percentiles (bounded memory on a long run)


@dataclass
class Totals:
    batches: int = 0  # results batches that had input
    input: int = 0
    rows: int = 0
    rejected: int = 0
    errors: int = 0  # rows committed to the errors table (includes files the results query never saw)
    busy_seconds: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def latency_percentiles(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"latency_p50_s": None, "latency_p95_s": None, "latency_max_s": None}
        values = np.fromiter(self.latencies, dtype=float)
        return {
            "latency_p50_s": round(float(np.percentile(values, 50)), 3),
            "latency_p95_s": round(float(np.percentile(values, 95)), 3),
            "latency_max_s": round(float(values.max()), 3),
        }


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class Monitor:
    """Per-batch progress of the results query and error counts of the quarantine (thread-safe)."""

    def __init__(self, results_query: str, progress_log: Path | None):
        self.results_query = results_query
        self.progress_log = progress_log
        self.totals = Totals()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ listener side
    def on_progress(self, progress: Any) -> None:
        if progress.name == self.results_query:
            self._append(self._results_batch(progress))

    def on_errors(self, batch_id: int, errors: int) -> None:
        """Called by the quarantine writer after it committed a batch's error rows."""
        with self._lock:
            self.totals.errors += errors
        if errors:
            self._append({"query": "errors", "batch": batch_id, "errors": errors})

    def _append(self, record: dict[str, Any] | None) -> None:
        if record is None or self.progress_log is None:
            return
        self.progress_log.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # A stream runs for weeks: keep the current file and one previous, each under the cap.
            if self.progress_log.exists() and self.progress_log.stat().st_size > PROGRESS_LOG_MAX_BYTES:
                self.progress_log.replace(self.progress_log.with_name(self.progress_log.name + ".1"))
            with self.progress_log.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _results_batch(self, progress: Any) -> dict[str, Any] | None:
        metrics = progress.observedMetrics.get(RESULTS_METRICS)
        n_in = int(progress.numInputRows)
        if not n_in or metrics is None:
            return None
        duration = progress.batchDuration / 1000.0
        committed = _epoch(progress.timestamp) + duration
        latencies = [committed - us / 1e6 for us in (metrics["mtimes_us"] or [])]
        rejected = int(metrics["rejected"] or 0)
        record = {
            "query": "results",
            "batch": progress.batchId,
            "input": n_in,
            "written": n_in - rejected,
            "errors": rejected,
            "duration_s": round(duration, 3),
            "rows_per_s": round(n_in / duration, 1) if duration else None,
            "latency_p50_s": round(float(np.median(latencies)), 3) if latencies else None,
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "committed_at": committed,
        }
        with self._lock:
            t = self.totals
            t.batches += 1
            t.input += n_in
            t.rows += n_in - rejected
            t.rejected += rejected
            t.busy_seconds += duration
            t.latencies.extend(latencies)
        log.info(
            "batch %d: %d in, %d written, %d errors, %.1f rows/s, %.2f s, latency p50 %.1f s max %.1f s",
            progress.batchId, n_in, n_in - rejected, rejected, record["rows_per_s"] or 0.0, duration,
            record["latency_p50_s"] or 0.0, record["latency_max_s"] or 0.0,
        )
        return record

    # ------------------------------------------------------------------ caller side
    def snapshot(self) -> Totals:
        with self._lock:
            t = self.totals
            return Totals(t.batches, t.input, t.rows, t.rejected, t.errors, t.busy_seconds, deque(t.latencies))


def make_listener(monitor: Monitor) -> StreamingQueryListener:
    class _Listener(StreamingQueryListener):
        def onQueryStarted(self, event):  # noqa: N802 (Spark's names)
            log.debug("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):  # noqa: N802
            try:
                monitor.on_progress(event.progress)
            except Exception:  # a broken log line must never take the stream down
                log.exception("could not record progress")

        def onQueryIdle(self, event):  # noqa: N802
            pass

        def onQueryTerminated(self, event):  # noqa: N802
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])

    return _Listener()
