"""Run the whole pipeline end to end on one machine and show how fast and how good it is.

    python -m demo [--aws-emulated] [--limit N]      (what `make demo` and `make demo-aws` run)

Local: fit on subset/ (evaluated on test/, unseen fruits from extra_classes/), stream the first
half of stream/ through a landing folder while it is uploaded; refit from the lake while the
stream runs, promote the challenger if it beats the champion on test/, and let the running
stream swap to it; stream the second half. Then print the accuracy before and after, what each
model version classified, rows per class, errors, throughput, upload->commit latency and where
the tables and the plots are.

--aws-emulated: the same on the event-driven AWS architecture emulated on 127.0.0.1: a moto
server (S3, SNS, SQS) and a real `mlflow server` whose artifacts go to the emulated bucket.
moto cannot run a Lambda (that needs Docker), so S3's ObjectCreated events are delivered to
an SQS queue and a local poller calls the Lambda's handler(event, None) for each, exactly as
the Lambda runtime would. Everything is torn down at the end, also on Ctrl-C.

Both modes write plots (a PNG folder under the state dir, also logged to the fit's MLflow
run under demo/): streamed images on the first two principal components over the fit
images, the stream over time (throughput, predictions, model swaps), the explained variance,
the classifier's confusion on test/ and its novelty scores.

The demo is development tooling (it needs the `dev` extra: moto); it is not part of the wheel.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.console import add_common_flags, add_job_flags, emit_summary, settings_from_args, setup_logging
from cli.main import Parser
from demo.emulated_aws import patched_env
from fruits.exceptions import FruitsError

DATA_ENV = "FRUITS_DATA"
DEFAULT_DATA = Path("../shared/data/fruits360")
SPLITS = ("subset", "stream", "test")  # extra_classes/ (unseen fruits) is used when present
SPLITS_TEXT = "subset/, stream/ and test/"
# Download bars for every artifact, and run URLs on stdout that point at a server the demo stops.
QUIET_MLFLOW = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help=f"folder holding {SPLITS_TEXT} (default ${DATA_ENV} or {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--aws-emulated",
        action="store_true",
        help="run against emulated AWS on 127.0.0.1: moto S3/SNS/SQS, a real mlflow server, s3a://",
    )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="stream only N images of stream/, spread over the classes (quick looks, tests)",
    )
    parser.add_argument(
        "--skip-fit",
        action="store_true",
        help="reuse the model registered as NAME@ALIAS (e.g. by an earlier demo) instead of fitting "
        "again (local mode only)",
    )
    parser.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="stream stream/ in one go, without the refit and hot model swap half-way (local mode)",
    )
    parser.add_argument("--model-name", metavar="NAME", help="registered model name (default fruits-pca)")
    parser.add_argument("--alias", help="registry alias the fit moves and the stream uses (default champion)")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    images = images_root(args.images)
    if args.limit is not None and args.limit < 1:
        raise FruitsError(f"--limit must be at least 1, got {args.limit}")
    if args.aws_emulated and args.skip_fit:
        raise FruitsError("--skip-fit cannot be used with --aws-emulated: each emulated run starts an empty registry")
    if args.aws_emulated and args.mlflow_tracking_uri:
        raise FruitsError("--tracking-uri cannot be used with --aws-emulated: the demo starts its own mlflow server")
    settings = settings_from_args(args)
    progress = not args.quiet
    with sigterm_as_interrupt(), patched_env(QUIET_MLFLOW):
        from demo import report  # Spark, MLflow, TensorFlow: only once the flags are valid
        from demo import run as steps

        if args.aws_emulated:
            summary = steps.demo_aws(settings, images, limit=args.limit, progress=progress)
        else:
            summary = steps.demo_local(
                settings, images, limit=args.limit, skip_fit=args.skip_fit, with_refit=args.refit, progress=progress
            )
    emit_summary(summary, args.json, report.human_summary(summary))
    return 0 if summary["complete"] else 1


def images_root(given: Path | None) -> Path:
    """--images, else $FRUITS_DATA, else ../shared/data/fruits360 from the current directory."""
    root = given or Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
    if not root.is_dir():
        how = "--images" if given else f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default"
        raise FruitsError(f"images folder not found: {root} ({how}): pass --images DIR holding {SPLITS_TEXT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise FruitsError(f"{root} has no {', '.join(s + '/' for s in missing)}: --images must hold {SPLITS_TEXT}")
    return root.resolve()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return run(args)
    except FruitsError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
