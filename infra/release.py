"""The EMR releases the launchers support, and what each one runs.

Source: the AWS EMR release guide, "AWS runtime for Apache Spark" (emr-spark-8.1.0 and
emr-spark-8.0.0 release pages; see /work/notes/aws-facts.md section 1 for the quotes). The local
pin of pyspark must be the default release's Spark (tests/infra/test_release.py ties the two).

What is not in AWS's documentation and is our inference, marked so in the table: the path of
PySpark's Python 3.11 on the nodes. AWS says PySpark defaults to 3.11 on emr-spark-8.x and that
the system python3 (3.9) is not supported; it does not print the path. /usr/bin/python3.11 is
where Amazon Linux 2023 installs its python3.11 package; the bootstrap stops with a clear error if
the interpreter is not there rather than installing another one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fruits.exceptions import FruitsError
from infra.defaults import DEFAULT_RELEASE


@dataclass(frozen=True)
class Release:
    label: str
    spark: str  # the Apache Spark version under the "-amzn-N" suffix
    scala: str
    python: str  # PySpark's default Python on the nodes and on EMR Serverless workers
    delta: str
    released: dt.date
    end_of_support: dt.date
    long_term_support: bool
    # Said on every plan that uses this release; empty for the recommended one.
    warning: str = ""

    def describe(self) -> str:
        support = "long-term support" if self.long_term_support else "support"
        return (
            f"release: {self.label} (Spark {self.spark}, Scala {self.scala}, Python {self.python}, Delta {self.delta}; "
            f"{support} until {self.end_of_support})"
        )

    @property
    def node_python(self) -> str:
        """Inference (see the module docstring): Amazon Linux 2023's path for that Python."""
        return f"/usr/bin/python{self.python}"

    @property
    def python_tag(self) -> str:
        """The wheel tag of that Python (cp311): what the wheelhouse and the venv archive are built for."""
        return "cp" + self.python.replace(".", "")


RELEASES: dict[str, Release] = {
    release.label: release
    for release in (
        Release(
            label="emr-spark-8.1.0",
            spark="4.1.1",
            scala="2.13.17",
            python="3.11",
            delta="4.2.0",
            released=dt.date(2026, 9, 8),
            end_of_support=dt.date(2029, 9, 7),
            long_term_support=True,
        ),
        Release(
            label="emr-spark-8.0.0",
            spark="4.0.2",
            scala="2.13.16",
            python="3.11",
            delta="4.0.0",
            released=dt.date(2026, 5, 21),
            # AWS's rendered release page; the page's source on GitHub says 2028-05-20: re-check.
            end_of_support=dt.date(2027, 5, 20),
            long_term_support=False,
            warning=(
                "emr-spark-8.0.0 runs Spark 4.0.2 (upstream Spark 4.0 is past its end of life; EMR support ends "
                "2027-05-20), while the project is tested on pyspark 4.1.1: use emr-spark-8.1.0 (long-term support)"
            ),
        ),
    )
}


def release(label: str, today: dt.date | None = None) -> Release:
    """The supported release named `label`; an unknown or unsupported label is an error listing the known ones.

    `today` is only compared with the end of support (past it, the release is refused).
    """
    known = RELEASES.get(label)
    if known is None:
        raise FruitsError(
            f"--release-label {label!r} is not supported: use one of {', '.join(RELEASES)} "
            f"(default {DEFAULT_RELEASE}, Spark {RELEASES[DEFAULT_RELEASE].spark}; the jobs need Spark 4 and Python 3.11)"
        )
    if today is not None and today > known.end_of_support:
        raise FruitsError(f"{label} reached its end of support on {known.end_of_support}: use {DEFAULT_RELEASE}")
    return known
