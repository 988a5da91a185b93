"""`fruits`: the command line, and the composition root of the product.

Every subcommand is a module of this package exposing
    configure(parser: argparse.ArgumentParser) -> None   # its flags
    run(args: argparse.Namespace) -> int                   # wires settings into a job; exit code
Only the module of the subcommand being run is imported, and it imports its job (Spark,
MLflow, TensorFlow...) inside `run`, so `fruits --help` and `fruits stream --help` load none
of them. The layers below (jobs in fit/, streaming/, infra/; the core in fruits/) never import
this package: the contract is in pyproject.toml ([tool.importlinter]) and `make test` checks it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cli.console import add_common_flags, setup_logging
from fruits import __version__
from fruits.exceptions import FruitsError

COMMANDS: dict[str, str] = {
    "setup": "make the offline weights and the s3a jars available (run by `make`)",
    "fit": "fit StandardScaler + PCA + a classifier on MobileNetV2 features and register the model in MLflow",
    "refit": "refit the model from the lake's labelled rows (no MobileNet); promote it if it beats the champion",
    "stream": "watch the images prefix; featurize, project and append new uploads to the lake",
    "lake": "show the results and errors tables; compact and vacuum them",
    "report": "plot a stream's progress over time (throughput, latency, predictions, model swaps) as a PNG",
    "app": "serve the public app: a photo in, the fruit out within seconds (answers written by the stream)",
    "upload": "upload a folder of images to s3://bucket/prefix/, keeping class folders",
    "emr": "plan, create, feed, watch, stop and terminate the EMR cluster",
    "serverless": "plan, create, feed, watch, stop and delete the EMR Serverless application",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (and exit 2), like every other error of ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for `argv`: every command is listed, only the one `argv` names is configured."""
    parser = Parser(
        prog="fruits",
        description="Fruits! image pipeline: MobileNetV2 features, PCA in Spark, MLflow registry, streaming to a lake.",
    )
    parser.add_argument("--version", action="version", version=f"fruits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"cli.{name}")
        command = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_flags(command)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except FruitsError as exc:
        print(f"fruits {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fruits {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The `fruits` executable (also `python -m cli` and spark-submit's cli/spark_entry.py).

    Once the command is done and its output flushed, the process leaves without the interpreter's
    own teardown: native thread pools (Arrow's, delta-rs') sometimes abort it ("terminate called
    without an active exception", exit 134) after all the work succeeded, which would turn a
    finished job into a failed step. The Spark session is stopped first, as a normal exit would.
    """
    code = main()
    if "pyspark" in sys.modules:  # only if a job started one: --help stays free of Spark
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
