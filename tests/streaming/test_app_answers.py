"""App uploads through the real stream, next to team uploads: one answer each in the answers store (sqlite,
and DynamoDB on the session's moto server), written before the batch's results commit; a replayed batch
writes nothing new, and a batch redone after a crash between the answers and the commit answers again.

Real images (test/, never seen by the fit), the session's registered model and its known map, real
Delta tables. About 40 s here.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from fruits.answers import ANSWERED, REJECTED, DynamoAnswers, open_answer_store
from fruits.appuploads import new_upload_id, upload_key
from fruits.exceptions import FruitsError
from fruits.knownmap import NEIGHBOURS, KnownMap
from fruits.sinks import LakeWriter
from fruits.upload import land
from streaming.job import StreamingJob
from streaming.ops import ops_window
from support import Layout, table_rows, wait_until

# (class of a test/ image, consent): four people agreed their photo may improve the model, two did not.
APP_UPLOADS = [("Banana", True), ("Mango", True), ("Limes", True), ("Pear", True), ("Kaki", False), ("Peach", False)]
TEAM = "Apricot"


def land_uploads(data_dir: Path, landing: Path) -> tuple[dict[str, tuple[str, bool, Path]], str]:
    """App uploads (answered), a text file named .jpg (rejected) and 3 team uploads, as the app and the team land them."""
    app = {}
    for cls, consent in APP_UPLOADS:
        upload_id = new_upload_id()
        source = sorted((data_dir / "test" / cls).glob("*.jpg"))[3]
        app[upload_id] = (cls, consent, land(source.read_bytes(), landing / upload_key(upload_id, consent)))
    bad = new_upload_id()
    land(b"shopping list: kumquats, limes\n" * 20, landing / upload_key(bad, True))
    for source in sorted((data_dir / "stream" / TEAM).glob("*.jpg"))[:3]:
        land(source.read_bytes(), landing / TEAM / source.name)
    return app, bad


def assert_one_answer_per_app_upload(settings, fitted, app: dict, bad: str, layout: Layout) -> dict:
    store = open_answer_store(settings)
    known = KnownMap.load(settings, "fruits-pca", fitted["model_version"])
    answers = {upload_id: store.get(upload_id) for upload_id in [*app, bad]}
    right = 0
    for upload_id, (cls, consent, landed) in app.items():
        answer = answers[upload_id]
        assert (answer.status, answer.consent) == (ANSWERED, consent)
        assert (answer.model_name, answer.model_version) == ("fruits-pca", fitted["model_version"])
        right += answer.prediction == cls
        probabilities = [p for _, p in answer.top]
        assert len(answer.top) == 3 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        assert answer.top[0][0] == answer.prediction and answer.top[0][1] == pytest.approx(answer.confidence, abs=1e-5)
        assert len(answer.neighbours) == NEIGHBOURS and all(0 <= i < len(known) for i in answer.neighbours)
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in answer.map_xy)
        assert answer.uploaded_at == pytest.approx(landed.stat().st_mtime, abs=1e-3)
        assert answer.answered_at >= answer.uploaded_at
    assert right >= len(app) - 1  # the fit's classifier is right on 95% of test/
    rejected = answers[bad]
    assert (rejected.status, rejected.reason, rejected.consent, rejected.prediction) == (
        REJECTED,
        "not_an_image",
        True,
        None,
    )
    # The lake holds them as usual: app uploads without a label, team uploads with their class.
    rows = table_rows(layout.output, ["path", "label"])
    assert sorted(r.label or "" for r in rows) == [""] * len(app) + [TEAM] * 3
    assert len(table_rows(layout.errors, ["path"])) == 1
    return answers


def answer_count(settings) -> int:
    """How many items the store holds, read by the backend's own means (not through the code under test)."""
    store = open_answer_store(settings)
    if isinstance(store, DynamoAnswers):
        return store._resource.meta.client.scan(TableName=store.table_name, Select="COUNT")["Count"]
    return store.count()


def test_a_running_stream_answers_app_uploads_in_sqlite(
    spark, settings, fitted, data_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    s = layout.settings(settings, trigger="500ms", answers=f"sqlite:///{tmp_path / 'answers.db'}")
    started = time.time()
    job = StreamingJob(s, spark=spark)
    job.start()
    try:
        app, bad = land_uploads(data_dir, layout.source)
        store = open_answer_store(s)
        wait_until(
            lambda: (
                all(store.get(i) is not None for i in [*app, bad])
                and len(table_rows(layout.output, ["path"])) == len(app) + 3
            ),
            300,
            "every upload answered",
        )
    finally:
        job.request_stop()
        job.run_until_stopped()
    assert_one_answer_per_app_upload(s, fitted, app, bad, layout)
    assert answer_count(s) == len(app) + 1  # none for team uploads
    # The ops numbers, from the progress the stream mirrored under its checkpoint.
    stats = ops_window(s, seconds=time.time() - started + 1)
    assert (stats["answers"], stats["files"], stats["error_reasons"]) == (
        len(app) + 1,
        len(app) + 4,
        {"not_an_image": 1},
    )
    assert stats["answer_latency_p95_s"] > 0 and stats["model_version"] == fitted["model_version"]


def test_dynamodb_answers_and_a_replayed_batch_writes_nothing_new(
    spark, settings, fitted, data_dir: Path, layout: Layout, moto_server: str
) -> None:
    s = layout.settings(
        settings,
        trigger="available-now",
        answers=f"dynamodb://answers-{time.monotonic_ns()}",
        dynamodb_endpoint_url=moto_server,
    )
    open_answer_store(s).create_table()
    app, bad = land_uploads(data_dir, layout.source)
    job = StreamingJob(s, spark=spark)
    job.start()
    job.run_until_stopped()
    first = assert_one_answer_per_app_upload(s, fitted, app, bad, layout)
    assert answer_count(s) == len(app) + 1

    for name in ("0", ".0.crc"):  # as if the driver died right after the tables' commit, before Spark's
        (layout.checkpoint / "commits" / name).unlink()
    again = StreamingJob(s, spark=spark)
    again.start()
    again.run_until_stopped()
    assert json.loads(s.progress_log.read_text().splitlines()[-1])["replayed"] is True
    store = open_answer_store(s)
    assert {i: store.get(i) for i in first} == first  # not even rewritten: same answered_at
    assert answer_count(s) == len(app) + 1


def test_a_batch_redone_after_a_crash_before_its_commit_answers_again_once(
    spark, settings, fitted, data_dir: Path, layout: Layout, tmp_path: Path, monkeypatch
) -> None:
    s = layout.settings(settings, trigger="available-now", answers=f"sqlite:///{tmp_path / 'answers.db'}")
    app, bad = land_uploads(data_dir, layout.source)
    commit = LakeWriter.commit

    def crash(self, batch_id, results, errors):  # the driver dies between the answers and the tables' commit
        raise FruitsError("simulated crash before the commit")

    monkeypatch.setattr(LakeWriter, "commit", crash)
    job = StreamingJob(s, spark=spark)
    job.start()
    with pytest.raises(Exception, match="simulated crash"):  # the failed query, as Spark reports it
        job.run_until_stopped()
    job.stop()  # a dead driver's lease is taken over by its restart; this test's process lives on: let it go
    store = open_answer_store(s)
    before = {i: store.get(i) for i in [*app, bad]}
    assert all(a is not None for a in before.values())  # answered before the commit that never happened
    assert table_rows(layout.output, ["path"]) == []

    monkeypatch.setattr(LakeWriter, "commit", commit)
    again = StreamingJob(s, spark=spark)
    again.start()
    again.run_until_stopped()
    after = assert_one_answer_per_app_upload(s, fitted, app, bad, layout)
    assert all(after[i].answered_at > before[i].answered_at for i in after)  # the redone batch answered again
    assert answer_count(s) == len(app) + 1
