"""Look after the lake's Delta tables: what they hold, and compaction + vacuum.

  fruits lake status                  files, rows, versions of the results and errors tables
  fruits lake maintain [--vacuum-hours H]
                                      compact small files, remove unreferenced ones older than the
                                      retention (default: the table's own, 7 days), checkpoint the log

Safe while the stream runs: compaction commits alongside its appends without conflict. The stream
also does this by itself every --maintenance-interval (`fruits stream --help`).
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import add_state_dir_flag, emit_summary, settings_from_args
from fruits.settings import default_location


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "maintain"), help="what to do")
    parser.add_argument("--output", metavar="URI", help=f"results table (default {default_location('output')})")
    parser.add_argument("--errors", metavar="URI", help=f"errors table (default {default_location('errors')})")
    parser.add_argument("--vacuum-hours", type=int, metavar="H",
                        help="maintain: remove unreferenced files older than H hours (default: the table's 7 days)")
    add_state_dir_flag(parser)
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
