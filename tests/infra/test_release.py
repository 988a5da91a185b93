"""infra/release.py: the supported EMR releases, and the local Spark pinned to the default one's."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path

import pyspark
import pytest

from fruits.exceptions import FruitsError
from infra.defaults import DEFAULT_RELEASE
from infra.release import RELEASES, release

ROOT = Path(__file__).resolve().parents[2]


def test_the_pinned_pyspark_is_the_default_releases_spark() -> None:
    """What `make test` runs is what production runs: a new default release must move the pin too."""
    spark = RELEASES[DEFAULT_RELEASE].spark
    assert pyspark.__version__ == spark
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"pyspark[sql,ml]=={spark}" in extras["spark"]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    assert pins["pyspark"] == spark


def test_the_default_is_the_long_term_support_spark_4_1_release() -> None:
    default = release(DEFAULT_RELEASE)
    # From the AWS release guide, typed in by hand (not read from the table under test).
    assert (default.label, default.spark, default.scala, default.python) == (
        "emr-spark-8.1.0",
        "4.1.1",
        "2.13.17",
        "3.11",
    )
    assert default.long_term_support and default.end_of_support == dt.date(2029, 9, 7)
    assert default.warning == ""
    assert default.node_python == "/usr/bin/python3.11" and default.python_tag == "cp311"


def test_the_older_spark_4_release_is_accepted_with_its_warning_until_its_end_of_support() -> None:
    older = release("emr-spark-8.0.0", today=dt.date(2027, 5, 20))
    assert older.spark == "4.0.2"
    assert "2027-05-20" in older.warning and "emr-spark-8.1.0" in older.warning
    with pytest.raises(FruitsError, match=r"reached its end of support on 2027-05-20: use emr-spark-8\.1\.0"):
        release("emr-spark-8.0.0", today=dt.date(2027, 5, 21))


@pytest.mark.parametrize("label", ["emr-7.10.0", "emr-8.0.0", "emr-spark-8.2.0", ""])
def test_other_releases_are_refused_with_the_supported_ones_listed(label: str) -> None:
    with pytest.raises(FruitsError, match=r"is not supported: use one of emr-spark-8\.1\.0, emr-spark-8\.0\.0"):
        release(label)
