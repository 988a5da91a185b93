"""Look after the lake's Delta tables: what they hold, and compaction + vacuum.

  fruits lake status                  files, rows, versions of the results and errors tables
  fruits lake maintain [--vacuum-hours H]
                                      compact small files, remove unreferenced ones older than the
                                      retention (default: the table's own, 7 days), checkpoint the log

Safe while the stream runs: compaction commits alongside its appends without conflict. The stream
also does this by itself every --maintenance-interval (default 1h).
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import emit_summary, settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "maintain"), help="what to do")
    parser.add_argument("--output", metavar="URI", help="results table (default .fruits/lake/results)")
    parser.add_argument("--errors", metavar="URI", help="errors table (default .fruits/lake/errors)")
    parser.add_argument("--vacuum-hours", type=int, metavar="H",
                        help="maintain: remove unreferenced files older than H hours (default: the table's 7 days)")
    parser.add_argument("--state-dir", help="state directory (default .fruits, env FRUITS_STATE_DIR)")
    parser.add_argument("--endpoint-url", dest="s3_endpoint_url", help="S3-compatible endpoint (default: AWS)")


def run(args: argparse.Namespace) -> int:
    from fruits import lake

    settings = settings_from_args(args)
    tables = {"results": settings.output_uri, "errors": settings.errors_uri}
    if args.action == "maintain":
        done = {name: lake.maintain(settings, uri, vacuum_hours=args.vacuum_hours) for name, uri in tables.items()}
        summary = {name: m.as_dict() if m else None for name, m in done.items()}
    else:
        summary = {name: lake.describe(settings, uri) for name, uri in tables.items()}
    emit_summary(summary, args.json, human(summary, args.action))
    return 0


def human(summary: dict[str, Any], action: str) -> str:
    lines = []
    for name, info in summary.items():
        if info is None:
            lines.append(f"{name}: no table yet")
        elif action == "maintain":
            lines.append(f"{name}: {info['files_before']} -> {info['files_after']} files "
                         f"({info['files_compacted']} compacted, {info['files_vacuumed']} vacuumed) in {info['seconds']} s")
        else:
            lines.append(f"{name}: {info['rows']} rows in {info['files']} files, version {info['version']} ({info['uri']})")
    return "\n".join(lines)
