"""The streaming job in-process on local files: pick-up, drain, restart, errors, refusal, readers, stopping."""

from __future__ import annotations

import gc
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

import streaming.job
from cli.main import main
from fruits.exceptions import FruitsError
from fruits.upload import upload_dir
from streaming.job import STOP_MARKER, StreamingJob, trigger_options
from support import Layout, copy_classes, table_rows, wait_until, write_bad_corpus, write_unusual_valid

CLASSES = ["Banana", "Kumquats", "Pepper Red"]


def test_available_now_drains_a_backlog_with_labels_and_projections(
    spark, settings, fitted, data_dir: Path, layout: Layout
) -> None:
    copied = copy_classes(data_dir, layout.source, CLASSES)
    job = StreamingJob(layout.settings(settings, trigger="available-now", max_files_per_trigger=25), spark=spark)
    job.start()
    job.run_until_stopped()
    summary = job.summary()

    rows = table_rows(layout.output)
    assert len(rows) == len(copied) == 60
    assert Counter(r.label for r in rows) == {c: 20 for c in CLASSES}
    assert sorted(Path(r.path).name for r in rows) == sorted(p.name for p in copied)
    assert {len(r.features) for r in rows} == {1280} and {len(r.pca) for r in rows} == {300}
    assert {(r.model_name, r.model_version) for r in rows} == {("fruits-pca", fitted["model_version"])}
    assert {r.featurizer_sha256 for r in rows} == {fitted["weights_sha256"]}
    # File names repeat across classes: key by class/name.
    assert {"/".join(Path(r.path).parts[-2:]): r.size for r in rows} == {
        "/".join(p.parts[-2:]): p.stat().st_size for p in copied
    }
    assert (summary["rows"], summary["errors"], summary["files"]) == (60, 0, 60)
    assert summary["batches"] == 3  # 60 files at 25 per trigger: backpressure works
    assert summary["model_version"] == fitted["model_version"]
    # A Delta table partitioned by ingest date, as documented; one commit per micro-batch.
    table = DeltaTable(str(layout.output))
    assert table.metadata().partition_columns == ["ingest_date"]
    assert [h["operation"] for h in table.history()].count("WRITE") == 3


def test_restart_from_the_checkpoint_reprocesses_nothing(spark, settings, fitted, data_dir: Path, layout: Layout):
    copy_classes(data_dir, layout.source, CLASSES[:1])
    for _ in range(2):
        job = StreamingJob(layout.settings(settings, trigger="available-now"), spark=spark)
        job.start()
        job.run_until_stopped()
    assert job.summary()["rows"] == 0 and job.summary()["batches"] == 0
    assert len(table_rows(layout.output)) == 20


def test_files_added_while_running_are_picked_up(spark, settings, fitted, data_dir: Path, layout: Layout, tmp_path):
    job = StreamingJob(layout.settings(settings, trigger="500ms"), spark=spark)
    job.start()  # the source folder does not exist yet
    try:
        assert layout.source.is_dir()
        staging = tmp_path / "phone"
        copy_classes(data_dir, staging, ["Limes"], per_class=7)
        report = upload_dir(staging, str(layout.source), progress=False)  # atomic renames into the landing dir
        assert report.uploaded == 7
        job.process_available()
        assert len(table_rows(layout.output)) == 7
        copy_classes(data_dir, staging, ["Kaki"], per_class=5)
        upload_dir(staging, str(layout.source), progress=False)  # Limes are skipped: already there
        job.process_available()
        rows = table_rows(layout.output)
        assert Counter(r.label for r in rows) == {"Limes": 7, "Kaki": 5}
        assert len({r.ingest_time for r in rows}) >= 2  # two separate micro-batches
    finally:
        job.request_stop()
        job.run_until_stopped()
    assert not job.query.isActive


def test_the_running_stream_frees_the_py4j_proxies_python_dropped(
    spark, settings, fitted, layout: Layout, monkeypatch
) -> None:
    # A proxy the driver called a method on sits in a reference cycle (py4j#548): without a cycle collection the
    # JVM keeps its object (for the stream: each micro-batch's Dataset, plan and broadcasts) however long it takes.
    gateway = spark.sparkContext._gateway.java_gateway_server.getGateway()

    def in_the_jvm(target_id: str) -> bool:  # a plain bool: a failing assert must not render the Java map
        return bool(gateway.getBindings().containsKey(target_id))

    monkeypatch.setattr(streaming.job, "PY4J_COLLECT_EVERY_S", 0.0)
    gc.disable()  # no automatic collection may free it first
    try:
        df = spark.range(3)
        df._jdf.count()
        target = str(df._jdf._target_id)
        del df
        assert in_the_jvm(target)  # reference counting alone did not free it
        job = StreamingJob(layout.settings(settings, trigger="500ms"), spark=spark)
        job.start()
        job.run_until_stopped(timeout=1.5)
        # Py4J sends the release from its finalizer thread: wait for it (gc is off: nothing else frees the proxy).
        wait_until(lambda: not in_the_jvm(target), 60, "the JVM to release the dropped Dataset")
    finally:
        gc.enable()


def test_bad_inputs_become_error_rows_and_the_rest_of_the_batch_is_written(
    spark, settings, fitted, data_dir: Path, layout: Layout
) -> None:
    good = copy_classes(data_dir, layout.source, ["Apricot"], per_class=10)
    expected = write_bad_corpus(layout.source, good[0].read_bytes(), oversized_bytes=300_000)
    unusual = write_unusual_valid(layout.source)
    job = StreamingJob(
        layout.settings(settings, trigger="available-now", max_image_bytes=256 * 1024, max_files_per_trigger=1000),
        spark=spark,
    )
    job.start()
    job.run_until_stopped()

    results = table_rows(layout.output)
    assert Counter(r.label for r in results) == {"Apricot": 10, "Unusual": len(unusual)}
    assert sorted(Path(r.path).name for r in results if r.label == "Unusual") == unusual
    assert len({r.ingest_time for r in results}) == 1  # one micro-batch held good and bad files alike
    errors = table_rows(layout.errors)
    got = {Path(r.path).name: r.reason for r in errors}
    # A truncated JPEG may surface as "truncated" or "corrupt" depending on where libjpeg stops.
    assert got.pop("truncated.jpg") in {"truncated", "corrupt"}
    assert got == {k: v for k, v in expected.items() if k != "truncated.jpg"}
    assert all(r.detail and r.label == "Bad Inputs" and r.size is not None for r in errors)
    huge = next(r for r in errors if r.reason == "too_large")
    assert huge.size > 256 * 1024 and "not read" in huge.detail
    summary = job.summary()
    assert (summary["rows"], summary["errors"]) == (10 + len(unusual), len(expected))


def test_engines_that_know_nothing_of_spark_read_the_tables(spark, settings, fitted, data_dir: Path, tmp_path: Path):
    # Spaces and '%' in the paths: delta-rs and DuckDB must get them right. Polars 2.1 cannot (it
    # percent-decodes a local table's file paths and then misses them): it reads a copy at a plain path.
    layout = Layout(
        tmp_path / "land ing", tmp_path / "lake 100%" / "results", tmp_path / "errors", tmp_path / "checkpoint"
    )
    copy_classes(data_dir, layout.source, ["Plum"], per_class=6)
    job = StreamingJob(layout.settings(settings, trigger="available-now"), spark=spark)
    job.start()
    job.run_until_stopped()
    # A stray parquet file from a writer that never committed: not in the log, so no reader counts it.
    partition = next(p for p in layout.output.iterdir() if p.name.startswith("ingest_date="))
    committed = next(partition.glob("*.parquet"))
    (partition / "part-99999-orphan.parquet").write_bytes(committed.read_bytes())

    frame = DeltaTable(str(layout.output)).to_pandas()
    plain = tmp_path / "plain" / "results"
    shutil.copytree(layout.output, plain)
    assert len(frame) == 6 == pl.read_delta(str(plain)).height
    dataset = DeltaTable(str(layout.output)).to_pyarrow_dataset()  # noqa: F841  (DuckDB scans it by name)
    assert duckdb.sql("select count(*), count(distinct path) from dataset").fetchall() == [(6, 6)]
    assert {len(v) for v in frame["features"]} == {1280} and {len(v) for v in frame["pca"]} == {300}
    assert set(frame["label"]) == {"Plum"} and "ingest_date" in frame.columns


def test_a_model_fitted_with_another_featurizer_is_refused(spark, settings, fitted, layout: Layout, capsys) -> None:
    from fruits import registry

    client = registry.connect(settings)
    champion = client.get_model_version_by_alias("fruits-pca", "champion")
    forged_tags = dict(champion.tags) | {"featurizer.weights_sha256": "f" * 64}
    forged = client.create_model_version("fruits-pca", champion.source, run_id=champion.run_id, tags=forged_tags)
    client.set_registered_model_alias("fruits-pca", "other-weights", forged.version)

    job = StreamingJob(layout.settings(settings), model_uri="models:/fruits-pca@other-weights", spark=spark)
    with pytest.raises(FruitsError) as refused:
        job.start()
    message = str(refused.value)
    assert "featurizer mismatch" in message and "f" * 12 in message and fitted["weights_sha256"][:12] in message
    assert job.query is None and not layout.output.exists()

    capsys.readouterr()  # only the CLI's own output below
    code = main(
        [
            "stream",
            "--model",
            "models:/fruits-pca@other-weights",
            "--state-dir",
            str(settings.state_dir),
            "--source",
            str(layout.source),
            "--output",
            str(layout.output),
            "--checkpoint",
            str(layout.checkpoint),
            "--trigger",
            "available-now",
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("fruits stream: error: featurizer mismatch")


def test_unknown_model_alias_is_a_clear_error(spark, settings, fitted, layout: Layout) -> None:
    with pytest.raises(FruitsError, match="models:/fruits-pca@nobody not found"):
        StreamingJob(layout.settings(settings), model_uri="models:/fruits-pca@nobody", spark=spark).start()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2s", {"processingTime": "2000 milliseconds"}),
        ("500ms", {"processingTime": "500 milliseconds"}),
        ("1m", {"processingTime": "60000 milliseconds"}),
        ("1.5m", {"processingTime": "90000 milliseconds"}),  # Spark itself rejects "1.5 minutes"
        ("400h", {"processingTime": "1440000000 milliseconds"}),
        ("available-now", {"availableNow": True}),
    ],
)
def test_trigger_forms(text: str, expected: dict) -> None:
    assert trigger_options(text) == expected


@pytest.mark.parametrize("trigger", ["soon", "0s", "0.0001s", "-2s"])
def test_bad_trigger_is_a_one_line_error(trigger: str, capsys) -> None:
    assert main(["stream", f"--trigger={trigger}", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"fruits stream: error: --trigger must be an interval like 2s, 500ms, 1m or 'available-now', got {trigger!r}"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--notifications", "https://sqs.eu-west-3.amazonaws.com/123456789012/q"],
            "--notifications needs --source s3://",
        ),
        (
            ["--notifications", "fruits-uploads", "--source", "s3://b/images/"],
            "--notifications must be an SQS queue URL",
        ),
        (
            [
                "--notifications",
                "https://sqs.eu-west-3.amazonaws.com/1/q",
                "--source",
                "s3://b/images/",
                "--backfill-interval",
                "hourly",
            ],
            "--backfill-interval must be an interval",
        ),
    ],
)
def test_bad_notification_flags_are_one_line_errors(argv: list[str], message: str, capsys) -> None:
    assert main(["stream", *argv, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fruits stream: error: ") and message in err[0], err


def test_non_positive_image_limit_is_a_one_line_error(capsys) -> None:
    assert main(["stream", "--max-image-mb", "0", "-q"]) == 1
    assert "image size limits" in capsys.readouterr().err


def test_progress_is_logged_per_batch_as_json_lines(spark, settings, fitted, data_dir: Path, layout: Layout) -> None:
    copy_classes(data_dir, layout.source, ["Mango"], per_class=9)
    before = settings.progress_log.read_text().count("\n") if settings.progress_log.exists() else 0
    job = StreamingJob(layout.settings(settings, trigger="available-now", max_files_per_trigger=4), spark=spark)
    job.start()
    job.run_until_stopped()
    records = [json.loads(line) for line in settings.progress_log.read_text().splitlines()[before:]]
    assert [r["files"] for r in records] == [4, 4, 1]
    assert all(r["rows"] == r["files"] and r["errors"] == 0 and r["seconds"] > 0 for r in records)
    assert all(r["latency_p50_s"] is not None and r["latency_p50_s"] >= 0 for r in records)
    assert {r["model_version"] for r in records} == {fitted["model_version"]}


def test_a_batch_redone_after_a_crash_is_skipped_by_the_tables(spark, settings, fitted, data_dir, layout: Layout):
    """Spark redoes a micro-batch whose commit it did not record (a crash after the tables committed):
    the tables recognise their own transaction and write nothing twice."""
    copy_classes(data_dir, layout.source, ["Kaki"], per_class=5)
    run = layout.settings(settings, trigger="available-now")
    job = StreamingJob(run, spark=spark)
    job.start()
    job.run_until_stopped()
    assert len(table_rows(layout.output)) == 5
    for name in ("0", ".0.crc"):  # as if the driver died right after the tables' commit, before Spark's
        (layout.checkpoint / "commits" / name).unlink()

    again = StreamingJob(run, spark=spark)
    again.start()
    again.run_until_stopped()
    assert len(table_rows(layout.output)) == 5 and again.summary()["rows"] == 0
    replays = [json.loads(line) for line in settings.progress_log.read_text().splitlines()]
    assert replays[-1]["batch"] == 0 and replays[-1]["replayed"] is True
    assert (layout.checkpoint / "commits" / "0").exists()  # Spark moved on


def test_a_stop_marker_under_the_checkpoint_stops_after_the_current_batch(
    spark, settings, fitted, data_dir, layout: Layout, tmp_path: Path
):
    job = StreamingJob(layout.settings(settings, trigger="500ms"), spark=spark)
    job.start()
    finished = []
    runner = threading.Thread(target=lambda: finished.append(job.run_until_stopped()), daemon=True)
    runner.start()
    copy_classes(data_dir, tmp_path / "phone", ["Peach"], per_class=4)
    upload_dir(tmp_path / "phone", str(layout.source), progress=False)
    wait_until(lambda: len(table_rows(layout.output)) == 4, 300, "the uploads committed")
    (layout.checkpoint / STOP_MARKER).write_bytes(b"")  # what `fruits emr stop` writes on S3
    runner.join(120)
    assert finished == [None] and not job.query.isActive
    assert not (layout.checkpoint / STOP_MARKER).exists()  # consumed: the next start runs
