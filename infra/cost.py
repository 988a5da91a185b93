"""What the jobs cost, from infra/prices.json: per hour, per month always on, per fit run, per 1M images.

EMR on EC2 (from a run_job_flow request): EC2 on-demand plus the EMR uplift per instance-hour;
spot discounts only the EC2 part. EMR Serverless (from ServerlessOptions): vCPU-hours and
GB-hours of the driver and the executors; the upload-notification path is infra/event_path.py.
A price missing from the table makes a total unknown, never smaller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fruits.exceptions import FruitsError
from infra.checks import check_fraction
from infra.defaults import DEFAULT_IMAGES_PER_SECOND_PER_NODE, DEFAULT_SPOT_FRACTION
from infra.prices import PRICES_FILE, PriceTable, load_prices

if TYPE_CHECKING:
    from infra.event_path import EventPathCost
    from infra.serverless import ServerlessOptions, WorkerSize

# EMR Serverless gives every worker 20 GB of disk for free (user guide, "Considerations").
FREE_DISK_GB = 20

ROLE_LABELS = {"MASTER": "primary", "CORE": "core", "TASK": "task"}  # AWS now says "primary" for MASTER


def money(value: float | None) -> float | None:
    """Dollars as the JSON output shows them: rounded, or None when unknown."""
    return None if value is None else round(value, 6)


def total(parts: list[float | None]) -> float | None:
    """A sum, or None if any part is unknown: a partial sum would understate the bill."""
    return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


def per_million(per_hour: float | None, images_per_second: float) -> float | None:
    """$ per 1M images when the processing units are kept busy (an idle stream still costs per_hour)."""
    if per_hour is None or images_per_second <= 0:
        return None
    return per_hour / (images_per_second * 3600) * 1_000_000


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
        return total([g.per_hour for g in self.groups])

    @property
    def images_per_second(self) -> float:
        """Only core and task nodes run executors; the primary runs the driver and YARN."""
        return self.processing_nodes * self.images_per_second_per_node

    @property
    def per_million_images(self) -> float | None:
        return per_million(self.per_hour, self.images_per_second)

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


# ============================================================================ EMR Serverless
HOURS_PER_MONTH = 730  # AWS's own convention for monthly estimates (8,760 h / 12)


@dataclass(frozen=True)
class WorkerCost:
    """Driver or executors of one job run; `per_worker_hour` is None when the region has no price."""

    role: str
    count: int
    vcpu: int
    memory_gb: int
    disk_gb: int
    per_worker_hour: float | None

    @property
    def per_hour(self) -> float | None:
        return None if self.per_worker_hour is None else self.per_worker_hour * self.count

    def line(self) -> str:
        head = f"{self.role:<8} {self.count} x {self.vcpu} vCPU / {self.memory_gb} GB / {self.disk_gb} GB disk"
        if self.per_worker_hour is None:
            return f"{head}  price unknown"
        return f"{head}  ${self.per_worker_hour:.4f}/h each = ${self.per_hour:.4f}/h"


@dataclass(frozen=True)
class ServerlessCostEstimate:
    region: str
    workers: tuple[WorkerCost, ...]
    images_per_second_per_executor: float
    prices_as_of: str

    @property
    def per_hour(self) -> float | None:
        return total([w.per_hour for w in self.workers])

    @property
    def images_per_second(self) -> float:
        return sum(w.count for w in self.workers if w.role == "executor") * self.images_per_second_per_executor

    @property
    def per_million_images(self) -> float | None:
        return per_million(self.per_hour, self.images_per_second)

    def lines(self) -> list[str]:
        out = [f"cost estimate, EMR Serverless x86_64, {self.region} (prices as of {self.prices_as_of}):"]
        out += [f"  {w.line()}" for w in self.workers]
        per_hour, per_million = self.per_hour, self.per_million_images
        out.append(
            f"  total    {'unknown: no EMR Serverless price for this region' if per_hour is None else f'${per_hour:.4f}/h'}"
        )
        executors = sum(w.count for w in self.workers if w.role == "executor")
        rate = (
            f"{executors} executors x {self.images_per_second_per_executor:g} img/s = {self.images_per_second:g} img/s"
        )
        out.append(f"  per 1M images {'unknown' if per_million is None else f'${per_million:.4f}'}  ({rate})")
        out.append(
            "  assumes: workers billed while the job runs (per second, 1-minute minimum); 20 GB disk per worker free"
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
            "images_per_second_per_executor": self.images_per_second_per_executor,
            "prices_as_of": self.prices_as_of,
            "workers": [
                {
                    "role": w.role,
                    "count": w.count,
                    "vcpu": w.vcpu,
                    "memory_gb": w.memory_gb,
                    "disk_gb": w.disk_gb,
                    "per_worker_hour": money(w.per_worker_hour),
                    "per_hour": money(w.per_hour),
                }
                for w in self.workers
            ],
        }


def estimate_serverless_cost(
    options: ServerlessOptions,
    images_per_second_per_executor: float = DEFAULT_IMAGES_PER_SECOND_PER_NODE,
    prices: PriceTable | None = None,
) -> ServerlessCostEstimate:
    """Driver + executors of one job run of `options`, per hour and per 1M images (executors kept busy)."""
    prices = prices or load_prices()
    if images_per_second_per_executor <= 0:
        raise FruitsError(f"--images-per-second-per-executor must be positive, got {images_per_second_per_executor:g}")
    price = prices.serverless_price(options.region)

    def worker(role: str, count: int, size: WorkerSize) -> WorkerCost:
        hourly = None
        if price is not None:
            extra_disk = max(0, size.disk_gb - FREE_DISK_GB)
            hourly = (
                size.vcpu * price.vcpu_hour + size.memory_gb * price.memory_gb_hour + extra_disk * price.storage_gb_hour
            )
        return WorkerCost(role, count, size.vcpu, size.memory_gb, size.disk_gb, hourly)

    workers = (worker("driver", 1, options.driver), worker("executor", options.executors, options.executor))
    return ServerlessCostEstimate(options.region, workers, images_per_second_per_executor, prices.serverless_as_of)


# ============================================================================ side by side
# Assumptions, not quotes: what a fit run pays before the first image. On EC2 the cluster is
# provisioned and bootstrapped first (the bootstrap alone installed the wheelhouse in 2.5 min on
# a 2-core machine here); EMR Serverless starts workers in about a minute and bills 1 minute minimum.
FIT_STARTUP_MINUTES = {"EMR on EC2": 10.0, "EMR Serverless": 1.0}
DEFAULT_FIT_IMAGES = 10_000


@dataclass(frozen=True)
class Comparison:
    region: str
    ec2: CostEstimate
    serverless: ServerlessCostEstimate
    events: EventPathCost
    fit_images: int

    def columns(self) -> dict[str, dict[str, float | None]]:
        events = self.events.per_million_images
        out: dict[str, dict[str, float | None]] = {}
        for target, estimate in (("EMR on EC2", self.ec2), ("EMR Serverless", self.serverless)):
            per_hour, compute = estimate.per_hour, estimate.per_million_images
            fit_hours = self.fit_images / estimate.images_per_second / 3600 + FIT_STARTUP_MINUTES[target] / 60
            out[target] = {
                "stream_per_hour": per_hour,
                "stream_per_month": None if per_hour is None else per_hour * HOURS_PER_MONTH,
                "fit_run": None if per_hour is None else per_hour * fit_hours,
                "per_million_compute": compute,
                "per_million_events": events,
                "per_million_total": None if compute is None else compute + events,
            }
        return out

    def lines(self) -> list[str]:
        rows = (
            ("stream_per_hour", "always-on stream, per hour"),
            ("stream_per_month", f"always-on stream, per month ({HOURS_PER_MONTH} h)"),
            ("fit_run", f"fit run, {self.fit_images:,} images + start-up"),
            ("per_million_compute", "per 1M images, compute (kept busy)"),
            ("per_million_events", f"per 1M images, event path ({self.events.wiring})"),
            ("per_million_total", "per 1M images, total"),
        )
        columns = self.columns()
        out = [f"cost side by side, {self.region}, USD:", f"  {'':<44} {'EMR on EC2':>12} {'EMR Serverless':>15}"]
        for key, label in rows:
            cells = ["unknown" if c[key] is None else f"{c[key]:.4f}" for c in columns.values()]
            out.append(f"  {label:<44} {cells[0]:>12} {cells[1]:>15}")
        out.append(
            f"  assumes: {self.ec2.images_per_second:g} img/s on EC2 ({self.ec2.processing_nodes} processing nodes), "
            f"{self.serverless.images_per_second:g} img/s on Serverless; fit start-up billed "
            f"{FIT_STARTUP_MINUTES['EMR on EC2']:g} min on EC2, {FIT_STARTUP_MINUTES['EMR Serverless']:g} min on Serverless"
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "currency": "USD",
            "hours_per_month": HOURS_PER_MONTH,
            "fit_images": self.fit_images,
            "fit_startup_minutes": FIT_STARTUP_MINUTES,
            "targets": {t: {k: money(v) for k, v in c.items()} for t, c in self.columns().items()},
            "event_path": self.events.to_dict(),
        }
