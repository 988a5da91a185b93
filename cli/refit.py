"""Refit the registered model from the lake, without MobileNet: champion/challenger.

Reads the labelled rows of the results table (the stream's uploads: 1280 features and the class
folder of each), optionally only those ingested from --since to --until, plus the champion's own
training features, and fits the same pipeline (scaler -> PCA -> classifier) on them. The
--eval-images are featurized once and both models are measured on them. The new version is
registered under @challenger; @champion moves to it only if its accuracy is strictly higher
(--force: anyway). Both accuracies are logged in the run and printed.

  fruits refit --eval-images ../shared/data/fruits360/test --json
  fruits refit --eval-images s3://bucket/eval/ --output s3://bucket/results/ --since 2026-12-01
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from cli.console import add_job_flags, add_model_flags, emit_summary, settings_from_args
from fruits.settings import default_location


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval-images",
        required=True,
        metavar="URI",
        help="held-out labelled images: both models are measured on them (featurized once)",
    )
    parser.add_argument(
        "--novelty-images",
        metavar="URI",
        help="labelled images of classes the model does not know: novelty AUROC (default: none)",
    )
    parser.add_argument("--output", metavar="URI", help=f"the results table (default {default_location('output')})")
    parser.add_argument("--since", type=iso_date, metavar="YYYY-MM-DD", help="only rows ingested on or after")
    parser.add_argument("--until", type=iso_date, metavar="YYYY-MM-DD", help="only rows ingested on or before")
    parser.add_argument("--force", action="store_true", help="promote the challenger even if it does not win")
    add_model_flags(parser, "the champion's alias")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    from fit.refit import refit

    summary = refit(
        settings_from_args(args),
        args.eval_images,
        novelty_uri=args.novelty_images,
        since=args.since,
        until=args.until,
        force=args.force,
        progress=not args.quiet,
    )
    emit_summary(summary, args.json, human_summary(summary))
    return 0


def human_summary(s: dict[str, Any]) -> str:
    champion = s["champion_classifier_accuracy"]
    outcome = (
        f"promoted to @{s['champion_alias']}"
        if s["promoted"]
        else f"@{s['champion_alias']} stays v{s['champion_version']}"
    )
    lines = [
        f"refitted {s['model_name']} v{s['model_version']} (@{s['alias']}) on {s['images']} rows "
        f"({s['rows_from_lake']} from the lake, {s['rows_from_champion']} from v{s['champion_version_before']}'s "
        f"training set), {s['classes']} classes, in {s['seconds']:.0f} s: {outcome}",
        f"  accuracy on {s['eval_images']} held-out images: challenger {s['classifier_accuracy']:.3f}, champion "
        + (f"{champion:.3f}" if champion is not None else "none (no classifier)"),
        f"  decision: {s['decision']}",
    ]
    if s["lake_rows_of_another_featurizer"]:
        lines.append(f"  left out {s['lake_rows_of_another_featurizer']} lake rows of another featurizer")
    if s["novelty_auroc"] is not None:
        lines.append(f"  novelty AUROC {s['novelty_auroc']:.3f}, {s['novelty_detected']:.0%} of unseen flagged")
    lines += [f"  run {s['run_id']} in {s['tracking_uri']}", f"  plots: {s['plots_uri']}"]
    return "\n".join(lines)
