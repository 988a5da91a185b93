"""Held messages kept invisible while their batch runs: SQS's visibility timeout, extended.

The feed keeps a message in the queue until the batch holding its uploads is committed
(fruits.notifications.feed). Left alone, the message becomes visible again when the queue's
visibility timeout runs out (300 s in the stack) and is received again: recognised, but every
reception counts toward the dead-letter queue's maxReceiveCount, so a long batch would send its
messages to the dead-letter queue while they are still being processed.

The keeper remembers each held message's latest receipt handle and when its current window began
(received, or last extended). A thread of its own wakes every eighth of the timeout — Spark does
not call the reader while a micro-batch runs, however long it takes — and extends by the queue's
visibility timeout every message with less than half of it left, ten per
ChangeMessageVisibilityBatch request. The thread runs only while messages are held.

A message the queue no longer has in flight (ReceiptHandleIsInvalid, MessageNotInflight: deleted,
or visible again and due to be received anew) is forgotten quietly; any other failure is a
warning, never fatal: at worst the message comes back and is recognised. Messages read back from
the checkpoint at a restart are not tracked: their receipts come from the previous process's
receptions, whose windows are unknown; one that comes back is tracked from its new reception.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from fruits.exceptions import one_line

log = logging.getLogger("fruits.notifications")

GONE = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight"})  # the queue no longer has it in flight
CHECKS_PER_TIMEOUT = 8  # how often the thread looks, per visibility timeout


class VisibilityKeeper:
    """Extends the visibility of the messages it tracks (see the module doc). `timeout_s` 0: disabled."""

    def __init__(self, sqs: Any, queue_url: str, timeout_s: int = 0, clock: Callable[[], float] = time.monotonic):
        self.sqs = sqs
        self.queue_url = queue_url
        self.timeout_s = timeout_s
        self.clock = clock
        self._held: dict[str, tuple[str, float]] = {}  # message id -> (latest receipt handle, window start)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, message_id: str, receipt: str) -> None:
        """A message just received (a redelivery: its new receipt handle, a new window)."""
        if self.timeout_s <= 0:
            return
        with self._lock:
            self._held[message_id] = (receipt, self.clock())
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)
                self._thread.start()

    def forget(self, message_ids: Iterable[str]) -> None:
        """Messages deleted (or given up): never extended again."""
        with self._lock:
            for message_id in message_ids:
                self._held.pop(message_id, None)

    def tracked(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def close(self) -> None:
        self._stop.set()

    def extend_due(self) -> None:
        """Extend every tracked message with less than half of the timeout left."""
        now = self.clock()
        with self._lock:
            due = [(mid, receipt) for mid, (receipt, since) in self._held.items() if now - since >= self.timeout_s / 2]
        for start in range(0, len(due), 10):
            self._extend(due[start : start + 10], now)

    def _extend(self, chunk: list[tuple[str, str]], now: float) -> None:
        try:
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": self.timeout_s}
                    for i, (_, receipt) in enumerate(chunk)
                ],
            )
        except Exception as exc:  # retried at the next check; at worst the messages come back and are recognised
            log.warning(
                "cannot extend the visibility of %d held messages (they may come back and be recognised): %s",
                len(chunk),
                one_line(exc),
            )
            return
        failed = {entry.get("Id"): entry.get("Code", "") for entry in response.get("Failed", [])}
        with self._lock:
            for i, (message_id, receipt) in enumerate(chunk):
                if self._held.get(message_id, ("",))[0] != receipt:
                    continue  # deleted, or received again, meanwhile
                code = failed.get(str(i))
                if code is None:
                    self._held[message_id] = (receipt, now)  # the new window counts from before the request
                    continue
                del self._held[message_id]
                if code.rsplit(".", 1)[-1] not in GONE:  # the query protocol prefixes AWS.SimpleQueueService.
                    log.warning(
                        "the visibility of message %s cannot be extended (%s): it may come back and be recognised",
                        message_id,
                        code,
                    )

    def _run(self) -> None:
        while not self._stop.wait(self.timeout_s / CHECKS_PER_TIMEOUT):
            with self._lock:
                if not self._held:
                    self._thread = None  # track() starts another one when a message is held again
                    return
            try:
                self.extend_due()
            except Exception as exc:  # a bug of ours must not end the thread silently
                log.warning("visibility extension failed: %s", one_line(exc))
