"""Observability: one log line per micro-batch, the same numbers as a JSON line, and run totals.

The micro-batch itself measures what it did (`BatchMetrics`): no listener, no extra pass over the
data. The JSON lines (`<state>/stream-progress.jsonl`, rotated) are the contract for scripts,
benchmarks and `fruits report`: one `{"event": "batch", ...}` per micro-batch and one
`{"event": "model_swap", ...}` per hot model swap (`model_refused` for an incompatible one). The log line is for people and may change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fruits.stream")
PROGRESS_LOG_MAX_BYTES = 16 * 1024 * 1024
LATENCY_WINDOW = 100_000  # per-file latencies kept for percentiles (bounded memory on a long run)


def percentiles(latencies: Any) -> dict[str, float | None]:
    values = np.fromiter(latencies, dtype=float)
    if not len(values):
        return {"latency_p50_s": None, "latency_p95_s": None, "latency_max_s": None}
    return {
        "latency_p50_s": round(float(np.percentile(values, 50)), 3),
        "latency_p95_s": round(float(np.percentile(values, 95)), 3),
        "latency_max_s": round(float(values.max()), 3),
    }


@dataclass(frozen=True)
class BatchMetrics:
    """What one committed micro-batch did. `latencies`: upload -> commit, one per file, seconds."""

    batch: int
    files: int
    rows: int
    errors: int
    seconds: float
    committed_at: float  # epoch seconds
    model_version: str
    latencies: tuple[float, ...] = ()
    commit_seconds: float = 0.0  # of `seconds`: the Delta commits (the rest: read, featurize, project, collect)
    replayed: bool = False  # committed before a restart: skipped, nothing written again
    poisoned: int = 0  # of `errors`: uploads that failed the batch, isolated as `poison` rows (streaming.poison)
    # What the model said about this batch (None when the model has no classifier head).
    predictions: dict[str, int] | None = None  # class -> rows
    mean_confidence: float | None = None
    novel_fraction: float | None = None
    source: str = "listing"  # which source fed the batch: "listing" or "notifications"
    source_counts: dict[str, int] | None = None  # notifications: what the source skipped or found (duplicates...)

    def record(self) -> dict[str, Any]:
        """The JSON line (`event` "batch")."""
        record = {"event": "batch", **{k: v for k, v in asdict(self).items() if k != "latencies"}}
        record["rows_per_s"] = round(self.files / self.seconds, 1) if self.seconds else None
        record.update(percentiles(self.latencies))
        return record


@dataclass
class Totals:
    batches: int = 0  # micro-batches that committed input
    files: int = 0
    rows: int = 0
    errors: int = 0
    poisoned: int = 0
    busy_seconds: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    model_swaps: int = 0
    model_refusals: int = 0  # alias moves to a model fitted with another featurizer: refused, old model kept
    model_versions: list[str] = field(default_factory=list)  # in the order the batches used them
    source_counts: Counter = field(default_factory=Counter)  # notifications: skipped, duplicates, backfilled...

    def latency_percentiles(self) -> dict[str, float | None]:
        return percentiles(self.latencies)


class Monitor:
    """Collects BatchMetrics from the micro-batch thread; read by the job (thread-safe)."""

    def __init__(self, progress_log: Path | None):
        self.progress_log = progress_log
        self.totals = Totals()
        self._lock = threading.Lock()

    def record(self, metrics: BatchMetrics) -> None:
        if not metrics.replayed:
            with self._lock:
                t = self.totals
                if not t.model_versions or t.model_versions[-1] != metrics.model_version:
                    t.model_versions.append(metrics.model_version)
                t.batches += 1
                t.files += metrics.files
                t.rows += metrics.rows
                t.errors += metrics.errors
                t.poisoned += metrics.poisoned
                t.busy_seconds += metrics.seconds
                t.latencies.extend(metrics.latencies)
                t.source_counts.update(metrics.source_counts or {})
        record = metrics.record()
        self._append(record)
        if metrics.replayed:
            log.info("batch %d: committed before the restart, skipped", metrics.batch)
            return
        skipped = {k: v for k, v in (metrics.source_counts or {}).items()
                   if v and k in ("duplicates", "malformed", "test_events", "backfilled")}
        log.info(
            "batch %d: %d files, %d rows, %d errors%s, %.1f files/s, %.2f s, upload->commit p50 %.1f s max %.1f s%s",
            metrics.batch, metrics.files, metrics.rows, metrics.errors,
            f" ({metrics.poisoned} poison)" if metrics.poisoned else "", record["rows_per_s"] or 0.0, metrics.seconds,
            record["latency_p50_s"] or 0.0, record["latency_max_s"] or 0.0,
            f" ({metrics.source}: {', '.join(f'{v} {k}' for k, v in skipped.items())})" if skipped else "",
        )

    def swapped(self, old: str, new: str) -> None:
        """The stream's model moved from version `old` to `new` (used from the next micro-batch)."""
        with self._lock:
            self.totals.model_swaps += 1
        self._append({"event": "model_swap", "from_version": old, "to_version": new, "at": time.time()})

    def refused(self, version: str, reason: str) -> None:
        with self._lock:
            self.totals.model_refusals += 1
        self._append({"event": "model_refused", "version": version, "reason": reason, "at": time.time()})

    def _append(self, record: dict[str, Any]) -> None:
        if self.progress_log is None:
            return
        self.progress_log.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # A stream runs for weeks: keep the current file and one previous, each under the cap.
            if self.progress_log.exists() and self.progress_log.stat().st_size > PROGRESS_LOG_MAX_BYTES:
                self.progress_log.replace(self.progress_log.with_name(self.progress_log.name + ".1"))
            with self.progress_log.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def snapshot(self) -> Totals:
        with self._lock:
            t = self.totals
            return Totals(t.batches, t.files, t.rows, t.errors, t.poisoned, t.busy_seconds, deque(t.latencies),
                          t.model_swaps, t.model_refusals, list(t.model_versions), Counter(t.source_counts))


def read_progress(progress_log: Path, since: float | None = None) -> tuple[list[dict], list[dict]]:
    """(micro-batches, model swaps) from a progress log and its rotated `.1` file, oldest first.

    Replayed batches (committed before a restart) are left out; `since` (epoch seconds) keeps
    only what happened from then on, e.g. one run of a stream whose state dir is reused.
    """
    files = [p for p in (progress_log.with_name(progress_log.name + ".1"), progress_log) if p.is_file()]
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    batches = [r for r in records if r.get("event") == "batch" and not r.get("replayed")
               and (since is None or r["committed_at"] >= since)]
    swaps = [r for r in records if r.get("event") == "model_swap" and (since is None or r["at"] >= since)]
    return batches, swaps
