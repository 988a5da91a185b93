"""Helpers shared by the AWS-side tests (tests/infra, tests/cli): the test bucket, JSON output, no network."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
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
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *[f"Provides-Extra: {e}" for e in extras],
        *[f"Requires-Dist: {r}" for r in requires],
    ]
    path = directory / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in (files or {}).items():
            wheel.writestr(member, text)
        wheel.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")
        wheel.writestr(
            f"{dist}.dist-info/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
        )
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def constraint_pins(root: Path) -> dict[str, str]:
    """name -> version from constraints.txt (the pins the scripts must honour)."""
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (root / "constraints.txt").read_text(), re.M))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundled_pip_wheel() -> Path:
    """The genuine pip wheel CPython bundles for ensurepip: available offline wherever Python is."""
    import ensurepip

    (wheel,) = (Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl")
    return wheel


def write_lock(wheelhouse: Path, project: Path) -> Path:
    """requirements.lock as build_wheelhouse.sh writes it: name==version --hash=sha256:... per wheel."""

    def pin(wheel: Path, extras: str = "") -> str:
        name, version = wheel.name.split("-")[:2]
        return f"{name.replace('_', '-').lower()}{extras}=={version} --hash=sha256:{sha256(wheel)}"

    lines = [pin(w) for w in sorted(wheelhouse.glob("*.whl"))] + [pin(project, "[keras]")]
    lock = wheelhouse / "requirements.lock"
    lock.write_text("# test lock\n" + "\n".join(lines) + "\n")
    return lock


def small_wheelhouse(wheelhouse: Path, dist: Path) -> tuple[Path, Path]:
    """The real pip wheel, minimal wheels for the project and two dependencies, and their lock.

    Returns (project wheel, lock). The project imports as `fruits` and depends on an `onnxruntime`
    stand-in, so `import fruits, onnxruntime` works wherever they are installed.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundled_pip_wheel(), wheelhouse)
    fake_wheel(wheelhouse, "onnxruntime", "1.0", files={"onnxruntime/__init__.py": "__version__ = 'stub'\n"})
    fake_wheel(wheelhouse, "fruitsdep-keras", "1.0")
    project = fake_wheel(
        dist,
        "fruits",
        "0.1.0",
        requires=["onnxruntime", 'fruitsdep-keras; extra == "keras"'],
        extras=["keras"],
        files={"fruits/__init__.py": "__version__ = '0.1.0'\n"},
    )
    return project, write_lock(wheelhouse, project)


def put_labelled_images(s3, bucket: str, per_class: dict[str, int], prefix: str = "images/") -> None:
    for label, count in per_class.items():
        for i in range(count):
            s3.put_object(Bucket=bucket, Key=f"{prefix}{label}/r_{i}_100.jpg", Body=b"\xff\xd8 jpeg bytes")


def make_bucket(s3, bucket: str) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
