"""The AWS calls of the launchers (boto3), each failure turned into one readable line.

Every client names its region. The endpoint is the caller's endpoint_url, else boto3's own
AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL (the tests point it at a moto server).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from fruits.exceptions import FruitsError

ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """Any boto3 client with the region set; endpoint None: boto3's AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


def emr_client(region: str, endpoint_url: str | None = None) -> Any:
    return client("emr", region, endpoint_url)


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


def mlflow_credentials(secretsmanager: Any, secret_arn: str) -> tuple[str, str]:
    """(username, password) from the MLflow server's secret {"username": ..., "password": ...}."""
    with aws_errors("get_secret_value"):
        text = secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        secret = json.loads(text)
        return str(secret["username"]), str(secret["password"])
    except (ValueError, KeyError, TypeError):
        raise FruitsError(f'{secret_arn} is not a JSON secret with "username" and "password"') from None


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
        raise FruitsError(
            f"no active EMR cluster named {name!r} in this region: pass --cluster-id or run `fruits emr up`"
        )
    if len(ids) > 1:
        raise FruitsError(f"{len(ids)} active clusters are named {name!r} ({', '.join(ids)}): pass --cluster-id")
    return ids[0]


def add_steps(client: Any, cluster_id: str, steps: list[dict[str, Any]]) -> list[str]:
    with aws_errors("add_job_flow_steps"):
        return client.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]


def live_steps(client: Any, cluster_id: str) -> list[dict[str, str]]:
    """The cluster's steps that are pending or running (name, id, state)."""
    with aws_errors("list_steps"):
        pages = client.get_paginator("list_steps").paginate(ClusterId=cluster_id, StepStates=["PENDING", "RUNNING"])
        return [
            {"name": s["Name"], "id": s["Id"], "state": s["Status"]["State"]} for page in pages for s in page["Steps"]
        ]


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


# ============================================================================ EMR Serverless
SERVERLESS_LIVE_STATES = ["CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
RUNNING_JOB_STATES = ["SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED"]
# EMR Serverless stops a streaming run between micro-batches within this grace period (7.9.0+).
CANCEL_GRACE_SECONDS = 120


def account_id(sts: Any) -> str:
    with aws_errors("get_caller_identity"):
        return sts.get_caller_identity()["Account"]


def create_application(serverless: Any, request: Mapping[str, Any]) -> str:
    with aws_errors("create_application"):
        return serverless.create_application(**request)["applicationId"]


def find_application(serverless: Any, application_id: str | None, name: str) -> str:
    """--application-id if given; else the one live application with that name (two is an error, not a guess)."""
    if application_id:
        return application_id
    with aws_errors("list_applications"):
        pages = serverless.get_paginator("list_applications").paginate(states=SERVERLESS_LIVE_STATES)
        ids = [a["id"] for page in pages for a in page["applications"] if a["name"] == name]
    if not ids:
        raise FruitsError(
            f"no EMR Serverless application named {name!r} in this region: pass --application-id or run `fruits serverless up`"
        )
    if len(ids) > 1:
        raise FruitsError(f"{len(ids)} applications are named {name!r} ({', '.join(ids)}): pass --application-id")
    return ids[0]


def start_job_run(serverless: Any, request: Mapping[str, Any]) -> str:
    with aws_errors("start_job_run"):
        return serverless.start_job_run(**request)["jobRunId"]


def application_status(serverless: Any, application_id: str) -> dict[str, Any]:
    """State of the application and of each job run, oldest first."""
    with aws_errors("get_application"):
        application = serverless.get_application(applicationId=application_id)["application"]
        pages = serverless.get_paginator("list_job_runs").paginate(applicationId=application_id)
        runs = [r for page in pages for r in page["jobRuns"]]
    runs.sort(key=lambda r: r["createdAt"])
    return {
        "application_id": application_id,
        "name": application["name"],
        "state": application["state"],
        "release_label": application.get("releaseLabel"),
        "job_runs": [{"id": r["id"], "name": r.get("name", ""), "state": r["state"]} for r in runs],
    }


def live_job_runs(serverless: Any, application_id: str) -> list[dict[str, str]]:
    """The application's job runs that are not finished (name, id, state)."""
    with aws_errors("list_job_runs"):
        pages = serverless.get_paginator("list_job_runs").paginate(
            applicationId=application_id, states=RUNNING_JOB_STATES
        )
        return [
            {"name": r.get("name", ""), "id": r["id"], "state": r["state"]} for page in pages for r in page["jobRuns"]
        ]


def delete_application(serverless: Any, application_id: str, wait_seconds: float = 600) -> str:
    """Cancel live job runs (streams get their grace period), stop the application, then delete it."""
    for run in live_job_runs(serverless, application_id):
        with aws_errors("cancel_job_run"):
            serverless.cancel_job_run(
                applicationId=application_id, jobRunId=run["id"], shutdownGracePeriodInSeconds=CANCEL_GRACE_SECONDS
            )
    with aws_errors("stop_application"):
        serverless.stop_application(applicationId=application_id)
        # Deleting needs a stopped application; stopping takes a while on AWS (immediate on moto).
        deadline = time.monotonic() + wait_seconds
        while (state := serverless.get_application(applicationId=application_id)["application"]["state"]) != "STOPPED":
            if time.monotonic() > deadline:
                raise FruitsError(
                    f"application {application_id} is still {state} after {wait_seconds:g} s: run `down` again"
                )
            time.sleep(5)
    with aws_errors("delete_application"):
        serverless.delete_application(applicationId=application_id)
        return serverless.get_application(applicationId=application_id)["application"]["state"]


# ============================================================================ the graceful stop
def request_stop(s3: Any, bucket: str, key: str, requested_by: str) -> None:
    """Write the stop marker the streaming job checks between micro-batches (it deletes it once stopped)."""
    body = json.dumps({"requested_by": requested_by, "at": dt.datetime.now(dt.UTC).isoformat()})
    with aws_errors("put_object"):
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")
