"""infra/bootstrap.sh on a fake EMR node, with real pip: S3 is a directory, `aws`, `sudo` and `dnf` are stubs.

The node's Python is a fresh venv without pip (an emr-spark-8.x node's Python 3.11 may have none);
the wheelhouse holds the real pip wheel that ships inside CPython (ensurepip's), and minimal wheels
for the project and its dependencies. pip really installs them with --require-hashes, so a tampered
lock, project wheel or pip wheel is refused by the code that would refuse it on a node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aws_support import (
    BUCKET,
    REGION,
    WEIGHTS_URI,
    WHEELHOUSE_URI,
    bundled_pip_wheel,
    fake_wheel,
    sha256,
    small_wheelhouse,
    write_lock,
)

ROOT = Path(__file__).resolve().parents[2]
WHEEL_URI = f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\nset -eu\n" + body)
    path.chmod(0o755)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    s3, bin_dir, calls, tmpdir = tmp_path / "s3", tmp_path / "bin", tmp_path / "calls", tmp_path / "var-tmp"
    wheelhouse = s3 / BUCKET / "bootstrap" / "wheelhouse"
    for d in (wheelhouse, s3 / BUCKET / "models" / "keras", bin_dir, calls, tmpdir):
        d.mkdir(parents=True)
    project, lock = small_wheelhouse(wheelhouse, s3 / BUCKET / "bootstrap")
    (s3 / BUCKET / WEIGHTS_URI.removeprefix(f"s3://{BUCKET}/")).write_bytes(b"h5 weights")

    venv = tmp_path / "node-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python3.11"
    assert python.exists()

    _stub(bin_dir, "sudo", 'exec "$@"\n')
    _stub(bin_dir, "dnf", f'echo "dnf $*" >> {calls}/dnf.log\n')
    # `aws s3 cp|sync SRC DST --region R --only-show-errors`; a missing prefix syncs nothing and succeeds, as on S3.
    # `aws secretsmanager get-secret-value ...` prints the secret the test wrote to secret.json.
    _stub(
        bin_dir,
        "aws",
        f"""echo "aws $*" >> {calls}/aws.log
if [ "$1" = secretsmanager ]; then cat {tmp_path}/secret.json; exit 0; fi
op="$2"; src="{s3}/${{3#s3://}}"; dst="$4"
case "$op" in
  cp) cp "$src" "$dst" ;;
  sync) mkdir -p "$dst"; if [ -d "$src" ]; then cp -R "$src/." "$dst/"; fi ;;
  *) echo "aws stub: no $op" >&2; exit 2 ;;
esac
""",
    )
    # EMR's instance.json, as on the primary node (a test makes it a task node).
    (tmp_path / "instance.json").write_text(json.dumps({"isMaster": True, "instanceGroupId": "ig-PRIMARY"}))
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KERAS_HOME": str(tmp_path / "home" / ".keras"),
        "TMPDIR": str(tmpdir),
        "EMR_INSTANCE_INFO": str(tmp_path / "instance.json"),
    }
    args = {
        "--region": REGION,
        "--python": str(python),
        "--wheel": WHEEL_URI,
        "--wheelhouse": WHEELHOUSE_URI,
        "--lock-sha256": sha256(lock),
        "--weights": WEIGHTS_URI,
    }
    return {
        "env": env,
        "calls": calls,
        "args": args,
        "python": python,
        "wheelhouse": wheelhouse,
        "project": project,
        "keras_home": tmp_path / "home" / ".keras",
        "tmpdir": tmpdir,
        "home": tmp_path,
    }


def bootstrap(node: dict[str, Any], **changes: str | None) -> subprocess.CompletedProcess:
    args = {**node["args"], **changes}
    argv = [item for name, value in args.items() if value is not None for item in (name, value)]
    return subprocess.run(
        ["bash", str(ROOT / "infra" / "bootstrap.sh"), *argv],
        capture_output=True,
        text=True,
        env=node["env"],
        timeout=120,
    )


def installed(node: dict[str, Any]) -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    # The node's environment: no PYTHONPATH from the test run may add distributions, and no current
    # directory either (`python -c` puts it on sys.path: the checkout's fruits.egg-info would count).
    out = subprocess.run(
        [str(node["python"]), "-c", code], capture_output=True, text=True, check=True, env=node["env"], cwd=node["home"]
    ).stdout
    return json.loads(out)


def test_installs_the_locked_wheels_with_hashes_into_the_releases_python(node: dict[str, Any]) -> None:
    first, second = bootstrap(node), bootstrap(node)  # idempotent: twice in a row

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert installed(node) == {
        "fruits": "0.1.0",
        "onnxruntime": "1.0",
        "fruitsdep-keras": "1.0",
        "pip": bundled_pip_wheel().name.split("-")[1],
    }
    assert "fruits 0.1.0 onnxruntime stub" in first.stdout
    assert "installing requirements.lock (4 wheels, hashes required, no package index)" in first.stdout
    cached = node["keras_home"] / "models" / WEIGHTS_URI.rsplit("/", 1)[1]
    assert cached.read_bytes() == b"h5 weights"
    assert not (node["calls"] / "dnf.log").exists()  # the release brings its Python: nothing from dnf
    assert list(node["tmpdir"].iterdir()) == []  # staged on disk under TMPDIR, then removed


def test_every_s3_call_names_the_region(node: dict[str, Any]) -> None:
    assert bootstrap(node).returncode == 0
    calls = (node["calls"] / "aws.log").read_text().splitlines()

    assert [c.split()[2] for c in calls] == ["sync", "cp", "cp"]  # wheelhouse, wheel, weights
    assert all(c.endswith(f"--region {REGION} --only-show-errors") for c in calls), calls


def test_a_lock_other_than_the_requests_is_refused_before_pip_runs(node: dict[str, Any]) -> None:
    lock = node["wheelhouse"] / "requirements.lock"
    lock.write_text(lock.read_text() + "evil==1.0 --hash=sha256:" + "0" * 64 + "\n")  # someone edited the bucket's copy
    result = bootstrap(node)

    assert result.returncode == 1
    assert f"the cluster request says {node['args']['--lock-sha256']}: refusing to install" in result.stdout
    assert "fruits" not in installed(node)


def test_a_tampered_project_wheel_is_refused_by_pip(node: dict[str, Any]) -> None:
    tampered = fake_wheel(
        node["project"].parent,
        "fruits",
        "0.1.0",
        requires=["onnxruntime"],
        extras=["keras"],
        files={"fruits/__init__.py": "import os  # not what was built\n"},
    )
    assert tampered == node["project"]
    result = bootstrap(node)

    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert "fruits" not in installed(node)


def test_a_pip_wheel_the_lock_does_not_pin_is_never_run(node: dict[str, Any]) -> None:
    (pip_wheel,) = node["wheelhouse"].glob("pip-*.whl")
    fake_wheel(
        node["wheelhouse"], "pip", pip_wheel.name.split("-")[1], files={"pip/__main__.py": "raise SystemExit(9)\n"}
    )
    result = bootstrap(node)

    assert result.returncode == 1
    assert f"{pip_wheel.name} is not the pip wheel requirements.lock pins: refusing to run it" in result.stdout


def test_pyspark_in_the_lock_fails_the_bootstrap(node: dict[str, Any]) -> None:
    pyspark = fake_wheel(node["wheelhouse"], "pyspark", "4.1.1")
    lock = write_lock(node["wheelhouse"], node["project"])
    assert "pyspark==4.1.1" in lock.read_text()
    result = bootstrap(node, **{"--lock-sha256": sha256(lock)})

    assert result.returncode == 1 and pyspark.exists()
    assert "pip installed pyspark; it would shadow EMR's Spark" in result.stdout


def test_no_python_of_the_release_stops_with_a_clear_error_and_no_dnf(node: dict[str, Any]) -> None:
    result = bootstrap(node, **{"--python": "/usr/bin/python3.11-not-here"})

    assert result.returncode == 1
    assert "/usr/bin/python3.11-not-here is not on this node: the release should bring it" in result.stdout
    assert not (node["calls"] / "dnf.log").exists() and not (node["calls"] / "aws.log").exists()


def test_an_empty_wheelhouse_stops_before_pip(node: dict[str, Any]) -> None:
    result = bootstrap(node, **{"--wheelhouse": f"s3://{BUCKET}/bootstrap/wheelhouse-never-uploaded/"})

    assert result.returncode == 1
    assert "no requirements.lock under s3://" in result.stdout
    assert "fruits" not in installed(node)
    assert list(node["tmpdir"].iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"--lock-sha256": None}, "missing LOCK_SHA256"), ({"--constraints": "x"}, "unknown argument --constraints")],
)
def test_arguments_are_named_and_all_required(node: dict[str, Any], changes: dict, message: str) -> None:
    result = bootstrap(node, **changes)

    assert result.returncode == 2
    assert message in result.stderr and "usage: bootstrap.sh --region REGION" in result.stderr
    assert not (node["calls"] / "aws.log").exists()  # nothing fetched


SECRET_ARN = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:fruits/mlflow-AbCdEf"


def test_the_mlflow_secret_becomes_a_private_credentials_file_and_is_never_logged(node: dict[str, Any]) -> None:
    (node["home"] / "secret.json").write_text('{"username": "fruits-jobs", "password": "pa55 w0rd"}')
    result = bootstrap(node, **{"--mlflow-secret": SECRET_ARN})

    assert result.returncode == 0, result.stdout + result.stderr
    credentials = node["home"] / ".mlflow" / "credentials"
    # MLflow's own file (mlflow.utils.credentials reads [mlflow] mlflow_tracking_username/password).
    assert (
        credentials.read_text()
        == "[mlflow]\nmlflow_tracking_username = fruits-jobs\nmlflow_tracking_password = pa55 w0rd\n"
    )
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert "pa55" not in result.stdout + result.stderr
    (call,) = [c for c in (node["calls"] / "aws.log").read_text().splitlines() if "secretsmanager" in c]
    assert call.split()[1:3] == ["secretsmanager", "get-secret-value"]
    assert f"--region {REGION}" in call and f"--secret-id {SECRET_ARN}" in call


def test_the_mlflow_secret_never_reaches_core_or_spot_task_nodes(node: dict[str, Any]) -> None:
    """Only the primary runs the client-mode driver: the other nodes neither fetch nor write the credentials."""
    (node["home"] / "secret.json").write_text('{"username": "fruits-jobs", "password": "pa55 w0rd"}')
    (node["home"] / "instance.json").write_text(json.dumps({"isMaster": False, "instanceGroupId": "ig-TASK"}))
    result = bootstrap(node, **{"--mlflow-secret": SECRET_ARN})

    assert result.returncode == 0, result.stdout + result.stderr
    assert not (node["home"] / ".mlflow").exists()
    assert "secretsmanager" not in (node["calls"] / "aws.log").read_text()
    assert "not the primary node" in result.stdout


def test_a_secret_without_username_and_password_fails_the_bootstrap(node: dict[str, Any]) -> None:
    (node["home"] / "secret.json").write_text('"just-a-password"')
    result = bootstrap(node, **{"--mlflow-secret": SECRET_ARN})

    assert result.returncode == 1
    assert 'is not a JSON secret with "username" and "password"' in result.stdout
    assert not (node["home"] / ".mlflow" / "credentials").exists()
