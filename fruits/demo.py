"""Run the whole pipeline end to end on one machine and show how fast and how good it is.

Local (`make demo`): fit on subset/ (evaluated on test/), start the streaming job with a 1 s
trigger, "upload" stream/ into a fresh run folder of the landing directory while it runs,
wait until every upload is committed, then print rows per class, errors, throughput,
upload->commit latency and where the parquet and the plots are.

--aws-emulated (`make demo-aws`): the same, on the event-driven AWS architecture emulated
on 127.0.0.1: a moto server (S3, SNS, SQS) and a real `mlflow server` whose artifacts go
to the emulated bucket. The fit logs to that server, the stream reads and writes s3a://,
uploads go to s3://BUCKET/images/. moto cannot run a Lambda (that needs Docker), so S3's
ObjectCreated events are delivered to an SQS queue and a local poller calls the Lambda's
handler(event, None) for each, exactly as the Lambda runtime would; a second consumer
counts the SNS notifications the handler publishes. Everything is torn down at the end,
also on Ctrl-C. The emulated bucket lives in memory: a copy of the run's results is kept.

Both modes write plots (a PNG folder under the state dir, also logged to the fit's MLflow
run under demo/): streamed images on the first two principal components over the fit
images, the explained variance, and the 1-NN confusion of test/ images.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits.console import add_job_flags, emit_summary, settings_from_args
from fruits.emulated_aws import IMAGES_PREFIX, EmulatedAws, EventPollers, emulated_aws, patched_env
from fruits.errors import FruitsError, one_line

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from pyspark.sql import SparkSession

    from fruits.registry import ResolvedModel
    from fruits.settings import Settings
    from fruits.upload import UploadReport
    from streaming.job import StreamingJob

log = logging.getLogger("fruits.demo")

DATA_ENV = "FRUITS_DATA"
DEFAULT_DATA = Path("../shared/data/fruits360")
SPLITS = ("subset", "stream", "test")
SPLITS_TEXT = "subset/, stream/ and test/"
TRIGGER = "1s"  # short micro-batches: the demo shows upload->commit latency
INGEST_TIMEOUT_S = 300.0  # every upload committed within this, or the summary says INCOMPLETE
NOTIFY_TIMEOUT_S = 60.0
STOP_GRACE_S = 60.0
DEMO_ARTIFACTS = "demo"  # folder of the fit's MLflow run that receives the plots
FIT_PLOTS = ("explained_variance.png", "knn_confusion.png")  # logged by the fit under plots/
MAP_PLOT = "stream_map.png"
# Download bars for every artifact, and run URLs on stdout that point at a server the demo stops.
QUIET_MLFLOW = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
LAMBDA_NOTE = ("moto cannot run Lambdas: a local poller receives the S3 events from SQS and calls "
               "lambda/handler.py handler(event, None), as the Lambda runtime would")


# ============================================================================ CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help=f"folder holding {SPLITS_TEXT} (default ${DATA_ENV} or {DEFAULT_DATA})")
    parser.add_argument("--aws-emulated", action="store_true",
                        help="run against emulated AWS on 127.0.0.1: moto S3/SNS/SQS, a real mlflow server, s3a://")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="stream only N images of stream/, spread over the classes (quick looks, tests)")
    parser.add_argument("--skip-fit", action="store_true",
                        help="reuse the model registered as NAME@ALIAS (e.g. by an earlier demo) instead of fitting "
                             "again (local mode only)")
    parser.add_argument("--model-name", metavar="NAME", help="registered model name (default fruits-pca)")
    parser.add_argument("--alias", help="registry alias the fit moves and the stream uses (default champion)")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    images = images_root(args.images)
    if args.limit is not None and args.limit < 1:
        raise FruitsError(f"--limit must be at least 1, got {args.limit}")
    if args.aws_emulated and args.skip_fit:
        raise FruitsError("--skip-fit cannot be used with --aws-emulated: each emulated run starts an empty registry")
    if args.aws_emulated and args.mlflow_tracking_uri:
        raise FruitsError("--tracking-uri cannot be used with --aws-emulated: the demo starts its own mlflow server")
    settings = settings_from_args(args)
    progress = not args.quiet
    with sigterm_as_interrupt(), patched_env(QUIET_MLFLOW):
        if args.aws_emulated:
            summary = demo_aws(settings, images, limit=args.limit, progress=progress)
        else:
            summary = demo_local(settings, images, limit=args.limit, skip_fit=args.skip_fit, progress=progress)
    emit_summary(summary, args.json, human_summary(summary))
    return 0 if summary["complete"] else 1


def images_root(given: Path | None) -> Path:
    """--images, else $FRUITS_DATA, else ../shared/data/fruits360 from the current directory."""
    root = given or Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
    if not root.is_dir():
        how = "--images" if given else f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default"
        raise FruitsError(f"images folder not found: {root} ({how}): pass --images DIR holding {SPLITS_TEXT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise FruitsError(f"{root} has no {', '.join(s + '/' for s in missing)}: --images must hold {SPLITS_TEXT}")
    return root.resolve()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ============================================================================ the two demos
def demo_local(
    settings: Settings,
    images: Path,
    *,
    limit: int | None = None,
    skip_fit: bool = False,
    spark: SparkSession | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit (unless skip_fit), stream stream/ through a fresh run folder of the landing dir, summarise, plot."""
    from fruits import registry

    started = time.perf_counter()
    run_dir = new_run_dir(settings, "local")
    stream_settings = settings.replace(trigger=TRIGGER)
    # A fresh folder under the watched source: re-runs get new paths, so the checkpoint
    # (which remembers every file it committed) never skips them; labels still come from
    # the class folder. Only this folder's rows are counted.
    landing = join_uri(stream_settings.source_uri, run_dir.name)
    with contextlib.ExitStack() as stack:
        spark = spark or owned_spark(stack, settings, uris=[settings.source_uri, settings.output_uri,
                                                           settings.errors_uri, settings.checkpoint_uri])
        if not skip_fit:
            fit_on_subset(settings, images, spark, progress)
        staged = stack.enter_context(staged_images(images / "stream", limit, run_dir / "staging"))
        streamed = stream_uploads(spark, stream_settings, staged, landing, progress=progress)
        client = registry.connect(settings)
        fit_run = describe_fit(client, streamed.resolved)
        plot_files = plot_demo(spark, client, fit_run, streamed.resolved, streamed.results, run_dir / "plots")
    return summarise(
        mode="local", started=started, streamed=streamed, fit_run=fit_run, fitted_now=not skip_fit,
        settings=stream_settings, source=landing, plots_dir=run_dir / "plots", plot_files=plot_files,
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
    from fruits import registry

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
        staged = stack.enter_context(staged_images(images / "stream", limit, world.run_dir / "staging"))
        pollers = stack.enter_context(EventPollers(world))
        # Uploads always go to S3 (that is what fires the events); after a fall-back the
        # stream watches a local copy instead.
        mirror = f"s3://{world.bucket}/{IMAGES_PREFIX}" if fallback_reason else None
        streamed = stream_uploads(spark, stream_settings, staged, landing, endpoint_url=world.endpoint,
                                  mirror=mirror, progress=progress)
        s3_uploads = (streamed.mirror or streamed.upload).uploaded
        notified = pollers.wait_for(s3_uploads, NOTIFY_TIMEOUT_S)
        pollers.stop()
        client = registry.connect(stream_settings)
        fit_run = describe_fit(client, streamed.resolved)
        plot_files = plot_demo(spark, client, fit_run, streamed.resolved, streamed.results, world.run_dir / "plots")
        results_copy = keep_results(stream_settings, landing, world.endpoint, world.run_dir / "results.parquet")
        return summarise(
            mode="aws-emulated", started=started, streamed=streamed, fit_run=fit_run, fitted_now=True,
            settings=stream_settings, source=landing, plots_dir=world.run_dir / "plots", plot_files=plot_files,
            notifications={**pollers.counts(), "expected": s3_uploads, "complete": notified},
            fallback_reason=fallback_reason, results_copy=str(results_copy) if results_copy else None,
            emulator={"bucket": world.bucket, "moto": world.endpoint, "mlflow": world.mlflow.url,
                      "note": LAMBDA_NOTE},
        )


# ============================================================================ shared steps
def new_run_dir(settings: Settings, kind: str) -> Path:
    """<state>/demo/<kind>-<UTC time>: this run's plots, staging and (emulated) server files."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
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
    from fruits.spark import get_spark

    spark = get_spark(settings, "fruits-demo", uris=uris)
    stack.callback(spark.stop)
    return spark


def fit_on_subset(settings: Settings, images: Path, spark: SparkSession, progress: bool) -> dict[str, Any]:
    from fit.job import fit

    log.info("fitting on %s (1-NN evaluated on %s), tracking to %s", images / "subset", images / "test",
             settings.tracking_uri)
    summary = fit(settings, str(images / "subset"), str(images / "test"), spark=spark, progress=progress)
    log.info("registered %s v%s as @%s: 1-NN accuracy %.3f, explained variance %.3f, %.0f s",
             summary["model_name"], summary["model_version"], summary["alias"], summary["knn_accuracy"] or 0.0,
             summary["explained_variance"], summary["seconds"])
    return summary


def pick_images(stream_dir: Path, limit: int) -> list[Path]:
    """`limit` images spread over the classes: round-robin over sorted class folders and sorted files."""
    from fruits.images import is_image_name

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
def staged_images(stream_dir: Path, limit: int | None, staging: Path) -> Iterator[Path]:
    """The folder to upload: stream/ itself, or a temporary copy of `limit` of its images (class folders kept)."""
    if limit is None:
        yield stream_dir
        return
    picked = pick_images(stream_dir, limit)
    if not picked:
        raise FruitsError(f"no images in class folders under {stream_dir}")
    try:
        for image in picked:
            target = staging / image.parent.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, target)
        log.info("--limit %d: %d images from %d classes", limit, len(picked), len({p.parent.name for p in picked}))
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Streamed:
    """What one stream-while-uploading pass produced."""

    upload: UploadReport  # into the folder the stream watches
    mirror: UploadReport | None  # the extra upload to S3 after an s3a fall-back
    stream: dict[str, Any]  # StreamingJob.summary()
    resolved: ResolvedModel
    results: pd.DataFrame  # this run's rows: path, label, pca
    errors: pd.DataFrame  # this run's quarantined files: path, reason
    complete: bool
    ingest_seconds: float  # first upload -> every upload committed


def stream_uploads(
    spark: SparkSession,
    settings: Settings,
    images_dir: Path,
    landing: str,
    *,
    endpoint_url: str | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> Streamed:
    """Start the stream, upload while it runs, wait until every upload is committed, stop gracefully."""
    from fruits.upload import upload_dir
    from streaming.job import StreamingJob

    job = StreamingJob(settings, spark=spark)
    try:
        job.start()
        t0 = time.perf_counter()
        mirrored = upload_dir(images_dir, mirror, endpoint_url=endpoint_url, progress=progress) if mirror else None
        report = upload_dir(images_dir, landing, endpoint_url=endpoint_url, progress=progress)
        if report.failed:
            log.warning("%d uploads failed; waiting for the %d that succeeded", len(report.failed), report.uploaded)
        results, errors, complete, done = wait_for_ingest(job, settings, landing, report.uploaded, endpoint_url)
        ingest_seconds = done - t0
    finally:
        stop_stream(job)
    return Streamed(report, mirrored, job.summary(), job.resolved, results, errors, complete, ingest_seconds)


def stop_stream(job: StreamingJob) -> None:
    """After the current micro-batch, as the job does on Ctrl-C."""
    job.request_stop()
    job.stop(grace_seconds=STOP_GRACE_S)


def wait_for_ingest(
    job: StreamingJob, settings: Settings, landing: str, expected: int, endpoint_url: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, bool, float]:
    """Until every upload is a committed result or error row, read back from the tables (not the job's counters).

    Polls the tables rather than blocking in process_available() first: the errors query
    triggers 4x less often, and waiting for it would add seconds to the end-to-end time
    measured here. It runs once at the end, so both queries and every progress event
    (the latencies) are in before the stream stops.
    """
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while True:
        job.raise_if_failed()
        results = run_rows(settings.output_uri, landing, endpoint_url, ["path"])
        errors = run_rows(settings.errors_uri, landing, endpoint_url, ["path", "reason"])
        done = time.perf_counter()
        if len(results) + len(errors) >= expected:
            break
        if time.monotonic() > deadline:
            log.warning("only %d of %d uploads committed after %.0f s", len(results) + len(errors), expected,
                        INGEST_TIMEOUT_S)
            break
        time.sleep(0.5)
    try:
        job.process_available()
    except Exception as exc:  # a failed query surfaces here as a Py4J/Spark error
        raise FruitsError(f"the stream failed: {one_line(exc)}") from exc
    results = run_rows(settings.output_uri, landing, endpoint_url, ["path", "label", "pca"])
    errors = run_rows(settings.errors_uri, landing, endpoint_url, ["path", "reason"])
    complete = len(results) + len(errors) >= expected
    if complete:
        log.info("all %d uploads committed: %d rows, %d errors", expected, len(results), len(errors))
    return results, errors, complete, done




def run_rows(table_uri: str, landing: str, endpoint_url: str | None, columns: list[str]) -> pd.DataFrame:
    """Committed rows of a results/errors table whose file lies under `landing` (this run's uploads)."""
    import pandas as pd

    from fruits import lake
    from fruits.images import comparable_path

    table = lake.read_table(table_uri, endpoint_url=endpoint_url, columns=columns)
    if "path" not in table.column_names:  # nothing committed yet
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame = table.to_pandas()
    prefix = comparable_path(landing) + "/"
    return frame[frame["path"].map(lambda p: comparable_path(p).startswith(prefix))].reset_index(drop=True)


# ============================================================================ the fit's run and the plots
@dataclass(frozen=True)
class FitRun:
    run_id: str
    model_name: str
    model_version: str
    knn_accuracy: float | None
    explained_variance: float | None
    features_uri: str | None
    tracking_uri: str


def describe_fit(client: MlflowClient, resolved: ResolvedModel) -> FitRun:
    """The run behind the version the stream used: its metrics, and where its raw fit features are."""
    run = client.get_run(resolved.run_id)
    return FitRun(
        run_id=resolved.run_id,
        model_name=resolved.name,
        model_version=resolved.version,
        knn_accuracy=run.data.metrics.get("knn_accuracy"),
        explained_variance=run.data.metrics.get("explained_variance"),
        features_uri=run.data.params.get("features_uri") or resolved.tags.get("fit.features_uri"),
        tracking_uri=client.tracking_uri,
    )


def plot_demo(
    spark: SparkSession, client: MlflowClient, fit_run: FitRun, resolved: ResolvedModel, results: pd.DataFrame,
    plots_dir: Path,
) -> list[Path]:
    """The map of this run's images, plus the fit's own plots; saved as PNG and logged to the fit's run."""
    from fruits import registry

    plots_dir.mkdir(parents=True, exist_ok=True)
    model = registry.load_spark_model(resolved)
    files = [stream_map(spark, model, fit_run, results, plots_dir / MAP_PLOT)] if len(results) else []
    files += fit_plots(client, fit_run.run_id, model, plots_dir)
    client.log_artifacts(fit_run.run_id, str(plots_dir), DEMO_ARTIFACTS)
    log.info("plots in %s, and in run %s under %s/", plots_dir, fit_run.run_id, DEMO_ARTIFACTS)
    return files


def stream_map(spark: SparkSession, model: Any, fit_run: FitRun, results: pd.DataFrame, path: Path) -> Path:
    """Streamed images (dots) over the fit images (faint discs) on PC1/PC2: a misfiled upload stands out."""
    import numpy as np

    from fruits import plots
    from fruits import transforms as T

    reference = reference_labels = None
    try:
        fit_points = T.project(spark.read.parquet(fit_run.features_uri), model).select("label", "pca").toPandas()
        reference = np.stack(fit_points["pca"].to_numpy())[:, :2]
        reference_labels = fit_points["label"].tolist()
    except Exception as exc:  # the map still says something without them
        log.warning("fit images left off the map: cannot read their features at %s (%s)", fit_run.features_uri,
                    one_line(exc))
    points = np.stack(results["pca"].to_numpy())[:, :2]
    behind = f" over the {len(reference_labels)} fit images (discs)" if reference_labels else ""
    title = (f"{len(results)} streamed images (dots){behind}, {results['label'].nunique()} classes: "
             f"{fit_run.model_name} v{fit_run.model_version}, PC1 vs PC2")
    return plots.projection_2d(points, results["label"].tolist(), path, title=title,
                               reference=reference, reference_labels=reference_labels)


def fit_plots(client: MlflowClient, run_id: str, model: Any, plots_dir: Path) -> list[Path]:
    """Copy the fit's explained-variance and 1-NN confusion plots rather than recompute them.

    A run without the variance plot gets one drawn from the model's PCA stage; a fit without
    eval images has no confusion to show (only a warning).
    """
    import mlflow.artifacts

    from fruits import plots

    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    files = []
    for name in FIT_PLOTS:
        if name in logged:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"plots/{name}", dst_path=tmp,
                                                            tracking_uri=client.tracking_uri)
                files.append(Path(shutil.copy(local, plots_dir / name)))
        elif name == "explained_variance.png":
            ratios = model.stages[-1].explainedVariance.toArray()
            files.append(plots.explained_variance(ratios, plots_dir / name))
        else:
            log.warning("run %s has no plots/%s (fitted without eval images): no confusion view", run_id, name)
    return files


# ============================================================================ summary
def summarise(
    *,
    mode: str,
    started: float,
    streamed: Streamed,
    fit_run: FitRun,
    fitted_now: bool,
    settings: Settings,
    source: str,
    plots_dir: Path,
    plot_files: list[Path],
    notifications: dict[str, Any] | None = None,
    fallback_reason: str | None = None,
    results_copy: str | None = None,
    emulator: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The --json contract. Row counts come from the committed tables, filtered to this run's folder."""
    stream = streamed.stream
    rows = len(streamed.results)
    complete = streamed.complete and not streamed.upload.failed
    if notifications is not None:
        complete = complete and notifications["complete"]
    return {
        "mode": mode,
        "complete": complete,
        "images_uploaded": streamed.upload.uploaded,
        "upload_failures": len(streamed.upload.failed),
        "rows": rows,
        "errors": len(streamed.errors),
        "error_reasons": dict(Counter(streamed.errors["reason"])) if len(streamed.errors) else {},
        "rows_per_class": dict(sorted(Counter(streamed.results["label"].fillna("(no class folder)")).items())),
        "rows_per_second": stream.get("rows_per_second"),
        "end_to_end_rows_per_second": round(rows / streamed.ingest_seconds, 1) if streamed.ingest_seconds else None,
        "upload_seconds": round(streamed.upload.seconds, 2),
        "ingest_seconds": round(streamed.ingest_seconds, 2),
        "batches": stream.get("batches"),
        "latency_p50_s": stream.get("latency_p50_s"),
        "latency_p95_s": stream.get("latency_p95_s"),
        "latency_max_s": stream.get("latency_max_s"),
        "notifications": notifications["unique"] if notifications else None,
        "notifications_detail": notifications,
        "knn_accuracy": fit_run.knn_accuracy,
        "explained_variance": fit_run.explained_variance,
        "model_name": fit_run.model_name,
        "model_version": fit_run.model_version,
        "fitted": fitted_now,
        "run_id": fit_run.run_id,
        "tracking_uri": fit_run.tracking_uri,
        "source": source,
        "results": settings.output_uri,
        "errors_output": settings.errors_uri,
        "results_copy": results_copy,
        "plots_dir": str(plots_dir),
        "plots": [str(p) for p in plot_files],
        "plots_artifacts": f"runs:/{fit_run.run_id}/{DEMO_ARTIFACTS}",
        "progress_log": stream.get("progress_log"),
        "emulator": emulator,
        "fallback_reason": fallback_reason,
        "seconds": round(time.perf_counter() - started, 2),
    }


def human_summary(s: dict[str, Any]) -> str:
    def sec(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    lines = [f"Fruits! demo ({s['mode']}){'' if s['complete'] else ' INCOMPLETE'}: {s['images_uploaded']} images "
             f"uploaded -> {s['rows']} rows, {s['errors']} errors, in {s['seconds']:.0f} s"]
    if s["fallback_reason"]:
        lines.append(f"  FELL BACK to a local directory for the stream: {s['fallback_reason']}")
    accuracy = f", 1-NN accuracy on test/ {s['knn_accuracy']:.3f}" if s["knn_accuracy"] is not None else ""
    lines.append(f"  model {s['model_name']} v{s['model_version']} ({'fitted now' if s['fitted'] else 'reused'}"
                 f"{accuracy}); run {s['run_id']}")
    rate = f"{s['rows_per_second']:.1f} rows/s while busy" if s["rows_per_second"] else "no batches"
    lines.append(f"  stream: {s['batches']} micro-batch{'' if s['batches'] == 1 else 'es'}, {rate}, "
                 f"{s['end_to_end_rows_per_second']} rows/s from first upload to last commit")
    # The uploads arrive as a burst: when they come faster than the stream works, latency is mostly queueing.
    lines.append(f"  latency: the {s['images_uploaded']} uploads arrived within {s['upload_seconds']:.1f} s; "
                 f"upload->commit p50 {sec(s['latency_p50_s'])}, p95 {sec(s['latency_p95_s'])}")
    if s["notifications_detail"]:
        n = s["notifications_detail"]
        lines.append(f"  notifications: {n['unique']} of {n['expected']} uploads announced on SNS "
                     f"({n['lambda_invocations']} Lambda invocations, {n['duplicates']} duplicates)")
        lines.append(f"  ({LAMBDA_NOTE})")
    if s["error_reasons"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(s["error_reasons"].items())))
    lines.append("  rows per class:")
    lines += class_table(s["rows_per_class"])
    lines.append(f"  results: {s['results']} (this run: paths under {s['source']})")
    lines.append(f"  errors:  {s['errors_output']}")
    if s["results_copy"]:
        lines.append(f"  copy of this run's results (the emulated bucket is gone): {s['results_copy']}")
    where = "the demo's mlflow server, stopped now" if s["emulator"] else s["tracking_uri"]
    lines.append(f"  plots:   {s['plots_dir']} (also logged as {s['plots_artifacts']} in {where})")
    return "\n".join(lines)


def class_table(counts: Mapping[str, int], columns: int = 2) -> list[str]:
    """Rows per class in `columns` columns, read down: 32 classes fit in 16 lines."""
    items = [f"{name:<22} {count:>4}" for name, count in counts.items()]
    height = -(-len(items) // columns) if items else 0
    return ["    " + "    ".join(items[r + c * height] for c in range(columns) if r + c * height < len(items))
            for r in range(height)]


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
    from fruits.spark import ensure_dir, path_exists

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
    """Stream settings and the folder it watches: the emulated bucket, or local folders after a fall-back."""
    if fell_back:
        local = world.run_dir
        stream = settings.replace(source=str(local / "landing"), output=str(local / "lake" / "results"),
                                  errors=str(local / "lake" / "errors"), checkpoint=str(local / "checkpoints"))
        return stream.replace(trigger=TRIGGER), stream.source_uri
    root = f"s3a://{world.bucket}"
    stream = settings.replace(source=f"{root}/{IMAGES_PREFIX}", output=f"{root}/results", errors=f"{root}/errors",
                              checkpoint=f"{root}/checkpoints/stream", trigger=TRIGGER)
    return stream, stream.source_uri


def keep_results(settings: Settings, landing: str, endpoint_url: str, target: Path) -> Path | None:
    """A local parquet copy of this run's results: the emulated bucket vanishes with the demo."""
    import pyarrow.parquet as pq

    from fruits import lake
    from fruits.images import comparable_path

    table = lake.read_table(settings.output_uri, endpoint_url=endpoint_url)
    if "path" not in table.column_names:
        return None
    prefix = comparable_path(landing) + "/"
    mine = [comparable_path(p).startswith(prefix) for p in table.column("path").to_pylist()]
    pq.write_table(table.filter(mine), target)
    return target


# ============================================================================ the Lambda stand-in


