"""Read the streaming job's parquet output without Spark, seeing only committed files.

Spark's file sink commits a micro-batch by writing `_spark_metadata/<batch>` (compacted every
few batches into `<batch>.compact`). A batch killed half-way can leave parquet files that no
log entry names; Spark readers ignore them, and so must anyone else, or they count rows twice.
`committed_files` replays that log; `read_table` reads just those files with pyarrow.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

_BATCH_FILE = re.compile(r"^(\d+)(\.compact)?$")


def filesystem(uri: str, endpoint_url: str | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path, file://, s3:// or s3a:// URI."""
    import pyarrow.fs as pafs

    if uri.startswith(("s3://", "s3a://")):
        bucket_key = uri.split("://", 1)[1]
        options = {"endpoint_override": endpoint_url} if endpoint_url else {}
        if endpoint_url and endpoint_url.startswith("http://"):
            options["scheme"] = "http"
        return pafs.S3FileSystem(**options), bucket_key.rstrip("/")
    path = re.sub(r"^file:/*", "/", uri) if uri.startswith("file:") else uri
    return pafs.LocalFileSystem(), path.rstrip("/")


def committed_files(uri: str, endpoint_url: str | None = None) -> list[str]:
    """Paths (inside the returned filesystem) of the parquet files the sink has committed."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri, endpoint_url)
    log_dir = f"{root}/_spark_metadata"
    infos = fs.get_file_info(pafs.FileSelector(log_dir, allow_not_found=True))
    batches = sorted(
        ((int(m[1]), bool(m[2]), i.path) for i in infos if (m := _BATCH_FILE.match(posixpath.basename(i.path)))),
    )
    if not batches:
        return []
    last_compact = max((b for b, compact, _ in batches if compact), default=-1)
    files: dict[str, None] = {}
    for batch, compact, path in batches:
        if batch < last_compact or (batch == last_compact and not compact):
            continue
        with fs.open_input_stream(path) as stream:
            lines = stream.read().decode().splitlines()
        for line in lines[1:]:  # first line is the log version, e.g. "v1"
            entry = json.loads(line)
            key = _strip(entry["path"])
            if entry.get("action", "add") == "add":
                files[key] = None
            else:
                files.pop(key, None)
    return list(files)


def read_table(uri: str, endpoint_url: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """The committed rows as one pyarrow Table (partition columns restored from the paths).

    Works for the results table (file sink: only files in its commit log) and the errors table
    (files written atomically one per batch: every visible file).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    fs, root = filesystem(uri, endpoint_url)
    has_log = fs.get_file_info(f"{root}/_spark_metadata").type != pafs.FileType.NotFound
    if not has_log:
        # Not a file-sink table (e.g. the errors table, written file by file atomically).
        if fs.get_file_info(root).type == pafs.FileType.NotFound:
            return pa.table({})
        return ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive").to_table(columns=columns)
    files = committed_files(uri, endpoint_url)
    if not files:
        return pa.table({})
    dataset = ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=root)
    return dataset.to_table(columns=columns)


def _strip(path: str) -> str:
    """'file:///a%20b/c' -> '/a b/c'; 's3a://bucket/k' -> 'bucket/k' (the form pyarrow filesystems use).

    The sink's log holds URIs, so spaces, '%' and non-ASCII names arrive percent-encoded.
    """
    if path.startswith("file:"):
        return unquote(re.sub(r"^file:/*", "/", path))
    if "://" in path:
        return unquote(path.split("://", 1)[1])
    return path
