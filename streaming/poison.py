"""Poison uploads: a micro-batch whose rows cannot be computed is narrowed down to the uploads that
break it; those become one error row each (reason `poison`), the rest is committed, the stream goes on.

An upload should never fail its micro-batch (fruits.featurize turns what it can into error rows),
but some failures take the whole Spark task with them: a Python worker killed by the OS or by
Spark's memory cap, a native crash in a decoder, a bug of ours. Spark then fails the batch, and
a restart replays the same batch and fails again: without this module one upload stops the stream.

How a failed batch is handled (`isolate`, called by streaming.batch.MicroBatch):
1. The failure is classified (`poison_detail`). Only a failure of the data path counts: a Python
   exception raised while featurizing (a Python UDF's traceback) or a Python worker that died.
   Anything else stops the stream as before: storage unreachable or refusing (JVM I/O errors,
   botocore/urllib3/connection errors, FruitsError), the source's own reader failing
   (fruits/notifications/ in the traceback), a module missing on the workers, a job cancelled
   by a stop, Py4J losing the JVM. Such a failure gets one more try (`evaluate`: after a failed
   job, a task can meet a Python worker that job killed), then stops the stream. The commit is
   not inside this at all: a Delta commit failing or a second writer (FruitsError from
   fruits.sinks) stops the stream.
2. The batch's inputs are read once more and kept (persisted, memory then disk): every later
   evaluation reads the kept copy, so narrowing re-reads nothing from the source (the notification
   source cannot prune columns; the file source cannot prune by path). Reading them is not
   classified: a source that fails to read stops the stream.
3. The whole batch is tried again, BATCH_ATTEMPTS times in all: a transient failure (memory
   pressure from a neighbour) ends here with every upload committed normally.
4. Narrowing, by halves: a group that fails is split in two, both halves are tried; groups of
   at most ONE_BY_ONE uploads are tried one upload at a time. With one poison upload among n,
   that is about 2 log2(n) small Spark jobs. An upload that fails alone is poison: one error row,
   `detail` = the failure's exception class and first line (bounded). Every group that succeeds
   keeps its rows. If no upload succeeds at all, a small known-good image goes through the same
   path: if it fails too, the path itself is broken (a bug, the environment) and the stream stops
   with nothing committed, rather than turn every upload into an error row.
5. Everything goes back to MicroBatch as the batch's rows: the batch is still committed as ONE
   transaction per table with its batch id (fruits.sinks). A crash or restart in the middle of
   narrowing commits nothing; the replayed batch fails again and is narrowed again: nothing is
   lost, nothing is written twice.

Test-only fault injection (`inject_faults`, Settings.fault_injection): a pandas step in front of
the featurizer that raises, or exits its Python worker, on uploads whose bytes contain a marker.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
from PIL import Image
from py4j.protocol import Py4JError
from pyspark import StorageLevel
from pyspark.errors import PythonException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from fruits.exceptions import FruitsError
from fruits.reasons import POISON, bounded_detail

log = logging.getLogger("fruits.stream")

BATCH_ATTEMPTS = 2  # the whole batch, before narrowing: the first try and one retry
JOB_TRIES = 2  # one Spark job (an evaluation), for a failure that is not about the data (see evaluate)
ONE_BY_ONE = 4  # a failing group this small is tried one upload at a time rather than by halves

PYTHON_EXCEPTION = "org.apache.spark.api.python.PythonException"  # a Python exception in a task, with its traceback
WORKER_CRASH = "Python worker exited unexpectedly"  # os._exit, a signal, the OOM killer, a native crash
# Python exceptions that say storage, the network or the deployment (a module missing on the workers) failed,
# not the data: never poison.
INFRASTRUCTURE = re.compile(
    r"^(botocore|boto3|s3transfer|urllib3|requests|s3fs|aiobotocore|http\.client|ssl|socket)\."
    r"|^(ConnectionError|ConnectionRefusedError|ConnectionResetError|ConnectionAbortedError|BrokenPipeError"
    r"|TimeoutError|ImportError|ModuleNotFoundError|fruits\.exceptions\.FruitsError)$"
)
SOURCE_READER = "fruits/notifications/"  # the notification source's package: its failures are the source's
CANARY_PATH = "fruits-known-good-image.jpg"  # never committed: only tells a broken data path from poison uploads
FAULT_ACTIONS = ("raise", "exit")
FAULT_EXIT_CODE = 86


# ----------------------------------------------------------------------------- which failures are poison
def poison_detail(exc: BaseException) -> str | None:
    """`Class: first line` of a failure of the data path (a poison candidate); None for anything else
    (infrastructure, the source, a stop): the caller re-raises those."""
    if isinstance(exc, PythonException):
        return python_failure(str(exc))
    chain = java_chain(exc)
    for name, message in chain:
        if name == PYTHON_EXCEPTION:
            return python_failure(message)
    for name, message in chain:
        if message.startswith(WORKER_CRASH):
            return bounded(f"{name.rsplit('.', 1)[-1]}: {message.split('. Consider', 1)[0]}")
    return None


def python_failure(text: str) -> str | None:
    """The last exception of a Python traceback as `Class: first line`, unless it is storage, the network,
    one of our own FruitsErrors or the source's reader failing."""
    line = last_exception_line(text)
    if line is None:
        return None
    name = line.split(":", 1)[0].strip()
    if INFRASTRUCTURE.search(name) or SOURCE_READER in text:
        return None
    return bounded(line)


def last_exception_line(text: str) -> str | None:
    """The line that follows the frames of the last `Traceback (most recent call last):` block."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        if line.lstrip().startswith("Traceback (most recent call last):"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            if j < len(lines):
                found = lines[j].strip()
    return found


def java_chain(exc: BaseException, depth: int = 16) -> list[tuple[str, str]]:
    """(class name, message) of a Spark failure's Java exception and its causes; empty if there is none
    or the JVM cannot be asked (then nothing is classified as poison)."""
    throwable = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    chain = []
    try:
        while throwable is not None and len(chain) < depth:
            chain.append((str(throwable.getClass().getName()), str(throwable.getMessage() or "")))
            throwable = throwable.getCause()
    except Py4JError:
        return []
    return chain


def root_cause(exc: BaseException) -> str:
    """The innermost Java exception of a Spark failure, else the exception itself, as one bounded line."""
    chain = java_chain(exc)
    name, message = chain[-1] if chain else (type(exc).__name__, str(exc))
    return bounded(f"{name}: {message}" if message else name)


def bounded(text: str) -> str:
    """The first line of a failure's text as a `detail` (fruits.reasons: escaped, bounded)."""
    return bounded_detail(text.strip().splitlines()[0] if text.strip() else text)


# ----------------------------------------------------------------------------- isolating the poison
def isolate(batch_id: int, inputs: DataFrame, rows_of: Callable[[DataFrame], DataFrame], failure: str) -> pa.Table:
    """The rows of a batch whose first evaluation failed with `failure` (a poison_detail): retried, then
    narrowed down (see the module doc). `rows_of(inputs)` is the batch's data path on any subset of its
    inputs. Raises the failure of any evaluation that is not about the data."""
    started = time.perf_counter()
    log.warning("batch %d failed (%s): retrying it with its uploads read once and kept", batch_id, failure)
    kept = inputs.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Reads the source once more and keeps it. Not classified: if the source cannot be read, the stream stops.
        uploads = evaluate(kept.drop("content"), classify=False)[0]  # path, label, size, time
        evaluations = 0
        for _ in range(BATCH_ATTEMPTS - 1):
            evaluations += 1
            rows, failure = evaluate(rows_of(kept))
            if rows is not None:
                log.warning("batch %d succeeded on retry: no poison upload", batch_id)
                return rows
        log.warning(
            "batch %d failed again (%s): narrowing its %d uploads down to the ones that fail",
            batch_id,
            failure,
            uploads.num_rows,
        )
        paths = uploads.column("path").to_pylist()
        kept_rows: list[pa.Table] = []
        poisoned: dict[int, str] = {}  # row of `uploads` -> its failure
        groups = split(list(range(len(paths))))
        while groups:
            group = groups.pop()
            evaluations += 1
            rows, failure = evaluate(rows_of(kept.filter(F.col("path").isin([paths[i] for i in group]))))
            if rows is not None:
                kept_rows.append(rows)
            elif len(group) > 1:
                groups += split(group)
            else:
                log.error(
                    "batch %d: poison upload %s: %s (one error row, reason %s)",
                    batch_id,
                    bounded_detail(paths[group[0]]),
                    failure,
                    POISON,
                )
                poisoned[group[0]] = failure
        if not kept_rows:
            check_the_data_path(batch_id, kept, rows_of, failure)
        schema = kept_rows[0].schema if kept_rows else to_arrow_schema(rows_of(kept).schema)
        rows = pa.concat_tables([*kept_rows, poison_rows(uploads, poisoned, schema)])
        log.warning(
            "batch %d narrowed down in %d evaluations, %.1f s: %d poison upload(s), %d other rows kept",
            batch_id,
            evaluations,
            time.perf_counter() - started,
            len(poisoned),
            rows.num_rows - len(poisoned),
        )
        return rows
    finally:
        kept.unpersist()


def evaluate(rows: DataFrame, *, classify: bool = True) -> tuple[pa.Table | None, str]:
    """(the rows, "") or (None, the poison failure); any other failure is raised after JOB_TRIES attempts.

    A failure that is not about the data gets a second try: after a failed job (its tasks' Python
    workers killed), the next job's task can meet such a worker's closing socket
    (java.nio.channels.CancelledKeyException, seen here in local mode, where a task has one attempt;
    a cluster retries tasks itself). An outage fails twice and is raised: the stream stops.
    `classify=False`: no failure is poison (reading the source)."""
    tries = JOB_TRIES
    while True:
        try:
            return rows.toArrow(), ""
        except Exception as exc:
            detail = poison_detail(exc) if classify else None
            if detail is not None:
                return None, detail
            tries -= 1
            if tries < 1:
                raise
            log.warning("a Spark job failed, not on the data (%s): trying it once more", root_cause(exc))


def check_the_data_path(
    batch_id: int, kept: DataFrame, rows_of: Callable[[DataFrame], DataFrame], failure: str
) -> None:
    """When every upload of a batch failed alone: a small image known to be good goes through the same data
    path. If it fails too, the path is broken (a bug or the environment, for every upload), not the uploads:
    FruitsError, nothing committed, the stream stops rather than turn every upload into an error row."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (190, 60, 40)).save(buffer, "JPEG")
    known_good = {
        "path": CANARY_PATH,
        "size": len(buffer.getvalue()),
        "content": buffer.getvalue(),
        "modification_time": datetime.now(UTC),
    }
    frame = kept.sparkSession.createDataFrame([tuple(known_good.get(f.name) for f in kept.schema)], kept.schema)
    if evaluate(rows_of(frame))[0] is None:
        raise FruitsError(
            f"micro-batch {batch_id}: every upload fails ({failure}) and so does a known-good image: "
            "the data path itself is broken, not the uploads; nothing committed"
        )


def split(group: list[int]) -> list[list[int]]:
    """A failing group's parts, in the order they are tried (last first: the caller pops)."""
    if len(group) <= ONE_BY_ONE:
        return [[i] for i in reversed(group)]
    middle = len(group) // 2
    return [group[middle:], group[:middle]]


def poison_rows(uploads: pa.Table, poisoned: dict[int, str], schema: pa.Schema) -> pa.Table:
    """One row per poison upload in the batch's row schema: the upload's columns, reason and detail, nulls else."""
    picked = uploads.take(list(poisoned))
    given = {name: picked.column(name) for name in uploads.column_names}
    given["reason"] = pa.array([POISON] * len(poisoned), pa.string())
    given["detail"] = pa.array(list(poisoned.values()), pa.string())
    return pa.table(
        [given[f.name].cast(f.type) if f.name in given else pa.nulls(len(poisoned), f.type) for f in schema],
        schema=schema,
    )


# ----------------------------------------------------------------------------- fault injection (tests only)
def inject_faults(images: DataFrame, spec: str | None, content: str = "content") -> DataFrame:
    """`images` unchanged when `spec` is None (no step in the plan). "raise:MARKER" / "exit:MARKER": a Python
    step before the featurizer raises RuntimeError, or ends its worker with os._exit, on an upload whose
    bytes contain MARKER; the others pass through untouched."""
    if not spec:
        return images
    action, marker = spec.split(":", 1)
    if action not in FAULT_ACTIONS:
        raise ValueError(f"fault injection {spec!r}: the action must be one of {FAULT_ACTIONS}")
    needle = marker.encode()

    @F.pandas_udf("binary")
    def faulty(contents: pd.Series) -> pd.Series:
        if any(c is not None and needle in c for c in contents):
            if action == "exit":
                os._exit(FAULT_EXIT_CODE)
            raise RuntimeError(f"fault injected on an upload containing {marker!r}")
        return contents

    return images.withColumn(content, faulty.asNondeterministic()(F.col(content)))
