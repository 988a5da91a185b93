"""The s3a jars are checked by sha256 before Spark puts them on a classpath (issue 24, finding 14).

The pins were computed from the jars `make setup` extracted from sagemaker-pyspark 1.4.5; the
positive test hashes those real jars. The negative ones give pip a tampered copy of that source
package from a local directory (no index), as a compromised mirror would.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from fruits.exceptions import FruitsError
from fruits.settings import Settings
from fruits.spark import S3A_JARS, fetch_s3a_jars

PROJECT_JARS = Path(__file__).resolve().parents[2] / ".fruits" / "jars"


def test_the_pins_are_the_two_jars_s3a_needs() -> None:
    assert set(S3A_JARS) == {"hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar"}
    assert all(len(digest) == 64 for digest in S3A_JARS.values())


@pytest.mark.skipif(
    not all((PROJECT_JARS / name).is_file() for name in S3A_JARS), reason="`make setup` fetches the jars"
)
def test_the_jars_make_setup_fetched_match_their_pins() -> None:
    settings = Settings.load(env={}, state_dir=PROJECT_JARS.parent)
    assert fetch_s3a_jars(settings) == f"s3a jars: present in {PROJECT_JARS}, sha256 checked"


def test_a_changed_cached_jar_is_refused(tmp_path: Path) -> None:
    jars = tmp_path / "state" / "jars"
    jars.mkdir(parents=True)
    for name in S3A_JARS:
        (jars / name).write_bytes(b"PK\x03\x04 not the released jar")
    with pytest.raises(FruitsError, match=r"hadoop-aws-3.3.1.jar has sha256 [0-9a-f]{64}, not the 6be50ad8"):
        fetch_s3a_jars(Settings.load(env={}, state_dir=tmp_path / "state"))


@pytest.mark.slow
def test_a_tampered_source_package_leaves_no_jar_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    files = {name: b"PK\x03\x04 tampered " + name.encode() for name in S3A_JARS}
    setup = b'from setuptools import setup\nsetup(name="sagemaker_pyspark", version="1.4.5")\n'
    with tarfile.open(links / "sagemaker_pyspark-1.4.5.tar.gz", "w:gz") as sdist:
        for path, data in {"setup.py": setup, **{f"deps/jars/{n}": d for n, d in files.items()}}.items():
            member = tarfile.TarInfo(f"sagemaker_pyspark-1.4.5/{path}")
            member.size = len(data)
            sdist.addfile(member, io.BytesIO(data))
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # the venv's setuptools reads setup.py: no index needed
    state = tmp_path / "state"
    # A fresh state dir whose jars_dir is its own (not the project's cache).
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FruitsError, match=r"has sha256 .* refusing it"):
        fetch_s3a_jars(Settings.load(env={}, state_dir=state))
    assert not (state / "jars").exists() or list((state / "jars").iterdir()) == []
