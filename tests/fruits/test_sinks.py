"""The sinks on real Delta tables, local and on a moto S3 server: one transaction per micro-batch, exactly once."""

from __future__ import annotations

import uuid

import boto3
import pytest
from deltalake import DeltaTable

from fruits import sinks
from fruits.exceptions import FruitsError
from fruits.sinks import RESULTS, LakeWriter
from support import error_rows as errors
from support import result_rows as results
from support import table_rows


@pytest.fixture(params=["local", "s3"])
def lake_settings(request, settings, tmp_path, moto_server):
    """Settings whose two tables live in a fresh local folder, or in a fresh bucket on the moto server."""
    if request.param == "local":
        return settings.replace(output=str(tmp_path / "results"), errors=str(tmp_path / "errors"))
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    return settings.replace(output=f"s3a://{bucket}/results", errors=f"s3a://{bucket}/errors")


def read(s, uri: str) -> list:
    options = (
        {"AWS_ENDPOINT_URL": s.s3_endpoint_url, "AWS_ALLOW_HTTP": "true", "AWS_REGION": s.aws_region}
        if uri.startswith("s3a://")
        else None
    )
    return table_rows(uri.replace("s3a://", "s3://"), storage_options=options)


def test_each_batch_is_one_transaction_recorded_in_the_tables(lake_settings) -> None:
    writer = LakeWriter(lake_settings, "stream-a")
    assert not writer.done(0)
    writer.commit(0, results("a.jpg", "b.jpg"), errors("empty.jpg"))
    writer.commit(1, results("c.jpg"), errors())  # a batch without errors commits the results only
    assert writer.done(0) and writer.done(1) and not writer.done(2)
    assert sorted(r.path for r in read(lake_settings, lake_settings.output_uri)) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [r.path for r in read(lake_settings, lake_settings.errors_uri)] == ["empty.jpg"]
    # A restarted stream (same id, new writer object) sees its own batches in the tables.
    assert LakeWriter(lake_settings, "stream-a").done(1)
    # A new checkpoint is a new stream: its batch 0 is not the old one's.
    assert not LakeWriter(lake_settings, "stream-b").done(0)


def test_an_empty_batch_is_still_marked_done(lake_settings) -> None:
    writer = LakeWriter(lake_settings, "stream-a")
    writer.commit(0, results(), errors())
    assert writer.done(0) and read(lake_settings, lake_settings.output_uri) == []


def test_a_second_writer_of_the_same_batch_is_refused_and_nothing_is_doubled(lake_settings) -> None:
    first, second = LakeWriter(lake_settings, "stream-a"), LakeWriter(lake_settings, "stream-a")
    first.commit(0, results("a.jpg"), errors())
    assert second.done(0) is True  # a second stream that looks first skips the batch
    second.commit(1, results("b.jpg"), errors())
    with pytest.raises(FruitsError, match=r"another writer committed micro-batch 1 .* second stream"):
        first.commit(1, results("b.jpg"), errors())  # first still holds the table as it was before batch 1
    assert sorted(r.path for r in read(lake_settings, lake_settings.output_uri)) == ["a.jpg", "b.jpg"]


def test_tables_are_created_with_the_documented_layout(settings, tmp_path) -> None:
    s = settings.replace(output=str(tmp_path / "results"), errors=str(tmp_path / "errors"))
    LakeWriter(s, "stream-a").commit(0, results("a.jpg"), errors("e.jpg"))
    table = DeltaTable(s.output_uri)
    assert table.metadata().partition_columns == ["ingest_date"]
    assert DeltaTable(s.errors_uri).metadata().partition_columns == []
    assert table.metadata().configuration["delta.logRetentionDuration"] == "interval 7 days"
    assert [f.name for f in table.schema().fields] == RESULTS.schema.names


def test_the_sink_reopens_its_table_from_the_latest_checkpoint_and_stays_exactly_once(
    settings, tmp_path, monkeypatch
) -> None:
    """A DeltaTable kept current with update_incremental grows with every commit (bench/commits.py measures it):
    the sink re-opens it every REOPEN_EVERY_VERSIONS versions, without losing track of its batches."""
    monkeypatch.setattr(sinks, "REOPEN_EVERY_VERSIONS", 3)
    s = settings.replace(output=str(tmp_path / "results"), errors=str(tmp_path / "errors"))
    writer = LakeWriter(s, "stream-a")
    opened = []
    for batch in range(10):
        assert not writer.done(batch)
        opened.append(writer.results._table)
        writer.commit(batch, results(f"{batch}.jpg"), errors())
    tables = [t for t in opened if t is not None]
    # Batch 0 creates the table; then one object per 3 versions: opened at version 0, 3 and 6.
    assert len(tables) == 9 and len({id(t) for t in tables}) == 3
    assert writer.done(9) and not writer.done(10)
    with pytest.raises(FruitsError, match="another writer committed micro-batch 9"):
        writer.commit(9, results("9.jpg"), errors())
    assert sorted(r.path for r in read(s, s.output_uri)) == sorted(f"{b}.jpg" for b in range(10))
