"""The launchers' defaults, importable without boto3, botocore or Spark: `fruits emr --help` shows them."""

from __future__ import annotations

from fruits.settings import Settings, default_of

# The long-term-support Spark 4 runtime: Spark 4.1.1, the local pyspark pin (infra/release.py has the table).
DEFAULT_RELEASE = "emr-spark-8.1.0"
# The stack's ProjectName: the `project` tag on clusters and applications, the only ones its deploy role operates.
DEFAULT_PROJECT = "fruits"
DEFAULT_REGION = default_of(Settings, "aws_region")  # the jobs' own default (fruits/settings.py)
DEFAULT_NAME = "fruits-stream"
DEFAULT_INSTANCE_TYPE = "m5.xlarge"
DEFAULT_CORE_NODES = 2
SERVICE_ROLE = "fruits-emr-service-role"
# EMR rejects an instance profile whose name differs from its role's ("invalid instance profile"):
# the stack gives both this one name.
INSTANCE_PROFILE = "fruits-emr-ec2-role"
# The stack's EMR security configuration: IMDSv2 only, local disks and EBS encrypted.
SECURITY_CONFIGURATION = "fruits-emr-security"
# Where YARN keeps the application master: on on-demand nodes, never on spot task nodes.
AM_NODE_LABELS = ("ON_DEMAND", "CORE")
# Assumption, not a quote: spot has recently cleared around 30-50% of on-demand EC2 for m5 in the
# EU regions; 0.4 is the middle. Tune with --spot-fraction.
DEFAULT_SPOT_FRACTION = 0.4
# Measured here: ONNX Runtime ~200 img/s on 2 cores plus ~3.2 ms/img of decode+resize+scale, i.e. a
# ~150 img/s pure pipeline. An m5.xlarge has 4 vCPUs = 2 physical cores, so the same ~150; halved
# for Spark streaming overheads (Arrow, S3 reads, parquet commits, scheduling) until the streaming
# benchmark on the cluster replaces it.
DEFAULT_IMAGES_PER_SECOND_PER_NODE = 75.0
# `submit --job`: `both` runs the fit first, because the stream needs its model; `refit` learns
# from the lake and promotes a better model, which the running stream then swaps in.
JOBS = ("stream", "fit", "both", "refit")
# EMR Serverless: the application `fruits serverless up` creates, and the stack's job runtime role.
DEFAULT_APPLICATION_NAME = "fruits"
JOB_ROLE = "fruits-emr-serverless-job-role"
