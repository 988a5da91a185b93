#!/usr/bin/env bash
# EMR bootstrap action for the Fruits! pipeline (set by `fruits emr up`).
#
#   bootstrap.sh WHEEL_URI CONSTRAINTS_URI WEIGHTS_URI WHEELHOUSE_URI
#     e.g. s3://B/bootstrap/fruits-0.1.0-py3-none-any.whl s3://B/bootstrap/constraints.txt
#          s3://B/models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
#          s3://B/bootstrap/wheelhouse/
#
# Runs as the hadoop user on EVERY node (primary: the client-mode driver; core/task: the executors'
# Python workers), before EMR installs Spark. It:
#   1. installs python3.11 + pip with dnf (Amazon Linux 2023 ships 3.9; the project is 3.11 only).
#      The Amazon Linux repositories are served from S3 in the cluster's region, so a node reaches
#      them like the bucket (an S3 gateway endpoint is enough in a private subnet);
#   2. syncs the wheelhouse (infra/build_wheelhouse.sh) from S3 and pip-installs the project wheel
#      with its `keras` extra (the driver exports the ONNX graph with tf2onnx, and `--engine keras`
#      runs TensorFlow on the executors) from those wheels only (--no-index: no package index is
#      ever contacted), under the pinned versions of constraints.txt, WITHOUT pyspark: EMR brings
#      its own Spark 3.5 and a pip pyspark would shadow it with a mismatched version;
#   3. copies the MobileNetV2 weights into a Keras cache, so weights="imagenet" resolves on the
#      nodes without downloading anything.
# Idempotent: re-running re-downloads, and pip / dnf skip what is already installed.
# Its stdout/stderr land in s3://B/logs/emr/<cluster>/node/<instance>/bootstrap-actions/1/.
set -euo pipefail

usage="usage: bootstrap.sh WHEEL_URI CONSTRAINTS_URI WEIGHTS_URI WHEELHOUSE_URI"
WHEEL_URI="${1:?$usage}"
CONSTRAINTS_URI="${2:?$usage}"
WEIGHTS_URI="${3:?$usage}"
WHEELHOUSE_URI="${4:?$usage}"
# infra/emr.py points executors (user yarn) and the driver at this same directory.
KERAS_HOME="${KERAS_HOME:-/home/hadoop/.keras}"

log() { echo "fruits-bootstrap $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

if command -v python3.11 >/dev/null 2>&1 && python3.11 -m pip --version >/dev/null 2>&1; then
    log "python3.11 and pip already installed"
else
    log "installing python3.11 and pip"
    sudo dnf install -y python3.11 python3.11-pip
fi
PYTHON="$(command -v python3.11)"

# On disk, not in /tmp: Amazon Linux 2023's /tmp is a tmpfs in RAM, and the wheelhouse is ~0.5 GB.
work="$(mktemp -d -p "${TMPDIR:-/var/tmp}" fruits-bootstrap.XXXXXX)"
trap 'rm -rf "$work"' EXIT
wheel="$work/$(basename "$WHEEL_URI")"
wheelhouse="$work/wheelhouse"
log "fetching $WHEEL_URI and $CONSTRAINTS_URI"
aws s3 cp --only-show-errors "$WHEEL_URI" "$wheel"
aws s3 cp --only-show-errors "$CONSTRAINTS_URI" "$work/constraints.txt"
# Keep every pin except pyspark (see 2. above).
grep -viE '^pyspark([^a-z0-9_.-]|$)' "$work/constraints.txt" > "$work/constraints-emr.txt"

log "syncing $WHEELHOUSE_URI to $wheelhouse"
mkdir -p "$wheelhouse"
aws s3 sync --only-show-errors "$WHEELHOUSE_URI" "$wheelhouse"
# `aws s3 sync` of a missing prefix succeeds with nothing copied: say what is wrong here rather
# than let pip report the first dependency it cannot find.
wheel_count="$(find "$wheelhouse" -maxdepth 1 -name '*.whl' | wc -l)"
if [ "$wheel_count" -eq 0 ]; then
    log "ERROR: no wheels under $WHEELHOUSE_URI: build and upload it (infra/build_wheelhouse.sh, docs/emr.md)"
    exit 1
fi

log "installing $(basename "$wheel")[keras] for $PYTHON from $wheel_count wheels, no package index"
# System-wide (sudo): the executors' Python workers run as user yarn, not hadoop.
sudo "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --no-cache-dir \
    --no-index --find-links "$wheelhouse" --only-binary=:all: \
    --constraint "$work/constraints-emr.txt" "$wheel[keras]"
if sudo "$PYTHON" -m pip show --quiet pyspark >/dev/null 2>&1; then
    log "ERROR: pip installed pyspark; it would shadow EMR's Spark. Remove what pulled it in."
    exit 1
fi
"$PYTHON" -c "import fruits, onnxruntime; print('fruits', fruits.__version__, 'onnxruntime', onnxruntime.__version__)"

log "caching $WEIGHTS_URI in $KERAS_HOME/models"
mkdir -p "$KERAS_HOME/models"
target="$KERAS_HOME/models/$(basename "$WEIGHTS_URI")"
aws s3 cp --only-show-errors "$WEIGHTS_URI" "$target.part"
mv -f "$target.part" "$target"
# Executors run as yarn: let it read the cache and traverse (not list) the home directory above it.
chmod -R a+rX "$KERAS_HOME"
chmod o+x "$(dirname "$KERAS_HOME")"
log "done"
