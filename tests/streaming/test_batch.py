"""A micro-batch's pieces that need no Spark: files Spark never handed over become error rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
from support import result_rows

from fruits.sinks import ERRORS
from streaming.batch import absent_rows, prediction_summary


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


def test_the_batches_of_a_model_without_a_novelty_threshold_are_summarised() -> None:
    """A fit without --eval-images calibrates no threshold: `is_novel` is null on every row (the first batch of
    a stream of such a model failed on it: bench/scale.py's)."""
    rows = result_rows("file:/land/Kaki/a.jpg", "file:/land/Kaki/b.jpg", "file:/land/Limes/c.jpg")
    for name, values in (("prediction", ["Kaki", "Kaki", "Limes"]), ("confidence", [0.9, 0.7, 0.8])):
        rows = rows.set_column(rows.schema.get_field_index(name), rows.schema.field(name),
                               pa.array(values, rows.schema.field(name).type))
    assert rows.column("is_novel").null_count == 3
    assert prediction_summary(rows) == {"predictions": {"Kaki": 2, "Limes": 1}, "mean_confidence": 0.8,
                                        "novel_fraction": None}
