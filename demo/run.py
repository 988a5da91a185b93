"""The two demos' steps: fit, stream while uploading, wait for every upload, read the tables back.

Local (`make demo`): fit on subset/ (evaluated on test/, unseen fruits from extra_classes/),
start the streaming job with a 1 s trigger, "upload" the first half of stream/ into a fresh run
folder of the landing directory while it runs and wait until it is committed; then refit from
the lake (`fruits refit`: the streamed rows + the fit's own), which promotes the challenger if
it beats the champion on test/; the running stream swaps to the new champion without a
restart, and the second half of stream/ is classified by it.

Emulated AWS (`make demo-aws`): the same on the event-driven AWS architecture emulated on
127.0.0.1 (demo.emulated_aws): the fit logs to a real `mlflow server`, uploads go to
s3://BUCKET/images/ and fire the Lambda, whose SNS messages reach the stream's SQS queue; the
stream reads those notifications (no listing) and writes s3a:// on a moto server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from demo import report
from demo.app_step import photo_through_the_app
from demo.emulated_aws import IMAGES_PREFIX, LAMBDA_NOTE, EmulatedAws, EventPollers, emulated_aws
from fit.job import fit
from fit.refit import refit
from fruits import lake, registry
from fruits.exceptions import FruitsError, one_line
from fruits.registry import ResolvedModel
from fruits.settings import Settings
from fruits.source import comparable_path, is_image_name
from fruits.spark import ensure_dir, get_spark, path_exists
from fruits.upload import UploadReport, upload_dir
from streaming.job import StreamingJob
from streaming.monitor import read_progress

log = logging.getLogger("fruits.demo")

TRIGGER = "1s"  # short micro-batches: the demo shows upload->commit latency
BATCH_FILES = 40  # at most per micro-batch: the stream's plot shows batches, not one burst
INGEST_TIMEOUT_S = 300.0  # every upload committed within this, or the summary says INCOMPLETE
NOTIFY_TIMEOUT_S = 60.0
STOP_GRACE_S = 60.0
MODEL_REFRESH = "2s"  # the demo's stream looks for a new champion every 2 s (default 10 s)
SWAP_TIMEOUT_S = 60.0
RESULT_COLUMNS = ["path", "label", "pca", "prediction", "confidence", "is_novel", "model_version"]


# ============================================================================ the two demos
def demo_local(
    settings: Settings,
    images: Path,
    *,
    limit: int | None = None,
    skip_fit: bool = False,
    with_refit: bool = True,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit (unless skip_fit), stream stream/ through a fresh run folder of the landing dir, summarise, plot.

    With `with_refit`, stream/ goes in two halves: between them the model is refit from the lake and,
    if it wins, promoted; the running stream swaps to it and classifies the second half with it.
    """
    started = time.perf_counter()
    run_dir = new_run_dir(settings, "local")
    stream_settings = settings.replace(
        trigger=TRIGGER, model_refresh_interval=MODEL_REFRESH, max_files_per_trigger=BATCH_FILES
    )
    # A fresh folder under the watched source: re-runs get new paths, so the checkpoint
    # (which remembers every file it committed) never skips them; labels still come from
    # the class folder. Only this folder's rows are counted.
    landing = join_uri(stream_settings.source_uri, run_dir.name)
    with contextlib.ExitStack() as stack:
        spark = spark or owned_spark(
            stack,
            settings,
            uris=[settings.source_uri, settings.output_uri, settings.errors_uri, settings.checkpoint_uri],
        )
        if not skip_fit:
            fit_on_subset(settings, images, spark, progress)
        parts = stack.enter_context(
            staged_images(images / "stream", limit, run_dir / "staging", 2 if with_refit else 1)
        )
        between = (lambda job: refit_and_swap(job, stream_settings, images, spark, progress)) if with_refit else None

        # Once every upload is in, while the stream still runs: one photo through the app's page.
        def app(job: StreamingJob) -> dict[str, Any]:
            return photo_through_the_app(stream_settings, pick_images(images / "test", 1)[0], run_dir / "app.png")

        streamed = stream_uploads(spark, stream_settings, parts, landing, between=between, after=app, progress=progress)
        client = registry.connect(settings)
        fit_run = report.describe_fit(client, streamed.first_model)
        plot_files = report.plot_demo(
            spark, client, fit_run, streamed.first_model, streamed.results, run_dir / "plots", streamed.progress
        )
    return report.summarise(
        mode="local",
        started=started,
        streamed=streamed,
        fit_run=fit_run,
        fitted_now=not skip_fit,
        settings=stream_settings,
        source=landing,
        plots_dir=run_dir / "plots",
        plot_files=plot_files,
    )


def demo_aws(
    settings: Settings,
    images: Path,
    *,
    limit: int | None = None,
    spark: SparkSession | None = None,
    progress: bool = True,
    world: EmulatedAws | None = None,
) -> dict[str, Any]:
    """The event-driven architecture on emulated AWS; pass `world` to inspect it before it is torn down."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if world is None:
            world = stack.enter_context(emulated_aws(new_run_dir(settings, "aws"), settings.aws_region))
        log.info(LAMBDA_NOTE)
        spark, fallback_reason = spark_for_aws(stack, settings, world, spark)
        fallback_reason = fallback_reason or s3a_problem(spark, world)
        if fallback_reason:
            log.warning("FALLING BACK to a local directory for the stream: %s", fallback_reason)
        world.mlflow.wait_ready()
        fit_settings = settings.replace(mlflow_tracking_uri=world.mlflow.url, s3_endpoint_url=world.endpoint)
        fit_on_subset(fit_settings, images, spark, progress)
        stream_settings, landing = aws_stream_layout(fit_settings, world, fallback_reason is not None)
        parts = stack.enter_context(staged_images(images / "stream", limit, world.run_dir / "staging"))
        pollers = stack.enter_context(EventPollers(world))
        # Uploads always go to S3 (that is what fires the events); after a fall-back the
        # stream watches a local copy instead.
        mirror = f"s3://{world.bucket}/{IMAGES_PREFIX}" if fallback_reason else None
        streamed = stream_uploads(
            spark, stream_settings, parts, landing, endpoint_url=world.endpoint, mirror=mirror, progress=progress
        )
        s3_uploads = (streamed.mirror or streamed.upload).uploaded
        notified = pollers.wait_for(s3_uploads, NOTIFY_TIMEOUT_S)
        pollers.stop()
        client = registry.connect(stream_settings)
        fit_run = report.describe_fit(client, streamed.first_model)
        plot_files = report.plot_demo(
            spark, client, fit_run, streamed.first_model, streamed.results, world.run_dir / "plots", streamed.progress
        )
        results_copy = keep_results(stream_settings, landing, world.run_dir / "results.parquet")
        return report.summarise(
            mode="aws-emulated",
            started=started,
            streamed=streamed,
            fit_run=fit_run,
            fitted_now=True,
            settings=stream_settings,
            source=landing,
            plots_dir=world.run_dir / "plots",
            plot_files=plot_files,
            notifications={**pollers.counts(), "expected": s3_uploads, "complete": notified},
            fallback_reason=fallback_reason,
            results_copy=str(results_copy) if results_copy else None,
            emulator={"bucket": world.bucket, "moto": world.endpoint, "mlflow": world.mlflow.url, "note": LAMBDA_NOTE},
        )


# ============================================================================ shared steps
def new_run_dir(settings: Settings, kind: str) -> Path:
    """<state>/demo/<kind>-<UTC time>: this run's plots, staging and (emulated) server files."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = settings.state / "demo"
    candidate, n = base / f"{kind}-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = base / f"{kind}-{stamp}-{n}"
    candidate.mkdir(parents=True)
    return candidate


def join_uri(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def owned_spark(stack: contextlib.ExitStack, settings: Settings, uris: list[str]) -> SparkSession:
    """A session this demo creates is also stopped by it (a session passed in belongs to the caller)."""

    spark = get_spark(settings, "fruits-demo", uris=uris)
    stack.callback(spark.stop)
    return spark


def fit_on_subset(settings: Settings, images: Path, spark: SparkSession, progress: bool) -> dict[str, Any]:
    """Fit on subset/, evaluated on test/ and (when the folder is there) on the unseen fruits of extra_classes/."""
    novelty = images / "extra_classes"
    novelty_uri = str(novelty) if novelty.is_dir() else None
    log.info(
        "fitting on %s (evaluated on %s%s), tracking to %s",
        images / "subset",
        images / "test",
        f", unseen fruits {novelty}" if novelty_uri else "",
        settings.tracking_uri,
    )
    summary = fit(
        settings, str(images / "subset"), str(images / "test"), novelty_uri=novelty_uri, spark=spark, progress=progress
    )
    log.info(
        "registered %s v%s as @%s: classifier accuracy %.3f, 1-NN accuracy %.3f, %.0f s",
        summary["model_name"],
        summary["model_version"],
        summary["alias"],
        summary.get("classifier_accuracy") or 0.0,
        summary["knn_accuracy"] or 0.0,
        summary["seconds"],
    )
    return summary


def pick_images(stream_dir: Path, limit: int) -> list[Path]:
    """`limit` images spread over the classes: round-robin over sorted class folders and sorted files."""

    per_class = [
        sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
        for folder in sorted(stream_dir.iterdir())
        if folder.is_dir() and not folder.name.startswith((".", "_"))
    ]
    picked: list[Path] = []
    for rank in range(max((len(files) for files in per_class), default=0)):
        for files in per_class:
            if rank < len(files) and len(picked) < limit:
                picked.append(files[rank])
    return picked


@contextlib.contextmanager
def staged_images(stream_dir: Path, limit: int | None, staging: Path, parts: int = 1) -> Iterator[list[Path]]:
    """The folders to upload, one per part: stream/ itself, or temporary copies (class folders kept) of
    `limit` of its images (all without a limit) split into `parts` that each cover the classes."""
    if limit is None and parts == 1:
        yield [stream_dir]
        return
    picked = pick_images(stream_dir, limit if limit is not None else sys.maxsize)
    if not picked:
        raise FruitsError(f"no images in class folders under {stream_dir}")
    size = -(-len(picked) // parts)
    folders = []
    try:
        for n in range(parts):
            folder = staging / f"part-{n + 1}"
            for image in picked[n * size : (n + 1) * size]:  # round-robin order: every part spans the classes
                target = folder / image.parent.name / image.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image, target)
            folders.append(folder)
        log.info(
            "%d images from %d classes%s",
            len(picked),
            len({p.parent.name for p in picked}),
            f", in {parts} parts" if parts > 1 else "",
        )
        yield folders
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Streamed:
    """What one stream-while-uploading run produced."""

    upload: UploadReport  # into the folder the stream watches (every part)
    mirror: UploadReport | None  # the extra upload to S3 after an s3a fall-back
    stream: dict[str, Any]  # StreamingJob.summary()
    first_model: ResolvedModel  # the model the stream started with
    results: pd.DataFrame  # this run's rows: RESULT_COLUMNS
    errors: pd.DataFrame  # this run's error rows: path, reason
    complete: bool
    ingest_seconds: float  # first upload -> every upload committed, summed over the parts
    progress: tuple[list[dict], list[dict]]  # this run's micro-batches and model swaps (progress lines)
    refit: dict[str, Any] | None = None  # refit_and_swap's summary, between the parts
    app: dict[str, Any] | None = None  # one photo through the app's page (demo.app_step), after the parts


def stream_uploads(
    spark: SparkSession,
    settings: Settings,
    parts: list[Path],
    landing: str,
    *,
    endpoint_url: str | None = None,
    mirror: str | None = None,
    between: Callable[[StreamingJob], dict[str, Any]] | None = None,
    after: Callable[[StreamingJob], dict[str, Any]] | None = None,
    progress: bool = True,
) -> Streamed:
    """Start the stream; per part, upload while it runs and wait until every upload is committed; between
    parts, call `between(job)`, and after the last one `after(job)` (the stream keeps running); stop gracefully."""
    job = StreamingJob(settings, spark=spark)
    uploads: list[UploadReport] = []
    mirrors: list[UploadReport] = []
    refitted = through_app = None
    ingest_seconds = 0.0
    since = time.time()
    try:
        job.start()
        wait_for_first_trigger(job)
        first_model = job.resolved
        to_s3 = {"endpoint_url": endpoint_url, "region": settings.aws_region, "progress": progress}
        for n, folder in enumerate(parts):
            if n and between:
                refitted = between(job)
            t0 = time.perf_counter()
            if mirror:
                mirrors.append(upload_dir(folder, mirror, **to_s3))
            uploads.append(upload_dir(folder, landing, **to_s3))
            if uploads[-1].failed:
                log.warning(
                    "%d uploads failed; waiting for the %d that succeeded",
                    len(uploads[-1].failed),
                    uploads[-1].uploaded,
                )
            results, errors, complete, done = wait_for_ingest(job, settings, landing, sum(u.uploaded for u in uploads))
            ingest_seconds += done - t0
            if not complete:
                break
        if after and complete:
            through_app = after(job)
    finally:
        stop_stream(job)
    return Streamed(
        merged(uploads),
        merged(mirrors) if mirrors else None,
        job.summary(),
        first_model,
        results,
        errors,
        complete,
        ingest_seconds,
        read_progress(settings.progress_log, since),
        refitted,
        through_app,
    )


def merged(reports: list[UploadReport]) -> UploadReport:
    """Several uploads into one destination, as one report."""
    return UploadReport(
        dest=reports[0].dest,
        uploaded=sum(r.uploaded for r in reports),
        skipped=sum(r.skipped for r in reports),
        failed=[f for r in reports for f in r.failed],
        bytes=sum(r.bytes for r in reports),
        seconds=sum(r.seconds for r in reports),
        destinations=sorted(d for r in reports for d in r.destinations),
    )


def refit_and_swap(
    job: StreamingJob, settings: Settings, images: Path, spark: SparkSession, progress: bool
) -> dict[str, Any]:
    """`fruits refit` on what the stream has committed so far; if it promotes the challenger, wait until the
    running stream has swapped to it (its model watcher follows the alias)."""
    swaps_before = job.monitor.snapshot().model_swaps
    novelty = images / "extra_classes"
    log.info("refitting from the lake %s (evaluated on %s) while the stream runs", settings.output_uri, images / "test")
    summary = refit(
        settings,
        str(images / "test"),
        novelty_uri=str(novelty) if novelty.is_dir() else None,
        spark=spark,
        progress=progress,
    )
    swap_seconds = None
    if summary["promoted"]:
        t0 = time.monotonic()
        while job.monitor.snapshot().model_swaps == swaps_before:
            job.raise_if_failed()
            if time.monotonic() - t0 > SWAP_TIMEOUT_S:
                raise FruitsError(
                    f"the stream did not swap to v{summary['model_version']} within {SWAP_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.2)
        swap_seconds = round(time.monotonic() - t0, 2)
        log.info("the running stream swapped to v%s %.1f s after the promotion", job.resolved.version, swap_seconds)
    return {
        **{
            k: summary[k]
            for k in (
                "model_version",
                "promoted",
                "decision",
                "classifier_accuracy",
                "champion_classifier_accuracy",
                "champion_version_before",
                "rows_from_lake",
                "rows_from_champion",
                "novelty_auroc",
                "seconds",
            )
        },
        "swap_seconds": swap_seconds,
    }


def wait_for_first_trigger(job: StreamingJob, timeout: float = INGEST_TIMEOUT_S) -> None:
    """Until the query has run its first trigger, so the uploads arrive at a running stream (in notification
    mode the first start lists what is already there: uploads made before it would be found that way)."""
    deadline = time.monotonic() + timeout
    while not job.query.recentProgress:
        job.raise_if_failed()
        if time.monotonic() > deadline:
            raise FruitsError(f"the stream did not complete its first trigger within {timeout:.0f} s")
        time.sleep(0.2)


def stop_stream(job: StreamingJob) -> None:
    """After the current micro-batch, as the job does on Ctrl-C."""
    job.request_stop()
    job.stop(grace_seconds=STOP_GRACE_S)


def wait_for_ingest(
    job: StreamingJob, settings: Settings, landing: str, expected: int
) -> tuple[pd.DataFrame, pd.DataFrame, bool, float]:
    """Until every upload is a committed result or error row, read back from the tables (not the job's counters)."""
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while True:
        job.raise_if_failed()
        results = run_rows(settings, settings.output_uri, landing, ["path"])
        errors = run_rows(settings, settings.errors_uri, landing, ["path", "reason"])
        done = time.perf_counter()
        if len(results) + len(errors) >= expected:
            break
        if time.monotonic() > deadline:
            log.warning(
                "only %d of %d uploads committed after %.0f s", len(results) + len(errors), expected, INGEST_TIMEOUT_S
            )
            break
        time.sleep(0.5)
    try:
        job.process_available()
    except Exception as exc:  # a failed query surfaces here as a Py4J/Spark error
        raise FruitsError(f"the stream failed: {one_line(exc)}") from exc
    results = run_rows(settings, settings.output_uri, landing, RESULT_COLUMNS)
    errors = run_rows(settings, settings.errors_uri, landing, ["path", "reason"])
    complete = len(results) + len(errors) >= expected
    if complete:
        log.info("all %d uploads committed: %d rows, %d errors", expected, len(results), len(errors))
    return results, errors, complete, done


def run_rows(settings: Settings, table_uri: str, landing: str, columns: list[str]) -> pd.DataFrame:
    """Committed rows of a results/errors table whose file lies under `landing` (this run's uploads)."""
    table = lake.read_table(settings, table_uri, columns=columns)
    if "path" not in table.column_names:  # nothing committed yet
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame = table.to_pandas()
    prefix = comparable_path(landing) + "/"
    return frame[frame["path"].map(lambda p: comparable_path(p).startswith(prefix))].reset_index(drop=True)


def spark_for_aws(
    stack: contextlib.ExitStack, settings: Settings, world: EmulatedAws, spark: SparkSession | None
) -> tuple[SparkSession, str | None]:
    """The caller's session, or a new one with the s3a jars pointed at moto; without the jars, one without s3a."""
    if spark is not None:
        return spark, None
    try:
        return owned_spark(stack, settings.replace(s3_endpoint_url=world.endpoint), [f"s3a://{world.bucket}/"]), None
    except FruitsError as exc:  # the s3a jars are missing (raised before the JVM starts)
        return owned_spark(stack, dataclasses.replace(settings, s3_endpoint_url=None), []), str(exc)


def s3a_problem(spark: SparkSession, world: EmulatedAws) -> str | None:
    """Why this session cannot use s3a:// on the emulated bucket, or None.

    The bucket's endpoint is set per bucket (S3A's fs.s3a.bucket.NAME.* options), so a session
    created earlier for another endpoint (tests, notebooks) reaches this moto server too.
    """

    options = {
        "endpoint": world.endpoint,
        "endpoint.region": world.region,
        "connection.ssl.enabled": "false",
        "path.style.access": "true",
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "access.key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret.key": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    probe = f"s3a://{world.bucket}/{IMAGES_PREFIX}"
    try:
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for key, value in options.items():
            hadoop.set(f"fs.s3a.bucket.{world.bucket}.{key}", value)
        ensure_dir(spark, probe)
        if not path_exists(spark, probe):
            return f"s3a:// wrote {probe} but cannot see it"
    except Exception as exc:
        return f"s3a:// does not work in this Spark session ({one_line(exc)})"
    return None


def aws_stream_layout(settings: Settings, world: EmulatedAws, fell_back: bool) -> tuple[Settings, str]:
    """Stream settings and the folder it watches: the emulated bucket through the notifications on the
    stream's queue, or local folders (listed) after a fall-back."""
    if fell_back:
        local = world.run_dir
        stream = settings.replace(
            source=str(local / "landing"),
            output=str(local / "lake" / "results"),
            errors=str(local / "lake" / "errors"),
            checkpoint=str(local / "checkpoints"),
        )
        return stream.replace(trigger=TRIGGER), stream.source_uri
    root = f"s3a://{world.bucket}"
    stream = settings.replace(
        source=f"{root}/{IMAGES_PREFIX}",
        output=f"{root}/results",
        errors=f"{root}/errors",
        checkpoint=f"{root}/checkpoints/stream",
        trigger=TRIGGER,
        notifications=world.stream_queue_url,
    )
    return stream, stream.source_uri


def keep_results(settings: Settings, landing: str, target: Path) -> Path | None:
    """A local parquet copy of this run's results: the emulated bucket vanishes with the demo."""
    table = lake.read_table(settings, settings.output_uri)
    if "path" not in table.column_names:
        return None
    prefix = comparable_path(landing) + "/"
    mine = [comparable_path(p).startswith(prefix) for p in table.column("path").to_pylist()]
    pq.write_table(table.filter(mine), target)
    return target
