"""Featurize: decoded pixels -> 1280 MobileNetV2 features, as plain functions and as a Spark pandas UDF.

The featurizer's identity (FeaturizerSpec) is the sha256 of its weights plus the input size
and the preprocessing recipe. The fit stores it on the registered model version; whatever
applies a registered model checks it with `check_compatible` before producing a single row.

Two engines compute the same 1280 floats from the same pixels:
- `keras`: the reference, tf.keras MobileNetV2(include_top=False, pooling="avg").
- `onnx`:  ONNX Runtime on a graph exported once from that Keras model with tf2onnx and
           cached by weights sha (about 2x faster on CPU). The default.

A Featurizer is a small driver-side handle whose `payload` (ONNX model bytes, or the Keras
weights bytes) is what Spark broadcasts; each Python worker builds its engine once from it.
TensorFlow and tf2onnx are imported only where they are needed (the `keras` extra): the
workers of the default engine never load them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import Accumulator, SparkContext
from pyspark.broadcast import Broadcast
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fruits import decode, weights
from fruits.exceptions import FruitsError
from fruits.reasons import exception_detail
from fruits.settings import Settings

log = logging.getLogger(__name__)
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHITECTURE = "MobileNetV2(alpha=1.0, include_top=False, pooling=avg)"
FEATURE_DIM = 1280
# Images per engine call. ONNX Runtime's arena keeps the largest activations it has seen (a 112x112x96 float
# tensor per image in MobileNetV2's second block): 8 images took a worker's engine from ~380 to ~95 MiB
# against 32, at the same single-thread throughput (docs/results.md, "Fit end to end").
INFERENCE_CHUNK = 8
WORKER_THREADS = 1  # one intra-op thread per Python worker: Spark runs one worker per core
TAG_PREFIX = "featurizer."
# What the UDF adds to a frame: the features, or why there are none.
FEATURES_SCHEMA = "features array<float>, reason string, detail string"

Engine = Callable[[np.ndarray], np.ndarray]  # float32 (n, 224, 224, 3) -> float32 (n, 1280)


# ----------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class FeaturizerSpec:
    """Everything that determines the numbers a featurizer produces (not how fast)."""

    weights_sha256: str
    architecture: str = ARCHITECTURE
    input_size: int = decode.INPUT_SIZE
    preprocessing: str = decode.PREPROCESSING
    feature_dim: int = FEATURE_DIM

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def as_tags(self) -> dict[str, str]:
        return {TAG_PREFIX + k: str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> FeaturizerSpec | None:
        values = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        if "weights_sha256" not in values:
            return None
        known = {f for f in cls.__dataclass_fields__}
        spec = {k: v for k, v in values.items() if k in known}
        for name in ("input_size", "feature_dim"):
            if name in spec:
                spec[name] = int(spec[name])
        return cls(**spec)

    def differences(self, other: FeaturizerSpec) -> list[str]:
        return [f"{k}: {v} != {other.as_dict()[k]}" for k, v in self.as_dict().items() if other.as_dict()[k] != v]

    def describe(self) -> str:
        return f"weights sha256 {self.weights_sha256[:12]}, {self.input_size}px, preprocessing {self.preprocessing}"


def check_compatible(model_spec: FeaturizerSpec | None, mine: FeaturizerSpec, model: str) -> None:
    """The one rule: a model is applied only to features of the featurizer it was fitted with.

    `model_spec` comes from the registered version's tags (None: not registered by `fruits fit`);
    `model` names it in the error ("fruits-pca v3"). Raises FruitsError naming every difference.
    """
    if model_spec is None:
        raise FruitsError(
            f"model {model} has no featurizer tags (not registered by `fruits fit`): "
            "refusing to guess which featurizer it was fitted with"
        )
    if model_spec != mine:
        raise FruitsError(
            f"featurizer mismatch: model {model} was fitted with a different featurizer "
            f"(model != this one: {'; '.join(model_spec.differences(mine))}); "
            "refit the model or pass the matching --weights"
        )


# ----------------------------------------------------------------------------- the handle
@dataclass
class Featurizer:
    spec: FeaturizerSpec
    engine: str
    payload: bytes = field(repr=False)
    weights_path: Path
    _broadcasts: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, settings: Settings) -> Featurizer:
        """Resolve the settings' weights, compute their identity and prepare the engine's payload."""
        weights_path = weights.resolve(settings)
        spec = FeaturizerSpec(weights_sha256=weights.sha256_file(weights_path))
        if settings.engine == "onnx":
            payload = export_onnx(weights_path, spec.weights_sha256, settings.cache_dir).read_bytes()
        elif settings.engine == "keras":
            payload = weights_path.read_bytes()
        else:
            raise FruitsError(f"unknown engine {settings.engine!r}: choose onnx or keras")
        log.info("featurizer: MobileNetV2 %s engine, %s", settings.engine, spec.describe())
        return cls(spec=spec, engine=settings.engine, payload=payload, weights_path=weights_path)

    def make_engine(self, threads: int | None = None) -> Engine:
        return make_engine(self.engine, self.payload, threads)

    def broadcast(self, spark_context: SparkContext):
        """The payload as a Spark broadcast, sent once per SparkContext however many frames use it."""
        key = id(spark_context._jsc)
        if key not in self._broadcasts:
            self._broadcasts[key] = spark_context.broadcast(self.payload)
        return self._broadcasts[key]


# ----------------------------------------------------------------------------- engines
def build_keras_model(weights_path: Path):
    import keras

    return keras.applications.MobileNetV2(
        weights=str(weights_path),
        include_top=False,
        pooling="avg",
        input_shape=(decode.INPUT_SIZE, decode.INPUT_SIZE, 3),
    )


def export_onnx(weights_path: Path, sha: str, cache_dir: Path) -> Path:
    """Export the Keras model to ONNX once per weights sha; later calls reuse the file."""
    target = cache_dir / "onnx" / f"mobilenet_v2_{sha[:16]}.onnx"
    if target.is_file():
        return target
    log.info("exporting MobileNetV2 to ONNX (once per weights file) -> %s", target)
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)

    model = build_keras_model(weights_path)
    size = decode.INPUT_SIZE
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    payload = proto.SerializeToString()
    # Never cache a graph that disagrees with its source model.
    probe = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    diff = float(np.abs(make_engine("onnx", payload, None)(probe) - model.predict_on_batch(probe)).max())
    if diff > 1e-3:
        raise FruitsError(f"ONNX export disagrees with Keras (max abs diff {diff:.2e}); keep --engine keras")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(payload)
    Path(tmp.name).replace(target)
    return target


def make_engine(kind: str, payload: bytes, threads: int | None) -> Engine:
    if kind == "onnx":
        return _onnx_engine(payload, threads)
    if kind == "keras":
        return _keras_engine(payload, threads)
    raise FruitsError(f"unknown engine {kind!r}")


def _onnx_engine(model: bytes, threads: int | None) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return run


def _keras_engine(weights: bytes, threads: int | None) -> Engine:
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process: keep its setting
            pass
    with tempfile.NamedTemporaryFile(suffix=".h5", delete=False) as tmp:
        tmp.write(weights)
    try:
        model = build_keras_model(Path(tmp.name))
    finally:
        os.unlink(tmp.name)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(batch), dtype=np.float32)

    return run


# ----------------------------------------------------------------------------- batches
@dataclass
class BatchResult:
    """Per input, in order: a 1280-float vector, or None with the reason (and detail) why not."""

    features: list[np.ndarray | None]
    reasons: list[str | None]
    details: list[str | None]


def featurize_batch(
    engine: Engine, contents: Sequence[bytes | None], max_pixels: int, chunk: int = INFERENCE_CHUNK
) -> BatchResult:
    """Decode and featurize a batch of image bytes. Never raises for an input: whatever goes wrong with
    one upload (decoding it, or the engine on it) is its reason and detail, and the others get features."""
    n = len(contents)
    result = BatchResult([None] * n, [None] * n, [None] * n)
    pending: list[int] = []
    pixels: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            _infer(engine, pending, pixels, result)
        pending.clear()
        pixels.clear()

    for i, data in enumerate(contents):
        try:
            pixels.append(decode.decode(data, max_pixels))
            pending.append(i)
        except decode.Rejected as exc:
            result.reasons[i], result.details[i] = exc.reason, exc.detail
        if len(pending) >= chunk:
            flush()
    flush()
    return result


def _infer(engine: Engine, indices: list[int], pixels: list[np.ndarray], result: BatchResult) -> None:
    """Features of decoded images into `result`. When the engine fails on a chunk, each of its images is
    tried alone, so the error lands on the image it fails on and on no other."""
    try:
        features = np.asarray(engine(decode.scale(np.stack(pixels))), dtype=np.float32)
        if features.shape != (len(pixels), FEATURE_DIM):
            raise ValueError(f"the engine returned an array of shape {features.shape} for {len(pixels)} images")
        if not np.isfinite(features).all():
            raise ValueError("the engine returned non-finite features")
    except Exception as exc:  # an engine failure is the image's error, never the task's
        if len(indices) == 1:
            result.reasons[indices[0]], result.details[indices[0]] = "engine_failed", exception_detail(exc)
            return
        log.warning("the engine failed on %d images (%s): trying each alone", len(indices), exception_detail(exc))
        for i, one in zip(indices, pixels, strict=True):
            _infer(engine, [i], [one], result)
        return
    for i, vector in zip(indices, features, strict=True):
        result.features[i] = vector


# One engine per Python worker process and featurizer, whatever the number of tasks it runs.
_WORKER_ENGINES: dict[tuple[str, str], Engine] = {}


def worker_engine(kind: str, sha: str, payload_getter: Callable[[], bytes], threads: int | None) -> Engine:
    key = (kind, sha)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = make_engine(kind, payload_getter(), threads)
    return _WORKER_ENGINES[key]


@dataclass(frozen=True)
class ProjectionInUdf:
    """The projection step inside the featurizing UDF, broadcast to the Python workers (once per worker
    process): an object whose `apply(float32 (n, FEATURE_DIM)) -> pandas frame of n rows`
    (fruits.project.Projection: the registered model's scaler, PCA and classifier head), and the columns
    it adds (DDL)."""

    broadcast: Broadcast
    schema: str


# ----------------------------------------------------------------------------- in Spark
def featurize(
    df: DataFrame,
    featurizer: Featurizer,
    max_pixels: int,
    content: str = "content",
    counter: Accumulator | None = None,
    projection: ProjectionInUdf | None = None,
) -> DataFrame:
    """Add `features` (1280 float32; null when rejected), `reason` and `detail` (null when featurized),
    and the columns of `projection`, applied to the features in the same UDF (null for rejected rows).

    Decoding happens inside this UDF, next to the model, so the 150 KB of pixels per image never
    cross from Python to the JVM and back. A pandas *iterator* UDF: each Python worker builds its
    engine once from the broadcast payload and keeps it for every later batch and task.
    `counter`, if given, adds the number of images decoded (it shows whether a plan featurizes
    an image more than once).
    """
    payload = featurizer.broadcast(df.sparkSession.sparkContext)
    kind, sha = featurizer.engine, featurizer.spec.weights_sha256
    schema = FEATURES_SCHEMA if projection is None else f"{FEATURES_SCHEMA}, {projection.schema}"
    projection_broadcast = projection.broadcast if projection is not None else None

    @F.pandas_udf(schema)
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        engine = worker_engine(kind, sha, lambda: payload.value, WORKER_THREADS)
        project = projection_broadcast.value.apply if projection_broadcast is not None else None
        for contents in batches:
            result = featurize_batch(engine, contents.tolist(), max_pixels)
            if counter is not None:
                counter.add(len(contents))
            out = pd.DataFrame({"features": result.features, "reason": result.reasons, "detail": result.details})
            if project is not None:
                out = pd.concat([out, apply_to_featurized(project, result.features)], axis=1)
            yield out

    # Non-deterministic so the optimizer never evaluates the UDF once per struct field.
    featurized: Column = featurize_udf.asNondeterministic()(F.col(content))
    return df.withColumn("_featurized", featurized).select(*df.columns, "_featurized.*")


def apply_to_featurized(apply: Callable[[np.ndarray], pd.DataFrame], features: list[np.ndarray | None]) -> pd.DataFrame:
    """`apply` on the rows that have features; rows without get nulls in its columns, in place."""
    done = [i for i, f in enumerate(features) if f is not None]
    if not done:
        probe = apply(np.zeros((1, FEATURE_DIM), np.float32))  # only for the column names
        return pd.DataFrame({c: [None] * len(features) for c in probe.columns})
    applied = apply(np.stack([features[i] for i in done]))
    applied.index = done
    return applied.reindex(range(len(features))).astype(object).where(lambda f: f.notna(), None)
