"""The two streaming DataFrames of the job: projected results, and the errors query's input.

Both read the same source with the same options, each in its own query with its own
checkpoint, so each table is exactly-once on its own:
- results: files up to `max_image_bytes` -> decode + featurize -> the registered model,
           written by Spark's file sink (its `_spark_metadata` log is the commit protocol);
- errors:  the same files' metadata, handed per micro-batch to streaming.quarantine.
The size filter is pushed into the scan: a file over the limit is never read.
"""

from __future__ import annotations

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import featurize, project, source
from fruits.featurize import Featurizer
from fruits.registry import ResolvedModel
from fruits.settings import Settings

PARTITION_COLUMNS = ["ingest_date"]
RESULTS_METRICS = "batch"


def _source(spark: SparkSession, settings: Settings, uri: str) -> DataFrame:
    return source.read_images(spark, uri, stream=True, max_files_per_trigger=settings.max_files_per_trigger)


def _common(df: DataFrame, source_root: str) -> DataFrame:
    return (
        df.withColumn("label", source.label_column("path", source_root))
        .withColumnRenamed("length", "size")
        .withColumnRenamed("modificationTime", "modification_time")
        # current_timestamp() is fixed per micro-batch: the batch's ingest time.
        .withColumn("ingest_time", F.current_timestamp())
        .withColumn("ingest_date", F.to_date("ingest_time"))
    )


def results_frame(
    spark: SparkSession,
    settings: Settings,
    uri: str,
    source_root: str,
    featurizer: Featurizer,
    model: PipelineModel,
    resolved: ResolvedModel,
) -> DataFrame:
    images = _source(spark, settings, uri).filter(F.col("length") <= settings.max_image_bytes)
    featurized = featurize.featurize(_common(images, source_root), featurizer, settings.max_image_pixels).drop("content")
    # Per-batch numbers for the log line, computed on the batch as it flows (no extra pass).
    observed = featurized.observe(
        RESULTS_METRICS,
        F.count(F.lit(1)).alias("input"),
        F.sum(F.when(F.col("reason").isNotNull(), 1).otherwise(0)).alias("rejected"),
        F.collect_list(F.unix_micros("modification_time")).alias("mtimes_us"),
    )
    good = observed.filter(F.col("reason").isNull())
    projected = project.project(good, model)
    return projected.select(
        "path", "label", "size", "modification_time", "ingest_time", "features", "pca",
        F.lit(resolved.name).alias("model_name"),
        F.lit(resolved.version).alias("model_version"),
        F.lit(featurizer.spec.weights_sha256).alias("featurizer_sha256"),
        "ingest_date",
    )


def errors_source(spark: SparkSession, settings: Settings, uri: str, source_root: str) -> DataFrame:
    """Every file of the source with its metadata; the quarantine decides, per batch, what is bad."""
    return _common(_source(spark, settings, uri), source_root)
