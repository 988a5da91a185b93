"""The featurizer: identity from the real weights, and the two engines agree on real images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits import decode, weights
from fruits import featurize as fz
from fruits.exceptions import FruitsError
from support import SHARED_WEIGHTS_SHA256

MAX_PIXELS = 64_000_000


def test_imagenet_weights_resolve_offline_from_the_keras_cache(settings, keras_home: Path) -> None:
    path = weights.resolve(settings)
    assert path.parent == keras_home / "models" and path.name == weights.WEIGHTS_FILE
    assert weights.sha256_file(path) == SHARED_WEIGHTS_SHA256


def test_identity_is_the_weights_sha_and_round_trips_through_tags(featurizer) -> None:
    spec = featurizer.spec
    assert spec.weights_sha256 == SHARED_WEIGHTS_SHA256
    assert (spec.input_size, spec.feature_dim, spec.preprocessing) == (224, 1280, decode.PREPROCESSING)
    assert fz.FeaturizerSpec.from_tags(spec.as_tags() | {"unrelated": "x"}) == spec
    other = fz.FeaturizerSpec(weights_sha256="0" * 64)
    assert other.differences(spec) == [f"weights_sha256: {'0' * 64} != {SHARED_WEIGHTS_SHA256}"]


def test_missing_weights_file_is_a_clear_error(settings, tmp_path: Path) -> None:
    with pytest.raises(FruitsError, match="weights file not found"):
        weights.resolve(settings.replace(weights=str(tmp_path / "nope.h5")))


def test_onnx_export_is_cached_by_weights_sha(featurizer, settings) -> None:
    cached = list((settings.cache_dir / "onnx").glob("*.onnx"))
    assert [p.name for p in cached] == [f"mobilenet_v2_{SHARED_WEIGHTS_SHA256[:16]}.onnx"]
    assert cached[0].read_bytes() == featurizer.payload


def test_keras_and_onnx_engines_agree_on_real_images(featurizer, data_dir: Path) -> None:
    files = sorted((data_dir / "subset").glob("*/*.jpg"))[::20][:16]  # 16 images across classes
    contents = [f.read_bytes() for f in files]
    keras_engine = fz.make_engine("keras", featurizer.weights_path.read_bytes(), threads=2)
    reference = fz.featurize_batch(keras_engine, contents, MAX_PIXELS)
    fast = fz.featurize_batch(featurizer.make_engine(threads=2), contents, MAX_PIXELS)
    ref = np.stack(reference.features)
    got = np.stack(fast.features)
    assert ref.shape == (16, 1280) and ref.dtype == np.float32
    assert float(np.abs(ref - got).max()) < 1e-4
    assert float(ref.std()) > 0.1  # real activations, not a constant


def test_a_bad_image_does_not_fail_its_batch(featurizer, data_dir: Path) -> None:
    good = sorted((data_dir / "subset" / "Kumquats").glob("*.jpg"))[:3]
    contents = [good[0].read_bytes(), b"", good[1].read_bytes(), b"not an image", good[2].read_bytes()]
    result = fz.featurize_batch(featurizer.make_engine(), contents, MAX_PIXELS, chunk=2)
    assert [f is not None for f in result.features] == [True, False, True, False, True]
    assert result.reasons == [None, "empty", None, "not_an_image", None]
    alone = fz.featurize_batch(featurizer.make_engine(), [good[1].read_bytes()], MAX_PIXELS).features[0]
    np.testing.assert_allclose(result.features[2], alone, atol=1e-5)  # batching does not change numbers


def test_one_compatibility_rule_names_every_difference(featurizer) -> None:
    mine = featurizer.spec
    fz.check_compatible(mine, mine, "fruits-pca v1")  # the same featurizer: accepted
    other = fz.FeaturizerSpec(weights_sha256="0" * 64, preprocessing="something-else/v9")
    with pytest.raises(
        FruitsError, match=r"fruits-pca v2 .*weights_sha256: 0{64} != .*preprocessing: something-else/v9"
    ):
        fz.check_compatible(other, mine, "fruits-pca v2")
    with pytest.raises(FruitsError, match="no featurizer tags"):
        fz.check_compatible(None, mine, "hand-made v1")


def test_an_engine_failure_on_a_chunk_blames_only_its_image(featurizer, data_dir: Path) -> None:
    # Failures injected on purpose: the real ONNX engine, except on a batch holding the poisoned image
    # (a black square) where it raises, and on a batch holding a white one where it runs out of memory.
    real = featurizer.make_engine()
    black, white = np.zeros((60, 60, 3), np.uint8), np.full((60, 60, 3), 255, np.uint8)

    def engine(batch: np.ndarray) -> np.ndarray:
        if (batch == -1.0).all(axis=(1, 2, 3)).any():
            raise RuntimeError("ORT kernel failed on this input")
        if (batch > 0.999).all(axis=(1, 2, 3)).any():
            raise MemoryError()
        return real(batch)

    files = sorted((data_dir / "subset" / "Limes").glob("*.jpg"))[:5]
    contents = [f.read_bytes() for f in files]
    contents[1:1] = [_png(black)]
    contents[4:4] = [_png(white), b""]
    result = fz.featurize_batch(engine, contents, MAX_PIXELS, chunk=3)
    assert result.reasons == [None, "engine_failed", None, None, "engine_failed", "empty", None, None]
    assert result.details[1] == "RuntimeError: ORT kernel failed on this input"
    assert result.details[4] == "MemoryError"
    reference = fz.featurize_batch(real, [f.read_bytes() for f in files], MAX_PIXELS)
    got = [f for f in result.features if f is not None]
    assert len(got) == 5
    np.testing.assert_allclose(np.stack(got), np.stack(reference.features), atol=1e-5)


def test_an_engine_that_returns_garbage_fails_the_images_not_the_batch(featurizer, data_dir: Path) -> None:
    # Injected on purpose: an engine answering NaN for one image (a black square).
    real = featurizer.make_engine()

    def engine(batch: np.ndarray) -> np.ndarray:
        out = real(batch)
        out[(batch == -1.0).all(axis=(1, 2, 3))] = np.nan
        return out

    good = next((data_dir / "subset" / "Limes").glob("*.jpg")).read_bytes()
    result = fz.featurize_batch(engine, [good, _png(np.zeros((9, 9, 3), np.uint8)), good], MAX_PIXELS)
    assert result.reasons == [None, "engine_failed", None]
    assert "non-finite" in result.details[1]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()
