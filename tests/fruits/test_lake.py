"""Lake maintenance on a real Delta table: many small appends become a few files; readers see the same rows."""

from __future__ import annotations

from deltalake import DeltaTable

from cli.main import main
from fruits import lake
from fruits.sinks import LakeWriter
from support import error_rows as errors
from support import result_rows as results


def test_maintain_compacts_small_files_and_keeps_every_row(settings, tmp_path, capsys) -> None:
    s = settings.replace(output=str(tmp_path / "results"), errors=str(tmp_path / "errors"))
    writer = LakeWriter(s, "stream-a")
    for batch in range(12):
        writer.commit(batch, results(f"{batch}-a.jpg", f"{batch}-b.jpg"), errors())
    before = DeltaTable(s.output_uri)
    assert len(before.file_uris()) == 12  # one small file per micro-batch
    rows_before = sorted(before.to_pyarrow_table(columns=["path"]).column("path").to_pylist())

    done = lake.maintain(s, s.output_uri)

    after = DeltaTable(s.output_uri)
    assert (done.files_before, done.files_after, done.files_compacted) == (12, 1, 12)
    assert len(after.file_uris()) == 1  # one partition (one ingest date), one file
    assert sorted(after.to_pyarrow_table(columns=["path"]).column("path").to_pylist()) == rows_before
    assert after.transaction_version("stream-a") == 11  # the stream's progress survives compaction
    assert lake.maintain(s, s.errors_uri) is None  # no errors table yet: nothing to do

    assert main(["lake", "status", "--output", s.output_uri, "--errors", s.errors_uri, "--json", "-q"]) == 0
    status = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"rows": 24' in status and '"files": 1' in status and '"errors": null' in status
