"""What the demo shows: the fit's run, plots a person would rather look at, and the summary."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.artifacts
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from demo.emulated_aws import LAMBDA_NOTE
from fruits import plots, registry
from fruits.exceptions import one_line
from fruits.project import project
from fruits.registry import ResolvedModel
from fruits.settings import Settings

if TYPE_CHECKING:
    from demo.run import Streamed

log = logging.getLogger("fruits.demo")

DEMO_ARTIFACTS = "demo"  # folder of the fit's MLflow run that receives the plots
# Logged by the fit under plots/: the PCA's variance, the classifier's confusion on test/ and its
# novelty scores against the unseen fruits (the last two need eval images).
FIT_PLOTS = ("explained_variance.png", "confusion.png", "novelty.png")
MAP_PLOT = "stream_map.png"
STREAM_PLOT = "stream_report.png"  # `fruits report` of this run: throughput, predictions, model swaps


@dataclass(frozen=True)
class FitRun:
    run_id: str
    model_name: str
    model_version: str
    knn_accuracy: float | None
    classifier_accuracy: float | None
    novelty_auroc: float | None
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
        classifier_accuracy=run.data.metrics.get("classifier_accuracy"),
        novelty_auroc=run.data.metrics.get("novelty_auroc"),
        explained_variance=run.data.metrics.get("explained_variance"),
        features_uri=run.data.params.get("features_uri") or resolved.tags.get("fit.features_uri"),
        tracking_uri=client.tracking_uri,
    )


def plot_demo(
    spark: SparkSession,
    client: MlflowClient,
    fit_run: FitRun,
    resolved: ResolvedModel,
    results: pd.DataFrame,
    plots_dir: Path,
    progress: tuple[list[dict], list[dict]],
) -> list[Path]:
    """The map of this run's images, the stream over time, plus the fit's own plots; saved as PNG and
    logged to the fit's run."""

    plots_dir.mkdir(parents=True, exist_ok=True)
    model = registry.load_spark_model(resolved)
    files = [stream_map(spark, model, fit_run, results, plots_dir / MAP_PLOT)] if len(results) else []
    batches, swaps = progress
    if batches:
        files.append(
            plots.stream_report(
                batches,
                swaps,
                plots_dir / STREAM_PLOT,
                title=(
                    f"This demo's stream: {len(batches)} micro-batches, {sum(b['rows'] for b in batches)} rows, "
                    f"{len(swaps)} model swap(s) without a restart"
                ),
            )
        )
    files += fit_plots(client, fit_run.run_id, model, plots_dir)
    client.log_artifacts(fit_run.run_id, str(plots_dir), DEMO_ARTIFACTS)
    log.info("plots in %s, and in run %s under %s/", plots_dir, fit_run.run_id, DEMO_ARTIFACTS)
    return files


def stream_map(spark: SparkSession, model: Any, fit_run: FitRun, results: pd.DataFrame, path: Path) -> Path:
    """Streamed images (dots) over the fit images (faint discs) on PC1/PC2: a misfiled upload stands out."""

    reference = reference_labels = None
    try:
        fit_points = project(spark.read.parquet(fit_run.features_uri), model).select("label", "pca").toPandas()
        reference = np.stack(fit_points["pca"].to_numpy())[:, :2]
        reference_labels = fit_points["label"].tolist()
    except Exception as exc:  # the map still says something without them
        log.warning(
            "fit images left off the map: cannot read their features at %s (%s)", fit_run.features_uri, one_line(exc)
        )
    points = np.stack(results["pca"].to_numpy())[:, :2]
    behind = f" over the {len(reference_labels)} fit images (discs)" if reference_labels else ""
    title = (
        f"{len(results)} streamed images (dots){behind}, {results['label'].nunique()} classes: "
        f"{fit_run.model_name} v{fit_run.model_version}, PC1 vs PC2"
    )
    return plots.projection_2d(
        points, results["label"].tolist(), path, title=title, reference=reference, reference_labels=reference_labels
    )


def fit_plots(client: MlflowClient, run_id: str, model: Any, plots_dir: Path) -> list[Path]:
    """Copy the fit's explained-variance, confusion and novelty plots rather than recompute them.

    A run without the variance plot gets one drawn from the model's PCA stage; a fit without
    eval images has no confusion or novelty to show (only a warning).
    """

    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    files = []
    for name in FIT_PLOTS:
        if name in logged:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"plots/{name}", dst_path=tmp, tracking_uri=client.tracking_uri
                )
                files.append(Path(shutil.copy(local, plots_dir / name)))
        elif name == "explained_variance.png":
            ratios = next(s for s in model.stages if hasattr(s, "explainedVariance")).explainedVariance.toArray()
            files.append(plots.explained_variance(ratios, plots_dir / name))
        else:
            log.warning("run %s has no plots/%s (fitted without eval images)", run_id, name)
    return files


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
    if streamed.app is not None:
        complete = complete and "error" not in streamed.app
    return {
        "mode": mode,
        "source_mode": stream.get("source_mode"),
        "source_counts": stream.get("source_counts"),
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
        "classifier_accuracy": fit_run.classifier_accuracy,
        "novelty_auroc": fit_run.novelty_auroc,
        "explained_variance": fit_run.explained_variance,
        "refit": streamed.refit,
        "app": streamed.app,
        "model_swaps": stream.get("model_swaps"),
        "per_model_version": per_model_version(streamed.results),
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


def per_model_version(results: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Rows each model version classified, and how often its prediction matched the upload's class folder."""
    out = {}
    for version, rows in results.groupby("model_version", sort=True):
        predicted = rows["prediction"].notna()
        out[str(version)] = {
            "rows": len(rows),
            "streamed_accuracy": round(float((rows["prediction"] == rows["label"])[predicted].mean()), 4)
            if predicted.any()
            else None,
            "novel": int(rows["is_novel"].eq(True).sum()),
        }
    return out


def human_summary(s: dict[str, Any]) -> str:
    def sec(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    lines = [
        f"Fruits! demo ({s['mode']}){'' if s['complete'] else ' INCOMPLETE'}: {s['images_uploaded']} images "
        f"uploaded -> {s['rows']} rows, {s['errors']} errors, in {s['seconds']:.0f} s"
    ]
    if s["fallback_reason"]:
        lines.append(f"  FELL BACK to a local directory for the stream: {s['fallback_reason']}")
    accuracy = "".join(
        f", {what} {s[key]:.3f}"
        for key, what in (
            ("classifier_accuracy", "classifier accuracy on test/"),
            ("novelty_auroc", "unseen-fruit AUROC"),
            ("knn_accuracy", "1-NN accuracy"),
        )
        if s.get(key) is not None
    )
    lines.append(
        f"  model {s['model_name']} v{s['model_version']} ({'fitted now' if s['fitted'] else 'reused'}"
        f"{accuracy}); run {s['run_id']}"
    )
    if s.get("refit"):
        r = s["refit"]
        verdict = (
            f"promoted to champion; the running stream swapped to it {r['swap_seconds']:.1f} s later, no restart"
            if r["promoted"]
            else f"not promoted ({r['decision']})"
        )
        before = r["champion_classifier_accuracy"]
        lines.append(
            f"  refit from the lake ({r['rows_from_lake']} rows of the results table + {r['rows_from_champion']} "
            f"of the fit) -> v{r['model_version']}: accuracy on test/ "
            f"{'none (no classifier)' if before is None else f'{before:.3f}'} "
            f"-> {r['classifier_accuracy']:.3f}, {verdict}"
        )
    for version, v in (s.get("per_model_version") or {}).items():
        matched = (
            f", prediction = class folder for {v['streamed_accuracy']:.1%}"
            if v["streamed_accuracy"] is not None
            else ""
        )
        lines.append(f"  v{version} classified {v['rows']} streamed uploads{matched}, {v['novel']} flagged novel")
    rate = f"{s['rows_per_second']:.1f} rows/s while busy" if s["rows_per_second"] else "no batches"
    lines.append(
        f"  stream: {s['batches']} micro-batch{'' if s['batches'] == 1 else 'es'}, {rate}, "
        f"{s['end_to_end_rows_per_second']} rows/s from first upload to last commit"
    )
    if s["source_mode"] == "notifications":
        c = s["source_counts"] or {}
        lines.append(
            f"  source: notifications (SQS, no listing): {c.get('uploads', 0)} uploads announced, "
            f"{c.get('duplicates', 0)} duplicates and {c.get('test_events', 0)} test events skipped, "
            f"{c.get('backfilled', 0)} found by the backfill"
        )
    else:
        lines.append(f"  source: {s['source_mode']} (the prefix listed every trigger)")
    # The uploads arrive as a burst: when they come faster than the stream works, latency is mostly queueing.
    lines.append(
        f"  latency: the {s['images_uploaded']} uploads arrived within {s['upload_seconds']:.1f} s; "
        f"upload->commit p50 {sec(s['latency_p50_s'])}, p95 {sec(s['latency_p95_s'])}"
    )
    if s["notifications_detail"]:
        n = s["notifications_detail"]
        lines.append(
            f"  notifications: {n['unique']} of {n['expected']} uploads announced on SNS "
            f"({n['lambda_invocations']} Lambda invocations, {n['duplicates']} duplicates)"
        )
        lines.append(f"  ({LAMBDA_NOTE})")
    if s.get("app"):
        a = s["app"]
        if "skipped" in a:
            lines.append(f"  app: step skipped ({a['skipped']})")
        elif "error" in a:
            lines.append(f"  app: {a['url']}/ gave NO answer on its page ({a['error']})")
        else:
            lines.append(
                f'  app: {a["url"]}/ in headless Chromium: a photo of {a["expected"]} -> "{a["answer"]}" '
                f"({a['message']}) on the page {a['seconds']:.1f} s after the tap; screenshot {a['screenshot']}"
            )
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
    return [
        "    " + "    ".join(items[r + c * height] for c in range(columns) if r + c * height < len(items))
        for r in range(height)
    ]
