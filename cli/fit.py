"""Fit StandardScaler + PCA on MobileNetV2 features of labelled images and register the model in MLflow.

Images are read as <URI>/<class name>/<file>.(jpg|jpeg|png) from a directory, file://, s3a://
or s3:// URI. Every image is featurized exactly once (the features are cached for the MLlib
stages); unreadable files are skipped and reported. The run logs params, metrics, plots, the
featurizer identity and the Spark PipelineModel; the model is registered and the alias
(default @champion) points at the new version. Raw features are written as parquet so PCA can
be refitted without MobileNet.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import add_job_flags, emit_summary, settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="URI", help="labelled images: URI/<class>/<file>.jpg")
    parser.add_argument("--eval-images", metavar="URI", help="held-out labelled images for the 1-NN accuracy metrics")
    parser.add_argument("--pca-k", type=int, metavar="K", help="principal components (default 300)")
    parser.add_argument("--model-name", metavar="NAME", help="registered model name (default fruits-pca)")
    parser.add_argument("--alias", help="alias moved to the new version (default champion)")
    parser.add_argument("--experiment", help="MLflow experiment (default fruits)")
    parser.add_argument("--features-output", dest="features", metavar="URI",
                        help="root for the raw features parquet (default .fruits/features); one folder per run")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    from fit.job import fit

    summary = fit(settings_from_args(args), args.images, args.eval_images, progress=not args.quiet)
    emit_summary(summary, args.json, human_summary(summary))
    return 0


def human_summary(s: dict[str, Any]) -> str:
    lines = [
        f"fitted {s['model_name']} v{s['model_version']} (@{s['alias']}) on {s['images']} images, "
        f"{s['classes']} classes, {s['skipped']} skipped, in {s['seconds']:.0f} s",
        f"  PCA k={s['pca_k']} keeps {s['explained_variance']:.1%} of the variance",
    ]
    if s["knn_accuracy"] is not None:
        lines.append(
            f"  1-NN accuracy on {s['eval_images']} held-out images: {s['knn_accuracy']:.3f} in PCA space, "
            f"{s['knn_accuracy_raw']:.3f} on raw features"
        )
    lines += [
        f"  featurizer: MobileNetV2 ({s['engine']}), weights sha256 {s['weights_sha256'][:12]}",
        f"  run {s['run_id']} in {s['tracking_uri']}",
        f"  plots:        {s['plots_uri']}",
        f"  raw features: {s['features_uri']}",
    ]
    return "\n".join(lines)
