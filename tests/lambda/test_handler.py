"""The upload Lambda against a real moto server: S3 events in, SNS -> SQS messages out.

moto cannot run a Lambda (that needs Docker), so the handler is called as a function with
the event, exactly as the Lambda runtime would call it. SNS and SQS are real moto services
over HTTP; the handler reaches them through AWS_ENDPOINT_URL_SNS, which boto3 honours itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lambda"))
import handler as lambda_handler  # lambda/ is not a package: `lambda` is a keyword

REGION = "eu-west-3"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "fruits-uploads"


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Clients on the moto server, and the handler's environment pointed at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_server)
    monkeypatch.delenv("IMAGES_PREFIX", raising=False)
    monkeypatch.delenv("EXPECTED_BUCKET", raising=False)
    # The handler caches its client per container; each test is a fresh container.
    lambda_handler.sns_client.cache_clear()
    yield {
        "s3": boto3.client("s3", region_name=REGION, endpoint_url=moto_server),
        "sns": boto3.client("sns", region_name=REGION, endpoint_url=moto_server),
        "sqs": boto3.client("sqs", region_name=REGION, endpoint_url=moto_server),
    }
    lambda_handler.sns_client.cache_clear()


@pytest.fixture
def topic(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh SNS topic (TOPIC_ARN) with an SQS queue subscribed, raw delivery off."""
    suffix = uuid.uuid4().hex[:8]
    topic_arn = aws["sns"].create_topic(Name=f"fruits-uploaded-{suffix}")["TopicArn"]
    queue_url = aws["sqs"].create_queue(QueueName=f"announcements-{suffix}")["QueueUrl"]
    queue_arn = aws["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws["sns"].subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("TOPIC_ARN", topic_arn)
    return {"arn": topic_arn, "queue_url": queue_url}


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message currently in the queue (moto delivers SNS -> SQS synchronously)."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        messages.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return messages


def announcements(sqs: Any, queue_url: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(message, {attribute: value}) from SNS envelopes (raw message delivery is off)."""
    out = []
    for sqs_message in drain(sqs, queue_url):
        envelope = json.loads(sqs_message["Body"])
        assert envelope["Type"] == "Notification"
        attributes = {name: value["Value"] for name, value in envelope.get("MessageAttributes", {}).items()}
        out.append((json.loads(envelope["Message"]), attributes))
    return out


def s3_record(
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    size: int = 4_523,
    sequencer: str = "0055AED6DCD90281E5",
    version_id: str | None = "096fKKXTRTtl3on89fVO.nfljtsv6qko",
) -> dict[str, Any]:
    """One record shaped like AWS's documented S3 event notification (eventVersion 2.1).

    `key` is given as S3 sends it: URL-encoded, spaces as '+', a literal '+' as %2B.
    """
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": "0123456789abcdef0123456789abcdef", "sequencer": sequencer}
    if version_id:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": "2026-11-24T08:15:30.123Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "fruits-images",
            "bucket": {
                "name": BUCKET,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{BUCKET}",
            },
            "object": obj,
        },
    }


def removed_record(key: str) -> dict[str, Any]:
    """AWS sends no size and no eTag for ObjectRemoved events."""
    record = s3_record(key, event_name="ObjectRemoved:Delete")
    del record["s3"]["object"]["size"], record["s3"]["object"]["eTag"]
    return record


def test_publishes_one_message_per_image_with_decoded_keys(aws: dict[str, Any], topic: dict[str, str]) -> None:
    event = {
        "Records": [
            s3_record("images/Apple+Red+1/r_12_100.jpg", size=4_711, sequencer="0A1B2C3D4E5F678901"),
            {"eventVersion": "2.1", "eventName": "ObjectCreated:Put"},  # malformed: no s3 section
            s3_record("images/Kumquats/a%2Bb+c.JPG", version_id=None),
            s3_record("images/Pear/%C3%A9t%C3%A9+1.jpeg"),
            {**s3_record("images/Kaki/1.jpg"), "s3": {"bucket": {"name": BUCKET}, "object": {"key": 42, "size": 1}}},
            s3_record("images/root.png"),
            s3_record("images/Kumquats/notes.txt"),
            s3_record("other/Kumquats/1_100.jpg"),
            s3_record("images/Kumquats/.1_100.jpg.tmp.jpg"),
            s3_record("images/Kumquats/_SUCCESS.jpg"),
            s3_record("images/Kumquats/", size=0),
            s3_record("images/_staging/Kumquats/3_100.jpg"),  # Spark skips _-folders: never streamed
            removed_record("images/Kumquats/2_100.jpg"),
        ]
    }

    summary = lambda_handler.handler(event, None)

    assert summary == {"published": 4, "skipped": 7, "malformed": 2}
    received = announcements(aws["sqs"], topic["queue_url"])
    by_key = {message["key"]: (message, attributes) for message, attributes in received}
    assert sorted(by_key) == [
        "images/Apple Red 1/r_12_100.jpg",
        "images/Kumquats/a+b c.JPG",
        "images/Pear/été 1.jpeg",
        "images/root.png",
    ]
    apple, apple_attributes = by_key["images/Apple Red 1/r_12_100.jpg"]
    assert apple == {
        "schema": "fruits.image-uploaded/1",
        "dedup_key": "fruits-uploads/images/Apple Red 1/r_12_100.jpg/0A1B2C3D4E5F678901",
        "bucket": BUCKET,
        "key": "images/Apple Red 1/r_12_100.jpg",
        "uri": "s3://fruits-uploads/images/Apple Red 1/r_12_100.jpg",
        "label": "Apple Red 1",
        "size": 4_711,
        "etag": "0123456789abcdef0123456789abcdef",
        "sequencer": "0A1B2C3D4E5F678901",
        "event_name": "ObjectCreated:Put",
        "event_time": "2026-11-24T08:15:30.123Z",
        "region": REGION,
        "version_id": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
    }
    assert apple_attributes == {
        "bucket": BUCKET,
        "event_name": "ObjectCreated:Put",
        "label": "Apple Red 1",
        "size": "4711",
    }
    assert "version_id" not in by_key["images/Kumquats/a+b c.JPG"][0]
    assert by_key["images/Pear/été 1.jpeg"][1]["label"] == "Pear"
    # An image at the prefix root has no class: no label attribute (SNS rejects empty values).
    assert by_key["images/root.png"][0]["label"] is None
    assert "label" not in by_key["images/root.png"][1]


def test_duplicate_delivery_keeps_the_same_dedup_key(aws: dict[str, Any], topic: dict[str, str]) -> None:
    """S3 is at-least-once: a redelivered event must be recognisable downstream."""
    record = s3_record("images/Limes/r_5_100.jpg", sequencer="00617F08299329D189")
    lambda_handler.handler({"Records": [record]}, None)
    lambda_handler.handler({"Records": [record]}, None)
    overwrite = s3_record("images/Limes/r_5_100.jpg", sequencer="00617F0829932A0000")
    lambda_handler.handler({"Records": [overwrite]}, None)

    keys = [message["dedup_key"] for message, _ in announcements(aws["sqs"], topic["queue_url"])]
    assert sorted(keys) == [
        "fruits-uploads/images/Limes/r_5_100.jpg/00617F08299329D189",
        "fruits-uploads/images/Limes/r_5_100.jpg/00617F08299329D189",
        "fruits-uploads/images/Limes/r_5_100.jpg/00617F0829932A0000",
    ]


def test_images_prefix_from_the_environment_is_a_folder(
    aws: dict[str, Any], topic: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGES_PREFIX", "uploads")
    event = {
        "Records": [
            s3_record("uploads/Kiwi/1.jpg"),
            s3_record("uploads-old/Kiwi/2.jpg"),
            s3_record("images/Kiwi/3.jpg"),
        ]
    }

    assert lambda_handler.handler(event, None) == {"published": 1, "skipped": 2, "malformed": 0}
    assert [m["key"] for m, _ in announcements(aws["sqs"], topic["queue_url"])] == ["uploads/Kiwi/1.jpg"]


def test_records_of_another_bucket_are_skipped_when_the_bucket_is_expected(
    aws: dict[str, Any], topic: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack sets EXPECTED_BUCKET: a notification wired to the function from elsewhere publishes nothing."""
    monkeypatch.setenv("EXPECTED_BUCKET", BUCKET)
    foreign = s3_record("images/Kiwi/2.jpg")
    foreign["s3"]["bucket"]["name"] = "someone-elses-bucket"
    event = {"Records": [s3_record("images/Kiwi/1.jpg"), foreign]}

    assert lambda_handler.handler(event, None) == {"published": 1, "skipped": 1, "malformed": 0}
    assert [(m["bucket"], m["key"]) for m, _ in announcements(aws["sqs"], topic["queue_url"])] == [
        (BUCKET, "images/Kiwi/1.jpg")
    ]


def test_s3_test_event_publishes_nothing(aws: dict[str, Any], topic: dict[str, str]) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-24T08:00:00.000Z", "Bucket": BUCKET}

    assert lambda_handler.handler(test_event, None) == {"published": 0, "skipped": 0, "malformed": 0}
    assert drain(aws["sqs"], topic["queue_url"]) == []


def test_sns_failure_raises_so_lambda_retries(
    aws: dict[str, Any], topic: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic-{uuid.uuid4().hex[:8]}")

    with pytest.raises(ClientError) as raised:
        lambda_handler.handler({"Records": [s3_record("images/Kaki/1_100.jpg")]}, None)
    assert raised.value.response["Error"]["Code"] == "NotFound"


def test_missing_topic_arn_fails_loudly(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPIC_ARN", raising=False)
    with pytest.raises(RuntimeError, match="TOPIC_ARN"):
        lambda_handler.handler({"Records": [s3_record("images/Kaki/1_100.jpg")]}, None)


def test_real_put_object_event_from_moto_s3_reaches_the_topic(
    aws: dict[str, Any], topic: dict[str, str], data_dir: Path
) -> None:
    """Server mode end to end: PutObject -> S3 notification -> SQS -> handler -> SNS -> SQS."""
    s3, sqs = aws["s3"], aws["sqs"]
    bucket = f"fruits-e2e-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    events_url = sqs.create_queue(QueueName=f"s3-events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "fruits-images",
                    "QueueArn": events_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [{"Name": "prefix", "Value": "images/"}, {"Name": "suffix", "Value": ".jpg"}]
                        }
                    },
                }
            ]
        },
    )
    image = data_dir / "subset" / "Apple Red 1" / "r_23_100.jpg"
    content = image.read_bytes()
    key = "images/Apple Red 1/v+2 r_23_100.jpg"  # a space and a literal '+' in the name
    s3.put_object(Bucket=bucket, Key=key, Body=content)

    results = [lambda_handler.handler(json.loads(m["Body"]), None) for m in drain(sqs, events_url)]

    # moto sends an s3:TestEvent when the notification is configured, then the upload's event.
    assert results == [{"published": 0, "skipped": 0, "malformed": 0}, {"published": 1, "skipped": 0, "malformed": 0}]
    [(message, attributes)] = announcements(sqs, topic["queue_url"])
    assert (message["bucket"], message["key"], message["size"]) == (
        bucket,
        key,
        5_381,
    )  # bytes of that file in ../shared
    assert message["size"] == len(content)
    assert message["etag"] == hashlib.md5(content).hexdigest()
    assert message["label"] == attributes["label"] == "Apple Red 1"
    assert message["event_name"] == "ObjectCreated:Put"


def test_the_logs_never_carry_object_keys(
    aws: dict[str, Any], topic: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys may hold people's names (issue 24, finding 14): the log says a short hash of bucket/key instead."""
    monkeypatch.setenv("EXPECTED_BUCKET", BUCKET)
    published, skipped = "images/Kiwi/Jane Doe at home.jpg", "images/Kiwi/Jane Doe notes.txt"
    event = {"Records": [s3_record(published.replace(" ", "+")), s3_record(skipped.replace(" ", "+"))]}
    with caplog.at_level("INFO", logger="fruits.lambda"):
        assert lambda_handler.handler(event, None) == {"published": 1, "skipped": 1, "malformed": 0}

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "Jane" not in text and "Doe" not in text
    for key in (published, skipped):
        assert "sha256:" + hashlib.sha256(f"{BUCKET}/{key}".encode()).hexdigest()[:16] in text
    # The message itself still names the key: the stream needs it.
    assert [m["key"] for m, _ in announcements(aws["sqs"], topic["queue_url"])] == [published]
