"""fit.evaluation on what a model without a classifier head gives: refused, never None arithmetic."""

from __future__ import annotations

import pandas as pd
import pytest

from fit.evaluation import evaluate
from fruits.exceptions import FruitsError


def test_a_model_without_a_head_is_refused_rather_than_scored_as_zero() -> None:
    scored = pd.DataFrame(
        {
            "kind": ["known"] * 4,
            "path": list("abcd"),
            "label": ["Kaki", "Kaki", "Pear", "Pear"],
            "prediction": [None] * 4,
            "confidence": [None] * 4,
            "novelty_score": [None] * 4,
        }
    )
    with pytest.raises(FruitsError, match="no classifier head"):
        evaluate(held=None, model=None, scored=scored)
