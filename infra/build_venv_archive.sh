#!/usr/bin/env bash
# Build the packed virtual environment that EMR Serverless unpacks on every worker (spark.archives,
# `fruits serverless submit`): the project and its dependencies for CPython 3.11 on x86_64.
#
#   infra/build_venv_archive.sh WHEELHOUSE_DIR PROJECT_WHEEL OUT.tar.gz
#     WHEELHOUSE_DIR  infra/build_wheelhouse.sh's output (the same wheels the EMR nodes install),
#                     with its requirements.lock
#     PROJECT_WHEEL   the project wheel that lock pins, e.g. dist/fruits-0.1.0-py3-none-any.whl
#   env PYTHON                CPython 3.11 on Linux x86_64; default .venv/bin/python, else python3.11
#   env WORKER_PYTHON_PREFIX  where the workers' Python 3.11 lives; default /usr (Amazon Linux 2023's
#                             /usr/bin/python3.11, the emr-spark-8.x runtime's PySpark Python)
#
# Then: aws s3 cp OUT.tar.gz s3://B/bootstrap/venv/fruits-venv.tar.gz   (see docs/emr.md)
#
# A venv holds no interpreter, only a link to one (bin/python3.11) and pyvenv.cfg's `home`: the
# archive points both at WORKER_PYTHON_PREFIX, so it can be built on any Linux x86_64 CPython 3.11
# (the wheels are manylinux <= 2.34 and cp311 already; the stdlib comes from the workers' Python).
# That is what AWS's documented tool, venv-pack, does with --python-prefix; venv-pack 0.2.0 (the
# latest) turns Python 3.11's bin/python3.11 link into ".../python3.113.11", so it is done here.
# Everything is installed like the bootstrap does on the EMR nodes: pip from the wheelhouse's own
# pip wheel, --no-index, --require-hashes against requirements.lock, no pyspark.
set -euo pipefail

usage="usage: infra/build_venv_archive.sh WHEELHOUSE_DIR PROJECT_WHEEL OUT.tar.gz"
WHEELHOUSE="${1:?$usage}"
WHEEL="${2:?$usage}"
OUT="${3:?$usage}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKER_PYTHON_PREFIX="${WORKER_PYTHON_PREFIX:-/usr}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3.11"; fi
fi

log() { echo "build_venv_archive: $*" >&2; }
fail() { log "$*"; exit "${2:-1}"; }

host="$("$PYTHON" -c 'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]} {sys.platform} {platform.machine()}")')"
[ "$host" = "3.11 linux x86_64" ] || fail "run this with a CPython 3.11 on Linux x86_64 like the workers (got: $host); set PYTHON, or use a container" 2
lock="$WHEELHOUSE/requirements.lock"
[ -f "$lock" ] || fail "no requirements.lock in $WHEELHOUSE: build it with infra/build_wheelhouse.sh" 2
[ -f "$WHEEL" ] || fail "no such wheel: $WHEEL" 2
case "$OUT" in *.tar.gz) ;; *) fail "OUT must end in .tar.gz (spark.archives unpacks it by its extension)" 2 ;; esac
[ ! -e "$OUT" ] || fail "$OUT exists: give a new path" 2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/staged"
cp "$WHEELHOUSE"/*.whl "$WHEEL" "$work/staged/"
shopt -s nullglob
pip_wheels=("$work"/staged/pip-*.whl)
shopt -u nullglob
[ "${#pip_wheels[@]}" -eq 1 ] || fail "expected one pip wheel in $WHEELHOUSE, found ${#pip_wheels[@]}"
grep -qF -- "--hash=sha256:$(sha256sum "${pip_wheels[0]}" | cut -d' ' -f1)" "$lock" \
    || fail "$(basename "${pip_wheels[0]}") is not the pip wheel requirements.lock pins"

log "installing requirements.lock ($(grep -c -- '--hash=' "$lock") wheels, hashes required, no package index) into a fresh venv"
"$PYTHON" -m venv --without-pip "$work/venv"
# --isolated: this machine's pip configuration (extra indexes, find-links) must not fill a gap.
"$work/venv/bin/python" "${pip_wheels[0]}/pip" install --isolated --quiet --disable-pip-version-check --no-input \
    --no-cache-dir --no-index --find-links "$work/staged" --only-binary=:all: --require-hashes --requirement "$lock"
if "$work/venv/bin/python" -m pip show --quiet pyspark >/dev/null 2>&1; then
    fail "pyspark got installed: it would shadow EMR Serverless' Spark"
fi

log "packing it for workers whose Python is $WORKER_PYTHON_PREFIX/bin/python3.11"
"$PYTHON" - "$work/venv" "$OUT" "$WORKER_PYTHON_PREFIX" <<'PY'
import io, pathlib, re, sys, tarfile

venv, out, prefix = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3].rstrip("/")
python = f"{prefix}/bin/python3.11"
with tarfile.open(out, "w:gz", compresslevel=6) as archive:
    for path in sorted(venv.rglob("*")):
        name = str(path.relative_to(venv))
        if name == "bin/python3.11":  # the link to the interpreter: the workers' own
            link = tarfile.TarInfo(name)
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, python, 0o777
            archive.addfile(link)
        elif name == "pyvenv.cfg":  # where the stdlib is: the workers' Python's
            text = re.sub(r"(?m)^home = .*$", f"home = {prefix}/bin", path.read_text())
            text = re.sub(r"(?m)^executable = .*$", f"executable = {python}", text)
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        elif "/__pycache__" not in f"/{name}":  # workers compile their own
            archive.add(path, name, recursive=False)
PY
log "$(du -h "$OUT" | cut -f1) in $OUT; upload with:"
log "  aws s3 cp $OUT s3://<bucket>/bootstrap/venv/fruits-venv.tar.gz"
