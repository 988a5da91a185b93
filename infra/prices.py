"""infra/prices.json: what an instance-hour costs, per region, as far as the table knows.

Typed in by hand from the public price pages, never fetched at run time. Where a price is not
known the table has null (or no entry) and every estimate says "unknown" instead of guessing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruits.exceptions import FruitsError

PRICES_FILE = Path(__file__).with_name("prices.json")
# The region the event-path prices were found for; others borrow them, marked as assumed.
EVENT_PRICE_FALLBACK = "us-east-1"


@dataclass(frozen=True)
class InstancePrice:
    """One instance-hour in one region; None where the table does not know the price."""

    ec2: float | None
    emr: float | None


@dataclass(frozen=True)
class ServerlessPrice:
    """EMR Serverless x86_64 in one region: per vCPU-hour, per GB-hour, per GB-hour of extra storage."""

    vcpu_hour: float
    memory_gb_hour: float
    storage_gb_hour: float


@dataclass(frozen=True)
class EventPrice:
    """One price of the upload-notification path in a region, and where it comes from."""

    value: float
    assumed_from: str | None = None  # the region whose price stands in when the table has none for this one


@dataclass(frozen=True)
class PriceTable:
    """The known instance types and, per region, what the table knows of their price."""

    source: str
    as_of: str
    instance_types: Mapping[str, Mapping[str, Any]]
    regions: Mapping[str, Mapping[str, InstancePrice]]
    serverless: Mapping[str, ServerlessPrice] = field(default_factory=dict)
    serverless_source: str = ""
    serverless_as_of: str = ""
    events: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def serverless_price(self, region: str) -> ServerlessPrice | None:
        return self.serverless.get(region)

    def event_price(self, region: str, item: str) -> EventPrice:
        """A price of the event path; a region without it borrows us-east-1's, and says so."""
        if item in self.events.get(region, {}):
            return EventPrice(self.events[region][item])
        return EventPrice(self.events[EVENT_PRICE_FALLBACK][item], assumed_from=EVENT_PRICE_FALLBACK)

    def lookup(self, region: str, instance_type: str) -> InstancePrice:
        return self.regions.get(region, {}).get(instance_type, InstancePrice(None, None))

    def require_known(self, instance_type: str) -> None:
        """A typo must not become an 'unknown price' line: only types in the table are accepted."""
        if instance_type not in self.instance_types:
            raise FruitsError(
                f"unknown instance type {instance_type!r}: known types are "
                f"{', '.join(sorted(self.instance_types))} (add it to infra/{PRICES_FILE.name} to use it)"
            )


@functools.lru_cache(maxsize=4)
def load_prices(path: Path = PRICES_FILE) -> PriceTable:
    raw = json.loads(path.read_text())
    regions = {
        region: {itype: InstancePrice(p.get("ec2"), p.get("emr")) for itype, p in types.items()}
        for region, types in raw["regions"].items()
    }
    serverless = raw.get("emr_serverless", {})
    return PriceTable(
        raw["source"],
        raw["as_of"],
        raw["instance_types"],
        regions,
        serverless={region: ServerlessPrice(**p) for region, p in serverless.get("regions", {}).items()},
        serverless_source=serverless.get("source", ""),
        serverless_as_of=serverless.get("as_of", ""),
        events=raw.get("event_path", {}).get("regions", {}),
    )
