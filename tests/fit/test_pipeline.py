"""The fit's guards against linear algebra that fails without saying so (fit.pipeline)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pyspark.ml.linalg import DenseMatrix, DenseVector

from fit.pipeline import check_components, check_head
from fruits.exceptions import FruitsError


def pca_model(components: np.ndarray, variances: list[float]) -> SimpleNamespace:
    rows, cols = components.shape
    return SimpleNamespace(
        pc=DenseMatrix(rows, cols, components.ravel(order="F").tolist()), explainedVariance=DenseVector(variances)
    )


def head_model(coefficients: np.ndarray, losses: list[float]) -> SimpleNamespace:
    rows, cols = coefficients.shape
    return SimpleNamespace(
        coefficientMatrix=DenseMatrix(rows, cols, coefficients.ravel(order="F").tolist()),
        summary=SimpleNamespace(objectiveHistory=losses, totalIterations=len(losses) - 1),
    )


def test_orthonormal_components_pass_and_duplicated_ones_are_refused() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(40, 5)))
    check_components(pca_model(q, [0.5, 0.2, 0.1, 0.05, 0.01]))
    broken = q.copy()
    broken[:, 3] = broken[:, 2]  # what Java LAPACK's dgesdd returned on 2 of 10 training sets here
    with pytest.raises(FruitsError, match=r"PCA returned invalid components \(max \|P'P - I\| = 1\)"):
        check_components(pca_model(broken, [0.5, 0.2, 0.1, 0.05, 0.01]))
    with pytest.raises(FruitsError, match="invalid components"):
        check_components(pca_model(q, [0.5, 0.2, 0.3, 0.05, 0.01]))  # variances must not increase


def test_a_head_that_learnt_nothing_is_refused() -> None:
    learnt = np.random.default_rng(1).normal(size=(32, 300))
    check_head(head_model(learnt, [3.47, 1.2, 0.3, 0.02]))
    with pytest.raises(FruitsError, match=r"the classifier did not learn \(loss 3.466 -> 3.466 in 2 iterations\)"):
        check_head(head_model(np.zeros((32, 300)), [3.466, 3.466, 3.466]))
    with pytest.raises(FruitsError, match="did not learn"):
        check_head(head_model(learnt, [3.47, 3.0, 2.9]))
