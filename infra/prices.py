"""infra/prices.json: what an instance-hour costs, per region, as far as the table knows.

Typed in by hand from the public price pages, never fetched at run time. Where a price is not
known the table has null (or no entry) and every estimate says "unknown" instead of guessing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits.exceptions import FruitsError

PRICES_FILE = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class InstancePrice:
    """One instance-hour in one region; None where the table does not know the price."""

    ec2: float | None
    emr: float | None


@dataclass(frozen=True)
class PriceTable:
    """The known instance types and, per region, what the table knows of their price."""

    source: str
    as_of: str
    instance_types: Mapping[str, Mapping[str, Any]]
    regions: Mapping[str, Mapping[str, InstancePrice]]

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
    return PriceTable(raw["source"], raw["as_of"], raw["instance_types"], regions)
