"""Notification-driven source: the stream reads the upload notifications on an SQS queue instead of listing.

Listing the images prefix costs one S3 LIST per 1,000 keys on every trigger, for everything ever
uploaded. This source receives the announcements instead (S3 -> upload Lambda -> SNS -> SQS, or
S3 -> SQS directly) and reads only the objects they name, with the columns Spark's binaryFile
source gives (path, modificationTime, length, content): everything after the source is shared.

One module per job:
- `messages`: an SQS body as untrusted input -> the uploads it announces, ignored, or malformed
  (size, nesting and every field checked; never raises);
- `ledger`: which uploads are pending, planned or committed (dedup), which messages wait for which batch;
- `checkpoint`: the state under the checkpoint (batch lists, index), re-checked when read back, in small
  JSON files (fruits.storage, Spark-free);
- `config`: the reader's configuration, built from Settings only;
- `feed`: the driver side: receive, dedup, cap, persist, delete after commit, backfill;
- `visibility`: held messages kept invisible (their visibility extended) until their batch commits;
- `reads`: the executor side: one conditional GET per object, the real size against the limit;
- `datasource`: the Spark adapter (Spark 4.1's DataSourceStreamReader).

A queue cannot replay, so exactly once rests on three rules:
- Before `latestOffset` returns batch k, the batch's uploads are written under the checkpoint
  (`<checkpoint>/notifications/batches/<k>.json`: a temp file renamed into place, or one S3 PUT);
  `partitions` re-reads that list, identically after a restart.
- A message is deleted only once the batch holding its uploads is committed: when Spark calls
  `commit` (while planning the next batch), or when Spark's own commit log says so (read when idle
  and at start, since Spark commits the last batch only when another one comes). Until then its
  visibility timeout is extended, so a long batch does not send it back to the queue (and, after
  maxReceiveCount receptions, to the dead-letter queue) while it is being processed.
- Uploads are recognised by (key, ETag) against the pending ones, the planned batches and the
  committed index: S3 and SNS deliver at least once, a visibility timeout that expires (after a
  crash) redelivers, and the backfill listing sees the same pair. The read is conditional on that
  ETag, so one identity is one content: a forged copy of an announcement can add a duplicate to
  count, never a second row. The index keeps `retention`; older lists are purged.

The per-batch cap counts uploads after dedup (else duplicates at the head of the queue would
stall it); uploads over the cap wait in memory (their messages come back if the process dies).
With a drain (trigger available-now: Spark 4.1 asks for one offset only) every message is taken.
A backfill lists the prefix at the first start and then every `backfill_interval`, for
notifications that never came. `s3:TestEvent`, ignored and malformed messages are counted.

Spark runs the reader in a Python process of its own on the driver (latestOffset, partitions,
commit) and `read` in the executors' Python workers: the state lives in the former, and what the
job needs to know (counts per batch) travels through the persisted lists.
"""

from fruits.notifications.checkpoint import BATCHES, INDEX, batch_counts
from fruits.notifications.config import ReaderConfig, queue_endpoint, reader_config
from fruits.notifications.datasource import SOURCE_NAME, read_stream
from fruits.notifications.feed import NotificationFeed
from fruits.notifications.ledger import Ledger
from fruits.notifications.messages import Location, Upload, parse_body
from fruits.notifications.reads import plan_partitions, read_uploads
from fruits.storage import CheckpointStore  # re-exported: the store moved to the Spark-free core

__all__ = [
    "BATCHES",
    "INDEX",
    "SOURCE_NAME",
    "CheckpointStore",
    "Ledger",
    "Location",
    "NotificationFeed",
    "ReaderConfig",
    "Upload",
    "batch_counts",
    "parse_body",
    "plan_partitions",
    "queue_endpoint",
    "read_stream",
    "read_uploads",
    "reader_config",
]
