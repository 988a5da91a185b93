"""Helpers shared by the AWS-side tests (tests/infra, tests/cli): the test bucket, JSON output, no network."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

ACCOUNT = "123456789012"  # moto's default account id
REGION = "eu-west-3"  # tests/conftest.py's AWS_REGION
BUCKET = f"fruits-{ACCOUNT}-{REGION}"
WEIGHTS_URI = f"s3://{BUCKET}/models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
WHEELHOUSE_URI = f"s3://{BUCKET}/bootstrap/wheelhouse/"


def last_json(out: str) -> dict[str, Any]:
    """The --json contract: the last stdout line is one JSON object."""
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """boto3 pointed at a closed loopback port, and every socket connect recorded and refused."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts
