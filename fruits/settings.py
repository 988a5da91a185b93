"""One settings object for every job, built from defaults < environment < CLI flags.

Defaults run everything on one machine: `local[*]` Spark, a sqlite MLflow store and
local directories under a project-local state directory (`.fruits/`). Pointing the
URIs at `s3://` / `s3a://` and the tracking URI at a server is all it takes to run on AWS.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fruits.exceptions import FruitsError

ENGINES = ("onnx", "keras")
MiB = 1024 * 1024
AVAILABLE_NOW = "available-now"  # the stream's trigger that drains what is there, then stops

# Environment variables that are not FRUITS_<FIELD>: the standard names other tools use.
_STANDARD_ENV = {
    "mlflow_tracking_uri": ("MLFLOW_TRACKING_URI",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "s3_endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "dynamodb_endpoint_url": ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"),
    "keras_home": ("KERAS_HOME",),
}
# Fields filled from the environment only: not settings a user chooses.
_DETECTED = ("under_spark_submit", "aws_credentials")
# The standard AWS credential variables. boto3 and S3A read them in the process they run in; a driver
# started outside spark-submit hands them to a cluster's executors (fruits.spark), whose environment is not its own.
AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The intervals, parsed by the properties of these names (seconds; 0 for "off").
_INTERVALS = (
    "maintenance_interval_seconds",
    "model_refresh_interval_seconds",
    "backfill_interval_seconds",
    "notification_retention_seconds",
    "answer_retention_seconds",
    "app_upload_expiry_seconds",
    "app_private_retention_seconds",
)
# Where the optional locations default to, under the state directory (the *_uri properties, the CLI's help).
UNDER_STATE = {
    "source": "landing",
    "output": "lake/results",
    "errors": "lake/errors",
    "checkpoint": "checkpoints/stream",
    "features": "features",
}


# The local JVM's heap when FRUITS_DRIVER_MEMORY is not set. The stream runs for weeks with micro-batches of
# up to --max-files-per-trigger images. A short job (fit, refit) holds little on the heap: its features cached
# (5 KB an image; MEMORY_AND_DISK spills the rest), a 1280x1280 covariance and the PCA's SVD on the driver.
# 1g fits 10,000 images (bench/fit.py); a 4g heap let the fit's JVM grow to 1.7 GB on 320 images.
LOCAL_DRIVER_MEMORY = {"stream": "4g", "short job": "1g"}


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path(".fruits")
    # MLflow: None means a sqlite store inside state_dir.
    mlflow_tracking_uri: str | None = None
    experiment: str = "fruits"
    model_name: str = "fruits-pca"
    alias: str = "champion"
    # Featurizer
    engine: str = "onnx"
    weights: str = "imagenet"
    # Fit
    pca_k: int = 300
    # Spark: None means local[*] unless launched by spark-submit (which sets the master).
    spark_master: str | None = None
    spark_ui: bool = False
    # The local JVM's heap (driver and executors in one); None: sized to the job (LOCAL_DRIVER_MEMORY). Ignored
    # under spark-submit, where the cluster's configuration sizes the driver.
    driver_memory: str | None = None
    # Set when spark-submit started this Python driver (EMR steps): it then owns master and cluster settings.
    under_spark_submit: bool = field(default=False, compare=False)
    # The AWS credential variables of this process' environment, as (name, value) pairs; never printed.
    aws_credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)
    # Raw fit features (parquet, one folder per MLflow run): None means state_dir/features.
    features: str | None = None
    # Streaming: None means a directory under state_dir.
    source: str | None = None
    output: str | None = None
    errors: str | None = None
    checkpoint: str | None = None
    trigger: str = "2s"
    max_files_per_trigger: int = 1000
    # Notification mode: the SQS queue URL the upload notifications arrive on; None lists the source.
    notifications: str | None = None
    # Notification mode: list the prefix at first start and then this often, for notifications
    # that never came (an interval, or "off"); uploads are remembered for dedup this long.
    backfill_interval: str = "1h"
    notification_retention: str = "7d"
    # Lake maintenance from the stream (compaction + vacuum): an interval, or "off".
    maintenance_interval: str = "1h"
    # How often the stream re-resolves its model alias (hot swap), or "off" to pin the version for the run.
    model_refresh_interval: str = "10s"
    # Hostile-input limits: bigger files go to the errors table without being read.
    max_image_bytes: int = 64 * MiB
    max_image_pixels: int = 64_000_000
    # TESTS ONLY, off by default (env FRUITS_FAULT_INJECTION): "raise:MARKER" or "exit:MARKER" makes the stream's
    # featurizing step raise, or exit its Python worker with os._exit, on any upload whose bytes contain MARKER
    # (streaming.poison: how a poison upload is isolated). Unset, it changes nothing in the stream's plan.
    fault_injection: str | None = None
    # The public app's answers (fruits.answers): sqlite:///PATH.db or dynamodb://TABLE; None means
    # <state>/answers.db. Each answer is kept this long (an interval).
    answers: str | None = None
    answer_retention: str = "30d"
    # The public app (app/, `fruits app`). Its secret signs the CSRF tokens: required when the app
    # serves an S3 source (the public deployment), generated once per state dir locally; never
    # printed (repr=False). Uploads and requests per client per minute (in-process token buckets);
    # the presigned POST's lifetime; how long uploads without consent are kept (app/private/,
    # `fruits lake purge-private`; on S3 a lifecycle rule on the prefix).
    app_secret: str | None = field(default=None, repr=False)
    app_uploads_per_minute: int = 10
    app_requests_per_minute: int = 600
    app_upload_expiry: str = "5m"
    app_private_retention: str = "1d"
    # On AWS (app.aws): Secrets Manager secret ids, comma-separated, read once when the app starts so that no
    # secret sits in the function's environment. Each holds a JSON object whose keys are settings (app_secret,
    # the curator's) or an MLflow user ("username", "password"). None: nothing to read.
    secrets: str | None = None
    # Labels from the public (fruits.labels): the vote log and the curator's decisions (Delta tables; None
    # means <state>/lake/labels and <state>/lake/curation). A label trains when at least
    # label_min_clients clients name the same fruit and they are more than label_agreement of the votes
    # (iNaturalist's rule), or when a curator accepts it. A new class enters the refit with at least
    # label_min_images accepted images; label_holdout_share of each class's accepted app images (by
    # upload) is held out for the evaluation. The curators: "name:token,name:token" (tokens of 32+
    # characters; never printed); unset, /curate is refused. Votes per client address per minute.
    labels: str | None = None
    curation: str | None = None
    label_min_clients: int = 2
    label_agreement: float = 2 / 3
    label_min_images: int = 5
    label_holdout_share: float = 0.2
    curators: str | None = field(default=None, repr=False)
    app_votes_per_minute: int = 30
    # AWS
    aws_region: str = "eu-west-3"
    s3_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None
    # Keras' own cache variable (KERAS_HOME); None: the project-local cache if `fruits setup` made one.
    keras_home: Path | None = None

    def __post_init__(self) -> None:
        for name in ("state_dir", "keras_home"):  # callers may pass a str; the dataclass is frozen
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    # ---------------------------------------------------------------- build
    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then environment (FRUITS_<FIELD> or the standard name), then overrides.

        Overrides whose value is None are ignored, so argparse namespaces can be passed as-is.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "under_spark_submit": "PYSPARK_GATEWAY_PORT" in env,
            "aws_credentials": tuple((name, env[name]) for name in AWS_CREDENTIAL_VARIABLES if env.get(name)),
        }
        for f in fields(cls):
            if f.name in _DETECTED:
                continue
            names = (f"FRUITS_{f.name.upper()}", *_STANDARD_ENV.get(f.name, ()))
            for name in names:
                if env.get(name):
                    values[f.name] = _coerce(f, env[name], name)
                    break
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in fields_of(cls):
                raise TypeError(f"unknown setting {key!r}")
            values[key] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`; None resets an optional field to its default (e.g. output=None)."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise FruitsError(f"unknown engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.pca_k < 1:
            raise FruitsError(f"--pca-k must be at least 1, got {self.pca_k}")
        if self.max_files_per_trigger < 1:
            raise FruitsError("--max-files-per-trigger must be at least 1")
        if self.max_image_bytes < 1 or self.max_image_pixels < 1:
            raise FruitsError("image size limits (--max-image-mb, FRUITS_MAX_IMAGE_BYTES/PIXELS) must be positive")
        if self.fault_injection is not None and not re.match(r"^(raise|exit):.", self.fault_injection):
            raise FruitsError(
                f"FRUITS_FAULT_INJECTION must be raise:MARKER or exit:MARKER, got {self.fault_injection!r}"
            )
        if not self.model_name or not self.alias:
            raise FruitsError("model name and alias must not be empty")
        for interval in _INTERVALS:
            getattr(self, interval)  # parses it, or raises a one-line FruitsError naming its flag
        if self.app_uploads_per_minute < 1 or self.app_requests_per_minute < 1:
            raise FruitsError(
                "the app's rate limits (FRUITS_APP_UPLOADS_PER_MINUTE, FRUITS_APP_REQUESTS_PER_MINUTE) "
                "must be at least 1"
            )
        if self.label_min_clients < 2:
            raise FruitsError("FRUITS_LABEL_MIN_CLIENTS must be at least 2: one client never carries a label alone")
        if not 0.5 <= self.label_agreement < 1:
            raise FruitsError(f"FRUITS_LABEL_AGREEMENT must be in [0.5, 1), got {self.label_agreement}")
        if self.label_min_images < 1 or not 0 <= self.label_holdout_share < 1:
            raise FruitsError("FRUITS_LABEL_MIN_IMAGES must be at least 1 and FRUITS_LABEL_HOLDOUT_SHARE in [0, 1)")
        if self.app_votes_per_minute < 1:
            raise FruitsError("FRUITS_APP_VOTES_PER_MINUTE must be at least 1")
        if not 1 <= self.app_upload_expiry_seconds <= 3600:
            raise FruitsError(f"FRUITS_APP_UPLOAD_EXPIRY must be between 1s and 1h, got {self.app_upload_expiry!r}")
        if self.notifications is not None:
            if not re.match(r"^https?://[^/]+/[^/]+/[^/]+$", self.notifications):
                raise FruitsError(
                    "--notifications must be an SQS queue URL like "
                    f"https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, got {self.notifications!r}"
                )
            if not self.source_uri.startswith(("s3://", "s3a://")):
                raise FruitsError(
                    "--notifications needs --source s3://BUCKET/PREFIX/ (the prefix the notifications "
                    f"announce), got {self.source_uri!r}"
                )

    # ---------------------------------------------------------------- derived
    @property
    def state(self) -> Path:
        return self.state_dir.expanduser().resolve()

    def local_driver_memory(self, short_job: bool) -> str:
        """The local JVM's heap: FRUITS_DRIVER_MEMORY, else sized to the job (LOCAL_DRIVER_MEMORY)."""
        return self.driver_memory or LOCAL_DRIVER_MEMORY["short job" if short_job else "stream"]

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state / 'mlflow.db'}"

    @property
    def model_uri(self) -> str:
        """The registered model the stream applies and the refit challenges: its alias, resolved when used."""
        return f"models:/{self.model_name}@{self.alias}"

    @property
    def artifact_root(self) -> str:
        """Where a new experiment stores artifacts when the tracking store is local."""
        return (self.state / "mlartifacts").as_uri()

    @property
    def source_uri(self) -> str:
        return self.source or str(self.state / UNDER_STATE["source"])

    @property
    def output_uri(self) -> str:
        return self.output or str(self.state / UNDER_STATE["output"])

    @property
    def errors_uri(self) -> str:
        return self.errors or str(self.state / UNDER_STATE["errors"])

    @property
    def checkpoint_uri(self) -> str:
        return self.checkpoint or str(self.state / UNDER_STATE["checkpoint"])

    @property
    def features_uri(self) -> str:
        """Raw fit features (parquet), one folder per MLflow run, to refit PCA without MobileNet."""
        return self.features or str(self.state / UNDER_STATE["features"])

    @property
    def answers_uri(self) -> str:
        """Where the stream writes, and the app reads, the answers to app uploads (fruits.answers)."""
        return self.answers or f"sqlite:///{self.state / 'answers.db'}"

    @property
    def labels_uri(self) -> str:
        """The vote log (fruits.labels), next to the lake by default."""
        return self.labels or str(self.state / "lake" / "labels")

    @property
    def curation_uri(self) -> str:
        """The curator's decisions (fruits.labels)."""
        return self.curation or str(self.state / "lake" / "curation")

    # Intervals in seconds (0: "off"): parsed here only; validate() has checked each of them.
    @property
    def maintenance_interval_seconds(self) -> float:
        return interval_seconds(self.maintenance_interval, "--maintenance-interval", allow_off=True)

    @property
    def model_refresh_interval_seconds(self) -> float:
        return interval_seconds(self.model_refresh_interval, "--model-refresh-interval", allow_off=True)

    @property
    def backfill_interval_seconds(self) -> float:
        return interval_seconds(self.backfill_interval, "--backfill-interval", allow_off=True)

    @property
    def notification_retention_seconds(self) -> float:
        return interval_seconds(self.notification_retention, "--notification-retention")

    @property
    def answer_retention_seconds(self) -> float:
        return interval_seconds(self.answer_retention, "--answer-retention")

    @property
    def app_upload_expiry_seconds(self) -> int:
        return int(interval_seconds(self.app_upload_expiry, "FRUITS_APP_UPLOAD_EXPIRY"))

    @property
    def app_private_retention_seconds(self) -> float:
        return interval_seconds(self.app_private_retention, "--retention")

    @property
    def cache_dir(self) -> Path:
        return self.state / "cache"

    @property
    def jars_dir(self) -> Path:
        """Where the s3a jars are: this state dir's cache, else the project's (a custom --state-dir
        must not lose what `make setup` fetched once); new fetches go to this state dir."""
        for candidate in (self.state / "jars", Path(".fruits", "jars").resolve()):
            if candidate.is_dir() and any(candidate.glob("*.jar")):
                return candidate
        return self.state / "jars"

    @property
    def progress_log(self) -> Path:
        return self.state / "stream-progress.jsonl"

    @property
    def keras_cache(self) -> Path | None:
        """KERAS_HOME if set; else the project-local cache `fruits setup` fills; else None (Keras' ~/.keras)."""
        if self.keras_home is not None:
            return self.keras_home
        for local in (self.state / "keras", Path(".fruits", "keras").resolve()):
            if (local / "models").is_dir():
                return local
        return None


_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def interval_seconds(text: str, flag: str, *, allow_off: bool = False, extra: str = "") -> float:
    """'500ms', '2s', '1.5m', '1h', '7d' -> seconds; 'off' -> 0 where allowed. Anything else: a one-line error."""
    if allow_off and text.strip().lower() in ("off", "0"):
        return 0.0
    match = _INTERVAL.match(text.strip())
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]] if match else 0.0
    if seconds < 0.001:
        choices = " or 'off'" if allow_off else (f" {extra}" if extra else "")
        raise FruitsError(f"{flag} must be an interval like 2s, 500ms, 1m{choices}, got {text!r}")
    return seconds


def default_of(options: type, name: str) -> Any:
    """The default of a dataclass field (Settings, the launchers' options): where each default is stated, once;
    help texts read it from there."""
    (found,) = [f for f in fields(options) if f.name == name]
    return found.default_factory() if found.default is dataclasses.MISSING else found.default


def default_location(name: str) -> str:
    """Where an optional location (UNDER_STATE) is by default, as the help says it: `.fruits/landing`."""
    return f"{default_of(Settings, 'state_dir')}/{UNDER_STATE[name]}"


def fields_of(cls: type) -> set[str]:
    """The fields a caller may set (flags, overrides)."""
    return {f.name for f in fields(cls) if f.name not in _DETECTED}


def _coerce(f: dataclasses.Field, raw: str, name: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind.startswith("Path"):
            return Path(raw)
    except ValueError:
        raise FruitsError(f"environment variable {name}={raw!r} is not a valid {kind}") from None
    return raw
