"""The run_job_flow request for the EMR cluster, built from named options; pure (no AWS call).

`planned_request` is what `fruits emr plan` prints and `fruits emr up` sends: the options are
checked, the request built, then checked again as a whole (infra/validate.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from fruits.contracts import APP_CONF
from fruits.exceptions import FruitsError
from infra.checks import check_bucket, check_fraction, check_region
from infra.defaults import (
    AM_NODE_LABELS,
    DEFAULT_CORE_NODES,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_NAME,
    DEFAULT_PROJECT,
    DEFAULT_REGION,
    DEFAULT_RELEASE,
    INSTANCE_PROFILE,
    SECURITY_CONFIGURATION,
    SERVICE_ROLE,
)
from infra.layout import (
    BOOTSTRAP_SCRIPT_KEY,
    DEFAULT_WHEEL,
    EMR_LOGS_PREFIX,
    WEIGHTS_KEY,
    WHEELHOUSE_KEY,
    s3_uri,
)
from infra.prices import PriceTable, load_prices
from infra.release import Release, release
from infra.sizing import (
    AM_MEMORY_MB,
    AM_OVERHEAD_MB,
    DRIVER_MEMORY_MB,
    EXECUTOR_MEMORY_KEYS,
    YARN_NODE_MEMORY_MB,
    emr_executor_split,
    executor_conf,
)
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
    project: str = DEFAULT_PROJECT
    release_label: str = DEFAULT_RELEASE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    core_count: int = DEFAULT_CORE_NODES
    task_count: int = 0
    # Spot bid as a fraction of the on-demand EC2 price; None leaves BidPrice out (capped at on-demand).
    spot_bid_fraction: float | None = None
    ebs_size_gb: int | None = None
    # A private subnet tagged for-use-with-amazon-emr-managed-policies=true, with an S3 gateway
    # endpoint; `up` refuses to launch without one (the default VPC is neither private nor tagged).
    subnet_id: str | None = None
    # EMR-managed security groups (all three, or none and EMR creates them in the tagged VPC).
    primary_security_group: str | None = None
    core_security_group: str | None = None
    service_access_security_group: str | None = None
    security_configuration: str = SECURITY_CONFIGURATION
    am_node_label: str = AM_NODE_LABELS[0]
    # Secrets Manager secret {"username", "password"} for the MLflow server: the bootstrap writes it to
    # the driver user's ~/.mlflow/credentials, so no credential is in the request or the steps.
    mlflow_secret_arn: str | None = None
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
            mlflow_secret=self.mlflow_secret_arn,
        )

    @property
    def security_groups(self) -> tuple[str | None, str | None, str | None]:
        return self.primary_security_group, self.core_security_group, self.service_access_security_group


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
    mlflow_secret: str | None = None  # an ARN, never the secret itself

    def as_list(self) -> list[str]:
        return [
            item
            for name, value in vars(self).items()
            if value is not None
            for item in (f"--{name.replace('_', '-')}", value)
        ]

    def describe(self) -> str:
        return (
            f"bootstrap: installs {self.wheelhouse}requirements.lock (sha256 {self.lock_sha256}, every wheel hashed, "
            f"{self.wheel} included) into {self.python}, no package index"
        )


def validate_options(
    options: ClusterOptions, prices: PriceTable | None = None, today: dt.date | None = None, launching: bool = False
) -> None:
    """Our own rules on the options; the built request gets botocore's checks in validate_request.

    `launching` (for `up`): what `plan` may leave open must be there (subnet, lock sha256).
    """
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
    check_network(options, launching)
    check_sizing(options)
    if options.am_node_label not in AM_NODE_LABELS:
        raise FruitsError(f"--am-node-label must be one of {', '.join(AM_NODE_LABELS)}, got {options.am_node_label!r}")
    if options.mlflow_secret_arn is not None and not options.mlflow_secret_arn.startswith("arn:aws:secretsmanager:"):
        raise FruitsError(f"--mlflow-secret {options.mlflow_secret_arn!r} is not a Secrets Manager secret ARN")
    if launching and options.lock_sha256 is None:
        raise FruitsError(
            "no requirements.lock sha256: the bootstrap checks the wheelhouse's lock against the one in the request; "
            "build the wheelhouse first (infra/build_wheelhouse.sh, docs/emr.md) or pass --lock-sha256"
        )


def check_network(options: ClusterOptions, launching: bool) -> None:
    """A private subnet, and either all three EMR-managed security groups or none."""
    if options.subnet_id is None:
        message = (
            "no --subnet-id: the cluster needs a private subnet tagged for-use-with-amazon-emr-managed-policies=true "
            "with an S3 gateway endpoint (the default VPC's subnets are neither; docs/aws.md, 'Network')"
        )
        if launching:
            raise FruitsError(message)
        log.warning("%s", message)
    elif not re.fullmatch(r"subnet-[0-9a-f]{8,17}", options.subnet_id):
        raise FruitsError(f"--subnet-id {options.subnet_id!r} is not a subnet id (subnet-0123abcd...)")
    given = [g for g in options.security_groups if g]
    if given and len(given) != 3:
        raise FruitsError(
            "give all three of --primary-security-group, --core-security-group and --service-access-security-group, "
            "or none (EMR then creates its own in the subnet's VPC, which must be tagged too)"
        )
    for group in given:
        if not re.fullmatch(r"sg-[0-9a-f]{8,17}", group):
            raise FruitsError(f"{group!r} is not a security group id (sg-0123abcd...)")


def check_sizing(options: ClusterOptions) -> None:
    """Executors must be sized: from the instance type's known YARN memory, or by the person with --conf."""
    if options.instance_type in YARN_NODE_MEMORY_MB:
        return
    given = {key for classification, key, _ in options.extra_configurations if classification == "spark-defaults"}
    missing = [key for key in EXECUTOR_MEMORY_KEYS if key not in given]
    if missing:
        raise FruitsError(
            f"the YARN memory of {options.instance_type} is not in infra/sizing.py: size the executors yourself with "
            + " ".join(f"--conf spark-defaults:{key}=..." for key in missing)
            + " (docs/emr.md, 'Sizing the executors')"
        )


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
        raise FruitsError(
            f"--conf {text!r} is not CLASSIFICATION:PROPERTY=VALUE (e.g. yarn-site:yarn.log-aggregation-enable=true)"
        )
    return classification, key, value


def spark_configurations(options: ClusterOptions, vcpu: int) -> list[dict[str, Any]]:
    """EMR Configurations: Spark defaults for the jobs, sizes, AM placement, the node Python, then --conf on top."""
    node_python = options.release.node_python
    python_env = {"PYSPARK_PYTHON": node_python, "PYSPARK_DRIVER_PYTHON": node_python, "KERAS_HOME": NODE_KERAS_HOME}
    spark_defaults = {
        # The application settings of the local session factory (Arrow batch size, worker reuse,
        # one task per core...), so `spark-submit` on the cluster behaves like `fruits` locally.
        **APP_CONF,
        # EMR turns dynamic allocation on. For an always-on stream it releases executors between quiet
        # micro-batches, then pays a new JVM + Python worker + engine load on the next burst, and its
        # pending-task heuristic is not streaming-aware. Static: one executor per processing node.
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": str(options.processing_nodes),
        # client-mode driver on the primary, executors and the YARN AM: all on the release's Python 3.11
        # (never the system python3, 3.9 on Amazon Linux 2023), where the bootstrap installed the project.
        "spark.pyspark.python": node_python,
        "spark.pyspark.driver.python": node_python,
        "spark.executorEnv.PYSPARK_PYTHON": node_python,
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON": node_python,
        "spark.executorEnv.KERAS_HOME": NODE_KERAS_HOME,
        "spark.yarn.appMasterEnv.KERAS_HOME": NODE_KERAS_HOME,
        # No maximizeResourceAllocation: it sizes one JVM to the node and leaves PySpark's workers
        # (the featurizer) in the 10 % overhead. Explicit sizes instead (infra/sizing.py).
        "spark.driver.memory": f"{DRIVER_MEMORY_MB}m",
        "spark.yarn.am.memory": f"{AM_MEMORY_MB}m",
        "spark.yarn.am.memoryOverhead": f"{AM_OVERHEAD_MB}m",
    }
    split = emr_executor_split(options.instance_type)
    if split is not None:
        spark_defaults.update(executor_conf(vcpu, split))
    configurations: list[dict[str, Any]] = [
        {"Classification": "spark-defaults", "Properties": spark_defaults},
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [{"Classification": NESTED_CLASSIFICATION, "Properties": python_env}],
        },
        # Task nodes are spot: a reclaimed node that hosts the application master kills the whole
        # stream. Node labels keep the AM on on-demand nodes (off by default since EMR 6).
        {
            "Classification": "yarn-site",
            "Properties": {
                "yarn.node-labels.enabled": "true",
                "yarn.node-labels.am.default-node-label-expression": options.am_node_label,
            },
        },
    ]
    by_name = {c["Classification"]: c for c in configurations}
    for classification, key, value in options.extra_configurations:
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
                    {
                        "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": options.ebs_size_gb},
                        "VolumesPerInstance": 1,
                    }
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
    primary, core, service_access = options.security_groups
    if primary and core and service_access:
        instances["EmrManagedMasterSecurityGroup"] = primary
        instances["EmrManagedSlaveSecurityGroup"] = core
        instances["ServiceAccessSecurityGroup"] = service_access
    if options.key_name:
        instances["Ec2KeyName"] = options.key_name

    tags = {
        # The deploy role creates and operates only clusters tagged with its stack's ProjectName.
        "project": options.project,
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
                "ScriptBootstrapAction": {
                    "Path": options.s3(BOOTSTRAP_SCRIPT_KEY),
                    "Args": options.bootstrap.as_list(),
                },
            }
        ],
        "Configurations": spark_configurations(options, int(prices.instance_types[options.instance_type]["vcpu"])),
        # IMDSv2 only (hop limit 1), local disks and EBS encrypted: the stack's AWS::EMR::SecurityConfiguration.
        "SecurityConfiguration": options.security_configuration,
        "VisibleToAllUsers": True,
        "JobFlowRole": options.instance_profile,
        "ServiceRole": options.service_role,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v],
    }
    if options.idle_timeout_seconds is not None:
        request["AutoTerminationPolicy"] = {"IdleTimeout": options.idle_timeout_seconds}
    return request


def planned_request(
    options: ClusterOptions, prices: PriceTable | None = None, today: dt.date | None = None, launching: bool = False
) -> dict[str, Any]:
    """The checked request `plan` prints and `up` (launching) sends; `today` refuses a release past its support."""
    prices = prices or load_prices()
    validate_options(options, prices, today, launching)
    request = build_request(options, prices)
    validate_request(request, prices)
    return request
