"""The run_job_flow request for the EMR cluster, built from named options; pure (no AWS call).

`planned_request` is what `fruits emr plan` prints and `fruits emr up` sends: the options are
checked, the request built, then checked again as a whole (infra/validate.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from fruits.exceptions import FruitsError
from fruits.spark import APP_CONF
from infra.checks import check_bucket, check_fraction, check_region
from infra.layout import (
    BOOTSTRAP_SCRIPT_KEY,
    DEFAULT_WHEEL,
    EMR_LOGS_PREFIX,
    WEIGHTS_KEY,
    WHEELHOUSE_KEY,
    s3_uri,
)
from infra.defaults import (
    DEFAULT_CORE_NODES,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_NAME,
    DEFAULT_REGION,
    DEFAULT_RELEASE,
    INSTANCE_PROFILE,
    SERVICE_ROLE,
)
from infra.prices import PriceTable, load_prices
from infra.release import Release, release
from infra.validate import NESTED_CLASSIFICATION, validate_request

log = logging.getLogger(__name__)

# Executors run as the `yarn` user, whose home is not hadoop's: point Keras at the bootstrap's cache.
NODE_KERAS_HOME = "/home/hadoop/.keras"
IDLE_TIMEOUT_RANGE = (60, 7 * 24 * 3600)  # AutoTerminationPolicy.IdleTimeout limits (1 min .. 7 days)


@dataclass(frozen=True)
class ClusterOptions:
    """Everything `plan` and `up` need; build_request turns it into a run_job_flow request."""

    bucket: str
    region: str = DEFAULT_REGION
    name: str = DEFAULT_NAME
    release_label: str = DEFAULT_RELEASE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    core_count: int = DEFAULT_CORE_NODES
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
    # sha256 of the wheelhouse's requirements.lock (infra/build_wheelhouse.sh): the bootstrap refuses
    # any other lock. None only for `plan` before the wheelhouse is built (`up` refuses it).
    lock_sha256: str | None = None
    # (classification, property, value) from --conf, merged over the defaults.
    extra_configurations: tuple[tuple[str, str, str], ...] = ()

    def s3(self, key: str) -> str:
        return s3_uri(self.bucket, key)

    @property
    def wheelhouse_uri(self) -> str:
        """A prefix, so always with its trailing slash (requirements.lock is read under it)."""
        return (self.wheelhouse.rstrip("/") + "/") if self.wheelhouse else self.s3(WHEELHOUSE_KEY)

    @property
    def release(self) -> Release:
        return release(self.release_label)

    @property
    def processing_nodes(self) -> int:
        return self.core_count + self.task_count

    @property
    def bootstrap(self) -> BootstrapArgs:
        return BootstrapArgs(
            region=self.region,
            python=self.release.node_python,
            wheel=self.s3(f"bootstrap/{self.wheel}"),
            wheelhouse=self.wheelhouse_uri,
            lock_sha256=self.lock_sha256 or LOCK_SHA256_UNKNOWN,
            weights=self.s3(WEIGHTS_KEY),
        )


# What `plan` shows before the wheelhouse is built; `up` refuses to send it.
LOCK_SHA256_UNKNOWN = "<sha256 of requirements.lock: build the wheelhouse>"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BootstrapArgs:
    """What infra/bootstrap.sh receives, as --name value pairs (the script takes them in any order)."""

    region: str
    python: str
    wheel: str
    wheelhouse: str
    lock_sha256: str
    weights: str

    def as_list(self) -> list[str]:
        return [item for name, value in vars(self).items() for item in (f"--{name.replace('_', '-')}", value)]

    def describe(self) -> str:
        return (
            f"bootstrap: installs {self.wheelhouse}requirements.lock (sha256 {self.lock_sha256}, every wheel hashed, "
            f"{self.wheel} included) into {self.python}, no package index"
        )


def validate_options(options: ClusterOptions, prices: PriceTable | None = None, today: dt.date | None = None) -> None:
    """Our own rules on the options; the built request gets botocore's checks in validate_request."""
    prices = prices or load_prices()
    check_bucket(options.bucket)
    check_region(options.region)
    chosen = release(options.release_label, today)
    if chosen.warning:
        log.warning("%s", chosen.warning)
    prices.require_known(options.instance_type)
    if options.core_count < 1:
        raise FruitsError("--core must be at least 1: core nodes run the executors and hold HDFS")
    if options.task_count < 0:
        raise FruitsError("--task must not be negative")
    if options.spot_bid_fraction is not None:
        check_fraction("--spot-bid-fraction", options.spot_bid_fraction)
    if options.idle_timeout_seconds is not None and not (
        IDLE_TIMEOUT_RANGE[0] <= options.idle_timeout_seconds <= IDLE_TIMEOUT_RANGE[1]
    ):
        raise FruitsError(f"--idle-timeout must be between {IDLE_TIMEOUT_RANGE[0]} and {IDLE_TIMEOUT_RANGE[1]} seconds")
    if options.ebs_size_gb is not None and options.ebs_size_gb < 1:
        raise FruitsError("--ebs-gb must be at least 1")
    check_wheelhouse(options)
    if options.lock_sha256 is not None and not SHA256_PATTERN.match(options.lock_sha256):
        raise FruitsError(f"--lock-sha256 {options.lock_sha256!r} is not a sha256 (64 lowercase hex digits)")


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


def parse_conf(text: str) -> tuple[str, str, str]:
    """--conf CLASSIFICATION:PROPERTY=VALUE, e.g. spark-defaults:spark.executor.memory=10g."""
    classification, sep, assignment = text.partition(":")
    key, eq, value = assignment.partition("=")
    if not sep or not eq or not classification or not key:
        raise FruitsError(f"--conf {text!r} is not CLASSIFICATION:PROPERTY=VALUE (e.g. yarn-site:yarn.log-aggregation-enable=true)")
    return classification, key, value


def spark_configurations(
    processing_nodes: int, node_python: str, extra: Sequence[tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """EMR Configurations: Spark defaults for the jobs, the node Python, then the user's --conf on top."""
    python_env = {"PYSPARK_PYTHON": node_python, "PYSPARK_DRIVER_PYTHON": node_python, "KERAS_HOME": NODE_KERAS_HOME}
    spark_defaults = {
        # The application settings of the local session factory (Arrow batch size, worker reuse,
        # one task per core...), so `spark-submit` on the cluster behaves like `fruits` locally.
        **APP_CONF,
        # EMR turns dynamic allocation on. For an always-on stream it releases executors between quiet
        # micro-batches, then pays a new JVM + Python worker + engine load on the next burst, and its
        # pending-task heuristic is not streaming-aware. Static: one executor per processing node.
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": str(processing_nodes),
        # client-mode driver on the primary, executors and the YARN AM: all on the release's Python 3.11
        # (never the system python3, 3.9 on Amazon Linux 2023), where the bootstrap installed the project.
        "spark.pyspark.python": node_python,
        "spark.pyspark.driver.python": node_python,
        "spark.executorEnv.PYSPARK_PYTHON": node_python,
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON": node_python,
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
        "LogUri": options.s3(EMR_LOGS_PREFIX),
        "ReleaseLabel": options.release_label,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "install-fruits",
                "ScriptBootstrapAction": {"Path": options.s3(BOOTSTRAP_SCRIPT_KEY), "Args": options.bootstrap.as_list()},
            }
        ],
        "Configurations": spark_configurations(
            options.processing_nodes, options.release.node_python, options.extra_configurations
        ),
        "VisibleToAllUsers": True,
        "JobFlowRole": options.instance_profile,
        "ServiceRole": options.service_role,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v],
    }
    if options.idle_timeout_seconds is not None:
        request["AutoTerminationPolicy"] = {"IdleTimeout": options.idle_timeout_seconds}
    return request


def planned_request(
    options: ClusterOptions, prices: PriceTable | None = None, today: dt.date | None = None
) -> dict[str, Any]:
    """The checked request `plan` prints and `up` sends; `today` refuses a release past its end of support."""
    prices = prices or load_prices()
    validate_options(options, prices, today)
    request = build_request(options, prices)
    validate_request(request, prices)
    return request
