"""Source: which files are images, what class each belongs to, and reading them into Spark.

The naming rules (fruits/contracts.py, Spark-free, re-exported here) are the contract with whoever
uploads: `<prefix>/<class name>/<file>.(jpg|jpeg|png)` in any letter case; names starting with '.' or '_' (files or folders) are never read, so an
upload still being written under a hidden name is invisible until it is renamed into place.
The upload Lambda (lambda/handler.py, which cannot import this package) keeps a copy of the
image-name and label rules; a test checks that both agree on a table of names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits.contracts import (  # noqa: F401  (re-exported: the rules' historical home)
    APP_FOLDER,
    IMAGE_EXTENSIONS,
    comparable_path,
    in_hidden_folder,
    is_image_name,
    label_from_path,
)
from fruits.spark import hadoop_fs

# The schema Spark's binaryFile source reads (a stream needs it explicitly).
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def glob_for_extensions(extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str:
    """A case-insensitive Hadoop glob for file names: '*.{[jJ][pP][gG],...}'."""
    parts = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext) for ext in extensions]
    return "*.{" + ",".join(parts) + "}"


IMAGE_GLOB = glob_for_extensions()


def read_images(
    spark: SparkSession, uri: str, *, stream: bool = False, max_files_per_trigger: int | None = None
) -> DataFrame:
    """Image files under `uri` (recursive): path, modificationTime, length, content.

    Spark itself skips names starting with '.' or '_' (files and folders) and the glob keeps
    out `*.tmp` and `*._COPYING_`, so files that are still being written are never picked up.
    """
    reader = spark.readStream if stream else spark.read
    reader = (
        reader.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
    )
    if stream and max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    return reader.load(uri)


def label_column(path: Column | str, root: str) -> Column:
    """Spark twin of `label_from_path`: the parent folder's name, null directly under `root` or under its app folder."""

    def comparable(c: Column) -> Column:
        return F.regexp_replace(F.regexp_replace(c, r"^[A-Za-z][A-Za-z0-9+.-]*:", ""), r"^/+|/+$", "")

    parent = comparable(F.regexp_extract(F.col(path) if isinstance(path, str) else path, r"^(.*)/[^/]*$", 1))
    root_cmp = comparable_path(root)
    app_folder = f"{root_cmp}/{APP_FOLDER}" if root_cmp else APP_FOLDER
    in_app_folder = (parent == F.lit(app_folder)) | parent.startswith(app_folder + "/")
    return F.when(
        (parent == F.lit("")) | (parent == F.lit(root_cmp)) | in_app_folder, F.lit(None).cast("string")
    ).otherwise(F.regexp_extract(parent, r"([^/]+)$", 1))


def files_assigned_to_batch(spark: SparkSession, checkpoint: str, batch_id: int) -> list[str]:
    """Every file the file source assigned to micro-batch `batch_id`, as URIs in its log's spelling
    (`as_path_column` turns them into the `path` column's).

    The batch's DataFrame does not hold them all: Spark's scan drops zero-length files, and skips
    files deleted since they were listed. The checkpoint is the only record of them, read here as
    Spark's FileStreamSource reads it for the batch:
    - `offsets/<batch>` (and the batch before): a version line, the batch's metadata, then the
      source's offset `{"logOffset": N}`. The batch holds the source log's entries in
      (previous logOffset, N]. Micro-batch ids and log offsets are not the same numbers once a
      crash has fallen between the source's log write and the batch's offset write.
    - `sources/0/<N>`, every 10th compacted into `<N>.compact` with the earlier entries too
      (the plain files then go): a version line, then one JSON object per file, with its `batchId`
      (the log offset) and its `path` as a URI.
    """
    root = checkpoint.rstrip("/")
    end = _log_offset(spark, f"{root}/offsets/{batch_id}")
    if end is None:
        raise FileNotFoundError(f"no offsets for micro-batch {batch_id} under {checkpoint}")
    start = _log_offset(spark, f"{root}/offsets/{batch_id - 1}") if batch_id > 0 else None
    wanted = set(range(0 if start is None else start + 1, end + 1))
    fs, folder = hadoop_fs(spark, f"{root}/sources/0")
    names = {str(status.getPath().getName()) for status in fs.listStatus(folder)}
    compacted = sorted(int(n.removesuffix(".compact")) for n in names if n.endswith(".compact"))
    files = [f"{folder}/{i}" for i in sorted(wanted) if str(i) in names]
    covered = {i for i in wanted if str(i) in names}
    for i in sorted(wanted - covered):  # only in a compact file: the first one at or after it
        compact = next((c for c in compacted if c >= i), None)
        if compact is None:
            raise FileNotFoundError(f"no source log entry {i} for micro-batch {batch_id} under {checkpoint}")
        files.append(f"{folder}/{compact}.compact")
    entries = [
        e for log_file in dict.fromkeys(files) for e in _json_lines(spark, log_file)[1:] if e.get("batchId") in wanted
    ]
    return list(dict.fromkeys(e["path"] for e in sorted(entries, key=lambda e: e["batchId"])))


def as_path_column(spark: SparkSession, uris: list[str]) -> list[str]:
    """Source-log URIs as Spark's `path` column spells them (FileStreamSource.getBatch converts them
    with Hadoop's Path(URI): decoded, 'file:/x' for 'file:///x'). Two JVM calls per URI: call it
    only for the batches that need it."""
    jvm = spark.sparkContext._jvm
    return [str(jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))) for uri in uris]


def _log_offset(spark: SparkSession, offsets_file: str) -> int | None:
    """The file source's log offset recorded in one of Spark's offset files (None if there is none)."""
    fs, path = hadoop_fs(spark, offsets_file)
    if not fs.exists(path):
        return None
    lines = _json_lines(spark, offsets_file)
    return int(lines[2]["logOffset"])  # "v1", the batch's metadata, then our one source's offset


def _json_lines(spark: SparkSession, uri: str) -> list:
    """A log file of Spark's: a version line (kept as a string), then one JSON document per line."""
    fs, path = hadoop_fs(spark, uri)
    stream = fs.open(path)
    try:
        text = bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode()
    finally:
        stream.close()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[:1] + [json.loads(line) for line in lines[1:]]


def file_status(spark: SparkSession, path: str) -> tuple[int, datetime] | None:
    """(size in bytes, modification time), or None if the file no longer exists (any storage Spark reads)."""
    fs, hpath = hadoop_fs(spark, path)
    if not fs.exists(hpath):
        return None
    status = fs.getFileStatus(hpath)
    return int(status.getLen()), datetime.fromtimestamp(status.getModificationTime() / 1000, UTC)
