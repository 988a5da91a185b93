"""What `fruits emr` and `fruits serverless` share: flags, options by name, the jobs' options, the cost table, the stop.

Nothing here or in infra/ imports Spark, boto3 or MLflow at the top (infra/aws.py and infra/validate.py
import boto3/botocore when they run): `fruits emr plan` works where pyspark is not installed, and
`--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from cli.console import emit_summary
from fruits.contracts import STOP_MARKER
from fruits.settings import Settings, default_of
from infra.aws import client, mlflow_credentials, request_stop
from infra.checks import check_bucket
from infra.cluster import ClusterOptions, build_request
from infra.cost import (
    DEFAULT_FIT_IMAGES,
    Comparison,
    CostEstimate,
    ServerlessCostEstimate,
    estimate_cost,
    estimate_serverless_cost,
)
from infra.defaults import JOBS
from infra.event_path import WIRINGS, estimate_event_path
from infra.layout import CHECKPOINT, HOLDOUT_PREFIX, IMAGES_PREFIX, SPARK_ENTRY_KEY, WEIGHTS_KEY, s3a_uri
from infra.preflight import (
    check_fit_images,
    check_holdout_images,
    check_registered_model,
    check_stream_source,
    require_objects,
)
from infra.serverless import ServerlessOptions
from infra.steps import JobOptions, check_tracking_uri

Options = TypeVar("Options")


def options_from_args(options: type[Options], args: argparse.Namespace, **computed: Any) -> Options:
    """The options dataclass from the flags whose `dest` is one of its fields (None: the field's default,
    lists become tuples), the way settings_from_args builds Settings; `computed` for what no flag names."""
    given = {}
    for field in dataclasses.fields(options):  # type: ignore[arg-type]
        value = getattr(args, field.name, None)
        if value is not None and field.name not in computed:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return options(**given, **computed)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--json/-v/-q after the action too; SUPPRESS keeps `fruits emr --json plan` from being reset."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON summary as the last stdout line"
    )
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only"
    )


def add_region_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region", help=f"AWS region (default env AWS_REGION, else {default_of(Settings, 'aws_region')})"
    )


def add_project_flag(parser: argparse.ArgumentParser, options: type) -> None:
    default = default_of(options, "project")
    parser.add_argument(
        "--project", help=f"the stack's ProjectName: the `project` tag the deploy role may operate (default {default})"
    )


def add_endpoint_flag(parser: argparse.ArgumentParser, service: str) -> None:
    env = service.upper().replace("-", "_")
    parser.add_argument(
        "--endpoint-url",
        help=f"one endpoint for every AWS call of this command (tests, emulators); default boto3's AWS_ENDPOINT_URL_{env}, "
        "AWS_ENDPOINT_URL_S3... / AWS_ENDPOINT_URL",
    )


def add_submit_flags(parser: argparse.ArgumentParser, jobs: tuple[str, ...] = JOBS) -> None:
    """What `submit` passes to `fruits fit` / `fruits stream` / `fruits refit` on AWS (JobOptions), and its checks."""
    parser.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    parser.add_argument(
        "--job",
        choices=jobs,
        default="stream",
        help="which job(s): "
        + ", ".join(jobs)
        + ("; both = fit, then stream" if "both" in jobs else "")
        + "; refit = learn from the lake, promote if better (the running stream swaps it in)",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking server, https:// (default env MLFLOW_TRACKING_URI)")
    parser.add_argument("--weights", help=f"weights URI (default s3a://BUCKET/{WEIGHTS_KEY})")
    parser.add_argument("--fit-images", metavar="URI", help="labelled images for fit (default s3a://BUCKET/images/)")
    parser.add_argument(
        "--eval-images",
        metavar="URI",
        help=f"held-out labelled images for refit (default s3a://BUCKET/{HOLDOUT_PREFIX}; never under "
        "images/, which the stream ingests)",
    )
    parser.add_argument("--engine", choices=("onnx", "keras"), help="featurizer engine (default: the job's)")
    parser.add_argument("--trigger", help="stream micro-batch interval, e.g. 10s (default: the job's)")
    parser.add_argument("--max-files-per-trigger", type=int, metavar="N", help="stream batch cap (default: the job's)")
    parser.add_argument(
        "--notifications",
        metavar="QUEUE_URL",
        help="the stack's SQS queue (output NotificationsQueueUrl): the stream reads uploads from it "
        "instead of listing images/ (default: listing)",
    )
    parser.add_argument(
        "--answers",
        metavar="URI",
        help="the stack's answers table (output AnswersUri, dynamodb://TABLE): the stream answers the "
        "app's uploads there (default env FRUITS_ANSWERS, else none: the app gets no answers)",
    )
    parser.add_argument(
        "--mlflow-secret",
        metavar="ARN",
        help="Secrets Manager secret {username, password} of the MLflow server: the model check before "
        "a stream or refit authenticates with it (basic auth)",
    )
    parser.add_argument(
        "--skip-model-check",
        action="store_true",
        help="do not ask the MLflow server for the registered model before a stream or refit (a server "
        "reachable only from inside the VPC)",
    )


def preflight(
    args: argparse.Namespace, jobs: JobOptions, settings: Settings, region: str, extra: tuple[tuple[str, str], ...] = ()
) -> None:
    """Refuse what cannot work before anything is added (infra/preflight.py)."""
    s3 = client("s3", region, args.endpoint_url)
    require_objects(s3, jobs.bucket, ((SPARK_ENTRY_KEY, "upload cli/spark_entry.py there (docs/aws.md)"), *extra))
    images = s3a_uri(jobs.bucket, IMAGES_PREFIX)
    if args.job in ("fit", "both"):
        check_fit_images(s3, jobs.fit_images or images, settings.pca_k)
    if args.job in ("stream", "both"):
        check_stream_source(s3, images)
    if args.job == "refit":
        check_holdout_images(s3, jobs.eval_images or s3a_uri(jobs.bucket, HOLDOUT_PREFIX))
    if args.job in ("stream", "refit") and not args.skip_model_check:
        credentials = None
        if args.mlflow_secret:
            credentials = mlflow_credentials(client("secretsmanager", region, args.endpoint_url), args.mlflow_secret)
        check_registered_model(jobs.tracking_uri, settings.model_name, settings.alias, credentials)


def add_comparison_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("side-by-side cost (EMR on EC2 vs EMR Serverless)")
    group.add_argument(
        "--fit-run-images",
        type=int,
        default=DEFAULT_FIT_IMAGES,
        metavar="N",
        help=f"labelled images of the fit run the table prices (default {DEFAULT_FIT_IMAGES})",
    )
    group.add_argument(
        "--wiring",
        choices=WIRINGS,
        default="lambda-sns",
        help="upload notifications: S3 -> Lambda -> SNS -> SQS (default) or S3 -> SQS directly",
    )
    group.add_argument(
        "--lambda-ms",
        type=float,
        default=100.0,
        metavar="MS",
        help="billed duration of one Lambda invocation (default 100, an assumption)",
    )


def add_stop_action(actions: Any) -> argparse.ArgumentParser:
    stop = actions.add_parser(
        "stop",
        help="stop the stream gracefully: it finishes its current micro-batch, then exits",
        description=f"Writes the marker {STOP_MARKER} under the stream's checkpoint (s3://BUCKET/{CHECKPOINT}/). "
        "The stream stops after its current micro-batch and deletes the marker.",
    )
    stop.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    stop.add_argument(
        "--checkpoint-key",
        default=CHECKPOINT,
        metavar="KEY",
        help=f"the stream's checkpoint under the bucket (default {CHECKPOINT})",
    )
    add_region_flag(stop)
    stop.add_argument(
        "--endpoint-url", help="S3 endpoint (tests, emulators); default AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
    )
    return stop


def region_of(args: argparse.Namespace, settings: Settings) -> str:
    return args.region or settings.aws_region


def dispatch(action: str, args: argparse.Namespace, handlers: dict[str, Callable[..., int]]) -> int:
    """Run the action's handler with the region and the settings, built once here from the environment."""
    settings = Settings.load()
    return handlers[action](args, region_of(args, settings), settings)


def job_options(args: argparse.Namespace, settings: Settings) -> JobOptions:
    return options_from_args(
        JobOptions,
        args,
        tracking_uri=check_tracking_uri(args.tracking_uri or settings.mlflow_tracking_uri),
        answers=getattr(args, "answers", None) or settings.answers,
    )


def side_by_side(
    region: str, ec2: CostEstimate, serverless: ServerlessCostEstimate, args: argparse.Namespace
) -> Comparison:
    events = estimate_event_path(region, args.wiring, args.lambda_ms)
    return Comparison(region, ec2, serverless, events, args.fit_run_images)


def equivalent_cluster_cost(bucket: str, region: str, processing_nodes: int, images_per_second: float) -> CostEstimate:
    """The default EMR cluster with as many processing nodes as the Serverless job has executors."""
    request = build_request(ClusterOptions(bucket=bucket, region=region, core_count=processing_nodes))
    return estimate_cost(request, region, images_per_second)


def equivalent_serverless_cost(
    bucket: str, region: str, executors: int, images_per_second: float
) -> ServerlessCostEstimate:
    """The default EMR Serverless job with as many executors as the cluster has processing nodes."""
    return estimate_serverless_cost(
        ServerlessOptions(bucket=bucket, region=region, executors=executors), images_per_second
    )


def run_stop(args: argparse.Namespace, settings: Settings, requested_by: str) -> int:
    check_bucket(args.bucket)
    key = f"{args.checkpoint_key.strip('/')}/{STOP_MARKER}"
    request_stop(client("s3", region_of(args, settings), args.endpoint_url), args.bucket, key, requested_by)
    uri = f"s3://{args.bucket}/{key}"
    emit_summary(
        {"stop_marker": uri, "requested": True},
        args.json,
        f"stop requested: {uri}\nthe stream finishes its current micro-batch, stops, and deletes the marker; "
        "then `status` shows the stream step or job run as completed",
    )
    return 0
