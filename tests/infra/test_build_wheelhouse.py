"""infra/build_wheelhouse.sh with real pip, offline: a local directory of minimal wheels stands in for the index."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aws_support import constraint_pins, fake_wheel

ROOT = Path(__file__).resolve().parents[2]
PINS = constraint_pins(ROOT)


@pytest.fixture
def wheel_index(tmp_path: Path) -> dict[str, Any]:
    """A local directory of wheels instead of a package index: the script runs real pip, offline."""
    links = tmp_path / "links"
    links.mkdir()
    fake_wheel(links, "fruitsdep-base", "1.0", "py3-none-any")
    fake_wheel(links, "fruitsdep-pure", "1.0", "py3-none-any")
    # Like tensorflow-cpu 2.21.0: only a manylinux_2_27 wheel, which AL2023 (glibc 2.34) runs.
    fake_wheel(links, "fruitsdep-native", "1.0", "cp311-cp311-manylinux_2_27_x86_64")
    # Newer, but for a glibc AL2023 does not have, or for another OS: never picked.
    fake_wheel(links, "fruitsdep-native", "1.1", "cp311-cp311-manylinux_2_35_x86_64")
    fake_wheel(links, "fruitsdep-native", "1.2", "cp311-cp311-win_amd64")
    # The bootstrap's own tools, at constraints.txt's pins; newer ones exist and must not be picked.
    for tool in ("pip", "setuptools", "wheel"):
        fake_wheel(links, tool, PINS[tool])
        fake_wheel(links, tool, "999.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", EXTRA_WHEELS=str(links), PYTHON=sys.executable)
    return {"links": links, "env": env, "out": tmp_path / "wheelhouse", "dist": tmp_path / "dist"}


def _project_wheel(dist: Path, keras: Sequence[str]) -> Path:
    dist.mkdir(exist_ok=True)
    requires = ["fruitsdep-base", *(f'{r}; extra == "keras"' for r in keras)]
    return fake_wheel(dist, "fruits", "0.1.0", "py3-none-any", requires, extras=["keras"])


def _build_wheelhouse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = ROOT / "infra" / "build_wheelhouse.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=120)


def test_build_wheelhouse_keeps_the_node_platform_wheels_only(wheel_index: dict[str, Any]) -> None:
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-pure", "fruitsdep-native"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 0, result.stderr
    wheels = sorted(p.name for p in wheel_index["out"].glob("*.whl"))
    assert wheels == sorted(
        [
            "fruitsdep_base-1.0-py3-none-any.whl",
            "fruitsdep_native-1.0-cp311-cp311-manylinux_2_27_x86_64.whl",
            "fruitsdep_pure-1.0-py3-none-any.whl",
            f"pip-{PINS['pip']}-py3-none-any.whl",
            f"setuptools-{PINS['setuptools']}-py3-none-any.whl",
            f"wheel-{PINS['wheel']}-py3-none-any.whl",
        ]
    )  # not the project wheel: it is uploaded per release beside the wheelhouse
    assert {p.name for p in wheel_index["out"].iterdir()} == {*wheels, "requirements.lock"}
    assert "6 wheels" in result.stderr
    assert f"aws s3 sync --delete {wheel_index['out']} s3://<bucket>/bootstrap/wheelhouse/" in result.stderr


def test_the_lock_pins_every_wheel_and_the_project_by_sha256(wheel_index: dict[str, Any]) -> None:
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-pure"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])
    assert result.returncode == 0, result.stderr

    lock = wheel_index["out"] / "requirements.lock"
    pins = [line for line in lock.read_text().splitlines() if not line.startswith("#")]
    expected = {
        "fruitsdep-base==1.0": wheel_index["out"] / "fruitsdep_base-1.0-py3-none-any.whl",
        "fruitsdep-pure==1.0": wheel_index["out"] / "fruitsdep_pure-1.0-py3-none-any.whl",
        f"pip=={PINS['pip']}": wheel_index["out"] / f"pip-{PINS['pip']}-py3-none-any.whl",
        f"setuptools=={PINS['setuptools']}": wheel_index["out"] / f"setuptools-{PINS['setuptools']}-py3-none-any.whl",
        f"wheel=={PINS['wheel']}": wheel_index["out"] / f"wheel-{PINS['wheel']}-py3-none-any.whl",
        "fruits[keras]==0.1.0": project,
    }
    assert sorted(pins) == sorted(
        f"{requirement} --hash=sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        for requirement, path in expected.items()
    )
    # What `fruits emr up` reads from the lock and puts in the request.
    assert f"requirements.lock sha256 {hashlib.sha256(lock.read_bytes()).hexdigest()}" in result.stderr


def test_build_wheelhouse_names_a_package_without_a_wheel(wheel_index: dict[str, Any]) -> None:
    (wheel_index["links"] / "fruitsdep_sdist-1.0.tar.gz").write_bytes(b"sdist")
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-sdist"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 1
    assert "fruitsdep-sdist" in result.stderr
    assert "as an sdist only" in result.stderr and "EXTRA_WHEELS" in result.stderr


def test_build_wheelhouse_refuses_pyspark(wheel_index: dict[str, Any]) -> None:
    fake_wheel(wheel_index["links"], "pyspark", "3.5.5", "py2.py3-none-any")
    fake_wheel(wheel_index["links"], "fruitsdep-sparky", "1.0", "py3-none-any", ["pyspark"])
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-sparky"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 1
    assert "pyspark is in the wheelhouse" in result.stderr


def test_build_wheelhouse_guards_before_downloading(wheel_index: dict[str, Any], tmp_path: Path) -> None:
    project = _project_wheel(wheel_index["dist"], [])
    out = wheel_index["out"]
    out.mkdir()
    (out / "stale-1.0-py3-none-any.whl").write_bytes(b"old")
    not_empty = _build_wheelhouse(str(out), str(project), env=wheel_index["env"])
    assert not_empty.returncode == 2 and "is not empty" in not_empty.stderr

    other_python = tmp_path / "python-elsewhere"
    other_python.write_text('#!/usr/bin/env bash\necho "3.12 darwin arm64"\n')
    other_python.chmod(0o755)
    wrong_host = _build_wheelhouse(
        str(tmp_path / "new"), str(project), env={**wheel_index["env"], "PYTHON": str(other_python)}
    )
    assert wrong_host.returncode == 2 and "(got: 3.12 darwin arm64)" in wrong_host.stderr
    assert not (tmp_path / "new").exists()

    no_wheel = _build_wheelhouse(str(tmp_path / "new"), str(tmp_path / "missing.whl"), env=wheel_index["env"])
    assert no_wheel.returncode == 2 and "no such wheel" in no_wheel.stderr
