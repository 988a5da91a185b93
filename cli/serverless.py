"""Plan, create, feed, watch, stop and delete the EMR Serverless application that runs the Fruits! jobs.

The same shape as `fruits emr`: `plan` prints the CreateApplication request, the StartJobRun
request of the stream, their cost per hour and per 1M images, and the side-by-side cost against
EMR on EC2, without any AWS call. `up` creates the application (same release as the cluster).
`submit --job stream|fit|refit` starts a job run: the stream as a STREAMING run (restarted from
its checkpoint on failure, never timed out), the fit and the refit as BATCH runs (a refit runs
beside the stream, which swaps in the model it promotes). `status` prints the application
and its job runs. `stop` asks the stream to stop after its current micro-batch. `down --yes`
cancels the runs (streams get a grace period), stops and deletes the application. See docs/emr.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from typing import Any

from cli.aws_common import (
    add_comparison_flags,
    add_endpoint_flag,
    add_output_flags,
    add_project_flag,
    add_region_flag,
    add_stop_action,
    add_submit_flags,
    dispatch,
    equivalent_cluster_cost,
    job_options,
    options_from_args,
    preflight,
    run_stop,
    side_by_side,
)
from cli.console import emit_summary
from fruits.exceptions import FruitsError
from fruits.settings import Settings, default_of
from infra.aws import (
    account_id,
    application_status,
    client,
    create_application,
    delete_application,
    find_application,
    live_job_runs,
    start_job_run,
)
from infra.cost import estimate_serverless_cost
from infra.defaults import DEFAULT_IMAGES_PER_SECOND_PER_NODE, JOB_ROLE
from infra.layout import VENV_ARCHIVE_KEY
from infra.preflight import check_no_live_stream, split_s3_uri
from infra.serverless import ServerlessOptions, WorkerSize, job_run_request, planned_application
from infra.steps import JobOptions

log = logging.getLogger(__name__)

# What `plan` puts where `up`/`submit` will know the real values.
PLACEHOLDER_APPLICATION_ID = "<application id>"
PLACEHOLDER_ACCOUNT = "<account id>"
PLACEHOLDER_TRACKING_URI = "https://<mlflow-host>"


def _default(name: str) -> Any:
    return default_of(ServerlessOptions, name)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="serverless_action", metavar="ACTION", required=True)

    plan = actions.add_parser("plan", help="print the application and stream requests and their cost; no AWS call")
    _application_flags(plan)
    add_comparison_flags(plan)
    plan.add_argument(
        "--tracking-uri", help="MLflow tracking server shown in the stream request (default env MLFLOW_TRACKING_URI)"
    )
    up = actions.add_parser("up", help="validate offline, then create the application; prints its id")
    _application_flags(up)
    add_endpoint_flag(up, "emr-serverless")

    submit = actions.add_parser(
        "submit", help="start the stream (STREAMING), the fit or the refit (BATCH) as a job run"
    )
    add_submit_flags(submit, jobs=("stream", "fit", "refit"))
    _size_flags(submit)
    add_project_flag(submit, ServerlessOptions)
    submit.add_argument(
        "--job-role",
        default=JOB_ROLE,
        metavar="NAME_OR_ARN",
        help=f"the job runtime role (default {JOB_ROLE}, the stack's)",
    )
    submit.add_argument("--venv-archive", metavar="URI", help=f"packed venv (default s3a://BUCKET/{VENV_ARCHIVE_KEY})")
    submit.add_argument(
        "--mlflow-user",
        metavar="NAME",
        help="the MLflow server's user for this run: fruits-stream (read-only) for the stream, fruits-jobs "
        "for the fit and refit (docs/aws.md)",
    )
    submit.add_argument(
        "--mlflow-password-secret",
        metavar="NAME_OR_ARN",
        help="Secrets Manager secret holding that user's password as plain text (the stack's "
        "ServerlessMlflowPasswordSecretArns): resolved by EMR Serverless when the run starts",
    )
    submit.add_argument(
        "--max-failed-attempts-per-hour",
        type=int,
        metavar="N",
        help="stream retry policy: stop after N failures in an hour "
        f"(1-10, default {_default('max_failed_attempts_per_hour')})",
    )
    _target_flags(submit)
    add_endpoint_flag(submit, "emr-serverless")

    status = actions.add_parser("status", help="application state and one line per job run")
    _target_flags(status)
    add_endpoint_flag(status, "emr-serverless")

    stop = add_stop_action(actions)

    down = actions.add_parser("down", help="cancel the job runs, stop and delete the application (needs --yes)")
    down.add_argument("--yes", action="store_true", help="really delete: running jobs are cancelled")
    _target_flags(down)
    add_endpoint_flag(down, "emr-serverless")

    for action in (plan, up, submit, status, stop, down):
        add_output_flags(action)


def _size_flags(parser: argparse.ArgumentParser) -> None:
    driver, executor = _default("driver"), _default("executor")
    sizes = parser.add_argument_group("workers (EMR Serverless sizes: 1/2/4/8/16 vCPU with a memory range each)")
    sizes.add_argument(
        "--executors", type=int, metavar="N", help=f"executors of a job run (default {_default('executors')})"
    )
    sizes.add_argument(
        "--executor-vcpu",
        type=int,
        default=executor.vcpu,
        metavar="N",
        help=f"vCPU per executor (default {executor.vcpu})",
    )
    sizes.add_argument(
        "--executor-memory-gb",
        type=int,
        default=executor.memory_gb,
        metavar="GB",
        help=f"memory per executor (default {executor.memory_gb})",
    )
    sizes.add_argument(
        "--driver-vcpu", type=int, default=driver.vcpu, metavar="N", help=f"vCPU of the driver (default {driver.vcpu})"
    )
    sizes.add_argument(
        "--driver-memory-gb",
        type=int,
        default=driver.memory_gb,
        metavar="GB",
        help=f"memory of the driver (default {driver.memory_gb})",
    )


def _application_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag's dest is a ServerlessOptions field (options_from_args maps them by name); None keeps its default."""
    a = parser.add_argument_group("application")
    a.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    add_region_flag(a)
    add_project_flag(a, ServerlessOptions)
    a.add_argument("--name", help=f"application name (default {_default('name')})")
    a.add_argument("--release-label", help=f"release (default {_default('release_label')}, the cluster's)")
    a.add_argument(
        "--subnet-id",
        dest="subnet_ids",
        action="append",
        metavar="ID",
        help="private subnet for the workers, repeatable (reaches MLflow and SQS in the VPC)",
    )
    a.add_argument(
        "--security-group-id",
        dest="security_group_ids",
        action="append",
        metavar="ID",
        help="security group, repeatable",
    )
    a.add_argument(
        "--idle-timeout-minutes",
        type=int,
        metavar="M",
        help=f"auto-stop when idle (default {_default('idle_timeout_minutes')})",
    )
    a.add_argument("--owner", help="owner tag")
    a.add_argument("--cost-center", help="cost-center tag")
    _size_flags(parser)
    cost = parser.add_argument_group("cost estimate")
    cost.add_argument(
        "--images-per-second-per-executor",
        type=float,
        default=DEFAULT_IMAGES_PER_SECOND_PER_NODE,
        metavar="R",
        help=f"throughput of one executor (default {DEFAULT_IMAGES_PER_SECOND_PER_NODE:g}, as one 4-vCPU EMR node)",
    )


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--application-id", help="(default: the one live application named --name)")
    parser.add_argument(
        "--name", default=_default("name"), help=f"application name to look up (default {_default('name')})"
    )
    add_region_flag(parser)


def run(args: argparse.Namespace) -> int:
    return dispatch(
        args.serverless_action,
        args,
        {
            "plan": _run_plan,
            "up": _run_up,
            "submit": _run_submit,
            "status": _run_status,
            "stop": _run_stop,
            "down": _run_down,
        },
    )


def serverless_options(args: argparse.Namespace, region: str) -> ServerlessOptions:
    """ServerlessOptions from the flags by name; the region and the two worker sizes computed."""
    return options_from_args(
        ServerlessOptions,
        args,
        region=region,
        driver=WorkerSize(args.driver_vcpu, args.driver_memory_gb),
        executor=WorkerSize(args.executor_vcpu, args.executor_memory_gb),
    )


def _role_arn(role: str, account: str) -> str:
    return role if role.startswith("arn:") else f"arn:aws:iam::{account}:role/{role}"


def _run_plan(args: argparse.Namespace, region: str, settings: Settings) -> int:
    options = serverless_options(args, region)
    application = planned_application(options, today=dt.date.today())
    if not options.subnet_ids:
        log.warning("no --subnet-id: `up` needs the private subnets the workers run in (to reach MLflow and SQS)")
    tracking_uri = args.tracking_uri or settings.mlflow_tracking_uri or PLACEHOLDER_TRACKING_URI
    stream = job_run_request(
        "stream",
        options,
        JobOptions(bucket=options.bucket, tracking_uri=tracking_uri),
        PLACEHOLDER_APPLICATION_ID,
        _role_arn(JOB_ROLE, PLACEHOLDER_ACCOUNT),
        client_token="<new per submit>",
    )
    cost = estimate_serverless_cost(options, args.images_per_second_per_executor)
    ec2 = equivalent_cluster_cost(options.bucket, region, options.executors, args.images_per_second_per_executor)
    comparison = side_by_side(region, ec2, cost, args)
    human = "\n".join(
        [
            "CreateApplication:",
            json.dumps(application, indent=2),
            "StartJobRun (the stream):",
            json.dumps(stream, indent=2),
            options.release.describe(),
            *cost.lines(),
            *comparison.events.lines(),
            *comparison.lines(),
        ]
    )
    summary = {
        "application": application,
        "stream_job_run": stream,
        "cost": cost.to_dict(),
        "comparison": comparison.to_dict(),
    }
    emit_summary(summary, args.json, human)
    return 0


def _run_up(args: argparse.Namespace, region: str, settings: Settings) -> int:
    options = serverless_options(args, region)
    if not options.subnet_ids or not options.security_group_ids:
        raise FruitsError(
            "--subnet-id and --security-group-id are required: the workers run in your VPC's private subnets to reach "
            "the MLflow server and SQS (docs/aws.md, 'Network')"
        )
    application = planned_application(options, today=dt.date.today())
    application_id = create_application(client("emr-serverless", region, args.endpoint_url), application)
    cost = estimate_serverless_cost(options, args.images_per_second_per_executor)
    per_hour = "an unknown amount" if cost.per_hour is None else f"${cost.per_hour:.4f}/h"
    human = (
        f"{application_id}\ncreated {options.name} ({options.release_label}) in {region}; a running stream costs {per_hour}; "
        f"the application stops itself after {options.idle_timeout_minutes} idle minutes"
    )
    emit_summary({"application_id": application_id, "region": region, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_submit(args: argparse.Namespace, region: str, settings: Settings) -> int:
    options = serverless_options(args, region)
    jobs = job_options(args, settings)
    serverless = client("emr-serverless", region, args.endpoint_url)
    application_id = find_application(serverless, args.application_id, args.name)
    archive_bucket, archive_key = split_s3_uri(options.venv_archive_uri)
    extra = ((archive_key.rstrip("/"), "build and upload it (infra/build_venv_archive.sh, docs/emr.md)"),)
    preflight(args, jobs, settings, region, extra if archive_bucket == jobs.bucket else ())
    if args.job == "stream":
        check_no_live_stream(live_job_runs(serverless, application_id), f"application {application_id}")
    role = (
        args.job_role
        if args.job_role.startswith("arn:")
        else _role_arn(args.job_role, account_id(client("sts", region, args.endpoint_url)))
    )
    request = job_run_request(args.job, options, jobs, application_id, role)
    job_run_id = start_job_run(serverless, request)
    human = f"started {request['name']} ({request['mode']}) as job run {job_run_id} on {application_id}"
    emit_summary(
        {"application_id": application_id, "job_run_id": job_run_id, "name": request["name"], "mode": request["mode"]},
        args.json,
        human,
    )
    return 0


def _run_status(args: argparse.Namespace, region: str, settings: Settings) -> int:
    serverless = client("emr-serverless", region, args.endpoint_url)
    status = application_status(serverless, find_application(serverless, args.application_id, args.name))
    lines = [f"application {status['application_id']} {status['name']}: {status['state']}"]
    lines += [f"job run {r['id']} {r['name']}: {r['state']}" for r in status["job_runs"]]
    emit_summary(status, args.json, "\n".join(lines))
    return 0


def _run_stop(args: argparse.Namespace, region: str, settings: Settings) -> int:
    return run_stop(args, settings, requested_by="fruits serverless stop")


def _run_down(args: argparse.Namespace, region: str, settings: Settings) -> int:
    if not args.yes:
        raise FruitsError(
            "deleting cancels the running jobs and the application: add --yes to confirm "
            "(`fruits serverless stop` first stops the stream gracefully)"
        )
    serverless = client("emr-serverless", region, args.endpoint_url)
    application_id = find_application(serverless, args.application_id, args.name)
    state = delete_application(serverless, application_id)
    emit_summary({"application_id": application_id, "state": state}, args.json, f"{application_id}: {state}")
    return 0
