"""A micro-batch's pieces that need no Spark: files Spark never handed over become error rows."""

from __future__ import annotations

from datetime import datetime, timezone

from fruits.sinks import ERRORS
from streaming.batch import absent_rows


def test_listed_but_absent_files_are_empty_or_missing() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    rows = absent_rows([("file:/land/Kaki/empty.jpg", 0), ("file:/land/Kaki/deleted.jpg", None),
                        ("file:/land/loose.jpg", 0), ("file:/land/Kaki/replaced.jpg", 4096)], 7, now, "file:/land")
    assert rows.schema == ERRORS.schema
    assert [(r["path"].rsplit("/", 1)[1], r["reason"], r["size"], r["label"], r["batch_id"])
            for r in rows.to_pylist()] == [
        ("empty.jpg", "empty", 0, "Kaki", 7),
        ("deleted.jpg", "missing", None, "Kaki", 7),
        ("loose.jpg", "empty", 0, None, 7),
        ("replaced.jpg", "missing", 4096, "Kaki", 7),
    ]
