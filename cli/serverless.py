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
from typing import TYPE_CHECKING

from cli.aws_common import (
    add_comparison_flags,
    add_endpoint_flag,
    add_job_flags,
    add_output_flags,
    add_region_flag,
    add_stop_action,
    dispatch,
    preflight,
    equivalent_cluster_cost,
    job_options,
    run_stop,
    side_by_side,
)
from cli.console import emit_summary
from fruits.exceptions import FruitsError
from infra.defaults import DEFAULT_APPLICATION_NAME, DEFAULT_IMAGES_PER_SECOND_PER_NODE, DEFAULT_RELEASE, JOB_ROLE
from infra.layout import VENV_ARCHIVE_KEY

if TYPE_CHECKING:
    from fruits.settings import Settings
    from infra.serverless import ServerlessOptions

log = logging.getLogger(__name__)

# What `plan` puts where `up`/`submit` will know the real values.
PLACEHOLDER_APPLICATION_ID = "<application id>"
PLACEHOLDER_ACCOUNT = "<account id>"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="serverless_action", metavar="ACTION", required=True)

    plan = actions.add_parser("plan", help="print the application and stream requests and their cost; no AWS call")
    _application_flags(plan)
    add_comparison_flags(plan)
    plan.add_argument("--tracking-uri", help="MLflow tracking server shown in the stream request (default env MLFLOW_TRACKING_URI)")
    up = actions.add_parser("up", help="validate offline, then create the application; prints its id")
    _application_flags(up)
    add_endpoint_flag(up, "emr-serverless")

    submit = actions.add_parser("submit", help="start the stream (STREAMING), the fit or the refit (BATCH) as a job run")
    add_job_flags(submit, jobs=("stream", "fit", "refit"))
    _size_flags(submit)
    submit.add_argument("--job-role", default=JOB_ROLE, metavar="NAME_OR_ARN",
                        help=f"the job runtime role (default {JOB_ROLE}, the stack's)")
    submit.add_argument("--venv-archive", metavar="URI", help=f"packed venv (default s3a://BUCKET/{VENV_ARCHIVE_KEY})")
    submit.add_argument("--max-failed-attempts-per-hour", type=int, default=5, metavar="N",
                        help="stream retry policy: stop after N failures in an hour (1-10, default 5)")
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
    sizes = parser.add_argument_group("workers (EMR Serverless sizes: 1/2/4/8/16 vCPU with a memory range each)")
    sizes.add_argument("--executors", type=int, default=2, metavar="N", help="executors of a job run (default 2)")
    sizes.add_argument("--executor-vcpu", type=int, default=4, metavar="N", help="vCPU per executor (default 4)")
    sizes.add_argument("--executor-memory-gb", type=int, default=16, metavar="GB", help="memory per executor (default 16)")
    sizes.add_argument("--driver-vcpu", type=int, default=2, metavar="N", help="vCPU of the driver (default 2)")
    sizes.add_argument("--driver-memory-gb", type=int, default=8, metavar="GB", help="memory of the driver (default 8)")


def _application_flags(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument_group("application")
    a.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    add_region_flag(a)
    a.add_argument("--name", default=DEFAULT_APPLICATION_NAME, help=f"application name (default {DEFAULT_APPLICATION_NAME})")
    a.add_argument("--release-label", default=DEFAULT_RELEASE, help=f"release (default {DEFAULT_RELEASE}, the cluster's)")
    a.add_argument("--subnet-id", action="append", default=[], metavar="ID",
                   help="private subnet for the workers, repeatable (reaches MLflow and SQS in the VPC)")
    a.add_argument("--security-group-id", action="append", default=[], metavar="ID", help="security group, repeatable")
    a.add_argument("--idle-timeout-minutes", type=int, default=15, metavar="M", help="auto-stop when idle (default 15)")
    a.add_argument("--owner", help="owner tag")
    a.add_argument("--cost-center", help="cost-center tag")
    _size_flags(parser)
    cost = parser.add_argument_group("cost estimate")
    cost.add_argument(
        "--images-per-second-per-executor", type=float, default=DEFAULT_IMAGES_PER_SECOND_PER_NODE, metavar="R",
        help=f"throughput of one executor (default {DEFAULT_IMAGES_PER_SECOND_PER_NODE:g}, as one 4-vCPU EMR node)",
    )  # fmt: skip


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--application-id", help="(default: the one live application named --name)")
    parser.add_argument("--name", default=DEFAULT_APPLICATION_NAME, help=f"application name to look up (default {DEFAULT_APPLICATION_NAME})")
    add_region_flag(parser)


def run(args: argparse.Namespace) -> int:
    return dispatch(args.serverless_action, args, {"plan": _run_plan, "up": _run_up, "submit": _run_submit, "status": _run_status,
                                        "stop": _run_stop, "down": _run_down})  # fmt: skip


def options_from_args(args: argparse.Namespace, region: str) -> ServerlessOptions:
    from infra.serverless import ServerlessOptions, WorkerSize

    return ServerlessOptions(
        bucket=args.bucket,
        region=region,
        name=args.name,
        release_label=getattr(args, "release_label", DEFAULT_RELEASE),
        driver=WorkerSize(args.driver_vcpu, args.driver_memory_gb),
        executor=WorkerSize(args.executor_vcpu, args.executor_memory_gb),
        executors=args.executors,
        subnet_ids=tuple(getattr(args, "subnet_id", ())),
        security_group_ids=tuple(getattr(args, "security_group_id", ())),
        idle_timeout_minutes=getattr(args, "idle_timeout_minutes", 15),
        max_failed_attempts_per_hour=getattr(args, "max_failed_attempts_per_hour", 5),
        owner=getattr(args, "owner", None),
        cost_center=getattr(args, "cost_center", None),
        venv_archive=getattr(args, "venv_archive", None),
    )


def _role_arn(role: str, account: str) -> str:
    return role if role.startswith("arn:") else f"arn:aws:iam::{account}:role/{role}"


def _run_plan(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.cost import estimate_serverless_cost
    from infra.serverless import job_run_request, planned_application
    from infra.steps import JobOptions

    options = options_from_args(args, region)
    application = planned_application(options, today=dt.date.today())
    if not options.subnet_ids:
        log.warning("no --subnet-id: `up` needs the private subnets the workers run in (to reach MLflow and SQS)")
    tracking_uri = args.tracking_uri or settings.mlflow_tracking_uri or "http://<mlflow-host>:5000"
    stream = job_run_request("stream", options, JobOptions(bucket=options.bucket, tracking_uri=tracking_uri),
                             PLACEHOLDER_APPLICATION_ID, _role_arn(JOB_ROLE, PLACEHOLDER_ACCOUNT), client_token="<new per submit>")  # fmt: skip
    cost = estimate_serverless_cost(options, args.images_per_second_per_executor)
    ec2 = equivalent_cluster_cost(options.bucket, region, options.executors, args.images_per_second_per_executor)
    comparison = side_by_side(region, ec2, cost, args)
    human = "\n".join([
        "CreateApplication:", json.dumps(application, indent=2), "StartJobRun (the stream):", json.dumps(stream, indent=2),
        options.release.describe(), *cost.lines(), *comparison.events.lines(), *comparison.lines(),
    ])  # fmt: skip
    summary = {"application": application, "stream_job_run": stream, "cost": cost.to_dict(), "comparison": comparison.to_dict()}
    emit_summary(summary, args.json, human)
    return 0


def _run_up(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import client, create_application
    from infra.cost import estimate_serverless_cost
    from infra.serverless import planned_application

    options = options_from_args(args, region)
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
    from infra.aws import account_id, client, find_application, live_job_runs, start_job_run
    from infra.preflight import check_no_live_stream, split_s3_uri
    from infra.serverless import job_run_request

    options = options_from_args(args, region)
    jobs = job_options(args, settings)
    serverless = client("emr-serverless", region, args.endpoint_url)
    application_id = find_application(serverless, args.application_id, args.name)
    archive_bucket, archive_key = split_s3_uri(options.venv_archive_uri)
    extra = ((archive_key.rstrip("/"), "build and upload it (infra/build_venv_archive.sh, docs/emr.md)"),)
    preflight(args, jobs, settings, client("s3", region, args.endpoint_url), extra if archive_bucket == jobs.bucket else ())
    if args.job == "stream":
        check_no_live_stream(live_job_runs(serverless, application_id), f"application {application_id}")
    role = args.job_role if args.job_role.startswith("arn:") else _role_arn(
        args.job_role, account_id(client("sts", region, args.endpoint_url))
    )
    request = job_run_request(args.job, options, jobs, application_id, role)
    job_run_id = start_job_run(serverless, request)
    human = f"started {request['name']} ({request['mode']}) as job run {job_run_id} on {application_id}"
    emit_summary({"application_id": application_id, "job_run_id": job_run_id, "name": request["name"],
                  "mode": request["mode"]}, args.json, human)  # fmt: skip
    return 0


def _run_status(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import application_status, client, find_application

    serverless = client("emr-serverless", region, args.endpoint_url)
    status = application_status(serverless, find_application(serverless, args.application_id, args.name))
    lines = [f"application {status['application_id']} {status['name']}: {status['state']}"]
    lines += [f"job run {r['id']} {r['name']}: {r['state']}" for r in status["job_runs"]]
    emit_summary(status, args.json, "\n".join(lines))
    return 0


def _run_stop(args: argparse.Namespace, region: str, settings: Settings) -> int:
    return run_stop(args, settings, requested_by="fruits serverless stop")


def _run_down(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import client, delete_application, find_application

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
