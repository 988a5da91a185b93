"""The jobs on a real Spark standalone cluster (two workers, executors in JVMs of their own) write
the tables local[*] writes.

Each cluster job runs as the product runs it: the `fruits` command in a process of its own with
`--spark-master spark://...` (one Python process holds one SparkContext, and the session's is
local[2]). Its local twin runs the same job on the same inputs in this process, on the session's
local[2] Spark (this machine has 2 cores: local[*] is local[2]). The executors' environment holds
nothing of the tests' (tests/cluster/conftest.py): credentials, endpoints, caches and settings
reach them through Spark or not at all. Tables are read with delta-rs; features compare within
TOLERANCE (ONNX Runtime sums in another order when a batch holds other images).

The fit runs once (the module's model, `MODEL`); every stream and the refit apply it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest

from demo.workspace import scratch_state
from fit.pipeline import classes
from fit.refit import refit
from forged_notifications import Forger, Real
from fruits import registry
from fruits.settings import MiB
from fruits.upload import land
from streaming.job import StreamingJob
from support import (
    Feeder,
    champion_copy,
    copy_classes,
    kill_mid_stream_then_restart,
    table_rows,
    wait_until,
    write_bad_corpus,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
MODEL = "fruits-cluster"
TOLERANCE = 1e-4
REGION = "eu-west-3"
MAX_IMAGE_MB = 0.02  # 20,971 bytes: the real images are 4-8 KB; the corpus' huge.jpg is over it


@contextlib.contextmanager
def fruits(
    command: list[str], work: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[Callable[[], dict]]:
    """`fruits COMMAND --json -q` started as its own process group, in `work` (its cwd), while the block runs
    (its local twin, in this process); the block calls what it yields for the JSON summary. Killed if still
    running when the block ends."""
    log = work / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *command, "--json", "-q"],
        cwd=work,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        start_new_session=True,
    )

    def summary() -> dict:
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, f"fruits {command[0]} exited {process.returncode}:\n{log.read_text()[-4000:]}"
        return json.loads(out.strip().splitlines()[-1])

    try:
        yield summary
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def job_flags(cluster, settings, work: Path) -> list[str]:
    """The flags of a cluster job: its own state dir (sharing the session's ONNX export), the session's registry."""
    return [
        "--state-dir",
        str(scratch_state(work / "state", settings)),
        "--tracking-uri",
        settings.tracking_uri,
        "--spark-master",
        cluster.master_url,
    ]


def stream_flags(work: Path, side: str) -> list[str]:
    return [
        "--output",
        str(work / side / "results"),
        "--errors",
        str(work / side / "errors"),
        "--checkpoint",
        str(work / side / "checkpoint"),
    ]


def local_stream(spark, settings, work: Path, model: str = MODEL, **changes) -> dict:
    """The same stream on local[*]: in process, on the session's Spark, draining what is there."""
    run = settings.replace(
        model_name=model,
        output=str(work / "local" / "results"),
        errors=str(work / "local" / "errors"),
        checkpoint=str(work / "local" / "checkpoint"),
        trigger="available-now",
        max_image_bytes=int(MAX_IMAGE_MB * MiB),
        **changes,
    )
    job = StreamingJob(run, spark=spark)
    job.start()
    job.run_until_stopped()
    return job.summary()


def by_upload(rows: list) -> dict:
    """Rows by upload: '<class>/<file>' (the two runs of the swap test watch two landing folders)."""
    keyed = {"/".join(r.path.split("/")[-2:]): r for r in rows}
    assert len(keyed) == len(rows)  # nothing twice
    return keyed


def assert_same_tables(cluster_output: Path, local_output: Path) -> None:
    """Results by upload (label, prediction, confidence, features, pca; each upload once) and errors by upload
    and reason."""
    ours, theirs = (by_upload(table_rows(output / "results")) for output in (cluster_output, local_output))
    assert ours and ours.keys() == theirs.keys()
    uploads = sorted(ours)
    assert [(ours[u].label, ours[u].prediction) for u in uploads] == [
        (theirs[u].label, theirs[u].prediction) for u in uploads
    ]
    for column in ("features", "pca", "confidence"):
        np.testing.assert_allclose(
            np.array([getattr(ours[u], column) for u in uploads], dtype=np.float64),
            np.array([getattr(theirs[u], column) for u in uploads], dtype=np.float64),
            atol=TOLERANCE,
            err_msg=column,
        )
    errors = [
        {u: e.reason for u, e in by_upload(table_rows(output / "errors", ["path", "reason"])).items()}
        for output in (cluster_output, local_output)
    ]
    assert errors[0] == errors[1]


@pytest.fixture(scope="module")
def cluster_fit(request, cluster, settings, featurizer, data_dir: Path, tmp_path_factory) -> dict:
    """`fruits fit` on the cluster with the session fit's inputs, registered as MODEL@champion. The session's
    own fit (`fitted`, local[2]) runs meanwhile if no test has needed it yet; `featurizer` has exported the
    ONNX graph both share, and the store is created first (two processes migrating a new sqlite store race)."""
    registry.ensure_experiment(registry.connect(settings), settings)
    work = tmp_path_factory.mktemp("cluster-fit")
    with fruits(
        [
            "fit",
            "--images",
            str(data_dir / "subset"),
            "--eval-images",
            str(data_dir / "test"),
            "--novelty-images",
            str(data_dir / "extra_classes"),
            "--model-name",
            MODEL,
            *job_flags(cluster, settings, work),
        ],
        work,
        "fit",
    ) as summary:
        request.getfixturevalue("fitted")
        return summary()


@pytest.fixture(scope="module")
def s3_prefix(moto_server: str, data_dir: Path, tmp_path_factory) -> tuple[str, dict[str, str]]:
    """40 real uploads and the bad corpus under s3://BUCKET/images/ on the session's moto server."""
    bucket = f"fruits-cluster-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    images = sorted((data_dir / "stream").glob("*/*.jpg"))[::16]
    bad = tmp_path_factory.mktemp("bad")
    reasons = write_bad_corpus(bad, images[0].read_bytes(), int(MAX_IMAGE_MB * MiB))
    for path in [*images, *(bad / "Bad Inputs").iterdir()]:
        s3.put_object(Bucket=bucket, Key=f"images/{path.parent.name}/{path.name}", Body=path.read_bytes())
    return f"s3://{bucket}/images/", reasons


@pytest.fixture(scope="module")
def listed(cluster, settings, spark, cluster_fit, moto_server: str, s3_prefix, tmp_path_factory) -> Path:
    """The listing stream over the S3 prefix on the cluster (work/cluster) and on local[*] (work/local)."""
    work = tmp_path_factory.mktemp("listing")
    source, _ = s3_prefix
    with fruits(
        [
            "stream",
            "--source",
            source,
            "--trigger",
            "available-now",
            "--model",
            f"models:/{MODEL}@champion",
            "--max-image-mb",
            str(MAX_IMAGE_MB),
            *stream_flags(work, "cluster"),
            *job_flags(cluster, settings, work),
        ],
        work,
        "stream",
        env={"AWS_ENDPOINT_URL": moto_server},
    ) as summary:
        local_stream(spark, settings, work, source=source)
        done = summary()
    assert (done["source_mode"], done["model_version"]) == ("listing", cluster_fit["model_version"])
    return work


def features_by_path(uri: str) -> dict[str, tuple[str, list[float]]]:
    return {row["path"]: (row["label"], row["features"]) for row in pq.read_table(uri).to_pylist()}


def test_the_fit_on_the_cluster_is_the_local_fit(cluster_fit: dict, fitted: dict, settings) -> None:
    same = [
        "images",
        "classes",
        "skipped",
        "featurized",
        "pca_k",
        "eval_images",
        "novelty_images",
        "novelty_classes",
        "weights_sha256",
        "engine",
        "head",
        "novelty_score",
    ]
    assert {k: cluster_fit[k] for k in same} == {k: fitted[k] for k in same}
    assert (cluster_fit["model_name"], cluster_fit["featurized"]) == (MODEL, 1040)  # each image once, on executors
    for key, tolerance in (
        ("classifier_accuracy", 2 / 640),
        ("macro_f1", 0.01),
        ("knn_accuracy", 2 / 640),
        ("knn_accuracy_raw", 2 / 640),
        ("novelty_auroc", 0.01),
        ("explained_variance", 1e-4),
    ):
        assert cluster_fit[key] == pytest.approx(fitted[key], abs=tolerance), key
    # The training features the executors wrote: every image, its class, the same 1280 numbers.
    ours, theirs = features_by_path(cluster_fit["features_uri"]), features_by_path(fitted["features_uri"])
    assert len(ours) == 320 and ours.keys() == theirs.keys()
    paths = sorted(ours)
    assert [ours[p][0] for p in paths] == [theirs[p][0] for p in paths]
    np.testing.assert_allclose([ours[p][1] for p in paths], [theirs[p][1] for p in paths], atol=TOLERANCE)
    # The registered versions: the same featurizer, and models that name the same classes in the same order.
    client = registry.connect(settings)
    tags = [
        client.get_model_version(name, fit["model_version"]).tags
        for name, fit in ((MODEL, cluster_fit), (fitted["model_name"], fitted))
    ]
    assert {k: v for k, v in tags[0].items() if k.startswith(("featurizer.", "model."))} == {
        k: v for k, v in tags[1].items() if k.startswith(("featurizer.", "model."))
    }
    labels = [
        classes(registry.load_spark_model(registry.resolve(client, f"models:/{name}/{fit['model_version']}")))
        for name, fit in ((MODEL, cluster_fit), (fitted["model_name"], fitted))
    ]
    assert len(labels[0]) == 32 and labels[0] == labels[1]


def test_the_listing_stream_over_s3_on_the_cluster_writes_the_local_tables(listed: Path, s3_prefix) -> None:
    _, reasons = s3_prefix
    assert_same_tables(listed / "cluster", listed / "local")
    rows = table_rows(listed / "cluster" / "results", ["path", "label"])
    assert len(rows) == 40 and all(r.label == r.path.split("/")[-2] for r in rows)
    errors = {r.path.rsplit("/", 1)[1]: r.reason for r in table_rows(listed / "cluster" / "errors", ["path", "reason"])}
    assert errors == reasons


def test_the_notification_stream_on_the_cluster_writes_the_local_tables(
    cluster, settings, spark, cluster_fit, moto_server: str, data_dir: Path, tmp_path: Path
) -> None:
    """Two queues get the same announcements (each run consumes its own); the executors read each object
    with one conditional GET, credentials and endpoint reaching them through Spark."""
    bucket = f"fruits-cluster-n-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    queues = {side: sqs.create_queue(QueueName=f"{bucket}-{side}")["QueueUrl"] for side in ("cluster", "local")}
    images = sorted((data_dir / "stream").glob("*/*.jpg"))[3::16]
    bodies = {f"images/{p.parent.name}/{p.name}": p.read_bytes() for p in images}
    bodies |= {
        "images/Kaki/empty.jpg": b"",
        "images/Kaki/huge.jpg": images[0].read_bytes() + b"\0" * 30_000,
        "images/Kaki/gone.jpg": images[1].read_bytes(),
    }
    reals = [
        Real(key, s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"'), len(body))
        for key, body in bodies.items()
    ]
    s3.delete_object(Bucket=bucket, Key="images/Kaki/gone.jpg")  # announced, then deleted before the read
    forger = Forger(21, bucket, "images/", reals)
    messages = [forger.real_bodies(real)[i % 4] for i, real in enumerate(reals)] + ["garbage"]
    for url in queues.values():
        for message in messages:
            sqs.send_message(QueueUrl=url, MessageBody=message)

    with fruits(
        [
            "stream",
            "--source",
            f"s3://{bucket}/images/",
            "--notifications",
            queues["cluster"],
            "--trigger",
            "available-now",
            "--model",
            f"models:/{MODEL}@champion",
            "--max-image-mb",
            str(MAX_IMAGE_MB),
            *stream_flags(tmp_path, "cluster"),
            *job_flags(cluster, settings, tmp_path),
        ],
        tmp_path,
        "stream",
        env={"AWS_ENDPOINT_URL": moto_server},
    ) as cluster_summary:
        local = local_stream(spark, settings, tmp_path, source=f"s3://{bucket}/images/", notifications=queues["local"])
        summary = cluster_summary()

    assert summary["source_mode"] == "notifications" and summary["source_counts"] == local["source_counts"]
    assert (summary["rows"], summary["errors"]) == (len(images), 3)
    assert_same_tables(tmp_path / "cluster", tmp_path / "local")
    errors = {
        r.path.rsplit("/", 1)[1]: r.reason for r in table_rows(tmp_path / "cluster" / "errors", ["path", "reason"])
    }
    assert errors == {"empty.jpg": "empty", "huge.jpg": "too_large", "gone.jpg": "missing"}


def test_the_refit_on_the_cluster_is_the_local_refit(
    cluster, settings, spark, cluster_fit, listed: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Both refit copies of the cluster's champion from the lake the cluster's listing stream wrote."""
    held_out = tmp_path / "held-out"
    copy_classes(data_dir, held_out, sorted(p.name for p in (data_dir / "test").iterdir()), split="test", per_class=5)
    lake = str(listed / "cluster" / "results")
    names = {side: f"{MODEL}-refit-{side}" for side in ("cluster", "local")}
    for name in names.values():
        champion_copy(settings, cluster_fit, name)
    with fruits(
        [
            "refit",
            "--eval-images",
            str(held_out),
            "--output",
            lake,
            "--model-name",
            names["cluster"],
            *job_flags(cluster, settings, tmp_path),
        ],
        tmp_path,
        "refit",
    ) as cluster_summary:
        theirs = refit(
            settings.replace(model_name=names["local"], output=lake), str(held_out), spark=spark, progress=False
        )
        ours = cluster_summary()

    same = [
        "images",
        "classes",
        "rows_from_lake",
        "rows_from_champion",
        "lake_rows_of_another_featurizer",
        "eval_images",
        "pca_k",
        "featurized",
    ]
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert (ours["rows_from_lake"], ours["rows_from_champion"], ours["eval_images"]) == (40, 320, 160)
    assert ours["champion_classifier_accuracy"] == pytest.approx(theirs["champion_classifier_accuracy"], abs=1 / 160)
    assert ours["classifier_accuracy"] == pytest.approx(theirs["classifier_accuracy"], abs=2 / 160)
    if abs(theirs["classifier_accuracy"] - theirs["champion_classifier_accuracy"]) > 2 / 160:  # not a near tie
        assert ours["promoted"] == theirs["promoted"]


def test_a_cluster_stream_swaps_its_model_then_survives_sigkill_exactly_once(
    cluster, settings, spark, cluster_fit, data_dir: Path, tmp_path: Path
) -> None:
    """The running stream follows its alias to a new version between micro-batches; then its whole process
    group is killed (a lost driver machine) while uploads keep landing; the master frees its executors, and
    a restart commits the rest: each upload once, before the swap with the old version, after with the new.
    Its local twin streams the same uploads from a landing folder of its own, meanwhile."""
    name = f"{MODEL}-swap"
    old = champion_copy(settings, cluster_fit, name)
    client = registry.connect(settings)
    landing, output = tmp_path / "landing", tmp_path / "cluster" / "results"
    state = scratch_state(tmp_path / "state", settings)
    args = [
        "--source",
        str(landing),
        *stream_flags(tmp_path, "cluster"),
        "--trigger",
        "500ms",
        "--max-files-per-trigger",
        "6",
        "--model",
        f"models:/{name}@champion",
        "--model-refresh-interval",
        "1s",
        "--state-dir",
        str(state),
        "--tracking-uri",
        settings.tracking_uri,
        "--spark-master",
        cluster.master_url,
        "--json",
        "-q",
    ]
    uploads = sorted((data_dir / "stream").glob("*/*.jpg"))[5::13]  # 49 files over all 32 classes
    before_swap, kill_after, backlog = 12, 12, 6  # the feeder's own uploads, committed at the kill: 12 of 37
    for src in uploads:
        land(src.read_bytes(), tmp_path / "local-landing" / src.parent.name / src.name)
    local_twin = threading.Thread(
        target=local_stream,
        args=(spark, settings, tmp_path),
        kwargs={"model": name, "source": str(tmp_path / "local-landing")},
    )
    local_twin.start()

    def committed() -> int:
        return len(table_rows(output, ["path"]))

    def swaps() -> list[dict]:
        progress = state / "stream-progress.jsonl"
        lines = progress.read_text().splitlines() if progress.exists() else []
        return [event for event in map(json.loads, lines) if event["event"] == "model_swap"]

    def upload(src: Path) -> Path:
        return land(src.read_bytes(), landing / src.parent.name / src.name)

    new: list[str] = []

    def swap_while_running(stream: subprocess.Popen) -> None:
        for src in uploads[:before_swap]:
            upload(src)
        wait_until(lambda: committed() == before_swap, 600, "the uploads before the swap", stream)
        source = client.get_model_version(name, old)
        new.append(
            str(client.create_model_version(name, source.source, run_id=source.run_id, tags=source.tags).version)
        )
        client.set_registered_model_alias(name, "champion", new[0])
        wait_until(lambda: bool(swaps()), 300, "the swap", stream)

    apps_before = {app["id"] for app in cluster.state().get("completedapps", [])}
    feeder = Feeder(uploads[before_swap:], upload, lambda: committed() - before_swap, backlog)
    at_kill, out, code = kill_mid_stream_then_restart(
        args, tmp_path / "stream.log", feeder, len(feeder.uploads), kill_after, while_running=swap_while_running
    )
    assert code == 0, (tmp_path / "stream.log").read_text()[-3000:]
    assert [(s["from_version"], s["to_version"]) for s in swaps()] == [(old, new[0])]
    # The killed driver's application ended with it, and so did its executors and their Python workers.
    ended = sorted(
        (app for app in cluster.state()["completedapps"] if app["id"] not in apps_before),
        key=lambda app: app["starttime"],
    )
    assert [app["state"] for app in ended] == ["FINISHED", "FINISHED"] and not cluster.state()["activeapps"]
    assert not cluster.processes_of(ended[0]["id"])
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model_version"] == new[0]
    assert 0 < summary["rows"] <= len(feeder.uploads) - at_kill + 6  # the rest, and at most one batch again

    rows = table_rows(output, ["path", "model_version"])
    assert Counter(r.path for r in rows) == Counter(f"file:{landing / p.parent.name / p.name}" for p in uploads)
    assert Counter(r.model_version for r in rows) == {old: before_swap, new[0]: len(uploads) - before_swap}
    local_twin.join(600)
    assert_same_tables(tmp_path / "cluster", tmp_path / "local")
