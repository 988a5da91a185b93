"""The answers store: what the stream said about each app upload, looked up by upload id, never by scanning the lake.

The stream writes one `Answer` per app upload (fruits.appuploads) in the micro-batch that
processes it, before that batch's results commit: an idempotent upsert keyed by upload id, so a
batch redone after a crash writes the same items again and nothing else. The app reads one item
per page poll. Storage is chosen by URI (`Settings.answers_uri`):

  sqlite:///ABS/PATH.db   the embedded default (`<state>/answers.db`): WAL mode, so the app's
                          readers never wait for the stream's writer; one primary-key lookup
  dynamodb://TABLE        AWS (moto in tests): one GetItem; items expire by DynamoDB's TTL on
                          `expires_at` (and `get` hides an expired item before TTL deletes it)

An answer lives `answer_retention` (default 30 days): long enough for a person to come back to
the page, short enough that the store holds no history (the lake keeps that).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from fruits.exceptions import FruitsError
from fruits.settings import Settings

ANSWERED, REJECTED = "answered", "rejected"


@dataclass(frozen=True)
class Answer:
    """What the pipeline says about one app upload.

    `status` ANSWERED: the model's prediction (null `prediction` when the model has no classifier
    head), its `confidence`, `is_novel` ("a fruit I don't know yet"; null without a threshold),
    the `top` classes with their probabilities (best first, at most 3), the upload's projection
    neighbours in the model version's map of known images (`neighbours`: indices into it) and its
    place on that map (`map_xy`). REJECTED: the errors table's `reason` and `detail`.
    """

    upload_id: str
    status: str
    answered_at: float  # epoch seconds: when the stream processed the upload
    uploaded_at: float | None = None  # epoch seconds: the object's modification time
    consent: bool | None = None
    prediction: str | None = None
    confidence: float | None = None
    is_novel: bool | None = None
    top: tuple[tuple[str, float], ...] = ()
    neighbours: tuple[int, ...] = ()
    map_xy: tuple[float, float] | None = None
    reason: str | None = None
    detail: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # room for later fields without a store migration

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Answer:
        values = json.loads(text)
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        known["top"] = tuple((str(name), float(p)) for name, p in known.get("top") or ())
        known["neighbours"] = tuple(int(i) for i in known.get("neighbours") or ())
        if known.get("map_xy") is not None:
            known["map_xy"] = (float(known["map_xy"][0]), float(known["map_xy"][1]))
        return cls(**known)


class AnswerStore(Protocol):
    def put_many(self, answers: Iterable[Answer]) -> int:
        """Upsert by upload id (idempotent); returns how many were written."""

    def get(self, upload_id: str) -> Answer | None:
        """The answer for an upload, or None (not processed yet, unknown id, or expired)."""

    def close(self) -> None: ...


def open_answer_store(settings: Settings) -> AnswerStore:
    """The store `settings.answers_uri` names."""
    uri = settings.answers_uri
    retention = settings.answer_retention_seconds
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        return SqliteAnswers(Path(uri.removeprefix("sqlite:///")), retention)  # sqlite:////abs, sqlite:///rel
    if parts.scheme == "dynamodb" and parts.netloc:
        return DynamoAnswers(parts.netloc, settings.aws_region, settings.dynamodb_endpoint_url, retention)
    raise FruitsError(f"--answers must be sqlite:///ABS/PATH.db or dynamodb://TABLE, got {uri!r}")


class SqliteAnswers:
    """One file, one table (upload_id primary key -> JSON, expiry). A connection per thread."""

    PURGE_EVERY_S = 3600.0

    def __init__(self, path: Path, retention_s: float):
        self.path = path
        self.retention_s = retention_s
        self._local = threading.local()
        self._next_purge = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (upload_id TEXT PRIMARY KEY, body TEXT NOT NULL, "
                "expires_at REAL NOT NULL) WITHOUT ROWID"
            )

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit; explicit BEGIN below
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            self._local.db = db
        return db

    def put_many(self, answers: Iterable[Answer]) -> int:
        rows = [(a.upload_id, a.to_json(), a.answered_at + self.retention_s) for a in answers]
        if not rows:
            return 0
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO answers (upload_id, body, expires_at) VALUES (?, ?, ?) ON CONFLICT(upload_id) "
                "DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
                rows,
            )
            now = time.time()
            if now >= self._next_purge:
                db.execute("DELETE FROM answers WHERE expires_at < ?", (now,))
                self._next_purge = now + self.PURGE_EVERY_S
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows)

    def get(self, upload_id: str) -> Answer | None:
        row = (
            self._connection()
            .execute("SELECT body FROM answers WHERE upload_id = ? AND expires_at >= ?", (upload_id, time.time()))
            .fetchone()
        )
        return Answer.from_json(row[0]) if row else None

    def count(self) -> int:
        return int(self._connection().execute("SELECT count(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class DynamoAnswers:
    """A DynamoDB table keyed by `upload_id` (string), with TTL on `expires_at` (the stack creates it;
    `create_table` is for tests and local emulation)."""

    def __init__(self, table: str, region: str, endpoint: str | None, retention_s: float):
        import boto3

        self.table_name = table
        self.retention_s = retention_s
        self._resource = boto3.session.Session().resource("dynamodb", region_name=region, endpoint_url=endpoint)
        self._table = self._resource.Table(table)

    def create_table(self) -> None:
        client = self._resource.meta.client
        client.create_table(
            TableName=self.table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "upload_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "upload_id", "KeyType": "HASH"}],
        )
        client.get_waiter("table_exists").wait(TableName=self.table_name)
        client.update_time_to_live(
            TableName=self.table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

    def put_many(self, answers: Iterable[Answer]) -> int:
        written = 0
        # batch_writer sends 25 items per request and re-sends unprocessed ones; overwrite_by_pkeys
        # keeps the last of two items with the same id in one batch (DynamoDB refuses duplicates).
        with self._table.batch_writer(overwrite_by_pkeys=["upload_id"]) as batch:
            for answer in answers:
                batch.put_item(
                    Item={
                        "upload_id": answer.upload_id,
                        "status": answer.status,
                        "body": answer.to_json(),
                        "expires_at": int(answer.answered_at + self.retention_s),
                    }
                )
                written += 1
        return written

    def get(self, upload_id: str) -> Answer | None:
        item = self._table.get_item(Key={"upload_id": upload_id}, ConsistentRead=True).get("Item")
        if item is None or int(item.get("expires_at", 0)) < time.time():
            return None
        return Answer.from_json(str(item["body"]))

    def close(self) -> None:
        pass
