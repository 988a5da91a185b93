"""Model quality, in plain numpy: 1-nearest-neighbour accuracy of held-out images against the fit set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_neighbour(train: np.ndarray, queries: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Index into `train` of each query's nearest neighbour (Euclidean), chunked to bound memory."""
    train = np.asarray(train, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    train_sq = np.einsum("ij,ij->i", train, train)
    nearest = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        # |q - t|^2 = |q|^2 - 2 q.t + |t|^2; |q|^2 does not change the argmin.
        nearest[start : start + chunk] = np.argmin(train_sq[None, :] - 2.0 * block @ train.T, axis=1)
    return nearest


def knn_predict(train: np.ndarray, train_labels: Sequence[str], queries: np.ndarray) -> list[str]:
    labels = np.asarray(train_labels, dtype=object)
    return list(labels[nearest_neighbour(train, queries)])


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    if len(truth) == 0:
        raise ValueError("no evaluation images")
    return float(np.mean(np.asarray(predicted, dtype=object) == np.asarray(truth, dtype=object)))
