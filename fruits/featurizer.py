"""MobileNetV2 featurizer: weights, identity, engines.

The featurizer's identity is the sha256 of its weights file plus the input size and the
preprocessing recipe (FeaturizerSpec). The fit job stores it on the registered model version;
the streaming job refuses a model whose identity differs from its own.

Two engines compute the same 1280 floats from the same preprocessed pixels:
- `keras`: the reference, tf.keras MobileNetV2(include_top=False, pooling="avg").
- `onnx`:  ONNX Runtime on a graph exported once from that Keras model with tf2onnx and
           cached by weights sha (about 2x faster on CPU). The default.

A Featurizer is a small driver-side handle whose `payload` (ONNX model bytes, or the Keras
weights bytes) is what Spark broadcasts; each Python worker builds its engine once from it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fruits import images
from fruits.errors import FruitsError

log = logging.getLogger(__name__)
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
ARCHITECTURE = "MobileNetV2(alpha=1.0, include_top=False, pooling=avg)"
FEATURE_DIM = 1280
INFERENCE_CHUNK = 32  # images per engine call: big enough for throughput, small enough for memory
TAG_PREFIX = "featurizer."

Engine = Callable[[np.ndarray], np.ndarray]  # float32 (n, 224, 224, 3) -> float32 (n, 1280)


@dataclass(frozen=True)
class FeaturizerSpec:
    """Everything that determines the numbers a featurizer produces (not how fast)."""

    weights_sha256: str
    architecture: str = ARCHITECTURE
    input_size: int = images.INPUT_SIZE
    preprocessing: str = images.PREPROCESSING
    feature_dim: int = FEATURE_DIM

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def as_tags(self) -> dict[str, str]:
        return {TAG_PREFIX + k: str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> FeaturizerSpec | None:
        values = {k[len(TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
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


@dataclass
class Featurizer:
    spec: FeaturizerSpec
    engine: str
    payload: bytes = field(repr=False)
    weights_path: Path
    _broadcasts: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, weights: str, engine: str, cache_dir: Path, keras_home: Path | None = None) -> Featurizer:
        """Resolve the weights, compute their identity and prepare the engine's payload."""
        weights_path = resolve_weights(weights, cache_dir, keras_home)
        sha = sha256_file(weights_path)
        spec = FeaturizerSpec(weights_sha256=sha)
        if engine == "onnx":
            payload = export_onnx(weights_path, sha, cache_dir).read_bytes()
        elif engine == "keras":
            payload = weights_path.read_bytes()
        else:
            raise FruitsError(f"unknown engine {engine!r}: choose onnx or keras")
        log.info("featurizer: MobileNetV2 %s engine, %s", engine, spec.describe())
        return cls(spec=spec, engine=engine, payload=payload, weights_path=weights_path)

    def make_engine(self, threads: int | None = None) -> Engine:
        return make_engine(self.engine, self.payload, threads)

    def broadcast(self, spark_context):
        """The payload as a Spark broadcast, sent once per SparkContext however many frames use it."""
        key = id(spark_context._jsc)
        if key not in self._broadcasts:
            self._broadcasts[key] = spark_context.broadcast(self.payload)
        return self._broadcasts[key]


# ----------------------------------------------------------------------------- weights
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(source: str, cache_dir: Path, keras_home: Path | None = None) -> Path:
    """'imagenet' (Keras' cache, downloaded the usual way if missing), a local path, or s3:// URI."""
    if source == "imagenet":
        home = keras_home or Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
        cached = home / "models" / WEIGHTS_FILE
        if cached.is_file():
            return cached
        return _keras_download(home)
    if source.startswith(("s3://", "s3a://")):
        return _download_s3(source, cache_dir / "weights")
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise FruitsError(f"weights file not found: {source}")
    return path


def _keras_download(home: Path) -> Path:
    import keras
    from keras.src.applications import mobilenet_v2

    try:
        fetched = keras.utils.get_file(
            WEIGHTS_FILE, mobilenet_v2.BASE_WEIGHT_PATH + WEIGHTS_FILE, cache_subdir="models", cache_dir=str(home)
        )
    except Exception as exc:  # no network, proxy, disk full: all the user can act on
        raise FruitsError(
            f"ImageNet weights are not in the Keras cache ({home / 'models'}) and could not be downloaded "
            f"({type(exc).__name__}); run `make setup` or pass --weights PATH"
        ) from None
    return Path(fetched)


def _download_s3(uri: str, target_dir: Path) -> Path:
    import boto3

    bucket, _, key = uri.split("://", 1)[1].partition("/")
    target = target_dir / Path(key).name
    if not target.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        try:
            boto3.client("s3").download_file(bucket, key, str(tmp))
        except Exception as exc:
            raise FruitsError(f"cannot download weights {uri}: {exc}") from None
        tmp.replace(target)
    return target


# ----------------------------------------------------------------------------- engines
def build_keras_model(weights_path: Path):
    import keras

    return keras.applications.MobileNetV2(
        weights=str(weights_path),
        include_top=False,
        pooling="avg",
        input_shape=(images.INPUT_SIZE, images.INPUT_SIZE, 3),
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
    size = images.INPUT_SIZE
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
    """Per input, in order: a 1280-float vector, or None with a rejection reason."""

    features: list[np.ndarray | None]
    reasons: list[str | None]
    details: list[str | None]


def featurize_contents(
    engine: Engine, contents: Sequence[bytes | None], max_pixels: int = 64_000_000, chunk: int = INFERENCE_CHUNK
) -> BatchResult:
    """Decode, preprocess and featurize a batch of image bytes. A bad image never fails the batch."""
    n = len(contents)
    result = BatchResult([None] * n, [None] * n, [None] * n)
    pending: list[int] = []
    pixels: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        out = engine(images.scale(np.stack(pixels)))
        for i, vector in zip(pending, out, strict=True):
            result.features[i] = vector.astype(np.float32, copy=False)
        pending.clear()
        pixels.clear()

    for i, data in enumerate(contents):
        try:
            pixels.append(images.to_array(images.load_rgb(data, max_pixels)))
            pending.append(i)
        except images.ImageRejected as exc:
            result.reasons[i], result.details[i] = exc.reason, exc.detail
        if len(pending) >= chunk:
            flush()
    flush()
    return result


# One engine per Python worker process and featurizer, whatever the number of tasks it runs.
_WORKER_ENGINES: dict[tuple[str, str], Engine] = {}


def worker_engine(kind: str, sha: str, payload_getter: Callable[[], bytes], threads: int | None) -> Engine:
    key = (kind, sha)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = make_engine(kind, payload_getter(), threads)
    return _WORKER_ENGINES[key]
