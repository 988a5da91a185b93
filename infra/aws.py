"""The AWS calls of the launchers (boto3), each failure turned into one readable line.

The EMR endpoint is the caller's endpoint_url, else boto3's own AWS_ENDPOINT_URL_EMR /
AWS_ENDPOINT_URL (the tests point it at a moto server).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from fruits.exceptions import FruitsError

ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]


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
