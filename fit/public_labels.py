"""The public's accepted labels as refit rows: fruits.labels decides which labels train, Spark joins them to the
features the stream stored for those uploads (results table, by upload id), no MobileNet.

- Only consented uploads (`<source>/app/consented/<id>.jpg` in the results' path) with features of the
  champion's featurizer can be joined: a private upload has no row to join, whatever its votes say.
- The labels are re-read at every refit, so a curator's decision changes the next refit: app rows a
  previous refit saved in the champion's training set are dropped from it (`without_app_rows`) and
  come back only as the current verdicts say.
- A new class enters once it has `label_min_images` accepted images; a share of each class's accepted
  images is held out for the evaluation, by upload (fruits.labels.select_for_refit).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fit.evaluation import KNOWN
from fruits import lake, metrics
from fruits.appuploads import CONSENTED_PATH_PATTERN
from fruits.labels import LabelStore, Selection, select_for_refit, training_labels, verdicts
from fruits.settings import Settings

log = logging.getLogger("fruits.refit")
APP = "app"  # the `source` of the training rows that come from app labels


@dataclass
class AppLabelled:
    """Training rows (path, label, features, source) and held-out rows (path, label, features) from app labels."""

    train: DataFrame
    held_out: DataFrame
    selection: Selection
    votes: int
    voted_uploads: int

    def summary(self) -> dict[str, Any]:
        return {
            "app_votes": self.votes,
            "app_voted_uploads": self.voted_uploads,
            "app_labels_trained": len(self.selection.train),
            "app_labels_held_out": len(self.selection.held_out),
            "app_names_waiting": self.selection.waiting,
            "app_classes": sorted(set(self.selection.train.values()) | set(self.selection.held_out.values())),
        }


def without_app_rows(rows: DataFrame) -> DataFrame:
    """A saved training set without the app uploads in it: those come from the current verdicts only."""
    return rows.filter(~F.col("path").rlike(CONSENTED_PATH_PATTERN))


def app_labelled_rows(
    spark: SparkSession, settings: Settings, weights_sha256: str, known_classes: list[str]
) -> AppLabelled:
    """The labels that train now (the rule on the vote log and the decisions), joined to the consented uploads'
    features in the results table; `known_classes` (the champion's) tell new fruits from known ones."""
    store = LabelStore(settings)
    votes, decisions = store.votes(), store.decisions()
    schema = "path string, label string, features array<float>"
    voted = {v.upload_id for v in votes} | {d.key for d in decisions}
    files = lake.active_files(settings, settings.output_uri) if voted else None
    if not files:
        empty = spark.createDataFrame([], schema)
        selection = Selection({}, {}, {})
        return AppLabelled(empty.withColumn("source", F.lit(APP)), empty, selection, len(votes), len(voted))
    rows = (
        spark.read.parquet(*files)
        .filter(
            F.col("label").isNull() & F.col("features").isNotNull() & (F.col("featurizer_sha256") == weights_sha256)
        )
        .withColumn("upload_id", F.regexp_extract("path", CONSENTED_PATH_PATTERN, 1))
        .filter(F.col("upload_id") != "")
        .select("upload_id", "path", "features")
        .dropDuplicates(["upload_id"])
    )
    wanted = spark.createDataFrame([(i,) for i in sorted(voted)], "upload_id string")
    present = rows.join(wanted, "upload_id")
    # Each consented upload's id and a hash of its features: which photos are held out depends on the photo.
    content = F.sha2(F.concat_ws(",", F.col("features").cast("array<string>")), 256)
    order = {r.upload_id: r.content for r in present.select("upload_id", content.alias("content")).collect()}
    found = verdicts(
        votes, decisions, set(order), min_clients=settings.label_min_clients, share=settings.label_agreement
    )
    selection = select_for_refit(
        training_labels(found),
        known_classes,
        min_images=settings.label_min_images,
        holdout_share=settings.label_holdout_share,
        order=order,
    )
    parts = [(i, label, "train") for i, label in selection.train.items()] + [
        (i, label, "held") for i, label in selection.held_out.items()
    ]
    chosen = present.join(
        spark.createDataFrame(parts, "upload_id string, label string, part string")
        if parts
        else spark.createDataFrame([], "upload_id string, label string, part string"),
        "upload_id",
    )
    log.info(
        "app labels: %d votes on %d uploads; %d accepted labels train, %d held out; new names waiting for images: %s",
        len(votes),
        len(voted),
        len(selection.train),
        len(selection.held_out),
        selection.waiting or "none",
    )
    return AppLabelled(
        train=chosen.filter("part = 'train'").select("path", "label", "features").withColumn("source", F.lit(APP)),
        held_out=chosen.filter("part = 'held'").select("path", "label", "features"),
        selection=selection,
        votes=len(votes),
        voted_uploads=len(voted),
    )


def accuracy_by_origin(scored: pd.DataFrame) -> dict[str, float | None]:
    """Accuracy on the --eval-images and, apart, on the app's held-out uploads (known images only)."""
    known = scored[scored["kind"] == KNOWN]
    from_app = known["path"].map(lambda path: re.search(CONSENTED_PATH_PATTERN, path) is not None).astype(bool)

    def accuracy(part: pd.DataFrame) -> float | None:
        return metrics.accuracy(part["prediction"].tolist(), part["label"].tolist()) if len(part) else None

    return {"eval_images_accuracy": accuracy(known[~from_app]), "app_held_out_accuracy": accuracy(known[from_app])}
