#!/usr/bin/env bash
# Build the wheelhouse the EMR bootstrap action installs from (infra/bootstrap.sh): the nodes then
# need no package index at all, and what they install is exactly what is in the bucket.
#
#   infra/build_wheelhouse.sh OUT_DIR [PROJECT_WHEEL]
#     OUT_DIR        created; must not exist or be empty (stale wheels would ship with the new ones)
#     PROJECT_WHEEL  default: the one dist/fruits-*.whl (`python -m pip wheel --no-deps -w dist .`)
#   env PYTHON       a CPython 3.11 with pip >= 22.2 (default .venv/bin/python, else python3.11)
#   env EXTRA_WHEELS a directory of wheels you built yourself for packages published as sdists only
#
# Then: aws s3 sync --delete OUT_DIR s3://B/bootstrap/wheelhouse/   (see docs/emr.md)
#
# OUT_DIR receives every wheel of the project wheel's `keras` extra under the pins of
# constraints.txt, minus pyspark (EMR brings its own Spark), plus the pinned pip, setuptools and
# wheel, for the nodes' platform: Amazon Linux 2023 x86_64 (glibc 2.34), CPython 3.11. Binary
# wheels only: a dependency without a compatible wheel makes the download fail, and its name is
# printed. The project wheel itself is not kept in OUT_DIR: it is uploaded per release to
# s3://B/bootstrap/. OUT_DIR/requirements.lock pins every wheel, the project's included, by
# version and sha256: the bootstrap installs with `pip --require-hashes -r requirements.lock`
# and checks the lock itself against the sha256 in the cluster request (`fruits emr up` reads
# it from OUT_DIR/requirements.lock). Last, pip installs the lock from OUT_DIR alone (--no-index,
# --require-hashes, a dry run for the nodes' platform), which proves the wheelhouse is complete
# and the lock consistent before anything is uploaded.
set -euo pipefail

usage="usage: infra/build_wheelhouse.sh OUT_DIR [PROJECT_WHEEL]"
OUT="${1:?$usage}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${2:-}" ]; then
    WHEEL="$2"
else
    shopt -s nullglob
    wheels=("$ROOT"/dist/fruits-*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -ne 1 ]; then
        echo "build_wheelhouse: expected exactly one dist/fruits-*.whl, found ${#wheels[@]}: pass PROJECT_WHEEL" >&2
        exit 2
    fi
    WHEEL="${wheels[0]}"
fi
[ -f "$WHEEL" ] || { echo "build_wheelhouse: no such wheel: $WHEEL" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3.11"; fi
fi

log() { echo "build_wheelhouse: $*" >&2; }

# pip evaluates environment markers (python_version, sys_platform, platform_machine) with the Python
# that runs it, whatever --platform/--python-version say: the builder must match the nodes there.
host="$("$PYTHON" -c 'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]} {sys.platform} {platform.machine()}")')"
if [ "$host" != "3.11 linux x86_64" ]; then
    log "run this with a CPython 3.11 on Linux x86_64 like the nodes (got: $host); set PYTHON, or use a container"
    exit 2
fi

if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    log "$OUT is not empty: give a new or empty directory"
    exit 2
fi
mkdir -p "$OUT"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Every pin except pyspark: the same filter as bootstrap.sh.
grep -viE '^pyspark([^a-z0-9_.-]|$)' "$ROOT/constraints.txt" > "$work/constraints-emr.txt"

# AL2023 has glibc 2.34, so it runs manylinux wheels up to manylinux_2_34. pip does not widen a
# --platform to older glibc tags (manylinux_2_28 does not accept a manylinux_2_27 wheel, e.g.
# tensorflow-cpu 2.21.0's only Linux wheel), so every tag is listed; manylinux2014 also admits
# manylinux2010 and manylinux1.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 34); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
target=(--only-binary=:all: "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311)
extra=()
[ -n "${EXTRA_WHEELS:-}" ] && extra=(--find-links "$EXTRA_WHEELS")

log "downloading the wheels of $(basename "$WHEEL")[keras] for CPython 3.11 manylinux x86_64 into $OUT"
# pip, setuptools and wheel too, at their constraints.txt pins: the bootstrap runs pip from its own
# wheel (the node's Python 3.11 may have no pip), and nothing on the nodes is "the newest at build time".
if ! "$PYTHON" -m pip download --disable-pip-version-check --no-input "${target[@]}" "${extra[@]}" \
    --constraint "$work/constraints-emr.txt" --dest "$OUT" "$WHEEL[keras]" pip setuptools wheel \
    > "$work/download.log" 2>&1; then
    grep -E '^ERROR|conflict is caused by|depends on|requested \(constraint\)' "$work/download.log" >&2 || tail -20 "$work/download.log" >&2
    log "no wheel for CPython 3.11 manylinux x86_64 (glibc <= 2.34) for a package named above: it is published"
    log "as an sdist only, or for a newer glibc. Build its wheel on Amazon Linux 2023 x86_64"
    log "(python3.11 -m pip wheel --no-deps NAME==VERSION -w DIR) and re-run with EXTRA_WHEELS=DIR."
    exit 1
fi
rm -f "$OUT/$(basename "$WHEEL")"

if [ -n "$(find "$OUT" -maxdepth 1 -iname 'pyspark-*')" ]; then
    log "pyspark is in the wheelhouse: it would shadow EMR's Spark. Remove what pulled it in."
    exit 1
fi
not_wheels="$(find "$OUT" -mindepth 1 ! -name '*.whl' -printf '%f ')"  # before the lock is written
if [ -n "$not_wheels" ]; then
    log "not wheels, in $OUT: $not_wheels"
    exit 1
fi

# One line per wheel: name==version --hash=sha256:... (names normalized as pip compares them).
"$PYTHON" - "$OUT" "$WHEEL" > "$work/requirements.lock" <<'PY'
import hashlib, pathlib, re, sys

out, project = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

def pin(wheel: pathlib.Path, extras: str = "") -> str:
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{re.sub(r'[-_.]+', '-', name).lower()}{extras}=={version} --hash=sha256:{digest}"

print("# infra/build_wheelhouse.sh: every wheel the EMR nodes install, by version and sha256.")
print(f"# The project wheel ({project.name}) is uploaded to s3://<bucket>/bootstrap/, not kept here.")
for wheel in sorted(out.glob("*.whl"), key=lambda p: p.name.lower()):
    print(pin(wheel))
print(pin(project, "[keras]"))
PY
mv "$work/requirements.lock" "$OUT/requirements.lock"

log "checking that pip installs requirements.lock from $OUT alone, hashes required, for the nodes' platform"
# The project wheel beside the others, as the bootstrap stages it. --isolated: this machine's pip
# configuration (extra indexes, find-links) must not fill a gap.
mkdir "$work/staged"
cp "$OUT"/*.whl "$WHEEL" "$work/staged/"
if ! "$PYTHON" -m pip install --isolated --disable-pip-version-check --no-input --dry-run --ignore-installed \
    --no-index --find-links "$work/staged" "${target[@]}" --target "$work/target" \
    --require-hashes --requirement "$OUT/requirements.lock" > "$work/check.log" 2>&1; then
    tail -20 "$work/check.log" >&2
    log "the wheelhouse in $OUT is incomplete, or its lock does not match its wheels"
    exit 1
fi

lock_sha256="$(sha256sum "$OUT/requirements.lock" | cut -d' ' -f1)"
log "$(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT; requirements.lock sha256 $lock_sha256"
log "upload with:"
log "  aws s3 sync --delete $OUT s3://<bucket>/bootstrap/wheelhouse/"
log "  aws s3 cp $WHEEL s3://<bucket>/bootstrap/"
log "then \`fruits emr up\` reads the sha256 from $OUT/requirements.lock (or pass --lock-sha256 $lock_sha256)"
