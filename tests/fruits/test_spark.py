"""The session factory: which JVM a job gets (the rest of fruits.spark is exercised by every Spark test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fruits.settings import Settings
from fruits.spark import session_conf

ROOT = Path(__file__).resolve().parents[2]
C1_ONLY = "-XX:TieredStopAtLevel=1"  # the JIT's quick compiler only (docs/results.md, "Fit end to end")
SERIAL_GC = "-XX:+UseSerialGC"  # a short job's JVM: the compact collector (docs/results.md, "Fit end to end")
JVM_ARGUMENTS = """
import json, sys
from fruits.settings import Settings
from fruits.spark import get_spark
spark = get_spark(Settings.load(state_dir=sys.argv[1]), "jvm-arguments", short_job=True)
bean = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
print(json.dumps({"jvm": [str(a) for a in bean.getInputArguments()],
                  "splits": spark.conf.get("spark.sql.files.minPartitionNum"),
                  "cores": spark.sparkContext.defaultParallelism}))
spark.stop()
"""


def test_a_short_job_starts_a_small_jvm_with_the_quick_compiler_only(tmp_path: Path) -> None:
    """Asked of the JVM itself: a new local session of a short job (the fit's, the refit's)."""
    done = subprocess.run(
        [sys.executable, "-c", JVM_ARGUMENTS, str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    arguments = reported["jvm"]
    assert int(reported["splits"]) == 4 * reported["cores"]  # its images read in 4 equal splits a core
    assert C1_ONLY in arguments
    assert SERIAL_GC in arguments
    assert "-Xmx1g" in arguments  # the short job's heap, not the stream's 4g
    assert any(a.startswith("-Dlog4j2.configurationFile=") for a in arguments)  # the quiet log is kept


def test_only_short_local_jobs_get_it() -> None:
    local = Settings.load(env={})
    assert C1_ONLY in session_conf(local, short_job=True)["spark.driver.extraJavaOptions"]
    assert C1_ONLY not in session_conf(local)["spark.driver.extraJavaOptions"]  # the stream's
    under_spark_submit = Settings.load(env={"PYSPARK_GATEWAY_PORT": "4711"})  # EMR: the cluster's JVM options
    assert "spark.driver.extraJavaOptions" not in session_conf(under_spark_submit, short_job=True)


def test_a_cluster_managers_executors_get_the_drivers_aws_credentials_and_can_reach_it() -> None:
    """Executors started by a cluster manager have an environment of their own (tests/cluster runs them)."""
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDCLUSTEREXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "cluster-secret-example",
        "AWS_SESSION_TOKEN": "cluster-token-example",
    }
    cluster = session_conf(Settings.load(env={**env, "FRUITS_SPARK_MASTER": "spark://10.0.0.5:7077"}))
    assert {k: v for k, v in cluster.items() if k.startswith("spark.executorEnv.AWS")} == {
        f"spark.executorEnv.{name}": value for name, value in env.items()
    }
    assert "spark.driver.host" not in cluster and "spark.driver.bindAddress" not in cluster  # not loopback
    local = session_conf(Settings.load(env=env))  # one process: the executors share the driver's environment
    assert not any(k.startswith("spark.executorEnv.AWS") for k in local)
    assert (local["spark.driver.host"], local["spark.driver.bindAddress"]) == ("127.0.0.1", "127.0.0.1")
    emr = session_conf(Settings.load(env={**env, "PYSPARK_GATEWAY_PORT": "4711", "FRUITS_SPARK_MASTER": "yarn"}))
    assert not any(k.startswith("spark.executorEnv.AWS") for k in emr)  # the nodes' instance profile
    assert not any(value in repr(Settings.load(env=env)) for value in env.values())  # never printed


def test_the_local_heap_is_sized_to_the_job_unless_set() -> None:
    def heap(env: dict[str, str], short_job: bool) -> str | None:
        return session_conf(Settings.load(env=env), short_job=short_job).get("spark.driver.memory")

    assert (heap({}, short_job=True), heap({}, short_job=False)) == ("1g", "4g")
    assert (
        heap({"FRUITS_DRIVER_MEMORY": "3g"}, short_job=True),
        heap({"FRUITS_DRIVER_MEMORY": "3g"}, short_job=False),
    ) == ("3g", "3g")
    assert heap({"PYSPARK_GATEWAY_PORT": "4711"}, short_job=True) is None  # EMR: the cluster's conf sizes the driver
