"""The answers to app uploads: one micro-batch's rows -> one fruits.answers.Answer per app upload.

An app upload (fruits.appuploads: `<source root>/app/{consented,private}/<id>.<ext>`) gets:
- from its results row, an ANSWERED answer: the prediction, its confidence and is_novel as the row
  holds them; the top classes (at most `TOP_CLASSES`, best first) ranked from the row's `pca` by the
  model version's own arithmetic (fruits.project.Projection.probabilities, on the driver, for app
  rows only: the lake keeps no probability vector); its nearest known images and its place on the
  version's known map (fruits.knownmap; none for a version without a map);
- from its error row, a REJECTED answer with the errors table's reason and detail.
Team uploads (anything else under the source) get none.

`answers_for_batch` is the pure part. `AnswerWriter` is what the micro-batch calls
(streaming.batch.MicroBatch.process) BEFORE it commits the results table: a batch redone after a
crash computes the same uploads again and upserts the same ids (the store is keyed by upload id),
while a batch the tables already hold is skipped before anything is computed. If the store
cannot be written, the batch fails like a failed Delta commit, and its uploads are redone on restart:
an upload in the lake always has its answer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from fruits.answers import ANSWERED, REJECTED, Answer, AnswerStore, open_answer_store
from fruits.appuploads import parse_upload_path
from fruits.exceptions import FruitsError, one_line
from fruits.knownmap import KnownMap
from fruits.project import Projection
from fruits.registry import ResolvedModel
from fruits.settings import Settings

if TYPE_CHECKING:
    from streaming.batch import ActiveModel

log = logging.getLogger("fruits.stream")
TOP_CLASSES = 3


def answers_for_batch(
    results: pa.Table,
    errors: pa.Table,
    source_root: str,
    projection: Projection,
    known_map: KnownMap | None,
    answered_at: float,
) -> list[Answer]:
    """The batch's results and error rows (the lake's columns) -> one Answer per app upload among them."""
    answers = []
    uploads = [parse_upload_path(path, source_root) for path in results.column("path").to_pylist()]
    app = [i for i, upload in enumerate(uploads) if upload is not None]
    if app:
        rows = (
            results.take(app)
            .select(["pca", "modification_time", "prediction", "confidence", "is_novel", "model_name", "model_version"])
            .to_pylist()
        )
        pca = np.asarray([row["pca"] for row in rows], dtype=np.float32)
        probabilities = projection.probabilities(pca)
        neighbours, xy = known_map.place(pca) if known_map is not None else (None, None)
        for j, row in enumerate(rows):
            upload_id, consent = uploads[app[j]]
            answers.append(
                Answer(
                    upload_id,
                    ANSWERED,
                    answered_at=answered_at,
                    uploaded_at=epoch(row["modification_time"]),
                    consent=consent,
                    prediction=row["prediction"],
                    confidence=row["confidence"],
                    is_novel=row["is_novel"],
                    top=top_classes(probabilities[j], projection.labels) if probabilities is not None else (),
                    neighbours=tuple(int(i) for i in neighbours[j]) if neighbours is not None else (),
                    map_xy=(float(xy[j, 0]), float(xy[j, 1])) if xy is not None else None,
                    model_name=row["model_name"],
                    model_version=row["model_version"],
                )
            )
    for row in errors.select(["path", "modification_time", "reason", "detail"]).to_pylist():
        upload = parse_upload_path(row["path"], source_root)
        if upload is not None:
            answers.append(
                Answer(
                    upload[0],
                    REJECTED,
                    answered_at=answered_at,
                    consent=upload[1],
                    uploaded_at=epoch(row["modification_time"]),
                    reason=row["reason"],
                    detail=row["detail"],
                )
            )
    return answers


def load_known_map(resolved: ResolvedModel) -> KnownMap | None:
    """The version's known map (with the model: at start and at each hot swap); None if it has none or it
    cannot be read, and the version's answers then carry no neighbours and no map position."""
    try:
        known = KnownMap.of_run(resolved.run_id, resolved.tags)
    except Exception as exc:  # the map illustrates the answer: never a reason to refuse a model
        log.warning(
            "cannot load the known map of %s (%s): its answers come without neighbours or map position",
            resolved.label,
            one_line(exc),
        )
        return None
    if known is None:
        log.info("%s has no known map (registered before maps): its answers come without neighbours", resolved.label)
    return known


def answers_summary(answered: list[Answer]) -> dict:
    """For the batch's progress line (streaming.monitor.BatchMetrics): how many, and upload -> answer latencies."""
    return {
        "answers": len(answered),
        "answer_latencies": tuple(a.answered_at - a.uploaded_at for a in answered if a.uploaded_at is not None),
    }


def top_classes(probabilities: np.ndarray, labels: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """The most probable classes, best first (ties: the first class in the model's order)."""
    best = np.argsort(-probabilities, kind="stable")[:TOP_CLASSES]
    return tuple((labels[i], round(float(probabilities[i]), 6)) for i in best)


def epoch(moment) -> float | None:
    return moment.timestamp() if moment is not None else None


def open_answers(settings: Settings, source_root: str) -> AnswerWriter:
    """The stream's answer writer on `settings.answers_uri`, checked at start (a missing DynamoDB table, an
    unwritable sqlite folder: a one-line error before any micro-batch)."""
    try:
        store = open_answer_store(settings)
        store.get("0" * 32)
    except FruitsError:
        raise
    except Exception as exc:
        raise FruitsError(f"cannot use the answers store {settings.answers_uri}: {one_line(exc)}") from None
    return AnswerWriter(store, source_root, settings.answers_uri)


class AnswerWriter:
    """Opened once per stream (its store too); `write` is called by each micro-batch before its results commit."""

    def __init__(self, store: AnswerStore, source_root: str, store_uri: str):
        self.store = store
        self.source_root = source_root
        self.store_uri = store_uri

    def write(self, results: pa.Table, errors: pa.Table, model: ActiveModel, batch_id: int) -> list[Answer]:
        """Answer the batch's app uploads (upsert by upload id); returns the answers written."""
        answers = answers_for_batch(results, errors, self.source_root, model.projection, model.known_map, time.time())
        try:
            self.store.put_many(answers)
        except Exception as exc:
            raise FruitsError(
                f"cannot write the answers of micro-batch {batch_id} to {self.store_uri}: "
                f"{one_line(exc)}; nothing of it was committed, it is redone on restart"
            ) from None
        return answers

    def close(self) -> None:
        self.store.close()
