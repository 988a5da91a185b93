"""What the jobs, the launchers and the upload Lambda agree on, importable without Spark.

One place for each name that crosses a process boundary: the upload naming rules (the Lambda keeps
a copy, tests/lambda/test_rules.py holds both to the same answers), the Lambda's message schema,
the stream's graceful stop marker, and the Spark settings every job runs with wherever it runs
(the local session in fruits/spark.py, EMR's spark-defaults and EMR Serverless' job runs in infra/).
`fruits emr plan` needs nothing else of the core, so it runs where pyspark is not installed.
"""

from __future__ import annotations

import posixpath
import re

# ---------------------------------------------------------------------------- uploads
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
_IMAGE_NAME = re.compile(r"\.(" + "|".join(IMAGE_EXTENSIONS) + r")$", re.IGNORECASE)


def is_image_name(path: str) -> bool:
    """An image extension in any letter case, and not a hidden or temporary name ('.x', '_x'), on the file NAME
    (Spark also skips '.'/'_' folders: callers that list trees skip those themselves)."""
    name = posixpath.basename(path)
    return bool(_IMAGE_NAME.search(name)) and not name.startswith((".", "_"))


def in_hidden_folder(path: str, root: str = "") -> bool:
    """Whether a folder between `root` and the file is named '.x' or '_x': Spark's listing never
    enters those, so a source that does not list (notifications) must skip them too."""
    relative = path[len(root) :] if root and path.startswith(root) else path
    return any(folder.startswith((".", "_")) for folder in relative.split("/")[:-1])


def comparable_path(uri: str) -> str:
    """'file:/a/b/', 'file:///a/b', '/a/b' -> 'a/b'; 's3a://bucket/a' -> 'bucket/a'."""
    return re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*:", "", uri).strip("/")


def relative_to_root(path: str, root: str) -> str | None:
    """`path` relative to `root` ('a/b.jpg'), compared without schemes; None if it is not under it."""
    path_cmp, root_cmp = comparable_path(path), comparable_path(root)
    if not root_cmp:
        return path_cmp
    if not path_cmp.startswith(root_cmp + "/"):
        return None
    return path_cmp[len(root_cmp) + 1 :]


# The public app's uploads live under this folder of the source root (fruits/appuploads.py): its
# sub-folders say consent, never a class.
APP_FOLDER = "app"


def in_app_folder(relative: str) -> bool:
    """Whether a path relative to the source root is under the app's folder (no label)."""
    return relative.startswith(APP_FOLDER + "/")


def label_from_path(path: str, root: str | None = None) -> str | None:
    """The class of an image is the name of the folder that holds it.

    ".../Apple Red 1/r_12_100.jpg" -> "Apple Red 1". With `root`, an image directly in the
    root folder has no class folder and gets None, and so does an upload of the public app
    (under `<root>/app/`): its folders say consent, not a class. Schemes are ignored, so Spark's
    'file:/x/...' and a user's '/x' or 'file:///x' compare equal.
    """
    parent = posixpath.dirname(comparable_path(path))
    if not parent:
        return None
    if root is not None:
        relative = relative_to_root(path, root)
        if relative is not None and ("/" not in relative or in_app_folder(relative)):
            return None
    return posixpath.basename(parent)


# The `schema` field of the upload Lambda's message (lambda/handler.py SCHEMA, which cannot import this).
UPLOAD_MESSAGE_SCHEMA = "fruits.image-uploaded/1"

# ---------------------------------------------------------------------------- the stream
# An object of this name directly under the stream's checkpoint asks it to stop after its current
# micro-batch; the stream deletes it once stopped (`fruits emr stop` / `fruits serverless stop` write it).
STOP_MARKER = "_stop"

# ---------------------------------------------------------------------------- Spark
# Application settings, the same wherever the jobs run (local session, EMR spark-defaults, EMR Serverless).
APP_CONF = {
    # Small Arrow batches bound a Python worker's memory (64 phone photos ~ 200 MB);
    # the featurizer chunks inference itself.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # The featurizer builds its engine once per Python worker; reuse keeps it across tasks.
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    # An upload deleted between a micro-batch's listing and its read (a GDPR erasure, a clean-up
    # script) must not fail the batch: the checkpoint pins the batch's files, so it would fail
    # again on every restart. The errors table records such files as "missing".
    "spark.sql.files.ignoreMissingFiles": "true",
    # Nothing reads _SUCCESS markers (the lake's commits are Delta transactions): do not write them.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # Images are small and every task pays a fixed cost in the Python worker. With the
    # default 4 MB "open cost" a batch of 256 photos became 8+ tasks; at 64 KB the scan
    # packs files into about one task per core (measured: 0.65x -> 0.95x of pure ORT).
    "spark.sql.files.openCostInBytes": str(64 * 1024),
    # A stream runs for weeks: keep the UI/status history of recent work only (the defaults keep
    # 1000 SQL executions and jobs, several per micro-batch, in the driver's heap).
    "spark.sql.ui.retainedExecutions": "100",
    "spark.ui.retainedJobs": "200",
    "spark.ui.retainedStages": "200",
    # Spark's file status cache (for catalog tables' partitions) kept one file status per upload the
    # stream's listing ever saw, up to 250 MB of driver heap (bench/soak.py --histograms); nothing
    # here reads it: the stream lists afresh every trigger, the batch jobs read each folder once.
    "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
    # A native BLAS/LAPACK (OpenBLAS: `make native-blas`) must run single-threaded inside Spark:
    # tasks already use every core, and multi-threaded OpenBLAS LAPACK made PCA's SVD fail to
    # converge here (breeze NotConvergedException). Spark's own advice (SPARK-21305).
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
}
