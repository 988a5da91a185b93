"""Project and classify: features -> the registered model -> its outputs, as plain columns.

The registered Spark ML PipelineModel reads one vector column and writes a projection and, when
it has a classifier head, class probabilities and the class name; these names are part of the
model's contract (also stored as registered-version tags by the fit). Outside the model every
output is a plain column, which pandas, pyarrow and any engine read:

  pca            float array: the PCA projection
  prediction     string: the most probable class (its name, from the label index inside the model)
  confidence     double: that class's probability
  novelty_score  double: 1 - confidence (maximum softmax probability, MSP): higher means farther
                 from every class the model knows; chosen by measurement on unseen fruit classes
  is_novel       boolean: novelty_score above the threshold calibrated on held-out known images
                 and stored with the model version (`novelty.threshold` tag); null without one

A model without a head (fitted before the classifier existed) gives nulls in the last four.
"""

from __future__ import annotations

from pyspark.ml import PipelineModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits.featurize import FEATURE_DIM

MODEL_INPUT_COL = "features_vec"  # Vector[1280]: what the registered PipelineModel reads
MODEL_OUTPUT_COL = "pca_vec"  # Vector[k]: the projection it writes
CLASS_INDEX_COL = "class_index"  # double: the classifier's prediction, an index into the model's labels
CLASS_SCORES_COL = "class_scores"  # Vector[classes]: raw margins
CLASS_PROBABILITY_COL = "class_probability"  # Vector[classes]: softmax probabilities
CLASS_NAME_COL = "class_name"  # string: the index mapped back to the class name, inside the model
MODEL_COLUMNS = (MODEL_INPUT_COL, "scaled", MODEL_OUTPUT_COL, CLASS_INDEX_COL, CLASS_SCORES_COL,
                 CLASS_PROBABILITY_COL, CLASS_NAME_COL)

NOVELTY_SCORE = "msp"  # the registered `novelty.score` tag: 1 - maximum softmax probability
HEAD_COLUMNS = {"prediction": "string", "confidence": "double", "novelty_score": "double", "is_novel": "boolean"}
# What project() adds to its input, in order and whatever the model (a model without a head gives nulls).
OUTPUT_COLUMNS = {"pca": "array<float>", **HEAD_COLUMNS}


def to_model_input(df: DataFrame, features_col: str = "features") -> DataFrame:
    return df.withColumn(MODEL_INPUT_COL, array_to_vector(features_col))


def project(
    df: DataFrame, model: PipelineModel, novelty_threshold: float | None = None, output_col: str = "pca"
) -> DataFrame:
    """features (float array) -> model -> `output_col` (float array) and the four head columns.

    Rows without features (rejected images) keep flowing in the same plan: they go through the
    model as zeros and come out with nulls, so one pass serves good and bad rows.
    """
    has_features = F.col("features").isNotNull()
    placeholder = F.array_repeat(F.lit(0.0).cast("float"), FEATURE_DIM)
    out = model.transform(df.withColumn(
        MODEL_INPUT_COL, array_to_vector(F.when(has_features, F.col("features")).otherwise(placeholder))))
    outputs = {output_col: F.when(has_features, vector_to_array(MODEL_OUTPUT_COL, dtype="float32"))}
    if CLASS_PROBABILITY_COL in out.columns:
        confidence = F.array_max(vector_to_array(CLASS_PROBABILITY_COL))
        novelty = F.lit(1.0) - confidence
        outputs["prediction"] = F.when(has_features, F.col(CLASS_NAME_COL))
        outputs["confidence"] = F.when(has_features, confidence)
        outputs["novelty_score"] = F.when(has_features, novelty)
        outputs["is_novel"] = (F.when(has_features, novelty > F.lit(float(novelty_threshold)))
                               if novelty_threshold is not None else F.lit(None))
    for name, kind in HEAD_COLUMNS.items():
        outputs[name] = outputs.get(name, F.lit(None)).cast(kind)
    kept = [c for c in df.columns if c not in MODEL_COLUMNS and c not in outputs]
    return out.select(*kept, *[column.alias(name) for name, column in outputs.items()])
