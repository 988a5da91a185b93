"""Observability: one log line per micro-batch, the same numbers as a JSON line, and run totals.

The micro-batch itself measures what it did (`BatchMetrics`): no listener, no extra pass over the
data. The JSON lines (`<state>/stream-progress.jsonl`, rotated) are the contract for scripts,
benchmarks and `fruits report`: one `{"event": "batch", ...}` per micro-batch and one
`{"event": "model_swap", ...}` per hot model swap (`model_refused` for an incompatible one). The log line is for people and may change.

The same records are mirrored under the checkpoint (`ProgressMirror`: `<checkpoint>/progress/`,
local or S3), so a reader on another machine than the stream's driver (the app's /ops, the stream
on EMR) reads them back with `read_mirrored_progress(settings, since)`. streaming.ops turns either
source into the ops numbers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruits.exceptions import FruitsError, one_line
from fruits.reasons import POISON
from fruits.settings import Settings
from fruits.storage import CheckpointStore

log = logging.getLogger("fruits.stream")
PROGRESS_LOG_MAX_BYTES = 16 * 1024 * 1024
LATENCY_WINDOW = 100_000  # per-file latencies kept for percentiles (bounded memory on a long run)
MIRROR_FOLDER = "progress"  # under the checkpoint (ProgressMirror)
MIRROR_SEGMENT_S = 600
MIRROR_EVERY_S = 5.0
MIRROR_RETENTION_S = 7 * 86400


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
    # What the model said about this batch (None when the model has no classifier head).
    predictions: dict[str, int] | None = None  # class -> rows
    mean_confidence: float | None = None
    novel_fraction: float | None = None
    source: str = "listing"  # which source fed the batch: "listing" or "notifications"
    source_counts: dict[str, int] | None = None  # notifications: what the source skipped or found (duplicates...)
    error_reasons: dict[str, int] | None = None  # reason -> error rows of this batch (`error_reasons(errors)`)
    answers: int = 0  # app uploads answered (or rejected) in the answers store (streaming.answers)
    answer_latencies: tuple[float, ...] = ()  # of those: upload -> answer written, seconds

    @property
    def poisoned(self) -> int:
        """Error rows of uploads that failed the whole batch (reason `poison`: streaming.poison)."""
        return (self.error_reasons or {}).get(POISON, 0)

    def record(self) -> dict[str, Any]:
        """The JSON line (`event` "batch"). Its `latencies_ms` and `answer_latencies_ms` (every file's, whole
        milliseconds) let `stream_stats` take exact percentiles over any window of batches."""
        record = {
            "event": "batch",
            **{k: v for k, v in asdict(self).items() if k not in ("latencies", "answer_latencies")},
        }
        record["rows_per_s"] = round(self.files / self.seconds, 1) if self.seconds else None
        record.update(percentiles(self.latencies))
        record["latencies_ms"] = [round(x * 1000) for x in self.latencies]
        record["answer_latencies_ms"] = [round(x * 1000) for x in self.answer_latencies]
        return record


def error_reasons(errors: pa.Table) -> dict[str, int]:
    """A batch's error rows counted by reason."""
    return (
        {c["values"]: c["counts"] for c in pc.value_counts(errors.column("reason")).to_pylist()}
        if errors.num_rows
        else {}
    )


@dataclass
class Totals:
    batches: int = 0  # micro-batches that committed input
    files: int = 0
    rows: int = 0
    errors: int = 0
    poisoned: int = 0  # of `errors`: uploads that failed their batch, isolated as `poison` rows (streaming.poison)
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

    def __init__(self, progress_log: Path | None, mirror: ProgressMirror | None = None):
        self.progress_log = progress_log
        self.mirror = mirror
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
        skipped = {
            k: v
            for k, v in (metrics.source_counts or {}).items()
            if v and k in ("duplicates", "malformed", "test_events", "backfilled")
        }
        log.info(
            "batch %d: %d files, %d rows, %d errors%s, %.1f files/s, %.2f s, upload->commit p50 %.1f s max %.1f s%s",
            metrics.batch,
            metrics.files,
            metrics.rows,
            metrics.errors,
            f" ({metrics.poisoned} poison)" if metrics.poisoned else "",
            record["rows_per_s"] or 0.0,
            metrics.seconds,
            record["latency_p50_s"] or 0.0,
            record["latency_max_s"] or 0.0,
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
        if self.mirror is not None:
            self.mirror.add(record)
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
            return Totals(
                t.batches,
                t.files,
                t.rows,
                t.errors,
                t.poisoned,
                t.busy_seconds,
                deque(t.latencies),
                t.model_swaps,
                t.model_refusals,
                list(t.model_versions),
                Counter(t.source_counts),
            )


def read_progress(progress_log: Path, since: float | None = None) -> tuple[list[dict], list[dict]]:
    """(micro-batches, model swaps) from a progress log and its rotated `.1` file, oldest first.

    Replayed batches (committed before a restart) are left out; `since` (epoch seconds) keeps
    only what happened from then on, e.g. one run of a stream whose state dir is reused.
    """
    files = [p for p in (progress_log.with_name(progress_log.name + ".1"), progress_log) if p.is_file()]
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    return select(records, since)


def select(
    records: list[dict], since: float | None = None, until: float | None = None
) -> tuple[list[dict], list[dict]]:
    """(micro-batches that committed input, model swaps) among progress records, within [since, until]."""

    def within(record: dict) -> bool:
        at = record_time(record)
        return (since is None or at >= since) and (until is None or at <= until)

    batches = [r for r in records if r.get("event") == "batch" and not r.get("replayed") and within(r)]
    swaps = [r for r in records if r.get("event") == "model_swap" and within(r)]
    return batches, swaps


def record_time(record: dict) -> float:
    return record["committed_at"] if record.get("event") == "batch" else record["at"]


class ProgressMirror:
    """The progress lines, also under the checkpoint, where a reader on another machine finds them (the app's
    /ops while the stream runs on EMR): `<checkpoint>/progress/<segment start, epoch s>.json`, one JSON array
    of the records of each `MIRROR_SEGMENT_S` segment of time, rewritten whole (one PUT on S3) at most every
    `MIRROR_EVERY_S` while it grows, by the job's background thread (and at stop). Segments older than
    `MIRROR_RETENTION_S` are deleted as new ones start. A mirror that cannot write logs a warning and tries
    again: the stream never waits on it. `read_mirrored_progress` reads a window back.
    """

    def __init__(self, store: CheckpointStore):
        self.store = store  # rooted at the checkpoint
        self._segments: dict[int, list[dict]] = {}  # this run's records, by segment
        self._earlier: dict[int, list[dict]] = {}  # what an earlier run of the stream wrote in the same segment
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._pruned_before = 0

    @classmethod
    def under_checkpoint(cls, settings: Settings) -> ProgressMirror | None:
        try:
            return cls(checkpoint_store(settings))
        except FruitsError as exc:
            log.warning("the progress lines are not mirrored under the checkpoint: %s", exc)
            return None

    def add(self, record: dict[str, Any]) -> None:
        segment = segment_of(record_time(record))
        with self._lock:
            self._segments.setdefault(segment, []).append(record)
            self._dirty.add(segment)

    def flush(self) -> None:
        with self._lock:
            dirty = {segment: list(self._segments[segment]) for segment in sorted(self._dirty)}
            self._dirty.clear()
        for segment, records in dirty.items():
            try:
                if segment not in self._earlier:  # written by a previous run of the stream: kept
                    self._earlier[segment] = self.store.read_json(segment_name(segment)) or []
                self.store.write_json(segment_name(segment), self._earlier[segment] + records)
            except Exception as exc:
                log.warning("cannot mirror the progress lines to %s: %s", self.store.root, one_line(exc))
                with self._lock:
                    self._dirty.add(segment)
        self._forget_finished_segments()

    def _forget_finished_segments(self) -> None:
        with self._lock:
            if not self._segments:
                return
            newest = max(self._segments)
            for segment in [s for s in self._segments if s < newest and s not in self._dirty]:
                del self._segments[segment]
                self._earlier.pop(segment, None)
        if newest > self._pruned_before:  # once per new segment: one LIST, a DELETE per expired segment
            self._pruned_before = newest
            try:
                for name in self.store.names(MIRROR_FOLDER):
                    start = name.removesuffix(".json")
                    if start.isdigit() and int(start) < newest - MIRROR_RETENTION_S:
                        self.store.delete(f"{MIRROR_FOLDER}/{name}")
            except Exception as exc:
                log.warning("cannot prune old progress segments under %s: %s", self.store.root, one_line(exc))

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.wait(interval_s):
            self.flush()


def checkpoint_store(settings: Settings) -> CheckpointStore:
    """Small JSON objects under the stream's checkpoint, local or S3 (fruits.storage: no Spark)."""
    return CheckpointStore(settings.checkpoint_uri, settings.aws_region, settings.s3_endpoint_url)


def segment_of(at: float) -> int:
    return int(at // MIRROR_SEGMENT_S) * MIRROR_SEGMENT_S


def segment_name(segment: int) -> str:
    return f"{MIRROR_FOLDER}/{segment}.json"


def read_mirrored_progress(
    settings: Settings, since: float, until: float | None = None
) -> tuple[list[dict], list[dict]]:
    """(micro-batches, model swaps) within [since, until] (default: now) from the progress lines the stream
    mirrors under `settings.checkpoint_uri`, oldest first: a handful of reads (one per 10 minutes of window)."""
    until = time.time() if until is None else until
    store = checkpoint_store(settings)
    segments = range(segment_of(since), segment_of(until) + 1, MIRROR_SEGMENT_S)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda segment: store.read_json(segment_name(segment)) or [], segments))
    return select([record for part in parts for record in part], since, until)
