"""Plot a stream's progress over time as a PNG, from its JSON progress lines.

Throughput and upload->commit latency per micro-batch; with a classifier head, the mean
confidence, the fraction of uploads flagged novel (an unseen fruit) and the predicted classes;
every hot model swap as a dashed line. Reads <state>/stream-progress.jsonl (and its rotated
.1 file) unless --progress names another file; `--last 1h` keeps only the last hour.

Its --json carries `stats`: the ops numbers of the window (streaming.ops.stream_stats, the same
function as the app's /ops page): throughput, latency percentiles, error reasons, class mix, novel
fraction, model versions and swaps. The PNG's title carries the headline ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.console import add_state_dir_flag, emit_summary, settings_from_args
from fruits.exceptions import FruitsError
from fruits.settings import interval_seconds


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", type=Path, metavar="FILE", help="JSON progress lines (default <state>/stream-progress.jsonl)"
    )
    parser.add_argument("--output", dest="png", type=Path, metavar="PNG", help="default <state>/stream-report.png")
    add_state_dir_flag(parser)
    parser.add_argument("--last", metavar="EVERY", help="only the last EVERY of progress, e.g. 1h (default: all)")


def run(args: argparse.Namespace) -> int:
    from fruits import plots
    from streaming.monitor import read_progress
    from streaming.ops import stream_stats

    settings = settings_from_args(args)
    since = time.time() - interval_seconds(args.last, "--last") if args.last else None
    source = args.progress or settings.progress_log
    if not (source.is_file() or source.with_name(source.name + ".1").is_file()):
        raise FruitsError(f"no progress lines at {source}: run `fruits stream` first, or pass --progress FILE")
    batches, swaps = read_progress(source, since)
    if not batches:
        raise FruitsError(f"{source} holds no micro-batch{f' in the last {args.last}' if args.last else ''} yet")
    stats = stream_stats(batches, swaps, since=since)
    png = args.png or settings.state / "stream-report.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    rows = sum(b["rows"] for b in batches)
    plots.stream_report(
        batches,
        swaps,
        png,
        title=f"{len(batches)} micro-batches, {rows} rows, {len(swaps)} model swap(s)\n{headline(stats)}",
    )
    summary = {
        "report": str(png),
        "batches": len(batches),
        "rows": rows,
        "errors": sum(b["errors"] for b in batches),
        "model_swaps": len(swaps),
        "model_versions": sorted({b["model_version"] for b in batches}),
        "stats": stats,
    }
    emit_summary(
        summary, args.json, f"wrote {png}: {len(batches)} micro-batches, {rows} rows, {len(swaps)} model swap(s)"
    )
    return 0


def headline(stats: dict) -> str:
    """The ops numbers a person reads first, on one line."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    parts = [f"upload->commit p50 {seconds(stats['latency_p50_s'])}, p95 {seconds(stats['latency_p95_s'])}"]
    if stats["answers"]:
        parts.append(f"{stats['answers']} app answers, p95 {seconds(stats['answer_latency_p95_s'])}")
    if stats["novel_fraction"] is not None:
        parts.append(f"novel {stats['novel_fraction']:.0%}")
    if stats["error_reasons"]:
        parts.append("errors: " + ", ".join(f"{reason} {n}" for reason, n in list(stats["error_reasons"].items())[:3]))
    return "; ".join(parts)
