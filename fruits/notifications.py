"""Notification-driven source: the stream reads the upload notifications on an SQS queue instead of listing.

Listing the images prefix costs one S3 LIST per 1,000 keys on every trigger, for everything ever
uploaded. This source receives the announcements instead (S3 -> upload Lambda -> SNS -> SQS, or
S3 -> SQS directly) and reads only the objects they name, with the columns Spark's binaryFile
source gives (path, modificationTime, length, content): everything after the source is shared.

A queue cannot replay, so exactly once rests on three rules:
- Before `latestOffset` returns batch k, the batch's uploads are written under the checkpoint
  (`<checkpoint>/notifications/batches/<k>.json`: a temp file renamed into place, or one S3 PUT);
  `partitions` re-reads that list, identically after a restart.
- A message is deleted only once the batch holding its uploads is committed: when Spark calls
  `commit` (while planning the next batch), or when Spark's own commit log says so (read when idle
  and at start, since Spark commits the last batch only when another one comes).
- Uploads are recognised by (key, ETag) against the pending ones, the planned batches and the
  committed index: S3 and SNS deliver at least once, an expired visibility timeout redelivers,
  and the backfill listing sees the same pair. The index keeps `retention`; older lists are purged.

The per-batch cap counts uploads after dedup (else duplicates at the head of the queue would
stall it); uploads over the cap wait in memory (their messages come back if the process dies).
With a drain (trigger available-now: Spark 4.1 asks for one offset only) every message is taken.
A backfill lists the prefix at the first start and then every `backfill_interval`, for
notifications that never came. `s3:TestEvent` and malformed messages are skipped and counted.
Zero-length and over-limit objects are never downloaded: their `content` is None, as is that of
an object deleted or replaced (ETag mismatch) before it was read.

Spark runs the reader in a Python process of its own on the driver (latestOffset, partitions,
commit) and `read` in the executors' Python workers: the state below lives in the former, and
what the job needs to know (counts per batch) travels through the persisted lists.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from fruits.exceptions import FruitsError, one_line
from fruits.settings import Settings, interval_seconds
from fruits.source import BINARY_FILE_SCHEMA, in_hidden_folder, is_image_name

log = logging.getLogger("fruits.notifications")

SOURCE_NAME = "fruits-notifications"
LAMBDA_SCHEMA = "fruits.image-uploaded/1"  # lambda/handler.py SCHEMA
STATE = "notifications"
BATCHES = f"{STATE}/batches"
INDEX = f"{STATE}/index"
BACKFILL_STATE = f"{STATE}/backfill.json"
FORMAT = 1
COMPACT_EVERY = 100  # committed lists folded into one index file (bounds the files read at start)
PROBE_EVERY_S = 5.0  # while idle with deletions waiting: how often Spark's commit log is read
DRAIN_WAIT_S = 1  # long poll that proves the queue empty when draining
MALFORMED_REMEMBERED = 10_000
FETCH_THREADS = 16  # concurrent GETs per task (boto3's default pool holds 10 connections: raised below)
FETCH_WINDOW = 64  # rows fetched ahead of what the task has handed to Spark
COUNTERS = ("messages", "uploads", "duplicates", "test_events", "malformed", "ignored", "backfilled",
            "backfill_listings", "list_requests", "deleted")


# ============================================================================ messages
@dataclass(frozen=True)
class Upload:
    """One object to ingest, as a notification or the backfill listing describes it."""

    bucket: str
    key: str
    size: int
    etag: str | None
    sequencer: str | None = None
    event_time: str | None = None  # ISO 8601: the event's time, or the object's LastModified

    @property
    def identity(self) -> str:
        """(key, ETag): the same for every copy of one upload's notifications and for the listing.
        S3 always sends the ETag; without one the sequencer, then the size, stand in."""
        version = (f"etag:{self.etag}" if self.etag else f"seq:{self.sequencer}" if self.sequencer
                   else f"size:{self.size}")
        return f"{self.key}|{version}"


@dataclass(frozen=True)
class Location:
    """The watched prefix: s3://bucket/prefix/ (or s3a://: the rows' paths keep the scheme)."""

    scheme: str
    bucket: str
    prefix: str  # "" or ending with "/"

    @classmethod
    def parse(cls, uri: str) -> Location:
        match = re.match(r"^(s3a?)://([^/]+)/?(.*)$", uri)
        if not match:
            raise FruitsError(f"a notification source must be s3://BUCKET/PREFIX/, got {uri!r}")
        prefix = match[3]
        return cls(match[1], match[2], prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def wants(self, bucket: str, key: str) -> bool:
        """The listing source's rules: this bucket, under the prefix, an image name, no hidden folder."""
        return (bucket == self.bucket and key.startswith(self.prefix) and is_image_name(key)
                and not in_hidden_folder(key, self.prefix))

    def path(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"


@dataclass
class Parsed:
    """What one SQS message says: uploads we want, and what else it held."""

    uploads: list[Upload] = field(default_factory=list)
    ignored: int = 0  # well-formed but not ours: another bucket or prefix, not an image, not a creation
    test_event: bool = False
    malformed: str | None = None


class Malformed(ValueError):
    pass


def parse_body(body: str, location: Location) -> Parsed:
    """An SQS message body -> Parsed. Never raises: what cannot be understood is `malformed`.

    Accepted: an SNS envelope (Type Notification) around the upload Lambda's message or around
    an S3 event; the Lambda's message delivered raw; an S3 event delivered to SQS directly
    (keys URL-encoded); s3:TestEvent (skipped), raw or in an envelope.
    """
    parsed = Parsed()
    try:
        document = _json_object(body, "body")
        if "Type" in document and ("TopicArn" in document or "Message" in document):  # an SNS envelope
            if document["Type"] != "Notification":
                parsed.ignored += 1  # subscription confirmations and the like
                return parsed
            document = _json_object(document.get("Message"), "SNS Message")
        if document.get("Event") == "s3:TestEvent":
            parsed.test_event = True
        elif document.get("schema") == LAMBDA_SCHEMA:
            _keep(parsed, location, *_from_lambda(document))
        elif isinstance(document.get("Records"), list):
            for record in document["Records"]:
                try:
                    _keep(parsed, location, *_from_s3_record(record))
                except Malformed as exc:  # one bad record does not hide the good ones
                    parsed.malformed = f"record: {exc}"
        else:
            raise Malformed("neither an S3 event, an upload announcement nor an SNS envelope")
    except Malformed as exc:
        parsed.malformed = str(exc)
    return parsed


def _json_object(text: Any, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise Malformed(f"{what} is not a string")
    try:
        document = json.loads(text)
    except ValueError:
        raise Malformed(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise Malformed(f"{what} is not a JSON object")
    return document


def _keep(parsed: Parsed, location: Location, upload: Upload | None, event_name: str) -> None:
    if upload is not None and event_name.startswith("ObjectCreated:") and location.wants(upload.bucket, upload.key):
        parsed.uploads.append(upload)
    else:
        parsed.ignored += 1


def _from_lambda(message: dict[str, Any]) -> tuple[Upload, str]:
    bucket, key, size = message.get("bucket"), message.get("key"), message.get("size")
    event_name = str(message.get("event_name") or "")
    _check(bucket, key, size, event_name)
    return Upload(bucket, key, size, _etag(message.get("etag")), message.get("sequencer"),
                  message.get("event_time")), event_name


def _from_s3_record(record: Any) -> tuple[Upload | None, str]:
    try:
        obj = record["s3"]["object"]
        bucket, raw_key, event_name = record["s3"]["bucket"]["name"], obj["key"], record["eventName"]
    except (KeyError, TypeError) as exc:
        raise Malformed(f"missing field {exc}") from None
    event_name = str(event_name).removeprefix("s3:")
    if not event_name.startswith("ObjectCreated:"):
        return None, event_name  # a removal and the like: well-formed, not ours
    if not isinstance(raw_key, str):
        raise Malformed(f"bad object key {raw_key!r}")
    key = unquote_plus(raw_key)  # S3 URL-encodes keys in events, spaces as '+'
    size = obj.get("size")
    _check(bucket, key, size, event_name)
    return Upload(bucket, key, size, _etag(obj.get("eTag")), obj.get("sequencer"), record.get("eventTime")), event_name


def _check(bucket: Any, key: Any, size: Any, event_name: str) -> None:
    if not isinstance(bucket, str) or not bucket:
        raise Malformed(f"bad bucket name {bucket!r}")
    if not isinstance(key, str) or not key:
        raise Malformed(f"bad object key {key!r}")
    if event_name.startswith("ObjectCreated:") and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise Malformed(f"bad object size {size!r}")


def _etag(value: Any) -> str | None:
    """Events carry the ETag bare, listings quoted: compare them bare."""
    return value.strip('"') if isinstance(value, str) and value.strip('"') else None


# ============================================================================ the ledger (pure state)
@dataclass
class Held:
    """A received message not deleted yet: its latest receipt handle and the uploads it announced."""

    receipt: str
    identities: set[str]


class Ledger:
    """Which uploads are pending, planned into batch k, or committed; which messages wait for which batch.

    No I/O: the feed below persists what `plan` returns before anyone learns its offset.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Upload] = {}  # insertion-ordered: oldest first
        self.known: dict[str, int] = {}  # identity -> batch (planned or committed, within retention)
        self.batches: dict[int, tuple[float, list[str]]] = {}  # batch -> (created, identities)
        self.held: dict[str, Held] = {}  # message id -> Held
        self.last_batch = 0
        self.committed = 0

    # ---------------------------------------------------------------- uploads
    def seen(self, identity: str) -> bool:
        return identity in self.pending or identity in self.known

    def offer(self, upload: Upload) -> bool:
        """Add an upload unless it is already pending, planned or committed; True if it was new."""
        if self.seen(upload.identity):
            return False
        self.pending[upload.identity] = upload
        return True

    def plan(self, limit: int | None, now: float) -> tuple[int, list[Upload]] | None:
        """The next batch: the oldest `limit` pending uploads (all with None), or None if none are pending."""
        if not self.pending:
            return None
        taken = list(self.pending.values())[:limit] if limit is not None else list(self.pending.values())
        batch = self.last_batch + 1
        for upload in taken:
            del self.pending[upload.identity]
        self.remember(batch, now, [u.identity for u in taken])
        return batch, taken

    def remember(self, batch: int, created: float, identities: list[str]) -> None:
        """A batch planned earlier (now, or before a restart: read back from the checkpoint)."""
        for identity in identities:
            self.known[identity] = batch
            self.pending.pop(identity, None)
        self.batches[batch] = (created, identities)
        self.last_batch = max(self.last_batch, batch)

    # ---------------------------------------------------------------- messages
    def hold(self, message_id: str, receipt: str, identities: Iterable[str]) -> None:
        """Keep a message until its uploads are committed. A redelivery brings a new receipt handle:
        only the latest one deletes the message."""
        held = self.held.get(message_id)
        if held is None:
            self.held[message_id] = Held(receipt, set(identities))
        else:
            held.receipt = receipt
            held.identities.update(identities)

    def waiting_batch(self, held: Held) -> int | None:
        """The batch whose commit releases the message; None while one of its uploads is still pending."""
        if any(identity in self.pending for identity in held.identities):
            return None
        return max((self.known.get(identity, 0) for identity in held.identities), default=0)

    def awaiting(self, batch: int) -> dict[str, Held]:
        """The messages that batch `batch`'s commit releases (persisted with its list)."""
        return {mid: held for mid, held in self.held.items() if self.waiting_batch(held) == batch}

    def releasable(self) -> list[tuple[str, str]]:
        """(message id, receipt) of every held message whose uploads are all committed; forgotten here."""
        done = []
        for message_id, held in list(self.held.items()):
            batch = self.waiting_batch(held)
            if batch is not None and batch <= self.committed:
                done.append((message_id, held.receipt))
                del self.held[message_id]
        return done

    def waiting_for_commit(self) -> bool:
        return self.last_batch > self.committed

    # ---------------------------------------------------------------- commits and retention
    def commit(self, batch: int) -> None:
        self.committed = max(self.committed, batch)

    def expire(self, cutoff: float) -> list[int]:
        """Forget committed batches created before `cutoff` (the retention); returns them."""
        old = [b for b, (created, _) in self.batches.items() if b <= self.committed and created < cutoff]
        for batch in old:
            for identity in self.batches.pop(batch)[1]:
                if self.known.get(identity) == batch:
                    del self.known[identity]
        return old


# ============================================================================ the checkpoint
class CheckpointStore:
    """Small JSON files under the stream's checkpoint, on local disk or S3 (pyarrow.fs).

    Writes are atomic: locally a temp file fsynced and renamed into place; on S3 one PUT.
    """

    def __init__(self, root: str, region: str, endpoint: str | None = None):
        self.root = root.rstrip("/")
        match = re.match(r"^(s3a?)://(.+)$", self.root)
        if match:
            from pyarrow import fs

            options: dict[str, Any] = {"region": region}
            if endpoint:
                options["endpoint_override"] = endpoint
                options["scheme"] = urlsplit(endpoint).scheme or "https"
            self._s3 = fs.S3FileSystem(**options)
            self._base = match[2]
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", self.root) and not self.root.startswith("file:"):
            raise FruitsError(f"the notification source keeps its state under the checkpoint: local or s3://, "
                              f"not {self.root!r}")
        else:
            self._s3 = None
            self._base = re.sub(r"^file:/*", "/", self.root)

    def _path(self, relative: str) -> str:
        return f"{self._base}/{relative}"

    def read(self, relative: str) -> bytes | None:
        path = self._path(relative)
        try:
            if self._s3 is None:
                with open(path, "rb") as fh:
                    return fh.read()
            with self._s3.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def read_json(self, relative: str) -> Any:
        data = self.read(relative)
        return None if data is None else json.loads(data)

    def write_json(self, relative: str, document: Any) -> None:
        data = json.dumps(document, separators=(",", ":")).encode()
        path = self._path(relative)
        if self._s3 is not None:
            with self._s3.open_output_stream(path) as stream:  # one PUT: atomic
                stream.write(data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)  # hidden: never read as a list
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash of the machine
        finally:
            os.close(directory)

    def names(self, relative: str) -> list[str]:
        """File names in a folder (one LIST on S3); [] if it does not exist."""
        path = self._path(relative)
        if self._s3 is None:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        from pyarrow import fs

        infos = self._s3.get_file_info(fs.FileSelector(path, allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == fs.FileType.File)

    def delete(self, relative: str) -> None:
        try:
            if self._s3 is None:
                os.unlink(self._path(relative))
            else:
                self._s3.delete_file(self._path(relative))
        except FileNotFoundError:
            pass


def numbered(names: Iterable[str], suffix: str = "") -> list[int]:
    """'12.json' -> 12 (Spark's logs: '12'); temp and checksum files are left out."""
    return sorted(int(n.removesuffix(suffix)) for n in names if n.removesuffix(suffix).isdigit() and n.endswith(suffix))


def spark_offset(store: CheckpointStore, batch_id: int) -> int | None:
    """This source's end offset (our batch number) in Spark's offset log for micro-batch `batch_id`."""
    data = store.read(f"offsets/{batch_id}")
    if data is None:
        return None
    for line in data.decode().splitlines()[2:]:  # 'v1', the batch metadata, then one offset per source
        try:
            offset = json.loads(line)
        except ValueError:
            continue
        if isinstance(offset, dict) and isinstance(offset.get("batch"), int):
            return offset["batch"]
    return None


def spark_committed(store: CheckpointStore) -> int | None:
    """Our batch number that Spark's commit log says is committed (None: nothing committed yet)."""
    committed = numbered(store.names("commits"))
    return spark_offset(store, committed[-1]) if committed else None


def batch_counts(store: CheckpointStore, batch_id: int) -> dict[str, int]:
    """What the source counted while planning Spark's micro-batch `batch_id` (summed over its lists)."""
    end = spark_offset(store, batch_id)
    if end is None:
        return {}
    start = spark_offset(store, batch_id - 1) if batch_id > 0 else 0
    totals = dict.fromkeys(COUNTERS, 0)
    for batch in range((start or 0) + 1, end + 1):
        document = store.read_json(f"{BATCHES}/{batch}.json")
        for name, value in (document or {}).get("counts", {}).items():
            totals[name] = totals.get(name, 0) + value
    return totals


# ============================================================================ configuration
@dataclass(frozen=True)
class ReaderConfig:
    """Everything the reader needs, from the data source's options (strings)."""

    queue_url: str
    source: str
    checkpoint: str
    region: str
    s3_endpoint: str | None = None
    max_files: int = 1000
    drain: bool = False
    backfill_every_s: float = 3600.0  # 0: no periodic backfill (the first start still lists once)
    retention_s: float = 7 * 86400.0
    max_image_bytes: int = 64 * 1024 * 1024
    partitions: int = 2
    log_level: str = "INFO"

    @classmethod
    def from_options(cls, options: Any) -> ReaderConfig:
        get = {str(k).lower(): v for k, v in dict(options).items()}.get
        return cls(
            queue_url=get("queue_url"), source=get("source"), checkpoint=get("checkpoint"), region=get("region"),
            s3_endpoint=get("s3_endpoint") or None, max_files=int(get("max_files", 1000)),
            drain=get("drain", "false") == "true", backfill_every_s=float(get("backfill_every_s", 3600)),
            retention_s=float(get("retention_s", 7 * 86400)), max_image_bytes=int(get("max_image_bytes", 64 << 20)),
            partitions=max(1, int(get("partitions", 2))), log_level=get("log_level", "INFO"),
        )

    def options(self) -> dict[str, str]:
        values = {k: v for k, v in asdict(self).items() if v is not None}
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}

    @property
    def location(self) -> Location:
        return Location.parse(self.source)

    def store(self) -> CheckpointStore:
        return CheckpointStore(self.checkpoint, self.region, self.s3_endpoint)


def reader_config(settings: Settings, *, drain: bool, partitions: int, log_level: str = "INFO") -> ReaderConfig:
    assert settings.notifications, "notification mode needs a queue URL"
    return ReaderConfig(
        queue_url=settings.notifications, source=settings.source_uri, checkpoint=settings.checkpoint_uri,
        region=settings.aws_region, s3_endpoint=settings.s3_endpoint_url, max_files=settings.max_files_per_trigger,
        drain=drain, backfill_every_s=interval_seconds(settings.backfill_interval, "--backfill-interval",
                                                       allow_off=True),
        retention_s=interval_seconds(settings.notification_retention, "--notification-retention"),
        max_image_bytes=settings.max_image_bytes, partitions=partitions, log_level=log_level,
    )


def queue_endpoint(queue_url: str) -> tuple[str | None, str | None]:
    """(endpoint, region) for the SQS client: an AWS queue URL names its region (boto3 finds the
    endpoint); any other host (an emulator) is the endpoint itself."""
    parts = urlsplit(queue_url)
    match = re.match(r"^sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?$", parts.hostname or "")
    if match:
        return None, match[1]
    if (parts.hostname or "").endswith("amazonaws.com"):
        return None, None
    return f"{parts.scheme}://{parts.netloc}", None


def aws_client(service: str, region: str, endpoint: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    # Throttling and 5xx are retried here: a local[*] task is not retried by Spark.
    config = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=FETCH_THREADS)
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=config)


# ============================================================================ the feed (driver side)
class NotificationFeed:
    """The stateful half of the reader: receive, dedup, cap, persist, delete after commit, backfill.

    Lives in the reader's planner process; started lazily at the first `latest()` so a reader
    built elsewhere (the executors build one to call `read`) touches nothing.
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
        index = numbered(self.store.names(INDEX), ".json")
        if index:
            self.index_batch = index[-1]
            document = self.store.read_json(f"{INDEX}/{self.index_batch}.json")
            for batch, (created, identities) in document["batches"].items():
                self.ledger.remember(int(batch), created, identities)
            self.ledger.last_batch = max(self.ledger.last_batch, self.index_batch)
        for batch in numbered(self.store.names(BATCHES), ".json"):
            if batch <= self.index_batch:
                continue
            document = self.store.read_json(f"{BATCHES}/{batch}.json")
            self.ledger.remember(batch, document["created"], [u["identity"] for u in document["uploads"]])
            for message in document["messages"]:
                self.ledger.hold(message["id"], message["receipt"], message["uploads"])
        self.ledger.commit(max(spark_committed(self.store) or 0, self.index_batch))
        backfill = self.store.read_json(BACKFILL_STATE)
        self.last_backfill = backfill["at"] if backfill else None
        self._inspect_queue()
        self._housekeeping(now, force=True)
        log.info("notification source on %s: %d uploads remembered in %d batches (%d committed), queue %s",
                 self.config.source, len(self.ledger.known), len(self.ledger.batches), self.ledger.committed,
                 self.config.queue_url)

    def _inspect_queue(self) -> None:
        """The queue's dead-letter queue and retention, if the role may read them (nothing depends on it)."""
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.config.queue_url, AttributeNames=["RedrivePolicy", "MessageRetentionPeriod"],
            ).get("Attributes", {})
        except Exception as exc:
            log.warning("cannot read the attributes of %s (%s): malformed messages will be deleted, not left "
                        "for a dead-letter queue", self.config.queue_url, one_line(exc))
            return
        self.dead_letter_queue = "RedrivePolicy" in attributes
        retention = float(attributes.get("MessageRetentionPeriod", 0))
        if retention > self.config.retention_s:
            log.warning("the queue keeps messages %.0f h but uploads are remembered %.0f h: a message redelivered "
                        "after that would be ingested again (raise --notification-retention)",
                        retention / 3600, self.config.retention_s / 3600)

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
        if self._started:
            try:
                self.probe_commits()
            except Exception as exc:
                log.warning("cannot delete the last batch's messages at stop (they come back and are "
                            "recognised): %s", one_line(exc))

    # ---------------------------------------------------------------- queue
    def _receive(self) -> None:
        drain, cap = self.config.drain, self.config.max_files
        received, budget = 0, None if drain else 2 * cap + 10  # bounded work per trigger
        started_ms = self.clock() * 1000
        while drain or len(self.ledger.pending) < cap:
            response = self.sqs.receive_message(
                QueueUrl=self.config.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=DRAIN_WAIT_S if drain else 0,
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
        parsed = parse_body(message.get("Body", ""), self.location)
        self.counts["ignored"] += parsed.ignored
        self.counts["test_events"] += parsed.test_event
        if parsed.malformed and message_id not in self._malformed_seen:
            self._malformed_seen[message_id] = None
            while len(self._malformed_seen) > MALFORMED_REMEMBERED:
                del self._malformed_seen[next(iter(self._malformed_seen))]
            self.counts["malformed"] += 1
            log.warning("malformed message %s skipped (%s): %.200s", message_id, parsed.malformed,
                        message.get("Body", ""))
        for upload in parsed.uploads:
            self.counts["uploads" if self.ledger.offer(upload) else "duplicates"] += 1
        if parsed.uploads:
            self.ledger.hold(message_id, receipt, [u.identity for u in parsed.uploads])
        elif parsed.malformed and self.dead_letter_queue:
            pass  # left in the queue: after maxReceiveCount receptions it moves to the dead-letter queue
        else:
            self._to_delete.append((message_id, receipt))

    def _delete(self, messages: list[tuple[str, str]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.config.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": receipt} for i, (_, receipt) in enumerate(chunk)],
                )
            except Exception as exc:  # the messages come back and are recognised as duplicates
                log.warning("cannot delete %d messages (they will be redelivered and skipped): %s", len(chunk),
                            one_line(exc))
                continue
            self.counts["deleted"] += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.info("message not deleted (%s): it will be redelivered and skipped", failure.get("Code"))

    # ---------------------------------------------------------------- persistence
    def _persist(self, batch: int, uploads: list[Upload], now: float) -> None:
        document = {
            "format": FORMAT, "batch": batch, "created": now, "counts": self.counts,
            "uploads": [{**asdict(u), "identity": u.identity, "path": self.location.path(u.key)} for u in uploads],
            "messages": [{"id": mid, "receipt": held.receipt, "uploads": sorted(held.identities)}
                         for mid, held in self.ledger.awaiting(batch).items()],
        }
        self.store.write_json(f"{BATCHES}/{batch}.json", document)  # durable BEFORE Spark learns the offset
        c = self.counts
        log.info("notification batch %d: %d uploads (%d pending; since the last batch %d messages, %d duplicates, "
                 "%d backfilled, %d test events, %d malformed, %d ignored)", batch, len(uploads),
                 len(self.ledger.pending), c["messages"], c["duplicates"], c["backfilled"], c["test_events"],
                 c["malformed"], c["ignored"])
        self.counts = dict.fromkeys(COUNTERS, 0)

    def _housekeeping(self, now: float, force: bool = False) -> None:
        """Forget committed batches past the retention; fold the committed lists into one index file
        every `compact_every` batches (and at start if some expired), so a restart reads few files."""
        expired = self.ledger.expire(now - self.config.retention_s)
        committed = self.ledger.committed
        if committed - self.index_batch < self.compact_every and not (force and expired):
            return
        batches = {str(b): [created, ids] for b, (created, ids) in self.ledger.batches.items() if b <= committed}
        self.store.write_json(f"{INDEX}/{committed}.json", {"format": FORMAT, "batch": committed, "batches": batches})
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
                upload = Upload(self.location.bucket, obj["Key"], obj["Size"], _etag(obj.get("ETag")), None,
                                modified.astimezone(timezone.utc).isoformat())
                found += self.ledger.offer(upload)
        self.counts["backfilled"] += found
        self.counts["backfill_listings"] += 1
        self.last_backfill = now
        self.store.write_json(BACKFILL_STATE, {"at": now})
        log.info("backfill of %s: %d uploads without a notification (%d LIST requests)", self.config.source, found,
                 self.counts["list_requests"])


# ============================================================================ reading (executors)
class UploadsPartition(InputPartition):
    """One task's share of a batch: (path, bucket, key, size, etag, time) tuples."""

    def __init__(self, rows: list[tuple[str, str, str, int, str | None, str | None]]):
        super().__init__(len(rows))
        self.rows = rows


def plan_partitions(config: ReaderConfig, start: dict, end: dict) -> list[UploadsPartition]:
    """The persisted lists of batches start < k <= end, spread over `config.partitions` tasks."""
    store = config.store()
    rows = []
    for batch in range(int(start["batch"]) + 1, int(end["batch"]) + 1):
        document = store.read_json(f"{BATCHES}/{batch}.json")
        if document is None:
            raise FruitsError(f"notification batch {batch} is missing from {store.root}/{BATCHES}: "
                              "was the checkpoint's notifications/ folder removed?")
        rows += [(u["path"], u["bucket"], u["key"], u["size"], u["etag"], u["event_time"])
                 for u in document["uploads"]]
    parts = min(config.partitions, len(rows))
    return [UploadsPartition(rows[i::parts]) for i in range(parts)]


def read_uploads(config: ReaderConfig, partition: UploadsPartition) -> Iterator[tuple]:
    """Rows (path, modificationTime, length, content). content None: zero-length or over the limit (never
    downloaded), or gone or replaced since the notification (a GET conditional on the ETag).

    GETs run FETCH_THREADS at a time, FETCH_WINDOW rows ahead at most (bounded memory): an S3 GET
    waits tens of ms for its first byte, and a task reading one object after the other would
    spend most of its time waiting."""
    s3 = None
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        for start in range(0, len(partition.rows), FETCH_WINDOW):
            window = partition.rows[start:start + FETCH_WINDOW]
            wanted = [row for row in window if 0 < row[3] <= config.max_image_bytes]
            if wanted and s3 is None:
                s3 = aws_client("s3", config.region, config.s3_endpoint)  # thread-safe: one connection pool
            fetched = pool.map(lambda row: fetch(s3, row[1], row[2], row[4]), wanted)
            contents = {(row[1], row[2]): content for row, content in zip(wanted, fetched)}
            for path, bucket, key, size, _etag, event_time in window:
                yield path, parse_time(event_time), size, contents.get((bucket, key))


def fetch(s3: Any, bucket: str, key: str, etag: str | None) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        response = s3.get_object(Bucket=bucket, Key=key, **({"IfMatch": f'"{etag}"'} if etag else {}))
        return response["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "PreconditionFailed", "412"):
            return None
        raise


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ============================================================================ the Spark data source
class NotificationReader(DataSourceStreamReader):
    def __init__(self, config: ReaderConfig):
        self.config = config
        self._feed: NotificationFeed | None = None

    @property
    def feed(self) -> NotificationFeed:
        if self._feed is None:
            configure_logging(self.config.log_level)
            self._feed = NotificationFeed(self.config)
        return self._feed

    def initialOffset(self) -> dict:
        return {"batch": 0}

    def latestOffset(self) -> dict:
        return self.feed.latest()

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        return plan_partitions(self.config, start, end)

    def read(self, partition: InputPartition) -> Iterator[tuple]:
        return read_uploads(self.config, partition)

    def commit(self, end: dict) -> None:
        self.feed.commit(int(end["batch"]))

    def stop(self) -> None:
        if self._feed is not None:
            self._feed.close()


class NotificationSource(DataSource):
    """`spark.readStream.format("fruits-notifications").options(**ReaderConfig(...).options()).load()`"""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return BINARY_FILE_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return NotificationReader(ReaderConfig.from_options(self.options))


def read_stream(spark: SparkSession, config: ReaderConfig) -> DataFrame:
    """The notification source as a streaming DataFrame with the binaryFile columns."""
    spark.dataSource.register(NotificationSource)
    return spark.readStream.format(SOURCE_NAME).options(**config.options()).load()


def configure_logging(level: str) -> None:
    """The reader's own process (Spark starts it) logs to stderr like the job, if nothing else set it up."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    log.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
