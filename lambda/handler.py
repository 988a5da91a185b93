"""Announce each new fruit image: S3 `ObjectCreated:*` on the images prefix -> one SNS message.

The Lambda zip holds this file only (plus boto3, which the runtime provides), so it cannot
import the `fruits` package: its image rules copy those of `fruits.source` (is_image_name,
in_hidden_folder, label_from_path); tests/lambda/test_rules.py holds both copies to the same answers.

Environment:
    TOPIC_ARN       SNS topic to publish to (required).
    IMAGES_PREFIX   only keys under this prefix are announced (default "images/").
    EXPECTED_BUCKET only records of this bucket are announced (the stack sets it; unset: any bucket).
    LOG_LEVEL       logging level (default INFO).
    AWS_ENDPOINT_URL_SNS / AWS_ENDPOINT_URL   honoured by boto3 itself (moto in tests).

Delivery is at-least-once end to end: S3 may send an event twice, and a retried invocation
republishes records that were already published before the failure. Every message therefore
carries `dedup_key` (bucket/key/sequencer), which is identical for all copies of one upload.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import posixpath
from typing import Any
from urllib.parse import unquote_plus

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SCHEMA = "fruits.image-uploaded/1"  # fruits.contracts.UPLOAD_MESSAGE_SCHEMA (tests hold the two equal)
SUBJECT = "Fruits! image uploaded"
APP_FOLDER = "app"  # the public app's uploads (fruits/contracts.py APP_FOLDER): no label

log = logging.getLogger("fruits.lambda")
# The Lambda runtime configures the root logger's handler; the level is ours to choose.
log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


class MalformedRecord(ValueError):
    """A record that is not a well-formed S3 event record; it is skipped, never retried."""


@functools.cache
def sns_client(region: str) -> Any:
    """One client per region and container: creating it costs more than a publish.

    The region comes from the topic ARN so a topic in another region still works.
    """
    import boto3

    return boto3.client("sns", region_name=region)


def is_image_key(key: str) -> bool:
    """Same rule as fruits.source.is_image_name: image extension, not a hidden/underscore name."""
    name = posixpath.basename(key)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith((".", "_"))


def in_hidden_folder(key: str, prefix: str) -> bool:
    """Spark's listing skips folders named '.x' or '_x' too: the stream never sees those uploads."""
    folders = key.removeprefix(prefix).split("/")[:-1]
    return any(folder.startswith((".", "_")) for folder in folders)


def images_prefix() -> str:
    """IMAGES_PREFIX as a folder: "images" must not also match "images-old/"."""
    prefix = os.environ.get("IMAGES_PREFIX", "images/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def parse_record(record: Any, prefix: str) -> dict[str, Any]:
    """An S3 event record -> the message body. Raises MalformedRecord.

    Keys arrive URL-encoded with spaces as '+' (a literal '+' is %2B), hence unquote_plus.
    AWS always sends `sequencer`; S3-compatible emulators may not, so it is optional and the
    dedup key then falls back to the version id or the ETag of the object. Only ObjectCreated
    records must carry a size: ObjectRemoved records have none, and are skipped, not malformed.
    """
    try:
        s3 = record["s3"]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
        event_name = record["eventName"]
    except (KeyError, TypeError) as exc:
        raise MalformedRecord(f"missing field {exc}") from None
    if not isinstance(bucket, str) or not bucket:
        raise MalformedRecord(f"bad bucket name {bucket!r}")
    if not isinstance(raw_key, str) or not raw_key:
        raise MalformedRecord(f"bad object key {raw_key!r}")
    if not isinstance(event_name, str):
        raise MalformedRecord(f"bad eventName {event_name!r}")
    event_name = event_name.removeprefix("s3:")
    size = obj.get("size")
    if event_name.startswith("ObjectCreated:") and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise MalformedRecord(f"bad object size {size!r}")
    key = unquote_plus(raw_key)
    etag = obj.get("eTag")
    sequencer = obj.get("sequencer")
    version_id = obj.get("versionId")
    message: dict[str, Any] = {
        "schema": SCHEMA,
        "dedup_key": f"{bucket}/{key}/{sequencer or version_id or etag}",
        "bucket": bucket,
        "key": key,
        "uri": f"s3://{bucket}/{key}",
        "label": label_of(key, prefix),
        "size": size,
        "etag": etag,
        "sequencer": sequencer,
        "event_name": event_name,
        "event_time": record.get("eventTime"),
        "region": record.get("awsRegion"),
    }
    if version_id:
        message["version_id"] = version_id
    return message


def label_of(key: str, prefix: str) -> str | None:
    """The class of an image is its folder's name ("images/Apple Red 1/x.jpg" -> "Apple Red 1").

    An image directly under the prefix has no class folder: None, not the prefix's name; nor has
    an upload of the public app, under "<prefix>app/" (its folders say consent, not a class).
    """
    relative = key.removeprefix(prefix)
    if relative.startswith(APP_FOLDER + "/"):
        return None
    return posixpath.basename(posixpath.dirname(relative)) or None


def skip_reason(message: dict[str, Any], prefix: str, expected_bucket: str = "") -> str | None:
    """Why a well-formed record is not announced, or None to publish it."""
    if expected_bucket and message["bucket"] != expected_bucket:
        # A notification configured on another bucket by mistake (or a forged test event) must
        # not announce objects the stream cannot, and must not, read.
        return f"bucket {message['bucket']!r} is not {expected_bucket!r}"
    if not message["event_name"].startswith("ObjectCreated:"):
        return f"event {message['event_name']}"
    if not message["key"].startswith(prefix):
        return f"outside prefix {prefix!r}"
    if not is_image_key(message["key"]):
        return "not an image name"
    if in_hidden_folder(message["key"], prefix):
        return "in a hidden or temporary folder"
    return None


def key_ref(bucket: str, key: str) -> str:
    """What the logs say instead of an object key (which may hold a person's name): a short hash of bucket/key,
    enough to match a log line with an object someone asks about, not to read the name back."""
    return "sha256:" + hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:16]


def message_attributes(message: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Attributes for SNS subscription filter policies (e.g. only "Kumquats" uploads)."""
    attributes = {
        "bucket": {"DataType": "String", "StringValue": message["bucket"]},
        "event_name": {"DataType": "String", "StringValue": message["event_name"]},
        "size": {"DataType": "Number", "StringValue": str(message["size"])},
    }
    # SNS rejects empty attribute values: an image at the prefix root has no label.
    if message["label"]:
        attributes["label"] = {"DataType": "String", "StringValue": message["label"]}
    return attributes


def publish(topic_arn: str, message: dict[str, Any]) -> str:
    """Publish one message; errors propagate so that Lambda retries the invocation."""
    region = topic_arn.split(":")[3]
    response = sns_client(region).publish(
        TopicArn=topic_arn,
        Subject=SUBJECT,
        Message=json.dumps(message, sort_keys=True),
        MessageAttributes=message_attributes(message),
    )
    return response["MessageId"]


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Entry point. Returns counts; raises only when publishing fails (so Lambda retries)."""
    topic_arn = os.environ.get("TOPIC_ARN", "")
    if topic_arn.count(":") < 5:
        raise RuntimeError(f"TOPIC_ARN must be an SNS topic ARN, got {topic_arn!r}")
    prefix = images_prefix()
    expected_bucket = os.environ.get("EXPECTED_BUCKET", "")
    event = event if isinstance(event, dict) else {}
    records = event.get("Records")
    summary = {"published": 0, "skipped": 0, "malformed": 0}
    if not isinstance(records, list):
        # s3:TestEvent (sent when a notification is configured) has no Records.
        log.info("no records in event (%s): nothing to publish", event.get("Event", "unknown event"))
        return summary
    for index, record in enumerate(records):
        try:
            message = parse_record(record, prefix)
        except MalformedRecord as exc:
            summary["malformed"] += 1
            log.warning("record %d malformed, skipped: %s", index, exc)
            continue
        reason = skip_reason(message, prefix, expected_bucket)
        if reason:
            summary["skipped"] += 1
            log.info("record %d skipped (%s): %s", index, reason, key_ref(message["bucket"], message["key"]))
            continue
        message_id = publish(topic_arn, message)
        summary["published"] += 1
        log.info("record %d published %s as %s", index, key_ref(message["bucket"], message["key"]), message_id)
    log.info("summary %s", json.dumps(summary, sort_keys=True))
    return summary
