"""The reader's configuration: built from Settings only, carried to the reader's processes as
the data source's options (strings), and the AWS clients it makes."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from fruits.notifications.messages import Location
from fruits.settings import Settings
from fruits.storage import CheckpointStore


@dataclass(frozen=True)
class ReaderConfig:
    """Everything the reader needs. No defaults: `reader_config` fills every field from Settings,
    and `from_options` reads back exactly what `options` wrote."""

    queue_url: str
    source: str
    checkpoint: str
    region: str
    s3_endpoint: str | None
    max_files: int
    drain: bool
    backfill_every_s: float  # 0: no periodic backfill (the first start still lists once)
    retention_s: float
    max_image_bytes: int
    partitions: int
    log_level: str

    @classmethod
    def from_options(cls, options: Any) -> ReaderConfig:
        given = {str(k).lower(): v for k, v in dict(options).items()}
        return cls(**{f.name: _from_option(f.type, given[f.name]) for f in fields(cls)})

    def options(self) -> dict[str, str]:
        return {f.name: _to_option(getattr(self, f.name)) for f in fields(self)}

    @property
    def location(self) -> Location:
        return Location.parse(self.source)

    def store(self) -> CheckpointStore:
        return CheckpointStore(self.checkpoint, self.region, self.s3_endpoint)


def reader_config(settings: Settings, *, drain: bool, partitions: int, log_level: str) -> ReaderConfig:
    """The notification reader's configuration for a stream run with `settings` (which name a queue)."""
    assert settings.notifications, "notification mode needs a queue URL"
    return ReaderConfig(
        queue_url=settings.notifications,
        source=settings.source_uri,
        checkpoint=settings.checkpoint_uri,
        region=settings.aws_region,
        s3_endpoint=settings.s3_endpoint_url,
        max_files=settings.max_files_per_trigger,
        drain=drain,
        backfill_every_s=settings.backfill_interval_seconds,
        retention_s=settings.notification_retention_seconds,
        max_image_bytes=settings.max_image_bytes,
        partitions=max(1, partitions),
        log_level=log_level,
    )


def _to_option(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _from_option(kind: Any, text: str) -> Any:
    """An option string back to its field's type (annotations are strings here: `from __future__`)."""
    if kind == "str | None":
        return text or None
    return {"str": str, "int": int, "float": float, "bool": lambda t: t == "true"}[kind](text)


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


def aws_client(service: str, region: str, endpoint: str | None = None, connections: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    # Throttling and 5xx are retried here: a local[*] task is not retried by Spark.
    config = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=connections)
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=config)
