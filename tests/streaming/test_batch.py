"""A micro-batch's pieces that need no Spark: files Spark never handed over become error rows; what the
model said of a batch, whatever columns it can produce."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from fruits.sinks import ERRORS
from streaming.batch import absent_rows, prediction_summary


def test_listed_but_absent_files_are_empty_too_large_or_missing() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    then = datetime(2026, 12, 1, 8, 59, tzinfo=UTC)
    rows = absent_rows(
        [
            ("file:/land/Kaki/empty.jpg", (0, then)),
            ("file:/land/Kaki/deleted.jpg", None),
            ("file:/land/loose.jpg", (0, then)),
            ("file:/land/Kaki/replaced.jpg", (4096, then)),
            ("file:/land/Kaki/huge.jpg", (5000, then)),
        ],
        7,
        now,
        "file:/land",
        max_bytes=4096,
    )
    assert rows.schema == ERRORS.schema
    assert [
        (r["path"].rsplit("/", 1)[1], r["reason"], r["size"], r["label"], r["batch_id"], r["modification_time"])
        for r in rows.to_pylist()
    ] == [
        ("empty.jpg", "empty", 0, "Kaki", 7, then),
        ("deleted.jpg", "missing", None, "Kaki", 7, None),
        ("loose.jpg", "empty", 0, None, 7, then),
        ("replaced.jpg", "missing", 4096, "Kaki", 7, then),
        ("huge.jpg", "too_large", 5000, "Kaki", 7, then),
    ]
    assert rows.to_pylist()[-1]["detail"] == "5,000 bytes is over the 4,096-byte limit; not read"


def test_what_the_model_said_skips_the_columns_it_cannot_produce() -> None:
    def results(prediction, confidence, is_novel) -> pa.Table:
        return pa.table(
            {
                "prediction": pa.array(prediction, pa.string()),
                "confidence": pa.array(confidence, pa.float64()),
                "is_novel": pa.array(is_novel, pa.bool_()),
            }
        )

    assert prediction_summary(results(["Kaki", "Kaki", "Pear"], [0.9, 0.7, 0.5], [False, False, True])) == {
        "predictions": {"Kaki": 2, "Pear": 1},
        "mean_confidence": 0.7,
        "novel_fraction": 0.3333,
    }
    # A head but no novelty threshold (a fit without held-out images): no fraction, the rest as usual.
    assert prediction_summary(results(["Kaki", "Pear"], [0.9, 0.6], [None, None])) == {
        "predictions": {"Kaki": 1, "Pear": 1},
        "mean_confidence": 0.75,
        "novel_fraction": None,
    }
    # No head at all: nothing to say.
    assert prediction_summary(results([None, None], [None, None], [None, None])) == {}
    assert prediction_summary(results([], [], [])) == {}
