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

Two ways to apply the same model, one arithmetic:
- `project(df, model)`: Spark ML's own transform, for the batch jobs (fit, refit, evaluation);
- `Projection.of(model)`: the model's parameters as numpy arrays, applied by the stream inside
  its featurizing UDF (fruits.featurize `ProjectionInUdf`), next to the features. Measured here per
  micro-batch, Spark ML's transform cost more than the image work of a small batch: every
  batch re-serialized the 1280x300 PCA matrix into its closures and tasks (3 MB), re-planned
  four ML stages over Py4J and sent 1280 doubles per row through four vector conversions.
  `Projection` knows exactly the stages the fit builds and refuses any other model;
  tests/fruits/test_project.py checks that both give the same numbers and names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegressionModel
from pyspark.ml.feature import IndexToString, PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits.exceptions import FruitsError
from fruits.featurize import FEATURE_DIM

MODEL_INPUT_COL = "features_vec"  # Vector[1280]: what the registered PipelineModel reads
MODEL_OUTPUT_COL = "pca_vec"  # Vector[k]: the projection it writes
CLASS_INDEX_COL = "class_index"  # double: the classifier's prediction, an index into the model's labels
CLASS_SCORES_COL = "class_scores"  # Vector[classes]: raw margins
CLASS_PROBABILITY_COL = "class_probability"  # Vector[classes]: softmax probabilities
CLASS_NAME_COL = "class_name"  # string: the index mapped back to the class name, inside the model
MODEL_COLUMNS = (
    MODEL_INPUT_COL,
    "scaled",
    MODEL_OUTPUT_COL,
    CLASS_INDEX_COL,
    CLASS_SCORES_COL,
    CLASS_PROBABILITY_COL,
    CLASS_NAME_COL,
)

NOVELTY_SCORE = "msp"  # the registered `novelty.score` tag: 1 - maximum softmax probability
# The classifier head's outputs ("head" is the classifier here and everywhere: the `model.head` version tag).
HEAD_COLUMNS = {"prediction": "string", "confidence": "double", "novelty_score": "double", "is_novel": "boolean"}
# What project() adds to its input, in order and whatever the model (a model without a head gives nulls).
OUTPUT_COLUMNS = {"pca": "array<float>", **HEAD_COLUMNS}
OUTPUT_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in OUTPUT_COLUMNS.items())


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
    out = model.transform(
        df.withColumn(MODEL_INPUT_COL, array_to_vector(F.when(has_features, F.col("features")).otherwise(placeholder)))
    )
    outputs = {output_col: F.when(has_features, vector_to_array(MODEL_OUTPUT_COL, dtype="float32"))}
    if CLASS_PROBABILITY_COL in out.columns:
        confidence = F.array_max(vector_to_array(CLASS_PROBABILITY_COL))
        novelty = F.lit(1.0) - confidence
        outputs["prediction"] = F.when(has_features, F.col(CLASS_NAME_COL))
        outputs["confidence"] = F.when(has_features, confidence)
        outputs["novelty_score"] = F.when(has_features, novelty)
        outputs["is_novel"] = (
            F.when(has_features, novelty > F.lit(float(novelty_threshold)))
            if novelty_threshold is not None
            else F.lit(None)
        )
    for name, kind in HEAD_COLUMNS.items():
        outputs[name] = outputs.get(name, F.lit(None)).cast(kind)
    kept = [c for c in df.columns if c not in MODEL_COLUMNS and c not in outputs]
    return out.select(*kept, *[column.alias(name) for name, column in outputs.items()])


@dataclass(frozen=True)
class Projection:
    """A registered model's arithmetic in numpy: scaler -> PCA [-> multinomial logistic regression
    -> class names], the same numbers as its Spark ML transform (float64 throughout, pca as float32).

    Built on the driver once per model version (`of`), broadcast, applied by the Python workers
    to each Arrow batch of features (`apply`)."""

    mean: np.ndarray  # (1280,): subtracted (zeros if the scaler has no mean)
    scale: np.ndarray  # (1280,): 1 / std, 0 where std is 0 (Spark's rule); ones without std
    components: np.ndarray  # (1280, k): PCA's principal components, as columns
    coefficients: np.ndarray | None  # (classes, k), None without a head
    intercepts: np.ndarray | None  # (classes,)
    labels: tuple[str, ...]  # class names in index order
    novelty_threshold: float | None

    @classmethod
    def of(cls, model: PipelineModel, novelty_threshold: float | None = None) -> Projection:
        stages = model.stages
        kinds = [type(stage).__name__ for stage in stages]
        head = (
            len(stages) == 4 and isinstance(stages[2], LogisticRegressionModel) and isinstance(stages[3], IndexToString)
        )
        if (
            len(stages) not in (2, 4)
            or not isinstance(stages[0], StandardScalerModel)
            or not isinstance(stages[1], PCAModel)
            or (len(stages) == 4 and not head)
        ):
            raise FruitsError(
                f"the stream applies StandardScaler -> PCA [-> LogisticRegression -> IndexToString], "
                f"the stages `fruits fit` builds; this model has {' -> '.join(kinds)}"
            )
        scaler, pca = stages[0], stages[1]
        std = scaler.std.toArray()
        mean = scaler.mean.toArray() if scaler.getWithMean() else np.zeros(FEATURE_DIM)
        scale = (
            np.divide(1.0, std, out=np.zeros_like(std), where=std != 0) if scaler.getWithStd() else np.ones(FEATURE_DIM)
        )
        coefficients = intercepts = None
        labels: tuple[str, ...] = ()
        if head:
            lr, names = stages[2], stages[3]
            coefficients = lr.coefficientMatrix.toArray()
            if coefficients.shape[0] != lr.numClasses or lr.isSet("thresholds") or lr.isSet("threshold"):
                raise FruitsError(
                    "the stream applies a multinomial logistic regression without thresholds, the head "
                    "`fruits fit` builds; this model's head is binomial or has thresholds"
                )
            intercepts = lr.interceptVector.toArray()
            labels = tuple(names.getLabels())
        return cls(
            mean=mean,
            scale=scale,
            components=pca.pc.toArray(),
            coefficients=coefficients,
            intercepts=intercepts,
            labels=labels,
            novelty_threshold=novelty_threshold,
        )

    def probabilities(self, pca: np.ndarray) -> np.ndarray | None:
        """(n, k) projections -> (n, classes) class probabilities, columns in `labels` order; None without a head.
        The stream's answers rank an upload's top classes with it, from the `pca` its results row holds."""
        if self.coefficients is None:
            return None
        margins = np.asarray(pca, dtype=np.float64) @ self.coefficients.T + self.intercepts
        margins -= margins.max(axis=1, keepdims=True)
        probabilities = np.exp(margins)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def apply(self, features: np.ndarray) -> pd.DataFrame:
        """float32 (n, 1280) -> the OUTPUT_COLUMNS of n rows (head columns null without a head)."""
        pca = ((features.astype(np.float64) - self.mean) * self.scale) @ self.components
        out = {"pca": list(pca.astype(np.float32))}
        n = len(features)
        if self.coefficients is None:
            return pd.DataFrame(
                {
                    **out,
                    "prediction": [None] * n,
                    "confidence": [None] * n,
                    "novelty_score": [None] * n,
                    "is_novel": [None] * n,
                }
            )
        probabilities = self.probabilities(pca)
        confidence = probabilities.max(axis=1)
        novelty = 1.0 - confidence
        return pd.DataFrame(
            {
                **out,
                "prediction": np.asarray(self.labels, dtype=object)[probabilities.argmax(axis=1)],
                "confidence": confidence,
                "novelty_score": novelty,
                "is_novel": (novelty > self.novelty_threshold) if self.novelty_threshold is not None else [None] * n,
            }
        )
