"""MLflow helpers: connect, log a fitted model with its featurizer identity, resolve an alias.

The registered model version carries the featurizer identity as tags
(`featurizer.weights_sha256`, `featurizer.input_size`, `featurizer.preprocessing`, ...), so any
consumer can find the exact featurizer a model was fitted with, and the stream can refuse a
mismatch before it writes a single row.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import mlflow
import mlflow.spark
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel

from fruits.exceptions import FruitsError
from fruits.featurize import FeaturizerSpec
from fruits.settings import Settings

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"
# Registered-version tags the fit writes and whatever applies the model reads (fruits.project).
NOVELTY_SCORE_TAG = "novelty.score"
NOVELTY_THRESHOLD_TAG = "novelty.threshold"
FEATURES_URI_TAG = "fit.features_uri"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and registry) at the settings' store and return a client."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:"):
        settings.state.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The experiment's id, creating it with a local artifact root when the store is local.

    A server decides its own artifact root (e.g. --artifacts-destination s3://bucket/mlflow/).
    """
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = settings.artifact_root if is_local_store(settings.tracking_uri) else None
    return client.create_experiment(settings.experiment, artifact_location=location)


def model_version_tags(spec: FeaturizerSpec, extra: dict[str, Any]) -> dict[str, str]:
    tags = spec.as_tags()
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def log_model(model: PipelineModel, pip_requirements: list[str]) -> str:
    """Log the PipelineModel in the active run; returns its model URI (runs:/...)."""
    # Explicit requirements: inferring them takes ~35 s instead of ~2 s.
    return mlflow.spark.log_model(model, artifact_path=MODEL_ARTIFACT_PATH, pip_requirements=pip_requirements).model_uri


def register(client: MlflowClient, model_uri: str, *, name: str, alias: str, tags: dict[str, str]) -> str:
    """Register a logged model with its tags and point `alias` at the new version. Returns the version."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as @%s", name, version.version, alias)
    return str(version.version)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str | None
    spec: FeaturizerSpec | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def novelty_threshold(self) -> float | None:
        """The `is_novel` threshold calibrated by the fit on held-out known images (None: not calibrated)."""
        value = self.tags.get(NOVELTY_THRESHOLD_TAG)
        return float(value) if value not in (None, "") else None

    @property
    def uri(self) -> str:
        """Pinned to the version: an alias moved later does not change a running stream."""
        return f"models:/{self.name}/{self.version}"


def resolve(client: MlflowClient, model_uri: str) -> ResolvedModel:
    """'models:/NAME@ALIAS' or 'models:/NAME/VERSION' -> the registered version and its featurizer."""
    match = _MODEL_URI.match(model_uri)
    if not match:
        raise FruitsError(f"--model must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri!r}")
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        else:
            version = client.get_model_version(name, match["version"])
    except MlflowException as exc:
        raise FruitsError(
            f"model {model_uri} not found in the registry at {client._registry_uri}: run `fruits fit` first "
            f"({exc.error_code})"
        ) from None
    tags = dict(version.tags or {})
    return ResolvedModel(
        name=name, version=str(version.version), run_id=version.run_id, spec=FeaturizerSpec.from_tags(tags), tags=tags
    )


def load_spark_model(resolved: ResolvedModel) -> PipelineModel:
    return mlflow.spark.load_model(resolved.uri)
