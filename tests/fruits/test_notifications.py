"""The notification source without Spark: message parsing on a table of bodies, the ledger's dedup,
cap and retention, and the feed against a moto server (SQS, S3) with its state under a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from fruits.exceptions import FruitsError
from fruits.notifications import (
    BATCHES,
    INDEX,
    CheckpointStore,
    Ledger,
    Location,
    NotificationFeed,
    ReaderConfig,
    Upload,
    batch_counts,
    parse_body,
    plan_partitions,
    queue_endpoint,
    read_uploads,
)

WHERE = Location.parse("s3a://fruits-bucket/images/")
LAMBDA = {"schema": "fruits.image-uploaded/1", "bucket": "fruits-bucket", "key": "images/Kaki/a b+c.jpg",
          "size": 4096, "etag": "0123abcd", "sequencer": "0062", "event_time": "2026-12-01T09:30:00.000Z",
          "event_name": "ObjectCreated:Put", "dedup_key": "fruits-bucket/images/Kaki/a b+c.jpg/0062"}


def s3_event(key: str = "images/Kaki/a+b%2Bc.jpg", *, bucket: str = "fruits-bucket", name: str = "ObjectCreated:Put",
             size: object = 4096, etag: str = "0123abcd") -> dict:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-12-01T09:30:00.000Z",
                         "eventName": name, "s3": {"bucket": {"name": bucket},
                                                   "object": {"key": key, "size": size, "eTag": etag}}}]}


def sns(message: dict | str) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-3:1:t",
                       "Message": message if isinstance(message, str) else json.dumps(message)})


TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-01T09:00:00Z", "Bucket": "fruits-bucket"}
KAKI = ("images/Kaki/a b+c.jpg", 4096, "0123abcd")  # what every accepted form below announces


@pytest.mark.parametrize(("body", "uploads", "ignored", "test_event", "malformed"), [
    (sns(LAMBDA), [KAKI], 0, False, None),                                # (a) SNS envelope around the Lambda's message
    (json.dumps(LAMBDA), [KAKI], 0, False, None),                         # (b) raw message delivery
    (json.dumps(s3_event()), [KAKI], 0, False, None),                     # (c) S3 -> SQS, key URL-encoded
    (sns(s3_event()), [KAKI], 0, False, None),                            # (d) S3 -> SNS -> SQS
    (json.dumps(TEST_EVENT), [], 0, True, None),                          # (e) test events, raw or wrapped
    (sns(TEST_EVENT), [], 0, True, None),
    (json.dumps(s3_event(bucket="elsewhere")), [], 1, False, None),      # not ours
    (json.dumps(s3_event("results/Kaki/x.jpg")), [], 1, False, None),
    (json.dumps(s3_event("images/Kaki/notes.txt")), [], 1, False, None),
    (json.dumps(s3_event("images/_tmp/Kaki/x.jpg")), [], 1, False, None),
    (json.dumps(s3_event("images/Kaki/.x.jpg")), [], 1, False, None),
    (json.dumps(s3_event(name="ObjectRemoved:Delete", size=None)), [], 1, False, None),
    (json.dumps({**LAMBDA, "event_name": "ObjectRemoved:Delete"}), [], 1, False, None),
    (json.dumps({"Type": "SubscriptionConfirmation", "TopicArn": "arn", "Message": "confirm"}), [], 1, False, None),
    ("not json", [], 0, False, "body is not JSON"),                       # malformed
    ("[1, 2]", [], 0, False, "body is not a JSON object"),
    (sns("{half"), [], 0, False, "SNS Message is not JSON"),
    (json.dumps({"hello": "world"}), [], 0, False, "neither an S3 event"),
    (json.dumps(s3_event(size=-1)), [], 0, False, "bad object size -1"),
    (json.dumps(s3_event(size="12")), [], 0, False, "bad object size '12'"),
    (json.dumps({"Records": [{"s3": {}}]}), [], 0, False, "missing field"),
    (json.dumps({**LAMBDA, "key": ""}), [], 0, False, "bad object key"),
])
def test_parse_body_on_a_table_of_bodies(body, uploads, ignored, test_event, malformed) -> None:
    parsed = parse_body(body, WHERE)
    assert [(u.key, u.size, u.etag) for u in parsed.uploads] == uploads
    assert (parsed.ignored, parsed.test_event) == (ignored, test_event)
    if malformed is None:
        assert parsed.malformed is None
    else:
        assert malformed in parsed.malformed


def test_one_bad_record_does_not_hide_the_good_ones_and_quoted_etags_compare_bare() -> None:
    event = s3_event(etag='"0123abcd"')
    event["Records"].append({"eventName": "ObjectCreated:Put"})
    parsed = parse_body(json.dumps(event), WHERE)
    assert [u.identity for u in parsed.uploads] == ["images/Kaki/a b+c.jpg|etag:0123abcd"]
    assert "missing field" in parsed.malformed
    # The listing reports '"0123abcd"', events '0123abcd': one identity.
    listed = Upload("fruits-bucket", "images/Kaki/a b+c.jpg", 4096, "0123abcd")
    assert parse_body(sns(LAMBDA), WHERE).uploads[0].identity == listed.identity


def test_identity_falls_back_to_the_sequencer_then_the_size() -> None:
    assert Upload("b", "k.jpg", 5, None, "00A1").identity == "k.jpg|seq:00A1"
    assert Upload("b", "k.jpg", 5, None).identity == "k.jpg|size:5"


@pytest.mark.parametrize(("uri", "expected"), [
    ("s3://b/images/", ("s3", "b", "images/")),
    ("s3a://b/images", ("s3a", "b", "images/")),
    ("s3://b", ("s3", "b", "")),
])
def test_location(uri, expected) -> None:
    where = Location.parse(uri)
    assert (where.scheme, where.bucket, where.prefix) == expected
    assert where.path("images/K/x.jpg") == f"{expected[0]}://b/images/K/x.jpg"


def test_a_local_source_is_refused() -> None:
    with pytest.raises(FruitsError, match="s3://BUCKET/PREFIX/"):
        Location.parse("/data/landing")


@pytest.mark.parametrize(("url", "expected"), [
    ("https://sqs.eu-west-3.amazonaws.com/123456789012/q", (None, "eu-west-3")),
    ("http://127.0.0.1:5000/123456789012/q", ("http://127.0.0.1:5000", None)),
])
def test_queue_endpoint(url, expected) -> None:
    assert queue_endpoint(url) == expected


# ============================================================================ the ledger
def up(n: int, etag: str = "e") -> Upload:
    return Upload("fruits-bucket", f"images/K/{n}.jpg", 100, etag)


def test_dedup_against_pending_planned_and_committed() -> None:
    ledger = Ledger()
    assert ledger.offer(up(1)) and not ledger.offer(up(1))  # pending
    assert ledger.plan(None, now=0.0) == (1, [up(1)])
    assert not ledger.offer(up(1))  # planned
    ledger.commit(1)
    assert not ledger.offer(up(1))  # committed
    assert ledger.offer(up(1, etag="other"))  # the same key re-uploaded with new content is a new upload


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

    def __init__(self, endpoint: str, name: str, checkpoint: str, **config):
        self.bucket = name
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-3")
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="eu-west-3")
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        self.url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        self.config = ReaderConfig(**{
            "queue_url": self.url, "source": f"s3a://{name}/images/", "checkpoint": checkpoint, "region": "eu-west-3",
            "s3_endpoint": endpoint, "max_files": 3, "max_image_bytes": 1000, **config})

    def put(self, key: str, body: bytes = b"jpeg-bytes") -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"].strip('"')

    def announce(self, key: str, etag: str, size: int = 10) -> None:
        message = {**LAMBDA, "bucket": self.bucket, "key": key, "etag": etag, "size": size}
        self.sqs.send_message(QueueUrl=self.url, MessageBody=sns(message))

    def queued(self) -> int:
        """Messages still in the queue, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def unique_name(request) -> str:
    return "n-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]


@pytest.fixture
def aws(moto_server: str, tmp_path: Path, request) -> Aws:
    return Aws(moto_server, unique_name(request), str(tmp_path / "checkpoint"))


def rows_of(config: ReaderConfig, start: int, end: int) -> list[tuple]:
    """What Spark's tasks would read for the batches start < k <= end."""
    return [row for part in plan_partitions(config, {"batch": start}, {"batch": end})
            for row in read_uploads(config, part)]


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
        f"s3a://{aws.bucket}/images/K/old{n}.jpg" for n in range(2)]

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


def test_zero_length_over_limit_vanished_and_replaced_objects(counting_moto, tmp_path: Path, request) -> None:
    aws = Aws(counting_moto.endpoint, unique_name(request), str(tmp_path / "checkpoint"), max_files=10)
    bodies = {"ok": b"x" * 10, "empty": b"", "big": b"x" * 2000, "gone": b"x" * 10, "replaced": b"x" * 10}
    for name, body in bodies.items():
        aws.announce(f"images/K/{name}.jpg", aws.put(f"images/K/{name}.jpg", body), size=len(body))
    aws.s3.delete_object(Bucket=aws.bucket, Key="images/K/gone.jpg")
    aws.put("images/K/replaced.jpg", b"y" * 10)  # new content, new ETag: not the announced upload
    feed = NotificationFeed(aws.config)
    feed.start()  # no first-start listing here: the announcements alone
    feed.last_backfill = feed.clock()
    assert feed.latest() == {"batch": 1}
    before = counting_moto.counts()[("s3", "GET")]
    rows = {Path(path).stem: (size, content) for path, _, size, content in rows_of(aws.config, 0, 1)}
    assert rows == {"ok": (10, b"x" * 10), "empty": (0, None), "big": (2000, None), "gone": (10, None),
                    "replaced": (10, None)}
    assert counting_moto.counts()[("s3", "GET")] - before == 3  # ok, gone, replaced: never empty or big


def test_checkpoint_store_on_s3(moto_server, request) -> None:
    bucket = unique_name(request)
    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
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
