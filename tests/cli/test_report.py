"""`fruits report`: the stream's JSON progress lines become one PNG; bad input is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

from cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def batch(n: int, version: str, at: float, predictions: dict | None = None) -> dict:
    line = {"event": "batch", "batch": n, "files": 10, "rows": 9, "errors": 1, "seconds": 2.0, "committed_at": at,
            "model_version": version, "replayed": False, "latency_p50_s": 1.2}
    if predictions:
        line.update(predictions=predictions, mean_confidence=0.9, novel_fraction=0.1)
    return line


def test_report_plots_batches_predictions_and_swaps(tmp_path: Path, capsys) -> None:
    progress = tmp_path / "stream-progress.jsonl"
    lines = [batch(0, "1", 1000.0, {"Kaki": 6, "Limes": 3}), batch(1, "1", 1030.0, {"Kaki": 9}),
             {"event": "model_swap", "from_version": "1", "to_version": "2", "at": 1040.0},
             batch(2, "2", 1060.0, {"Limes": 8, "Pear": 1}),
             {"event": "batch", "batch": 2, "replayed": True, "files": 0, "rows": 0, "errors": 0, "seconds": 0.0,
              "committed_at": 1070.0, "model_version": "2"}]
    progress.write_text("".join(json.dumps(line) + "\n" for line in lines))
    png = tmp_path / "out" / "report.png"
    assert main(["report", "--progress", str(progress), "--output", str(png), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"report": str(png), "batches": 3, "rows": 27, "errors": 3, "model_swaps": 1,
                       "model_versions": ["1", "2"]}
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000  # three panels drawn


def test_report_without_progress_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["report", "--progress", str(tmp_path / "none.jsonl"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fruits report: error: no progress lines at ")
