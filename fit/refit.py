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
`refit()` reads top to bottom: read -> fit -> evaluate -> decide (then register, and move the alias).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fit import pipeline
from fit.evaluation import Evaluation, HeldOut, evaluate, featurize_held_out, points
from fit.job import Clock, check_unseen, prepare
from fit.public_labels import (
    APP,
    AppLabelled,
    accuracy_by_origin,
    app_labelled_rows,
    without_app_rows,
)
from fruits import lake
from fruits.exceptions import FruitsError
from fruits.featurize import Featurizer, check_compatible
from fruits.progress import spark_progress
from fruits.project import project
from fruits.settings import Settings
from fruits.spark import lapack_implementation, path_exists

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fit.report import Logged
    from fruits.registry import ResolvedModel

log = logging.getLogger("fruits.refit")

CHALLENGER = "challenger"


@dataclass(frozen=True)
class Request:
    """What the refit was asked: the settings (model, alias, tables) and the flags."""

    settings: Settings
    eval_uri: str  # held-out labelled images: both models are measured on them
    novelty_uri: str | None  # unseen classes: the novelty AUROC
    since: date | None  # only lake rows ingested on or after
    until: date | None  # ...and on or before
    force: bool  # promote the challenger even if it does not win
    progress: bool


@dataclass(frozen=True)
class Training:
    """The challenger's training rows (persisted until the refit ends), where they come from, its pca_k."""

    rows: DataFrame  # path, label, features, source ("champion", "lake" or "app")
    from_lake: int
    from_champion: int
    from_app: int  # the public's accepted labels (fit.public_labels)
    of_another_featurizer: int  # labelled lake rows left out: features of other weights
    pca_k: int  # the champion's
    app: AppLabelled  # the app labels' training and held-out rows, and what was chosen

    @property
    def images(self) -> int:
        return self.from_lake + self.from_champion + self.from_app


@dataclass(frozen=True)
class Challenger:
    model: PipelineModel
    fit_points: pd.DataFrame  # label, PC1 and PC2 of each training row: the run's plots


@dataclass(frozen=True)
class Scores:
    """Both models on the same held-out images."""

    challenger: Evaluation
    champion_accuracy: float | None  # None: the champion has no classifier
    by_origin: dict[str, float | None]  # the challenger on the --eval-images and on the app's held-out labels


class Decision(NamedTuple):
    promote: bool
    reason: str  # the `refit.decision` tag, for people


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
    """Read -> fit -> evaluate -> decide: a challenger on the lake + the champion's features, promoted if it wins.
    Returns the summary (the --json contract)."""
    request = Request(settings, eval_uri, novelty_uri, since, until, force, progress)
    clock = Clock()
    if since and until and until < since:
        raise FruitsError(f"--until {until} is before --since {since}")
    uris = [settings.output_uri, eval_uri, novelty_uri or "", settings.features_uri]
    spark, client, experiment_id, featurizer = prepare(settings, "fruits-refit", uris, spark)
    for flag, uri in (("--eval-images", eval_uri), ("--novelty-images", novelty_uri)):
        if uri and not path_exists(spark, uri):
            raise FruitsError(f"{flag} path not found: {uri}")
    from fruits import registry  # MLflow: already imported by `prepare`

    champion = resolve_champion(client, settings, featurizer)
    champion_model = registry.load_spark_model(champion)  # its classes say which app labels are new fruits
    decoded = spark.sparkContext.accumulator(0)
    clock.lap("setup")

    training = read_training(spark, request, champion, champion_model, featurizer.spec.weights_sha256)
    held = None
    try:
        clock.lap("read")
        challenger = fit_challenger(spark, request, training, clock)
        clock.lap("project")
        with spark_progress(spark, "featurizing held-out images", progress):
            held = featurize_held_out(
                spark, featurizer, settings, eval_uri, novelty_uri, decoded, more_known=training.app.held_out
            )
        scores = evaluate_both(held, challenger.model, champion_model, novelty_uri)
        clock.lap("evaluate")
        decision = decide(scores.challenger.classifier_accuracy, scores.champion_accuracy, force)
        logged = register_challenger(
            client, experiment_id, request, featurizer, champion, training, challenger, scores, decision
        )
        clock.lap("log_and_register")
    finally:
        training.rows.unpersist()
        if held is not None:
            held.release()
    outcome = refit_summary(request, champion, training, challenger, scores, decision, logged)
    return {
        **outcome,
        "featurized": decoded.value,
        "lapack": lapack_implementation(spark),
        "timings": clock.laps,
        "seconds": clock.total(),
    }


def resolve_champion(client: MlflowClient, settings: Settings, featurizer: Featurizer) -> ResolvedModel:
    """The champion, refused unless it was fitted with this featurizer and kept its training features."""
    from fruits import registry  # MLflow: already imported by `prepare`, on its thread, while the JVM started

    champion = registry.resolve(client, settings.model_uri)
    check_compatible(champion.spec, featurizer.spec, champion.label)
    if not champion.tags.get(registry.FEATURES_URI_TAG):
        raise FruitsError(f"{champion.label} has no {registry.FEATURES_URI_TAG} tag: refit it with `fruits fit`")
    return champion


def read_training(
    spark: SparkSession, request: Request, champion: ResolvedModel, champion_model: PipelineModel, weights_sha256: str
) -> Training:
    """The champion's training rows, the lake's new labelled rows of this featurizer and the public's accepted
    labels, read once and kept."""
    from fruits import registry

    settings, since, until = request.settings, request.since, request.until
    pca_k = int(champion.tags.get("pca_k", settings.pca_k))
    lake_rows, other_featurizer = labelled_lake_rows(spark, settings, weights_sha256, since, until)
    # The app's uploads come from the labels as they stand now (a curator may have changed them since).
    known = without_app_rows(read_features(spark, champion.tags[registry.FEATURES_URI_TAG]))
    # New = not already in the champion's training set (a refit's includes the lake rows it used).
    new = lake_rows.dropDuplicates(["path"]).join(known.select("path"), "path", "left_anti")
    classes = pipeline.classes(champion_model) if pipeline.has_head(champion_model) else []
    app = app_labelled_rows(spark, settings, weights_sha256, classes)
    rows = known.unionByName(new).unionByName(app.train).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with spark_progress(spark, "reading the training rows", request.progress):
            counts = {r.source: r["count"] for r in rows.groupBy("source").count().collect()}
        training = Training(
            rows, counts.get("lake", 0), counts.get("champion", 0), counts.get(APP, 0), other_featurizer, pca_k, app
        )
        if not training.from_lake and not training.from_app:
            raise FruitsError(
                f"no labelled rows of this featurizer in the results table {settings.output_uri}"
                f"{date_range(since, until)} and no accepted app labels: nothing new to learn from"
            )
        if training.images <= pca_k:
            raise FruitsError(f"{training.images} training rows: the champion's pca_k {pca_k} needs more")
    except BaseException:
        rows.unpersist()
        raise
    return training


def fit_challenger(spark: SparkSession, request: Request, training: Training, clock: Clock) -> Challenger:
    """The same pipeline as the fit's, on the training rows; PC1 and PC2 of each row for the plots."""
    with spark_progress(spark, "fitting StandardScaler + PCA + classifier", request.progress):
        model = pipeline.fit_model(training.rows, training.pca_k, rows=training.images, lap=clock.lap)
    fit_points = project(training.rows, model).select("label", F.slice("pca", 1, 2).alias("pca")).toPandas()
    return Challenger(model, fit_points)


def evaluate_both(
    held: HeldOut, challenger: PipelineModel, champion_model: PipelineModel, novelty_uri: str | None
) -> Scores:
    """The challenger, and the champion if it has a classifier, on the same held-out images."""
    check_unseen(held.novel_classes, pipeline.classes(challenger), novelty_uri)
    champion_eval = evaluate(held, champion_model) if pipeline.has_head(champion_model) else None
    scored = points(held, challenger)
    return Scores(
        evaluate(held, challenger, scored),
        champion_eval.classifier_accuracy if champion_eval else None,
        accuracy_by_origin(scored),
    )


def decide(challenger: float, champion: float | None, force: bool) -> Decision:
    """Promote only a strictly better challenger on the same held-out images; --force promotes anyway."""
    if champion is None:
        return Decision(True, f"the champion has no classifier; challenger accuracy {challenger:.4f}")
    verdict = (
        f"challenger accuracy {challenger:.4f} {'>' if challenger > champion else '<='} "
        f"champion {champion:.4f} on the same held-out images"
    )
    if challenger > champion:
        return Decision(True, verdict)
    if force:
        return Decision(True, verdict + "; promoted by --force")
    return Decision(False, verdict)


def register_challenger(
    client: MlflowClient,
    experiment_id: str,
    request: Request,
    featurizer: Featurizer,
    champion: ResolvedModel,
    training: Training,
    challenger: Challenger,
    scores: Scores,
    decision: Decision,
) -> Logged:
    """The challenger's run and version under @challenger; the champion's alias moved to it if the decision says so."""
    from fit import report

    settings, accuracy = request.settings, scores.champion_accuracy
    params = {
        "refit_of": champion.label,
        "eval_images_uri": request.eval_uri,
        "novelty_images_uri": request.novelty_uri or "",
        "results_uri": settings.output_uri,
        "since": str(request.since or ""),
        "until": str(request.until or ""),
        "rows_from_lake": training.from_lake,
        "rows_from_champion": training.from_champion,
        "rows_from_app": training.from_app,
        "lake_rows_of_another_featurizer": training.of_another_featurizer,
        "force": request.force,
    }
    run = report.RunRecord(
        settings.replace(pca_k=training.pca_k),
        featurizer,
        challenger.model,
        training.rows.drop("source"),
        challenger.fit_points,
        CHALLENGER,
        scores.challenger,
        params=params,
        tags={"refit.decision": decision.reason},
        metrics={"champion_classifier_accuracy": accuracy} if accuracy is not None else {},
    )
    logged = report.log_and_register(client, experiment_id, run)
    client.set_model_version_tag(settings.model_name, logged.version, "refit.decision", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(settings.model_name, settings.alias, logged.version)
        log.info("promoted %s v%s to @%s: %s", settings.model_name, logged.version, settings.alias, decision.reason)
    else:
        log.info("kept %s as @%s: %s", champion.label, settings.alias, decision.reason)
    return logged


def refit_summary(
    request: Request,
    champion: ResolvedModel,
    training: Training,
    challenger: Challenger,
    scores: Scores,
    decision: Decision,
    logged: Logged,
) -> dict[str, Any]:
    """The `fruits refit --json` contract, but for the measurements refit() adds (featurized, lapack, timings,
    seconds)."""
    settings, evaluation, novelty = request.settings, scores.challenger, scores.challenger.novelty
    return {
        "run_id": logged.run_id,
        "model_name": settings.model_name,
        "model_version": logged.version,
        "alias": CHALLENGER,
        "champion_alias": settings.alias,
        "champion_version_before": champion.version,
        "champion_version": logged.version if decision.promote else champion.version,
        "promoted": decision.promote,
        "decision": decision.reason,
        "forced": request.force,
        "classifier_accuracy": evaluation.classifier_accuracy,
        **scores.by_origin,
        "champion_classifier_accuracy": scores.champion_accuracy,
        "macro_f1": evaluation.macro_f1,
        "novelty_threshold": evaluation.novelty_threshold,
        "novelty_false_alarms": evaluation.false_alarms,
        "novelty_auroc": novelty.auroc if novelty else None,
        "novelty_detected": novelty.detected if novelty else None,
        "eval_images": evaluation.images,
        "images": training.images,
        "classes": len(pipeline.classes(challenger.model)),
        "rows_from_lake": training.from_lake,
        "rows_from_champion": training.from_champion,
        "rows_from_app": training.from_app,
        **training.app.summary(),
        "lake_rows_of_another_featurizer": training.of_another_featurizer,
        "since": request.since.isoformat() if request.since else None,
        "until": request.until.isoformat() if request.until else None,
        "pca_k": training.pca_k,
        "features_uri": logged.features_uri,
        "plots_uri": f"{logged.artifact_uri}/plots",
        "tracking_uri": settings.tracking_uri,
    }


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
    rows = (
        spark.read.parquet(*files)
        .select("path", "label", "features", "featurizer_sha256")
        .filter(F.col("label").isNotNull() & F.col("features").isNotNull())
    )
    mine = F.col("featurizer_sha256") == weights_sha256
    other = rows.filter(~mine).count()
    if other:
        log.warning("left out %d lake rows of another featurizer (not weights sha256 %s)", other, weights_sha256[:12])
    return rows.filter(mine).drop("featurizer_sha256").withColumn("source", F.lit("lake")), other


def date_range(since: date | None, until: date | None) -> str:
    if not (since or until):
        return ""
    return (
        f" ingested {'from ' + since.isoformat() if since else ''}{' ' if since and until else ''}"
        f"{'until ' + until.isoformat() if until else ''}"
    )
