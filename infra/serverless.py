"""EMR Serverless: the application and job-run requests for the same jobs, built from named options; pure.

The application runs the same release as the EMR cluster (infra/release.py). The stream is a
STREAMING job run (EMR Serverless restarts it from its S3 checkpoint, at most
`max_failed_attempts_per_hour` failures an hour, and it never times out); the fit is a BATCH job
run. Python dependencies come as a packed virtual environment on S3 (infra/build_venv_archive.sh)
that `spark.archives` unpacks as ./environment on the driver and every executor.
Sources: /work/notes/aws-facts.md section 2 (EMR Serverless user guide and API reference).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fruits.contracts import APP_CONF
from fruits.exceptions import FruitsError
from infra.checks import check_bucket, check_region
from infra.cost import FREE_DISK_GB
from infra.defaults import DEFAULT_APPLICATION_NAME, DEFAULT_PROJECT, DEFAULT_REGION, DEFAULT_RELEASE, JOBS
from infra.layout import (
    MLFLOW_DFS_TMP_PREFIX,
    SERVERLESS_LOGS_PREFIX,
    SPARK_ENTRY_KEY,
    VENV_ARCHIVE_KEY,
    s3_uri,
    s3a_uri,
)
from infra.release import Release, release
from infra.sizing import driver_conf, driver_split, executor_conf, executor_split
from infra.steps import JobOptions, job_arguments
from infra.validate import validate_parameters

log = logging.getLogger(__name__)

# EMR Serverless' documented default, and its range (1-10): a stream that keeps failing stops.
DEFAULT_MAX_FAILED_ATTEMPTS_PER_HOUR = 5
FIT_TIMEOUT_MINUTES = 12 * 60  # the service default for batch runs; batch runs may not use 0 from 7.11.0
# Worker sizes EMR Serverless accepts (user guide, "Supported worker configurations"):
# vCPU -> (min GB, max GB, step GB). Disk 20-200 GB; the first 20 GB of each worker are free.
WORKER_MEMORY_GB = {1: (2, 8, 1), 2: (4, 16, 1), 4: (8, 30, 1), 8: (16, 60, 4), 16: (32, 120, 8)}
# The application's capacity holds this many job runs of the chosen sizes at once: the stream, and a
# refit (or a fit) beside it; a third run waits for capacity instead of growing the bill.
CONCURRENT_JOB_RUNS = 2
# Where the packed venv is unpacked on every worker (the `#environment` of spark.archives).
VENV_PYTHON = "./environment/bin/python"


@dataclass(frozen=True)
class WorkerSize:
    vcpu: int
    memory_gb: int
    disk_gb: int = FREE_DISK_GB

    def check(self, what: str) -> None:
        if self.vcpu not in WORKER_MEMORY_GB:
            raise FruitsError(f"{what}: {self.vcpu} vCPU is not a worker size EMR Serverless offers (1, 2, 4, 8, 16)")
        low, high, step = WORKER_MEMORY_GB[self.vcpu]
        if not (low <= self.memory_gb <= high and (self.memory_gb - low) % step == 0):
            raise FruitsError(
                f"{what}: a {self.vcpu}-vCPU worker takes {low}-{high} GB of memory in steps of {step} GB, "
                f"not {self.memory_gb} GB"
            )
        if not 20 <= self.disk_gb <= 200:
            raise FruitsError(f"{what}: disk must be 20-200 GB, not {self.disk_gb} GB")


def executor_memory(worker: WorkerSize) -> dict[str, str]:
    """Spark settings that fill an executor worker exactly, with a share for the Python workers (infra/sizing.py)."""
    return {
        **executor_conf(worker.vcpu, executor_split(worker.memory_gb * 1024)),
        "spark.emr-serverless.executor.disk": f"{worker.disk_gb}G",
    }


def driver_memory(worker: WorkerSize) -> dict[str, str]:
    return {
        **driver_conf(worker.vcpu, driver_split(worker.memory_gb * 1024)),
        "spark.emr-serverless.driver.disk": f"{worker.disk_gb}G",
    }


@dataclass(frozen=True)
class ServerlessOptions:
    """Everything `fruits serverless plan|up|submit` needs; the request builders below turn it into requests."""

    bucket: str
    region: str = DEFAULT_REGION
    name: str = DEFAULT_APPLICATION_NAME
    project: str = DEFAULT_PROJECT
    release_label: str = DEFAULT_RELEASE
    driver: WorkerSize = WorkerSize(2, 8)
    # Like the EMR cluster's default: 2 processing units of 4 vCPU / 16 GB (an m5.xlarge each).
    executor: WorkerSize = WorkerSize(4, 16)
    executors: int = 2
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    idle_timeout_minutes: int = 15
    max_failed_attempts_per_hour: int = DEFAULT_MAX_FAILED_ATTEMPTS_PER_HOUR
    owner: str | None = None
    cost_center: str | None = None
    venv_archive: str | None = None  # s3:// URI; None: s3://bucket/bootstrap/venv/fruits-venv.tar.gz
    # The MLflow server's basic-auth user for this run (the stream: a read-only one; the fit and refit: the one
    # that may move @champion) and the Secrets Manager secret holding its password as plain text: EMR
    # Serverless resolves it when the run starts (EMR.secret@), so it is never in the request.
    mlflow_user: str | None = None
    mlflow_password_secret: str | None = None

    @property
    def release(self) -> Release:
        return release(self.release_label)

    @property
    def venv_archive_uri(self) -> str:
        return self.venv_archive or s3a_uri(self.bucket, VENV_ARCHIVE_KEY)

    @property
    def logs_uri(self) -> str:
        return s3_uri(self.bucket, SERVERLESS_LOGS_PREFIX)

    def tags(self, **extra: str) -> dict[str, str]:
        """`project` is what the deploy role may operate (its stack's ProjectName); owner and cost center when given."""
        tags = {"project": self.project, "owner": self.owner, "cost-center": self.cost_center, **extra}
        return {key: value for key, value in tags.items() if value}


def validate_options(options: ServerlessOptions, today: dt.date | None = None) -> None:
    check_bucket(options.bucket)
    check_region(options.region)
    chosen = release(options.release_label, today)
    if chosen.warning:
        log.warning("%s", chosen.warning)
    options.driver.check("--driver")
    options.executor.check("--executor")
    if options.executors < 1:
        raise FruitsError("--executors must be at least 1")
    if not 1 <= options.max_failed_attempts_per_hour <= 10:
        raise FruitsError("--max-failed-attempts-per-hour must be 1-10 (EMR Serverless' range)")
    if not 1 <= options.idle_timeout_minutes <= 7 * 24 * 60:
        raise FruitsError("--idle-timeout-minutes must be 1-10080")
    if not options.venv_archive_uri.startswith(("s3://", "s3a://")) or not options.venv_archive_uri.endswith(".tar.gz"):
        raise FruitsError(f"--venv-archive {options.venv_archive_uri!r} is not an s3:// URI of a .tar.gz")


def application_request(options: ServerlessOptions) -> dict[str, Any]:
    """CreateApplication: Spark on the release, x86_64 (the venv archive is built for it), logs to S3."""
    workers = CONCURRENT_JOB_RUNS * (options.executors + 1)
    request: dict[str, Any] = {
        "name": options.name,
        "releaseLabel": options.release_label,
        "type": "SPARK",
        # The venv archive holds x86_64 wheels (infra/build_venv_archive.sh); ARM64 would need its own.
        "architecture": "X86_64",
        # No pre-initialized capacity: it is billed while the application is started, even idle.
        # The cap is what CONCURRENT_JOB_RUNS runs of these sizes need (the stream and a refit beside
        # it): a runaway job cannot grow the bill past that. Only running workers are billed.
        "maximumCapacity": {
            "cpu": f"{CONCURRENT_JOB_RUNS * (options.driver.vcpu + options.executors * options.executor.vcpu)} vCPU",
            "memory": f"{CONCURRENT_JOB_RUNS * (options.driver.memory_gb + options.executors * options.executor.memory_gb)} GB",
            "disk": f"{workers * max(options.driver.disk_gb, options.executor.disk_gb)} GB",
        },
        "autoStartConfiguration": {"enabled": True},
        # A stopped stream leaves no idle workers billed for long.
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": options.idle_timeout_minutes},
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": options.logs_uri}},
        "tags": options.tags(),
    }
    if options.subnet_ids:
        # The stream reaches the MLflow server (and SQS) inside the VPC: private subnets, like the cluster's.
        request["networkConfiguration"] = {
            "subnetIds": list(options.subnet_ids),
            "securityGroupIds": list(options.security_group_ids),
        }
    # Idempotency: the same request sent twice (a retried `up`) creates one application.
    request["clientToken"] = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:64]
    validate_parameters("CreateApplication", request, service="emr-serverless")
    return request


def spark_submit_parameters(options: ServerlessOptions) -> str:
    """--conf pairs for spark-submit: the packed venv as every worker's Python, sizes, the app settings."""
    conf = {
        "spark.archives": f"{options.venv_archive_uri}#environment",
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": VENV_PYTHON,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": VENV_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": VENV_PYTHON,
        # mlflow.spark saves and loads Spark models through MLFLOW_DFS_TMP on Spark's default filesystem
        # (/tmp/mlflow): without HDFS that is each worker's own disk, and the fit would log an incomplete
        # model the stream cannot load. On S3 every worker sees the same files.
        "spark.emr-serverless.driverEnv.MLFLOW_DFS_TMP": s3a_uri(options.bucket, MLFLOW_DFS_TMP_PREFIX),
        "spark.executorEnv.MLFLOW_DFS_TMP": s3a_uri(options.bucket, MLFLOW_DFS_TMP_PREFIX),
        **APP_CONF,
        # Static executors, as on the cluster: dynamic allocation would release them in quiet
        # micro-batches and pay a JVM + engine start on the next burst.
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": str(options.executors),
        **driver_memory(options.driver),
        **executor_memory(options.executor),
    }
    return " ".join(f"--conf {key}={value}" for key, value in conf.items())


def job_run_request(
    job: str,
    options: ServerlessOptions,
    job_options: JobOptions,
    application_id: str,
    role_arn: str,
    client_token: str | None = None,
) -> dict[str, Any]:
    """StartJobRun for `stream` (STREAMING, retried, no timeout) or `fit` / `refit` (BATCH, one attempt)."""
    if job not in JOBS or job == "both":
        raise FruitsError(
            f"--job must be stream, fit or refit on EMR Serverless, got {job!r}: runs do not queue there, so run the fit, "
            "wait for it (`fruits serverless status`), then the stream"
        )
    if bool(options.mlflow_user) != bool(options.mlflow_password_secret):
        raise FruitsError(
            "--mlflow-user and --mlflow-password-secret go together: the MLflow server's user for this "
            "run, and the secret holding its password (docs/aws.md)"
        )
    streaming = job == "stream"
    request: dict[str, Any] = {
        "applicationId": application_id,
        # A new token per submit: a stream submitted again after it stopped is a new run.
        "clientToken": client_token or str(uuid.uuid4()),
        "executionRoleArn": role_arn,
        "name": f"fruits-{job}",
        "mode": "STREAMING" if streaming else "BATCH",
        "retryPolicy": (
            {"maxFailedAttemptsPerHour": options.max_failed_attempts_per_hour} if streaming else {"maxAttempts": 1}
        ),
        # 0 = never time out: allowed (and needed) for streaming runs; batch runs keep a limit.
        "executionTimeoutMinutes": 0 if streaming else FIT_TIMEOUT_MINUTES,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": s3a_uri(options.bucket, SPARK_ENTRY_KEY),
                "entryPointArguments": job_arguments(job, job_options),
                "sparkSubmitParameters": spark_submit_parameters(options),
            }
        },
        "configurationOverrides": {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": options.logs_uri}}
        },
        "tags": options.tags(job=job),
    }
    if options.mlflow_password_secret:
        # The driver is the only MLflow client (the model is resolved and swapped there). The password stays in
        # Secrets Manager: EMR Serverless reads it with the job role when the run starts.
        request["configurationOverrides"]["applicationConfiguration"] = [
            {
                "classification": "spark-defaults",
                "properties": {
                    "spark.emr-serverless.driverEnv.MLFLOW_TRACKING_USERNAME": str(options.mlflow_user),
                    "spark.emr-serverless.driverEnv.MLFLOW_TRACKING_PASSWORD": f"EMR.secret@{options.mlflow_password_secret}",
                },
            }
        ]
    validate_parameters("StartJobRun", request, service="emr-serverless")
    return request


def planned_application(options: ServerlessOptions, today: dt.date | None = None) -> dict[str, Any]:
    validate_options(options, today)
    return application_request(options)
