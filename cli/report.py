"""Plot a stream's progress over time as a PNG, from its JSON progress lines.

Throughput and upload->commit latency per micro-batch; with a classifier head, the mean
confidence, the fraction of uploads flagged novel (an unseen fruit) and the predicted classes;
every hot model swap as a dashed line. Reads <state>/stream-progress.jsonl (and its rotated
.1 file) unless --progress names another file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.console import emit_summary, settings_from_args
from fruits.exceptions import FruitsError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", type=Path, metavar="FILE",
                        help="JSON progress lines (default <state>/stream-progress.jsonl)")
    parser.add_argument("--output", dest="png", type=Path, metavar="PNG", help="default <state>/stream-report.png")
    parser.add_argument("--state-dir", type=Path, help="state directory (default .fruits, env FRUITS_STATE_DIR)")


def run(args: argparse.Namespace) -> int:
    from fruits import plots
    from streaming.monitor import read_progress

    settings = settings_from_args(args)
    source = args.progress or settings.progress_log
    if not (source.is_file() or source.with_name(source.name + ".1").is_file()):
        raise FruitsError(f"no progress lines at {source}: run `fruits stream` first, or pass --progress FILE")
    batches, swaps = read_progress(source)
    if not batches:
        raise FruitsError(f"{source} holds no micro-batch yet")
    png = args.png or settings.state / "stream-report.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    rows = sum(b["rows"] for b in batches)
    plots.stream_report(batches, swaps, png, title=f"{len(batches)} micro-batches, {rows} rows, "
                                                   f"{len(swaps)} model swap(s)")
    summary = {"report": str(png), "batches": len(batches), "rows": rows, "errors": sum(b["errors"] for b in batches),
               "model_swaps": len(swaps), "model_versions": sorted({b["model_version"] for b in batches})}
    emit_summary(summary, args.json, f"wrote {png}: {len(batches)} micro-batches, {rows} rows, "
                                     f"{len(swaps)} model swap(s)")
    return 0
