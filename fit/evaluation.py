"""Read labelled images into features, and measure a fitted model on held-out ones.

Held-out images come in two kinds, featurized together in one pass and kept for every model
measured on them (the refit measures the champion and the challenger on the same rows):
- `known`: labelled images of the classes the model was fitted on (--eval-images): accuracy,
  macro-F1, the confusion matrix, and the novelty threshold, calibrated on half of them;
- `novel`: images of classes the model never saw (--novelty-images): how well the novelty score
  separates them from the known ones (AUROC) and how many the threshold flags.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark import Accumulator, StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import featurize, metrics, source
from fruits.exceptions import FruitsError
from fruits.featurize import Featurizer
from fruits.knownmap import tsne_2d
from fruits.project import project
from fruits.settings import Settings
from fruits.spark import qualify

log = logging.getLogger("fruits.fit")

KNOWN, NOVEL = "known", "novel"
# is_novel flags about this share of images of known classes (calibrated on held-out known images).
NOVELTY_FALSE_ALARM_TARGET = 0.05


def labelled_features(
    spark: SparkSession, uri: str, featurizer: Featurizer, settings: Settings, counter: Accumulator | None = None
) -> DataFrame:
    """path, label, features and `reason` (null for a usable labelled image; else why it is skipped)."""
    images = source.read_images(spark, uri).withColumn("label", source.label_column("path", qualify(spark, uri)))
    featured = featurize.featurize(
        images.drop("modificationTime"), featurizer, settings.max_image_pixels, counter=counter
    )
    reason = F.when(F.col("reason").isNotNull(), F.concat_ws(": ", "reason", "detail")).when(
        F.col("label").isNull(), F.lit("no_class_folder: image is not inside a class folder")
    )
    return featured.drop("content").withColumn("reason", reason)


@dataclass
class HeldOut:
    """Held-out images, featurized once and cached: every file (`reason` null = usable) and the counts."""

    cached: DataFrame
    known: int
    novel: int
    skipped: int
    novel_classes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> DataFrame:
        """The usable images: kind, path, label, features."""
        return self.cached.filter("reason IS NULL").select("kind", "path", "label", "features")

    def release(self) -> None:
        self.cached.unpersist()


def featurize_held_out(
    spark: SparkSession,
    featurizer: Featurizer,
    settings: Settings,
    eval_uri: str,
    novelty_uri: str | None = None,
    counter: Accumulator | None = None,
    more_known: DataFrame | None = None,
) -> HeldOut:
    """Featurize the known (and unseen-class) held-out images in one Spark pass, and keep them. `more_known`:
    rows already featurized (path, label, features) held out with the known images (the public's labels,
    fit.public_labels), in the same cached frame: a union after the fact would featurize everything again."""
    parts = [labelled_features(spark, eval_uri, featurizer, settings, counter).withColumn("kind", F.lit(KNOWN))]
    if novelty_uri:
        parts.append(
            labelled_features(spark, novelty_uri, featurizer, settings, counter).withColumn("kind", F.lit(NOVEL))
        )
    if more_known is not None:
        parts.append(more_known.withColumn("kind", F.lit(KNOWN)).withColumn("reason", F.lit(None).cast("string")))
    cached = functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), parts).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    counts = {
        (r.kind, r.usable): r["count"]
        for r in cached.groupBy("kind", F.col("reason").isNull().alias("usable")).count().collect()
    }
    held = HeldOut(
        cached,
        counts.get((KNOWN, True), 0),
        counts.get((NOVEL, True), 0),
        counts.get((KNOWN, False), 0) + counts.get((NOVEL, False), 0),
    )
    for flag, uri, usable in (("--eval-images", eval_uri, held.known), ("--novelty-images", novelty_uri, held.novel)):
        if uri and usable == 0:
            held.release()
            raise FruitsError(f"no usable labelled images under {flag} {uri}")
    if novelty_uri:
        held.novel_classes = sorted(
            r.label for r in held.rows.filter(F.col("kind") == NOVEL).select("label").distinct().collect()
        )
    return held


@dataclass(frozen=True)
class NoveltyEvaluation:
    """How the novelty score separates unseen classes (--novelty-images) from the known held-out ones."""

    images: int
    classes: list[str]
    auroc: float
    detected: float  # share of unseen-class images that is_novel flags
    scores: list[float] = field(repr=False)


@dataclass(frozen=True)
class Evaluation:
    """The classifier on held-out known images; 1-NN accuracy too when the fit points are at hand."""

    images: int
    skipped: int
    truth: list[str]
    predicted: list[str]
    classifier_accuracy: float
    macro_f1: float
    novelty_threshold: float
    false_alarms: float  # share of known images flagged, on the half NOT used to calibrate
    known_scores: list[float] = field(repr=False)
    knn_accuracy: float | None = None
    knn_accuracy_raw: float | None = None
    novelty: NoveltyEvaluation | None = None


def points(held: HeldOut, model: PipelineModel, *, with_features: bool = False) -> pd.DataFrame:
    """The held-out rows through `model`, on the driver: kind, path, label, prediction, novelty_score
    (and pca, features with `with_features`: what 1-NN and the maps use)."""
    columns = ["kind", "path", "label", "prediction", "confidence", "novelty_score"]
    if with_features:
        columns += ["pca", "features"]
    return project(held.rows, model).select(*columns).toPandas()


def evaluate(
    held: HeldOut,
    model: PipelineModel,
    scored: pd.DataFrame | None = None,
    fit_points: pd.DataFrame | None = None,
) -> Evaluation:
    """Accuracy, macro-F1, the calibrated novelty threshold and (with novel images) the AUROC.

    `scored`: `points(held, model)` if already computed; `fit_points` (label, features, pca) adds
    the 1-NN accuracies of the fit before the head (the previous quality figure, for comparison).
    """
    scored = points(held, model, with_features=fit_points is not None) if scored is None else scored
    if scored["prediction"].isna().all():  # its four head columns are null: nothing to measure, no None arithmetic
        raise FruitsError("the model has no classifier head: it cannot be evaluated on held-out images")
    known = scored[scored["kind"] == KNOWN]
    truth, predicted = known["label"].tolist(), known["prediction"].tolist()
    calibration, check = calibration_halves(known)
    threshold = metrics.threshold_for_false_alarms(calibration["novelty_score"], NOVELTY_FALSE_ALARM_TARGET)
    novelty = None
    novel = scored[scored["kind"] == NOVEL]
    if not novel.empty:
        novel_scores = novel["novelty_score"].to_numpy(dtype=float)
        novelty = NoveltyEvaluation(
            images=len(novel),
            classes=sorted(set(novel["label"])),
            auroc=metrics.auroc(known["novelty_score"], novel_scores),
            detected=metrics.flagged_share(novel_scores, threshold),
            scores=novel_scores.tolist(),
        )
    knn = knn_raw = None
    if fit_points is not None:
        fit_labels = fit_points["label"].tolist()
        knn = metrics.accuracy(
            metrics.knn_predict(np.stack(fit_points["pca"].to_numpy()), fit_labels, np.stack(known["pca"].to_numpy())),
            truth,
        )
        knn_raw = metrics.accuracy(
            metrics.knn_predict(
                np.stack(fit_points["features"].to_numpy()), fit_labels, np.stack(known["features"].to_numpy())
            ),
            truth,
        )
    result = Evaluation(
        images=len(known),
        skipped=held.skipped,
        truth=truth,
        predicted=predicted,
        classifier_accuracy=metrics.accuracy(predicted, truth),
        macro_f1=metrics.macro_f1(predicted, truth),
        novelty_threshold=threshold,
        false_alarms=metrics.flagged_share(check["novelty_score"], threshold),
        known_scores=known["novelty_score"].astype(float).tolist(),
        knn_accuracy=knn,
        knn_accuracy_raw=knn_raw,
        novelty=novelty,
    )
    log.info(
        "classifier on %d held-out images: accuracy %.3f, macro-F1 %.3f; is_novel above %.3f "
        "(%.1f%% false alarms on the check half)%s",
        result.images,
        result.classifier_accuracy,
        result.macro_f1,
        threshold,
        100 * result.false_alarms,
        f"; novelty AUROC {novelty.auroc:.3f}, {100 * novelty.detected:.0f}% of {novelty.images} unseen images flagged"
        if novelty
        else "",
    )
    return result


def calibration_halves(known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every other image of each class (by path): the threshold is set on one half, checked on the other."""
    ordered = known.sort_values(["label", "path"])
    position = ordered.groupby("label").cumcount()
    calibration, check = ordered[position % 2 == 0], ordered[position % 2 == 1]
    return calibration, (check if not check.empty else calibration)


@dataclass(frozen=True)
class Maps:
    """2-D t-SNE embeddings of the same points: fit images, then unseen-class images (`unseen` True)."""

    features: np.ndarray
    pca: np.ndarray
    labels: list[str]
    unseen: list[bool]


def tsne_maps(fit_points: pd.DataFrame, novel: pd.DataFrame) -> Maps:
    """t-SNE of the fit images and the unseen-class images: on raw features, and on the PCA projection."""
    frames = [fit_points, novel] if len(novel) else [fit_points]
    embedded = {}
    for name in ("features", "pca"):
        data = np.concatenate([np.stack(f[name].to_numpy()) for f in frames]).astype(np.float32)
        embedded[name] = tsne_2d(data, min_perplexity=2)
    labels = fit_points["label"].tolist() + novel["label"].tolist()
    return Maps(embedded["features"], embedded["pca"], labels, [False] * len(fit_points) + [True] * len(novel))
