"""What the upload-notification path costs per 1M images (Lambda, SNS, SQS, the stream's S3 GETs), from
infra/prices.json. An event-path price borrowed from another region says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fruits.exceptions import FruitsError
from infra.cost import money
from infra.prices import PriceTable, load_prices

WIRINGS = ("lambda-sns", "s3-sqs")
# The template's function (MemorySize 128, arm64); its duration is an assumption: one SNS publish
# per record, a few tens of ms, rounded up. Tune with --lambda-ms.
LAMBDA_MEMORY_MB = 128
DEFAULT_LAMBDA_MS = 100.0
SQS_MESSAGES_PER_REQUEST = 10  # ReceiveMessage / DeleteMessageBatch take up to 10 messages


@dataclass(frozen=True)
class EventItem:
    name: str
    per_million_images: float
    note: str = ""


@dataclass(frozen=True)
class EventPathCost:
    """What the notification path costs per 1M uploads, item by item (compute is elsewhere)."""

    region: str
    wiring: str
    items: tuple[EventItem, ...]

    @property
    def per_million_images(self) -> float:
        return sum(i.per_million_images for i in self.items)

    def lines(self) -> list[str]:
        label = "S3 -> Lambda -> SNS -> SQS" if self.wiring == "lambda-sns" else "S3 -> SQS directly"
        out = [f"event path per 1M images, {label}, {self.region}:"]
        out += [f"  {i.name:<52} ${i.per_million_images:.4f}" + (f"  ({i.note})" if i.note else "") for i in self.items]
        out.append(f"  {'total':<52} ${self.per_million_images:.4f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "wiring": self.wiring,
            "per_million_images": money(self.per_million_images),
            "items": [
                {"name": i.name, "per_million_images": money(i.per_million_images), "note": i.note} for i in self.items
            ],
        }


def estimate_event_path(
    region: str, wiring: str = "lambda-sns", lambda_ms: float = DEFAULT_LAMBDA_MS, prices: PriceTable | None = None
) -> EventPathCost:
    """Per 1M uploads: Lambda + SNS (the default wiring) or neither (S3 -> SQS), SQS, and the stream's S3 GETs."""
    prices = prices or load_prices()
    if wiring not in WIRINGS:
        raise FruitsError(f"--wiring must be one of {', '.join(WIRINGS)}, got {wiring!r}")
    if lambda_ms <= 0:
        raise FruitsError(f"--lambda-ms must be positive, got {lambda_ms:g}")

    def item(name: str, price: str, per_image: float, note: str = "") -> EventItem:
        found = prices.event_price(region, price)
        if found.assumed_from:
            note = "; ".join(n for n in (note, f"{found.assumed_from} price: none found for {region}") if n)
        return EventItem(name, per_image * found.value, note)

    sqs = item(
        "SQS receive + delete, 10 messages per request", "sqs_requests_per_million", 2 / SQS_MESSAGES_PER_REQUEST
    )
    s3_get = item("S3 GET: the stream reads each image once", "s3_gets_per_million", 1.0)
    if wiring == "s3-sqs":
        return EventPathCost(region, wiring, (sqs, s3_get))
    gb_seconds_per_million = 1_000_000 * (lambda_ms / 1000) * (LAMBDA_MEMORY_MB / 1024)
    duration = prices.event_price(region, "lambda_arm64_gb_second")
    duration_note = f"{LAMBDA_MEMORY_MB} MB arm64 x {lambda_ms:g} ms, assumed"
    if duration.assumed_from:
        duration_note += f"; {duration.assumed_from} price: none found for {region}"
    items = (
        item("Lambda invocations, one per upload", "lambda_requests_per_million", 1.0),
        EventItem("Lambda duration", gb_seconds_per_million * duration.value, duration_note),
        item("SNS publishes, one per upload", "sns_publishes_per_million", 1.0),
        item("SNS -> SQS deliveries", "sns_sqs_deliveries_per_million", 1.0, "counted free: not confirmed"),
        sqs,
        s3_get,
    )
    return EventPathCost(region, wiring, items)
