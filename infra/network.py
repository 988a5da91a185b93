"""What the cluster's private subnet must reach through its S3 gateway endpoint, by bucket.

From the EMR management guide, "Minimum Amazon S3 policy for private subnet" (aws-facts.md 4g):
an endpoint with a restrictive policy must allow these buckets, or the nodes cannot install
packages, fetch EMR's own components, or push logs. The S3 gateway endpoint serves only its own
region, which is why every S3 client and `aws s3` call of ours names the region.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointBucket:
    bucket: str
    why: str
    access: str  # "read", "write" or "read-write"

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/*"


def gateway_endpoint_buckets(region: str, data_bucket: str) -> list[EndpointBucket]:
    """Every bucket the nodes of an emr-spark-8.x cluster in `region` reach through the S3 gateway endpoint."""
    # ap-southeast-2's instance-data buckets are named differently (the guide's one exception).
    instance_data = (
        "aws157-instance-data-bucket-{n}-prod-{region}"
        if region == "ap-southeast-2"
        else "aws157-instance-data-{n}-prod-{region}"
    )
    system_logs = "aws157-logs-prod" if region == "us-east-1" else f"aws157-logs-prod-{region}"
    return [
        EndpointBucket(data_bucket, "the project: bootstrap, wheelhouse, weights, images, outputs, logs", "read-write"),
        EndpointBucket(f"al2023-repos-{region}-de612dc2", "Amazon Linux 2023 package repositories", "read"),
        EndpointBucket(f"repo.{region}.emr.amazonaws.com", "the EMR repository (its own components)", "read"),
        EndpointBucket(instance_data.format(n=0, region=region), "EMR instance data (emr-spark-8.x)", "read"),
        EndpointBucket(instance_data.format(n=1, region=region), "EMR instance data (emr-spark-8.x)", "read"),
        EndpointBucket(system_logs, "EMR's system logs", "write"),
        EndpointBucket(f"prod.{region}.appinfo.src", "persistent application UIs", "read-write"),
        EndpointBucket(f"{region}.elasticmapreduce", "EMR's regional tooling (script-runner.jar)", "read"),
    ]
