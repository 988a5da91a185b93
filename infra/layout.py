"""The data bucket's layout: the keys the CloudFormation stack grants and the jobs read and write.

One place for every path the launchers put in a request, so the template (infra/template.yaml),
the bootstrap action, the spark-submit steps and the docs cannot drift apart.
"""

from __future__ import annotations

from fruits import __version__

# Every wheel the nodes install (infra/build_wheelhouse.sh): the bootstrap uses no package index.
WHEELHOUSE_KEY = "bootstrap/wheelhouse/"
BOOTSTRAP_SCRIPT_KEY = "bootstrap/bootstrap.sh"
# spark-submit's Python file: cli/spark_entry.py, uploaded here (docs/aws.md).
SPARK_ENTRY_KEY = "bootstrap/spark_entry.py"
# EMR Serverless: the packed virtual environment every worker unpacks (infra/build_venv_archive.sh).
VENV_ARCHIVE_KEY = "bootstrap/venv/fruits-venv.tar.gz"
DEFAULT_WHEEL = f"fruits-{__version__}-py3-none-any.whl"
WEIGHTS_KEY = "models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMAGES_PREFIX = "images/"
# Held-out labelled images (<class>/<file>) the refit measures champion and challenger on. Outside
# IMAGES_PREFIX on purpose: the stream would ingest them, and the refit would train on them.
HOLDOUT_PREFIX = "holdout/"
FEATURES_PREFIX = "features/"
# The stream's Delta tables and checkpoint, as the streaming job names them (no trailing slash).
RESULTS_TABLE = "results"
ERRORS_TABLE = "errors"
CHECKPOINT = "checkpoints/stream"
# EMR Serverless has no HDFS: mlflow.spark stages models here (MLFLOW_DFS_TMP) instead of a worker's disk.
# Expired after a day by the bucket's lifecycle.
MLFLOW_DFS_TMP_PREFIX = "scratch/mlflow/"
EMR_LOGS_PREFIX = "logs/emr/"
SERVERLESS_LOGS_PREFIX = "logs/serverless/"


def s3_uri(bucket: str, key: str = "") -> str:
    """For what AWS itself reads (LogUri, the bootstrap action's path) and the AWS CLI (`aws s3 cp`)."""
    return f"s3://{bucket}/{key}"


def s3a_uri(bucket: str, key: str = "") -> str:
    """For what Spark and the jobs read and write: emr-spark-8.x has no EMRFS, S3 is reached through S3A."""
    return f"s3a://{bucket}/{key}"
