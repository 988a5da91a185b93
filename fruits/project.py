"""Project: features -> the registered model -> its outputs, as plain float arrays.

The registered Spark ML PipelineModel reads one vector column and writes another; these names
are part of the model's contract (also stored as registered-version tags by the fit). Outside
the model everything is a plain float array, which pandas, pyarrow and any engine read.
"""

from __future__ import annotations

from pyspark.ml import PipelineModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits.featurize import FEATURE_DIM

MODEL_INPUT_COL = "features_vec"  # Vector[1280]: what the registered PipelineModel reads
MODEL_OUTPUT_COL = "pca_vec"  # Vector[k]: what it writes


def to_model_input(df: DataFrame, features_col: str = "features") -> DataFrame:
    return df.withColumn(MODEL_INPUT_COL, array_to_vector(features_col))


def project(df: DataFrame, model: PipelineModel, output_col: str = "pca") -> DataFrame:
    """features (float array) -> model -> `output_col` (float array); the vector columns are dropped.

    Rows without features (rejected images) keep flowing in the same plan: they go through the
    model as zeros and come out with a null `output_col`, so one pass serves good and bad rows.
    """
    has_features = F.col("features").isNotNull()
    placeholder = F.array_repeat(F.lit(0.0).cast("float"), FEATURE_DIM)
    projected = model.transform(df.withColumn(
        MODEL_INPUT_COL, array_to_vector(F.when(has_features, F.col("features")).otherwise(placeholder))))
    projected = projected.withColumn(
        output_col, F.when(has_features, vector_to_array(MODEL_OUTPUT_COL, dtype="float32")))
    intermediate = {MODEL_INPUT_COL, MODEL_OUTPUT_COL}
    return projected.select(*[c for c in [*df.columns, output_col] if c not in intermediate])
