"""`fruits`: one command line for every job.

Each subcommand lives in its own module, which exposes
    configure(parser: argparse.ArgumentParser) -> None   # flags; must import nothing heavy
    run(args: argparse.Namespace) -> int                   # the job; exit code
so `fruits --help` stays fast and a job imports Spark/TensorFlow only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fruits import __version__
from fruits.console import add_common_flags, setup_logging
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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (and exit 2), like every other error of ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fruits",
        description="Fruits! image pipeline: MobileNetV2 features, PCA in Spark, MLflow registry, streaming to parquet.",
    )
    parser.add_argument("--version", action="version", version=f"fruits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_flags(command)
        module.configure(command)
        command.set_defaults(_run=module.run, _name=name)
    return parser


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
