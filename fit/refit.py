"""Refit from the lake: the champion's training features + the stream's labelled rows -> a challenger,
promoted to champion only if it beats the champion on the same held-out images.

No MobileNet for the training set: the results table stores every upload's 1280 features and its
label (its class folder), and the champion's version points at its own training features
(`fit.features_uri`). The refit reads both, with Spark, from their files: the lake's rows from the
data files of the Delta table's current version (pruned by ingest date with --since/--until), and
keeps only rows whose featurizer is the champion's (same weights sha256): features of another
featurizer are other numbers. A path already in the champion's training set (a refit of a refit)
counts once, as the champion's.

It fits the same pipeline (fit.pipeline), featurizes the --eval-images once, measures the champion
and the challenger on them, registers the new version under @challenger, and moves @champion to it
only if its accuracy is strictly higher (--force: anyway). Both numbers are logged in the run.
`refit()` reads top to bottom: champion -> training rows -> fit -> evaluate both -> register -> decide.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fit import pipeline
from fit.evaluation import evaluate, featurize_held_out, points
from fit.public_labels import APP, accuracy_by_origin, add_held_out, app_labelled_rows, without_app_rows
from fit.job import Clock, check_unseen, prepare
from fruits import lake
from fruits.exceptions import FruitsError
from fruits.featurize import check_compatible
from fruits.progress import spark_progress
from fruits.project import project
from fruits.settings import Settings
from fruits.spark import lapack_implementation, path_exists

log = logging.getLogger("fruits.refit")

CHALLENGER = "challenger"


def refit(
    settings: Settings,
    eval_uri: str,
    *,
    novelty_uri: str | None = None,
    since: date | None = None,
    until: date | None = None,
    force: bool = False,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a challenger on the lake + the champion's features; promote it if it wins. Returns the summary."""
    clock = Clock()
    if since and until and until < since:
        raise FruitsError(f"--until {until} is before --since {since}")
    spark, client, experiment_id, featurizer = prepare(
        settings, "fruits-refit", [settings.output_uri, eval_uri, novelty_uri or "", settings.features_uri], spark)
    from fit import report  # MLflow: already imported by `prepare`, on its thread, while the JVM started
    from fruits import registry
    for flag, uri in (("--eval-images", eval_uri), ("--novelty-images", novelty_uri)):
        if uri and not path_exists(spark, uri):
            raise FruitsError(f"{flag} path not found: {uri}")
    champion = registry.resolve(client, f"models:/{settings.model_name}@{settings.alias}")
    check_compatible(champion.spec, featurizer.spec, champion.label)
    champion_features = champion.tags.get(registry.FEATURES_URI_TAG)
    if not champion_features:
        raise FruitsError(f"{champion.label} has no {registry.FEATURES_URI_TAG} tag: refit it with `fruits fit`")
    pca_k = int(champion.tags.get("pca_k", settings.pca_k))
    decoded = spark.sparkContext.accumulator(0)
    clock.lap("setup")

    lake_rows, other_featurizer = labelled_lake_rows(spark, settings, featurizer.spec.weights_sha256, since, until)
    # The app's uploads come from the labels as they stand now (a curator may have changed them since).
    known = without_app_rows(read_features(spark, champion_features))
    # New = not already in the champion's training set (a refit's includes the lake rows it used).
    new = lake_rows.dropDuplicates(["path"]).join(known.select("path"), "path", "left_anti")
    champion_model = registry.load_spark_model(champion)
    app = app_labelled_rows(spark, settings, featurizer.spec.weights_sha256,
                            pipeline.classes(champion_model) if pipeline.has_head(champion_model) else [])
    training = known.unionByName(new).unionByName(app.train).persist(StorageLevel.MEMORY_AND_DISK)
    held = None
    try:
        with spark_progress(spark, "reading the training rows", progress):
            counts = {r.source: r["count"] for r in training.groupBy("source").count().collect()}
        images = sum(counts.values())
        if not counts.get("lake") and not counts.get(APP):
            raise FruitsError(f"no labelled rows of this featurizer in the results table {settings.output_uri}"
                              f"{date_range(since, until)} and no accepted app labels: nothing new to learn from")
        if images <= pca_k:
            raise FruitsError(f"{images} training rows: the champion's pca_k {pca_k} needs more")
        clock.lap("read")

        with spark_progress(spark, "fitting StandardScaler + PCA + classifier", progress):
            model = pipeline.fit_model(training, pca_k, rows=images, lap=clock.lap)
        fit_points = project(training, model).select("label", F.slice("pca", 1, 2).alias("pca")).toPandas()
        clock.lap("project")

        with spark_progress(spark, "featurizing held-out images", progress):
            held = add_held_out(featurize_held_out(spark, featurizer, settings, eval_uri, novelty_uri, decoded),
                                app.held_out)
        check_unseen(held.novel_classes, pipeline.classes(model), novelty_uri)
        scored = points(held, model)
        challenger = evaluate(held, model, scored)
        champion_eval = evaluate(held, champion_model) if pipeline.has_head(champion_model) else None
        clock.lap("evaluate")

        champion_accuracy = champion_eval.classifier_accuracy if champion_eval else None
        promote, reason = decide(challenger.classifier_accuracy, champion_accuracy, force)
        logged = report.log_and_register(
            client, experiment_id, settings.replace(pca_k=pca_k), featurizer, model, training.drop("source"),
            fit_points, challenger, [],
            params={"refit_of": champion.label, "eval_images_uri": eval_uri, "novelty_images_uri": novelty_uri or "",
                    "results_uri": settings.output_uri, "since": str(since or ""), "until": str(until or ""),
                    "rows_from_lake": counts.get("lake", 0), "rows_from_champion": counts.get("champion", 0),
                    "rows_from_app": counts.get(APP, 0),
                    "lake_rows_of_another_featurizer": other_featurizer, "force": force},
            metrics={"champion_classifier_accuracy": champion_accuracy} if champion_accuracy is not None else {},
            alias=CHALLENGER, tags={"refit.decision": reason},
        )
        client.set_model_version_tag(settings.model_name, logged.version, "refit.decision", reason)
        if promote:
            client.set_registered_model_alias(settings.model_name, settings.alias, logged.version)
            log.info("promoted %s v%s to @%s: %s", settings.model_name, logged.version, settings.alias, reason)
        else:
            log.info("kept %s as @%s: %s", champion.label, settings.alias, reason)
        clock.lap("log_and_register")
    finally:
        training.unpersist()
        if held is not None:
            held.release()

    novelty = challenger.novelty
    return {
        "run_id": logged.run_id,
        "model_name": settings.model_name,
        "model_version": logged.version,
        "alias": CHALLENGER,
        "champion_alias": settings.alias,
        "champion_version_before": champion.version,
        "champion_version": logged.version if promote else champion.version,
        "promoted": promote,
        "decision": reason,
        "forced": force,
        "classifier_accuracy": challenger.classifier_accuracy,
        **accuracy_by_origin(scored),
        "champion_classifier_accuracy": champion_accuracy,
        "macro_f1": challenger.macro_f1,
        "novelty_threshold": challenger.novelty_threshold,
        "novelty_false_alarms": challenger.false_alarms,
        "novelty_auroc": novelty.auroc if novelty else None,
        "novelty_detected": novelty.detected if novelty else None,
        "eval_images": challenger.images,
        "images": images,
        "classes": len(pipeline.classes(model)),
        "rows_from_lake": counts.get("lake", 0),
        "rows_from_champion": counts.get("champion", 0),
        "rows_from_app": counts.get(APP, 0),
        **app.summary(),
        "lake_rows_of_another_featurizer": other_featurizer,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "pca_k": pca_k,
        "featurized": decoded.value,
        "lapack": lapack_implementation(spark),
        "features_uri": logged.features_uri,
        "plots_uri": f"{logged.artifact_uri}/plots",
        "tracking_uri": settings.tracking_uri,
        "timings": clock.laps,
        "seconds": clock.total(),
    }


def decide(challenger: float, champion: float | None, force: bool) -> tuple[bool, str]:
    """Promote only a strictly better challenger on the same held-out images; --force promotes anyway."""
    if champion is None:
        return True, f"the champion has no classifier; challenger accuracy {challenger:.4f}"
    verdict = (f"challenger accuracy {challenger:.4f} {'>' if challenger > champion else '<='} "
               f"champion {champion:.4f} on the same held-out images")
    if challenger > champion:
        return True, verdict
    if force:
        return True, verdict + "; promoted by --force"
    return False, verdict


def read_features(spark: SparkSession, uri: str) -> DataFrame:
    """A fit's training features (path, label, features), tagged as the champion's."""
    return spark.read.parquet(uri).select("path", "label", "features").withColumn("source", F.lit("champion"))


def labelled_lake_rows(
    spark: SparkSession, settings: Settings, weights_sha256: str, since: date | None, until: date | None
) -> tuple[DataFrame, int]:
    """Labelled rows of the results table featurized with these weights (path, label, features, source),
    and how many labelled rows another featurizer produced (left out)."""
    filters = [("ingest_date", op, day.isoformat()) for op, day in ((">=", since), ("<=", until)) if day]
    files = lake.active_files(settings, settings.output_uri, filters)
    if files is None:
        raise FruitsError(f"no results table at {settings.output_uri}: stream some uploads first (fruits stream)")
    if not files:
        raise FruitsError(f"the results table {settings.output_uri} has no rows{date_range(since, until)}")
    rows = (spark.read.parquet(*files).select("path", "label", "features", "featurizer_sha256")
            .filter(F.col("label").isNotNull() & F.col("features").isNotNull()))
    mine = F.col("featurizer_sha256") == weights_sha256
    other = rows.filter(~mine).count()
    if other:
        log.warning("left out %d lake rows of another featurizer (not weights sha256 %s)", other, weights_sha256[:12])
    return rows.filter(mine).drop("featurizer_sha256").withColumn("source", F.lit("lake")), other


def date_range(since: date | None, until: date | None) -> str:
    if not (since or until):
        return ""
    return f" ingested {'from ' + since.isoformat() if since else ''}{' ' if since and until else ''}" \
           f"{'until ' + until.isoformat() if until else ''}"
