"""The stream in notification mode, end to end on a moto server: uploads -> S3 event -> the upload
Lambda's handler -> SNS -> SQS -> the stream -> the Delta tables, each upload exactly once.

moto cannot run a Lambda: demo.emulated_aws's EventPollers calls lambda/handler.py for each S3
event, as the Lambda runtime would. Tables are read with delta-rs, never with Spark. Nothing
waits on the clock: the feeder is paced on committed rows, waits poll the system's state.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest

from demo.emulated_aws import EventPollers, wired_bucket
from demo.run import s3a_problem
from forged_notifications import ANNOUNCES, IGNORED, MALFORMED, TEST_EVENT, Forger, Real
from streaming.job import StreamingJob
from support import Feeder, kill_mid_stream_then_restart, table_rows, wait_until

pytestmark = pytest.mark.slow
REGION = "eu-west-3"
CLASSES = ["Banana", "Kumquats", "Limes", "Pepper Red"]


def s3_event(bucket: str, key: str, size: int, etag: str) -> dict:
    """An S3 ObjectCreated event as S3 sends it: key URL-encoded, ETag bare."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-12-01T09:30:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key.replace(" ", "+"), "size": size, "eTag": etag},
                },
            }
        ]
    }


def in_queue(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_uploads_through_lambda_sns_sqs_are_ingested_once_despite_copies_and_redeliveries(
    spark, settings, fitted, data_dir: Path, tmp_path: Path, counting_moto
) -> None:
    endpoint, bucket, suffix = counting_moto.endpoint, f"fruits-notify-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with (
        wired_bucket(tmp_path, REGION, endpoint, bucket, suffix, stream_visibility_s=2) as world,
        EventPollers(world) as pollers,
    ):
        assert s3a_problem(spark, world) is None  # the session's s3a reaches this server for this bucket
        run = settings.replace(
            source=f"s3a://{bucket}/images/",
            notifications=world.stream_queue_url,
            s3_endpoint_url=endpoint,
            checkpoint=f"s3a://{bucket}/checkpoints/stream",
            output=str(tmp_path / "results"),
            errors=str(tmp_path / "errors"),
            trigger="available-now",
            max_files_per_trigger=5,
            max_image_bytes=20_000,
        )

        def stream() -> dict:
            job = StreamingJob(run, spark=spark)
            job.start()
            job.run_until_stopped()
            return job.summary()

        first = stream()  # nothing there yet: the first start's backfill lists an empty prefix
        # (Spark runs one empty batch at a query's very first offset, whatever the source)
        assert (first["source_mode"], first["rows"], first["errors"]) == ("notifications", 0, 0)

        images = [p for cls in CLASSES for p in sorted((data_dir / "stream" / cls).glob("*.jpg"))[:3]]
        keys = {f"images/{p.parent.name}/{p.name}": p.read_bytes() for p in images}
        jpeg = images[0].read_bytes()
        odd = {
            "images/Kaki/empty.jpg": b"",
            "images/Kaki/huge.jpg": jpeg + b"\0" * 30_000,
            "images/Kaki/gone.jpg": jpeg,
        }
        etags = {
            key: s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
            for key, body in {**keys, **odd}.items()
        }
        s3.put_object(Bucket=bucket, Key="images/notes.txt", Body=b"no event: not an image suffix")
        wait_until(lambda: pollers.counts()["unique"] == len(etags), 120, "the Lambda's announcements")
        s3.delete_object(Bucket=bucket, Key="images/Kaki/gone.jpg")  # announced, then deleted before the read

        copied = sorted(keys)[:2]
        for key in copied:  # at-least-once: the Lambda runs twice for one event (two SNS messages)...
            pollers.handler.handler(s3_event(bucket, key, len(keys[key]), etags[key]), None)
        for key in sorted(keys)[2:4]:  # ...and the S3 event also reaches the stream's queue directly
            sqs.send_message(
                QueueUrl=world.stream_queue_url,
                MessageBody=json.dumps(s3_event(bucket, key, len(keys[key]), etags[key])),
            )
        sqs.send_message(
            QueueUrl=world.stream_queue_url,
            MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}),
        )
        sqs.send_message(QueueUrl=world.stream_queue_url, MessageBody="garbage")
        wait_until(
            lambda: in_queue(sqs, world.stream_queue_url) == len(etags) + 2 + 2 + 2,
            60,
            "every message in the stream's queue",
        )
        gets_before = counting_moto.object_gets()

        second = stream()
        # At the graceful stop, the reader deletes what the last batch announced (in its own process,
        # which Spark does not wait for): only the malformed message is left, for the dead-letter queue.
        wait_until(lambda: in_queue(sqs, world.stream_queue_url) == 1, 60, "the last batch's messages deleted")

        results = table_rows(tmp_path / "results", ["path", "label", "pca"])
        assert Counter(r.path for r in results) == Counter(f"s3a://{bucket}/{k}" for k in keys)  # each once
        assert all(r.label == r.path.split("/")[-2] and len(r.pca) == fitted["pca_k"] for r in results)
        errors = {r.path.rsplit("/", 1)[1]: r.reason for r in table_rows(tmp_path / "errors", ["path", "reason"])}
        assert errors == {"empty.jpg": "empty", "huge.jpg": "too_large", "gone.jpg": "missing"}
        assert (second["rows"], second["errors"], second["batches"]) == (len(keys), 3, 1)  # drained at once
        counts = second["source_counts"]
        assert (counts["uploads"], counts["duplicates"], counts["backfilled"]) == (len(etags), 4, 0)
        assert (counts["test_events"], counts["malformed"]) == (1, 1)
        gets = counting_moto.object_gets() - gets_before
        assert {path: n for path, n in gets.items() if path.startswith(f"/{bucket}/images/")} == {
            f"/{bucket}/{k}": 1 for k in [*keys, *odd]
        }  # one GET each, whatever the size: the claim is not trusted

        # A restart, with another copy of an ingested upload's announcement in the queue.
        pollers.handler.handler(s3_event(bucket, copied[0], len(keys[copied[0]]), etags[copied[0]]), None)
        third = stream()
        assert (third["rows"], third["batches"]) == (0, 0)
        assert len(table_rows(tmp_path / "results", ["path"])) == len(keys)
        # Everything was deleted once committed, the copies too; only the malformed message stays,
        # for the dead-letter queue.
        assert in_queue(sqs, world.stream_queue_url) == 1
        left = []
        wait_until(
            lambda: left.extend(sqs.receive_message(QueueUrl=world.stream_queue_url).get("Messages", [])) or left,
            60,
            "the malformed message to come back",
        )
        assert [m["Body"] for m in left] == ["garbage"]


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    settings, fitted, moto_server: str, data_dir: Path, tmp_path: Path
) -> None:
    bucket, suffix = f"fruits-kill-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    output = tmp_path / "results"

    def committed() -> int:
        return len(table_rows(output, ["path"]))

    def upload(src: Path) -> str:
        key = f"images/{src.parent.name}/{src.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=src.read_bytes())
        return f"s3://{bucket}/{key}"

    uploads = sorted((data_dir / "stream").glob("*/*.jpg"))[::7]  # 92 files over all 32 classes
    feeder = Feeder(uploads, upload, committed)
    log = tmp_path / "stream.log"
    # A 3 s visibility timeout: kept from expiring while a batch runs; after the kill the messages
    # held come back and must be recognised.
    with (
        wired_bucket(tmp_path, REGION, moto_server, bucket, suffix, stream_visibility_s=3) as world,
        EventPollers(world),
    ):
        args = [
            "--source",
            f"s3://{bucket}/images/",
            "--notifications",
            world.stream_queue_url,
            "--output",
            str(output),
            "--errors",
            str(tmp_path / "errors"),
            "--checkpoint",
            str(tmp_path / "checkpoint"),
            "--trigger",
            "500ms",
            "--max-files-per-trigger",
            "6",
            "--state-dir",
            str(settings.state_dir),
            "--tracking-uri",
            settings.tracking_uri,
            "--json",
            "-q",
        ]
        at_kill, out, code = kill_mid_stream_then_restart(args, log, feeder, len(uploads))
    assert code == 0, log.read_text()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["source_mode"] == "notifications" and summary["errors"] == 0
    assert 0 < summary["rows"] <= len(uploads) - at_kill + 6  # the restart did the rest (and at most redid one batch)
    rows = table_rows(output, ["path", "label"])
    counts = Counter(r.path for r in rows)
    assert set(counts) == set(feeder.landed) and len(feeder.landed) == len(uploads)  # nothing lost
    assert max(counts.values()) == 1  # nothing twice
    assert all(r.label == r.path.split("/")[-2] for r in rows)
    assert not table_rows(tmp_path / "errors", ["path"])


def test_forged_notifications_between_real_uploads_leave_each_real_upload_once_and_the_stream_running(
    spark, settings, fitted, moto_server: str, data_dir: Path, tmp_path: Path
) -> None:
    """150 forged bodies a run (tests/forged_notifications.py) between the real uploads' announcements,
    in two runs (the first start's backfill lists the first uploads, the second run only has the
    notifications): each real upload is in the results once with its real size; a big object announced
    as small is one too_large row; each forged announcement of an absent (key, ETag) is one missing
    row; everything else is counted as malformed, ignored or a test event, and deleted."""
    bucket = f"fruits-forged-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    # No dead-letter queue: malformed messages are deleted.
    queue = sqs.create_queue(QueueName=bucket)["QueueUrl"]
    run = settings.replace(
        source=f"s3a://{bucket}/images/",
        notifications=queue,
        s3_endpoint_url=moto_server,
        checkpoint=str(tmp_path / "checkpoint"),
        output=str(tmp_path / "results"),
        errors=str(tmp_path / "errors"),
        trigger="available-now",
        max_files_per_trigger=5,
        max_image_bytes=20_000,
    )
    images = sorted((data_dir / "stream").glob("*/*.jpg"))[::41]  # 16 files over many classes
    real: dict[str, int] = {}  # key -> size
    expected_errors: Counter = Counter()
    for round_number, batch in enumerate((images[:10], images[10:])):
        reals = []
        for src in batch:
            key = f"images/{src.parent.name}/{src.name}"
            body = src.read_bytes()
            reals.append(Real(key, s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"'), len(body)))
            real[key] = len(body)
        forger = Forger(2000 + round_number, bucket, "images/", reals)
        messages = [forger.rng.choice(forger.real_bodies(r)) for r in reals]
        big_key, big = f"images/Kaki/big-{round_number}.jpg", batch[0].read_bytes() + b"\0" * 30_000
        big_etag = s3.put_object(Bucket=bucket, Key=big_key, Body=big)["ETag"].strip('"')
        messages.append(forger.real_bodies(Real(big_key, big_etag, 100))[round_number])  # claims 100 bytes
        expected_errors[(f"s3a://{bucket}/{big_key}", "too_large", len(big))] += 1
        forged = forger.bodies(150)
        for f in forged:  # forged announcements between the real ones
            messages.insert(forger.rng.randrange(len(messages) + 1), f.body)
        announced = {(r.key, r.etag) for r in reals} | {(big_key, big_etag)}
        for key, _ in {f.announces for f in forged if f.expect == ANNOUNCES} - announced:
            expected_errors[(f"s3a://{bucket}/{key}", "missing", None)] += 1
        for body in messages:
            sqs.send_message(QueueUrl=queue, MessageBody=body)

        job = StreamingJob(run, spark=spark)
        job.start()
        job.run_until_stopped()
        summary = job.summary()

        counts, outcomes = summary["source_counts"], Counter(f.expect for f in forged)
        assert (counts["malformed"], counts["ignored"], counts["test_events"], counts["messages"]) == (
            outcomes[MALFORMED],
            outcomes[IGNORED],
            outcomes[TEST_EVENT],
            len(messages),
        )
        assert counts["backfilled"] == (len(announced) if round_number == 0 else 0)  # the first start lists them
        assert counts["uploads"] + counts["backfilled"] == len(
            announced | {f.announces for f in forged if f.expect == ANNOUNCES}
        )
        results = table_rows(tmp_path / "results", ["path", "size"])
        assert Counter(r.path for r in results) == Counter(f"s3a://{bucket}/{k}" for k in real)  # each once
        assert {r.path: r.size for r in results} == {f"s3a://{bucket}/{k}": n for k, n in real.items()}
        errors = table_rows(tmp_path / "errors", ["path", "reason", "size"])
        assert Counter((e.path, e.reason, e.size) for e in errors) == expected_errors
        # Malformed, ignored and test-event messages went at once, announcements once their batch was
        # committed: the last batch's when the query stopped.
        wait_until(lambda: in_queue(sqs, queue) == 0, 60, "every message deleted")
