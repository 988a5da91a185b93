"""s3a:// end to end on a moto S3 server: images in, Delta tables out, checkpoint on S3, restart reprocesses nothing."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from fruits.exceptions import FruitsError
from fruits.upload import upload_dir
from streaming.job import StreamingJob
from support import copy_classes, table_rows

pytestmark = pytest.mark.slow
BUCKET = "fruits-s3a-test"


def test_stream_reads_and_writes_s3a_with_an_s3_checkpoint(spark, settings, fitted, moto_server, data_dir, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    phone = tmp_path / "phone"
    copy_classes(data_dir, phone, ["Banana", "Apple Red 1"], per_class=8)
    assert upload_dir(phone, f"s3://{BUCKET}/images/", endpoint_url=moto_server, progress=False).uploaded == 16

    root = f"s3a://{BUCKET}"
    stream_settings = settings.replace(
        source=f"{root}/images/",
        output=f"{root}/results",
        errors=f"{root}/errors",
        checkpoint=f"{root}/checkpoints/stream",
        trigger="available-now",
    )

    def run() -> dict:
        job = StreamingJob(stream_settings, spark=spark)
        job.start()
        job.run_until_stopped()
        return job.summary()

    assert run()["rows"] == 16
    on_moto = {"AWS_ENDPOINT_URL": moto_server, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "eu-west-3"}
    table = table_rows(f"s3://{BUCKET}/results", storage_options=on_moto)
    assert Counter(r.label for r in table) == {"Banana": 8, "Apple Red 1": 8}
    assert all(r.path.startswith(f"{root}/images/") for r in table)
    assert {len(r.pca) for r in table} == {fitted["pca_k"]}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.startswith("checkpoints/stream/commits/") for k in keys)
    assert any(k.startswith("results/_delta_log/") for k in keys)

    assert run()["rows"] == 0  # restart: everything is in the S3 checkpoint already

    copy_classes(data_dir, tmp_path / "more", ["Limes"], per_class=5)
    upload_dir(tmp_path / "more", f"s3://{BUCKET}/images/", endpoint_url=moto_server, progress=False)
    assert run()["rows"] == 5  # only the new uploads
    assert len(table_rows(f"s3://{BUCKET}/results", ["path"], storage_options=on_moto)) == 21


def test_a_second_stream_on_the_same_s3_checkpoint_is_refused(spark, settings, fitted, moto_server, data_dir, tmp_path):
    bucket = "fruits-s3a-lease"
    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    root = f"s3a://{bucket}"
    stream_settings = settings.replace(
        source=f"{root}/images/",
        output=f"{root}/results",
        errors=f"{root}/errors",
        checkpoint=f"{root}/checkpoints/stream",
        trigger="2s",
    )
    first = StreamingJob(stream_settings, spark=spark)
    first.start()
    try:
        second = StreamingJob(stream_settings, spark=spark)
        with pytest.raises(FruitsError, match=r"another stream holds checkpoint s3a://fruits-s3a-lease/checkpoints/"):
            second.start()
        assert second.query is None and first.query.isActive
    finally:
        first.request_stop()
        first.run_until_stopped()
    third = StreamingJob(stream_settings.replace(trigger="available-now"), spark=spark)
    third.start()  # the lease was released at the graceful stop
    third.run_until_stopped()
