"""What a fit leaves behind: one MLflow run (params, metrics, plots, the model, its registered
version and alias) and the summary the CLI prints (the `fruits fit --json` contract)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyspark
from mlflow import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from fit.evaluation import Evaluation
from fruits import plots, registry
from fruits.featurize import Featurizer
from fruits.project import MODEL_INPUT_COL, MODEL_OUTPUT_COL
from fruits.settings import Settings


@dataclass(frozen=True)
class Logged:
    run_id: str
    version: str
    features_uri: str
    artifact_uri: str


def explained_variance(model: PipelineModel) -> np.ndarray:
    return np.asarray(model.stages[-1].explainedVariance.toArray())


def log_and_register(
    client: MlflowClient,
    experiment_id: str,
    settings: Settings,
    featurizer: Featurizer,
    model: PipelineModel,
    valid: DataFrame,
    fit_points: pd.DataFrame,
    evaluation: Evaluation | None,
    skipped: list[tuple[str, str]],
    *,
    images_uri: str,
    eval_uri: str | None,
    featurize_rate: float,
) -> Logged:
    """One MLflow run: raw features, params, metrics, plots, featurizer identity, the model, the alias."""
    labels = fit_points["label"].tolist()
    classes = sorted(set(labels))
    ratios = explained_variance(model)
    with mlflow.start_run(experiment_id=experiment_id) as active:
        run_id = active.info.run_id
        # Raw features, to refit without MobileNet.
        features_uri = f"{settings.features_uri.rstrip('/')}/{run_id}"
        valid.select("path", "label", "features").write.mode("overwrite").parquet(features_uri)
        mlflow.set_tags(featurizer.spec.as_tags())
        mlflow.log_params({
            "pca_k": settings.pca_k,
            "engine": featurizer.engine,
            "weights": settings.weights,
            "weights_sha256": featurizer.spec.weights_sha256,
            "input_size": featurizer.spec.input_size,
            "preprocessing": featurizer.spec.preprocessing,
            "images_uri": images_uri,
            "eval_images_uri": eval_uri or "",
            "images": len(labels),
            "classes": len(classes),
            "skipped": len(skipped),
            "features_uri": features_uri,
        })
        metrics = {"explained_variance": float(ratios.sum()), "featurize_images_per_second": featurize_rate}
        if evaluation:
            metrics.update(knn_accuracy=evaluation.knn_accuracy, knn_accuracy_raw=evaluation.knn_accuracy_raw)
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            plots.explained_variance(ratios, out / "explained_variance.png")
            plots.projection_2d(
                np.stack(fit_points["pca"].to_numpy())[:, :2], labels, out / "projection_2d.png",
                title=f"Fit images in PCA space (PC1, PC2): {len(labels)} images, {len(classes)} classes",
            )
            if evaluation:
                plots.confusion(evaluation.truth, evaluation.predicted, out / "knn_confusion.png",
                                title=f"1-NN on held-out images: accuracy {evaluation.knn_accuracy:.3f}")
            mlflow.log_artifacts(str(out), "plots")
            (out / "featurizer.json").write_text(json.dumps(featurizer.spec.as_dict(), indent=2))
            mlflow.log_artifact(str(out / "featurizer.json"))
            if skipped:
                (out / "skipped.tsv").write_text("path\treason\n" + "".join(f"{p}\t{r}\n" for p, r in skipped))
                mlflow.log_artifact(str(out / "skipped.tsv"))
        version = registry.log_and_register(
            client,
            model,
            name=settings.model_name,
            alias=settings.alias,
            tags=registry.model_version_tags(
                featurizer.spec,
                {"model.input_col": MODEL_INPUT_COL, "model.output_col": MODEL_OUTPUT_COL,
                 "pca_k": settings.pca_k, "fit.features_uri": features_uri},
            ),
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        return Logged(run_id, version, features_uri, active.info.artifact_uri)


def summary(
    settings: Settings,
    featurizer: Featurizer,
    model: PipelineModel,
    logged: Logged,
    fit_points: pd.DataFrame,
    evaluation: Evaluation | None,
    skipped: list[tuple[str, str]],
    *,
    decoded: int,
    timings: dict[str, float],
    seconds: float,
) -> dict[str, Any]:
    """The `fruits fit --json` contract."""
    return {
        "run_id": logged.run_id,
        "model_name": settings.model_name,
        "model_version": logged.version,
        "alias": settings.alias,
        "images": len(fit_points),
        "classes": fit_points["label"].nunique(),
        "skipped": len(skipped),
        "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
        "pca_k": settings.pca_k,
        "explained_variance": round(float(explained_variance(model).sum()), 6),
        "knn_accuracy": evaluation.knn_accuracy if evaluation else None,
        "knn_accuracy_raw": evaluation.knn_accuracy_raw if evaluation else None,
        "eval_images": evaluation.images if evaluation else None,
        "weights_sha256": featurizer.spec.weights_sha256,
        "engine": featurizer.engine,
        "featurized": decoded,
        "features_uri": logged.features_uri,
        "plots_uri": f"{logged.artifact_uri}/plots",
        "tracking_uri": settings.tracking_uri,
        "timings": timings,
        "seconds": seconds,
    }
