"""The quarantine's own pieces on real storage: the checkpoint's source log, and files Spark's scan never shows."""

from __future__ import annotations

import json
from pathlib import Path

from streaming.quarantine import error_rows, source_batch_files


def write_log(folder: Path, name: str, entries: list[tuple[str, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["v1"] + [json.dumps({"path": p, "timestamp": 1, "batchId": b}) for p, b in entries]
    (folder / name).write_text("\n".join(lines) + "\n")


def test_batch_files_come_from_the_plain_or_the_compacted_log(spark, tmp_path: Path) -> None:
    log = tmp_path / "sources" / "0"
    write_log(log, "3", [("file:///data/Apple%20Red%201/a.jpg", 3), ("file:///data/Kaki/b.jpg", 3)])
    # Every 10th batch Spark compacts the log: batch 9 lives in 9.compact with all earlier entries.
    write_log(log, "9.compact", [("file:///data/Kaki/old.jpg", 8), ("file:///data/Kaki/c%2Bd.jpg", 9)])
    assert source_batch_files(spark, str(log), 3) == ["file:/data/Apple Red 1/a.jpg", "file:/data/Kaki/b.jpg"]
    assert source_batch_files(spark, str(log), 9) == ["file:/data/Kaki/c+d.jpg"]


def test_files_the_scan_drops_are_empty_or_missing(spark, settings, tmp_path: Path) -> None:
    (tmp_path / "Kaki").mkdir()
    empty = tmp_path / "Kaki" / "empty.jpg"
    empty.write_bytes(b"")
    listed = [f"file:{empty}", f"file:{tmp_path}/Kaki/deleted.jpg"]
    batch = spark.createDataFrame([], "path string, label string, size long, modification_time timestamp, "
                                      "ingest_time timestamp, content binary")
    rows = error_rows(batch, settings, 7, lambda path: Path(path).parent.name, listed)
    assert [(Path(r["path"]).name, r["reason"], r["size"], r["label"], r["batch_id"]) for r in rows] == [
        ("deleted.jpg", "missing", None, "Kaki", 7),
        ("empty.jpg", "empty", 0, "Kaki", 7),
    ]
