"""The known map: a model version's training images, where an app upload falls among them. Spark-free.

Built at fit and refit time (fit.report.log_and_register) from at most `PER_CLASS` training images
of each class (picked by a hash of their path, so not only one fruit's neighbouring frames):

  labels   per known image, its class
  paths    per known image, its URI as Spark listed it ('file:/abs/path.jpg' locally, 's3a://B/key' on AWS)
  pca      (n, k) float32: the image's projection by THIS model version (what the stream computes for an upload)
  xy       (n, 2) float32: a 2-D map of the known fruits, scaled into [0, 1] on each axis

The map is a t-SNE of the projection (classes form separate islands; PC1/PC2 overlap them). t-SNE
cannot place new points, so an upload is placed from its `NEIGHBOURS` nearest known images in the
projection (Euclidean): at the mean of their map positions weighted by a Gaussian kernel whose width
follows the upload's own nearest distance (`PLACEMENT_BANDWIDTH`): on its nearest image when that one
is clearly nearest, between two islands when two classes are about as near. The position stays
inside [0, 1]. Measured on the 640 held-out test/ images (bench/knownmap.py, docs/results.md "The
known map"): the known image nearest to where an upload is drawn is of its class for 0.86 of them
(its nearest image in the projection: 0.90; a linear PC1/PC2 map: 0.42).

Stored with the model version: one parquet file, artifact `known_map/known.parquet` (`ARTIFACT_PATH`)
of the version's MLflow run, and the version tagged `known_map.artifact` = that path (`TAG`). A
version registered before the map existed has no tag: `load` returns None and its answers carry
no neighbours and no map position.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits.settings import Settings

PER_CLASS = 20  # known images per class: enough thumbnails to show, few enough to ship with every version
NEIGHBOURS = 5  # nearest known images per upload: shown as thumbnails, and what places it on the map
PLACEMENT_BANDWIDTH = 0.1  # kernel width, relative to the nearest squared distance (measured: bench/knownmap.py)
ARTIFACT_PATH = "known_map/known.parquet"
TAG = "known_map.artifact"
TSNE_ITERATIONS = 500  # a few hundred points settle well before scikit-learn's default 1000


def tsne_2d(points: np.ndarray, min_perplexity: float = 1.0) -> np.ndarray:
    """A seeded 2-D t-SNE of a few hundred points (the known map here, the fit's maps in fit.evaluation)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30, max(min_perplexity, (len(points) - 1) // 3)))
    # One OpenMP thread: Barnes-Hut's threads spin-wait, and on a busy machine (Spark next door) that made a
    # 400-point map take 27 s instead of 6 (measured here).
    with threadpool_limits(limits=1):
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=0, max_iter=TSNE_ITERATIONS
        ).fit_transform(points)


@dataclass(frozen=True, eq=False)
class KnownMap:
    labels: tuple[str, ...]
    paths: tuple[str, ...]
    pca: np.ndarray  # (n, k) float32
    xy: np.ndarray  # (n, 2) float32, in [0, 1]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(cls, pca: np.ndarray, labels: Sequence[str], paths: Sequence[str]) -> KnownMap:
        """t-SNE of the known images' projection, scaled into [0, 1] on each axis (deterministic: seeded)."""
        pca = np.asarray(pca, dtype=np.float32)
        if not (len(pca) == len(labels) == len(paths)) or len(pca) < 2:
            raise ValueError(
                f"a known map needs as many labels and paths as projections (at least 2), got "
                f"{len(pca)}, {len(labels)}, {len(paths)}"
            )
        embedded = tsne_2d(pca)
        low, span = embedded.min(axis=0), np.ptp(embedded, axis=0)
        xy = (embedded - low) / np.where(span > 0, span, 1.0)
        return cls(tuple(str(x) for x in labels), tuple(str(p) for p in paths), pca, xy.astype(np.float32))

    def place(self, pca: np.ndarray, neighbours: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
        """(m, k) projections -> ((m, K) indices of the K nearest known images, nearest first; (m, 2) map positions)."""
        queries = np.asarray(pca, dtype=np.float64).reshape(-1, self.pca.shape[1])
        known = self.pca.astype(np.float64)
        k = min(neighbours, len(self))
        squared = (
            np.einsum("ij,ij->i", queries, queries)[:, None]
            - 2.0 * queries @ known.T
            + np.einsum("ij,ij->i", known, known)[None, :]
        )
        nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
        rows = np.arange(len(queries))[:, None]
        nearest = nearest[rows, np.argsort(squared[rows, nearest], axis=1)]
        squared = np.maximum(squared[rows, nearest], 0.0)
        # A Gaussian kernel as wide as the upload's own nearest distance: in 300 dimensions distances bunch up
        # (the 5th nearest is typically 1.4x the nearest), so plain inverse distances weigh all five alike and
        # put the upload between islands. An upload identical to a known image sits on it.
        weights = np.exp(-(squared - squared[:, :1]) / (PLACEMENT_BANDWIDTH * squared[:, :1] + 1e-12))
        xy = (weights[:, :, None] * self.xy[nearest]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
        return nearest, xy.astype(np.float32)

    # ------------------------------------------------------------------ storage
    def write(self, path: Path) -> Path:
        """One parquet file: label, path, pca (float list), x, y."""
        table = pa.table(
            {
                "label": pa.array(self.labels, pa.string()),
                "path": pa.array(self.paths, pa.string()),
                "pca": pa.array(list(self.pca), pa.list_(pa.float32())),
                "x": pa.array(self.xy[:, 0], pa.float32()),
                "y": pa.array(self.xy[:, 1], pa.float32()),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    @classmethod
    def read(cls, path: Path | str) -> KnownMap:
        table = pq.read_table(path)
        pca = np.asarray(table.column("pca").combine_chunks().flatten(), dtype=np.float32).reshape(table.num_rows, -1)
        xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1).astype(np.float32)
        return cls(tuple(table.column("label").to_pylist()), tuple(table.column("path").to_pylist()), pca, xy)

    @classmethod
    def load(cls, settings: Settings, model_name: str, model_version: str) -> KnownMap | None:
        """The map logged with a registered version; None if the version has none (registered before maps)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        version = client.get_model_version(model_name, str(model_version))
        return cls.of_run(version.run_id, version.tags or {}, settings.tracking_uri)

    @classmethod
    def of_run(
        cls, run_id: str | None, version_tags: Mapping[str, str], tracking_uri: str | None = None
    ) -> KnownMap | None:
        """The map a version's tags point at, in its run's artifacts (tracking_uri None: MLflow's current one)."""
        artifact = version_tags.get(TAG)
        if not artifact or not run_id:
            return None
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix="known-map-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri
            )
            return cls.read(local)
