"""infra/build_venv_archive.sh with real pip, offline, on a small wheelhouse.

The archive is unpacked the way spark.archives does (a directory named `environment`) and its
Python run: with WORKER_PYTHON_PREFIX=/usr its interpreter link is /usr/bin/python3.11, which this
machine has too (Debian's; the EMR Serverless workers have Amazon Linux 2023's at the same path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from aws_support import fake_wheel, small_wheelhouse

ROOT = Path(__file__).resolve().parents[2]
WORKER_PYTHON = Path("/usr/bin/python3.11")


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Any]:
    project, lock = small_wheelhouse(tmp_path / "wheelhouse", tmp_path / "dist")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHON=sys.executable)
    return {
        "wheelhouse": tmp_path / "wheelhouse",
        "project": project,
        "lock": lock,
        "env": env,
        "out": tmp_path / "fruits-venv.tar.gz",
        "tmp": tmp_path,
    }


def build(built: dict[str, Any], **env: str) -> subprocess.CompletedProcess:
    argv = [
        "bash",
        str(ROOT / "infra" / "build_venv_archive.sh"),
        str(built["wheelhouse"]),
        str(built["project"]),
        str(built["out"]),
    ]
    return subprocess.run(argv, capture_output=True, text=True, env={**built["env"], **env}, timeout=180)


@pytest.mark.skipif(not WORKER_PYTHON.exists(), reason="needs a /usr/bin/python3.11 to run the unpacked archive")
def test_the_archive_unpacks_into_a_python_that_imports_the_project(built: dict[str, Any]) -> None:
    result = build(built)
    assert result.returncode == 0, result.stderr

    environment = built["tmp"] / "environment"  # spark.archives=...#environment
    with tarfile.open(built["out"]) as archive:
        link = archive.getmember("bin/python3.11")
        assert link.issym() and link.linkname == "/usr/bin/python3.11"  # the workers' Python, not this machine's
        assert archive.getmember("bin/python").linkname == "python3.11"
        config = archive.extractfile("pyvenv.cfg").read().decode()
        assert "home = /usr/bin\n" in config and "executable = /usr/bin/python3.11\n" in config
        assert not [m.name for m in archive.getmembers() if "pyspark" in m.name.lower()]
        archive.extractall(environment, filter="tar")
    out = subprocess.run(
        [
            str(environment / "bin" / "python"),
            "-c",
            "import fruits, onnxruntime, sys; print(fruits.__version__, onnxruntime.__version__, sys.prefix)",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.split()
    assert out[:2] == ["0.1.0", "stub"]
    assert Path(out[2]) == environment  # the unpacked venv is the interpreter's prefix: its site-packages are used
    assert "aws s3 cp" in result.stderr and "bootstrap/venv/fruits-venv.tar.gz" in result.stderr


def test_a_tampered_project_wheel_is_refused(built: dict[str, Any]) -> None:
    fake_wheel(built["project"].parent, "fruits", "0.1.0", files={"fruits/__init__.py": "import os\n"})
    result = build(built)

    assert result.returncode != 0 and "DO NOT MATCH THE HASHES" in result.stderr
    assert not built["out"].exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"out": "venv.zip"}, "OUT must end in .tar.gz"),
        ({"wheelhouse": "missing"}, "no requirements.lock in"),
    ],
)
def test_guards_before_building(built: dict[str, Any], change: dict[str, str], message: str) -> None:
    for key, name in change.items():
        built[key] = built["tmp"] / name
    result = build(built)
    assert result.returncode == 2 and message in result.stderr


def test_refuses_a_python_unlike_the_workers(built: dict[str, Any]) -> None:
    other = built["tmp"] / "python-elsewhere"
    other.write_text('#!/usr/bin/env bash\necho "3.12 darwin arm64"\n')
    other.chmod(0o755)
    result = build(built, PYTHON=str(other))
    assert result.returncode == 2 and "(got: 3.12 darwin arm64)" in result.stderr
