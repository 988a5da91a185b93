"""The known map (fruits.knownmap): do held-out uploads land next to their own class, and what does it cost?

Builds the map of the project's champion exactly as the fit does (fit.report.known_map on the
version's training features: at most 20 images a class, t-SNE), projects the held-out test/ images
(never seen by the fit) with the same version, places them, and measures the share of uploads whose
nearest known image on the 2-D map is of their own class:

- shipped: t-SNE map, an upload placed at the inverse-distance-weighted mean of its K=5 nearest
  known images in the projection (and K=1, K=10 for comparison);
- baseline, measured in the same run: a linear map, the projection's first two principal
  components (PC1, PC2), where an upload is placed exactly by its own coordinates;
- for reference: the nearest known image in the full projection (the thumbnails the app shows).

Also the time to build the map (what the fit adds) and to place one upload (what a micro-batch adds).

    .venv/bin/python bench/knownmap.py
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import DATA, ensure_model, machine, project_settings, save


def nearest_on_map(points: np.ndarray, known_xy: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None, :] - known_xy[None, :, :], axis=2).argmin(axis=1)


def main() -> int:
    settings = project_settings()
    ensure_model(settings)
    from fit.evaluation import labelled_features
    from fit.report import known_map
    from fruits import knownmap, registry
    from fruits.featurize import Featurizer
    from fruits.project import project
    from fruits.spark import get_spark

    spark = get_spark(settings, "bench-knownmap")
    resolved = registry.resolve(registry.connect(settings), f"models:/{settings.model_name}@{settings.alias}")
    model = registry.load_spark_model(resolved)
    training = spark.read.parquet(resolved.tags[registry.FEATURES_URI_TAG]).cache()
    print(f"{resolved.label}: {training.count()} training images; {machine()}", flush=True)

    started = time.perf_counter()
    known = known_map(training, model)
    build_s = time.perf_counter() - started
    held = project(labelled_features(spark, str(DATA / "test"), Featurizer.load(settings), settings), model)
    rows = held.filter("reason IS NULL").select("label", "pca").toPandas()
    pca, truth = np.stack(rows["pca"].to_numpy()), np.asarray(rows["label"].tolist(), dtype=object)
    labels = np.asarray(known.labels, dtype=object)

    results = {}
    neighbours, _ = known.place(pca)
    results["nearest known image in the projection (thumbnails)"] = float(np.mean(labels[neighbours[:, 0]] == truth))
    for k in (1, knownmap.NEIGHBOURS, 10):
        _, xy = known.place(pca, neighbours=k)
        note = " (shipped)" if k == knownmap.NEIGHBOURS else ""
        results[f"t-SNE map, placed by K={k} neighbours{note}"] = float(
            np.mean(labels[nearest_on_map(xy, known.xy)] == truth)
        )
    linear_known = known.pca[:, :2]
    results["linear map: PC1, PC2 (baseline)"] = float(
        np.mean(labels[nearest_on_map(pca[:, :2], linear_known)] == truth)
    )

    one = pca[:1]
    started = time.perf_counter()
    for _ in range(200):
        known.place(one)
    place_us = (time.perf_counter() - started) / 200 * 1e6
    baseline = results["linear map: PC1, PC2 (baseline)"]
    width = max(map(len, results))
    print(f"\n{len(truth)} held-out test/ images, {len(known)} known images ({len(set(known.labels))} classes)")
    print(f"{'share whose nearest on the map is of their class':{width}}  {'share':>6}  vs baseline")
    for name, share in results.items():
        print(f"{name:{width}}  {share:6.3f}  {share / baseline:5.2f}x")
    print(f"\nmap built in {build_s:.1f} s (Spark pick + projection + t-SNE); one upload placed in {place_us:.0f} µs")
    path = save(
        "knownmap",
        {
            "model": resolved.label,
            "held_out": len(truth),
            "known": len(known),
            "shares": results,
            "build_s": round(build_s, 2),
            "place_us": round(place_us, 1),
        },
    )
    print(f"saved {path}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
