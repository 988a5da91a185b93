"""The demos (`python -m demo`), short versions: locally (reusing the session's model) and on emulated AWS.

Real components throughout: the session's Spark, MLflow (the session's sqlite store; a real
`mlflow server` subprocess for the emulated run), moto servers, the real images in ../shared.
Expectations come from the files themselves (what landed in the landing folder or the bucket,
byte for byte from stream/), never from the demo's own counters.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from demo import report
from demo import run as demo
from demo.__main__ import main
from demo.emulated_aws import emulated_aws
from demo.workspace import scratch_state
from fruits import lake, registry
from fruits.source import is_image_name
from support import champion_copy, table_rows

pytestmark = pytest.mark.slow

CLASSES = 32  # in stream/ (../shared/data/fruits360/README.md)
PLOTS = {"stream_map.png", "stream_report.png", "explained_variance.png", "confusion.png", "novelty.png"}
SUMMARY_KEYS = {
    "mode",
    "images_uploaded",
    "rows",
    "errors",
    "rows_per_class",
    "rows_per_second",
    "latency_p50_s",
    "latency_p95_s",
    "notifications",
    "knn_accuracy",
    "model_version",
    "results",
    "errors_output",
    "plots_dir",
    "seconds",
    "fallback_reason",
    "source_mode",
    "source_counts",
    "classifier_accuracy",
    "novelty_auroc",
    "refit",
    "model_swaps",
    "per_model_version",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_spread_over_classes(per_class: Counter, limit: int) -> None:
    """--limit N takes N images spread over the 32 classes: as many classes as possible, none more than one ahead."""
    assert sum(per_class.values()) == limit
    assert len(per_class) == min(limit, CLASSES)
    assert set(per_class.values()) <= {limit // CLASSES, limit // CLASSES + 1}


def assert_pngs(folder: Path) -> None:
    assert {p.name for p in folder.iterdir()} == PLOTS
    for png in folder.iterdir():
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000, png


def assert_common_summary(summary: dict, limit: int, per_class: Counter) -> None:
    assert summary.keys() >= SUMMARY_KEYS
    json.dumps(summary)  # the --json line
    assert summary["complete"] is True and summary["fallback_reason"] is None
    assert (summary["images_uploaded"], summary["rows"], summary["errors"]) == (limit, limit, 0)
    assert summary["rows_per_class"] == dict(per_class)
    assert summary["rows_per_second"] > 0
    assert 0 < summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert summary["classifier_accuracy"] >= 0.95  # the fit's bar on test/ (issue 13)


def test_local_demo_refits_from_the_lake_and_the_running_stream_swaps(
    spark, settings, fitted, data_dir: Path, tmp_path: Path
):
    limit = 64
    state = scratch_state(tmp_path / "state", settings)
    # --skip-fit on a copy of the session's fit (the fit path is exercised by the AWS test): the
    # refit moves @champion of this copy only.
    demo_settings = settings.replace(
        state_dir=state, mlflow_tracking_uri=settings.tracking_uri, model_name="fruits-demo"
    )
    before = champion_copy(demo_settings, fitted, "fruits-demo")

    summary = demo.demo_local(demo_settings, data_dir, limit=limit, skip_fit=True, spark=spark, progress=False)

    landing = Path(summary["source"])
    assert landing.parent == state / "landing" and landing.name.startswith("local-")  # a fresh run folder
    uploaded = sorted(p for p in landing.rglob("*") if p.is_file())
    for path in uploaded:  # byte-identical copies of stream/<class>/<file>
        assert path.read_bytes() == (data_dir / "stream" / path.parent.name / path.name).read_bytes()
    per_class = Counter(p.parent.name for p in uploaded)
    assert_spread_over_classes(per_class, limit)

    rows = table_rows(demo_settings.output_uri, ["path", "label", "pca", "prediction", "is_novel", "model_version"])
    mine = [r for r in rows if f"/{landing.name}/" in r.path]
    assert len(mine) == limit  # each upload once
    # The app step: one test/ photo through the app's page, the only other row under the landing root.
    through_app = [r for r in rows if f"/{landing.name}/" not in r.path]
    app = summary["app"]
    if "skipped" in app:
        assert through_app == [] and "chromium" in app["skipped"]
    else:
        assert [r.path.split("/")[-3:] for r in through_app] == [["app", "private", f"{app['upload_id']}.jpg"]]
        assert through_app[0].label is None  # an app upload is never labelled by its folder
        assert app["answer"] == ("A fruit I don't know yet" if through_app[0].is_novel else through_app[0].prediction)
        assert Path(app["screenshot"]).read_bytes()[:8] == PNG_MAGIC
        assert f"app: {app['url']}/ in headless Chromium" in report.human_summary(summary)
    assert Counter(r.label for r in mine) == per_class
    assert {len(r.pca) for r in mine} == {300} and all(r.prediction for r in mine)
    assert_common_summary(summary, limit, per_class)
    assert (summary["mode"], summary["fitted"], summary["notifications"]) == ("local", False, None)
    assert summary["source_mode"] == "listing"
    assert summary["model_version"] == before and summary["run_id"] == fitted["run_id"]
    assert summary["classifier_accuracy"] == pytest.approx(fitted["classifier_accuracy"])

    # The refit learnt from the first half (the lake) and the fit's own rows, measured on test/ like the champion.
    refit = summary["refit"]
    assert refit["champion_version_before"] == before
    assert (refit["rows_from_lake"], refit["rows_from_champion"]) == (limit // 2, 320)
    assert refit["champion_classifier_accuracy"] == pytest.approx(fitted["classifier_accuracy"], abs=1e-12)
    assert refit["promoted"] is (refit["classifier_accuracy"] > refit["champion_classifier_accuracy"])
    # The first half was classified by the first model; the second by the champion after the refit:
    # the new version if promoted (swapped in while the stream ran), else the same one.
    first_half = {p.parts[-2:] for p in demo.pick_images(data_dir / "stream", limit)[: limit // 2]}
    after = refit["model_version"] if refit["promoted"] else before
    assert {r.model_version for r in mine if Path(r.path).parts[-2:] in first_half} == {before}
    assert {r.model_version for r in mine if Path(r.path).parts[-2:] not in first_half} == {after}
    assert summary["model_swaps"] == int(refit["promoted"])
    assert {v: d["rows"] for v, d in summary["per_model_version"].items()} == (
        {before: limit // 2, after: limit // 2} if refit["promoted"] else {before: limit}
    )
    assert all(0.8 <= d["streamed_accuracy"] <= 1 for d in summary["per_model_version"].values())

    plots_dir = Path(summary["plots_dir"])
    assert plots_dir.is_relative_to(state)
    assert_pngs(plots_dir)
    client = registry.connect(settings)
    assert {Path(a.path).name for a in client.list_artifacts(fitted["run_id"], "demo")} >= PLOTS
    text = report.human_summary(summary)
    assert (
        f"refit from the lake ({limit // 2} rows of the results table + 320 of the fit) -> v{refit['model_version']}"
    ) in text


def test_aws_emulated_demo_end_to_end_then_everything_stops(spark, settings, data_dir: Path, tmp_path: Path):
    from mlflow import MlflowClient

    limit = 30
    state = scratch_state(tmp_path / "state", settings)
    demo_settings = settings.replace(state_dir=state)
    env_before = {k: os.environ.get(k) for k in ("TOPIC_ARN", "AWS_ENDPOINT_URL", "IMAGES_PREFIX")}

    with emulated_aws(demo.new_run_dir(demo_settings, "aws"), demo_settings.aws_region) as world:
        region = world.region
        s3 = boto3.client("s3", endpoint_url=world.endpoint, region_name=region)
        sqs = boto3.client("sqs", endpoint_url=world.endpoint, region_name=region)
        sns = boto3.client("sns", endpoint_url=world.endpoint, region_name=region)
        # Our own subscriber to the topic: counts the Lambda's announcements independently of the demo's.
        witness = sqs.create_queue(QueueName=f"witness-{world.bucket}")["QueueUrl"]
        witness_arn = sqs.get_queue_attributes(QueueUrl=witness, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=world.topic_arn, Protocol="sqs", Endpoint=witness_arn)

        summary = demo.demo_aws(demo_settings, data_dir, world=world, limit=limit, spark=spark, progress=False)

        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=world.bucket, Prefix="images/")
            for o in page.get("Contents", [])
            if is_image_name(o["Key"])
        ]
        per_class = Counter(key.split("/")[1] for key in keys)
        assert_spread_over_classes(per_class, limit)
        for key in keys:
            body = s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
            assert body == (data_dir / "stream" / Path(key).parent.name / Path(key).name).read_bytes()

        table = lake.read_table(
            demo_settings.replace(s3_endpoint_url=world.endpoint),
            f"s3a://{world.bucket}/results",
            columns=["path", "label", "pca"],
        ).to_pandas()
        assert sorted(table["path"]) == sorted(f"s3a://{world.bucket}/{k}" for k in keys)
        assert Counter(table["label"]) == per_class
        assert {len(v) for v in table["pca"]} == {300}

        announced = []
        while batch := sqs.receive_message(QueueUrl=witness, MaxNumberOfMessages=10).get("Messages"):
            announced += [json.loads(json.loads(m["Body"])["Message"]) for m in batch]
            sqs.delete_message_batch(
                QueueUrl=witness,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        assert sorted({m["key"] for m in announced}) == sorted(keys)
        assert {m["label"] for m in announced} == set(per_class)

        client = MlflowClient(tracking_uri=world.mlflow.url, registry_uri=world.mlflow.url)
        assert str(client.get_model_version_by_alias("fruits-pca", "champion").version) == summary["model_version"]
        assert {Path(a.path).name for a in client.list_artifacts(summary["run_id"], "demo")} == PLOTS
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket=world.bucket, Prefix="mlflow/")["Contents"]]
        assert {Path(k).name for k in stored if "/artifacts/demo/" in k} == PLOTS  # proxied to the emulated bucket

        server, server_port = world.mlflow.process, world.mlflow.port
        moto_port = int(world.endpoint.rsplit(":", 1)[1])

    assert_common_summary(summary, limit, per_class)
    assert summary["mode"] == "aws-emulated" and summary["fitted"] is True
    assert summary["notifications"] == limit and summary["notifications_detail"]["published"] == limit
    # The stream read the notifications, each upload once (the first start's listing may find the
    # earliest uploads before their notification: those count as backfilled, their messages as duplicates).
    assert summary["source_mode"] == "notifications"
    assert summary["source_counts"]["uploads"] + summary["source_counts"]["backfilled"] == limit
    assert summary["results"] == f"s3a://{world.bucket}/results"
    assert_pngs(Path(summary["plots_dir"]))
    assert len(pq.read_table(summary["results_copy"], columns=["path"])) == limit

    # Everything is stopped: the server process group (uvicorn worker included), both ports, the env.
    assert server.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
    for port in (server_port, moto_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert {k: os.environ.get(k) for k in env_before} == env_before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "{tmp}/missing"], "images folder not found"),
        (["--images", "{tmp}"], "has no subset/, stream/, test/"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--aws-emulated", "--skip-fit"], "--skip-fit cannot be used with --aws-emulated"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(argv, message, data_dir: Path, tmp_path: Path, capsys) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--images" not in argv:
        argv = ["--images", str(data_dir), *argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo: error: ") and message in err[0], err
