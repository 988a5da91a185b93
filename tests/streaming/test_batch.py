"""A micro-batch's pieces that need no Spark: files Spark never handed over become error rows."""

from __future__ import annotations

from datetime import datetime, timezone

from fruits.sinks import ERRORS
from streaming.batch import absent_rows


def test_listed_but_absent_files_are_empty_too_large_or_missing() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    then = datetime(2026, 12, 1, 8, 59, tzinfo=timezone.utc)
    rows = absent_rows([("file:/land/Kaki/empty.jpg", (0, then)), ("file:/land/Kaki/deleted.jpg", None),
                        ("file:/land/loose.jpg", (0, then)), ("file:/land/Kaki/replaced.jpg", (4096, then)),
                        ("file:/land/Kaki/huge.jpg", (5000, then))], 7, now, "file:/land", max_bytes=4096)
    assert rows.schema == ERRORS.schema
    assert [(r["path"].rsplit("/", 1)[1], r["reason"], r["size"], r["label"], r["batch_id"], r["modification_time"])
            for r in rows.to_pylist()] == [
        ("empty.jpg", "empty", 0, "Kaki", 7, then),
        ("deleted.jpg", "missing", None, "Kaki", 7, None),
        ("loose.jpg", "empty", 0, None, 7, then),
        ("replaced.jpg", "missing", 4096, "Kaki", 7, then),
        ("huge.jpg", "too_large", 5000, "Kaki", 7, then),
    ]
    assert rows.to_pylist()[-1]["detail"] == "5,000 bytes is over the 4,096-byte limit; not read"
