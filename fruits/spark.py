"""Spark session factory: one function for local[*], s3a:// against an S3-compatible endpoint, and EMR.

- Launched by spark-submit (EMR steps): the master and cluster settings come from spark-submit;
  only the application settings below are added. `s3a://` goes through the release's own S3A
  connector (emr-spark-8.x has no EMRFS; its steps use s3a:// URIs), nothing to set.
- Local: `local[*]`, loopback only, a quiet log, warehouse under the state directory.
- s3a:// (and s3:// outside EMR, through the same S3A filesystem): the hadoop-aws + AWS SDK
  jars that `fruits setup --s3a-jars` caches, pointed at `settings.s3_endpoint_url` (a moto
  server here, or any S3-compatible store) or at AWS itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from fruits.contracts import APP_CONF
from fruits.exceptions import FruitsError
from fruits.settings import Settings

log = logging.getLogger(__name__)

# name -> sha256 of the jar as sagemaker-pyspark 1.4.5 ships it (computed here from the extracted jars):
# a jar on the driver's and executors' classpath runs with the job's credentials, so a changed one is refused.
S3A_JARS = {
    "hadoop-aws-3.3.1.jar": "6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e",
    "aws-java-sdk-bundle-1.11.901.jar": "b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead",
}
# PyPI's source package of sagemaker-pyspark carries both jars (Maven is out of reach here).
S3A_JARS_PACKAGE = "sagemaker-pyspark==1.4.5"
OBJECT_STORES = ("s3://", "s3a://", "s3n://", "gs://", "abfs://", "abfss://")
_LOG4J = Path(__file__).with_name("log4j2.properties")


def needs_s3a(settings: Settings, uris: Iterable[str]) -> bool:
    """Outside spark-submit (EMR brings S3A itself): s3:// or s3a:// in the job's URIs, or an S3 endpoint set."""
    if settings.under_spark_submit:
        return False
    return bool(settings.s3_endpoint_url) or any(str(u).startswith(("s3a://", "s3://")) for u in uris)


# The same for the driver JVM, which runs PCA's SVD: an environment variable of the process that
# starts it (get_spark locally; spark-env on a cluster).
NATIVE_BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1"}
# A short batch job (fit, refit) runs each of its few dozen small Spark jobs once, then exits: the
# JIT's optimizing compiler (C2) spends cores compiling code the job will not run long enough to
# profit from. Its quick compiler (C1) alone cut a local fit from 42 to 35 s (bench/fit.py,
# docs/results.md). The stream keeps the default: it runs the same code for weeks. Local sessions
# only: under spark-submit the driver JVM is already running, started with the cluster's options.
# The serial collector: G1's regions and remembered sets kept the fit's JVM at 1.0 GB of a 1g heap on
# 320 images, the serial one at 0.7 GB (bench/fit.py's peak memory); a short job's pauses on a heap
# that small are short, and its threads compete with the Python workers for the cores anyway.
SHORT_JOB_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# A short job reads its images once, in a few large tasks: with the 64 KB open cost a file (APP_CONF) Spark
# packs the files into splits of up to 128 MB, 6 tasks for 10,000 images here, the last 40% of the
# others, so one core idled for the end of the featurize pass. At least this many splits per core, of about
# equal size (Spark divides the bytes by spark.sql.files.minPartitionNum), keep every core busy to the end.
SHORT_JOB_TASKS_PER_CORE = 4


def on_a_cluster_manager(settings: Settings) -> bool:
    """A master such as spark://HOST:PORT given to a driver we start (not spark-submit's, not local[*]): the
    executors are processes of their own, on other machines, with an environment that is not the driver's."""
    return not settings.under_spark_submit and not (settings.spark_master or "local[*]").startswith("local")


def session_conf(settings: Settings, uris: Iterable[str] = (), *, short_job: bool = False) -> dict[str, str]:
    """The configuration the factory applies; a pure function so it can be checked without a JVM."""
    conf = dict(APP_CONF)
    if not settings.under_spark_submit:
        java_options = [f"-Dlog4j2.configurationFile={_LOG4J.as_uri()}"]
        if short_job:
            java_options.append(SHORT_JOB_JAVA_OPTIONS)
        if not on_a_cluster_manager(settings):  # loopback only; a cluster's executors must reach the driver
            conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
        conf.update(
            {
                "spark.ui.enabled": str(settings.spark_ui).lower(),
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.shuffle.partitions": "4",
                "spark.driver.memory": settings.local_driver_memory(short_job),
                "spark.sql.warehouse.dir": str(settings.state / "spark-warehouse"),
                # log4j's file as a URI: no spaces, so the option survives Spark's whitespace splitting.
                "spark.driver.extraJavaOptions": " ".join(java_options),
            }
        )
    if not settings.under_spark_submit and not any(str(u).startswith(OBJECT_STORES) for u in uris):
        # Each micro-batch re-stats its files; above 32 paths Spark runs a whole Spark job to do
        # it (1-9 s per batch here, competing with the featurizer), where the driver stats local
        # files in milliseconds. Object stores keep Spark's default: a HEAD request per file is
        # slow, and spreading them over the executors is what a cluster is for.
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = "100000"
    if needs_s3a(settings, uris):
        conf.update(s3a_conf(settings))
    if on_a_cluster_manager(settings):
        # The executors read S3 themselves (S3A, the notification source's boto3 GETs) with the credentials
        # of their own environment, which holds none of the driver's: the driver's go with them. Under
        # spark-submit (EMR) the executors have the nodes' instance profile instead.
        conf.update({f"spark.executorEnv.{name}": value for name, value in settings.aws_credentials})
    return conf


def s3a_conf(settings: Settings) -> dict[str, str]:
    jars = [settings.jars_dir / name for name in S3A_JARS]
    missing = [j.name for j in jars if not j.is_file()]
    if missing:
        raise FruitsError(
            f"s3a:// needs {', '.join(missing)} in {settings.jars_dir}: run `fruits setup --s3a-jars` (or `make setup`)"
        )
    classpath = os.pathsep.join(str(j) for j in jars)
    conf = {
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        # hadoop-aws 3.3.1 against Spark's Hadoop 3.4+: these defaults changed format
        # ("60s" vs 60) between versions and must be plain numbers for the older jar.
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        # s3:// means the same bucket through S3A locally, as it does for delta-rs and boto3.
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.threads.keepalivetime": "60",
        "spark.hadoop.fs.s3a.connection.establish.timeout": "30000",
        "spark.hadoop.fs.s3a.connection.timeout": "200000",
        "spark.hadoop.fs.s3a.multipart.purge.age": "86400",
        "spark.hadoop.fs.s3a.path.style.access": "true",
    }
    if settings.s3_endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint_url
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            settings.s3_endpoint_url.startswith("https://")
        ).lower()
        conf["spark.hadoop.fs.s3a.endpoint.region"] = settings.aws_region
    # The JVM reads the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
    # variables itself (temporary credentials included), so no secret is copied into Spark's conf.
    conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = "com.amazonaws.auth.EnvironmentVariableCredentialsProvider"
    return conf


def get_spark(
    settings: Settings, app_name: str = "fruits", uris: Iterable[str] = (), *, short_job: bool = False
) -> SparkSession:
    """Create (or reuse) the session. `uris` are the job's inputs/outputs: s3a:// ones add the s3a setup.
    `short_job`: a batch job that exits within minutes: SHORT_JOB_JAVA_OPTIONS and a short job's heap (a new
    local JVM only), SHORT_JOB_TASKS_PER_CORE splits of its inputs."""
    uris = list(uris)
    if not settings.under_spark_submit:
        if not on_a_cluster_manager(settings):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers must run this interpreter (the venv), not whatever `python3` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in NATIVE_BLAS_ENV.items():
            os.environ.setdefault(key, value)
        settings.state.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name)
    master = None if settings.under_spark_submit else settings.spark_master or "local[*]"  # spark-submit's own wins
    if master:
        builder = builder.master(master)
    for key, value in session_conf(settings, uris, short_job=short_job).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if short_job:  # a runtime setting: it applies under spark-submit too (equal splits suit any cluster)
        splits = SHORT_JOB_TASKS_PER_CORE * spark.sparkContext.defaultParallelism
        spark.conf.set("spark.sql.files.minPartitionNum", str(splits))
    return spark


def hadoop_fs(spark: SparkSession, uri: str):
    """(FileSystem, Path) for any URI Spark can read: the one I/O path for file://, s3a://, s3://."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


@contextlib.contextmanager
def storage_errors(uri: str, action: str) -> Iterator[None]:
    """A storage failure (no such scheme, access denied, unreachable endpoint) as one line."""
    try:
        yield
    except Py4JJavaError as exc:
        cause = str(exc.java_exception.toString()).splitlines()[0]
        raise FruitsError(f"cannot {action} {uri}: {cause}") from None


def qualify(spark: SparkSession, uri: str) -> str:
    """'/abs/dir' -> 'file:/abs/dir', 's3a://b/p/' -> 's3a://b/p': the form Spark writes in `path`."""
    with storage_errors(uri, "resolve"):
        fs, path = hadoop_fs(spark, uri)
        return str(fs.makeQualified(path))


def ensure_dir(spark: SparkSession, uri: str) -> None:
    """Create a directory (or an S3 directory marker) if missing: a stream source must exist."""
    with storage_errors(uri, "create"):
        fs, path = hadoop_fs(spark, uri)
        if not fs.exists(path):
            fs.mkdirs(path)


def path_exists(spark: SparkSession, uri: str) -> bool:
    with storage_errors(uri, "read"):
        fs, path = hadoop_fs(spark, uri)
        return bool(fs.exists(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_s3a_jar(path: Path) -> None:
    """The jar's sha256 must be the one S3A_JARS pins: a changed jar would run with the job's credentials."""
    actual = sha256_of(path)
    if actual != S3A_JARS[path.name]:
        raise FruitsError(
            f"{path} has sha256 {actual}, not the {S3A_JARS[path.name]} of {S3A_JARS_PACKAGE}'s jar: refusing it; "
            "delete it and run `fruits setup --s3a-jars` again"
        )


def fetch_s3a_jars(settings: Settings) -> str:
    """Fetch hadoop-aws + the AWS SDK bundle (s3a:// outside EMR) into the state dir, once, each checked
    against its sha256 (cached jars too). Says what it did."""
    targets = [settings.jars_dir / name for name in S3A_JARS]
    if all(t.is_file() for t in targets):
        for target in targets:
            check_s3a_jar(target)
        return f"s3a jars: present in {settings.jars_dir}, sha256 checked"
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            S3A_JARS_PACKAGE,
            "-d",
            tmp,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise FruitsError(f"could not download {S3A_JARS_PACKAGE} for the s3a jars: {done.stderr.strip()[-300:]}")
        extracted = Path(tmp) / "jars"
        extracted.mkdir()
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in S3A_JARS and member.isfile():
                    (extracted / name).write_bytes(tar.extractfile(member).read())
        missing = [name for name in S3A_JARS if not (extracted / name).is_file()]
        if missing:
            raise FruitsError(f"{S3A_JARS_PACKAGE} did not contain {', '.join(missing)}")
        # Checked before anything lands in the cache: a mismatch leaves no jar behind.
        for name in S3A_JARS:
            check_s3a_jar(extracted / name)
        for name in S3A_JARS:
            shutil.move(extracted / name, settings.jars_dir / name)
    return f"s3a jars: fetched {', '.join(S3A_JARS)} into {settings.jars_dir}, sha256 checked"


def lapack_implementation(spark: SparkSession) -> str:
    """'native' when Spark ML's LAPACK (PCA's SVD) calls a system library (liblapack.so.3, e.g. OpenBLAS),
    'java' on the pure-Java fallback, about 10x slower on the 1280x1280 decomposition."""
    try:
        name = str(spark.sparkContext._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getSimpleName())
    except Exception:  # a JVM without netlib (not Spark ML's) is not a reason to fail a fit
        return "unknown"
    return "native" if name.startswith("JNI") else "java"
