"""What a cluster costs: per hour and per 1M images, from a run_job_flow request and infra/prices.json.

EC2 on-demand plus the EMR uplift per instance-hour; spot discounts only the EC2 part; a price
missing from the table makes the total unknown, never smaller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fruits.exceptions import FruitsError
from infra.checks import check_fraction
from infra.defaults import DEFAULT_IMAGES_PER_SECOND_PER_NODE, DEFAULT_SPOT_FRACTION
from infra.prices import PRICES_FILE, PriceTable, load_prices

ROLE_LABELS = {"MASTER": "primary", "CORE": "core", "TASK": "task"}  # AWS now says "primary" for MASTER


def money(value: float | None) -> float | None:
    """Dollars as the JSON output shows them: rounded, or None when unknown."""
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class GroupCost:
    """One instance group's share of the bill; `per_instance_hour` is None when a price is unknown."""

    role: str
    market: str
    instance_type: str
    count: int
    per_instance_hour: float | None
    note: str = ""

    @property
    def per_hour(self) -> float | None:
        return None if self.per_instance_hour is None else self.per_instance_hour * self.count

    def line(self) -> str:
        role = ROLE_LABELS.get(self.role, self.role.lower())
        head = f"{role:<7} {self.count} x {self.instance_type} {self.market:<9}"
        if self.per_instance_hour is None:
            return f"{head} price unknown ({self.note})"
        body = f"{head} ${self.per_instance_hour:.4f}/h each = ${self.per_hour:.4f}/h"
        return f"{body}  ({self.note})" if self.note else body

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "market": self.market,
            "instance_type": self.instance_type,
            "count": self.count,
            "per_instance_hour": money(self.per_instance_hour),
            "per_hour": money(self.per_hour),
            "note": self.note,
        }


@dataclass(frozen=True)
class CostEstimate:
    region: str
    groups: tuple[GroupCost, ...]
    processing_nodes: int
    images_per_second_per_node: float
    spot_fraction: float
    prices_as_of: str

    @property
    def per_hour(self) -> float | None:
        """Total $/h, or None if any group's price is unknown (a partial sum would understate it)."""
        parts = [g.per_hour for g in self.groups]
        return None if any(p is None for p in parts) else sum(parts)

    @property
    def images_per_second(self) -> float:
        """Only core and task nodes run executors; the primary runs the driver and YARN."""
        return self.processing_nodes * self.images_per_second_per_node

    @property
    def per_million_images(self) -> float | None:
        """Assumes the processing nodes are kept busy; an idle stream still costs per_hour."""
        per_hour = self.per_hour
        if per_hour is None or self.images_per_second <= 0:
            return None
        return per_hour / (self.images_per_second * 3600) * 1_000_000

    def lines(self) -> list[str]:
        out = [f"cost estimate, {self.region} (EC2 on-demand + EMR uplift, prices as of {self.prices_as_of}):"]
        out += [f"  {g.line()}" for g in self.groups]
        per_hour, per_million = self.per_hour, self.per_million_images
        out.append(f"  total   {'unknown: a price above is missing' if per_hour is None else f'${per_hour:.4f}/h'}")
        rate = (
            f"{self.processing_nodes} processing nodes x {self.images_per_second_per_node:g} img/s "
            f"= {self.images_per_second:g} img/s"
        )
        out.append(f"  per 1M images {'unknown' if per_million is None else f'${per_million:.4f}'}  ({rate})")
        out.append(
            f"  assumes: spot EC2 at {self.spot_fraction:g} x on-demand (the EMR uplift is not discounted); "
            "EBS, S3 requests and data transfer not included"
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "currency": "USD",
            "per_hour": money(self.per_hour),
            "per_million_images": money(self.per_million_images),
            "unknown": self.per_hour is None,
            "images_per_second": self.images_per_second,
            "images_per_second_per_node": self.images_per_second_per_node,
            "processing_nodes": self.processing_nodes,
            "spot_fraction": self.spot_fraction,
            "prices_as_of": self.prices_as_of,
            "groups": [g.to_dict() for g in self.groups],
        }


def instance_hour_price(
    instance_type: str, region: str, market: str, spot_fraction: float, prices: PriceTable
) -> tuple[float | None, str]:
    """$/h for one instance (EC2, spot-discounted if SPOT, + EMR uplift) and why it is unknown if so."""
    prices.require_known(instance_type)
    price = prices.lookup(region, instance_type)
    missing = [name for name, value in (("EC2", price.ec2), ("EMR uplift", price.emr)) if value is None]
    if missing:
        return None, f"no {' or '.join(missing)} price for {instance_type} in {region} in infra/{PRICES_FILE.name}"
    ec2 = price.ec2 * spot_fraction if market == "SPOT" else price.ec2
    return ec2 + price.emr, ""


def estimate_cost(
    request: Mapping[str, Any],
    region: str,
    images_per_second_per_node: float = DEFAULT_IMAGES_PER_SECOND_PER_NODE,
    *,
    spot_fraction: float = DEFAULT_SPOT_FRACTION,
    prices: PriceTable | None = None,
) -> CostEstimate:
    """Cost of a run_job_flow request, per hour and per 1M images."""
    prices = prices or load_prices()
    check_fraction("--spot-fraction", spot_fraction)
    if images_per_second_per_node <= 0:
        raise FruitsError(f"--images-per-second-per-node must be positive, got {images_per_second_per_node:g}")
    groups = []
    for group in request["Instances"]["InstanceGroups"]:
        market = group.get("Market", "ON_DEMAND")
        per_instance, note = instance_hour_price(group["InstanceType"], region, market, spot_fraction, prices)
        bid = group.get("BidPrice")
        if per_instance is not None and bid is not None:
            expected_spot = prices.lookup(region, group["InstanceType"]).ec2 * spot_fraction
            if float(bid) < expected_spot:
                note = f"bid ${float(bid):.4f} is below the expected spot ${expected_spot:.4f}: nodes may not launch"
        groups.append(
            GroupCost(group["InstanceRole"], market, group["InstanceType"], group["InstanceCount"], per_instance, note)
        )
    processing = sum(g.count for g in groups if g.role in ("CORE", "TASK"))
    return CostEstimate(region, tuple(groups), processing, images_per_second_per_node, spot_fraction, prices.as_of)


def cost_per_million(
    images_per_second_total: float,
    instance_type: str,
    nodes: int,
    region: str,
    market: str = "ON_DEMAND",
    *,
    spot_fraction: float = DEFAULT_SPOT_FRACTION,
    prices: PriceTable | None = None,
) -> float | None:
    """$ per 1M images for a measured throughput on `nodes` billed instances (primary included).

    For the benchmarks: e.g. the seed's 320 images in 95 s on 3 x m5.xlarge is
    cost_per_million(320 / 95, "m5.xlarge", 3, "eu-west-3"). None when a price is unknown.
    """
    if images_per_second_total <= 0 or nodes < 1:
        raise FruitsError("cost per 1M images needs a positive throughput and at least one node")
    if market not in ("ON_DEMAND", "SPOT"):
        raise FruitsError(f"market must be ON_DEMAND or SPOT, got {market!r}")
    check_fraction("--spot-fraction", spot_fraction)
    per_instance, _ = instance_hour_price(instance_type, region, market, spot_fraction, prices or load_prices())
    if per_instance is None:
        return None
    return per_instance * nodes / (images_per_second_total * 3600) * 1_000_000
