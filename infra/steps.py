"""The spark-submit steps that run `fruits fit` / `fruits stream` / `fruits refit` on the cluster; pure (no AWS call)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from fruits.exceptions import FruitsError
from infra.checks import check_bucket
from infra.defaults import JOBS
from infra.layout import (
    CHECKPOINT,
    ERRORS_TABLE,
    FEATURES_PREFIX,
    HOLDOUT_PREFIX,
    IMAGES_PREFIX,
    RESULTS_TABLE,
    SPARK_ENTRY_KEY,
    WEIGHTS_KEY,
    s3a_uri,
)
from infra.validate import validate_parameters


@dataclass(frozen=True)
class JobOptions:
    """What the spark-submit steps pass to `fruits fit` / `fruits stream` / `fruits refit` on the cluster."""

    bucket: str
    tracking_uri: str
    weights: str | None = None  # default: the weights file under s3://bucket/models/keras/
    fit_images: str | None = None  # default: s3://bucket/images/ (the uploads, kept in class folders)
    engine: str | None = None
    trigger: str | None = None
    max_files_per_trigger: int | None = None
    # The stack's queue (output NotificationsQueueUrl): the stream reads new uploads from it
    # instead of listing images/ every trigger. None: listing.
    notifications: str | None = None
    eval_images: str | None = None  # the refit's held-out images; default: s3://bucket/holdout/
    # The stack's answers table (output AnswersUri, dynamodb://TABLE): the stream answers the app's uploads
    # there. None: the stream's default, a sqlite file on the driver that no app reads.
    answers: str | None = None


# Plain http:// only where nothing crosses a network: the tracking server on this very machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_tracking_uri(uri: str | None) -> str:
    """The registry must outlive the cluster, be reached over TLS, and no credential may ride in the URI.

    A sqlite file or a local path on the primary dies with the cluster. Over plain http:// the
    credentials and the registry's answers cross the VPC in clear, and whoever can reach the port
    can move `@champion` (the running stream swaps to it): https:// only, http:// on loopback only.
    A URI's user:password would be readable by anyone who may describe the cluster's steps or the
    job run: credentials go in a Secrets Manager secret instead (`fruits emr up --mlflow-secret`).
    """
    if not uri:
        raise FruitsError("the jobs need an MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file", "sqlite"):
        raise FruitsError(
            f"--tracking-uri {uri!r} would live on the cluster's disk and die with it: use a tracking server (https://...)"
        )
    if parsed.username is not None or parsed.password is not None:
        raise FruitsError(
            "--tracking-uri carries credentials, which anyone who can describe the steps or job runs would read: "
            "store them in a Secrets Manager secret and give its ARN to `fruits emr up --mlflow-secret` (docs/aws.md)"
        )
    if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
        raise FruitsError(
            f"--tracking-uri {uri!r} is plain http: the MLflow credentials and the registry (who may move @champion) "
            "would cross the network in clear; serve the tracking server over TLS and use https:// (docs/aws.md, "
            "'Where MLflow runs on AWS'); http:// is accepted for 127.0.0.1 and localhost only"
        )
    if parsed.scheme not in ("https", "http"):
        raise FruitsError(f"--tracking-uri {uri!r} is not an https:// URI of an MLflow tracking server")
    return uri


def job_arguments(job: str, options: JobOptions) -> list[str]:
    """`fruits fit|stream|refit ...` as the cluster or EMR Serverless runs them (after spark_entry.py)."""
    check_bucket(options.bucket)
    check_tracking_uri(options.tracking_uri)

    # s3a://: emr-spark-8.x has no EMRFS, and whether it maps s3:// to S3A is not documented.
    def s3(key: str) -> str:
        return s3a_uri(options.bucket, key)

    common = ["--tracking-uri", options.tracking_uri, "--weights", options.weights or s3(WEIGHTS_KEY)]
    if options.engine:
        common += ["--engine", options.engine]
    if job == "fit":
        return [
            "fit",
            "--images",
            options.fit_images or s3(IMAGES_PREFIX),
            "--features-output",
            s3(FEATURES_PREFIX),
            *common,
        ]
    if job == "refit":
        return [
            "refit",
            "--eval-images",
            options.eval_images or s3(HOLDOUT_PREFIX),
            "--output",
            s3(RESULTS_TABLE),
            "--features-output",
            s3(FEATURES_PREFIX),
            *common,
        ]
    stream = [
        "stream",
        "--source",
        s3(IMAGES_PREFIX),
        "--output",
        s3(RESULTS_TABLE),
        "--errors",
        s3(ERRORS_TABLE),
        "--checkpoint",
        s3(CHECKPOINT),
        *common,
    ]
    if options.trigger:
        stream += ["--trigger", options.trigger]
    if options.max_files_per_trigger is not None:
        stream += ["--max-files-per-trigger", str(options.max_files_per_trigger)]
    if options.notifications:
        stream += ["--notifications", check_queue_url(options.notifications)]
    if options.answers:
        stream += ["--answers", check_answers_uri(options.answers)]
    return stream


def check_queue_url(url: str) -> str:
    """An SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), not an ARN or a name."""
    if not re.fullmatch(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?", url):
        raise FruitsError(
            f"--notifications {url!r} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>: "
            "the stack's output NotificationsQueueUrl)"
        )
    return url


def check_answers_uri(uri: str) -> str:
    """The stack's DynamoDB table (dynamodb://TABLE): a sqlite file on a node would be read by no app."""
    if not re.fullmatch(r"dynamodb://[A-Za-z0-9_.-]{3,255}", uri):
        raise FruitsError(f"--answers {uri!r} is not dynamodb://TABLE (the stack's output AnswersUri)")
    return uri


def build_steps(job: str, options: JobOptions) -> list[dict[str, Any]]:
    """add_job_flow_steps Steps for `--job`; `both` runs fit first because the stream needs its model."""
    if job not in JOBS:
        raise FruitsError(f"--job must be one of {', '.join(JOBS)}, got {job!r}")
    entry = s3a_uri(options.bucket, SPARK_ENTRY_KEY)

    def step(name: str, on_failure: str, job_name: str) -> dict[str, Any]:
        # Arrow, worker reuse and the Python are cluster-wide spark-defaults (see cluster.spark_configurations).
        spark_submit = ["spark-submit", "--deploy-mode", "client", "--master", "yarn", entry]
        return {
            "Name": name,
            "ActionOnFailure": on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [*spark_submit, *job_arguments(job_name, options)]},
        }

    # A failed fit cancels the queued stream (it would only fail on the missing model) and keeps the
    # cluster up for a look at the logs; a failed stream leaves the cluster running for a resubmit.
    # A cluster runs one step at a time: a refit queued behind a running stream would wait forever,
    # so `fruits emr submit` refuses it then (EMR Serverless runs it beside the stream).
    steps = {
        "fit": lambda: step("fruits-fit", "CANCEL_AND_WAIT", "fit"),
        "stream": lambda: step("fruits-stream", "CONTINUE", "stream"),
        "refit": lambda: step("fruits-refit", "CONTINUE", "refit"),
    }
    names = ["fit", "stream"] if job == "both" else [job]
    result = [steps[n]() for n in names]
    validate_parameters("AddJobFlowSteps", {"JobFlowId": "j-PLACEHOLDER", "Steps": result})
    return result
