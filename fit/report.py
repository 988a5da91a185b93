"""What a fit (or refit) leaves behind: one MLflow run (params, metrics, plots, the model, its registered
version and alias) and the summary the CLI prints (the `fruits fit --json` contract)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyspark
from mlflow import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fit import pipeline
from fit.evaluation import NOVELTY_FALSE_ALARM_TARGET, Evaluation, Maps
from fruits import knownmap, plots, registry
from fruits.featurize import Featurizer
from fruits.knownmap import KnownMap
from fruits.project import MODEL_INPUT_COL, MODEL_OUTPUT_COL, NOVELTY_SCORE, project
from fruits.settings import Settings


@dataclass(frozen=True)
class Logged:
    run_id: str
    version: str
    features_uri: str
    artifact_uri: str


@dataclass(frozen=True)
class RunRecord:
    """What one MLflow run of a fit or a refit records: the model and what it was fitted and measured on."""

    settings: Settings  # the model's name, pca_k, weights, and where the training features go
    featurizer: Featurizer
    model: PipelineModel
    training: DataFrame  # path, label, features: written with the run, for the next refit
    fit_points: pd.DataFrame  # label and pca (PC1, PC2 at least) of each training image: the plots
    alias: str  # moved to the registered version
    evaluation: Evaluation | None = None  # on held-out images; None: not measured
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable images
    params: dict[str, Any] = field(default_factory=dict)  # the job's own, besides the model's
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # on the run
    maps: Maps | None = None  # t-SNE maps to draw


def log_and_register(client: MlflowClient, experiment_id: str, run: RunRecord) -> Logged:
    """One MLflow run: training features, params, metrics, plots, featurizer identity, the model, the alias."""
    settings, featurizer, model, evaluation = run.settings, run.featurizer, run.model, run.evaluation
    labels = run.fit_points["label"].tolist()
    classes = pipeline.classes(model)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ThreadPoolExecutor(2, thread_name_prefix="plots") as pool,
        mlflow.start_run(experiment_id=experiment_id) as active,
    ):
        # matplotlib draws while Spark writes the features and the model: the two wait on different things.
        drawn = pool.submit(draw_plots, Path(tmp), model, run.fit_points, evaluation, run.maps)
        known = pool.submit(known_map, run.training, model)  # the app's map of the known fruits (fruits.knownmap)
        run_id = active.info.run_id
        # The training features (path, label, 1280 floats): what a refit starts from, without MobileNet.
        features_uri = f"{settings.features_uri.rstrip('/')}/{run_id}"
        run.training.select("path", "label", "features").write.mode("overwrite").parquet(features_uri)
        mlflow.set_tags({**featurizer.spec.as_tags(), **run.tags})
        mlflow.log_params(
            {
                "pca_k": settings.pca_k,
                "engine": featurizer.engine,
                "weights": settings.weights,
                "weights_sha256": featurizer.spec.weights_sha256,
                "input_size": featurizer.spec.input_size,
                "preprocessing": featurizer.spec.preprocessing,
                "images": len(labels),
                "classes": len(classes),
                "skipped": len(run.skipped),
                "features_uri": features_uri,
                "head": pipeline.HEAD,
                **{f"head.{k}": v for k, v in pipeline.HEAD_PARAMS.items()},
                "novelty_score": NOVELTY_SCORE,
                "novelty_false_alarm_target": NOVELTY_FALSE_ALARM_TARGET,
                **run.params,
            }
        )
        mlflow.log_metrics(
            {"explained_variance": pipeline.explained_variance(model), **run.metrics, **evaluation_metrics(evaluation)}
        )
        mlflow.log_dict(featurizer.spec.as_dict(), "featurizer.json")
        if run.skipped:
            mlflow.log_text("path\treason\n" + "".join(f"{p}\t{r}\n" for p, r in run.skipped), "skipped.tsv")
        version_tags = {
            "model.input_col": MODEL_INPUT_COL,
            "model.output_col": MODEL_OUTPUT_COL,
            "pca_k": settings.pca_k,
            registry.FEATURES_URI_TAG: features_uri,
            "model.head": pipeline.HEAD,
            "model.classes": len(classes),
            registry.NOVELTY_SCORE_TAG: NOVELTY_SCORE,
            knownmap.TAG: knownmap.ARTIFACT_PATH,
        }
        if evaluation:
            version_tags[registry.NOVELTY_THRESHOLD_TAG] = repr(evaluation.novelty_threshold)
            version_tags["novelty.false_alarm_target"] = NOVELTY_FALSE_ALARM_TARGET
            version_tags["eval.classifier_accuracy"] = repr(evaluation.classifier_accuracy)
        model_uri = registry.log_model(model, pip_requirements=[f"pyspark=={pyspark.__version__}"])
        drawn.result()
        mlflow.log_artifacts(tmp, "plots")
        log_known_map(known.result())
        version = registry.register(
            client,
            model_uri,
            name=settings.model_name,
            alias=run.alias,
            tags=registry.model_version_tags(featurizer.spec, version_tags),
        )
        return Logged(run_id, version, features_uri, active.info.artifact_uri)


def known_map(training: DataFrame, model: PipelineModel) -> KnownMap:
    """At most knownmap.PER_CLASS training images of each class (spread by a hash of the path, not the first
    frames of one fruit), projected by `model` and mapped in 2-D."""
    spread = Window.partitionBy("label").orderBy(F.xxhash64("path"), "path")
    picked = (
        training.select("path", "label", "features")
        .withColumn("rank", F.row_number().over(spread))
        .filter(F.col("rank") <= knownmap.PER_CLASS)
        .drop("rank")
    )
    known = project(picked, model).select("path", "label", "pca").toPandas()
    return KnownMap.build(np.stack(known["pca"].to_numpy()), known["label"].tolist(), known["path"].tolist())


def log_known_map(known: KnownMap) -> None:
    """The map as the active run's artifact knownmap.ARTIFACT_PATH (the version's knownmap.TAG points at it)."""
    folder, name = knownmap.ARTIFACT_PATH.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(known.write(Path(tmp) / name)), folder)


def evaluation_metrics(evaluation: Evaluation | None) -> dict[str, float]:
    if evaluation is None:
        return {}
    out = {
        "classifier_accuracy": evaluation.classifier_accuracy,
        "macro_f1": evaluation.macro_f1,
        "novelty_threshold": evaluation.novelty_threshold,
        "novelty_false_alarms": evaluation.false_alarms,
    }
    if evaluation.knn_accuracy is not None:
        out.update(knn_accuracy=evaluation.knn_accuracy, knn_accuracy_raw=evaluation.knn_accuracy_raw)
    if evaluation.novelty:
        out.update(novelty_auroc=evaluation.novelty.auroc, novelty_detected=evaluation.novelty.detected)
    return out


def draw_plots(
    out: Path, model: PipelineModel, fit_points: pd.DataFrame, evaluation: Evaluation | None, maps: Maps | None
) -> None:
    labels = fit_points["label"].tolist()
    pca = next(s for s in model.stages if hasattr(s, "explainedVariance"))
    plots.explained_variance(pca.explainedVariance.toArray(), out / "explained_variance.png")
    plots.projection_2d(
        np.stack(fit_points["pca"].to_numpy())[:, :2],
        labels,
        out / "projection_2d.png",
        title=f"Fit images in PCA space (PC1, PC2): {len(labels)} images, {len(set(labels))} classes",
    )
    if evaluation is None:
        return
    plots.confusion(
        evaluation.truth,
        evaluation.predicted,
        out / "confusion.png",
        predicted_by="classifier",
        title=f"Classifier on {evaluation.images} held-out images: accuracy "
        f"{evaluation.classifier_accuracy:.3f}, macro-F1 {evaluation.macro_f1:.3f}",
    )
    novel = evaluation.novelty
    plots.novelty_scores(
        evaluation.known_scores,
        novel.scores if novel else [],
        evaluation.novelty_threshold,
        out / "novelty.png",
        title="Novelty score (1 - max class probability)"
        + (f": AUROC {novel.auroc:.3f}, {novel.detected:.0%} of unseen flagged" if novel else ""),
    )
    if maps is not None:
        unseen = sum(maps.unseen)
        for name, points, what in (
            ("features", maps.features, "raw MobileNetV2 features (1280)"),
            ("pca", maps.pca, "the PCA projection"),
        ):
            plots.tsne_map(
                points,
                maps.labels,
                maps.unseen,
                out / f"tsne_{name}.png",
                title=f"t-SNE of {what}: {len(maps.labels) - unseen} fit images"
                + (f", {unseen} of unseen classes (black markers)" if unseen else ""),
            )


def summary(
    run: RunRecord, logged: Logged, *, decoded: int, lapack: str, timings: dict[str, float], seconds: float
) -> dict[str, Any]:
    """The `fruits fit --json` contract."""
    settings, evaluation, fit_points, skipped = run.settings, run.evaluation, run.fit_points, run.skipped
    novelty = evaluation.novelty if evaluation else None
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
        "explained_variance": round(pipeline.explained_variance(run.model), 6),
        "head": pipeline.HEAD,
        "classifier_accuracy": evaluation.classifier_accuracy if evaluation else None,
        "macro_f1": evaluation.macro_f1 if evaluation else None,
        "knn_accuracy": evaluation.knn_accuracy if evaluation else None,
        "knn_accuracy_raw": evaluation.knn_accuracy_raw if evaluation else None,
        "eval_images": evaluation.images if evaluation else None,
        "novelty_score": NOVELTY_SCORE,
        "novelty_threshold": evaluation.novelty_threshold if evaluation else None,
        "novelty_false_alarms": evaluation.false_alarms if evaluation else None,
        "novelty_auroc": novelty.auroc if novelty else None,
        "novelty_detected": novelty.detected if novelty else None,
        "novelty_images": novelty.images if novelty else None,
        "novelty_classes": novelty.classes if novelty else None,
        "weights_sha256": run.featurizer.spec.weights_sha256,
        "engine": run.featurizer.engine,
        "featurized": decoded,
        "lapack": lapack,
        "features_uri": logged.features_uri,
        "plots_uri": f"{logged.artifact_uri}/plots",
        "tracking_uri": settings.tracking_uri,
        "timings": timings,
        "seconds": seconds,
    }
