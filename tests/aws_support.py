"""Helpers shared by the AWS-side tests (tests/infra, tests/cli): the test bucket, JSON output, no network."""

from __future__ import annotations

import json
import re
import socket
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def fake_wheel(
    directory: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    requires: Sequence[str] = (),
    extras: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
) -> Path:
    """A minimal valid wheel: enough metadata for pip to resolve and install it, plus `files` (path -> text)."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = [
        "Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
        *[f"Provides-Extra: {e}" for e in extras], *[f"Requires-Dist: {r}" for r in requires],
    ]  # fmt: skip
    path = directory / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in (files or {}).items():
            wheel.writestr(member, text)
        wheel.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def constraint_pins(root: Path) -> dict[str, str]:
    """name -> version from constraints.txt (the pins the scripts must honour)."""
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (root / "constraints.txt").read_text(), re.M))
