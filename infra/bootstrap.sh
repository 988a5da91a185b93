#!/usr/bin/env bash
# EMR bootstrap action for the Fruits! pipeline (set by `fruits emr up`; `fruits emr plan` prints it).
#
#   bootstrap.sh --region REGION --python PATH --wheel WHEEL_URI --wheelhouse WHEELHOUSE_URI \
#                --lock-sha256 HEX --weights WEIGHTS_URI [--mlflow-secret SECRET_ARN]
#     e.g. --region eu-west-3 --python /usr/bin/python3.11
#          --wheel s3://B/bootstrap/fruits-0.1.0-py3-none-any.whl --wheelhouse s3://B/bootstrap/wheelhouse/
#          --lock-sha256 <sha256 of wheelhouse/requirements.lock, from infra/build_wheelhouse.sh>
#          --weights s3://B/models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
#
# Runs as the hadoop user on EVERY node (primary: the client-mode driver; core/task: the executors'
# Python workers), before EMR installs Spark. Everything it installs is checked before it runs:
#   1. the release's Python (--python; emr-spark-8.x brings Python 3.11 for PySpark) must be there:
#      nothing is installed with dnf, and the system python3 (3.9) is never used;
#   2. copies the wheel and syncs the wheelhouse (infra/build_wheelhouse.sh) from S3, in --region
#      (a private subnet's S3 gateway endpoint serves only its own region), and checks the sha256
#      of the wheelhouse's requirements.lock against --lock-sha256, which comes from the cluster
#      request, not from the bucket;
#   3. runs pip from the wheelhouse's own pip wheel once its sha256 is found in the lock (the node's
#      Python 3.11 may have no pip), and installs requirements.lock with --require-hashes: every wheel,
#      the project's, pip's, setuptools' and wheel's included, must match the lock's version and
#      sha256; --no-index, so no package index is ever contacted. No pyspark: EMR brings its own;
#   4. copies the MobileNetV2 weights into a Keras cache, so weights="imagenet" resolves on the
#      nodes without downloading anything (the registered model pins the weights' sha256 and the
#      stream refuses a mismatch);
#   5. with --mlflow-secret, on the primary node only (the client-mode driver runs there; core and
#      spot task nodes never hold the credentials), writes the MLflow server's credentials (a Secrets
#      Manager secret {"username": ..., "password": ...}) to this user's ~/.mlflow/credentials, mode 600,
#      where MLflow reads them: no credential appears in the cluster request, the step arguments or the logs.
# Idempotent: re-running re-downloads, and pip skips what is already installed.
# Its stdout/stderr land in s3://B/logs/emr/<cluster>/node/<instance>/bootstrap-actions/1/.
set -euo pipefail

usage="usage: bootstrap.sh --region REGION --python PATH --wheel WHEEL_URI --wheelhouse WHEELHOUSE_URI --lock-sha256 HEX --weights WEIGHTS_URI [--mlflow-secret SECRET_ARN]"
REGION="" PYTHON="" WHEEL_URI="" WHEELHOUSE_URI="" LOCK_SHA256="" WEIGHTS_URI="" MLFLOW_SECRET=""
while [ "$#" -gt 0 ]; do
    [ "$#" -ge 2 ] || { echo "bootstrap.sh: $1 needs a value; $usage" >&2; exit 2; }
    case "$1" in
        --region) REGION="$2" ;;
        --python) PYTHON="$2" ;;
        --wheel) WHEEL_URI="$2" ;;
        --wheelhouse) WHEELHOUSE_URI="$2" ;;
        --lock-sha256) LOCK_SHA256="$2" ;;
        --weights) WEIGHTS_URI="$2" ;;
        --mlflow-secret) MLFLOW_SECRET="$2" ;;
        *) echo "bootstrap.sh: unknown argument $1; $usage" >&2; exit 2 ;;
    esac
    shift 2
done
for required in REGION PYTHON WHEEL_URI WHEELHOUSE_URI LOCK_SHA256 WEIGHTS_URI; do
    [ -n "${!required}" ] || { echo "bootstrap.sh: missing $required; $usage" >&2; exit 2; }
done
# cluster.py points executors (user yarn) and the driver at this same directory.
KERAS_HOME="${KERAS_HOME:-/home/hadoop/.keras}"
# EMR writes this on every node; "isMaster" is true on the primary only.
EMR_INSTANCE_INFO="${EMR_INSTANCE_INFO:-/mnt/var/lib/info/instance.json}"

log() { echo "fruits-bootstrap $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }
fail() { log "ERROR: $*"; exit 1; }
s3() { aws s3 "$@" --region "$REGION" --only-show-errors; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ ! -x "$PYTHON" ]; then
    fail "$PYTHON is not on this node: the release should bring it (emr-spark-8.x: Python 3.11 for PySpark); check --release-label"
fi
log "installing for $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# On disk, not in /tmp: Amazon Linux 2023's /tmp is a tmpfs in RAM, and the wheelhouse is ~0.5 GB.
work="$(mktemp -d -p "${TMPDIR:-/var/tmp}" fruits-bootstrap.XXXXXX)"
trap 'rm -rf "$work"' EXIT
wheelhouse="$work/wheelhouse"
mkdir -p "$wheelhouse"
log "syncing $WHEELHOUSE_URI and fetching $WHEEL_URI"
s3 sync "$WHEELHOUSE_URI" "$wheelhouse"
# Beside the other wheels: pip finds every pinned wheel, the project's included, in one directory.
s3 cp "$WHEEL_URI" "$wheelhouse/$(basename "$WHEEL_URI")"

lock="$wheelhouse/requirements.lock"
# `aws s3 sync` of a missing prefix succeeds with nothing copied: say what is wrong here.
[ -f "$lock" ] || fail "no requirements.lock under $WHEELHOUSE_URI: build and upload the wheelhouse (infra/build_wheelhouse.sh, docs/emr.md)"
[ "$(sha256 "$lock")" = "$LOCK_SHA256" ] \
    || fail "$WHEELHOUSE_URI/requirements.lock has sha256 $(sha256 "$lock"), the cluster request says $LOCK_SHA256: refusing to install"

shopt -s nullglob
pip_wheels=("$wheelhouse"/pip-*.whl)
shopt -u nullglob
[ "${#pip_wheels[@]}" -eq 1 ] || fail "expected one pip wheel in $WHEELHOUSE_URI, found ${#pip_wheels[@]}"
pip_wheel="${pip_wheels[0]}"
grep -qF -- "--hash=sha256:$(sha256 "$pip_wheel")" "$lock" \
    || fail "$(basename "$pip_wheel") is not the pip wheel requirements.lock pins: refusing to run it"

log "installing requirements.lock ($(grep -c -- '--hash=' "$lock") wheels, hashes required, no package index)"
# System-wide (sudo): the executors' Python workers run as user yarn, not hadoop. pip runs from its
# own wheel, which pip supports for exactly this (a Python without pip).
sudo "$PYTHON" "$pip_wheel/pip" install --quiet --disable-pip-version-check --no-input --no-cache-dir \
    --no-index --find-links "$wheelhouse" --only-binary=:all: \
    --require-hashes --requirement "$lock"
if sudo "$PYTHON" -m pip show --quiet pyspark >/dev/null 2>&1; then
    fail "pip installed pyspark; it would shadow EMR's Spark. Remove what pulled it in."
fi
"$PYTHON" -c "import fruits, onnxruntime; print('fruits', fruits.__version__, 'onnxruntime', onnxruntime.__version__)"

log "caching $WEIGHTS_URI in $KERAS_HOME/models"
mkdir -p "$KERAS_HOME/models"
target="$KERAS_HOME/models/$(basename "$WEIGHTS_URI")"
s3 cp "$WEIGHTS_URI" "$target.part"
mv -f "$target.part" "$target"
# Executors run as yarn: let it read the cache and traverse (not list) the home directory above it.
chmod -R a+rX "$KERAS_HOME"
chmod o+x "$(dirname "$KERAS_HOME")"

is_primary() {
    [ -f "$EMR_INSTANCE_INFO" ] && "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("isMaster") is True else 1)' "$EMR_INSTANCE_INFO"
}

if [ -n "$MLFLOW_SECRET" ] && ! is_primary; then
    log "not the primary node: the MLflow credentials stay off this node (the driver runs on the primary)"
elif [ -n "$MLFLOW_SECRET" ]; then
    log "writing the MLflow credentials of $MLFLOW_SECRET to $HOME/.mlflow/credentials"
    secret="$(aws secretsmanager get-secret-value --region "$REGION" --secret-id "$MLFLOW_SECRET" \
        --query SecretString --output text)"
    # `set -e` does not apply inside a `( ... ) || fail` list: every step is chained with &&.
    (
        umask 077 &&
        mkdir -p "$HOME/.mlflow" &&
        # MLflow's own credentials file (mlflow.utils.credentials): [mlflow] username and password.
        "$PYTHON" -c '
import json, sys
secret = json.load(sys.stdin)
print("[mlflow]")
print("mlflow_tracking_username = " + secret["username"])
print("mlflow_tracking_password = " + secret["password"])' <<<"$secret" > "$HOME/.mlflow/credentials.part" 2>/dev/null &&
        mv -f "$HOME/.mlflow/credentials.part" "$HOME/.mlflow/credentials"
    ) || { rm -f "$HOME/.mlflow/credentials.part"; fail "$MLFLOW_SECRET is not a JSON secret with \"username\" and \"password\""; }
fi
log "done"
