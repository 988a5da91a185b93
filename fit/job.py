"""Fit StandardScaler + PCA on MobileNetV2 features of labelled images and register the model in MLflow.

Images are read as <URI>/<class name>/<file>.(jpg|jpeg|png) from a directory, file://, s3a://
or s3:// URI. Every image is featurized exactly once (the features are cached for the MLlib
stages); unreadable files are skipped and reported. The run logs params, metrics, plots, the
featurizer identity and the Spark PipelineModel; the model is registered and the alias
(default @champion) points at the new version. Raw features are written as parquet so PCA can
be refitted without MobileNet.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fruits import plots, registry
from fruits.console import add_job_flags, emit_summary, settings_from_args
from fruits.errors import FruitsError
from fruits.evaluate import accuracy, knn_predict
from fruits.featurizer import FEATURE_DIM, Featurizer
from fruits.settings import Settings

if TYPE_CHECKING:
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("fruits.fit")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="URI", help="labelled images: URI/<class>/<file>.jpg")
    parser.add_argument("--eval-images", metavar="URI", help="held-out labelled images for the 1-NN accuracy metrics")
    parser.add_argument("--pca-k", type=int, metavar="K", help="principal components (default 300)")
    parser.add_argument("--model-name", metavar="NAME", help="registered model name (default fruits-pca)")
    parser.add_argument("--alias", help="alias moved to the new version (default champion)")
    parser.add_argument("--experiment", help="MLflow experiment (default fruits)")
    parser.add_argument("--features-output", dest="features", metavar="URI",
                        help="root for the raw features parquet (default .fruits/features); one folder per run")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    summary = fit(settings, args.images, args.eval_images, progress=not args.quiet)
    emit_summary(summary, args.json, human_summary(summary))
    return 0


# ----------------------------------------------------------------------------- the job
def fit(
    settings: Settings,
    images_uri: str,
    eval_uri: str | None = None,
    *,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Featurize, fit, evaluate, log and register. Returns the summary (the --json contract)."""
    from pyspark import StorageLevel
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.sql import functions as F

    from fruits import transforms as T
    from fruits.progress import spark_progress
    from fruits.spark import get_spark, path_exists

    started = time.perf_counter()
    if settings.pca_k > FEATURE_DIM:
        raise FruitsError(f"--pca-k {settings.pca_k} is more than the {FEATURE_DIM} features per image")
    spark = spark or get_spark(settings, "fruits-fit", uris=[images_uri, eval_uri or "", settings.features_uri])
    for flag, uri in (("--images", images_uri), ("--eval-images", eval_uri)):
        if uri and not path_exists(spark, uri):
            raise FruitsError(f"{flag} path not found: {uri}")
    client = registry.connect(settings)  # fail fast on a bad tracking URI, before any featurizing
    experiment_id = registry.ensure_experiment(client, settings)
    featurizer = Featurizer.load(settings.weights, settings.engine, settings.cache_dir, settings.keras_home)
    featurized = spark.sparkContext.accumulator(0)

    rows = labelled_features(spark, images_uri, featurizer, settings, featurized).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        t0 = time.perf_counter()
        with spark_progress(spark, "featurizing fit images", progress):
            total = rows.count()
        featurize_seconds = time.perf_counter() - t0
        if total == 0:
            raise FruitsError(f"no images (jpg, jpeg, png) under {images_uri}")
        skipped = [(r.path, r.skip_reason) for r in rows.filter("skip_reason IS NOT NULL").select("path", "skip_reason").collect()]
        valid = rows.filter("skip_reason IS NULL").drop("skip_reason", "reject_reason", "reject_detail")
        n_valid = total - len(skipped)
        for path, reason in skipped:
            log.warning("skipped %s: %s", path, reason)
        if n_valid < settings.pca_k:
            raise FruitsError(
                f"--pca-k {settings.pca_k} is larger than the {n_valid} valid images under {images_uri}"
                f" ({len(skipped)} skipped): lower --pca-k or add images"
            )
        log.info("featurized %d images (%d skipped) in %.1f s", total, len(skipped), featurize_seconds)

        pipeline = Pipeline(
            stages=[
                StandardScaler(inputCol=T.MODEL_INPUT_COL, outputCol="scaled", withMean=True, withStd=True),
                PCA(k=settings.pca_k, inputCol="scaled", outputCol=T.MODEL_OUTPUT_COL),
            ]
        )
        with spark_progress(spark, "fitting StandardScaler + PCA", progress):
            model = pipeline.fit(T.to_model_input(valid))
        ratios = np.asarray(model.stages[-1].explainedVariance.toArray())
        # The driver gets what it uses: every column for the 1-NN metrics, else labels and PC1/PC2.
        projected = T.project(valid, model)
        fit_points = (projected.select("label", "features", "pca") if eval_uri
                      else projected.select("label", F.slice("pca", 1, 2).alias("pca"))).toPandas()
        labels = fit_points["label"].tolist()
        classes = sorted(set(labels))

        evaluation = evaluate(spark, eval_uri, featurizer, settings, model, fit_points, featurized) if eval_uri else {}

        run_id, version, features_uri, artifact_uri = log_run(
            client, experiment_id, settings, featurizer, model, valid,
            images_uri=images_uri, eval_uri=eval_uri, ratios=ratios, fit_points=fit_points,
            evaluation=evaluation, skipped=skipped, featurize_rate=total / featurize_seconds,
        )

    finally:
        rows.unpersist()  # also when the fit fails: the cache holds every image's features

    return {
        "run_id": run_id,
        "model_name": settings.model_name,
        "model_version": version,
        "alias": settings.alias,
        "images": n_valid,
        "classes": len(classes),
        "skipped": len(skipped),
        "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
        "pca_k": settings.pca_k,
        "explained_variance": round(float(ratios.sum()), 6),
        "knn_accuracy": evaluation.get("knn_accuracy"),
        "knn_accuracy_raw": evaluation.get("knn_accuracy_raw"),
        "eval_images": evaluation.get("eval_images"),
        "weights_sha256": featurizer.spec.weights_sha256,
        "engine": featurizer.engine,
        "featurized": featurized.value,
        "features_uri": features_uri,
        "plots_uri": f"{artifact_uri}/plots",
        "tracking_uri": settings.tracking_uri,
        "seconds": round(time.perf_counter() - started, 2),
    }



def log_run(
    client,
    experiment_id: str,
    settings: Settings,
    featurizer: Featurizer,
    model,
    valid: DataFrame,
    *,
    images_uri: str,
    eval_uri: str | None,
    ratios: np.ndarray,
    fit_points,
    evaluation: dict[str, Any],
    skipped: list[tuple[str, str]],
    featurize_rate: float,
) -> tuple[str, str, str, str]:
    """One MLflow run: raw features, params, metrics, plots, featurizer identity, the model, the alias.

    Returns (run id, registered version, raw features URI, artifact URI).
    """
    import mlflow
    import pyspark

    from fruits import transforms as T

    labels = fit_points["label"].tolist()
    classes = sorted(set(labels))
    with mlflow.start_run(experiment_id=experiment_id) as active:
        run_id = active.info.run_id
        features_uri = f"{settings.features_uri.rstrip('/')}/{run_id}"
        valid.select("path", "label", "features").write.mode("overwrite").parquet(features_uri)
        spec_tags = featurizer.spec.as_tags()
        mlflow.set_tags(spec_tags)
        mlflow.log_params(
            {
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
            }
        )
        metrics = {
            "explained_variance": float(ratios.sum()),
            "featurize_images_per_second": featurize_rate,
        }
        metrics.update({k: v for k, v in evaluation.items() if isinstance(v, float)})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            plots.explained_variance(ratios, out / "explained_variance.png")
            plots.projection_2d(
                np.stack(fit_points["pca"].to_numpy())[:, :2], labels, out / "projection_2d.png",
                title=f"Fit images in PCA space (PC1, PC2): {len(labels)} images, {len(classes)} classes",
            )
            if "confusion" in evaluation:
                truth, predicted = evaluation["confusion"]
                plots.confusion(truth, predicted, out / "knn_confusion.png",
                                title=f"1-NN on held-out images: accuracy {evaluation['knn_accuracy']:.3f}")
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
                {"model.input_col": T.MODEL_INPUT_COL, "model.output_col": T.MODEL_OUTPUT_COL,
                 "pca_k": settings.pca_k, "fit.features_uri": features_uri},
            ),
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        return run_id, version, features_uri, active.info.artifact_uri


def labelled_features(
    spark: SparkSession, uri: str, featurizer: Featurizer, settings: Settings, counter: Accumulator | None = None
) -> DataFrame:
    """path, label, features and `skip_reason` (null for a usable labelled image)."""
    from pyspark.sql import functions as F

    from fruits import transforms as T
    from fruits.spark import qualify

    images = T.read_images(spark, uri).withColumn("label", T.label_column("path", qualify(spark, uri)))
    featured = T.featurize(images.drop("modificationTime"), featurizer, settings.max_image_pixels, counter=counter)
    reason = F.when(F.col("reject_reason").isNotNull(), F.concat_ws(": ", "reject_reason", "reject_detail")).when(
        F.col("label").isNull(), F.lit("no_class_folder: image is not inside a class folder")
    )
    return featured.drop("content").withColumn("skip_reason", reason)


def evaluate(
    spark: SparkSession,
    eval_uri: str,
    featurizer: Featurizer,
    settings: Settings,
    model,
    fit_points,
    counter: Accumulator | None,
) -> dict[str, Any]:
    """1-NN accuracy of the eval images against the fit images, in PCA space and on raw features."""
    from fruits import transforms as T

    rows = labelled_features(spark, eval_uri, featurizer, settings, counter).cache()
    usable = rows.filter("skip_reason IS NULL")
    points = T.project(usable, model).select("label", "features", "pca").toPandas()
    skipped = rows.filter("skip_reason IS NOT NULL").count()
    rows.unpersist()
    if points.empty:
        raise FruitsError(f"no usable labelled images under --eval-images {eval_uri}")
    truth = points["label"].tolist()
    fit_labels = fit_points["label"].tolist()
    predicted = knn_predict(np.stack(fit_points["pca"].to_numpy()), fit_labels, np.stack(points["pca"].to_numpy()))
    predicted_raw = knn_predict(
        np.stack(fit_points["features"].to_numpy()), fit_labels, np.stack(points["features"].to_numpy())
    )
    result = {
        "knn_accuracy": accuracy(predicted, truth),
        "knn_accuracy_raw": accuracy(predicted_raw, truth),
        "eval_images": len(truth),
        "eval_skipped": skipped,
        "confusion": (truth, predicted),
    }
    log.info(
        "1-NN accuracy on %d eval images: %.3f in PCA space, %.3f on raw features",
        len(truth), result["knn_accuracy"], result["knn_accuracy_raw"],
    )
    return result


def human_summary(s: dict[str, Any]) -> str:
    lines = [
        f"fitted {s['model_name']} v{s['model_version']} (@{s['alias']}) on {s['images']} images, "
        f"{s['classes']} classes, {s['skipped']} skipped, in {s['seconds']:.0f} s",
        f"  PCA k={s['pca_k']} keeps {s['explained_variance']:.1%} of the variance",
    ]
    if s["knn_accuracy"] is not None:
        lines.append(
            f"  1-NN accuracy on {s['eval_images']} held-out images: {s['knn_accuracy']:.3f} in PCA space, "
            f"{s['knn_accuracy_raw']:.3f} on raw features"
        )
    lines += [
        f"  featurizer: MobileNetV2 ({s['engine']}), weights sha256 {s['weights_sha256'][:12]}",
        f"  run {s['run_id']} in {s['tracking_uri']}",
        f"  plots:        {s['plots_uri']}",
        f"  raw features: {s['features_uri']}",
    ]
    return "\n".join(lines)
