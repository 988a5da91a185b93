"""Settings: defaults < environment < flags, one object for every job."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruits.exceptions import FruitsError
from fruits.settings import Settings


def test_defaults_run_locally() -> None:
    s = Settings.load(env={})
    assert s.state == Path(".fruits").resolve()
    assert s.tracking_uri == f"sqlite:///{Path('.fruits').resolve() / 'mlflow.db'}"
    assert (s.engine, s.weights, s.pca_k, s.model_name, s.alias) == ("onnx", "imagenet", 300, "fruits-pca", "champion")
    assert s.source_uri.endswith(".fruits/landing") and s.output_uri.endswith(".fruits/lake/results")
    assert s.aws_region == "eu-west-3" and s.s3_endpoint_url is None


def test_environment_then_flags_win() -> None:
    env = {
        "FRUITS_ENGINE": "keras",
        "FRUITS_PCA_K": "50",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        "FRUITS_STATE_DIR": "/tmp/x",
    }
    s = Settings.load(env=env)
    assert (s.engine, s.pca_k, s.tracking_uri, s.s3_endpoint_url) == (
        "keras",
        50,
        "http://127.0.0.1:5000",
        "http://127.0.0.1:9000",
    )
    assert s.state == Path("/tmp/x")
    assert Settings.load(env=env, engine="onnx", pca_k=None).engine == "onnx"  # None = flag not given
    assert Settings.load(env=env, pca_k=None).pca_k == 50


def test_a_string_state_dir_is_a_path() -> None:
    assert Settings.load(env={}, state_dir="/tmp/fruits-str").state == Path("/tmp/fruits-str")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITS_ENGINE": "tpu"}, "unknown engine 'tpu'"),
        ({"FRUITS_PCA_K": "many"}, "FRUITS_PCA_K='many' is not a valid int"),
        ({"FRUITS_PCA_K": "0"}, "--pca-k must be at least 1"),
        ({"FRUITS_NOTIFICATIONS": "my-queue", "FRUITS_SOURCE": "s3://b/images/"}, "must be an SQS queue URL"),
        ({"FRUITS_NOTIFICATIONS": "https://sqs.eu-west-3.amazonaws.com/1/q"}, "--notifications needs --source s3://"),
        ({"FRUITS_BACKFILL_INTERVAL": "sometimes"}, "--backfill-interval must be an interval"),
        ({"FRUITS_NOTIFICATION_RETENTION": "off"}, "--notification-retention must be an interval"),
    ],
)
def test_bad_values_are_one_line_errors(env: dict, message: str) -> None:
    with pytest.raises(FruitsError, match=message):
        Settings.load(env=env)


def test_replace_can_unset_an_optional_field_and_the_environment_is_read_only_at_load() -> None:
    s = Settings.load(env={"KERAS_HOME": "/opt/keras", "FRUITS_DRIVER_MEMORY": "6g"}, output="/tmp/out")
    assert (s.keras_home, s.driver_memory, s.output_uri) == (Path("/opt/keras"), "6g", "/tmp/out")
    reset = s.replace(output=None)
    assert reset.output is None and reset.output_uri.endswith(".fruits/lake/results")
    assert Settings.load(env={}).keras_home is None  # hermetic: nothing leaks from the real environment
    assert Settings.load(env={"PYSPARK_GATEWAY_PORT": "4711"}).under_spark_submit is True


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("maintenance_interval", "often", "--maintenance-interval must be an interval like 2s, 500ms, 1m or 'off'"),
        ("model_refresh_interval", "-1s", "--model-refresh-interval must be an interval"),
    ],
)
def test_bad_intervals_are_one_line_errors(field: str, value: str, message: str) -> None:
    with pytest.raises(FruitsError, match=message):
        Settings.load(env={}, **{field: value})


def test_notification_mode_from_the_environment() -> None:
    env = {
        "FRUITS_NOTIFICATIONS": "https://sqs.eu-west-3.amazonaws.com/123456789012/fruits-uploads",
        "FRUITS_SOURCE": "s3://b/images/",
        "FRUITS_BACKFILL_INTERVAL": "off",
        "FRUITS_NOTIFICATION_RETENTION": "14d",
    }
    s = Settings.load(env=env)
    assert (s.notifications, s.backfill_interval, s.notification_retention) == (
        "https://sqs.eu-west-3.amazonaws.com/123456789012/fruits-uploads",
        "off",
        "14d",
    )
    assert Settings.load(env={}).notifications is None  # listing, by default
