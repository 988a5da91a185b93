"""streaming.answers on hand-made rows: which rows are answered, and the numbers each answer carries.

A tiny model (2 projection dimensions, 3 classes) whose probabilities the test computes itself,
and a known map of 4 points whose nearest neighbours are obvious: no Spark, a few milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from fruits.answers import ANSWERED, REJECTED
from fruits.knownmap import KnownMap
from fruits.project import Projection
from fruits.sinks import ERRORS, RESULTS
from streaming.answers import answers_for_batch, answers_summary
from support import SINK_TIME

ROOT = "file:/srv/landing"
ID_1, ID_2, ID_3 = "1" * 32, "2" * 32, "3" * 32
LABELS = ("Apple", "Kaki", "Lemon")
COEFFICIENTS = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
INTERCEPTS = np.array([0.0, 0.5, 0.0])


def tiny_projection() -> Projection:
    return Projection(
        mean=np.zeros(2),
        scale=np.ones(2),
        components=np.eye(2),
        coefficients=COEFFICIENTS,
        intercepts=INTERCEPTS,
        labels=LABELS,
        novelty_threshold=0.5,
    )


def results(rows: list[tuple[str, list[float], str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "path": path,
                "label": None,
                "size": 10,
                "modification_time": SINK_TIME,
                "ingest_time": SINK_TIME,
                "features": [0.0] * 4,
                "pca": pca,
                "prediction": prediction,
                "confidence": 0.7,
                "novelty_score": 0.3,
                "is_novel": False,
                "model_name": "fruits-pca",
                "model_version": "7",
                "featurizer_sha256": "ab" * 32,
                "ingest_date": SINK_TIME.date(),
            }
            for path, pca, prediction in rows
        ],
        schema=RESULTS.schema,
    )


def errors(paths: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "path": p,
                "label": None,
                "size": 30,
                "modification_time": None,
                "ingest_time": SINK_TIME,
                "reason": "not_an_image",
                "detail": "no supported image format recognised",
                "batch_id": 4,
            }
            for p in paths
        ],
        schema=ERRORS.schema,
    )


def softmax(margins: np.ndarray) -> np.ndarray:
    e = np.exp(margins - margins.max())
    return e / e.sum()


KNOWN = KnownMap(
    labels=("Apple", "Apple", "Kaki", "Lemon"),
    paths=("a1", "a2", "k1", "l1"),
    pca=np.array([[3, 0], [3, 0.5], [0, 3], [-3, -3]], dtype=np.float32),
    xy=np.array([[0, 0], [0.2, 0], [1, 1], [0, 1]], dtype=np.float32),
)


def test_each_app_upload_gets_one_answer_and_team_uploads_none() -> None:
    rows = results(
        [
            (f"{ROOT}/app/consented/{ID_1}.jpg", [3.0, 0.2], "Apple"),
            (f"{ROOT}/Kaki/team.jpg", [0.0, 3.0], "Kaki"),
            (f"{ROOT}/app/private/{ID_2}.png", [0.1, 2.0], "Kaki"),
            (f"{ROOT}/app/elsewhere/{ID_3}.jpg", [0.0, 0.0], "Kaki"),
        ]
    )  # not an app upload key
    bad = errors([f"{ROOT}/app/consented/{ID_3}.jpg", f"{ROOT}/Lemon/broken.jpg"])
    answers = answers_for_batch(rows, bad, ROOT, tiny_projection(), KNOWN, answered_at=2_000_000_000.0)
    assert [(a.upload_id, a.status, a.consent) for a in answers] == [
        (ID_1, ANSWERED, True),
        (ID_2, ANSWERED, False),
        (ID_3, REJECTED, True),
    ]

    first = answers[0]
    expected = softmax(COEFFICIENTS @ np.array([3.0, 0.2]) + INTERCEPTS)  # Apple 0.993, Kaki, Lemon
    assert [name for name, _ in first.top] == ["Apple", "Kaki", "Lemon"]
    assert [p for _, p in first.top] == pytest.approx(list(expected), abs=1e-6)
    assert (first.prediction, first.confidence, first.is_novel) == ("Apple", 0.7, False)  # as the row holds them
    assert (first.model_name, first.model_version) == ("fruits-pca", "7")
    assert first.uploaded_at == SINK_TIME.timestamp() and first.answered_at == 2_000_000_000.0
    # Nearest known images: (3, 0.2) is 0.2 from a1, 0.3 from a2, then k1, then l1.
    assert first.neighbours == (0, 1, 2, 3)
    # The map position: a1 is clearly the nearest (0.2 against 0.3 and more): on it, at (0, 0).
    assert first.map_xy == pytest.approx((0.0, 0.0), abs=1e-4)
    assert answers[1].top[0][0] == "Kaki" and answers[1].neighbours[0] == 2

    rejected = answers[2]
    assert (rejected.reason, rejected.detail, rejected.prediction, rejected.top, rejected.uploaded_at) == (
        "not_an_image",
        "no supported image format recognised",
        None,
        (),
        None,
    )


def test_a_model_without_a_known_map_answers_without_neighbours() -> None:
    rows = results([(f"{ROOT}/app/consented/{ID_1}.jpg", [0.0, 3.0], "Kaki")])
    (answer,) = answers_for_batch(rows, errors([]), ROOT, tiny_projection(), None, answered_at=1.0)
    assert answer.top[0][0] == "Kaki" and answer.neighbours == () and answer.map_xy is None


def test_the_progress_line_gets_the_answer_latencies() -> None:
    rows = results([(f"{ROOT}/app/consented/{ID_1}.jpg", [0.0, 3.0], "Kaki")])
    answers = answers_for_batch(
        rows,
        errors([f"{ROOT}/app/private/{ID_2}.jpg"]),
        ROOT,
        tiny_projection(),
        None,
        answered_at=SINK_TIME.timestamp() + 1.25,
    )
    assert answers_summary(answers) == {"answers": 2, "answer_latencies": (1.25,)}  # no upload time: no latency


def test_an_s3_source_root_is_matched_without_its_scheme() -> None:
    rows = results([(f"s3a://bucket/images/app/consented/{ID_1}.jpg", [3.0, 0.0], "Apple")])
    (answer,) = answers_for_batch(rows, errors([]), "s3://bucket/images", tiny_projection(), None, answered_at=1.0)
    assert answer.upload_id == ID_1
    assert datetime.fromtimestamp(answer.uploaded_at, UTC) == SINK_TIME
