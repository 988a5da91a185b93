"""The notification source without Spark: the ledger's dedup, cap and retention; the reader's
configuration from Settings; the feed against a moto server (SQS, S3) with its state under a
checkpoint; the checkpoint's lists checked again when read back; the executor's reads (the real
size against the limit, per-object errors as rows, transient ones failing the task).
The parser on its own, with hostile bodies: test_notification_messages.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from fruits.exceptions import FruitsError
from fruits.notifications import (
    BATCHES,
    INDEX,
    CheckpointStore,
    Ledger,
    NotificationFeed,
    ReaderConfig,
    Upload,
    batch_counts,
    plan_partitions,
    queue_endpoint,
    read_uploads,
    reader_config,
)
from fruits.notifications.reads import UploadsPartition, concerns_the_object, fetch
from fruits.notifications.visibility import VisibilityKeeper
from fruits.settings import Settings
from support import wait_until

LAMBDA = {
    "schema": "fruits.image-uploaded/1",
    "bucket": "fruits-bucket",
    "key": "images/Kaki/a b+c.jpg",
    "size": 4096,
    "etag": "0123abcd",
    "sequencer": "0062",
    "event_time": "2026-12-01T09:30:00.000Z",
    "event_name": "ObjectCreated:Put",
    "dedup_key": "fruits-bucket/images/Kaki/a b+c.jpg/0062",
}
TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2026-12-01T09:00:00Z",
    "Bucket": "fruits-bucket",
}


def sns(message: dict) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-3:1:t",
            "Message": json.dumps(message),
        }
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://sqs.eu-west-3.amazonaws.com/123456789012/q", (None, "eu-west-3")),
        ("http://127.0.0.1:5000/123456789012/q", ("http://127.0.0.1:5000", None)),
    ],
)
def test_queue_endpoint(url, expected) -> None:
    assert queue_endpoint(url) == expected


def test_the_reader_config_comes_from_settings_and_survives_the_options_round_trip() -> None:
    settings = Settings.load(
        env={},
        source="s3://b/images",
        notifications="https://sqs.eu-west-3.amazonaws.com/1/q",
        checkpoint="s3://b/checkpoints/stream",
        backfill_interval="off",
        notification_retention="2d",
        max_files_per_trigger=7,
        max_image_bytes=1234,
    )
    config = reader_config(settings, drain=True, partitions=0, log_level="DEBUG")
    assert (config.backfill_every_s, config.retention_s, config.max_files, config.max_image_bytes) == (
        0.0,
        172_800.0,
        7,
        1234,
    )
    assert (config.s3_endpoint, config.partitions, config.drain) == (None, 1, True)
    assert ReaderConfig.from_options(config.options()) == config
    assert ReaderConfig.from_options({k.upper(): v for k, v in config.options().items()}) == config
    with_endpoint = reader_config(
        settings.replace(s3_endpoint_url="http://127.0.0.1:9"), drain=False, partitions=3, log_level="INFO"
    )
    assert ReaderConfig.from_options(with_endpoint.options()).s3_endpoint == "http://127.0.0.1:9"


def test_intervals_are_parsed_by_settings_once_with_a_one_line_error() -> None:
    settings = Settings.load(env={}, maintenance_interval="off", model_refresh_interval="1.5m")
    assert (settings.maintenance_interval_seconds, settings.model_refresh_interval_seconds) == (0.0, 90.0)
    assert (settings.backfill_interval_seconds, settings.notification_retention_seconds) == (3600.0, 7 * 86400.0)
    with pytest.raises(FruitsError, match="--notification-retention must be an interval"):
        Settings.load(env={}, notification_retention="off")


# ============================================================================ the ledger
def up(n: int, etag: str = "e0") -> Upload:
    return Upload("fruits-bucket", f"images/K/{n}.jpg", etag, None)


def test_dedup_against_pending_planned_and_committed() -> None:
    ledger = Ledger()
    assert ledger.offer(up(1)) and not ledger.offer(up(1))  # pending
    assert ledger.plan(None, now=0.0) == (1, [up(1)])
    assert not ledger.offer(up(1))  # planned
    ledger.commit(1)
    assert not ledger.offer(up(1))  # committed
    assert ledger.offer(up(1, etag="0ff1ce"))  # the same key re-uploaded with new content is a new upload


def test_the_cap_counts_uploads_after_dedup_so_duplicates_never_stall_the_head() -> None:
    ledger = Ledger()
    for n in range(5):
        ledger.offer(up(n))
    assert [u.key for u in ledger.plan(2, 0.0)[1]] == ["images/K/0.jpg", "images/K/1.jpg"]
    for n in range(5):  # every message redelivered: nothing new is pending twice
        ledger.offer(up(n))
    assert ledger.plan(2, 0.0) == (2, [up(2), up(3)])
    assert ledger.plan(2, 0.0) == (3, [up(4)])
    assert ledger.plan(2, 0.0) is None


def test_a_message_is_released_only_when_the_batch_of_all_its_uploads_is_committed() -> None:
    ledger = Ledger()
    ledger.offer(up(1))
    ledger.hold("m1", "r1", [up(1).identity])
    ledger.offer(up(2))
    ledger.hold("m2", "r2", [up(1).identity, up(2).identity])  # one message, two records
    assert ledger.plan(1, 0.0)[0] == 1
    assert ledger.releasable() == []  # batch 1 planned, not committed
    ledger.commit(1)
    assert ledger.releasable() == [("m1", "r1")]  # m2 still announces a pending upload
    ledger.plan(1, 0.0)
    ledger.hold("m2", "r2-redelivered", [up(2).identity])  # a redelivery: only the latest handle deletes
    assert ledger.awaiting(2) == {"m2": ledger.held["m2"]}
    ledger.commit(2)
    assert ledger.releasable() == [("m2", "r2-redelivered")]
    ledger.hold("m3", "r3", [up(2).identity])  # a duplicate of a committed upload goes at once
    assert ledger.releasable() == [("m3", "r3")]


def test_retention_forgets_only_committed_batches_older_than_the_cutoff() -> None:
    ledger = Ledger()
    for n, created in ((1, 100.0), (2, 200.0), (3, 300.0)):
        ledger.offer(up(n))
        ledger.plan(None, now=created)
    ledger.commit(2)
    assert ledger.expire(cutoff=250.0) == [1, 2]
    assert ledger.offer(up(1))  # forgotten: a copy would be new again (hence retention >= the queue's)
    assert not ledger.offer(up(3))  # not committed: never forgotten
    assert ledger.expire(cutoff=1000.0) == []


# ============================================================================ the feed on moto
class Aws:
    """A bucket and a queue on a moto server, and a reader configuration over them (cap 3, limit 1000 B)."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        checkpoint: str,
        *,
        drain: bool = False,
        max_files: int = 3,
        visibility_s: int = 60,
    ):
        self.bucket = name
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-3")
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="eu-west-3")
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        self.url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_s)})[
            "QueueUrl"
        ]
        settings = Settings.load(
            env={},
            notifications=self.url,
            source=f"s3a://{name}/images/",
            checkpoint=checkpoint,
            s3_endpoint_url=endpoint,
            max_files_per_trigger=max_files,
            max_image_bytes=1000,
        )
        self.config = reader_config(settings, drain=drain, partitions=2, log_level="INFO")

    def put(self, key: str, body: bytes = b"jpeg-bytes") -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"].strip('"')

    def announce(self, key: str, etag: str, size: int = 10) -> None:
        message = {**LAMBDA, "bucket": self.bucket, "key": key, "etag": etag, "size": size}
        self.sqs.send_message(QueueUrl=self.url, MessageBody=sns(message))

    def queued(self) -> int:
        """Messages still in the queue, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture(autouse=True)
def feeds_stop_extending(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each feed a test makes stops its visibility thread after the test (the stream closes its feed when the
    query stops; these tests drive feeds by hand): none keeps calling a moto server the suite has stopped."""
    made: list[NotificationFeed] = []
    init = NotificationFeed.__init__

    def remembered(self: NotificationFeed, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(NotificationFeed, "__init__", remembered)
    yield
    for feed in made:
        feed.visibility.close()


def unique_name(request) -> str:
    return "n-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]


@pytest.fixture
def aws(moto_server: str, tmp_path: Path, request) -> Aws:
    return Aws(moto_server, unique_name(request), str(tmp_path / "checkpoint"))


def rows_of(config: ReaderConfig, start: int, end: int) -> list[tuple]:
    """What Spark's tasks would read for the batches start < k <= end."""
    return [
        row for part in plan_partitions(config, {"batch": start}, {"batch": end}) for row in read_uploads(config, part)
    ]


def persisted_counts(config: ReaderConfig) -> dict[str, int]:
    lists = [json.loads(p.read_text()) for p in Path(config.checkpoint, BATCHES).glob("*.json")]
    return {k: sum(d["counts"][k] for d in lists) for k in lists[0]["counts"]}


def test_backfill_at_first_start_then_notifications_with_duplicates_cap_and_deletion_after_commit(aws) -> None:
    for n in range(2):  # already there when the stream first starts: found by the listing
        aws.put(f"images/K/old{n}.jpg", b"old" * 3)
    aws.put("images/K/notes.txt", b"not an image")
    feed = NotificationFeed(aws.config)
    assert feed.latest() == {"batch": 1}
    assert sorted(r[0] for r in rows_of(aws.config, 0, 1)) == [
        f"s3a://{aws.bucket}/images/K/old{n}.jpg" for n in range(2)
    ]

    etags = [aws.put(f"images/K/{n}.jpg", bytes([65 + n]) * 10) for n in range(5)]
    for n, etag in enumerate(etags):
        aws.announce(f"images/K/{n}.jpg", etag)
    aws.announce("images/K/0.jpg", etags[0])  # at-least-once: a copy
    aws.announce("images/K/old0.jpg", aws.s3.head_object(Bucket=aws.bucket, Key="images/K/old0.jpg")["ETag"])
    aws.sqs.send_message(QueueUrl=aws.url, MessageBody=json.dumps(TEST_EVENT))
    aws.sqs.send_message(QueueUrl=aws.url, MessageBody="garbage")

    assert feed.latest() == {"batch": 2}  # 3 uploads at most, counted after dedup
    second = rows_of(aws.config, 1, 2)
    assert len(second) == 3 and all(content == bytes([65 + int(path[-5])]) * 10 for path, _, _, content in second)
    assert aws.queued() == 7  # the test event and the garbage went at once (no dead-letter queue)
    feed.commit(1)  # Spark commits batch 1 while planning batch 2's successor
    assert aws.queued() == 6  # the copy announcing old0 (batch 1)
    assert feed.latest() == {"batch": 3}
    assert sorted(r[0][-5] for r in rows_of(aws.config, 2, 3)) == ["3", "4"]
    feed.commit(3)
    assert feed.latest() == {"batch": 3}  # nothing new
    assert aws.queued() == 0
    counts = persisted_counts(aws.config)
    assert (counts["uploads"], counts["duplicates"], counts["backfilled"]) == (5, 2, 2)
    assert (counts["test_events"], counts["malformed"], counts["messages"]) == (1, 1, 9)


def test_drain_takes_the_whole_queue_into_one_batch(moto_server, tmp_path, request) -> None:
    aws = Aws(moto_server, unique_name(request), str(tmp_path / "checkpoint"), drain=True)
    for n in range(7):
        aws.announce(f"images/K/{n}.jpg", aws.put(f"images/K/{n}.jpg"))
    feed = NotificationFeed(aws.config)
    assert feed.latest() == {"batch": 1}  # backfill and notifications agree: 7 uploads, one batch
    assert len(rows_of(aws.config, 0, 1)) == 7


def test_after_a_restart_redeliveries_and_copies_are_recognised_and_deleted(aws) -> None:
    etag = aws.put("images/K/a.jpg")
    aws.announce("images/K/a.jpg", etag)
    assert NotificationFeed(aws.config).latest() == {"batch": 1}
    # The process dies before Spark commits batch 1: its message is still in the queue.
    second = NotificationFeed(aws.config)
    second.start()
    assert second.ledger.known == {f"images/K/a.jpg|etag:{etag}": 1} and second.ledger.committed == 0
    aws.announce("images/K/a.jpg", etag)  # another copy
    assert second.latest() == {"batch": 1}  # nothing new: the copy is the planned upload
    assert aws.queued() == 2
    second.commit(1)
    assert aws.queued() == 0  # the first delivery (receipt kept in the list) and the copy


def test_the_last_batch_is_released_from_sparks_commit_log_without_another_batch(aws) -> None:
    aws.announce("images/K/a.jpg", aws.put("images/K/a.jpg"))
    feed = NotificationFeed(aws.config)
    assert feed.latest() == {"batch": 1}
    assert feed.latest() == {"batch": 1} and aws.queued() == 1  # Spark has not committed it
    checkpoint = Path(aws.config.checkpoint)
    (checkpoint / "offsets").mkdir()
    (checkpoint / "commits").mkdir()
    (checkpoint / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"batch":1}')  # as Spark writes them
    (checkpoint / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')
    feed._last_probe = 0.0
    assert feed.latest() == {"batch": 1}
    assert aws.queued() == 0
    store = CheckpointStore(aws.config.checkpoint, "eu-west-3")
    assert batch_counts(store, 0)["backfilled"] == 1


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fruits.notifications" and r.levelno >= logging.WARNING]


def test_a_held_message_stays_invisible_past_the_visibility_timeout_until_its_batch_commits(
    moto_server, tmp_path, request, caplog
) -> None:
    """Time passing is what this test is about (7 s): the queue's visibility timeout is 3 s, and
    nothing calls the feed for two of them, as while Spark runs a long micro-batch; meanwhile another
    consumer keeps asking for the message. Without the extension it is received again after 3 s.
    The keeper's thread looks every 0.375 s and extends a message once half of its window is gone:
    it may be late by about a second at each extension before the message shows."""
    aws = Aws(moto_server, unique_name(request), str(tmp_path / "checkpoint"), visibility_s=3)
    aws.announce("images/K/a.jpg", aws.put("images/K/a.jpg"))
    feed = NotificationFeed(aws.config)
    feed.start()
    feed.last_backfill = feed.clock()  # the announcement alone
    received = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fruits.notifications"):
        assert feed.latest() == {"batch": 1}  # received and held: its batch is not committed
        other = boto3.client("sqs", endpoint_url=moto_server, region_name="eu-west-3")
        stolen = []
        while time.monotonic() - received < 2 * 3:
            stolen += other.receive_message(QueueUrl=aws.url, WaitTimeSeconds=1).get("Messages", [])
        assert stolen == [] and aws.queued() == 1
        feed.commit(1)
    assert aws.queued() == 0 and feed.visibility.tracked() == set()  # deleted, and no longer extended
    assert not warnings_in(caplog)
    feed.close()


def test_visibility_extension_sends_only_what_is_due_and_failures_are_never_fatal(aws, caplog) -> None:
    """The keeper without its thread, on its own clock: a message is extended once half of its
    window is gone, ten per request; one the queue no longer has is forgotten quietly; a refused
    extension or a failed request is a warning, never an exception, and no line holds a receipt."""
    clock = [0.0]
    keeper = VisibilityKeeper(aws.sqs, aws.url, timeout_s=60, clock=lambda: clock[0])
    keeper.close()  # no thread: the test calls extend_due itself
    requests = []
    aws.sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibilityBatch",
        lambda params, **_: requests.append(len(params["Entries"])),
    )
    for n in range(12):
        aws.sqs.send_message(QueueUrl=aws.url, MessageBody=f"m{n}")
    received = []
    while len(received) < 12:
        received += aws.sqs.receive_message(QueueUrl=aws.url, MaxNumberOfMessages=10)["Messages"]
    for message in received:
        keeper.track(message["MessageId"], message["ReceiptHandle"])
    everyone = {m["MessageId"] for m in received}
    for message in received[:3]:  # deleted by someone else: the queue no longer has them
        aws.sqs.delete_message(QueueUrl=aws.url, ReceiptHandle=message["ReceiptHandle"])
    with caplog.at_level(logging.WARNING, logger="fruits.notifications"):
        clock[0] = 29.0  # more than half of the window left
        keeper.extend_due()
        assert requests == [] and keeper.tracked() == everyone
        clock[0] = 31.0
        keeper.extend_due()
        assert requests == [10, 2] and keeper.tracked() == everyone - {m["MessageId"] for m in received[:3]}
        assert not warnings_in(caplog)  # gone messages are forgotten quietly
        clock[0] = 60.0  # 29 s into the windows that began at 31
        keeper.extend_due()
        assert requests == [10, 2]
        clock[0] = 62.0
        keeper.extend_due()
        assert requests == [10, 2, 9]

        too_long = VisibilityKeeper(aws.sqs, aws.url, timeout_s=43_201, clock=lambda: clock[0])  # over SQS's 12 h
        too_long.close()
        too_long.track(received[3]["MessageId"], received[3]["ReceiptHandle"])
        clock[0] += 30_000
        too_long.extend_due()
        assert too_long.tracked() == set()
        assert f"message {received[3]['MessageId']} cannot be extended (InvalidParameterValue)" in caplog.text

        aws.sqs.delete_queue(QueueUrl=aws.url)
        keeper.extend_due()  # the request fails as a whole: said, kept for the next look
        assert "cannot extend the visibility of 9 held messages" in caplog.text and len(keeper.tracked()) == 9
    assert not any(m["ReceiptHandle"] in caplog.text for m in received)


def test_compaction_and_retention_bound_what_a_restart_reads(aws) -> None:
    clock = [1_000_000.0]
    feed = NotificationFeed(aws.config, clock=lambda: clock[0])
    feed.compact_every = 2
    feed.latest()  # the first start's (empty) listing
    identities = []
    for n in range(5):
        etag = aws.put(f"images/K/{n}.jpg")
        aws.announce(f"images/K/{n}.jpg", etag)
        identities.append(f"images/K/{n}.jpg|etag:{etag}")
        assert feed.latest() == {"batch": n + 1}
        feed.commit(n + 1)
        clock[0] += 86400.0  # a day per upload
    checkpoint = Path(aws.config.checkpoint)
    assert sorted(p.name for p in (checkpoint / INDEX).iterdir()) == ["4.json"]
    assert sorted(p.name for p in (checkpoint / BATCHES).iterdir()) == ["5.json"]
    restarted = NotificationFeed(aws.config, clock=lambda: clock[0])
    restarted.start()
    assert set(restarted.ledger.known) == set(identities)
    clock[0] += 3.5 * 86400.0  # batches 1 and 2 are now over the 7-day retention
    later = NotificationFeed(aws.config, clock=lambda: clock[0])
    later.start()
    assert set(later.ledger.known) == set(identities[2:])
    index = json.loads((checkpoint / INDEX / "4.json").read_text())  # rewritten without them
    assert sorted(index["batches"]) == ["3", "4"]
    assert sorted(p.name for p in (checkpoint / BATCHES).iterdir()) == ["5.json"]  # not committed: kept


def test_sizes_are_the_objects_own_never_the_claimed_ones_and_one_get_reads_each(
    counting_moto, tmp_path: Path, request
) -> None:
    aws = Aws(counting_moto.endpoint, unique_name(request), str(tmp_path / "checkpoint"), max_files=10)
    objects = {  # name: (body, the size its announcement claims)
        "ok": (b"x" * 10, 10),
        "empty": (b"", 0),
        "big": (b"x" * 2000, 2000),
        "big-claims-small": (b"x" * 5_000, 10),
        "small-claims-huge": (b"s" * 10, 2**63 - 1),
        "small-claims-empty": (b"e" * 10, 0),
        "gone": (b"x" * 10, 10),
        "replaced": (b"x" * 10, 10),
    }
    for name, (body, claimed) in objects.items():
        aws.announce(f"images/K/{name}.jpg", aws.put(f"images/K/{name}.jpg", body), size=claimed)
    aws.s3.delete_object(Bucket=aws.bucket, Key="images/K/gone.jpg")
    aws.put("images/K/replaced.jpg", b"y" * 10)  # new content, new ETag: not the announced upload
    feed = NotificationFeed(aws.config)
    feed.start()  # no first-start listing here: the announcements alone
    feed.last_backfill = feed.clock()
    assert feed.latest() == {"batch": 1}
    before = counting_moto.object_gets()
    rows = {Path(path).stem: (size, content) for path, _, size, content in rows_of(aws.config, 0, 1)}
    assert rows == {
        "ok": (10, b"x" * 10),
        "empty": (0, None),
        "big": (2000, None),
        "big-claims-small": (5000, None),
        "small-claims-huge": (10, b"s" * 10),
        "small-claims-empty": (10, b"e" * 10),
        "gone": (None, None),
        "replaced": (None, None),
    }
    gets = counting_moto.object_gets() - before
    assert gets == {f"/{aws.bucket}/images/K/{name}.jpg": 1 for name in objects}  # one GET each, whatever the claim
    times = {Path(path).stem: modified for path, modified, _, _ in rows_of(aws.config, 0, 1)}
    assert times["ok"] == aws.s3.head_object(Bucket=aws.bucket, Key="images/K/ok.jpg")["LastModified"]  # the object's
    assert times["gone"].isoformat() == "2026-12-01T09:30:00+00:00"  # not read: the announced time


class CountedReads:
    """Bytes the task's own S3 client has read from GET bodies, minus what the task has handed over:
    measured outside the reader (botocore's after-call event wraps each body), never its own count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = self.handed = self.peak = 0

    def instrument(self, monkeypatch) -> None:
        from fruits.notifications import reads

        real = reads.aws_client

        def client(*args, **kwargs):
            s3 = real(*args, **kwargs)
            s3.meta.events.register(
                "after-call.s3.GetObject",
                lambda parsed, **_: parsed.update(Body=self.Body(self, parsed["Body"])) if "Body" in parsed else None,
            )
            return s3

        monkeypatch.setattr(reads, "aws_client", client)

    def hand(self, row: tuple) -> None:
        with self.lock:
            self.handed += len(row[3] or b"")

    def ahead(self) -> int:
        with self.lock:
            return self.read - self.handed

    class Body:
        def __init__(self, counter, body) -> None:
            self.counter, self.body = counter, body

        def read(self, amount: int) -> bytes:
            data = self.body.read(amount)
            with self.counter.lock:
                self.counter.read += len(data)
                self.counter.peak = max(self.counter.peak, self.counter.read - self.counter.handed)
            return data

        def close(self) -> None:
            self.body.close()


SIZES = [700, 300, 900, 200, 1000, 500, 800, 400, 600, 1000, 100, 900, 650, 350, 750, 250] * 2  # 17,600 bytes


def some_uploads(aws: Aws) -> tuple[UploadsPartition, dict[str, bytes]]:
    bodies = {f"images/K/{n}.jpg": bytes([48 + n % 10]) * size for n, size in enumerate(SIZES)}
    rows = [(f"s3a://{aws.bucket}/{key}", aws.bucket, key, aws.put(key, body), None) for key, body in bodies.items()]
    return UploadsPartition(rows), bodies


def test_a_task_reads_ahead_at_most_its_byte_budget_plus_one_object_and_keeps_the_order(aws, monkeypatch) -> None:
    """32 objects of 100-1000 bytes (17,600 in all) under a 3,000-byte budget. After some rows the
    test stops taking rows until the fetch threads have read ahead as far as the budget lets them
    (within one object of it), so the bound is tested while it binds."""
    partition, bodies = some_uploads(aws)
    counted = CountedReads()
    counted.instrument(monkeypatch)
    rows = []
    for row in read_uploads(aws.config, partition, read_ahead_bytes=3000):
        rows.append(row)
        counted.hand(row)
        if len(rows) in (1, 2, 16):
            floor = 3000 - len(row[3]) - max(SIZES)
            wait_until(lambda floor=floor: counted.ahead() > floor, 60, "the read-ahead to fill")
    assert [(Path(path).name, size, content) for path, _, size, content in rows] == [
        (Path(key).name, len(body), body) for key, body in bodies.items()
    ]  # every row once, in order
    assert 3000 - max(SIZES) < counted.peak <= 3000 + max(SIZES)


def test_small_objects_are_all_read_ahead_under_the_default_budget_and_a_stopped_task_ends(aws, monkeypatch) -> None:
    partition, _ = some_uploads(aws)
    counted = CountedReads()
    counted.instrument(monkeypatch)
    rows = read_uploads(aws.config, partition)
    first = next(rows)
    counted.hand(first)
    wait_until(lambda: counted.ahead() == sum(SIZES[1:]), 60, "every other row to be read ahead")
    rows.close()  # Spark stopped early: nothing waits for the budget any more

    small = read_uploads(aws.config, partition, read_ahead_bytes=1)  # every fetch but the head's waits
    next(small)
    closer = threading.Thread(target=small.close)
    closer.start()
    closer.join(60)
    assert not closer.is_alive()


def test_an_object_over_the_limit_is_closed_unread(moto_server, request) -> None:
    """The GET's Content-Length decides before any byte of the body is read (StreamingBody.tell)."""
    bucket = unique_name(request)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    bodies = []
    s3.meta.events.register("after-call.s3.GetObject", lambda parsed, **_: bodies.append(parsed.get("Body")))
    for size, read in ((5_000_000, 0), (1001, 0), (1000, 1000), (0, 0)):
        etag = s3.put_object(Bucket=bucket, Key=f"k{size}", Body=b"z" * size)["ETag"].strip('"')
        fetched = fetch(s3, bucket, f"k{size}", etag, limit=1000)
        assert (fetched.size, fetched.content) == (size, b"z" * size if 0 < size <= 1000 else None)
        assert bodies[-1].tell() == read  # bytes taken from the connection


class S3Errors(BaseHTTPRequestHandler):
    """Answers every request with one S3 error document, as S3 writes them (status and code set per test)."""

    status, code = 503, "SlowDown"

    def do_GET(self) -> None:  # http.server's name
        body = f"<Error><Code>{self.code}</Code><Message>forced</Message></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "code", "one_object"),
    [
        (404, "NoSuchKey", True),
        (412, "PreconditionFailed", True),
        (403, "AccessDenied", True),
        (403, "InvalidObjectState", True),
        (400, "InvalidArgument", True),
        (400, "KeyTooLongError", True),
        (503, "SlowDown", False),
        (500, "InternalError", False),
        (429, "TooManyRequests", False),
        (400, "RequestTimeout", False),
        (400, "ExpiredToken", False),
        (403, "InvalidAccessKeyId", False),
    ],
)
def test_errors_about_one_object_make_its_row_and_the_others_fail_the_task(status, code, one_object) -> None:
    """moto cannot be made to answer AccessDenied or 503 on demand: a small HTTP server on 127.0.0.1
    answers with S3's error document instead, which botocore parses as it parses S3's."""
    handler = type("Errors", (S3Errors,), {"status": status, "code": code})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            region_name="eu-west-3",
            config=boto3.session.Config(retries={"max_attempts": 1}),
        )
        if one_object:
            assert fetch(s3, "fruits-bucket", "images/K/x.jpg", "0123abcd", limit=1000) is None
        else:
            with pytest.raises(ClientError, match=code):
                fetch(s3, "fruits-bucket", "images/K/x.jpg", "0123abcd", limit=1000)
    finally:
        server.shutdown()
        server.server_close()


def test_a_connection_error_is_transient_not_a_row() -> None:
    error = ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "GetObject")
    assert not concerns_the_object(error)
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="eu-west-3",
        config=boto3.session.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(Exception, match="Could not connect"):
        fetch(s3, "fruits-bucket", "images/K/x.jpg", "0123abcd", limit=1000)


def test_a_checkpoint_list_that_does_not_check_out_is_reported_and_never_stops_the_stream(aws, caplog) -> None:
    """Lists as an older version wrote them (an event time never checked, an upload without an ETag),
    a damaged list and a missing one: the replay reads what checks out and says what it skipped."""
    etags = {name: aws.put(f"images/K/{name}.jpg", name.encode()) for name in ("good", "late")}
    store = CheckpointStore(aws.config.checkpoint, "eu-west-3")
    old = {"bucket": aws.bucket, "size": 4, "sequencer": None, "path": "s3a://...", "identity": "..."}
    store.write_json(
        f"{BATCHES}/1.json",
        {
            "format": 1,
            "batch": 1,
            "created": 1.0,
            "counts": {"messages": 3, "malformed": "x"},
            "uploads": [
                {**old, "key": "images/K/good.jpg", "etag": etags["good"], "event_time": "2026-12-01T09:30:00Z"},
                {**old, "key": "images/K/late.jpg", "etag": etags["late"], "event_time": {"when": "never"}},
                {**old, "key": "images/K/noetag.jpg", "etag": None, "event_time": None},
                {**old, "key": "images/K/\ud800.jpg", "etag": "ab", "event_time": None},
                "junk",
            ],
            "messages": [
                {"id": "m1", "receipt": "r1", "uploads": [f"images/K/good.jpg|etag:{etags['good']}"]},
                {"id": 7, "receipt": None, "uploads": "all"},
            ],
        },
    )
    (Path(aws.config.checkpoint) / BATCHES / "2.json").write_text('{"format": 1, "batch": 2, "uploa')
    (Path(aws.config.checkpoint) / "offsets").mkdir()  # Spark planned batches 1 to 3 (its micro-batch 0)
    (Path(aws.config.checkpoint) / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"batch":3}')
    with caplog.at_level(logging.ERROR, logger="fruits.notifications"):
        rows = rows_of(aws.config, 0, 3)  # batch 3's list is missing
    assert sorted((Path(path).name, content) for path, _, _, content in rows) == [
        ("good.jpg", b"good"),
        ("late.jpg", b"late"),
    ]
    problems = " | ".join(r.getMessage() for r in caplog.records)
    for said in (
        "upload #1 kept without its event time",
        "upload #2 skipped",
        "upload #3 skipped",
        "upload #4 skipped",
        "2.json is not JSON",
        "3.json is missing",
    ):
        assert said in problems
    assert (batch_counts(store, 0)["messages"], batch_counts(store, 0)["malformed"]) == (3, 0)  # what checks out
    caplog.clear()
    feed = NotificationFeed(aws.config)
    with caplog.at_level(logging.ERROR, logger="fruits.notifications"):
        feed.start()
    assert set(feed.ledger.known) == {f"images/K/{n}.jpg|etag:{etags[n]}" for n in ("good", "late")}
    assert list(feed.ledger.held) == ["m1"] and "message #1 skipped" in caplog.text
    etag = aws.put("images/K/after.jpg")
    aws.announce("images/K/after.jpg", etag)
    feed.last_backfill = feed.clock()
    assert feed.latest() == {"batch": 4}  # the feed goes on after the damaged batches
    assert [Path(r[0]).name for r in rows_of(aws.config, 3, 4)] == ["after.jpg"]


def test_checkpoint_store_on_s3(moto_server, request) -> None:
    bucket = unique_name(request)
    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    store = CheckpointStore(f"s3a://{bucket}/checkpoints/stream/", "eu-west-3", moto_server)
    assert store.names(BATCHES) == [] and store.read_json(f"{BATCHES}/1.json") is None
    store.write_json(f"{BATCHES}/1.json", {"batch": 1})
    store.write_json(f"{BATCHES}/2.json", {"batch": 2})
    assert store.names(BATCHES) == ["1.json", "2.json"] and store.read_json(f"{BATCHES}/2.json") == {"batch": 2}
    store.delete(f"{BATCHES}/1.json")
    assert store.names(BATCHES) == ["2.json"]


def test_checkpoint_on_another_storage_is_refused() -> None:
    with pytest.raises(FruitsError, match="local or s3://"):
        CheckpointStore("hdfs://nn/checkpoints", "eu-west-3")


def test_the_periodic_backfill_finds_what_was_never_announced_within_the_retention(aws) -> None:
    import time

    clock = [time.time()]
    feed = NotificationFeed(aws.config, clock=lambda: clock[0])
    assert feed.latest() == {"batch": 0}  # the first start lists an empty prefix
    aws.put("images/K/silent.jpg")  # its notification never comes
    assert feed.latest() == {"batch": 0}  # no listing between backfills: that is the point
    clock[0] += 3600.0  # --backfill-interval 1h
    assert feed.latest() == {"batch": 1}
    assert [r[0] for r in rows_of(aws.config, 0, 1)] == [f"s3a://{aws.bucket}/images/K/silent.jpg"]
    feed.commit(1)
    aws.put("images/K/old-and-silent.jpg")
    clock[0] += 8 * 86400.0  # the next listing is 8 days later: older than the 7-day retention, the
    assert feed.latest() == {"batch": 1}  # index no longer covers it, so it is left alone (as maxFileAge)
    counts = persisted_counts(aws.config)
    assert (counts["backfilled"], counts["backfill_listings"]) == (1, 2)
