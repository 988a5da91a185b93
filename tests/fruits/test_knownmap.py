"""fruits.knownmap: placing projections among known images, and the map the real fit logged with its version."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fruits import registry
from fruits.knownmap import NEIGHBOURS, PER_CLASS, TAG, KnownMap
from support import champion_copy, copy_classes


def clusters(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three well-separated Gaussian clusters in 10-D, 20 points each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, 10))
    points = np.concatenate([c + rng.normal(0, 1, (20, 10)) for c in centres]).astype(np.float32)
    return points, [name for name in ("a", "b", "c") for _ in range(20)]


def test_place_finds_the_nearest_known_images_and_sits_on_an_identical_one() -> None:
    known = KnownMap(
        labels=("x", "x", "y", "y", "z", "z"),
        paths=tuple("pqrstu"),
        pca=np.array([[0, 0], [1, 0], [10, 10], [11, 10], [-9, 5], [-8, 5]], dtype=np.float32),
        xy=np.array([[0.1, 0.1], [0.2, 0.1], [0.9, 0.9], [1, 0.9], [0, 0.6], [0.05, 0.6]], dtype=np.float32),
    )
    neighbours, xy = known.place(np.array([[0.9, 0.0], [10, 10], [-8.9, 5], [-300, 0]], dtype=np.float32))
    assert neighbours.shape == (4, NEIGHBOURS) and xy.shape == (4, 2)
    assert list(neighbours[0][:2]) == [1, 0] and set(neighbours[1][:2]) == {2, 3} and list(neighbours[2][:2]) == [4, 5]
    assert xy[1] == pytest.approx([0.9, 0.9], abs=1e-6)  # identical to known image 2: on it
    # (0.9, 0) is 0.1 from image 1 and 0.9 from image 0: clearly nearest to 1, so on it; the same for (-8.9, 5).
    assert xy[0] == pytest.approx([0.2, 0.1], abs=1e-6) and xy[2] == pytest.approx([0.0, 0.6], abs=1e-6)
    # Far from everything (an unknown fruit), all five are about as near (291 to 310): between the islands, on
    # none of them, nearest to the nearest class's island.
    on_map = np.linalg.norm(known.xy - xy[3], axis=1)
    assert on_map.min() > 0.1 and known.labels[int(on_map.argmin())] == "z"
    assert ((xy >= 0) & (xy <= 1)).all()  # a weighted mean of map points stays on the map


def test_build_separates_classes_deterministically_and_round_trips(tmp_path: Path) -> None:
    points, labels = clusters()
    built = KnownMap.build(points, labels, [f"file:/img/{i}.jpg" for i in range(len(labels))])
    assert built.xy.dtype == np.float32 and built.xy.min() == 0.0 and built.xy.max() == 1.0
    # On the map, every point's nearest other point is of its own class.
    d = np.linalg.norm(built.xy[:, None] - built.xy[None], axis=2) + np.eye(len(labels)) * 9
    assert all(labels[j] == labels[i] for i, j in enumerate(d.argmin(axis=1)))
    again = KnownMap.build(points, labels, built.paths)
    assert np.array_equal(again.xy, built.xy)
    read = KnownMap.read(built.write(tmp_path / "m" / "known.parquet"))
    assert (read.labels, read.paths) == (built.labels, built.paths)
    assert np.array_equal(read.pca, built.pca) and np.array_equal(read.xy, built.xy)


@pytest.fixture(scope="module")
def held_out(fitted, spark, settings, featurizer, data_dir: Path, tmp_path_factory) -> tuple[np.ndarray, list[str]]:
    """5 test/ images of each class (never seen by the fit), projected by the registered version."""
    from fit.evaluation import labelled_features
    from fruits.project import project

    images = tmp_path_factory.mktemp("held-out")
    classes = sorted(p.name for p in (data_dir / "test").iterdir())
    copy_classes(data_dir, images, classes, split="test", per_class=5)
    resolved = registry.resolve(registry.connect(settings), "models:/fruits-pca@champion")
    rows = project(labelled_features(spark, str(images), featurizer, settings), registry.load_spark_model(resolved))
    out = rows.select("label", "pca").toPandas()
    return np.stack(out["pca"].to_numpy()), out["label"].tolist()


def test_the_fit_logs_a_map_that_places_held_out_images_near_their_class(
    fitted, settings, data_dir: Path, held_out
) -> None:
    known = KnownMap.load(settings, "fruits-pca", fitted["model_version"])
    assert known is not None
    # subset/ has 10 images per class, under the cap: all 320 are known images.
    assert Counter(known.labels) == {c: 10 for c in fitted_classes(data_dir)} and PER_CLASS >= 10
    assert all(
        Path(p.removeprefix("file:")).parent.name == label for p, label in zip(known.paths, known.labels, strict=True)
    )
    assert all(Path(p.removeprefix("file:")).is_file() for p in known.paths)
    assert known.pca.shape == (320, 300) and known.xy.shape == (320, 2)

    pca, truth = held_out
    neighbours, xy = known.place(pca)
    labels = np.asarray(known.labels, dtype=object)
    own_neighbour = float(np.mean(labels[neighbours[:, 0]] == np.asarray(truth, dtype=object)))
    assert own_neighbour >= 0.8
    # On the map: the known image nearest to where the upload is drawn is of its own class.
    nearest_on_map = np.linalg.norm(xy[:, None] - known.xy[None], axis=2).argmin(axis=1)
    assert float(np.mean(labels[nearest_on_map] == np.asarray(truth, dtype=object))) >= 0.75  # 0.86 on all test/


def fitted_classes(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "subset").iterdir() if p.is_dir())


def test_a_version_without_a_map_loads_none(fitted, settings) -> None:
    from streaming.answers import load_known_map

    version = champion_copy(settings, fitted, "fruits-no-map")
    client = registry.connect(settings)
    client.delete_model_version_tag("fruits-no-map", version, TAG)  # as a version registered before maps
    assert KnownMap.load(settings, "fruits-no-map", version) is None
    assert load_known_map(registry.resolve(client, "models:/fruits-no-map@champion")) is None
