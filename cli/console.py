"""What every command shares: common flags, settings from flags, logging, the --json output contract."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fruits.settings import ENGINES, Settings, default_location, default_of, fields_of


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")


def default(name: str) -> Any:
    """A Settings field's default, for the help texts: stated once, in fruits/settings.py."""
    return default_of(Settings, name)


def add_state_dir_flag(parser: argparse._ActionsContainer, what: str = "state directory") -> None:
    parser.add_argument("--state-dir", type=Path, help=f"{what} (default {default('state_dir')}, env FRUITS_STATE_DIR)")


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every Spark job shares; each maps onto a Settings field (None = keep env/default)."""
    group = parser.add_argument_group("environment")
    add_state_dir_flag(group, "local state: sqlite MLflow, caches, default dirs")
    group.add_argument(
        "--tracking-uri",
        dest="mlflow_tracking_uri",
        metavar="URI",
        help="MLflow tracking + registry URI (env MLFLOW_TRACKING_URI; default sqlite in the state dir)",
    )
    group.add_argument("--spark-master", metavar="URL", help="default local[*]; spark-submit's own master wins")
    group.add_argument(
        "--engine", choices=ENGINES, help=f"featurizer engine (default {default('engine')}; keras is the reference)"
    )
    group.add_argument(
        "--weights",
        metavar="SRC",
        help=f"'imagenet' (Keras cache) or a path / s3:// URI of the MobileNetV2 no-top .h5 "
        f"(default {default('weights')})",
    )


def add_model_flags(parser: argparse.ArgumentParser, alias_help: str) -> None:
    """Flags of the jobs that register a model version: where, under which name and alias (`alias_help`: what
    the alias does in this job; the help adds its default)."""
    parser.add_argument("--model-name", metavar="NAME", help=f"registered model name (default {default('model_name')})")
    parser.add_argument("--alias", help=f"{alias_help} (default {default('alias')})")
    parser.add_argument("--experiment", help=f"MLflow experiment (default {default('experiment')})")
    parser.add_argument(
        "--features-output",
        dest="features",
        metavar="URI",
        help=f"root for the training features parquet (default {default_location('features')}); one folder per run",
    )


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from env + the flags the user gave (argparse leaves the others None)."""
    given = {k: v for k, v in vars(args).items() if k in fields_of(Settings)}
    given.update(extra)
    return Settings.load(**given)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (it may be swapped after set-up, e.g. by pytest)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("py4j", "urllib3", "botocore", "boto3", "s3transfer", "alembic", "mlflow", "werkzeug", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


def emit_summary(summary: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """The output contract: with --json the LAST line of stdout is one JSON object."""
    if as_json:
        sys.stdout.flush()
        print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    elif human:
        print(human, flush=True)
