"""The answers store on its two backends: the embedded sqlite file, and DynamoDB on a moto server."""

from __future__ import annotations

import threading
import time

import pytest

from fruits import answers
from fruits.answers import ANSWERED, REJECTED, Answer
from fruits.exceptions import FruitsError
from fruits.settings import Settings

ID_A, ID_B = "a" * 32, "b" * 32


def answered(upload_id: str, prediction: str = "Kaki", at: float | None = None) -> Answer:
    return Answer(
        upload_id,
        ANSWERED,
        answered_at=time.time() if at is None else at,
        uploaded_at=1.5,
        consent=True,
        prediction=prediction,
        confidence=0.91,
        is_novel=False,
        top=(("Kaki", 0.91), ("Tomato 1", 0.05), ("Peach", 0.01)),
        neighbours=(3, 17),
        map_xy=(0.25, -1.0),
        model_name="fruits-pca",
        model_version="2",
    )


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path, moto_server):
    if request.param == "sqlite":
        settings = Settings.load(env={}, state_dir=tmp_path)
        assert settings.answers_uri == f"sqlite:///{tmp_path.resolve() / 'answers.db'}"
    else:
        settings = Settings.load(
            env={},
            state_dir=tmp_path,
            answers=f"dynamodb://answers-{time.monotonic_ns()}",
            dynamodb_endpoint_url=moto_server,
        )
    opened = answers.open_answer_store(settings)
    if request.param == "dynamodb":
        opened.create_table()
    yield opened
    opened.close()


def test_an_answer_round_trips_every_field(store) -> None:
    rejected = Answer(
        ID_B, REJECTED, answered_at=time.time(), reason="not_an_image", detail="no supported image format recognised"
    )
    assert store.put_many([answered(ID_A), rejected]) == 2
    assert store.get(ID_A) == answered(ID_A, at=store.get(ID_A).answered_at)
    got = store.get(ID_B)
    assert (got.status, got.reason, got.prediction, got.top) == (REJECTED, "not_an_image", None, ())
    assert store.get("c" * 32) is None


def test_a_replayed_batch_overwrites_the_same_item(store) -> None:
    store.put_many([answered(ID_A, "Kaki")])
    store.put_many([answered(ID_A, "Peach"), answered(ID_A, "Lemon")])  # the last one wins, even within a batch
    assert store.get(ID_A).prediction == "Lemon"


def test_an_expired_answer_is_not_served(store) -> None:
    store.put_many([answered(ID_A, at=time.time() - 40 * 86400)])  # older than the 30-day retention
    assert store.get(ID_A) is None


def test_readers_in_other_threads_see_what_the_writer_committed(tmp_path) -> None:
    store = answers.open_answer_store(Settings.load(env={}, state_dir=tmp_path))
    store.put_many([answered(ID_A)])
    seen = []
    reader = threading.Thread(target=lambda: seen.append(store.get(ID_A)))
    reader.start()
    reader.join()
    assert seen[0] is not None and seen[0].prediction == "Kaki"


@pytest.mark.parametrize("uri", ["dynamodb://", "postgres://x/y", "answers.db"])
def test_an_unknown_store_is_a_one_line_error(tmp_path, uri: str) -> None:
    with pytest.raises(FruitsError, match="--answers must be"):
        answers.open_answer_store(Settings.load(env={}, state_dir=tmp_path, answers=uri))
