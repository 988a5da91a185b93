"""fruits refit on a results table the real stream wrote: champion/challenger with exact decisions.

Each scenario registers a copy of the session's fit (tests/conftest.py `fitted`: subset/, 320
images) under a model name of its own, so moving @champion here changes nothing for other tests.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cli.main import main
from fit.refit import CHALLENGER, decide, refit
from fruits import registry
from fruits.exceptions import FruitsError
from fruits.knownmap import KnownMap
from streaming.job import StreamingJob
from support import Layout, champion_copy, copy_classes, table_rows


def stream_into_lake(spark, settings, source: Path, tmp_path: Path) -> Layout:
    """The real streaming job, available-now, over `source`: its results table is what the refit reads."""
    layout = Layout(source, tmp_path / "results", tmp_path / "errors", tmp_path / "checkpoint")
    job = StreamingJob(layout.settings(settings, trigger="available-now"), spark=spark)
    job.start()
    job.run_until_stopped()
    return layout


@pytest.fixture(scope="module")
def streamed(spark, settings, fitted, data_dir: Path, tmp_path_factory) -> tuple:
    """stream/ (32 classes x 20, never seen by the fit) through the stream of a copied champion."""
    tmp = tmp_path_factory.mktemp("refit-lake")
    base = settings.replace(model_name="fruits-refit", state_dir=settings.state_dir)
    before = champion_copy(base, fitted, "fruits-refit")
    layout = stream_into_lake(spark, base, data_dir / "stream", tmp)
    return layout.settings(base), before


def test_the_lake_holds_the_stream_with_predictions(streamed) -> None:
    s, _ = streamed
    rows = table_rows(s.output, ["label", "prediction", "confidence", "novelty_score", "is_novel", "features"])
    assert len(rows) == 640 and Counter(r.label for r in rows) == {c: 20 for c in {r.label for r in rows}}
    assert all(len(r.features) == 1280 and 0 < r.confidence <= 1 and r.is_novel in (True, False) for r in rows)
    # The fit's classifier on uploads it never saw (the same fruits as subset/): mostly right.
    assert sum(r.prediction == r.label for r in rows) >= 0.95 * 640


def test_refit_from_the_lake_beats_the_champion_and_is_promoted(streamed, fitted, data_dir: Path, capsys) -> None:
    s, before = streamed
    code = main(
        [
            "refit",
            "--eval-images",
            str(data_dir / "test"),
            "--novelty-images",
            str(data_dir / "extra_classes"),
            "--output",
            s.output,
            "--model-name",
            "fruits-refit",
            "--state-dir",
            str(s.state_dir),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The bar; reference 0.988 for logistic regression on subset + stream (30 per class).
    assert out["classifier_accuracy"] >= 0.985
    # The champion is measured on the same held-out images: exactly the fit's own figure.
    assert out["champion_classifier_accuracy"] == pytest.approx(fitted["classifier_accuracy"], abs=1e-12)
    assert out["promoted"] is True and out["decision"].startswith("challenger accuracy")
    assert (out["rows_from_lake"], out["rows_from_champion"], out["images"], out["classes"]) == (640, 320, 960, 32)
    assert out["lake_rows_of_another_featurizer"] == 0
    assert out["featurized"] == 640 + 80  # the held-out images, once; no MobileNet for the 960 training rows
    assert out["novelty_auroc"] >= 0.9
    client = registry.connect(s)
    champion = client.get_model_version_by_alias("fruits-refit", "champion")
    challenger = client.get_model_version_by_alias("fruits-refit", CHALLENGER)
    assert str(champion.version) == str(challenger.version) == out["model_version"] != before
    assert out["champion_version_before"] == before
    run = client.get_run(out["run_id"])
    assert run.data.metrics["classifier_accuracy"] == pytest.approx(out["classifier_accuracy"])
    assert run.data.metrics["champion_classifier_accuracy"] == pytest.approx(out["champion_classifier_accuracy"])
    assert float(champion.tags["novelty.threshold"]) == pytest.approx(out["novelty_threshold"])
    # Its known map (the app's neighbours): 20 of the 30 training rows of each class, the fit's and the lake's.
    known = KnownMap.load(s, "fruits-refit", out["model_version"])
    assert Counter(known.labels) == {c: 20 for c in set(known.labels)} and len(set(known.labels)) == 32
    assert {Path(p).parts[-3] for p in known.paths} == {"subset", "stream"}

    # Its training set is the union, saved for the next refit: nothing in the lake is new to it now.
    with pytest.raises(FruitsError, match="nothing new to learn from"):
        refit(s, str(data_dir / "test"), progress=False)


def test_a_worse_challenger_is_registered_but_not_promoted_unless_forced(
    spark, settings, fitted, data_dir: Path, tmp_path: Path
) -> None:
    # Twenty bananas uploaded into the Kumquats folder: the lake teaches the challenger a wrong class.
    base = settings.replace(model_name="fruits-refit-bad")
    before = champion_copy(base, fitted, "fruits-refit-bad")
    for name, src in (("Kumquats", "Banana"),):
        (tmp_path / "landing" / name).mkdir(parents=True)
        for image in sorted((data_dir / "stream" / src).glob("*.jpg")):
            (tmp_path / "landing" / name / f"{src}-{image.name}").write_bytes(image.read_bytes())
    s = stream_into_lake(spark, base, tmp_path / "landing", tmp_path).settings(base)
    held_out = tmp_path / "eval"
    copy_classes(data_dir, held_out, ["Banana", "Kumquats"], split="test")

    kept = refit(s, str(held_out), progress=False)
    client = registry.connect(s)
    assert kept["rows_from_lake"] == 20 and kept["classifier_accuracy"] < kept["champion_classifier_accuracy"]
    assert (kept["promoted"], kept["champion_version"]) == (False, before)
    assert str(client.get_model_version_by_alias("fruits-refit-bad", "champion").version) == before
    assert str(client.get_model_version_by_alias("fruits-refit-bad", CHALLENGER).version) == kept["model_version"]
    assert (
        client.get_model_version("fruits-refit-bad", kept["model_version"]).tags["refit.decision"] == kept["decision"]
    )

    forced = refit(s, str(held_out), force=True, progress=False)
    assert forced["promoted"] is True and forced["decision"].endswith("promoted by --force")
    assert str(client.get_model_version_by_alias("fruits-refit-bad", "champion").version) == forced["model_version"]


@pytest.mark.parametrize(
    ("challenger", "champion", "force", "promoted"),
    [
        (0.99, 0.95, False, True),
        (0.95, 0.95, False, False),
        (0.94, 0.95, False, False),
        (0.94, 0.95, True, True),
        (0.50, None, False, True),
    ],
)
def test_only_a_strictly_better_challenger_wins(challenger, champion, force, promoted) -> None:
    assert decide(challenger, champion, force)[0] is promoted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval-images", "/nonexistent/eval"], "--eval-images path not found: /nonexistent/eval"),
        (
            ["--eval-images", "{eval}", "--since", "2026-12-02", "--until", "2026-12-01"],
            "--until 2026-12-01 is before --since 2026-12-02",
        ),
        (["--eval-images", "{eval}", "--output", "{tmp}/no-table"], "no results table at"),
        (["--eval-images", "{eval}", "--model-name", "never-fitted"], "model models:/never-fitted@champion not found"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    args, message, fitted, settings, data_dir: Path, tmp_path: Path, capsys
) -> None:
    args = [a.format(eval=data_dir / "test", tmp=tmp_path) for a in args]
    code = main(["refit", *args, "--state-dir", str(settings.state_dir), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("fruits refit: error: ") and message in err
    assert len(err.splitlines()) == 1, err
