"""Featurization throughput: pure Keras vs pure ONNX Runtime vs Spark through the pandas UDF.

Same real images (subset/, 320 files) for every engine, in one run. Each figure is images/s
from bytes in memory (or files, for Spark) to 1280-float features, decode and resize included.
The baseline is pure ONNX Runtime using every core in one process.

    .venv/bin/python bench/featurize.py [--images DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from common import DATA, best_of, image_files, machine, project_settings, save, table

from fruits import decode, source
from fruits.featurize import Featurizer, featurize, featurize_batch, make_engine
from fruits.settings import Settings
from fruits.spark import get_spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DATA / "subset"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = project_settings()
    featurizer = Featurizer.load(settings.replace(weights="imagenet", engine="onnx"))
    files = image_files(Path(args.images))
    contents = [f.read_bytes() for f in files]
    n = len(contents)
    print(f"{n} images from {args.images}; {machine()}")

    def run_engine(engine) -> int:
        result = featurize_batch(engine, contents, settings.max_image_pixels)
        assert all(f is not None for f in result.features)
        return n

    def preprocess_only() -> int:
        for data in contents:
            decode.scale(decode.decode(data, settings.max_image_pixels))
        return n

    ort_all = make_engine("onnx", featurizer.payload, None)
    ort_one = make_engine("onnx", featurizer.payload, 1)
    keras_all = make_engine("keras", featurizer.weights_path.read_bytes(), None)
    for engine in (ort_all, ort_one, keras_all):  # warm up: first calls allocate
        run_engine(engine)

    ort_rate, ort_runs = best_of(args.repeats, lambda: run_engine(ort_all))
    ort1_rate, _ = best_of(args.repeats, lambda: run_engine(ort_one))
    keras_rate, _ = best_of(args.repeats, lambda: run_engine(keras_all))
    prep_rate, _ = best_of(args.repeats, preprocess_only)
    spark_rate = spark_udf_rate(settings, featurizer, args.images, n, args.repeats)

    rows = [
        ("pure ONNX Runtime (all cores)", ort_rate, "baseline"),
        ("pure ONNX Runtime (1 thread)", ort1_rate, "what one Spark Python worker runs"),
        ("pure Keras (all cores)", keras_rate, "reference engine"),
        ("Spark pandas UDF (onnx, local[*])", spark_rate, "files -> features, one Python worker per core"),
        ("decode + resize + scale only", prep_rate, "CPU work before the model, per image"),
    ]
    print(table(f"featurization, {n} images", rows, ort_rate))
    print(f"Spark / pure ORT = {spark_rate / ort_rate:.2f}; ORT / Keras = {ort_rate / keras_rate:.2f}")
    path = save(
        "featurize",
        {
            "images": n,
            "images_per_second": {r[0]: round(r[1], 1) for r in rows},
            "spark_over_pure_ort": round(spark_rate / ort_rate, 3),
            "ort_over_keras": round(ort_rate / keras_rate, 3),
            "ort_runs": ort_runs,
        },
    )
    print(f"saved {path}")


def spark_udf_rate(settings: Settings, featurizer: Featurizer, uri: str, n: int, repeats: int) -> float:
    spark = get_spark(settings, "bench-featurize")
    frame = featurize(source.read_images(spark, uri), featurizer, settings.max_image_pixels).drop("content")

    def once() -> int:
        frame.write.format("noop").mode("overwrite").save()  # runs the whole plan, writes nothing
        return n

    once()  # start the Python workers and build their engines
    rate, _ = best_of(repeats, once)
    spark.stop()
    return rate


if __name__ == "__main__":
    main()
