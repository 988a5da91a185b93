"""Hostile uploads through the real stream: every file ends as exactly one row, results or errors, and the
stream keeps running (a normal upload after them still lands)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fruits.reasons import REASONS
from fruits.upload import upload_dir
from hostile_images import FEATURES, generate
from streaming.job import StreamingJob
from support import Layout, copy_classes, table_rows


def test_hostile_uploads_each_become_one_row_and_the_stream_keeps_running(
    spark, settings, fitted, data_dir: Path, layout: Layout, tmp_path: Path
) -> None:
    hostile = generate(seed=2020, mutations=150, images=data_dir)
    (layout.source / "Hostile").mkdir(parents=True)
    for upload in hostile:
        (layout.source / "Hostile" / upload.name).write_bytes(upload.data)
    job = StreamingJob(layout.settings(settings, trigger="500ms", max_files_per_trigger=1000), spark=spark)
    job.start()
    try:
        job.process_available()
        results = {Path(r.path).name for r in table_rows(layout.output, ["path"])}
        errors = table_rows(layout.errors, ["path", "reason", "detail"])
        landed = Counter([*results, *(Path(r.path).name for r in errors)])
        assert landed == Counter(upload.name for upload in hostile)  # each exactly once: no loss, no duplicate
        assert all(r.reason in REASONS and r.detail for r in errors)
        outcome = {Path(r.path).name: r.reason for r in errors} | {name: FEATURES for name in results}
        assert not [(u.family, outcome[u.name]) for u in hostile if u.expect and outcome[u.name] not in u.expect]
        assert job.query.isActive

        staging = tmp_path / "phone"
        copy_classes(data_dir, staging, ["Kaki"], per_class=1)
        assert upload_dir(staging, str(layout.source), progress=False).uploaded == 1  # atomic renames
        job.process_available()
        kaki = [r for r in table_rows(layout.output, ["path", "label"]) if r.label == "Kaki"]
        assert len(kaki) == 1 and job.query.isActive
    finally:
        job.request_stop()
        job.run_until_stopped()
