"""Fit StandardScaler + PCA + a classifier on MobileNetV2 features of labelled images; register it in MLflow.

Images are read as <URI>/<class name>/<file>.jpg from a directory, file://, s3a:// or s3:// URI.
Every image is featurized exactly once (the features are cached for the MLlib stages);
unreadable files are skipped and reported. The model is one Spark PipelineModel: scaler -> PCA
-> multinomial logistic regression -> class names. With --eval-images the run measures it on
held-out images (accuracy, macro-F1, confusion matrix) and calibrates the novelty threshold
(is_novel) on them; with --novelty-images (classes the model is not fitted on) it measures how
well the novelty score flags unseen fruits (AUROC) and draws t-SNE maps with them marked.
The run logs params, metrics, plots, the featurizer identity and the model; the model is
registered and its alias (--alias) points at the new version. Raw features are
written as parquet so `fruits refit` can refit without MobileNet.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import add_job_flags, add_model_flags, default, emit_summary, settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="URI", help="labelled images: URI/<class>/<file>.jpg")
    parser.add_argument(
        "--eval-images",
        metavar="URI",
        help="held-out labelled images of the same classes: accuracy, macro-F1, novelty threshold",
    )
    parser.add_argument(
        "--novelty-images",
        metavar="URI",
        help="labelled images of OTHER classes (unseen fruits): novelty AUROC and t-SNE marks; "
        "needs --eval-images (default: none)",
    )
    parser.add_argument("--pca-k", type=int, metavar="K", help=f"principal components (default {default('pca_k')})")
    add_model_flags(parser, "alias moved to the new version")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    from fit.job import fit

    summary = fit(
        settings_from_args(args),
        args.images,
        args.eval_images,
        novelty_uri=args.novelty_images,
        progress=not args.quiet,
    )
    emit_summary(summary, args.json, human_summary(summary))
    return 0


def human_summary(s: dict[str, Any]) -> str:
    lines = [
        f"fitted {s['model_name']} v{s['model_version']} (@{s['alias']}) on {s['images']} images, "
        f"{s['classes']} classes, {s['skipped']} skipped, in {s['seconds']:.0f} s",
        f"  PCA k={s['pca_k']} keeps {s['explained_variance']:.1%} of the variance; head: {s['head']}",
    ]
    if s["classifier_accuracy"] is not None:
        lines.append(
            f"  classifier on {s['eval_images']} held-out images: accuracy {s['classifier_accuracy']:.3f}, "
            f"macro-F1 {s['macro_f1']:.3f} (1-NN in PCA space: {s['knn_accuracy']:.3f})"
        )
        lines.append(
            f"  is_novel above a novelty score of {s['novelty_threshold']:.3f} "
            f"({s['novelty_false_alarms']:.1%} of held-out known images flagged)"
        )
    if s["novelty_auroc"] is not None:
        lines.append(
            f"  unseen fruits ({s['novelty_images']} images, {len(s['novelty_classes'])} classes): "
            f"AUROC {s['novelty_auroc']:.3f}, {s['novelty_detected']:.0%} flagged"
        )
    lines += [
        f"  featurizer: MobileNetV2 ({s['engine']}), weights sha256 {s['weights_sha256'][:12]}; LAPACK: {s['lapack']}",
        f"  run {s['run_id']} in {s['tracking_uri']}",
        f"  plots:        {s['plots_uri']}",
        f"  raw features: {s['features_uri']}",
    ]
    return "\n".join(lines)
