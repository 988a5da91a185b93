"""Hundreds of hostile uploads through the real featurize step (decode + ONNX engine): one result each, never
an exception, each error a known reason; and the regression corpus of what fuzzing found."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fruits import decode
from fruits import featurize as fz
from fruits.reasons import REASONS
from hostile_images import FEATURES, generate, load_regressions

MAX_PIXELS = 64_000_000


@pytest.fixture(scope="module")
def hostile(data_dir: Path):
    return generate(seed=20, mutations=250, images=data_dir)


def test_every_hostile_input_becomes_features_or_a_known_reason(featurizer, hostile) -> None:
    assert len(hostile) > 300
    result = fz.featurize_batch(featurizer.make_engine(), [h.data for h in hostile], MAX_PIXELS)
    assert len(result.features) == len(result.reasons) == len(result.details) == len(hostile)
    outcomes = []
    for h, features, reason, detail in zip(hostile, result.features, result.reasons, result.details, strict=True):
        if features is not None:
            assert reason is None and features.shape == (1280,) and np.isfinite(features).all(), h.family
            outcomes.append(FEATURES)
        else:
            assert reason in REASONS and detail, (h.family, reason, detail)
            outcomes.append(reason)
    wrong = [
        (h.family, got)
        for h, got in zip(hostile, outcomes, strict=True)
        if h.expect is not None and got not in h.expect
    ]
    assert not wrong
    # Nothing here is an unexplained failure: each error is a reason the decode knows.
    counts = Counter(outcomes)
    assert counts["decode_failed"] == 0 and counts["engine_failed"] == 0, counts
    assert counts[FEATURES] > 50 and counts["unsupported_format"] >= 20 and counts["too_many_pixels"] >= 8, counts


@pytest.mark.parametrize("regression", load_regressions(), ids=lambda r: r.name)
def test_the_regression_corpus_replays(regression) -> None:
    try:
        decode.decode(regression.data, MAX_PIXELS)
        got = FEATURES
    except decode.Rejected as exc:
        got = exc.reason
    assert got == regression.expect, regression.found
