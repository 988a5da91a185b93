"""Plan, create, feed, watch and terminate the EMR cluster that runs the Fruits! jobs.

`plan` prints the run_job_flow request and its cost estimate without any AWS call. `up` checks the
same request offline, then creates the cluster. `submit --job stream|fit|both` adds the jobs as
spark-submit steps. `status` prints the cluster state and one line per step. `down --yes`
terminates the cluster. See docs/emr.md.

Every request is checked offline before it is sent: botocore's own parameter validation against
the EMR service model, the service model's enums (which botocore does not check), and our rules
(emr-7.x release, instance types from infra/prices.json, known configuration classifications,
S3 bucket name syntax). Costs come from infra/prices.json: EC2 on-demand plus the EMR uplift per
instance-hour; spot discounts only the EC2 part; a price missing from the table is reported as
unknown, never guessed. The EMR endpoint is --endpoint-url, else boto3's own
AWS_ENDPOINT_URL_EMR / AWS_ENDPOINT_URL (Settings.s3_endpoint_url is for S3 only).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fruits import __version__
from cli.console import emit_summary  # TODO(split): the CLI moves to cli/emr.py
from fruits.exceptions import FruitsError
from fruits.spark import APP_CONF

if TYPE_CHECKING:
    from fruits.settings import Settings

log = logging.getLogger(__name__)

PRICES_FILE = Path(__file__).with_name("prices.json")

# emr-7.10.0 ships Spark 3.5.5 (EMR release guide, "Spark release history"); any emr-7.x.y is accepted.
DEFAULT_RELEASE = "emr-7.10.0"
RELEASE_PATTERN = re.compile(r"^emr-7\.\d+\.\d+$")
DEFAULT_INSTANCE_TYPE = "m5.xlarge"
DEFAULT_NAME = "fruits-stream"
SERVICE_ROLE = "fruits-emr-service-role"
INSTANCE_PROFILE = "fruits-emr-ec2-profile"

# What infra/bootstrap.sh installs on every node (Amazon Linux 2023: `dnf install python3.11`).
NODE_PYTHON = "/usr/bin/python3.11"
# Executors run as the `yarn` user, whose home is not hadoop's: point Keras at the bootstrap's cache.
NODE_KERAS_HOME = "/home/hadoop/.keras"

# The bucket layout the CloudFormation template grants access to.
WEIGHTS_KEY = "models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
BOOTSTRAP_SCRIPT_KEY = "bootstrap/bootstrap.sh"
SPARK_ENTRY_KEY = "bootstrap/spark_entry.py"
CONSTRAINTS_KEY = "bootstrap/constraints.txt"
# Every wheel the nodes install (infra/build_wheelhouse.sh): the bootstrap uses no package index.
WHEELHOUSE_KEY = "bootstrap/wheelhouse/"
DEFAULT_WHEEL = f"fruits-{__version__}-py3-none-any.whl"

# Assumption, not a quote: spot has recently cleared around 30-50% of on-demand EC2 for m5 in the
# EU regions; 0.4 is the middle. Tune with --spot-fraction.
DEFAULT_SPOT_FRACTION = 0.4
# Measured here: ONNX Runtime ~200 img/s on 2 cores plus ~3.2 ms/img of decode+resize+scale, i.e. a
# ~150 img/s pure pipeline. An m5.xlarge has 4 vCPUs = 2 physical cores, so the same ~150; halved
# for Spark streaming overheads (Arrow, S3 reads, parquet commits, scheduling) until the streaming
# benchmark on the cluster replaces it.
DEFAULT_IMAGES_PER_SECOND_PER_NODE = 75.0

# Top-level classifications this launcher accepts; `export` only nested inside a *-env one.
KNOWN_CLASSIFICATIONS = frozenset(
    {
        "spark",
        "spark-defaults",
        "spark-env",
        "spark-log4j2",
        "spark-metrics",
        "spark-hive-site",
        "yarn-site",
        "yarn-env",
        "capacity-scheduler",
        "core-site",
        "hdfs-site",
        "hadoop-env",
        "hadoop-log4j",
        "mapred-site",
        "emrfs-site",
        "livy-conf",
        "livy-env",
    }
)
NESTED_CLASSIFICATION = "export"
ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
JOBS = ("stream", "fit", "both")
ROLE_LABELS = {"MASTER": "primary", "CORE": "core", "TASK": "task"}  # AWS now says "primary" for MASTER
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
IDLE_TIMEOUT_RANGE = (60, 7 * 24 * 3600)  # AutoTerminationPolicy.IdleTimeout limits (1 min .. 7 days)


# ============================================================================ prices and cost
@dataclass(frozen=True)
class InstancePrice:
    """One instance-hour in one region; None where the table does not know the price."""

    ec2: float | None
    emr: float | None


@dataclass(frozen=True)
class PriceTable:
    """infra/prices.json: the known instance types and, per region, what the table knows of their price."""

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
        def money(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

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
            "groups": [
                {
                    "role": g.role,
                    "market": g.market,
                    "instance_type": g.instance_type,
                    "count": g.count,
                    "per_instance_hour": money(g.per_instance_hour),
                    "per_hour": money(g.per_hour),
                    "note": g.note,
                }
                for g in self.groups
            ],
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
    request_or_options: Mapping[str, Any] | ClusterOptions,
    region: str,
    images_per_second_per_node: float = DEFAULT_IMAGES_PER_SECOND_PER_NODE,
    *,
    spot_fraction: float = DEFAULT_SPOT_FRACTION,
    prices: PriceTable | None = None,
) -> CostEstimate:
    """Cost of a run_job_flow request (or of the request ClusterOptions would build), per hour and per 1M images."""
    prices = prices or load_prices()
    _check_fraction("--spot-fraction", spot_fraction)
    if images_per_second_per_node <= 0:
        raise FruitsError(f"--images-per-second-per-node must be positive, got {images_per_second_per_node:g}")
    request = (
        build_request(request_or_options, prices)
        if isinstance(request_or_options, ClusterOptions)
        else request_or_options
    )
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
    _check_fraction("--spot-fraction", spot_fraction)
    per_instance, _ = instance_hour_price(instance_type, region, market, spot_fraction, prices or load_prices())
    if per_instance is None:
        return None
    return per_instance * nodes / (images_per_second_total * 3600) * 1_000_000


# ============================================================================ the cluster request
@dataclass(frozen=True)
class ClusterOptions:
    """Everything `plan` and `up` need; build_request turns it into a run_job_flow request."""

    bucket: str
    region: str = "eu-west-3"
    name: str = DEFAULT_NAME
    release_label: str = DEFAULT_RELEASE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    core_count: int = 2
    task_count: int = 0
    # Spot bid as a fraction of the on-demand EC2 price; None leaves BidPrice out (capped at on-demand).
    spot_bid_fraction: float | None = None
    ebs_size_gb: int | None = None
    subnet_id: str | None = None
    key_name: str | None = None
    idle_timeout_seconds: int | None = None
    owner: str | None = None
    cost_center: str | None = None
    service_role: str = SERVICE_ROLE
    instance_profile: str = INSTANCE_PROFILE
    wheel: str = DEFAULT_WHEEL
    # s3:// prefix of the wheelhouse; None: s3://bucket/bootstrap/wheelhouse/.
    wheelhouse: str | None = None
    # (classification, property, value) from --conf, merged over the defaults.
    extra_configurations: tuple[tuple[str, str, str], ...] = ()

    def s3(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def wheelhouse_uri(self) -> str:
        return self.wheelhouse or self.s3(WHEELHOUSE_KEY)

    @property
    def processing_nodes(self) -> int:
        return self.core_count + self.task_count


def validate_options(options: ClusterOptions, prices: PriceTable | None = None) -> None:
    """Our own rules on the options; the built request gets botocore's checks in validate_request."""
    prices = prices or load_prices()
    check_bucket(options.bucket)
    if not REGION_PATTERN.match(options.region):
        raise FruitsError(f"--region {options.region!r} is not an AWS region name (e.g. eu-west-3)")
    if not RELEASE_PATTERN.match(options.release_label):
        raise FruitsError(
            f"--release-label {options.release_label!r} is not an emr-7.x release (e.g. {DEFAULT_RELEASE}): "
            "the jobs need EMR 7 (Spark 3.5, Amazon Linux 2023 with python3.11)"
        )
    prices.require_known(options.instance_type)
    if options.core_count < 1:
        raise FruitsError("--core must be at least 1: core nodes run the executors and hold HDFS")
    if options.task_count < 0:
        raise FruitsError("--task must not be negative")
    if options.spot_bid_fraction is not None:
        _check_fraction("--spot-bid-fraction", options.spot_bid_fraction)
    if options.idle_timeout_seconds is not None and not (
        IDLE_TIMEOUT_RANGE[0] <= options.idle_timeout_seconds <= IDLE_TIMEOUT_RANGE[1]
    ):
        raise FruitsError(f"--idle-timeout must be between {IDLE_TIMEOUT_RANGE[0]} and {IDLE_TIMEOUT_RANGE[1]} seconds")
    if options.ebs_size_gb is not None and options.ebs_size_gb < 1:
        raise FruitsError("--ebs-gb must be at least 1")
    check_wheelhouse(options)


def check_wheelhouse(options: ClusterOptions) -> None:
    """--wheelhouse must be an S3 prefix; outside s3://bucket/bootstrap/ the stack's instance role cannot read it."""
    uri = options.wheelhouse_uri
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise FruitsError(f"--wheelhouse {uri!r} is not an S3 prefix (e.g. s3://{options.bucket}/{WHEELHOUSE_KEY})")
    check_bucket(parsed.netloc, flag="--wheelhouse bucket")
    if not uri.startswith(options.s3("bootstrap/")):
        log.warning(
            "--wheelhouse %s is outside %s: the stack's EMR instance role can only read and list that prefix, "
            "so grant it read and list on the wheelhouse or the bootstrap fails",
            uri,
            options.s3("bootstrap/"),
        )


def check_bucket(bucket: str, flag: str = "--bucket") -> None:
    if (
        not BUCKET_PATTERN.match(bucket)
        or ".." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
        or bucket.startswith("xn--")
    ):
        raise FruitsError(
            f"{flag} {bucket!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, dots, hyphens; e.g. fruits-<account>-<region>)"
        )


def _check_fraction(flag: str, value: float) -> None:
    if not 0 < value <= 1:
        raise FruitsError(f"{flag} must be in (0, 1], got {value:g}")


def spark_configurations(
    processing_nodes: int, extra: Sequence[tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """EMR Configurations: Spark defaults for the jobs, the node Python, then the user's --conf on top."""
    python_env = {"PYSPARK_PYTHON": NODE_PYTHON, "PYSPARK_DRIVER_PYTHON": NODE_PYTHON, "KERAS_HOME": NODE_KERAS_HOME}
    spark_defaults = {
        # The application settings of the local session factory (Arrow batch size, worker reuse,
        # one task per core...), so `spark-submit` on the cluster behaves like `fruits` locally.
        **APP_CONF,
        # EMR turns dynamic allocation on. For an always-on stream it releases executors between quiet
        # micro-batches, then pays a new JVM + Python worker + engine load on the next burst, and its
        # pending-task heuristic is not streaming-aware. Static: one executor per processing node.
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": str(processing_nodes),
        # client-mode driver on the primary, executors and the YARN AM: all on the bootstrap's python3.11.
        "spark.pyspark.python": NODE_PYTHON,
        "spark.pyspark.driver.python": NODE_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": NODE_PYTHON,
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON": NODE_PYTHON,
        "spark.executorEnv.KERAS_HOME": NODE_KERAS_HOME,
        "spark.yarn.appMasterEnv.KERAS_HOME": NODE_KERAS_HOME,
    }
    configurations: list[dict[str, Any]] = [
        # One executor sized to the whole node (all vCPUs: one Python worker per core, 1 thread each).
        {"Classification": "spark", "Properties": {"maximizeResourceAllocation": "true"}},
        {"Classification": "spark-defaults", "Properties": spark_defaults},
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [{"Classification": NESTED_CLASSIFICATION, "Properties": python_env}],
        },
    ]
    by_name = {c["Classification"]: c for c in configurations}
    for classification, key, value in extra:
        if classification not in by_name:
            by_name[classification] = {"Classification": classification, "Properties": {}}
            configurations.append(by_name[classification])
        by_name[classification]["Properties"][key] = value
    return configurations


def parse_conf(text: str) -> tuple[str, str, str]:
    """--conf CLASSIFICATION:PROPERTY=VALUE, e.g. spark-defaults:spark.executor.memory=10g."""
    classification, sep, assignment = text.partition(":")
    key, eq, value = assignment.partition("=")
    if not sep or not eq or not classification or not key:
        raise FruitsError(f"--conf {text!r} is not CLASSIFICATION:PROPERTY=VALUE (e.g. yarn-site:yarn.log-aggregation-enable=true)")
    return classification, key, value


def build_request(options: ClusterOptions, prices: PriceTable | None = None) -> dict[str, Any]:
    """The run_job_flow request for the options; pure (reads the price table only to turn a bid fraction into $)."""
    prices = prices or load_prices()

    def group(name: str, role: str, market: str, count: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "Name": name,
            "InstanceRole": role,
            "Market": market,
            "InstanceType": options.instance_type,
            "InstanceCount": count,
        }
        if market == "SPOT" and options.spot_bid_fraction is not None:
            on_demand = prices.lookup(options.region, options.instance_type).ec2
            if on_demand is None:
                raise FruitsError(
                    f"cannot turn --spot-bid-fraction into a price: the on-demand price of {options.instance_type} "
                    f"in {options.region} is unknown; omit the flag to cap the bid at on-demand"
                )
            spec["BidPrice"] = f"{on_demand * options.spot_bid_fraction:.4f}"
        if options.ebs_size_gb is not None:
            spec["EbsConfiguration"] = {
                "EbsBlockDeviceConfigs": [
                    {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": options.ebs_size_gb}, "VolumesPerInstance": 1}
                ],
                "EbsOptimized": True,
            }
        return spec

    groups = [group("primary", "MASTER", "ON_DEMAND", 1), group("core", "CORE", "ON_DEMAND", options.core_count)]
    if options.task_count:
        groups.append(group("task", "TASK", "SPOT", options.task_count))
    instances: dict[str, Any] = {
        "InstanceGroups": groups,
        # The stream never ends, and between `up` and `submit` there is no step at all: stay up.
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if options.subnet_id:
        instances["Ec2SubnetId"] = options.subnet_id
    if options.key_name:
        instances["Ec2KeyName"] = options.key_name

    tags = {
        "project": "fruits",
        "owner": options.owner,
        "cost-center": options.cost_center,
        # The service role's AmazonEMRServicePolicy_v2 only acts on resources carrying this tag;
        # EMR propagates cluster tags to the instances it launches.
        "for-use-with-amazon-emr-managed-policies": "true",
    }
    request: dict[str, Any] = {
        "Name": options.name,
        "LogUri": options.s3("logs/emr/"),
        "ReleaseLabel": options.release_label,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "install-fruits",
                "ScriptBootstrapAction": {
                    "Path": options.s3(BOOTSTRAP_SCRIPT_KEY),
                    # The order infra/bootstrap.sh takes them in.
                    "Args": [
                        options.s3(f"bootstrap/{options.wheel}"),
                        options.s3(CONSTRAINTS_KEY),
                        options.s3(WEIGHTS_KEY),
                        options.wheelhouse_uri,
                    ],
                },
            }
        ],
        "Configurations": spark_configurations(options.processing_nodes, options.extra_configurations),
        "VisibleToAllUsers": True,
        "JobFlowRole": options.instance_profile,
        "ServiceRole": options.service_role,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v],
    }
    if options.idle_timeout_seconds is not None:
        request["AutoTerminationPolicy"] = {"IdleTimeout": options.idle_timeout_seconds}
    return request


# ============================================================================ offline validation
@functools.lru_cache(maxsize=1)
def _emr_service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("emr")


def validate_parameters(operation: str, params: Mapping[str, Any]) -> None:
    """botocore's validation (types, required members, minimums) plus the enums it does not check."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters as botocore_validate

    shape = _emr_service_model().operation_model(operation).input_shape
    try:
        botocore_validate(params, shape)
    except ParamValidationError as exc:
        details = [line.strip() for line in str(exc.kwargs.get("report", exc)).splitlines() if line.strip()]
        raise FruitsError(f"invalid {operation} request: {'; '.join(details)}") from None
    problems = _enum_problems(params, shape, "")
    if problems:
        raise FruitsError(f"invalid {operation} request: {'; '.join(problems)}")


def _enum_problems(value: Any, shape: Any, path: str) -> list[str]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        return [
            problem
            for key, item in value.items()
            if key in shape.members
            for problem in _enum_problems(item, shape.members[key], f"{path}.{key}" if path else key)
        ]
    if kind == "list" and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _enum_problems(item, shape.member, f"{path}[{i}]")]
    if kind == "map" and isinstance(value, Mapping):
        return [p for key, item in value.items() for p in _enum_problems(item, shape.value, f"{path}.{key}")]
    if kind == "string" and shape.enum and value not in shape.enum:
        return [f"{path}={value!r} is not one of {', '.join(shape.enum)}"]
    return []


def validate_request(request: Mapping[str, Any], prices: PriceTable | None = None) -> None:
    """Everything checkable without AWS, on the request itself (so an edited request is checked too)."""
    prices = prices or load_prices()
    validate_parameters("RunJobFlow", request)
    if not RELEASE_PATTERN.match(request.get("ReleaseLabel", "")):
        raise FruitsError(f"ReleaseLabel {request.get('ReleaseLabel')!r} is not an emr-7.x release")
    for group in request["Instances"].get("InstanceGroups", []):
        prices.require_known(group["InstanceType"])
    _check_classifications(request.get("Configurations", []), parent=None)


def _check_classifications(configurations: Sequence[Mapping[str, Any]], parent: str | None) -> None:
    for configuration in configurations:
        name = configuration["Classification"]
        if parent is None and name not in KNOWN_CLASSIFICATIONS:
            raise FruitsError(
                f"unknown configuration classification {name!r}: use one of {', '.join(sorted(KNOWN_CLASSIFICATIONS))}"
            )
        if parent is not None and not (name == NESTED_CLASSIFICATION and parent.endswith("-env")):
            raise FruitsError(f"classification {name!r} cannot be nested in {parent!r} (only 'export' inside *-env)")
        _check_classifications(configuration.get("Configurations", []), parent=name)


def planned_request(options: ClusterOptions, prices: PriceTable | None = None) -> dict[str, Any]:
    """The checked request `plan` prints and `up` sends."""
    prices = prices or load_prices()
    validate_options(options, prices)
    request = build_request(options, prices)
    validate_request(request, prices)
    return request


# ============================================================================ the job steps
@dataclass(frozen=True)
class JobOptions:
    """What the spark-submit steps pass to `fruits fit` / `fruits stream` on the cluster."""

    bucket: str
    tracking_uri: str
    weights: str | None = None  # default: the weights file under s3://bucket/models/keras/
    fit_images: str | None = None  # default: s3://bucket/images/ (the uploads, kept in class folders)
    engine: str | None = None
    trigger: str | None = None
    max_files_per_trigger: int | None = None


def check_tracking_uri(uri: str | None) -> str:
    """The registry must outlive the cluster: a sqlite file or a local path on the primary does not."""
    if not uri:
        raise FruitsError("the jobs need an MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    if urlparse(uri).scheme in ("", "file", "sqlite"):
        raise FruitsError(
            f"--tracking-uri {uri!r} would live on the cluster's disk and die with it: use a tracking server (http[s]://...)"
        )
    return uri


def build_steps(job: str, options: JobOptions) -> list[dict[str, Any]]:
    """add_job_flow_steps Steps for `--job`; `both` runs fit first because the stream needs its model."""
    if job not in JOBS:
        raise FruitsError(f"--job must be one of {', '.join(JOBS)}, got {job!r}")
    check_bucket(options.bucket)
    check_tracking_uri(options.tracking_uri)
    bucket = f"s3://{options.bucket}"
    common = ["--tracking-uri", options.tracking_uri, "--weights", options.weights or f"{bucket}/{WEIGHTS_KEY}"]
    if options.engine:
        common += ["--engine", options.engine]
    fit = [
        "fit",
        "--images", options.fit_images or f"{bucket}/images/",
        "--features-output", f"{bucket}/features/",
        *common,
    ]  # fmt: skip
    stream = [
        "stream",
        "--source", f"{bucket}/images/",
        "--output", f"{bucket}/results/",
        "--errors", f"{bucket}/errors/",
        "--checkpoint", f"{bucket}/checkpoints/stream/",
        *common,
    ]  # fmt: skip
    if options.trigger:
        stream += ["--trigger", options.trigger]
    if options.max_files_per_trigger is not None:
        stream += ["--max-files-per-trigger", str(options.max_files_per_trigger)]

    def step(name: str, on_failure: str, job_args: list[str]) -> dict[str, Any]:
        # Arrow, worker reuse and the Python are cluster-wide spark-defaults (see spark_configurations).
        spark_submit = ["spark-submit", "--deploy-mode", "client", "--master", "yarn", f"{bucket}/{SPARK_ENTRY_KEY}"]
        return {
            "Name": name,
            "ActionOnFailure": on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [*spark_submit, *job_args]},
        }

    # A failed fit cancels the queued stream (it would only fail on the missing model) and keeps the
    # cluster up for a look at the logs; a failed stream leaves the cluster running for a resubmit.
    steps = {
        "fit": step("fruits-fit", "CANCEL_AND_WAIT", fit),
        "stream": step("fruits-stream", "CONTINUE", stream),
    }
    names = ["fit", "stream"] if job == "both" else [job]
    result = [steps[n] for n in names]
    validate_parameters("AddJobFlowSteps", {"JobFlowId": "j-PLACEHOLDER", "Steps": result})
    return result


# ============================================================================ AWS calls
def emr_client(region: str, endpoint_url: str | None = None) -> Any:
    """boto3 EMR client; with endpoint_url None boto3 honours AWS_ENDPOINT_URL_EMR / AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "emr", region_name=region, endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"})
    )


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """AWS failures (credentials, endpoint, API errors) become one-line user errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise FruitsError(f"{action} failed: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise FruitsError(f"{action} failed: {exc}") from None


def create_cluster(client: Any, request: Mapping[str, Any]) -> str:
    with aws_errors("run_job_flow"):
        return client.run_job_flow(**request)["JobFlowId"]


def find_cluster(client: Any, cluster_id: str | None, name: str) -> str:
    """--cluster-id if given; else the one active cluster with that name (two is an error, not a guess)."""
    if cluster_id:
        return cluster_id
    with aws_errors("list_clusters"):
        pages = client.get_paginator("list_clusters").paginate(ClusterStates=ACTIVE_STATES)
        ids = [c["Id"] for page in pages for c in page["Clusters"] if c["Name"] == name]
    if not ids:
        raise FruitsError(f"no active EMR cluster named {name!r} in this region: pass --cluster-id or run `fruits emr up`")
    if len(ids) > 1:
        raise FruitsError(f"{len(ids)} active clusters are named {name!r} ({', '.join(ids)}): pass --cluster-id")
    return ids[0]


def add_steps(client: Any, cluster_id: str, steps: list[dict[str, Any]]) -> list[str]:
    with aws_errors("add_job_flow_steps"):
        return client.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]


def cluster_status(client: Any, cluster_id: str) -> dict[str, Any]:
    """State of the cluster and of each step, oldest step first."""
    with aws_errors("describe_cluster"):
        cluster = client.describe_cluster(ClusterId=cluster_id)["Cluster"]
        pages = client.get_paginator("list_steps").paginate(ClusterId=cluster_id)
        steps = [s for page in pages for s in page["Steps"]]
    return {
        "cluster_id": cluster_id,
        "name": cluster["Name"],
        "state": cluster["Status"]["State"],
        "state_reason": cluster["Status"].get("StateChangeReason", {}).get("Message", ""),
        "release_label": cluster.get("ReleaseLabel"),
        # list_steps is newest first.
        "steps": [{"id": s["Id"], "name": s["Name"], "state": s["Status"]["State"]} for s in reversed(steps)],
    }


def terminate_cluster(client: Any, cluster_id: str) -> str:
    with aws_errors("terminate_job_flows"):
        client.terminate_job_flows(JobFlowIds=[cluster_id])
        return client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


# ============================================================================ CLI
def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="emr_action", metavar="ACTION", required=True)

    plan = actions.add_parser("plan", help="print the run_job_flow request and its cost; no AWS call")
    _cluster_flags(plan)
    up = actions.add_parser("up", help="validate offline, then create the cluster; prints its id")
    _cluster_flags(up)
    _aws_flags(up)

    submit = actions.add_parser("submit", help="add the streaming and/or fit job as spark-submit steps")
    submit.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    submit.add_argument("--job", choices=JOBS, default="stream", help="which step(s) to add; both = fit, then stream")
    submit.add_argument("--tracking-uri", help="MLflow tracking server (default env MLFLOW_TRACKING_URI)")
    submit.add_argument("--weights", help=f"weights URI (default s3://BUCKET/{WEIGHTS_KEY})")
    submit.add_argument("--fit-images", metavar="URI", help="labelled images for fit (default s3://BUCKET/images/)")
    submit.add_argument("--engine", choices=("onnx", "keras"), help="featurizer engine (default: the job's)")
    submit.add_argument("--trigger", help="stream micro-batch interval, e.g. 10s (default: the job's)")
    submit.add_argument("--max-files-per-trigger", type=int, metavar="N", help="stream batch cap (default: the job's)")
    _target_flags(submit)
    _aws_flags(submit)

    status = actions.add_parser("status", help="cluster state and one line per step")
    _target_flags(status)
    _aws_flags(status)

    down = actions.add_parser("down", help="terminate the cluster (needs --yes)")
    down.add_argument("--yes", action="store_true", help="really terminate: the stream stops, the cluster is gone")
    _target_flags(down)
    _aws_flags(down)

    for action in (plan, up, submit, status, down):
        _output_flags(action)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    c = parser.add_argument_group("cluster")
    c.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    c.add_argument("--region", help="AWS region (default env AWS_REGION, else eu-west-3)")
    c.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
    c.add_argument("--release-label", default=DEFAULT_RELEASE, help=f"emr-7.x release (default {DEFAULT_RELEASE}, Spark 3.5)")
    c.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"all nodes (default {DEFAULT_INSTANCE_TYPE})")
    c.add_argument("--core", type=int, default=2, metavar="N", help="core nodes, on-demand (default 2)")
    c.add_argument("--task", type=int, default=0, metavar="M", help="task nodes, spot (default 0)")
    c.add_argument(
        "--spot-bid-fraction", type=float, metavar="F", help="spot bid as a fraction of on-demand (default: capped at on-demand)"
    )
    c.add_argument("--ebs-gb", type=int, metavar="GB", help="one gp3 data volume per node (default: EMR's own for the type)")
    c.add_argument("--subnet-id", help="EC2 subnet (default: the account's default VPC)")
    c.add_argument("--key-name", help="EC2 key pair for SSH to the nodes")
    c.add_argument("--idle-timeout", type=int, metavar="SECONDS", help="auto-terminate after this long idle (60..604800)")
    c.add_argument("--owner", help="owner tag")
    c.add_argument("--cost-center", help="cost-center tag")
    c.add_argument("--service-role", default=SERVICE_ROLE, help=f"EMR service role (default {SERVICE_ROLE})")
    c.add_argument("--instance-profile", default=INSTANCE_PROFILE, help=f"EC2 instance profile (default {INSTANCE_PROFILE})")
    c.add_argument("--wheel", default=DEFAULT_WHEEL, help=f"project wheel under s3://BUCKET/bootstrap/ (default {DEFAULT_WHEEL})")
    c.add_argument(
        "--wheelhouse", metavar="URI",
        help=f"S3 prefix of the wheels the nodes install, no package index (default s3://BUCKET/{WHEELHOUSE_KEY})",
    )  # fmt: skip
    c.add_argument(
        "--conf", action="append", default=[], metavar="CLASSIFICATION:PROPERTY=VALUE",
        help="extra EMR configuration, repeatable (e.g. spark-defaults:spark.executor.memory=10g)",
    )  # fmt: skip
    cost = parser.add_argument_group("cost estimate")
    cost.add_argument(
        "--images-per-second-per-node", type=float, default=DEFAULT_IMAGES_PER_SECOND_PER_NODE, metavar="R",
        help=f"throughput of one core/task node (default {DEFAULT_IMAGES_PER_SECOND_PER_NODE:g}, see docs/emr.md)",
    )  # fmt: skip
    cost.add_argument(
        "--spot-fraction", type=float, default=DEFAULT_SPOT_FRACTION, metavar="F",
        help=f"expected spot EC2 price as a fraction of on-demand (default {DEFAULT_SPOT_FRACTION:g})",
    )  # fmt: skip


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-id", help="j-... (default: the one active cluster named --name)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name to look up (default {DEFAULT_NAME})")
    parser.add_argument("--region", help="AWS region (default env AWS_REGION, else eu-west-3)")


def _aws_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="EMR endpoint (tests, emulators); default AWS_ENDPOINT_URL_EMR / AWS_ENDPOINT_URL")


def _output_flags(parser: argparse.ArgumentParser) -> None:
    """--json/-v/-q after the action too; SUPPRESS keeps `fruits emr --json plan` from being reset."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON summary as the last stdout line")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only")


def run(args: argparse.Namespace) -> int:
    from fruits.settings import Settings

    settings = Settings.load()
    region = args.region or settings.aws_region
    handlers = {"plan": _run_plan, "up": _run_up, "submit": _run_submit, "status": _run_status, "down": _run_down}
    return handlers[args.emr_action](args, region, settings)


def options_from_args(args: argparse.Namespace, region: str) -> ClusterOptions:
    return ClusterOptions(
        bucket=args.bucket,
        region=region,
        name=args.name,
        release_label=args.release_label,
        instance_type=args.instance_type,
        core_count=args.core,
        task_count=args.task,
        spot_bid_fraction=args.spot_bid_fraction,
        ebs_size_gb=args.ebs_gb,
        subnet_id=args.subnet_id,
        key_name=args.key_name,
        idle_timeout_seconds=args.idle_timeout,
        owner=args.owner,
        cost_center=args.cost_center,
        service_role=args.service_role,
        instance_profile=args.instance_profile,
        wheel=args.wheel,
        wheelhouse=args.wheelhouse,
        extra_configurations=tuple(parse_conf(c) for c in args.conf),
    )


def _planned(args: argparse.Namespace, region: str) -> tuple[dict[str, Any], CostEstimate]:
    request = planned_request(options_from_args(args, region))
    cost = estimate_cost(request, region, args.images_per_second_per_node, spot_fraction=args.spot_fraction)
    if cost.per_hour is None:
        log.warning("part of the cluster's price is unknown for %s: see the cost lines", region)
    return request, cost


def _run_plan(args: argparse.Namespace, region: str, settings: Settings) -> int:
    request, cost = _planned(args, region)
    wheel, _, _, wheelhouse = request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    bootstrap = f"bootstrap: installs {wheel}[keras] from the wheelhouse {wheelhouse} only (no package index)"
    human = "\n".join([json.dumps(request, indent=2), bootstrap, *cost.lines()])
    emit_summary({"request": request, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_up(args: argparse.Namespace, region: str, settings: Settings) -> int:
    request, cost = _planned(args, region)
    cluster_id = create_cluster(emr_client(region, args.endpoint_url), request)
    per_hour = "an unknown amount" if cost.per_hour is None else f"${cost.per_hour:.4f}/h"
    human = (
        f"{cluster_id}\ncreated {request['Name']} ({request['ReleaseLabel']}) in {region}; it costs {per_hour} "
        f"until `fruits emr down --cluster-id {cluster_id} --yes`"
    )
    emit_summary({"cluster_id": cluster_id, "region": region, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_submit(args: argparse.Namespace, region: str, settings: Settings) -> int:
    job_options = JobOptions(
        bucket=args.bucket,
        tracking_uri=check_tracking_uri(args.tracking_uri or settings.mlflow_tracking_uri),
        weights=args.weights,
        fit_images=args.fit_images,
        engine=args.engine,
        trigger=args.trigger,
        max_files_per_trigger=args.max_files_per_trigger,
    )
    steps = build_steps(args.job, job_options)
    client = emr_client(region, args.endpoint_url)
    cluster_id = find_cluster(client, args.cluster_id, args.name)
    step_ids = add_steps(client, cluster_id, steps)
    added = [{"id": sid, "name": s["Name"]} for sid, s in zip(step_ids, steps, strict=True)]
    human = "\n".join(f"added step {a['id']} {a['name']} to {cluster_id}" for a in added)
    emit_summary({"cluster_id": cluster_id, "steps": added}, args.json, human)
    return 0


def _run_status(args: argparse.Namespace, region: str, settings: Settings) -> int:
    client = emr_client(region, args.endpoint_url)
    status = cluster_status(client, find_cluster(client, args.cluster_id, args.name))
    reason = f" ({status['state_reason']})" if status["state_reason"] else ""
    lines = [f"cluster {status['cluster_id']} {status['name']}: {status['state']}{reason}"]
    lines += [f"step {s['id']} {s['name']}: {s['state']}" for s in status["steps"]]
    emit_summary(status, args.json, "\n".join(lines))
    return 0


def _run_down(args: argparse.Namespace, region: str, settings: Settings) -> int:
    if not args.yes:
        raise FruitsError("terminating stops the stream and deletes the cluster: add --yes to confirm")
    client = emr_client(region, args.endpoint_url)
    cluster_id = find_cluster(client, args.cluster_id, args.name)
    state = terminate_cluster(client, cluster_id)
    emit_summary({"cluster_id": cluster_id, "state": state}, args.json, f"{cluster_id}: {state}")
    return 0

