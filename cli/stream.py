"""Watch the images prefix; featurize, project and append each new upload to the lake.

A long-running Spark Structured Streaming job (EMR in production, local[*] here). The model is
resolved from the MLflow registry by alias and refused if it was fitted with a different
featurizer; when the alias moves to a new compatible version, the stream swaps it in between
micro-batches, without a restart. Each upload is read once and lands in one
of two Delta tables, results or errors, exactly once. SIGTERM, Ctrl-C or a `_stop` object under
the checkpoint stops after the current micro-batch (a second signal stops at once); a restart
resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cli.console import add_job_flags, default, emit_summary, settings_from_args
from fruits.settings import AVAILABLE_NOW, MiB, Settings, default_location


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", metavar="URI", help=f"images prefix to watch (default {default_location('source')})"
    )
    parser.add_argument(
        "--notifications",
        metavar="QUEUE_URL",
        help="read the upload notifications on this SQS queue instead of listing --source on every "
        "trigger (--source must then be s3://BUCKET/PREFIX/)",
    )
    parser.add_argument(
        "--backfill-interval",
        metavar="EVERY",
        help="with --notifications: list --source at the first start and then every EVERY, for "
        f"notifications that never came (default {default('backfill_interval')}), or 'off' "
        "after the first start",
    )
    parser.add_argument(
        "--notification-retention",
        metavar="AGE",
        help="with --notifications: how long uploads are remembered to recognise duplicate "
        f"notifications (default {default('notification_retention')}; keep it above the queue's "
        "message retention)",
    )
    parser.add_argument("--output", metavar="URI", help=f"results table (default {default_location('output')})")
    parser.add_argument("--errors", metavar="URI", help=f"errors table (default {default_location('errors')})")
    parser.add_argument(
        "--checkpoint", metavar="URI", help=f"checkpoint root (default {default_location('checkpoint')})"
    )
    parser.add_argument("--model", metavar="URI", help=f"registered model (default {Settings().model_uri})")
    parser.add_argument(
        "--trigger",
        metavar="EVERY",
        help=f"micro-batch interval like 2s, 500ms, 1m (default {default('trigger')}), "
        f"or '{AVAILABLE_NOW}' to drain what is there and stop",
    )
    parser.add_argument(
        "--max-files-per-trigger",
        type=int,
        metavar="N",
        help=f"backpressure: at most N files per micro-batch (default {default('max_files_per_trigger')})",
    )
    parser.add_argument(
        "--max-image-mb",
        type=float,
        metavar="MB",
        help=f"files over this size go to the errors table unread (default {default('max_image_bytes') / MiB:g})",
    )
    parser.add_argument(
        "--maintenance-interval",
        metavar="EVERY",
        help="compact and vacuum the tables every EVERY while streaming "
        f"(default {default('maintenance_interval')}), or 'off'",
    )
    parser.add_argument(
        "--model-refresh-interval",
        metavar="EVERY",
        help="re-resolve the model alias every EVERY and swap in a new champion between "
        f"micro-batches (default {default('model_refresh_interval')}), or 'off' to keep the "
        "version resolved at start",
    )
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    from fruits.memory import tune_malloc
    from streaming.job import StreamingJob

    # This process is the long-lived driver: before Spark and the stream allocate anything (fruits.memory).
    logging.getLogger(__name__).info("allocator: %s", tune_malloc())
    limits = {"max_image_bytes": int(args.max_image_mb * MiB)} if args.max_image_mb is not None else {}
    job = StreamingJob(settings_from_args(args, **limits), model_uri=args.model)
    try:
        job.start()
        job.run_until_stopped(handle_signals=True)
    finally:
        job.stop()
    summary = job.summary()
    emit_summary(summary, args.json, human_summary(summary))
    return 0


def human_summary(s: dict[str, Any]) -> str:
    latency = (
        f", upload->commit latency p50 {s['latency_p50_s']:.1f} s, p95 {s['latency_p95_s']:.1f} s"
        if s.get("latency_p50_s") is not None
        else ""
    )
    counts = s.get("source_counts") or {}
    source = (
        f"notifications on {s['notification_queue']} ({counts.get('duplicates', 0)} duplicates, "
        f"{counts.get('backfilled', 0)} backfilled, {counts.get('test_events', 0)} test events, "
        f"{counts.get('malformed', 0)} malformed skipped)"
        if s.get("source_mode") == "notifications"
        else "listing"
    )
    poisoned = f" ({s['poisoned']} poison uploads: see the log)" if s.get("poisoned") else ""
    return (
        f"streamed {s['rows']} rows and {s['errors']} errors{poisoned} in {s['batches']} batches with "
        f"{s['model_name']} v{s['model_version']} ({s['seconds']:.0f} s{latency})\n"
        f"  source: {source}\n"
        f"  results: {s['output']}\n  errors:  {s['errors_output']}\n  checkpoint: {s['checkpoint']}"
    )
