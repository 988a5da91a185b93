"""The lake: the stream's results and errors as Delta Lake tables, through delta-rs (no Spark, no JVM).

Any engine reads them: `deltalake.DeltaTable(uri).to_pandas()`, Polars (`pl.read_delta`), DuckDB
over `DeltaTable(uri).to_pyarrow_dataset()`, Spark with Delta (EMR), Athena (Glue table with
`table_type=DELTA`). A reader sees only committed transactions: a micro-batch killed half-way
leaves at most unreferenced files, which no reader counts and `vacuum` removes.

Storage is chosen by URI, as everywhere: a path or file:// URI, or s3:// / s3a:// (the same bucket;
delta-rs speaks s3://). On S3, commits are atomic through S3's conditional writes (put-if-absent),
which delta-rs 1.x uses by default: no lock table is needed, even with several writers.
Credentials come from the standard AWS_* environment variables or the instance profile.

Maintenance (`maintain`): compaction of small files (optimize), removal of files no longer
referenced after the retention period (vacuum), and a checkpoint of the log. Compaction commits
concurrently with the stream's appends without conflict (it only rewrites files, dataChange=false).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from fruits.settings import Settings

log = logging.getLogger(__name__)

# Written into the tables at creation: how long removed files and old log entries are kept (time
# travel window, and the grace period for readers still on an older version).
TABLE_CONFIGURATION = {
    "delta.deletedFileRetentionDuration": "interval 7 days",
    "delta.logRetentionDuration": "interval 7 days",
    "delta.checkpointInterval": "100",
}


def table_uri(uri: str) -> str:
    """The form delta-rs takes: 's3a://b/k' -> 's3://b/k', 'file:///x' or 'file:/x' -> '/x'."""
    if uri.startswith("s3a://"):
        return "s3://" + uri.removeprefix("s3a://")
    if uri.startswith("file:"):
        return re.sub(r"^file:/*", "/", uri)
    return uri


def storage_options(settings: Settings, uri: str) -> dict[str, str]:
    """delta-rs options for `uri`: the S3 endpoint and region from the settings (credentials from the env)."""
    if not table_uri(uri).startswith("s3://"):
        return {}
    options = {"AWS_REGION": settings.aws_region}
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        if settings.s3_endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def open_table(settings: Settings, uri: str) -> DeltaTable | None:
    """The table at `uri`, or None if nothing has been committed there yet."""
    return open_table_at(table_uri(uri), storage_options(settings, uri))


def open_table_at(location: str, options: dict[str, str]) -> DeltaTable | None:
    try:
        return DeltaTable(location, storage_options=options)
    except TableNotFoundError:
        return None


def read_table(settings: Settings, uri: str, columns: list[str] | None = None) -> pa.Table:
    """The committed rows (an empty table when nothing is committed yet)."""
    table = open_table(settings, uri)
    if table is None:
        return pa.table({})
    return table.to_pyarrow_table(columns=columns)


def active_files(settings: Settings, uri: str, filters: list[tuple[str, str, str]] | None = None) -> list[str] | None:
    """The data files of the table's current version (any engine reads them as plain parquet: our
    tables use no deletion vectors or column mapping), pruned by partition `filters` such as
    ("ingest_date", ">=", "2026-12-01"). None if nothing has been committed there yet."""
    table = open_table(settings, uri)
    if table is None:
        return None
    return table.file_uris(file_pruning_predicate=filters or None)


def describe(settings: Settings, uri: str) -> dict[str, Any] | None:
    """Rows, files and version of the table (None if it does not exist yet)."""
    table = open_table(settings, uri)
    if table is None:
        return None
    actions = table.get_add_actions(flatten=True)
    rows = sum(v for v in actions.column("num_records").to_pylist() if v is not None) if actions.num_rows else 0
    return {"uri": uri, "version": table.version(), "files": actions.num_rows, "rows": rows}


@dataclass(frozen=True)
class Maintenance:
    """What one `maintain` pass did to one table."""

    uri: str
    files_before: int
    files_after: int
    files_compacted: int
    files_vacuumed: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def maintain(settings: Settings, uri: str, *, vacuum_hours: int | None = None) -> Maintenance | None:
    """Compact small files, vacuum unreferenced ones older than the retention, checkpoint the log.

    Safe while a stream appends: compaction does not conflict with appends, and vacuum only
    deletes files no snapshot within the retention period refers to. `vacuum_hours` None keeps
    the table's own retention (7 days).
    """
    table = open_table(settings, uri)
    if table is None:
        return None
    started = time.perf_counter()
    before = len(table.file_uris())
    compacted = table.optimize.compact()
    table.update_incremental()
    vacuumed = table.vacuum(
        retention_hours=vacuum_hours, dry_run=False, enforce_retention_duration=vacuum_hours is None
    )
    table.update_incremental()
    table.create_checkpoint()
    table.cleanup_metadata()
    done = Maintenance(
        uri,
        before,
        len(table.file_uris()),
        int(compacted.get("numFilesRemoved", 0)),
        len(vacuumed),
        round(time.perf_counter() - started, 3),
    )
    log.info(
        "maintained %s: %d -> %d files (%d compacted, %d vacuumed) in %.1f s",
        uri,
        done.files_before,
        done.files_after,
        done.files_compacted,
        done.files_vacuumed,
        done.seconds,
    )
    return done
