"""The driver-side feed: receive, dedup, cap, persist, delete after commit, backfill.

It lives in the reader's planner process (Spark runs `latestOffset`, `partitions` and `commit`
in a Python process of its own on the driver). Every message goes through the untrusted-input
parser (fruits.notifications.messages); a malformed one is counted, logged once with its message
id, the reason and the body's length (never the body: it may hold personal data), and left for
the dead-letter queue if the queue has one (else deleted): never fatal. No log line holds a
message body or a receipt handle; object keys are logged (app uploads are named by random ids,
the team's own uploads by its own paths).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC
from typing import Any

from fruits.exceptions import one_line
from fruits.notifications.checkpoint import (
    BATCHES,
    COUNTERS,
    INDEX,
    BatchList,
    HeldMessage,
    numbered,
    read_backfill,
    read_batch,
    read_index,
    spark_committed,
    spark_planned,
    write_backfill,
    write_batch,
    write_index,
)
from fruits.notifications.config import ReaderConfig, aws_client, queue_endpoint
from fruits.notifications.ledger import Ledger
from fruits.notifications.messages import Malformed, Upload, parse_body, shown
from fruits.notifications.visibility import VisibilityKeeper

log = logging.getLogger("fruits.notifications")

COMPACT_EVERY = 100  # committed lists folded into one index file (bounds the files read at start)
PROBE_EVERY_S = 5.0  # while idle with deletions waiting: how often Spark's commit log is read
DRAIN_WAIT_S = 1  # long poll that proves the queue empty when draining
MALFORMED_REMEMBERED = 10_000


class NotificationFeed:
    """The stateful half of the reader: receive, dedup, cap, persist, delete after commit, backfill.

    Started lazily at the first `latest()` so a reader built elsewhere (the executors build one
    to call `read`) touches nothing.
    """

    compact_every = COMPACT_EVERY

    def __init__(self, config: ReaderConfig, clock: Any = time.time):
        self.config = config
        self.location = config.location
        self.store = config.store()
        self.clock = clock
        self.ledger = Ledger()
        endpoint, region = queue_endpoint(config.queue_url)
        self.sqs = aws_client("sqs", region or config.region, endpoint)
        self.s3 = aws_client("s3", config.region, config.s3_endpoint)
        self.visibility = VisibilityKeeper(self.sqs, config.queue_url)  # enabled once the queue's timeout is known
        self.counts = dict.fromkeys(COUNTERS, 0)  # since the last persisted list
        self.dead_letter_queue = False
        self.last_backfill: float | None = None
        self.index_batch = 0
        self._last_probe = 0.0
        self._malformed_seen: dict[str, None] = {}
        self._to_delete: list[tuple[str, str]] = []
        self._started = False

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        """Rebuild the dedup index from the checkpoint, learn what Spark committed, purge what expired."""
        if self._started:
            return
        self._started = True
        now = self.clock()
        self.index_batch, indexed, problems = read_index(self.store)
        for batch, (created, identities) in indexed.items():
            self.ledger.remember(batch, created, identities)
        self.ledger.last_batch = max(self.ledger.last_batch, self.index_batch)
        for batch in numbered(self.store.names(BATCHES), ".json"):
            if batch <= self.index_batch:
                continue
            listed = read_batch(self.store, batch)
            problems += listed.problems
            self.ledger.remember(batch, listed.created, [u.identity for u in listed.uploads])
            for message in listed.messages:
                self.ledger.hold(message.id, message.receipt, message.uploads)
        for problem in problems:
            log.error("checkpoint: %s", problem)
        # A batch number Spark has seen is never planned again, even if its list was lost.
        self.ledger.last_batch = max(self.ledger.last_batch, spark_planned(self.store) or 0)
        self.ledger.commit(max(spark_committed(self.store) or 0, self.index_batch))
        self.last_backfill = read_backfill(self.store)
        self._inspect_queue()
        self._housekeeping(now, force=True)
        log.info(
            "notification source on %s: %d uploads remembered in %d batches (%d committed), queue %s",
            self.config.source,
            len(self.ledger.known),
            len(self.ledger.batches),
            self.ledger.committed,
            self.config.queue_url,
        )

    def _inspect_queue(self) -> None:
        """The queue's dead-letter queue, visibility timeout and retention, if the role may read them."""
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.config.queue_url,
                AttributeNames=["RedrivePolicy", "VisibilityTimeout", "MessageRetentionPeriod"],
            ).get("Attributes", {})
        except Exception as exc:
            log.warning(
                "cannot read the attributes of %s (%s): malformed messages will be deleted, not left "
                "for a dead-letter queue, and held messages come back when the queue's visibility timeout "
                "expires",
                self.config.queue_url,
                one_line(exc),
            )
            return
        self.dead_letter_queue = "RedrivePolicy" in attributes
        self.visibility.timeout_s = int(attributes.get("VisibilityTimeout", 0))
        retention = float(attributes.get("MessageRetentionPeriod", 0))
        if retention > self.config.retention_s:
            log.warning(
                "the queue keeps messages %.0f h but uploads are remembered %.0f h: a message redelivered "
                "after that would be ingested again (raise --notification-retention)",
                retention / 3600,
                self.config.retention_s / 3600,
            )

    # ---------------------------------------------------------------- one trigger
    def latest(self) -> dict[str, int]:
        """Receive, dedup, cap; persist the next batch's list before returning its offset."""
        self.start()
        now = self.clock()
        if self._backfill_due(now):
            self.backfill(now)
        self._receive()
        planned = self.ledger.plan(None if self.config.drain else self.config.max_files, now)
        if planned is not None:
            self._persist(*planned, now)
        elif self.ledger.waiting_for_commit() and time.monotonic() - self._last_probe >= PROBE_EVERY_S:
            self.probe_commits()  # Spark commits the last batch only when planning another one
        self._delete(self._to_delete + self.ledger.releasable())
        self._to_delete = []
        return {"batch": self.ledger.last_batch}

    def commit(self, batch: int) -> None:
        self.start()
        self.ledger.commit(batch)
        self._delete(self.ledger.releasable())
        self._housekeeping(self.clock())

    def probe_commits(self) -> None:
        self._last_probe = time.monotonic()
        committed = spark_committed(self.store)
        if committed is not None and committed > self.ledger.committed:
            self.ledger.commit(committed)
            self._delete(self.ledger.releasable())

    def close(self) -> None:
        """Best effort at a graceful stop: delete what the last committed batch announced."""
        self.visibility.close()
        if self._started:
            try:
                self.probe_commits()
            except Exception as exc:
                log.warning(
                    "cannot delete the last batch's messages at stop (they come back and are recognised): %s",
                    one_line(exc),
                )

    # ---------------------------------------------------------------- queue
    def _receive(self) -> None:
        drain, cap = self.config.drain, self.config.max_files
        received, budget = 0, None if drain else 2 * cap + 10  # bounded work per trigger
        started_ms = self.clock() * 1000
        while drain or len(self.ledger.pending) < cap:
            response = self.sqs.receive_message(
                QueueUrl=self.config.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=DRAIN_WAIT_S if drain else 0,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            messages = response.get("Messages", [])
            for message in messages:
                self._take(message)
            received += len(messages)
            if not messages or (budget is not None and received >= budget):
                break
            # A drain takes what was there when it began: a message sent since ends it.
            if drain and any(int(m.get("Attributes", {}).get("SentTimestamp", 0)) > started_ms for m in messages):
                break

    def _take(self, message: dict[str, Any]) -> None:
        self.counts["messages"] += 1
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        body = message.get("Body", "")
        parsed = parse_body(body, self.location)
        self.counts["ignored"] += parsed.ignored
        self.counts["test_events"] += parsed.test_event
        if parsed.malformed and message_id not in self._malformed_seen:  # a redelivery is counted once
            self._malformed_seen[message_id] = None
            while len(self._malformed_seen) > MALFORMED_REMEMBERED:
                del self._malformed_seen[next(iter(self._malformed_seen))]
            self.counts["malformed"] += 1
            # The reason names the field at fault; the body itself is never logged (it may hold personal data).
            log.warning(
                "malformed message %s skipped (%s; a body of %d characters)", message_id, parsed.malformed, len(body)
            )
        for upload in parsed.uploads:
            self.counts["uploads" if self.ledger.offer(upload) else "duplicates"] += 1
        if parsed.uploads:
            self.ledger.hold(message_id, receipt, [u.identity for u in parsed.uploads])
            self.visibility.track(message_id, receipt)
        elif parsed.malformed and self.dead_letter_queue:
            pass  # left in the queue: after maxReceiveCount receptions it moves to the dead-letter queue
        else:
            self._to_delete.append((message_id, receipt))

    def _delete(self, messages: list[tuple[str, str]]) -> None:
        self.visibility.forget(message_id for message_id, _ in messages)
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.config.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": receipt} for i, (_, receipt) in enumerate(chunk)],
                )
            except Exception as exc:  # the messages come back and are recognised as duplicates
                log.warning(
                    "cannot delete %d messages (they will be redelivered and skipped): %s", len(chunk), one_line(exc)
                )
                continue
            self.counts["deleted"] += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.info("message not deleted (%s): it will be redelivered and skipped", failure.get("Code"))

    # ---------------------------------------------------------------- persistence
    def _persist(self, batch: int, uploads: list[Upload], now: float) -> None:
        messages = [
            HeldMessage(mid, held.receipt, sorted(held.identities)) for mid, held in self.ledger.awaiting(batch).items()
        ]
        write_batch(self.store, BatchList(batch, now, self.counts, uploads, messages))  # BEFORE Spark learns it
        c = self.counts
        log.info(
            "notification batch %d: %d uploads (%d pending; since the last batch %d messages, %d duplicates, "
            "%d backfilled, %d test events, %d malformed, %d ignored)",
            batch,
            len(uploads),
            len(self.ledger.pending),
            c["messages"],
            c["duplicates"],
            c["backfilled"],
            c["test_events"],
            c["malformed"],
            c["ignored"],
        )
        self.counts = dict.fromkeys(COUNTERS, 0)

    def _housekeeping(self, now: float, force: bool = False) -> None:
        """Forget committed batches past the retention; fold the committed lists into one index file
        every `compact_every` batches (and at start if some expired), so a restart reads few files."""
        expired = self.ledger.expire(now - self.config.retention_s)
        committed = self.ledger.committed
        if committed - self.index_batch < self.compact_every and not (force and expired):
            return
        write_index(self.store, committed, {b: v for b, v in self.ledger.batches.items() if b <= committed})
        for batch in numbered(self.store.names(BATCHES), ".json"):
            if batch <= committed:
                self.store.delete(f"{BATCHES}/{batch}.json")
        for older in numbered(self.store.names(INDEX), ".json"):
            if older < committed:
                self.store.delete(f"{INDEX}/{older}.json")
        self.index_batch = committed

    # ---------------------------------------------------------------- backfill
    def _backfill_due(self, now: float) -> bool:
        if self.last_backfill is None:
            return not self.ledger.batches  # the first start: what is already there
        return bool(self.config.backfill_every_s) and now - self.last_backfill >= self.config.backfill_every_s

    def backfill(self, now: float) -> None:
        """List the prefix for uploads whose notification never came. The first listing takes
        everything; later ones only what the dedup index still covers (newer than the retention)."""
        first = self.last_backfill is None
        cutoff = None if first else now - self.config.retention_s
        found = 0
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.prefix):
            self.counts["list_requests"] += 1
            for obj in page.get("Contents", []):
                if not self.location.wants(self.location.bucket, obj["Key"]):
                    continue
                modified = obj["LastModified"]
                if cutoff is not None and modified.timestamp() < cutoff:
                    continue
                try:
                    upload = Upload(
                        self.location.bucket, obj["Key"], obj.get("ETag"), modified.astimezone(UTC).isoformat()
                    )
                except Malformed as exc:  # e.g. a store whose ETags are not S3's: never read, never fatal
                    log.warning("backfill: %s skipped (%s)", shown(obj["Key"]), exc)
                    continue
                found += self.ledger.offer(upload)
        self.counts["backfilled"] += found
        self.counts["backfill_listings"] += 1
        self.last_backfill = now
        write_backfill(self.store, now)
        log.info(
            "backfill of %s: %d uploads without a notification (%d LIST requests)",
            self.config.source,
            found,
            self.counts["list_requests"],
        )
