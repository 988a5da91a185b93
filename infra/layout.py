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
CONSTRAINTS_KEY = "bootstrap/constraints.txt"
DEFAULT_WHEEL = f"fruits-{__version__}-py3-none-any.whl"
WEIGHTS_KEY = "models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMAGES_PREFIX = "images/"
FEATURES_PREFIX = "features/"
RESULTS_PREFIX = "results/"
ERRORS_PREFIX = "errors/"
CHECKPOINT_PREFIX = "checkpoints/stream/"
EMR_LOGS_PREFIX = "logs/emr/"


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"
