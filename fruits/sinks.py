"""Sinks: one micro-batch's rows into the results and errors Delta tables, exactly once.

Each table gets ONE transaction per micro-batch, and that transaction carries the batch id as a
Delta application transaction (`txn` action: app id -> version). A batch re-run after a crash
finds its id already in the table's own log and writes nothing again; no commit protocol of ours.

The app id names the stream (a UUID kept in its checkpoint: streaming.job.stream_identity), not the
tables: a new checkpoint (a reset stream) gets a new id, so its batch ids, which restart at 0,
are never mistaken for the old stream's.

Two writers on the same checkpoint and tables (the stream started twice) both run the same batch
id: delta-rs refuses the second commit carrying the same app id ("Concurrent transaction failed"),
and the loser stops with a one-line error. Readers never see a row twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import CommitProperties, Transaction

from fruits import lake
from fruits.exceptions import FruitsError, one_line
from fruits.settings import Settings

log = logging.getLogger(__name__)

UTC_MICROS = pa.timestamp("us", tz="UTC")
FLOATS = pa.list_(pa.float32())
# A long-lived DeltaTable kept current with update_incremental() grows in memory with every commit
# and never shrinks, checkpoints or not (~0.1 MB per commit: bench/commits.py; delta-rs's
# incremental snapshot appends to its file list). Re-opened once this many versions have gone by,
# it starts again from the latest checkpoint (delta.checkpointInterval, fruits.lake.TABLE_CONFIGURATION).
REOPEN_EVERY_VERSIONS = 100


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]


# Every row of both tables says which upload it is about, and when it was ingested.
UPLOAD_FIELDS = [
    ("path", pa.string()),
    ("label", pa.string()),
    ("size", pa.int64()),
    ("modification_time", UTC_MICROS),
    ("ingest_time", UTC_MICROS),
]
RESULTS = TableSpec(
    "results",
    pa.schema(
        [
            *UPLOAD_FIELDS,
            ("features", FLOATS),
            ("pca", FLOATS),
            # The classifier head (fruits.project): null for a model without one.
            ("prediction", pa.string()),
            ("confidence", pa.float64()),
            ("novelty_score", pa.float64()),
            ("is_novel", pa.bool_()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("featurizer_sha256", pa.string()),
            ("ingest_date", pa.date32()),
        ]
    ),
    ("ingest_date",),
)
ERRORS = TableSpec(
    "errors",
    pa.schema(
        [
            *UPLOAD_FIELDS,
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("batch_id", pa.int64()),
        ]
    ),
    (),
)


class DeltaSink:
    """One Delta table, appended to once per micro-batch with the batch id as its app transaction."""

    def __init__(self, settings: Settings, uri: str, spec: TableSpec, app_id: str):
        self.uri = uri
        self.spec = spec
        self.app_id = app_id
        self._location = lake.table_uri(uri)
        self._options = lake.storage_options(settings, uri)
        self._table: DeltaTable | None = None
        self._opened_version = -1

    def _latest(self) -> DeltaTable | None:
        if self._table is not None:
            self._table.update_incremental()
            if self._table.version() - self._opened_version >= REOPEN_EVERY_VERSIONS:
                self._table = None  # bounded memory on a stream that runs for months (see REOPEN_EVERY_VERSIONS)
        if self._table is None:
            self._table = lake.open_table_at(self._location, self._options)
            self._opened_version = self._table.version() if self._table is not None else -1
        return self._table

    def committed(self, batch_id: int) -> bool:
        """Whether this stream already committed `batch_id` (or a later batch) to the table."""
        return self._holds(self._latest(), batch_id)

    def _holds(self, table: DeltaTable | None, batch_id: int) -> bool:
        version = table.transaction_version(self.app_id) if table is not None else None
        return version is not None and version >= batch_id  # version 0 is a real batch: not a truthiness test

    def append(self, rows: pa.Table, batch_id: int) -> None:
        """Commit `rows` (possibly none: the batch is then only marked done) as the batch's one transaction.

        Refuses a batch the table already holds: the caller checked before computing it, so someone
        else committed it meanwhile. From here to the commit, Delta's own conflict check takes over.
        """
        rows = rows.select(self.spec.schema.names).cast(self.spec.schema)
        table = self._latest()
        if self._holds(table, batch_id):
            raise self._second_writer(batch_id)
        creating = table is None
        try:
            write_deltalake(
                table if table is not None else self._location,
                rows,
                mode="append",
                partition_by=list(self.spec.partition_by) if creating and self.spec.partition_by else None,
                configuration=lake.TABLE_CONFIGURATION if creating else None,
                schema_mode="merge",  # a newer version of the pipeline may add columns; it never removes any
                storage_options=self._options if creating else None,
                commit_properties=CommitProperties(app_transactions=[Transaction(self.app_id, batch_id)]),
            )
        except CommitFailedError as exc:
            self._table = None
            if self.committed(batch_id):
                raise self._second_writer(batch_id) from None
            raise FruitsError(f"cannot commit micro-batch {batch_id} to {self.uri}: {one_line(exc)}") from None

    def _second_writer(self, batch_id: int) -> FruitsError:
        return FruitsError(
            f"another writer committed micro-batch {batch_id} to {self.uri} first (stream {self.app_id}): "
            "is a second stream running on the same checkpoint? Stop it; nothing was written twice"
        )


class LakeWriter:
    """The stream's two tables. Errors are committed before results, so a batch whose results are
    committed is complete in both tables: `done` reads only the results table."""

    def __init__(self, settings: Settings, app_id: str):
        self.results = DeltaSink(settings, settings.output_uri, RESULTS, app_id)
        self.errors = DeltaSink(settings, settings.errors_uri, ERRORS, app_id)

    def done(self, batch_id: int) -> bool:
        return self.results.committed(batch_id)

    def commit(self, batch_id: int, results: pa.Table, errors: pa.Table) -> None:
        if errors.num_rows and not self.errors.committed(batch_id):
            self.errors.append(errors, batch_id)
        self.results.append(results, batch_id)
