"""The executor-side reads: a batch's persisted lists -> tasks -> rows with the binaryFile columns.

Each object is read with ONE GET, conditional on the announced ETag. Its size is the object's
real size, never what a message claimed: the response's Content-Length is read first, and an
object over the limit (or empty) is closed unread (content None, `length` its real size: the
stream's `too_large` or `empty` row); a smaller one is read, at most limit + 1 bytes whatever
the header said.

Memory is bounded per task: GETs run FETCH_THREADS at a time, at most FETCH_WINDOW rows and
READ_AHEAD_BYTES bytes ahead of the rows handed to Spark. A fetch reserves the object's real size
(Content-Length) before it reads the body, and waits, its response open, while earlier rows are
handed over; the row Spark waits for is always read, so a task holds at most READ_AHEAD_BYTES plus
one object, and small images keep the whole window of concurrent GETs.

Errors that concern one object (gone, replaced since the announcement, access denied, archived,
a name the service refuses: any 4xx but throttling and credentials) make that row's content and
length None, which the stream records as `missing`. Anything else (throttling and 5xx that
boto3's own retries did not absorb, expired credentials, the network) fails the task: Spark
retries it, and nothing about the object makes a retry fail again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pyspark.sql.datasource import InputPartition

from fruits.notifications.checkpoint import read_batch
from fruits.notifications.config import ReaderConfig, aws_client

log = logging.getLogger("fruits.notifications")

FETCH_THREADS = 16  # concurrent GETs per task (boto3's default pool holds 10 connections: raised below)
FETCH_WINDOW = 64  # rows fetched ahead of what the task has handed to Spark...
READ_AHEAD_BYTES = 256 * 1024 * 1024  # ...and bytes (64 rows at the 64 MiB image limit would be 4 GiB)
# 4xx codes that are not about the object: the same request may succeed later (or with new credentials).
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidToken",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    }
)

Row = tuple  # (path, modificationTime, length, content): Spark's binaryFile columns


class UploadsPartition(InputPartition):
    """One task's share of a batch: (path, bucket, key, etag, event time) tuples."""

    def __init__(self, rows: list[tuple[str, str, str, str, datetime | None]]):
        super().__init__(len(rows))
        self.rows = rows


def plan_partitions(config: ReaderConfig, start: dict, end: dict) -> list[UploadsPartition]:
    """The persisted lists of batches start < k <= end, spread over `config.partitions` tasks.
    Every entry is checked again as it is read back (fruits.notifications.checkpoint)."""
    store, location = config.store(), config.location
    rows = []
    for batch in range(int(start["batch"]) + 1, int(end["batch"]) + 1):
        listed = read_batch(store, batch)
        for problem in listed.problems:
            log.error("notification batch %d: %s", batch, problem)
        rows += [
            (
                location.path(u.key),
                u.bucket,
                u.key,
                u.etag,
                datetime.fromisoformat(u.event_time) if u.event_time else None,
            )
            for u in listed.uploads
        ]
    parts = min(config.partitions, len(rows))
    return [UploadsPartition(rows[i::parts]) for i in range(parts)]


def read_uploads(
    config: ReaderConfig, partition: UploadsPartition, read_ahead_bytes: int = READ_AHEAD_BYTES
) -> Iterator[Row]:
    """Rows (path, modificationTime, length, content) for a task's uploads, in order (see the module doc).

    GETs run FETCH_THREADS at a time, at most FETCH_WINDOW rows and `read_ahead_bytes` bytes ahead
    of what the task has handed to Spark (the row Spark waits for is read whatever its size): an S3
    GET waits tens of ms for its first byte, and a task reading one object after the other would
    spend most of its time waiting."""
    s3 = aws_client("s3", config.region, config.s3_endpoint, FETCH_THREADS)  # thread-safe: one connection pool
    budget = ReadAhead(read_ahead_bytes)
    rows, futures = partition.rows, deque()
    pool = ThreadPoolExecutor(FETCH_THREADS)
    try:
        for index in range(len(rows)):
            for ahead in range(index + len(futures), min(index + FETCH_WINDOW, len(rows))):
                futures.append(
                    pool.submit(read_one, s3, rows[ahead], config.max_image_bytes, partial(budget.reserve, ahead))
                )
            yield futures.popleft().result()
            budget.handed(index)
    finally:  # also when Spark stops early or a GET failed: fetches waiting for the budget give up
        budget.abandon()
        pool.shutdown(wait=True, cancel_futures=True)


class ReadAbandoned(Exception):
    """The task stopped reading (Spark stopped early, or an earlier row failed)."""


class ReadAhead:
    """Bytes read ahead of the rows a task has handed to Spark: at most `budget`, plus the row
    Spark waits for (always allowed, so the task never waits for itself)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.held: dict[int, int] = {}  # row index -> bytes reserved for its content
        self.next_row = 0  # the row Spark waits for
        self.abandoned = False
        self._changed = threading.Condition()

    def reserve(self, row: int, size: int) -> None:
        """Wait until `size` more bytes fit (or `row` is the one Spark waits for), then count them."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.abandoned or row == self.next_row or sum(self.held.values()) + size <= self.budget
            )
            if self.abandoned:
                raise ReadAbandoned
            self.held[row] = size

    def handed(self, row: int) -> None:
        with self._changed:
            self.held.pop(row, None)
            self.next_row = row + 1
            self._changed.notify_all()

    def abandon(self) -> None:
        with self._changed:
            self.abandoned = True
            self._changed.notify_all()


def read_one(
    s3: Any, row: tuple[str, str, str, str, datetime | None], limit: int, reserve: Callable[[int], None] | None = None
) -> Row:
    path, bucket, key, etag, event_time = row
    fetched = fetch(s3, bucket, key, etag, limit, reserve)
    if fetched is None:
        return path, event_time, None, None
    return path, fetched.modified, fetched.size, fetched.content


@dataclass(frozen=True)
class Fetched:
    size: int  # the object's real size
    modified: datetime
    content: bytes | None  # None: empty, or over the limit (not read)


def fetch(
    s3: Any, bucket: str, key: str, etag: str, limit: int, reserve: Callable[[int], None] | None = None
) -> Fetched | None:
    """The object if it still has the announced ETag; None after an error that concerns it alone.
    `reserve(size)` is called with the real size before the body is read (it may wait)."""
    from botocore.exceptions import ClientError, ParamValidationError

    try:
        response = s3.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
    except ParamValidationError as exc:  # this object's name or parameters: the same on every retry
        log.warning("s3://%s/%r not read: %s", bucket, key, exc)
        return None
    except ClientError as exc:
        if not concerns_the_object(exc):
            raise
        log.info("s3://%s/%r not read (%s)", bucket, key, exc.response.get("Error", {}).get("Code"))
        return None
    body, size, modified = response["Body"], response["ContentLength"], response["LastModified"]
    try:
        if size == 0 or size > limit:
            return Fetched(size, modified, None)  # closed unread
        if reserve is not None:
            reserve(size)
        content = body.read(limit + 1)  # never more than the limit, whatever the header said
    finally:
        body.close()
    return Fetched(len(content), modified, None if len(content) > limit else content)


def concerns_the_object(error: Any) -> bool:
    """A ClientError about this object (4xx but throttling and credentials), not about the service."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.response.get("Error", {}).get("Code")
    return isinstance(status, int) and 400 <= status < 500 and status != 429 and code not in TRANSIENT_CODES
