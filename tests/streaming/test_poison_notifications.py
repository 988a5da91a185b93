"""A poison upload read by the notification source (S3 -> SQS on a moto server): one `poison` error row,
every other upload exactly once, and the narrowing reads each object from S3 at most once more.

The notification source is a Python data source: it cannot prune columns, so evaluating a subset of
the batch again would download every object of the batch again. streaming.poison keeps the batch's
inputs after the first failure; the moto server counts the GETs per object to check it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest

from streaming.job import StreamingJob
from support import table_rows, wait_until

pytestmark = pytest.mark.slow
REGION = "eu-west-3"
MARKER = b"FRUITS-TEST-POISON"


def test_a_poison_upload_from_the_notification_source_is_one_error_row_and_read_at_most_twice(
    spark, settings, fitted, data_dir: Path, tmp_path: Path, counting_moto
) -> None:
    endpoint, bucket = counting_moto.endpoint, f"fruits-poison-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    queue = sqs.create_queue(QueueName=f"{bucket}-uploads", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )  # S3 events straight to the stream's queue

    images = sorted((data_dir / "stream").glob("*/*.jpg"))[7::131][:3]
    poisoned = f"images/{images[1].parent.name}/{images[1].name}"
    keys = []
    for image in images:
        key = f"images/{image.parent.name}/{image.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=image.read_bytes() + (MARKER if key == poisoned else b""))
        keys.append(key)

    def announced() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    wait_until(lambda: announced() >= len(keys), 60, "the S3 events in the queue")  # (+ moto's s3:TestEvent)
    gets_before = counting_moto.object_gets()
    run = settings.replace(
        source=f"s3a://{bucket}/images/",
        notifications=queue,
        s3_endpoint_url=endpoint,
        checkpoint=str(tmp_path / "checkpoint"),
        output=str(tmp_path / "results"),
        errors=str(tmp_path / "errors"),
        trigger="available-now",
        fault_injection=f"raise:{MARKER.decode()}",
    )
    job = StreamingJob(run, spark=spark)
    job.start()
    job.run_until_stopped()

    summary = job.summary()
    assert (summary["source_mode"], summary["rows"], summary["errors"], summary["poisoned"]) == (
        "notifications",
        2,
        1,
        1,
    )
    results = Counter(r.path for r in table_rows(tmp_path / "results", ["path"]))
    assert results == Counter(f"s3a://{bucket}/{k}" for k in keys if k != poisoned)  # each once
    [error] = table_rows(tmp_path / "errors")
    assert (error.path, error.reason, error.label) == (f"s3a://{bucket}/{poisoned}", "poison", images[1].parent.name)
    assert error.detail.startswith("RuntimeError: fault injected")
    gets = counting_moto.object_gets() - gets_before
    reads = {path: n for path, n in gets.items() if path.startswith(f"/{bucket}/images/")}
    # The first try reads them (a task cut short by the failure may not reach all), the kept copy once more:
    # the retry and the whole narrowing read nothing from S3.
    assert set(reads) == {f"/{bucket}/{k}" for k in keys} and max(reads.values()) <= 2
