"""Plan, create, feed, watch, stop and terminate the EMR cluster that runs the Fruits! jobs.

`plan` prints the run_job_flow request, its cost and the side-by-side cost against EMR
Serverless, without any AWS call. `up` checks the same request offline, then creates the
cluster. `submit --job stream|fit|both|refit` adds the jobs as spark-submit steps. `status` prints the
cluster state and one line per step. `stop` asks the stream to stop after its current
micro-batch. `down --yes` terminates the cluster. See docs/emr.md.

Every request is checked offline before it is sent (infra/validate.py). Costs come from
infra/prices.json (infra/cost.py). The endpoints are --endpoint-url, else boto3's own
AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
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
    equivalent_serverless_cost,
    job_options,
    options_from_args,
    preflight,
    run_stop,
    side_by_side,
)
from cli.console import emit_summary
from fruits.exceptions import FruitsError
from fruits.settings import Settings, default_of
from infra.aws import add_steps, cluster_status, create_cluster, emr_client, find_cluster, live_steps, terminate_cluster
from infra.cluster import ClusterOptions, parse_conf, planned_request
from infra.cost import CostEstimate, estimate_cost
from infra.defaults import AM_NODE_LABELS, DEFAULT_IMAGES_PER_SECOND_PER_NODE, DEFAULT_SPOT_FRACTION
from infra.layout import WHEELHOUSE_KEY
from infra.network import gateway_endpoint_buckets
from infra.preflight import check_no_live_stream, check_no_step_ahead
from infra.steps import build_steps

log = logging.getLogger(__name__)

# Where infra/build_wheelhouse.sh's output lands in docs/aws.md's walk-through.
DEFAULT_LOCK = "build/wheelhouse/requirements.lock"


def _default(name: str) -> Any:
    return default_of(ClusterOptions, name)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="emr_action", metavar="ACTION", required=True)

    plan = actions.add_parser("plan", help="print the run_job_flow request and its cost; no AWS call")
    _cluster_flags(plan)
    add_comparison_flags(plan)
    up = actions.add_parser("up", help="validate offline, then create the cluster; prints its id")
    _cluster_flags(up)
    add_endpoint_flag(up, "emr")

    submit = actions.add_parser("submit", help="add the streaming and/or fit job as spark-submit steps")
    add_submit_flags(submit)
    _target_flags(submit)
    add_endpoint_flag(submit, "emr")

    status = actions.add_parser("status", help="cluster state and one line per step")
    _target_flags(status)
    add_endpoint_flag(status, "emr")

    stop = add_stop_action(actions)

    down = actions.add_parser("down", help="terminate the cluster (needs --yes)")
    down.add_argument("--yes", action="store_true", help="really terminate: the stream stops, the cluster is gone")
    _target_flags(down)
    add_endpoint_flag(down, "emr")

    for action in (plan, up, submit, status, stop, down):
        add_output_flags(action)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag's dest is a ClusterOptions field (options_from_args maps them by name); None keeps its default."""
    c = parser.add_argument_group("cluster")
    c.add_argument("--bucket", required=True, help="the project bucket, fruits-<account>-<region>")
    add_region_flag(c)
    add_project_flag(c, ClusterOptions)
    c.add_argument("--name", help=f"cluster name (default {_default('name')})")
    c.add_argument(
        "--release-label",
        help=f"EMR release (default {_default('release_label')}: Spark 4.1.1, long-term support; see docs/emr.md)",
    )
    c.add_argument("--instance-type", help=f"all nodes (default {_default('instance_type')})")
    c.add_argument(
        "--core",
        dest="core_count",
        type=int,
        metavar="N",
        help=f"core nodes, on-demand (default {_default('core_count')})",
    )
    c.add_argument(
        "--task", dest="task_count", type=int, metavar="M", help=f"task nodes, spot (default {_default('task_count')})"
    )
    c.add_argument(
        "--spot-bid-fraction",
        type=float,
        metavar="F",
        help="spot bid as a fraction of on-demand (default: capped at on-demand)",
    )
    c.add_argument(
        "--ebs-gb",
        dest="ebs_size_gb",
        type=int,
        metavar="GB",
        help="one gp3 data volume per node (default: EMR's own for the type)",
    )
    c.add_argument(
        "--subnet-id",
        metavar="ID",
        help="private subnet tagged for-use-with-amazon-emr-managed-policies=true, with an S3 gateway endpoint "
        "(required by up; docs/aws.md)",
    )
    c.add_argument("--primary-security-group", metavar="ID", help="EMR-managed security group of the primary node")
    c.add_argument("--core-security-group", metavar="ID", help="EMR-managed security group of core and task nodes")
    c.add_argument(
        "--service-access-security-group",
        metavar="ID",
        help="EMR service access security group (a private subnet needs it); all three or none",
    )
    c.add_argument(
        "--security-configuration",
        metavar="NAME",
        help=f"the stack's EMR security configuration (default {_default('security_configuration')})",
    )
    c.add_argument(
        "--am-node-label",
        choices=AM_NODE_LABELS,
        help="YARN node label the application master must run on: never a spot task node "
        f"(default {_default('am_node_label')})",
    )
    c.add_argument(
        "--mlflow-secret",
        dest="mlflow_secret_arn",
        metavar="ARN",
        help="Secrets Manager secret {username, password} of the MLflow server, written to the primary node's "
        "~/.mlflow/credentials by the bootstrap (never in the request or the steps)",
    )
    c.add_argument("--key-name", help="EC2 key pair for SSH to the nodes")
    c.add_argument(
        "--idle-timeout",
        dest="idle_timeout_seconds",
        type=int,
        metavar="SECONDS",
        help="auto-terminate after this long idle (60..604800)",
    )
    c.add_argument("--owner", help="owner tag")
    c.add_argument("--cost-center", help="cost-center tag")
    c.add_argument("--service-role", help=f"EMR service role (default {_default('service_role')})")
    c.add_argument("--instance-profile", help=f"EC2 instance profile (default {_default('instance_profile')})")
    c.add_argument("--wheel", help=f"project wheel under s3://BUCKET/bootstrap/ (default {_default('wheel')})")
    c.add_argument(
        "--wheelhouse",
        metavar="URI",
        help=f"S3 prefix of the wheels the nodes install, no package index (default s3://BUCKET/{WHEELHOUSE_KEY})",
    )
    c.add_argument(
        "--lock",
        default=DEFAULT_LOCK,
        metavar="PATH",
        help=f"the wheelhouse's requirements.lock as built here; its sha256 goes in the request (default {DEFAULT_LOCK})",
    )
    c.add_argument("--lock-sha256", metavar="HEX", help="that sha256 given directly (instead of --lock)")
    c.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="CLASSIFICATION:PROPERTY=VALUE",
        help="extra EMR configuration, repeatable (e.g. spark-defaults:spark.executor.memory=10g)",
    )
    cost = parser.add_argument_group("cost estimate")
    cost.add_argument(
        "--images-per-second-per-node",
        type=float,
        default=DEFAULT_IMAGES_PER_SECOND_PER_NODE,
        metavar="R",
        help=f"throughput of one core/task node (default {DEFAULT_IMAGES_PER_SECOND_PER_NODE:g}, see docs/emr.md)",
    )
    cost.add_argument(
        "--spot-fraction",
        type=float,
        default=DEFAULT_SPOT_FRACTION,
        metavar="F",
        help=f"expected spot EC2 price as a fraction of on-demand (default {DEFAULT_SPOT_FRACTION:g})",
    )


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-id", help="j-... (default: the one active cluster named --name)")
    parser.add_argument(
        "--name", default=_default("name"), help=f"cluster name to look up (default {_default('name')})"
    )
    add_region_flag(parser)


def run(args: argparse.Namespace) -> int:
    return dispatch(
        args.emr_action,
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


def cluster_options(args: argparse.Namespace, region: str) -> ClusterOptions:
    """ClusterOptions from the flags by name; the region, the lock's sha256 and the --conf triples computed."""
    return options_from_args(
        ClusterOptions,
        args,
        region=region,
        lock_sha256=_lock_sha256(args),
        extra_configurations=tuple(parse_conf(c) for c in args.conf),
    )


def _lock_sha256(args: argparse.Namespace) -> str | None:
    """--lock-sha256, else the sha256 of the local --lock file, else None (plan warns, up refuses)."""
    if args.lock_sha256:
        return args.lock_sha256
    lock = Path(args.lock)
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def _planned(
    args: argparse.Namespace, region: str, launching: bool = False
) -> tuple[ClusterOptions, dict[str, Any], CostEstimate]:
    options = cluster_options(args, region)
    request = planned_request(options, today=dt.date.today(), launching=launching)
    if options.lock_sha256 is None:
        log.warning(
            "no %s and no --lock-sha256: `up` needs the wheelhouse's lock (infra/build_wheelhouse.sh)", args.lock
        )
    cost = estimate_cost(request, region, args.images_per_second_per_node, spot_fraction=args.spot_fraction)
    if cost.per_hour is None:
        log.warning("part of the cluster's price is unknown for %s: see the cost lines", region)
    return options, request, cost


def _run_plan(args: argparse.Namespace, region: str, settings: Settings) -> int:
    options, request, cost = _planned(args, region)
    serverless = equivalent_serverless_cost(
        options.bucket, region, cost.processing_nodes, args.images_per_second_per_node
    )
    comparison = side_by_side(region, cost, serverless, args)
    endpoint = gateway_endpoint_buckets(region, options.bucket)
    network = ["network: the subnet's S3 gateway endpoint (its policy, if restrictive) must let the nodes reach:"]
    network += [f"  {b.arn:<62} {b.access:<10} {b.why}" for b in endpoint]
    human = "\n".join(
        [
            json.dumps(request, indent=2),
            options.release.describe(),
            options.bootstrap.describe(),
            *network,
            *cost.lines(),
            *comparison.events.lines(),
            *comparison.lines(),
        ]
    )
    summary = {
        "request": request,
        "cost": cost.to_dict(),
        "comparison": comparison.to_dict(),
        "gateway_endpoint_buckets": [{"bucket": b.bucket, "access": b.access, "why": b.why} for b in endpoint],
    }
    emit_summary(summary, args.json, human)
    return 0


def _run_up(args: argparse.Namespace, region: str, settings: Settings) -> int:
    _, request, cost = _planned(args, region, launching=True)
    cluster_id = create_cluster(emr_client(region, args.endpoint_url), request)
    per_hour = "an unknown amount" if cost.per_hour is None else f"${cost.per_hour:.4f}/h"
    human = (
        f"{cluster_id}\ncreated {request['Name']} ({request['ReleaseLabel']}) in {region}; it costs {per_hour} "
        f"until `fruits emr down --cluster-id {cluster_id} --yes`"
    )
    emit_summary({"cluster_id": cluster_id, "region": region, "cost": cost.to_dict()}, args.json, human)
    return 0


def _run_submit(args: argparse.Namespace, region: str, settings: Settings) -> int:
    jobs = job_options(args, settings)
    steps = build_steps(args.job, jobs)
    emr = emr_client(region, args.endpoint_url)
    cluster_id = find_cluster(emr, args.cluster_id, args.name)
    preflight(args, jobs, settings, region)
    if args.job in ("stream", "both"):
        check_no_live_stream(live_steps(emr, cluster_id), f"cluster {cluster_id}")
    if args.job == "refit":
        check_no_step_ahead(live_steps(emr, cluster_id), f"cluster {cluster_id}")
    step_ids = add_steps(emr, cluster_id, steps)
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


def _run_stop(args: argparse.Namespace, region: str, settings: Settings) -> int:
    return run_stop(args, settings, requested_by="fruits emr stop")


def _run_down(args: argparse.Namespace, region: str, settings: Settings) -> int:
    if not args.yes:
        raise FruitsError(
            "terminating stops the stream at once and deletes the cluster: add --yes to confirm "
            "(`fruits emr stop` first stops it gracefully)"
        )
    client = emr_client(region, args.endpoint_url)
    cluster_id = find_cluster(client, args.cluster_id, args.name)
    state = terminate_cluster(client, cluster_id)
    emit_summary({"cluster_id": cluster_id, "state": state}, args.json, f"{cluster_id}: {state}")
    return 0
