"""Hot model swap: the running stream follows its alias between micro-batches, with no restart."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

from fruits import registry
from fruits.upload import upload_dir
from streaming.job import StreamingJob
from support import Layout, copy_classes, table_rows, wait_until

ALIAS = "swap-test"  # not @champion: other tests rely on it


def test_a_new_champion_is_used_from_the_next_batch_and_an_incompatible_one_is_refused(
    spark, settings, fitted, data_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    client = registry.connect(settings)
    old = client.get_model_version("fruits-pca", fitted["model_version"])
    client.set_registered_model_alias("fruits-pca", ALIAS, old.version)
    run = layout.settings(settings, trigger="500ms", model_refresh_interval="1s")
    job = StreamingJob(run, model_uri=f"models:/fruits-pca@{ALIAS}", spark=spark)
    job.start()
    runner = threading.Thread(target=job.run_until_stopped, daemon=True)
    runner.start()

    def upload(cls: str, n: int) -> None:
        copy_classes(data_dir, tmp_path / cls, [cls], per_class=n)
        upload_dir(tmp_path / cls, str(layout.source), progress=False)

    try:
        upload("Limes", 5)
        wait_until(lambda: len(table_rows(layout.output)) == 5, 300, "the first uploads committed")
        # A new version under the alias (the same fitted pipeline: what matters is the version the stream uses).
        new = client.create_model_version("fruits-pca", old.source, run_id=old.run_id, tags=old.tags)
        client.set_registered_model_alias("fruits-pca", ALIAS, new.version)
        wait_until(lambda: job.monitor.snapshot().model_swaps == 1, 120, "the swap")
        upload("Kaki", 5)
        wait_until(lambda: len(table_rows(layout.output)) == 10, 300, "the uploads after the swap committed")
        # A version fitted with other weights: refused, the stream keeps the version it has.
        forged = client.create_model_version(
            "fruits-pca", old.source, run_id=old.run_id, tags=dict(old.tags) | {"featurizer.weights_sha256": "0" * 64}
        )
        client.set_registered_model_alias("fruits-pca", ALIAS, forged.version)
        wait_until(lambda: job.monitor.snapshot().model_refusals == 1, 120, "the refusal")
        upload("Pear", 3)
        wait_until(lambda: len(table_rows(layout.output)) == 13, 300, "the uploads after the refusal committed")
    finally:
        job.request_stop()
        runner.join(180)
    rows = table_rows(layout.output)
    old_v, new_v, forged_v = str(old.version), str(new.version), str(forged.version)
    assert Counter((r.label, r.model_version) for r in rows) == {
        ("Limes", old_v): 5,
        ("Kaki", new_v): 5,
        ("Pear", new_v): 3,
    }
    assert len({r.path for r in rows}) == 13  # each upload once, across the swap
    summary = job.summary()
    assert summary["model_versions"] == [old_v, new_v] and summary["model_swaps"] == 1
    events = [json.loads(line) for line in run.progress_log.read_text().splitlines()]
    swaps = [e for e in events if e["event"] == "model_swap"]
    assert [(e["from_version"], e["to_version"]) for e in swaps][-1] == (old_v, new_v)
    refused = [e for e in events if e["event"] == "model_refused"]
    assert refused[-1]["version"] == forged_v and "featurizer mismatch" in refused[-1]["reason"]
