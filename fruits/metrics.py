"""Model quality: 1-nearest-neighbour and classifier accuracy, macro-F1, and how well a novelty score
separates unseen classes from known ones (AUROC, and the threshold a target false-alarm rate gives)."""

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


def macro_f1(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """F1 per true class, averaged with equal weight: a class the model never gets right counts fully."""
    from sklearn.metrics import f1_score

    labels = sorted(set(truth))
    return float(f1_score(list(truth), list(predicted), labels=labels, average="macro", zero_division=0))


def auroc(known_scores: Sequence[float], novel_scores: Sequence[float]) -> float:
    """Area under the ROC curve of a novelty score (higher = more novel): the probability that an image
    of an unseen class scores above an image of a known class (0.5: chance; 1: perfect separation)."""
    from sklearn.metrics import roc_auc_score

    if len(known_scores) == 0 or len(novel_scores) == 0:
        raise ValueError("AUROC needs both known and novel scores")
    scores = np.concatenate([np.asarray(known_scores, dtype=float), np.asarray(novel_scores, dtype=float)])
    is_novel = np.concatenate([np.zeros(len(known_scores)), np.ones(len(novel_scores))])
    return float(roc_auc_score(is_novel, scores))


def threshold_for_false_alarms(known_scores: Sequence[float], rate: float) -> float:
    """The score above which a share `rate` of these known images lies: flagging above it raises
    about that rate of false alarms on images like them."""
    if len(known_scores) == 0:
        raise ValueError("no known images to calibrate on")
    return float(np.quantile(np.asarray(known_scores, dtype=float), 1.0 - rate, method="higher"))


def flagged_share(scores: Sequence[float], threshold: float) -> float:
    return float(np.mean(np.asarray(scores, dtype=float) > threshold)) if len(scores) else float("nan")
