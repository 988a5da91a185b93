"""`fruits`: one command line for every job.

Each subcommand lives in its own module, which exposes
    configure(parser: argparse.ArgumentParser) -> None   # flags; must import nothing heavy
    run(args: argparse.Namespace) -> int                   # the job; exit code
so `fruits --help` stays fast and a job imports Spark/TensorFlow only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from fruits import __version__
from fruits.errors import FruitsError

COMMANDS: dict[str, tuple[str, str]] = {
    "setup": ("fruits.setup", "make the offline weights and the s3a jars available (run by `make`)"),
    "fit": ("fit.job", "fit StandardScaler + PCA on MobileNetV2 features and register the model in MLflow"),
    "stream": ("streaming.job", "watch the images prefix; featurize, project and append new uploads to parquet"),
    "upload": ("fruits.upload", "upload a folder of images to s3://bucket/prefix/, keeping class folders"),
    "emr": ("infra.emr", "plan, create, feed, watch and terminate the EMR cluster"),
    "demo": ("fruits.demo", "run the whole pipeline end to end on one machine"),
}

log = logging.getLogger("fruits")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fruits",
        description="Fruits! image pipeline: MobileNetV2 features, PCA in Spark, MLflow registry, streaming to parquet.",
    )
    parser.add_argument("--version", action="version", version=f"fruits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        add_common_flags(command)
        module.configure(command)
        command.set_defaults(_run=module.run, _name=name)
    return parser


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("py4j", "urllib3", "botocore", "boto3", "s3transfer", "alembic", "mlflow", "werkzeug", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


def emit_summary(summary: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """The output contract: with --json the LAST line of stdout is one JSON object."""
    if as_json:
        sys.stdout.flush()
        print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    elif human:
        print(human, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except FruitsError as exc:
        print(f"fruits {args._name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fruits {args._name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
