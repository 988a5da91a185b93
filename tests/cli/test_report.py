"""`fruits report`: the stream's JSON progress lines become one PNG; bad input is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def batch(n: int, version: str, at: float, predictions: dict | None = None) -> dict:
    line = {
        "event": "batch",
        "batch": n,
        "files": 10,
        "rows": 9,
        "errors": 1,
        "seconds": 2.0,
        "committed_at": at,
        "model_version": version,
        "replayed": False,
        "latency_p50_s": 1.2,
    }
    if predictions:
        line.update(predictions=predictions, mean_confidence=0.9, novel_fraction=0.1)
    return line


def test_report_plots_batches_predictions_and_swaps(tmp_path: Path, capsys) -> None:
    progress = tmp_path / "stream-progress.jsonl"
    lines = [
        batch(0, "1", 1000.0, {"Kaki": 6, "Limes": 3}),
        batch(1, "1", 1030.0, {"Kaki": 9}),
        {"event": "model_swap", "from_version": "1", "to_version": "2", "at": 1040.0},
        batch(2, "2", 1060.0, {"Limes": 8, "Pear": 1}),
        {
            "event": "batch",
            "batch": 2,
            "replayed": True,
            "files": 0,
            "rows": 0,
            "errors": 0,
            "seconds": 0.0,
            "committed_at": 1070.0,
            "model_version": "2",
        },
    ]
    progress.write_text("".join(json.dumps(line) + "\n" for line in lines))
    png = tmp_path / "out" / "report.png"
    assert main(["report", "--progress", str(progress), "--output", str(png), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stats = summary.pop("stats")
    assert summary == {
        "report": str(png),
        "batches": 3,
        "rows": 27,
        "errors": 3,
        "model_swaps": 1,
        "model_versions": ["1", "2"],
    }
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000  # three panels drawn
    # The ops numbers (streaming.ops.stream_stats, as the app's /ops): lines written before per-file latencies
    # and error reasons existed still count in the totals.
    assert (stats["files"], stats["class_mix"], stats["model_version"], stats["latency_p50_s"]) == (
        30,
        {"Kaki": 15, "Limes": 11, "Pear": 1},
        "2",
        None,
    )
    assert [s["to_version"] for s in stats["model_swaps"]] == ["2"] and stats["window_start"] == 998.0


def test_report_of_the_last_minutes_has_the_ops_numbers_of_that_window(tmp_path: Path, capsys) -> None:
    import time

    now = time.time()
    progress = tmp_path / "stream-progress.jsonl"
    old = batch(0, "1", now - 7200, {"Kaki": 9})
    recent = {
        **batch(1, "1", now - 60, {"Limes": 9}),
        "latencies_ms": [500] * 9 + [9000],
        "error_reasons": {"not_an_image": 1},
        "answers": 2,
        "answer_latencies_ms": [800, 1200],
    }
    progress.write_text("".join(json.dumps(line) + "\n" for line in (old, recent)))
    assert (
        main(["report", "--progress", str(progress), "--output", str(tmp_path / "r.png"), "--last", "1h", "--json"])
        == 0
    )
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stats"]
    assert (stats["batches"], stats["class_mix"], stats["error_reasons"], stats["answers"]) == (
        1,
        {"Limes": 9},
        {"not_an_image": 1},
        2,
    )
    assert (stats["latency_p50_s"], stats["latency_max_s"], stats["answer_latency_p50_s"]) == (0.5, 9.0, 1.0)
    assert stats["files_per_s"] == pytest.approx(10 / 3600, abs=1e-3)


def test_report_without_progress_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["report", "--progress", str(tmp_path / "none.jsonl"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fruits report: error: no progress lines at ")
