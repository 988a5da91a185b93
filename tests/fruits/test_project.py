"""fruits.project with the registered model of the real fit: the four head columns, row by row, and the
stream's numpy Projection giving the same numbers and names as Spark ML's transform."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import PipelineModel

from fit.evaluation import labelled_features
from fruits import registry
from fruits.exceptions import FruitsError
from fruits.featurize import apply_to_featurized
from fruits.project import Projection, project

KNOWN, UNSEEN = "Banana", "Pineapple Mini"  # a class of the fit; a fruit it never saw (extra_classes/)


@pytest.fixture(scope="module")
def scored(
    fitted, spark, settings, featurizer, data_dir: Path, tmp_path_factory
) -> tuple[list, registry.ResolvedModel]:
    images = tmp_path_factory.mktemp("project")
    shutil.copytree(data_dir / "test" / KNOWN, images / KNOWN)
    shutil.copytree(data_dir / "extra_classes" / UNSEEN, images / UNSEEN)
    (images / KNOWN / "broken.jpg").write_bytes(b"not a jpeg")
    resolved = registry.resolve(registry.connect(settings), "models:/fruits-pca@champion")
    rows = labelled_features(spark, str(images), featurizer, settings)
    out = project(rows, registry.load_spark_model(resolved), resolved.novelty_threshold).cache()
    return out, resolved


def test_the_head_columns_have_the_lake_types(scored) -> None:
    out, _ = scored
    types = dict(out.dtypes)
    assert (types["pca"], types["prediction"], types["confidence"], types["novelty_score"], types["is_novel"]) == (
        "array<float>",
        "string",
        "double",
        "double",
        "boolean",
    )


def test_rows_without_features_get_nulls(scored) -> None:
    out, _ = scored
    broken = [r for r in out.collect() if r.path.endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0].reason == "not_an_image: " + broken[0].detail
    assert (broken[0].pca, broken[0].prediction, broken[0].confidence, broken[0].novelty_score, broken[0].is_novel) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_known_fruits_are_named_and_unseen_ones_score_as_novel(scored, fitted) -> None:
    out, resolved = scored
    rows = [r for r in out.collect() if r.features is not None]
    assert len(rows) == 30 and resolved.novelty_threshold == pytest.approx(fitted["novelty_threshold"])
    classes = set(registry_classes(fitted))
    for r in rows:
        assert r.prediction in classes and 1 / 32 <= r.confidence <= 1.0
        assert r.novelty_score == pytest.approx(1.0 - r.confidence, abs=1e-12)
        assert r.is_novel == (r.novelty_score > resolved.novelty_threshold)
    known = [r for r in rows if r.label == KNOWN]
    unseen = [r for r in rows if r.label == UNSEEN]
    assert (len(known), len(unseen)) == (20, 10)
    assert sum(r.prediction == KNOWN for r in known) >= 19  # held-out bananas (test/)
    assert sum(r.is_novel for r in known) <= 2
    mean = lambda rs: sum(r.novelty_score for r in rs) / len(rs)  # noqa: E731
    assert mean(unseen) > 5 * mean(known)
    assert sum(r.is_novel for r in unseen) >= 3, [round(r.novelty_score, 3) for r in unseen]


def test_without_a_threshold_or_a_head_the_flags_are_null(scored, spark, settings) -> None:
    out, resolved = scored
    model = registry.load_spark_model(resolved)
    rows = out.select("path", "label", "features")
    no_threshold = project(rows, model).collect()
    assert {r.is_novel for r in no_threshold} == {None}
    assert {r.prediction is None for r in no_threshold} == {False, True}  # named, except the broken file
    projection_only = PipelineModel(stages=model.stages[:2])  # scaler + PCA: a model from before the head
    old = project(rows, projection_only, resolved.novelty_threshold)
    assert dict(old.dtypes)["confidence"] == "double"
    got = old.collect()
    assert {(r.prediction, r.confidence, r.novelty_score, r.is_novel) for r in got} == {(None, None, None, None)}
    assert sum(r.pca is not None for r in got) == 30


def test_the_streams_projection_agrees_with_spark_ml(scored) -> None:
    out, resolved = scored
    model = registry.load_spark_model(resolved)
    rows = sorted(out.collect(), key=lambda r: r.path)
    features = [np.asarray(r.features, np.float32) if r.features is not None else None for r in rows]
    got = apply_to_featurized(Projection.of(model, resolved.novelty_threshold).apply, features)
    assert len(got) == len(rows) == 31
    for r, g in zip(rows, got.to_dict("records"), strict=True):
        if r.features is None:  # the broken file: nulls, as Spark ML's rows
            assert (g["pca"], g["prediction"], g["confidence"], g["is_novel"]) == (None, None, None, None)
            continue
        assert g["pca"].dtype == np.float32 and np.allclose(g["pca"], r.pca, rtol=1e-5, atol=1e-4)
        assert (g["prediction"], g["is_novel"]) == (r.prediction, r.is_novel)
        assert g["confidence"] == pytest.approx(r.confidence, abs=1e-9)
        assert g["novelty_score"] == pytest.approx(r.novelty_score, abs=1e-9)
    headless = Projection.of(PipelineModel(stages=model.stages[:2])).apply(
        np.stack([f for f in features if f is not None])
    )
    assert headless["prediction"].isna().all() and len(headless["pca"][0]) == len(rows[0].pca or rows[1].pca)


def test_the_stream_refuses_a_model_whose_stages_it_does_not_know(scored) -> None:
    _, resolved = scored
    stages = registry.load_spark_model(resolved).stages
    for odd in ([stages[1], stages[0]], [stages[0], stages[1], stages[2]], [stages[0]]):
        with pytest.raises(FruitsError, match="the stream applies StandardScaler -> PCA"):
            Projection.of(PipelineModel(stages=odd))


def registry_classes(fitted: dict) -> list[str]:
    import pyarrow.parquet as pq

    return sorted(set(pq.read_table(fitted["features_uri"], columns=["label"]).column("label").to_pylist()))
