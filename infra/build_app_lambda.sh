#!/usr/bin/env bash
# Build the app's Lambda package: infra/template.yaml's AppFunction (python3.13 on arm64, Handler
# app.aws.handler), to upload as AppCodeS3Key (docs/aws.md, step 3).
#
#   infra/build_app_lambda.sh OUT.zip
#   env PYTHON  the Python whose pip builds it (default .venv/bin/python); any OS and architecture:
#               the wheels are chosen for the Lambda's platform, not this machine's
#
# In the zip: the project's packages (its wheel without its dependencies: the jobs' Spark, TensorFlow,
# onnxruntime and the MLflow server stay out) and infra/app_lambda_requirements.txt with their
# dependencies, as binary wheels for CPython 3.13 on Linux aarch64 (manylinux_2_28), at constraints.txt's
# versions; boto3 and botocore come with the runtime. Refuses a package over Lambda's 250 MB unzipped.
set -euo pipefail

usage="usage: infra/build_app_lambda.sh OUT.zip"
OUT="${1:?$usage}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LAMBDA_PYTHON=3.13
# Amazon Linux 2023 (the python3.13 runtime) has glibc 2.34: manylinux_2_28 wheels run there (numpy 2.4
# publishes no manylinux2014 aarch64 wheel), manylinux2014 ones too.
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64)
LIMIT_BYTES=$((250 * 1024 * 1024))

log() { echo "build_app_lambda: $*" >&2; }
fail() { log "$*"; exit "${2:-1}"; }
case "$OUT" in *.zip) ;; *) fail "OUT must end in .zip" 2 ;; esac
[ ! -e "$OUT" ] || fail "$OUT exists: give a new path" 2
out="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip() { "$PYTHON" -m pip --disable-pip-version-check --no-input -q "$@"; }

log "the project's packages (no dependencies: the app's come next)"
pip wheel --no-deps -w "$work/dist" "$ROOT"
# The project targets the jobs' CPython 3.11; the app's code runs on the Lambda's 3.13 as well.
pip install --no-deps --ignore-requires-python --target "$work/package" "$work"/dist/fruits-*.whl

log "the app's dependencies for CPython $LAMBDA_PYTHON on Linux aarch64 (constraints.txt's versions)"
grep -v -E '^(boto3|botocore|s3transfer)==' "$ROOT/constraints.txt" > "$work/constraints.txt"
pip install --target "$work/package" "${PLATFORMS[@]}" --python-version "$LAMBDA_PYTHON" --implementation cp \
    --only-binary=:all: -c "$work/constraints.txt" -r "$ROOT/infra/app_lambda_requirements.txt"
# The runtime's boto3 wins over a copy some dependency pulled in; caches, tests, C headers and pyarrow's
# Flight and Substrait libraries (RPC and query plans: the app reads parquet and S3 only) are dead weight.
rm -rf "$work"/package/{boto3,botocore,s3transfer}{,-*.dist-info} "$work"/package/bin
rm -rf "$work"/package/pyarrow/{include,src,tests} "$work"/package/pyarrow/*.{pxd,pyx} \
    "$work"/package/pyarrow/{libarrow_flight,libarrow_substrait,_flight,_substrait}*
find "$work/package" -depth \( -name __pycache__ -o -name tests -path '*/numpy/*' \) -type d -exec rm -rf {} +

size="$(du -sb "$work/package" | cut -f1)"
log "unzipped: $((size / 1024 / 1024)) MB of Lambda's 250 MB"
[ "$size" -le "$LIMIT_BYTES" ] || fail "the package is $((size / 1024 / 1024)) MB unzipped, over Lambda's 250 MB"
(cd "$work/package" && zip -q -r -X "$out" .)
log "wrote $OUT ($(( $(stat -c %s "$out") / 1024 / 1024 )) MB zipped)"
echo "$size"
