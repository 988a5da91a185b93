"""Plots a person would rather look at than read. Each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_right(ax, entries: int) -> None:
    """One legend entry per class, beside the axes: a column per 24 classes."""
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, ncol=1 + entries // 24, frameon=False)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def class_colours(labels: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per class: 40 distinguishable colours from tab20 + tab20b."""
    plt = _pyplot()
    palette = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    return {label: palette[i % len(palette)] for i, label in enumerate(sorted(set(labels)))}


def explained_variance(ratios: Sequence[float], path: Path) -> Path:
    plt = _pyplot()
    ratios = np.asarray(ratios, dtype=float)
    cumulative = np.cumsum(ratios)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.bar(np.arange(1, len(ratios) + 1), ratios, color="#9ecae1", label="per component")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    twin = ax.twinx()
    twin.plot(np.arange(1, len(ratios) + 1), cumulative, color="#d94801", lw=2, label="cumulative")
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("cumulative")
    for mark in (0.8, 0.9):
        if cumulative[-1] >= mark:
            k = int(np.searchsorted(cumulative, mark)) + 1
            twin.axhline(mark, color="grey", lw=0.6, ls=":")
            twin.annotate(f"{mark:.0%} at k={k}", (k, mark), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_title(f"PCA on standardized MobileNetV2 features: {cumulative[-1]:.1%} with {len(ratios)} components")
    return _save(plt, fig, path)


def projection_2d(
    points: np.ndarray,
    labels: Sequence[str],
    path: Path,
    title: str,
    reference: np.ndarray | None = None,
    reference_labels: Sequence[str] | None = None,
) -> Path:
    """Scatter of the first two principal components, one colour per class.

    With `reference` (e.g. the fit images), those are drawn as faint large discs under the
    points, so a new image that lands in the wrong cloud stands out.
    """
    plt = _pyplot()
    all_labels = list(labels) + list(reference_labels or [])
    colours = class_colours(all_labels)
    fig, ax = plt.subplots(figsize=(11, 7.5), dpi=110)
    if reference is not None and reference_labels is not None:
        ref_labels = np.asarray(reference_labels, dtype=object)
        for label in sorted(set(reference_labels)):
            pts = reference[ref_labels == label]
            ax.scatter(pts[:, 0], pts[:, 1], s=90, alpha=0.18, color=colours[label], edgecolors="none")
    label_array = np.asarray(labels, dtype=object)
    for label in sorted(set(labels)):
        pts = points[label_array == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.9, color=colours[label], label=f"{label} ({len(pts)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    _legend_right(ax, len(set(labels)))
    return _save(plt, fig, path)


def confusion(
    truth: Sequence[str], predicted: Sequence[str], path: Path, title: str, predicted_by: str = "1-NN"
) -> Path:
    """Row-normalised confusion matrix: the diagonal is per-class recall; off-diagonal cells name the mix-ups."""
    plt = _pyplot()
    classes = sorted(set(truth) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)))
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(6.0, 0.28 * len(classes) + 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel(f"predicted ({predicted_by})")
    ax.set_ylabel("true class")
    for i, j in zip(*np.nonzero(matrix), strict=True):
        if i != j:
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6, color="#b30000")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the true class")
    return _save(plt, fig, path)


def novelty_scores(known: Sequence[float], novel: Sequence[float], threshold: float, path: Path, title: str) -> Path:
    """Histograms of the novelty score of held-out known images and of unseen-class ones, with the threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist(known, bins=bins, alpha=0.65, color="#3182bd", label=f"known classes ({len(known)})", density=True)
    if len(novel):
        ax.hist(novel, bins=bins, alpha=0.65, color="#e6550d", label=f"unseen classes ({len(novel)})", density=True)
    ax.axvline(threshold, color="black", lw=1.2, ls="--", label=f"is_novel above {threshold:.3f}")
    ax.set_xlabel("novelty score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _save(plt, fig, path)


def tsne_map(points: np.ndarray, labels: Sequence[str], unseen: Sequence[bool], path: Path, title: str) -> Path:
    """A 2-D map (t-SNE), one colour per known class; images of unseen classes as black markers, one shape each."""
    plt = _pyplot()
    labels = np.asarray(labels, dtype=object)
    unseen = np.asarray(unseen, dtype=bool)
    colours = class_colours(labels[~unseen])
    fig, ax = plt.subplots(figsize=(11, 7.5), dpi=110)
    for label in sorted(set(labels[~unseen])):
        pts = points[(labels == label) & ~unseen]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.8, color=colours[label], label=label)
    markers = "XPD*^vs<>"
    for i, label in enumerate(sorted(set(labels[unseen]))):
        pts = points[(labels == label) & unseen]
        ax.scatter(pts[:, 0], pts[:, 1], s=46, color="black", marker=markers[i % len(markers)], label=f"UNSEEN {label}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    _legend_right(ax, len(set(labels)))
    return _save(plt, fig, path)


def stream_report(batches: Sequence[dict], swaps: Sequence[dict], path: Path, title: str) -> Path:
    """The stream over time from its JSON progress lines: throughput and latency; with a classifier
    head, mean confidence, novel fraction and the predicted classes; hot model swaps as lines."""
    plt = _pyplot()
    start = min(b["committed_at"] for b in batches)
    t = np.array([(b["committed_at"] - start) / 60 for b in batches])
    has_head = any(b.get("predictions") for b in batches)
    fig, axes = plt.subplots(3 if has_head else 1, 1, figsize=(11, 9 if has_head else 3.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    rate = [b["files"] / b["seconds"] if b["seconds"] else 0 for b in batches]
    axes[0].plot(t, rate, ".-", color="tab:blue", label="files/s while busy")
    axes[0].set_ylabel("files/s")
    latency = axes[0].twinx()
    latency.plot(t, [b.get("latency_p50_s") or 0 for b in batches], ".", color="tab:orange", label="latency p50 (s)")
    latency.set_ylabel("upload->commit p50 (s)", color="tab:orange")
    axes[0].set_title(title)
    if has_head:
        with_head = [(x, b) for x, b in zip(t, batches, strict=True) if b.get("predictions")]
        xs = np.array([x for x, _ in with_head])
        axes[1].plot(xs, [b["mean_confidence"] for _, b in with_head], ".-", label="mean confidence")
        axes[1].plot(xs, [b["novel_fraction"] for _, b in with_head], ".-", color="tab:red", label="novel fraction")
        axes[1].set_ylim(0, 1.02)
        axes[1].legend(loc="lower left", fontsize=8)
        totals: dict[str, int] = {}
        for _, b in with_head:
            for label, n in b["predictions"].items():
                totals[label] = totals.get(label, 0) + n
        top = sorted(totals, key=totals.get, reverse=True)[:12]
        colours = class_colours(list(totals))
        shares = np.array(
            [
                [b["predictions"].get(label, 0) / max(1, sum(b["predictions"].values())) for _, b in with_head]
                for label in top
            ]
        )
        other = np.clip(1 - shares.sum(axis=0), 0, 1)  # every class beyond the top 12, together
        axes[2].stackplot(
            xs,
            np.vstack([shares, other]),
            labels=[*top, "other classes"],
            colors=[*(colours[label] for label in top), (0.85, 0.85, 0.85, 1.0)],
        )
        axes[2].set_ylabel("share of predictions")
        axes[2].set_ylim(0, 1)
        axes[2].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="top classes")
    for swap in swaps:
        for ax in axes:
            ax.axvline((swap["at"] - start) / 60, color="black", linestyle="--", linewidth=1)
        axes[0].annotate(
            f"v{swap['from_version']} -> v{swap['to_version']}",
            ((swap["at"] - start) / 60, 0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            rotation=90,
            va="bottom",
        )
    axes[-1].set_xlabel("minutes since the first batch")
    fig.set_dpi(110)
    return _save(plt, fig, path)
