"""Models that cannot produce every column work everywhere: the four model columns are null where the
model has nothing to say, and nothing does arithmetic on them.

- The design card's plain path, as a new user types it, in subprocesses with a state dir of its own:
  `fruits fit --images subset` (no held-out images: a head but no novelty threshold), then
  `fruits stream --source stream --trigger available-now`; then a refit and `fruits report`.
- A running stream swapping from a model with a classifier head to one without, and back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import groupby
from pathlib import Path

import mlflow
import pyspark
import pytest
from pyspark.ml import PipelineModel

from cli.main import main
from fruits import registry
from fruits.upload import upload_dir
from streaming.job import StreamingJob
from streaming.monitor import read_progress
from support import Layout, champion_copy, copy_classes, table_rows, wait_until

pytestmark = pytest.mark.slow
HEAD_COLUMNS = ("prediction", "confidence", "novelty_score", "is_novel")


def fruits(*args: str, log: Path) -> dict:
    """`fruits ARGS --json` in a subprocess, as a new user runs it: no FRUITS_ or MLFLOW_ variables (this
    process has MLFLOW_TRACKING_URI: mlflow.set_tracking_uri sets it), exit 0, its summary line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUITS_", "MLFLOW_"))}
    with log.open("ab") as err:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=900,
            env=env,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fit_without_held_out_images_then_stream_refit_and_report(
    settings, fitted, featurizer, data_dir: Path, tmp_path: Path, capsys
) -> None:
    state = tmp_path / "state"
    (state / "cache").mkdir(parents=True)
    (state / "cache" / "onnx").symlink_to(settings.cache_dir / "onnx")  # the session's ONNX export, not redone
    log = tmp_path / "cli.log"

    fit = fruits("fit", "--images", str(data_dir / "subset"), "--state-dir", str(state), log=log)
    assert (fit["images"], fit["eval_images"], fit["novelty_threshold"]) == (320, None, None)
    stream = fruits(
        "stream", "--source", str(data_dir / "stream"), "--trigger", "available-now", "--state-dir", str(state), log=log
    )
    assert (stream["rows"], stream["errors"], stream["poisoned"]) == (640, 0, 0)

    rows = table_rows(state / "lake" / "results", ["label", "pca", *HEAD_COLUMNS])
    assert len(rows) == 640 and len({len(r.pca) for r in rows}) == 1
    assert all(r.is_novel is None for r in rows)  # no threshold: the flag is null, never a guess
    assert all(
        r.prediction and 0 < r.confidence <= 1 and abs(r.novelty_score - (1 - r.confidence)) < 1e-9 for r in rows
    )
    assert sum(r.prediction == r.label for r in rows) >= 0.9 * 640  # the head classifies all the same
    [line] = [json.loads(x) for x in (state / "stream-progress.jsonl").read_text().splitlines()]
    assert line["novel_fraction"] is None and 0.5 < line["mean_confidence"] <= 1
    assert sum(line["predictions"].values()) == 640

    # The refit of a champion without a threshold (in this process: the CLI, on the session's Spark; the
    # tracking URI the subprocesses defaulted to, named, since this process's environment names another).
    capsys.readouterr()
    held_out = tmp_path / "held-out"  # two test/ images of each of the 32 classes: enough to decide, quick
    copy_classes(data_dir, held_out, sorted(p.name for p in (data_dir / "test").iterdir()), split="test", per_class=2)
    assert (
        main(
            [
                "refit",
                "--eval-images",
                str(held_out),
                "--state-dir",
                str(state),
                "--tracking-uri",
                f"sqlite:///{state / 'mlflow.db'}",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    refit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert refit["champion_version_before"] == fit["model_version"] and refit["rows_from_lake"] == 640
    assert refit["champion_classifier_accuracy"] is not None and refit["novelty_threshold"] is not None

    assert main(["report", "--state-dir", str(state), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["batches"], report["rows"], report["errors"]) == (1, 640, 0)
    assert Path(report["report"]).read_bytes()[:4] == b"\x89PNG"
    # All of it in the temp state dir: the session's registry did not move.
    champion = registry.connect(settings).get_model_version_by_alias("fruits-pca", "champion")
    assert str(champion.version) == fitted["model_version"]


def test_a_running_stream_swaps_between_a_model_with_a_head_and_one_without(
    spark, settings, fitted, featurizer, data_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    name = "fruits-headless-swap"
    head = champion_copy(settings, fitted, name)
    client = registry.connect(settings)
    with_head = registry.load_spark_model(registry.resolve(client, f"models:/{name}/{head}"))
    without = PipelineModel(stages=with_head.stages[:2])  # scaler + PCA: a model from before the classifier
    with mlflow.start_run(experiment_id=registry.ensure_experiment(client, settings)):
        uri = registry.log_model(without, pip_requirements=[f"pyspark=={pyspark.__version__}"])
    headless = str(mlflow.register_model(uri, name, tags=registry.model_version_tags(featurizer.spec, {})).version)

    run = layout.settings(settings, trigger="500ms", model_refresh_interval="1s")
    started = time.time()
    job = StreamingJob(run, model_uri=f"models:/{name}@champion", spark=spark)
    job.start()
    runner = threading.Thread(target=job.run_until_stopped, daemon=True)
    runner.start()

    def upload(cls: str, expected_rows: int) -> None:
        copy_classes(data_dir, tmp_path / cls, [cls], per_class=3)
        upload_dir(tmp_path / cls, str(layout.source), progress=False)
        wait_until(lambda: len(table_rows(layout.output, ["path"])) == expected_rows, 300, f"{cls} committed")

    def move_champion(version: str, swaps: int) -> None:
        client.set_registered_model_alias(name, "champion", version)
        wait_until(lambda: job.monitor.snapshot().model_swaps == swaps, 120, f"the swap to v{version}")

    try:
        upload("Limes", 3)
        move_champion(headless, 1)
        upload("Kaki", 6)
        move_champion(head, 2)
        upload("Pear", 9)
    finally:
        job.request_stop()
        runner.join(180)
    job.raise_if_failed()

    rows = table_rows(layout.output, ["label", "model_version", "pca", *HEAD_COLUMNS])
    assert Counter((r.label, r.model_version) for r in rows) == {
        ("Limes", head): 3,
        ("Kaki", headless): 3,
        ("Pear", head): 3,
    }
    assert {len(r.pca) for r in rows} == {fitted["pca_k"]}  # both models project
    for r in rows:
        values = [getattr(r, c) for c in HEAD_COLUMNS]
        if r.model_version == headless:
            assert values == [None] * 4
        else:
            assert None not in values
    assert job.summary()["model_versions"] == [head, headless, head]
    batches, swaps = read_progress(run.progress_log, since=started)
    said = [
        (b["model_version"], bool(b.get("predictions")), b.get("novel_fraction") is not None)
        for b in batches
        if b["rows"]
    ]  # (one upload may come in more than one batch)
    assert [key for key, _ in groupby(said)] == [(head, True, True), (headless, False, False), (head, True, True)]
    assert [(s["from_version"], s["to_version"]) for s in swaps] == [(head, headless), (headless, head)]
