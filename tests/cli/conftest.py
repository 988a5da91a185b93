"""Fixtures for the command-line tests: no network, a project bucket on moto, a real MLflow server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (sqlite store) on 127.0.0.1: what `submit` asks for the registered model."""
    state = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
         "--artifacts-destination", str(state / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=(state / "server.log").open("w"), env=env,
    )  # fmt: skip

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=120, what="the MLflow server to answer /health", process=server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
