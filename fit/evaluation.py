"""Read labelled images into features, and measure a fitted model on held-out ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import Accumulator
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import featurize, metrics, source
from fruits.exceptions import FruitsError
from fruits.featurize import Featurizer
from fruits.project import project
from fruits.settings import Settings
from fruits.spark import qualify

log = logging.getLogger("fruits.fit")


@dataclass(frozen=True)
class Evaluation:
    """1-NN accuracy of held-out images against the fit images, in PCA space and on raw features."""

    knn_accuracy: float
    knn_accuracy_raw: float
    images: int
    skipped: int
    truth: list[str]
    predicted: list[str]


def labelled_features(
    spark: SparkSession, uri: str, featurizer: Featurizer, settings: Settings, counter: Accumulator | None = None
) -> DataFrame:
    """path, label, features and `reason` (null for a usable labelled image; else why it is skipped)."""
    images = source.read_images(spark, uri).withColumn("label", source.label_column("path", qualify(spark, uri)))
    featured = featurize.featurize(images.drop("modificationTime"), featurizer, settings.max_image_pixels,
                                   counter=counter)
    reason = F.when(F.col("reason").isNotNull(), F.concat_ws(": ", "reason", "detail")).when(
        F.col("label").isNull(), F.lit("no_class_folder: image is not inside a class folder")
    )
    return featured.drop("content").withColumn("reason", reason)


def evaluate(
    spark: SparkSession,
    eval_uri: str,
    featurizer: Featurizer,
    settings: Settings,
    fit_points: pd.DataFrame,
    model: PipelineModel,
    counter: Accumulator | None,
) -> Evaluation:
    """1-NN accuracy of the eval images against the fit images (`fit_points`: label, features, pca)."""
    rows = labelled_features(spark, eval_uri, featurizer, settings, counter).cache()
    points = project(rows.filter("reason IS NULL"), model).select("label", "features", "pca").toPandas()
    skipped = rows.filter("reason IS NOT NULL").count()
    rows.unpersist()
    if points.empty:
        raise FruitsError(f"no usable labelled images under --eval-images {eval_uri}")
    truth = points["label"].tolist()
    fit_labels = fit_points["label"].tolist()
    predicted = metrics.knn_predict(np.stack(fit_points["pca"].to_numpy()), fit_labels,
                                    np.stack(points["pca"].to_numpy()))
    predicted_raw = metrics.knn_predict(np.stack(fit_points["features"].to_numpy()), fit_labels,
                                        np.stack(points["features"].to_numpy()))
    result = Evaluation(metrics.accuracy(predicted, truth), metrics.accuracy(predicted_raw, truth), len(truth),
                        skipped, truth, predicted)
    log.info("1-NN accuracy on %d eval images: %.3f in PCA space, %.3f on raw features",
             result.images, result.knn_accuracy, result.knn_accuracy_raw)
    return result
