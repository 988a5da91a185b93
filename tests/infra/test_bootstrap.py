"""infra/bootstrap.sh, run by bash on a fake EMR node: S3 is a directory, `aws`/`sudo`/`dnf`/`python3.11` stubs.

The stubs record every call; the assertions are on what the script asked for (which wheels, which
index flags, which constraints) and on what it left on the node (the weights cache, no temp files).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from aws_support import BUCKET, WEIGHTS_URI, WHEELHOUSE_URI

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_ARGS = (
    f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
    f"s3://{BUCKET}/bootstrap/constraints.txt",
    WEIGHTS_URI,
    WHEELHOUSE_URI,
)


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\nset -eu\n" + body)
    path.chmod(0o755)


# Two wheels stand in for the wheelhouse that infra/build_wheelhouse.sh builds (the real one is ~0.5 GB).
FAKE_WHEELS = (
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl",
)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    """A fake EMR node: S3 is a directory, `aws`/`sudo`/`dnf`/`python3.11` are recording stubs."""
    s3, bin_dir, calls, tmpdir = tmp_path / "s3", tmp_path / "bin", tmp_path / "calls", tmp_path / "var-tmp"
    wheelhouse = s3 / BUCKET / "bootstrap" / "wheelhouse"
    for d in (wheelhouse, s3 / BUCKET / "models" / "keras", bin_dir, calls, tmpdir):
        d.mkdir(parents=True)
    (s3 / BUCKET / "bootstrap" / "fruits-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (s3 / BUCKET / "bootstrap" / "constraints.txt").write_text((ROOT / "constraints.txt").read_text())
    for name in FAKE_WHEELS:
        (wheelhouse / name).write_bytes(b"wheel")
    weights = s3 / BUCKET / WEIGHTS_URI.removeprefix(f"s3://{BUCKET}/")
    weights.write_bytes(b"h5 weights")

    _stub(bin_dir, "sudo", 'exec "$@"\n')
    _stub(bin_dir, "dnf", f'echo "dnf $*" >> {calls}/log\n')
    # `aws s3 sync` of a prefix that does not exist copies nothing and succeeds, as on S3.
    _stub(bin_dir, "aws", f"""echo "aws $*" >> {calls}/aws.log
op="$1 $2"; shift 2
[ "$1" = --only-show-errors ] && shift
src="{s3}/${{1#s3://}}"
case "$op" in
  "s3 cp") cp "$src" "$2" ;;
  "s3 sync") mkdir -p "$2"; if [ -d "$src" ]; then cp -R "$src/." "$2/"; fi ;;
  *) echo "aws stub: no $op" >&2; exit 2 ;;
esac
""")
    # pip install: keep the constraints file it was given and what its --find-links directory held then
    # (the bootstrap deletes its working directory on exit).
    _stub(
        bin_dir,
        "python3.11",
        f"""echo "python3.11 $*" >> {calls}/log
case "$*" in
  "-m pip --version") exit 0 ;;
  "-m pip show"*) [ -n "${{FAKE_PYSPARK_INSTALLED:-}}" ] ;;
  "-m pip install"*)
    prev=""
    for a in "$@"; do
      links=""
      [ "$prev" = --find-links ] && links="$a"
      case "$a" in --find-links=*) links="${{a#--find-links=}}" ;; esac
      [ -n "$links" ] && {{ echo "$links" >> {calls}/find-links-dirs; ls "$links" > {calls}/find-links-listing.txt; }}
      [ -f "$a" ] && cp "$a" {calls}/constraints-used.txt
      prev="$a"
    done
    exit 0 ;;
  "-c "*) echo "fruits 0.1.0 onnxruntime stub" ;;
esac
""",
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KERAS_HOME": str(tmp_path / "home" / ".keras"),
        "TMPDIR": str(tmpdir),
    }
    return {"env": env, "calls": calls, "keras_home": tmp_path / "home" / ".keras", "s3": s3, "tmpdir": tmpdir}


def _bootstrap(node: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess:
    script = ROOT / "infra" / "bootstrap.sh"
    env = {**node["env"], **env}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=30)


def test_bootstrap_installs_without_pyspark_and_caches_the_weights(node: dict[str, Any]) -> None:
    first, second = _bootstrap(node, *BOOTSTRAP_ARGS), _bootstrap(node, *BOOTSTRAP_ARGS)  # idempotent: twice in a row

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    log = (node["calls"] / "log").read_text()
    assert "dnf" not in log  # python3.11 was already there
    assert "fruits-0.1.0-py3-none-any.whl[keras]" in log
    used = (node["calls"] / "constraints-used.txt").read_text().splitlines()
    assert "numpy==2.4.6" in used and "tensorflow_cpu==2.21.0" in used  # the other pins are kept
    assert not [line for line in used if line.lower().startswith("pyspark")]
    cached = node["keras_home"] / "models" / WEIGHTS_URI.rsplit("/", 1)[1]
    assert cached.read_bytes() == b"h5 weights"
    assert "fruits-bootstrap" in first.stdout and "done" in first.stdout.splitlines()[-1]


def test_bootstrap_installs_from_the_synced_wheelhouse_and_no_index(node: dict[str, Any]) -> None:
    runs = [_bootstrap(node, *BOOTSTRAP_ARGS) for _ in range(2)]

    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    aws_calls = (node["calls"] / "aws.log").read_text().splitlines()
    syncs = [line.split() for line in aws_calls if line.startswith("aws s3 sync")]
    assert [sync[:5] for sync in syncs] == [["aws", "s3", "sync", "--only-show-errors", WHEELHOUSE_URI]] * 2
    synced_dirs = [sync[5] for sync in syncs]
    calls = (node["calls"] / "log").read_text().splitlines()
    # Every pip call that could fetch a package (all but `--version` and `show`) is an install, one per run.
    pip_calls = [line for line in calls if line.startswith("python3.11 -m pip") and line.split()[3] not in ("--version", "show")]
    installs = [line for line in pip_calls if line.split()[3] == "install"]
    assert len(installs) == len(pip_calls) == 2
    for install in installs:
        words = install.split()
        assert "--no-index" in words  # never an install that may reach a package index
        assert not {"--index-url", "-i", "--extra-index-url"} & set(words)
        assert "--only-binary=:all:" in words  # nothing is built on the nodes
    # pip looked only in the directory the wheelhouse was synced to, and found its wheels there.
    assert (node["calls"] / "find-links-dirs").read_text().splitlines() == synced_dirs
    assert sorted((node["calls"] / "find-links-listing.txt").read_text().split()) == sorted(FAKE_WHEELS)
    # Staged under TMPDIR (on disk on the nodes, not the /tmp tmpfs) and removed afterwards.
    assert all(Path(d).is_relative_to(node["tmpdir"]) for d in synced_dirs)
    assert list(node["tmpdir"].iterdir()) == []
    assert f"syncing {WHEELHOUSE_URI}" in runs[0].stdout and "from 2 wheels, no package index" in runs[0].stdout


def test_bootstrap_stops_on_an_empty_wheelhouse_before_pip(node: dict[str, Any]) -> None:
    missing = f"s3://{BUCKET}/bootstrap/wheelhouse-never-uploaded/"
    result = _bootstrap(node, *BOOTSTRAP_ARGS[:3], missing)

    assert result.returncode == 1
    assert f"ERROR: no wheels under {missing}" in result.stdout
    assert "pip install" not in (node["calls"] / "log").read_text()
    assert list(node["tmpdir"].iterdir()) == []


def test_bootstrap_fails_if_pyspark_got_installed(node: dict[str, Any]) -> None:
    result = _bootstrap(node, *BOOTSTRAP_ARGS, FAKE_PYSPARK_INSTALLED="1")

    assert result.returncode == 1
    assert "pip installed pyspark" in result.stdout


def test_bootstrap_needs_its_four_arguments(node: dict[str, Any]) -> None:
    result = _bootstrap(node, *BOOTSTRAP_ARGS[:3])  # the old three-argument call

    assert result.returncode != 0
    assert "usage: bootstrap.sh WHEEL_URI CONSTRAINTS_URI WEIGHTS_URI WHEELHOUSE_URI" in result.stderr
    assert not (node["calls"] / "aws.log").exists()  # nothing fetched
