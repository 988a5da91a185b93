"""Fit StandardScaler + PCA on MobileNetV2 features of labelled images and register the model in MLflow.

Images are read as <URI>/<class name>/<file>.(jpg|jpeg|png) from a directory, file://, s3a://
or s3:// URI. Every image is featurized exactly once (the features are cached for the MLlib
stages); unreadable files are skipped and reported. `fit()` reads top to bottom:
read -> featurize -> fit the pipeline -> evaluate -> log and register (fit.report).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import Pipeline
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fit import report
from fit.evaluation import evaluate, labelled_features
from fruits import registry
from fruits.exceptions import FruitsError
from fruits.featurize import FEATURE_DIM, Featurizer
from fruits.progress import spark_progress
from fruits.project import MODEL_INPUT_COL, MODEL_OUTPUT_COL, project, to_model_input
from fruits.settings import Settings
from fruits.spark import get_spark, path_exists

log = logging.getLogger("fruits.fit")


def fit(
    settings: Settings,
    images_uri: str,
    eval_uri: str | None = None,
    *,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Featurize, fit, evaluate, log and register. Returns the summary (the --json contract)."""
    clock = Clock()
    if settings.pca_k > FEATURE_DIM:
        raise FruitsError(f"--pca-k {settings.pca_k} is more than the {FEATURE_DIM} features per image")
    spark = spark or get_spark(settings, "fruits-fit", uris=[images_uri, eval_uri or "", settings.features_uri])
    for flag, uri in (("--images", images_uri), ("--eval-images", eval_uri)):
        if uri and not path_exists(spark, uri):
            raise FruitsError(f"{flag} path not found: {uri}")
    client = registry.connect(settings)  # fail fast on a bad tracking URI, before any featurizing
    experiment_id = registry.ensure_experiment(client, settings)
    featurizer = Featurizer.load(settings)
    decoded = spark.sparkContext.accumulator(0)
    clock.lap("setup")

    rows = labelled_features(spark, images_uri, featurizer, settings, decoded).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with spark_progress(spark, "featurizing fit images", progress):
            total = rows.count()
        featurize_seconds = clock.lap("featurize")
        valid, skipped = usable(rows, total, images_uri, settings.pca_k)
        log.info("featurized %d images (%d skipped) in %.1f s", total, len(skipped), featurize_seconds)

        with spark_progress(spark, "fitting StandardScaler + PCA", progress):
            model = pipeline(settings.pca_k).fit(to_model_input(valid))
        # The driver gets what it uses: every column for the 1-NN metrics, else labels and PC1/PC2.
        projected = project(valid, model)
        fit_points = (projected.select("label", "features", "pca") if eval_uri
                      else projected.select("label", F.slice("pca", 1, 2).alias("pca"))).toPandas()
        clock.lap("fit")

        evaluation = evaluate(spark, eval_uri, featurizer, settings, fit_points, model, decoded) if eval_uri else None
        clock.lap("evaluate")

        logged = report.log_and_register(
            client, experiment_id, settings, featurizer, model, valid, fit_points, evaluation, skipped,
            images_uri=images_uri, eval_uri=eval_uri, featurize_rate=total / featurize_seconds,
        )
        clock.lap("log_and_register")
    finally:
        rows.unpersist()  # also when the fit fails: the cache holds every image's features

    return report.summary(settings, featurizer, model, logged, fit_points, evaluation, skipped,
                          decoded=decoded.value, timings=clock.laps, seconds=clock.total())


def pipeline(pca_k: int) -> Pipeline:
    """The registered model: standardize the 1280 features, then project them on `pca_k` components."""
    return Pipeline(stages=[
        StandardScaler(inputCol=MODEL_INPUT_COL, outputCol="scaled", withMean=True, withStd=True),
        PCA(k=pca_k, inputCol="scaled", outputCol=MODEL_OUTPUT_COL),
    ])


def usable(rows: DataFrame, total: int, images_uri: str, pca_k: int) -> tuple[DataFrame, list[tuple[str, str]]]:
    """The labelled, featurized rows, and (path, reason) of each skipped file; refuses too few images."""
    if total == 0:
        raise FruitsError(f"no images (jpg, jpeg, png) under {images_uri}")
    skipped = [(r.path, r.reason) for r in rows.filter("reason IS NOT NULL").select("path", "reason").collect()]
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    valid = rows.filter("reason IS NULL").drop("reason", "detail")
    if total - len(skipped) < pca_k:
        raise FruitsError(
            f"--pca-k {pca_k} is larger than the {total - len(skipped)} valid images under {images_uri}"
            f" ({len(skipped)} skipped): lower --pca-k or add images"
        )
    return valid, skipped


class Clock:
    """Wall-time laps of the fit's steps: the `timings` of its summary (what bench/fit.py reads)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now
        return self.laps[name]

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)

