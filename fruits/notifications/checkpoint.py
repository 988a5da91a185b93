"""The source's state under the stream's checkpoint: small JSON files, and Spark's own logs read back.

`<checkpoint>/notifications/`:
- `batches/<k>.json`: batch k's list (its uploads, the messages its commit releases, what the feed
  counted while planning it), written before Spark learns offset k and re-read by `partitions`,
  identically after a restart;
- `index/<k>.json`: the identities of the committed batches up to k, folded into one file;
- `backfill.json`: when the prefix was last listed.

Only checked Uploads are ever written. Everything read back is checked again, because a list may
come from an older version of this code or a damaged file, and a replay must never stop the
stream: an entry that fails its checks is skipped (an error log names the file and the entry;
its row is never read) — except a bad event time, which is only dropped (it names nothing we
read). A list that does not parse at all, or is missing, reads as an empty batch, with an error
log: its uploads are not ingested by that batch, and once the stream restarts nothing remembers
them, so a redelivered message or the next backfill (objects newer than the retention) brings
them in again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fruits.notifications.messages import Malformed, Upload, shown
from fruits.storage import CheckpointStore

STATE = "notifications"
BATCHES = f"{STATE}/batches"
INDEX = f"{STATE}/index"
BACKFILL_STATE = f"{STATE}/backfill.json"
FORMAT = 1
COUNTERS = (
    "messages",
    "uploads",
    "duplicates",
    "test_events",
    "malformed",
    "ignored",
    "backfilled",
    "backfill_listings",
    "list_requests",
    "deleted",
)


def numbered(names: Iterable[str], suffix: str = "") -> list[int]:
    """'12.json' -> 12 (Spark's logs: '12'); temp and checksum files are left out."""
    return sorted(int(n.removesuffix(suffix)) for n in names if n.removesuffix(suffix).isdigit() and n.endswith(suffix))


# ============================================================================ batch lists
@dataclass(frozen=True)
class HeldMessage:
    """A message that batch k's commit releases: its latest receipt handle and the uploads it announced."""

    id: str
    receipt: str
    uploads: list[str]  # identities


@dataclass
class BatchList:
    """Batch k's persisted list. `problems`: what did not pass the checks when it was read back."""

    batch: int
    created: float
    counts: dict[str, int]
    uploads: list[Upload]
    messages: list[HeldMessage]
    problems: list[str] = field(default_factory=list)


def write_batch(store: CheckpointStore, listed: BatchList) -> None:
    store.write_json(
        f"{BATCHES}/{listed.batch}.json",
        {
            "format": FORMAT,
            "batch": listed.batch,
            "created": listed.created,
            "counts": listed.counts,
            "uploads": [u.as_json() for u in listed.uploads],
            "messages": [{"id": m.id, "receipt": m.receipt, "uploads": m.uploads} for m in listed.messages],
        },
    )


def read_batch(store: CheckpointStore, batch: int) -> BatchList:
    """Batch `batch`'s list, every entry checked again (see the module doc); never raises for its content."""
    where = f"{store.root}/{BATCHES}/{batch}.json"
    listed = BatchList(batch, 0.0, {}, [], [])
    try:
        document = store.read_json(f"{BATCHES}/{batch}.json")
    except ValueError as exc:
        listed.problems.append(f"{where} is not JSON ({shown(str(exc))}): the batch reads as empty")
        return listed
    if document is None:
        listed.problems.append(
            f"{where} is missing (was the checkpoint's {STATE}/ folder removed?): the batch reads as empty"
        )
        return listed
    if not isinstance(document, dict) or document.get("batch") != batch or document.get("format") != FORMAT:
        listed.problems.append(f"{where} is not the list of batch {batch}: the batch reads as empty")
        return listed
    created = document.get("created")
    listed.created = float(created) if _is_number(created) else 0.0  # unknown: expires at the next housekeeping
    listed.counts = {k: v for k, v in _dict(document.get("counts")).items() if _is_int(v)}
    for number, entry in enumerate(_list(document.get("uploads"))):
        try:
            listed.uploads.append(_upload(entry, where, number, listed.problems))
        except Malformed as exc:
            listed.problems.append(f"{where}: upload #{number} skipped, its row is not read ({exc})")
    for number, entry in enumerate(_list(document.get("messages"))):
        message = _dict(entry)
        identities = _list(message.get("uploads"))
        if (
            isinstance(message.get("id"), str)
            and isinstance(message.get("receipt"), str)
            and all(isinstance(i, str) for i in identities)
        ):
            listed.messages.append(HeldMessage(message["id"], message["receipt"], identities))
        else:
            listed.problems.append(
                f"{where}: message #{number} skipped (its id, receipt handle or uploads "
                "do not check out): it comes back and is recognised"
            )
    return listed


def _upload(entry: Any, where: str, number: int, problems: list[str]) -> Upload:
    try:
        return Upload.from_json(entry)
    except Malformed as exc:
        if not isinstance(entry, dict) or entry.get("event_time") is None:
            raise
        upload = Upload.from_json({**entry, "event_time": None})  # the time alone was bad: drop it, keep the upload
        problems.append(f"{where}: upload #{number} kept without its event time ({exc})")
        return upload


def batch_counts(store: CheckpointStore, batch_id: int) -> dict[str, int]:
    """What the source counted while planning Spark's micro-batch `batch_id` (summed over its lists)."""
    end = spark_offset(store, batch_id)
    if end is None:
        return {}
    start = spark_offset(store, batch_id - 1) if batch_id > 0 else 0
    totals = dict.fromkeys(COUNTERS, 0)
    for batch in range((start or 0) + 1, end + 1):
        for name, value in read_batch(store, batch).counts.items():
            totals[name] = totals.get(name, 0) + value
    return totals


# ============================================================================ the index and the backfill's time
def write_index(store: CheckpointStore, committed: int, batches: dict[int, tuple[float, list[str]]]) -> None:
    """The committed batches' identities up to `committed` as one file (a restart reads few files)."""
    store.write_json(
        f"{INDEX}/{committed}.json",
        {
            "format": FORMAT,
            "batch": committed,
            "batches": {str(b): [created, ids] for b, (created, ids) in batches.items()},
        },
    )


def read_index(store: CheckpointStore) -> tuple[int, dict[int, tuple[float, list[str]]], list[str]]:
    """(the latest index's batch, 0 if none; its batches; problems). Bad entries are skipped: their
    uploads are forgotten early, as if past the retention."""
    index = numbered(store.names(INDEX), ".json")
    if not index:
        return 0, {}, []
    where, problems, batches = f"{store.root}/{INDEX}/{index[-1]}.json", [], {}
    try:
        document = _dict(store.read_json(f"{INDEX}/{index[-1]}.json"))
    except ValueError:
        document = {}
    for batch, entry in _dict(document.get("batches")).items():
        created, identities = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
        if (
            batch.isdigit()
            and _is_number(created)
            and isinstance(identities, list)
            and all(isinstance(i, str) for i in identities)
        ):
            batches[int(batch)] = (float(created), identities)
        else:
            problems.append(f"{where}: batch {shown(batch)} skipped (its uploads are forgotten early)")
    if "batches" not in document:
        problems.append(f"{where} does not parse: the uploads it remembered are forgotten early")
    return index[-1], batches, problems


def read_backfill(store: CheckpointStore) -> float | None:
    """When the prefix was last listed; None if never (or unreadable: it is listed again)."""
    try:
        at = _dict(store.read_json(BACKFILL_STATE)).get("at")
    except ValueError:
        return None
    return float(at) if _is_number(at) else None


def write_backfill(store: CheckpointStore, at: float) -> None:
    store.write_json(BACKFILL_STATE, {"at": at})


# ============================================================================ Spark's logs
def spark_offset(store: CheckpointStore, batch_id: int) -> int | None:
    """This source's end offset (our batch number) in Spark's offset log for micro-batch `batch_id`."""
    data = store.read(f"offsets/{batch_id}")
    if data is None:
        return None
    for line in data.decode(errors="replace").splitlines()[2:]:  # 'v1', the batch metadata, one offset per source
        try:
            offset = json.loads(line)
        except ValueError:
            continue
        if isinstance(offset, dict) and _is_int(offset.get("batch")):
            return offset["batch"]
    return None


def spark_committed(store: CheckpointStore) -> int | None:
    """Our batch number that Spark's commit log says is committed (None: nothing committed yet)."""
    committed = numbered(store.names("commits"))
    return spark_offset(store, committed[-1]) if committed else None


def spark_planned(store: CheckpointStore) -> int | None:
    """Our latest batch number in Spark's offset log (None: Spark has planned nothing yet)."""
    planned = numbered(store.names("offsets"))
    return spark_offset(store, planned[-1]) if planned else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []
