"""Look after the lake's Delta tables: what they hold, and compaction + vacuum; and the app's retention rule.

  fruits lake status                  files, rows, versions of the results and errors tables
  fruits lake maintain [--vacuum-hours H]
                                      compact small files, remove unreferenced ones older than the
                                      retention (default: the table's own, 7 days), checkpoint the log
  fruits lake purge-private [--retention 1d]
                                      delete the app's uploads made without consent (<source>/app/private/)
                                      older than the retention (FRUITS_APP_PRIVATE_RETENTION, default 1d)

Safe while the stream runs: compaction commits alongside its appends without conflict. The stream
also does this by itself every --maintenance-interval (`fruits stream --help`). purge-private is for a
local landing folder (run it daily, e.g. from cron); on S3 the bucket's lifecycle rule on the prefix's
app/private/ does the same.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import add_state_dir_flag, emit_summary, settings_from_args
from fruits import appuploads
from fruits.exceptions import FruitsError
from fruits.settings import Settings, default_location, default_of


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "maintain", "purge-private"), help="what to do")
    parser.add_argument("--output", metavar="URI", help=f"results table (default {default_location('output')})")
    parser.add_argument("--errors", metavar="URI", help=f"errors table (default {default_location('errors')})")
    parser.add_argument(
        "--vacuum-hours",
        type=int,
        metavar="H",
        help="maintain: remove unreferenced files older than H hours (default: the table's 7 days)",
    )
    parser.add_argument(
        "--retention",
        dest="app_private_retention",
        metavar="AGE",
        help="purge-private: delete app uploads without consent older than AGE "
        f"(default {default_of(Settings, 'app_private_retention')})",
    )
    parser.add_argument(
        "--source", metavar="URI", help=f"purge-private: the stream's source (default {default_location('source')})"
    )
    add_state_dir_flag(parser)
    parser.add_argument("--endpoint-url", dest="s3_endpoint_url", help="S3-compatible endpoint (default: AWS)")


def run(args: argparse.Namespace) -> int:
    from fruits import lake

    settings = settings_from_args(args)
    if args.action == "purge-private":
        return purge_private(settings, args.json)
    tables = {"results": settings.output_uri, "errors": settings.errors_uri}
    if args.action == "maintain":
        done = {name: lake.maintain(settings, uri, vacuum_hours=args.vacuum_hours) for name, uri in tables.items()}
        summary = {name: m.as_dict() if m else None for name, m in done.items()}
    else:
        summary = {name: lake.describe(settings, uri) for name, uri in tables.items()}
    emit_summary(summary, args.json, human(summary, args.action))
    return 0


def purge_private(settings: Settings, as_json: bool) -> int:
    from app.uploads import LocalUploads, open_uploads

    uploads = open_uploads(settings)
    if not isinstance(uploads, LocalUploads):
        raise FruitsError(
            f"purge-private deletes from a local landing folder; on S3 ({settings.source_uri}) the "
            "bucket's lifecycle rule on app/private/ expires those uploads"
        )
    deleted = uploads.purge_private(settings.app_private_retention_seconds)
    folder = uploads.root / appuploads.APP_FOLDER / appuploads.PRIVATE
    emit_summary(
        {"deleted": len(deleted), "retention": settings.app_private_retention, "folder": str(folder)},
        as_json,
        f"deleted {len(deleted)} app upload(s) without consent older than "
        f"{settings.app_private_retention} from {folder}",
    )
    return 0


def human(summary: dict[str, Any], action: str) -> str:
    lines = []
    for name, info in summary.items():
        if info is None:
            lines.append(f"{name}: no table yet")
        elif action == "maintain":
            lines.append(
                f"{name}: {info['files_before']} -> {info['files_after']} files "
                f"({info['files_compacted']} compacted, {info['files_vacuumed']} vacuumed) in {info['seconds']} s"
            )
        else:
            lines.append(
                f"{name}: {info['rows']} rows in {info['files']} files, version {info['version']} ({info['uri']})"
            )
    return "\n".join(lines)
