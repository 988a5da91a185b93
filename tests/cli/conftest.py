"""Fixtures for the command-line tests: no network, a project bucket on moto, a real MLflow server."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import boto3
import pytest

from aws_support import BUCKET, REGION, make_bucket, no_network, put_labelled_images  # noqa: F401  (no_network: a fixture)
from support import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Two classes of labelled images: more than the fit's 300 (its PCA keeps 300 components).
LABELLED = {"Apple Red 1": 160, "Kumquats": 160}


@pytest.fixture(scope="session")
def project_bucket(moto_server: str) -> str:
    """The stack's bucket on moto as docs/aws.md leaves it before `submit`: the entry script, the venv
    archive, and the labelled images under images/<class>/."""
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    make_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="bootstrap/spark_entry.py", Body=(ROOT / "cli" / "spark_entry.py").read_bytes())
    s3.put_object(Bucket=BUCKET, Key="bootstrap/venv/fruits-venv.tar.gz", Body=b"archive")
    put_labelled_images(s3, BUCKET, LABELLED)
    return BUCKET


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mlflow(state: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{state / 'mlflow.db'}",
            "--artifacts-destination",
            str(state / "artifacts"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(state / "server.log").open("w"),
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=120, what="the MLflow server to answer /health", process=server)
    except BaseException:
        server.terminate()
        raise
    return url, server


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (sqlite store) on 127.0.0.1: what `submit` asks for the registered model."""
    url, server = _start_mlflow(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield url
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `mlflow server --app-name basic-auth`, set up as docs/aws.md runs it: the user store in a database
    of its own (sqlite here, PostgreSQL there), every user reads, a user edits what it created. `fruits-jobs`
    (the fit, the refit) registered fruits-pca@champion; `fruits-stream` never creates anything: read-only."""
    state = tmp_path_factory.mktemp("mlflow-auth-server")
    users = {
        "admin": secrets.token_urlsafe(12),
        "fruits-jobs": secrets.token_urlsafe(12),
        "fruits-stream": secrets.token_urlsafe(12),
    }
    config = state / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{state / 'basic_auth.db'}\n"
        f"admin_username = admin\nadmin_password = {users['admin']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24)}
    url, server = _start_mlflow(state, "--app-name", "basic-auth", env=env)
    try:
        from mlflow import MlflowClient
        from mlflow.server.auth.client import AuthServiceClient

        def as_user(name: str) -> mock._patch:
            return mock.patch.dict(
                os.environ, {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": users[name]}
            )

        with as_user("admin"):
            for name in ("fruits-jobs", "fruits-stream"):
                AuthServiceClient(url).create_user(name, users[name])
        with as_user("fruits-jobs"):
            registry = MlflowClient(tracking_uri=url, registry_uri=url)
            registry.create_registered_model("fruits-pca")
            version = registry.create_model_version("fruits-pca", source="s3://fruits/mlflow/1/model", run_id=None)
            registry.set_registered_model_alias("fruits-pca", "champion", version.version)
        yield {"url": url, **{f"password:{name}": password for name, password in users.items()}}
    finally:
        _stop(server)
