"""DataFrame transforms shared by the fit and the streaming jobs.

Each function takes a DataFrame and returns one; none reads or writes storage except
`read_images`, the single reader of images for batch and stream alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from fruits import images
from fruits.featurizer import Featurizer, featurize_contents, worker_engine

if TYPE_CHECKING:
    from pyspark import Accumulator
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame, SparkSession

BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
FEATURES_SCHEMA = "features array<float>, reject_reason string, reject_detail string"
REJECT_SCHEMA = "reject_reason string, reject_detail string"
MODEL_INPUT_COL = "features_vec"  # Vector[1280]: what the registered PipelineModel reads
MODEL_OUTPUT_COL = "pca_vec"  # Vector[k]: what it writes
WORKER_THREADS = 1  # one intra-op thread per Python worker: Spark runs one worker per core


def read_images(
    spark: SparkSession, uri: str, *, stream: bool = False, max_files_per_trigger: int | None = None
) -> DataFrame:
    """Image files under `uri` (recursive; jpg/jpeg/png in any case).

    Spark itself skips names starting with '.' or '_' (files and folders) and the glob keeps
    out `*.tmp` and `*._COPYING_`, so files that are still being written are never picked up.
    """
    reader = spark.readStream if stream else spark.read
    reader = (
        reader.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", images.IMAGE_GLOB)
    )
    if stream and max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    return reader.load(uri)


def label_column(path: Column | str, root: str) -> Column:
    """Spark twin of images.label_from_path: the parent folder's name, null directly under `root`."""
    from pyspark.sql import functions as F

    def comparable(c: Column) -> Column:
        return F.regexp_replace(F.regexp_replace(c, r"^[A-Za-z][A-Za-z0-9+.-]*:", ""), r"^/+|/+$", "")

    parent = comparable(F.regexp_extract(F.col(path) if isinstance(path, str) else path, r"^(.*)/[^/]*$", 1))
    root_cmp = images.comparable_path(root)
    return F.when((parent == F.lit("")) | (parent == F.lit(root_cmp)), F.lit(None).cast("string")).otherwise(
        F.regexp_extract(parent, r"([^/]+)$", 1)
    )


def featurize(
    df: DataFrame,
    featurizer: Featurizer,
    max_pixels: int,
    content_col: str = "content",
    counter: Accumulator | None = None,
) -> DataFrame:
    """Add `features` (1280 float32, null when rejected), `reject_reason` and `reject_detail`.

    A pandas *iterator* UDF: each Python worker builds its engine once from the broadcast
    payload and keeps it for every later batch and task. `counter`, if given, adds the number
    of images decoded, which shows whether a plan featurizes an image more than once.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    payload = featurizer.broadcast(df.sparkSession.sparkContext)
    kind, sha = featurizer.engine, featurizer.spec.weights_sha256

    @pandas_udf(FEATURES_SCHEMA)
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        engine = worker_engine(kind, sha, lambda: payload.value, WORKER_THREADS)
        for contents in batches:
            result = featurize_contents(engine, contents.tolist(), max_pixels)
            if counter is not None:
                counter.add(len(contents))
            yield pd.DataFrame(
                {"features": result.features, "reject_reason": result.reasons, "reject_detail": result.details}
            )

    # Non-deterministic so the optimizer never evaluates the UDF once per struct field.
    udf = featurize_udf.asNondeterministic()
    return df.withColumn("_featurized", udf(F.col(content_col))).select(
        *[c for c in df.columns], "_featurized.*"
    )


def reject_reasons(df: DataFrame, max_pixels: int, content_col: str = "content") -> DataFrame:
    """Add `reject_reason`/`reject_detail` by decoding only (no model): null for a good image.

    Uses the same images.load_rgb as `featurize`, so both agree on what is an error.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(REJECT_SCHEMA)
    def check_udf(contents: pd.Series) -> pd.DataFrame:
        found = [images.check(data, max_pixels) for data in contents]
        return pd.DataFrame(
            {"reject_reason": [r.reason if r else None for r in found], "reject_detail": [r.detail if r else None for r in found]}
        )

    udf = check_udf.asNondeterministic()
    return df.withColumn("_checked", udf(F.col(content_col))).select(*[c for c in df.columns], "_checked.*")


def to_model_input(df: DataFrame, features_col: str = "features") -> DataFrame:
    from pyspark.ml.functions import array_to_vector

    return df.withColumn(MODEL_INPUT_COL, array_to_vector(features_col))


def project(df: DataFrame, model: PipelineModel, output_col: str = "pca") -> DataFrame:
    """features (float array) -> model -> `output_col` (float array); the vector columns are dropped."""
    from pyspark.ml.functions import vector_to_array

    projected = model.transform(to_model_input(df))
    keep = [c for c in df.columns] + [output_col]
    intermediate = {MODEL_INPUT_COL, MODEL_OUTPUT_COL}
    projected = projected.withColumn(output_col, vector_to_array(MODEL_OUTPUT_COL, dtype="float32"))
    return projected.select(*[c for c in keep if c not in intermediate])
