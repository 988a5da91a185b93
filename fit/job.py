"""Fit the registered model on MobileNetV2 features of labelled images and register it in MLflow.

The model: StandardScaler -> PCA -> a logistic-regression classifier -> class names (fit.pipeline).
Images are read as <URI>/<class name>/<file>.(jpg|jpeg|png) from a directory, file://, s3a://
or s3:// URI. Every image is featurized exactly once (the features are cached for the MLlib
stages); unreadable files are skipped and reported. `fit()` reads top to bottom:
read -> featurize -> fit the model -> evaluate on held-out images -> maps -> log and register.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fit import pipeline
from fit.evaluation import evaluate, featurize_held_out, labelled_features, points, tsne_maps
from fruits.exceptions import FruitsError
from fruits.featurize import FEATURE_DIM, Featurizer
from fruits.progress import spark_progress
from fruits.project import project
from fruits.settings import Settings
from fruits.spark import get_spark, lapack_implementation, path_exists

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("fruits.fit")


def fit(
    settings: Settings,
    images_uri: str,
    eval_uri: str | None = None,
    *,
    novelty_uri: str | None = None,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Featurize, fit, evaluate, log and register. Returns the summary (the --json contract)."""
    clock = Clock()
    if settings.pca_k > FEATURE_DIM:
        raise FruitsError(f"--pca-k {settings.pca_k} is more than the {FEATURE_DIM} features per image")
    if novelty_uri and not eval_uri:
        raise FruitsError("--novelty-images needs --eval-images: unseen fruits are scored against known held-out ones")
    spark, client, experiment_id, featurizer = prepare(
        settings, "fruits-fit", [images_uri, eval_uri or "", novelty_uri or "", settings.features_uri], spark
    )
    from fit import report  # MLflow: already imported by `prepare`, on its thread, while the JVM started

    for flag, uri in (("--images", images_uri), ("--eval-images", eval_uri), ("--novelty-images", novelty_uri)):
        if uri and not path_exists(spark, uri):
            raise FruitsError(f"{flag} path not found: {uri}")
    decoded = spark.sparkContext.accumulator(0)
    clock.lap("setup")

    rows = labelled_features(spark, images_uri, featurizer, settings, decoded).persist(StorageLevel.MEMORY_AND_DISK)
    held = None
    try:
        with spark_progress(spark, "featurizing fit images", progress):
            total = rows.count()
        featurize_seconds = clock.lap("featurize")
        valid, skipped = usable(rows, total, images_uri, settings.pca_k)
        log.info("featurized %d images (%d skipped) in %.1f s", total, len(skipped), featurize_seconds)

        with spark_progress(spark, "fitting StandardScaler + PCA + classifier", progress):
            model = pipeline.fit_model(valid, settings.pca_k, rows=total - len(skipped), lap=clock.lap)
        classes = pipeline.classes(model)
        # The driver gets what it uses: raw features and the projection for 1-NN and the maps, else PC1/PC2.
        projected = project(valid, model)
        fit_points = (
            projected.select("label", "features", "pca")
            if eval_uri
            else projected.select("label", F.slice("pca", 1, 2).alias("pca"))
        ).toPandas()
        clock.lap("project")

        evaluation = maps = None
        if eval_uri:
            with spark_progress(spark, "featurizing held-out images", progress):
                held = featurize_held_out(spark, featurizer, settings, eval_uri, novelty_uri, decoded)
            check_unseen(held.novel_classes, classes, novelty_uri)
            scored = points(held, model, with_features=True)
            evaluation = evaluate(held, model, scored, fit_points)
            clock.lap("evaluate")
            maps = tsne_maps(fit_points, scored[scored["kind"] == "novel"])
            clock.lap("maps")

        run = report.RunRecord(
            settings,
            featurizer,
            model,
            valid,
            fit_points,
            settings.alias,
            evaluation,
            skipped,
            params={
                "images_uri": images_uri,
                "eval_images_uri": eval_uri or "",
                "novelty_images_uri": novelty_uri or "",
            },
            metrics={"featurize_images_per_second": total / featurize_seconds},
            maps=maps,
        )
        logged = report.log_and_register(client, experiment_id, run)
        clock.lap("log_and_register")
    finally:
        rows.unpersist()  # also when the fit fails: the cache holds every image's features
        if held is not None:
            held.release()

    return report.summary(
        run,
        logged,
        decoded=decoded.value,
        lapack=lapack_implementation(spark),
        timings=clock.laps,
        seconds=clock.total(),
    )


def prepare(
    settings: Settings, app_name: str, uris: list[str], spark: SparkSession | None
) -> tuple[SparkSession, MlflowClient, str, Featurizer]:
    """The Spark session, the MLflow store and the featurizer, side by side: the JVM starts while
    Python opens the store (a new sqlite store runs its schema migrations) and hashes the weights.
    Both fail fast (bad tracking URI, missing weights) before any image is read."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fit-setup") as pool:
        store = pool.submit(open_store, settings)
        loaded = pool.submit(Featurizer.load, settings)
        spark = spark or get_spark(settings, app_name, uris=uris, short_job=True)
        client, experiment_id = store.result()
        return spark, client, experiment_id, loaded.result()


def open_store(settings: Settings) -> tuple[MlflowClient, str]:
    from fruits import registry  # imports MLflow (~2.5 s here): on this thread, alongside the JVM start

    client = registry.connect(settings)
    return client, registry.ensure_experiment(client, settings)


def check_unseen(novel_classes: list[str], classes: list[str], novelty_uri: str | None) -> None:
    """Unseen means unseen: a novelty image of a class the model knows would blur the AUROC."""
    overlap = sorted(set(novel_classes) & set(classes))
    if overlap:
        raise FruitsError(
            f"--novelty-images {novelty_uri} holds classes the model is fitted on "
            f"({', '.join(overlap)}): novelty images must be of other fruits"
        )


def usable(rows: DataFrame, total: int, images_uri: str, pca_k: int) -> tuple[DataFrame, list[tuple[str, str]]]:
    """The labelled, featurized rows, and (path, reason) of each skipped file; refuses too few images."""
    if total == 0:
        raise FruitsError(f"no images (jpg, jpeg, png) under {images_uri}")
    skipped = [(r.path, r.reason) for r in rows.filter("reason IS NOT NULL").select("path", "reason").collect()]
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    valid = rows.filter("reason IS NULL").drop("reason", "detail")
    if total - len(skipped) <= pca_k:  # n centred images span at most n - 1 dimensions
        raise FruitsError(
            f"--pca-k {pca_k} needs more than {pca_k} valid images; {total - len(skipped)} under {images_uri}"
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
