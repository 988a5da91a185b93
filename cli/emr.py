"""Plan, create, feed, watch and terminate the EMR cluster that runs the Fruits! jobs.

`plan` prints the run_job_flow request and its cost estimate without any AWS call. `up` checks the
same request offline, then creates the cluster. `submit --job stream|fit|both` adds the jobs as
spark-submit steps. `status` prints the cluster state and one line per step. `down --yes`
terminates the cluster. See docs/emr.md.

Every request is checked offline before it is sent (infra/validate.py). Costs come from
infra/prices.json (infra/cost.py). The EMR endpoint is --endpoint-url, else boto3's own
AWS_ENDPOINT_URL_EMR / AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.console import emit_summary
from fruits.exceptions import FruitsError
from infra.defaults import (
    DEFAULT_CORE_NODES,
    DEFAULT_IMAGES_PER_SECOND_PER_NODE,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_NAME,
    DEFAULT_RELEASE,
    DEFAULT_SPOT_FRACTION,
    INSTANCE_PROFILE,
    JOBS,
    SERVICE_ROLE,
)
from infra.layout import DEFAULT_WHEEL, WEIGHTS_KEY, WHEELHOUSE_KEY

if TYPE_CHECKING:
    from fruits.settings import Settings
    from infra.cluster import ClusterOptions
    from infra.cost import CostEstimate

log = logging.getLogger(__name__)

# Where infra/build_wheelhouse.sh's output lands in docs/aws.md's walk-through.
DEFAULT_LOCK = "build/wheelhouse/requirements.lock"


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
    c.add_argument("--release-label", default=DEFAULT_RELEASE,
                   help=f"EMR release (default {DEFAULT_RELEASE}: Spark 4.1.1, long-term support; see docs/emr.md)")
    c.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"all nodes (default {DEFAULT_INSTANCE_TYPE})")
    c.add_argument("--core", type=int, default=DEFAULT_CORE_NODES, metavar="N",
                   help=f"core nodes, on-demand (default {DEFAULT_CORE_NODES})")
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
        "--lock", default=DEFAULT_LOCK, metavar="PATH",
        help=f"the wheelhouse's requirements.lock as built here; its sha256 goes in the request (default {DEFAULT_LOCK})",
    )  # fmt: skip
    c.add_argument("--lock-sha256", metavar="HEX", help="that sha256 given directly (instead of --lock)")
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

    # The one place the environment is read: everything below receives values.
    settings = Settings.load()
    region = args.region or settings.aws_region
    handlers = {"plan": _run_plan, "up": _run_up, "submit": _run_submit, "status": _run_status, "down": _run_down}
    return handlers[args.emr_action](args, region, settings)


def options_from_args(args: argparse.Namespace, region: str) -> ClusterOptions:
    from infra.cluster import ClusterOptions, parse_conf

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
        lock_sha256=_lock_sha256(args),
        extra_configurations=tuple(parse_conf(c) for c in args.conf),
    )


def _lock_sha256(args: argparse.Namespace) -> str | None:
    """--lock-sha256, else the sha256 of the local --lock file, else None (plan warns, up refuses)."""
    if args.lock_sha256:
        return args.lock_sha256
    lock = Path(args.lock)
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def _planned(args: argparse.Namespace, region: str) -> tuple[ClusterOptions, dict[str, Any], CostEstimate]:
    from infra.cluster import planned_request
    from infra.cost import estimate_cost

    options = options_from_args(args, region)
    request = planned_request(options, today=dt.date.today())
    if options.lock_sha256 is None:
        message = (
            f"no {args.lock} and no --lock-sha256: the bootstrap checks the wheelhouse's requirements.lock against a "
            "sha256 in the request; build the wheelhouse first (infra/build_wheelhouse.sh, docs/emr.md)"
        )
        if args.emr_action != "plan":
            raise FruitsError(message)
        log.warning("%s", message)
    cost = estimate_cost(request, region, args.images_per_second_per_node, spot_fraction=args.spot_fraction)
    if cost.per_hour is None:
        log.warning("part of the cluster's price is unknown for %s: see the cost lines", region)
    return options, request, cost


def _run_plan(args: argparse.Namespace, region: str, settings: Settings) -> int:
    options, request, cost = _planned(args, region)
    human = "\n".join([json.dumps(request, indent=2), options.release.describe(), options.bootstrap.describe(), *cost.lines()])
    emit_summary({"request": request, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_up(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import create_cluster, emr_client

    _, request, cost = _planned(args, region)
    cluster_id = create_cluster(emr_client(region, args.endpoint_url), request)
    per_hour = "an unknown amount" if cost.per_hour is None else f"${cost.per_hour:.4f}/h"
    human = (
        f"{cluster_id}\ncreated {request['Name']} ({request['ReleaseLabel']}) in {region}; it costs {per_hour} "
        f"until `fruits emr down --cluster-id {cluster_id} --yes`"
    )
    emit_summary({"cluster_id": cluster_id, "region": region, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_submit(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import add_steps, emr_client, find_cluster
    from infra.steps import JobOptions, build_steps, check_tracking_uri

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
    from infra.aws import cluster_status, emr_client, find_cluster

    client = emr_client(region, args.endpoint_url)
    status = cluster_status(client, find_cluster(client, args.cluster_id, args.name))
    reason = f" ({status['state_reason']})" if status["state_reason"] else ""
    lines = [f"cluster {status['cluster_id']} {status['name']}: {status['state']}{reason}"]
    lines += [f"step {s['id']} {s['name']}: {s['state']}" for s in status["steps"]]
    emit_summary(status, args.json, "\n".join(lines))
    return 0


def _run_down(args: argparse.Namespace, region: str, settings: Settings) -> int:
    from infra.aws import emr_client, find_cluster, terminate_cluster

    if not args.yes:
        raise FruitsError("terminating stops the stream and deletes the cluster: add --yes to confirm")
    client = emr_client(region, args.endpoint_url)
    cluster_id = find_cluster(client, args.cluster_id, args.name)
    state = terminate_cluster(client, cluster_id)
    emit_summary({"cluster_id": cluster_id, "state": state}, args.json, f"{cluster_id}: {state}")
    return 0
