"""The registered model, fitted stage by stage: StandardScaler -> PCA -> logistic regression -> class names.

One function, used by the fit (features of images) and the refit (features from the lake):
rows of `features` (1280 floats) and `label` (class name) in, a PipelineModel out. The label index
lives inside the model (IndexToString with the class names), so whatever applies it gets names.

Why stage by stage and not Pipeline.fit: the head's L-BFGS runs one Spark job per iteration, and
every job ships its input's lineage to the tasks. Behind the classifier's input stand the scaler
and the 1280x300 PCA matrix (3 MB): a local checkpoint of the projected rows cuts that lineage, so
each iteration ships a few KB instead.

The head, chosen by measurement (study in docs/results.md, "Model quality"): multinomial logistic
regression on the standardized PCA-300 projection, light L2 (regParam 1e-4), no re-standardization
of the PCA components (standardization=True stretched the low-variance components and lost 1.5-2
points of accuracy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import PCA, IndexToString, PCAModel, StandardScaler, StringIndexer
from pyspark.sql import DataFrame

from fruits.exceptions import FruitsError
from fruits.project import (
    CLASS_INDEX_COL,
    CLASS_NAME_COL,
    CLASS_PROBABILITY_COL,
    CLASS_SCORES_COL,
    MODEL_INPUT_COL,
    MODEL_OUTPUT_COL,
    to_model_input,
)

log = logging.getLogger("fruits.fit")

LABEL_INDEX_COL = "label_index"
HEAD = "logistic_regression"
ROWS_PER_HEAD_PARTITION = 50_000
LAPACK_ADVICE = (
    "install a native LAPACK, e.g. `make native-blas`, and fit again"  # 300 doubles a row: about 120 MB a partition
)
HEAD_PARAMS: dict[str, Any] = {
    "family": "multinomial",
    "regParam": 1e-4,
    "elasticNetParam": 0.0,
    "standardization": False,
    "maxIter": 100,
    "tol": 1e-6,
}


def fit_model(
    training: DataFrame, pca_k: int, rows: int, lap: Callable[[str], object] = lambda step: None
) -> PipelineModel:
    """training(features: array<float>, label: string), `rows` of them -> scaler -> PCA -> classifier -> names.
    `lap(step)` is called as each step ends ("scaler", "pca", "head"): the jobs' timings (fit.job.Clock.lap)."""
    data = to_model_input(training).select(MODEL_INPUT_COL, "label")
    indexer = StringIndexer(inputCol="label", outputCol=LABEL_INDEX_COL, stringOrderType="alphabetAsc").fit(data)
    if len(indexer.labels) < 2:
        raise FruitsError(f"the classifier needs at least 2 classes (class folders), found {len(indexer.labels)}")
    scaler = StandardScaler(inputCol=MODEL_INPUT_COL, outputCol="scaled", withMean=True, withStd=True).fit(data)
    lap("scaler")
    scaled = scaler.transform(data)
    pca = PCA(k=pca_k, inputCol="scaled", outputCol=MODEL_OUTPUT_COL).fit(scaled)
    check_components(pca)
    lap("pca")
    projected = indexer.transform(pca.transform(scaled)).select(MODEL_OUTPUT_COL, LABEL_INDEX_COL)
    # Computed once and kept; few partitions: each L-BFGS iteration is one small job, and per-task
    # overhead, not arithmetic, is what a few thousand rows cost (1 partition: 2x faster than 2 here).
    partitions = max(1, math.ceil(rows / ROWS_PER_HEAD_PARTITION))
    head_input = projected.coalesce(partitions).localCheckpoint(eager=True)
    head = LogisticRegression(
        featuresCol=MODEL_OUTPUT_COL,
        labelCol=LABEL_INDEX_COL,
        predictionCol=CLASS_INDEX_COL,
        rawPredictionCol=CLASS_SCORES_COL,
        probabilityCol=CLASS_PROBABILITY_COL,
        **HEAD_PARAMS,
    ).fit(head_input)
    check_head(head)
    lap("head")
    log.info("classifier: %d classes, %d L-BFGS iterations", len(indexer.labels), head.summary.totalIterations)
    names = IndexToString(inputCol=CLASS_INDEX_COL, outputCol=CLASS_NAME_COL, labels=list(indexer.labels))
    return PipelineModel(stages=[scaler, pca, head, names])


def check_components(pca: PCAModel) -> None:
    """PCA's components must be orthonormal, its variances non-increasing. Java LAPACK's SVD (the
    fallback without a native library) sometimes returns wrong vectors without an error: 2 of 10
    training sets measured here, with duplicated components; everything after them is then wrong."""
    components = pca.pc.toArray()
    drift = float(np.abs(components.T @ components - np.eye(components.shape[1])).max())
    variance = pca.explainedVariance.toArray()
    if drift > 1e-6 or np.any(np.diff(variance) > 1e-12):
        raise FruitsError(
            f"PCA returned invalid components (max |P'P - I| = {drift:.2g}): the linear-algebra "
            f"library failed ({LAPACK_ADVICE}); nothing was registered"
        )


def check_head(head: LogisticRegressionModel) -> None:
    """The classifier must have learnt: after invalid components L-BFGS stops at once, with all-zero
    coefficients and a loss still at its start (every probability 1/classes), and says nothing."""
    history = head.summary.objectiveHistory
    if not np.abs(head.coefficientMatrix.toArray()).any() or history[-1] > 0.5 * history[0]:
        raise FruitsError(
            f"the classifier did not learn (loss {history[0]:.3f} -> {history[-1]:.3f} in "
            f"{head.summary.totalIterations} iterations): check the training labels, or the "
            f"linear-algebra library ({LAPACK_ADVICE}); nothing was registered"
        )


def classes(model: PipelineModel) -> list[str]:
    """The class names the model predicts, in index order."""
    return list(model.stages[-1].getLabels()) if has_head(model) else []


def has_head(model: PipelineModel) -> bool:
    return isinstance(model.stages[-1], IndexToString)


def explained_variance(model: PipelineModel) -> float:
    pca = next(s for s in model.stages if hasattr(s, "explainedVariance"))
    return float(pca.explainedVariance.toArray().sum())
