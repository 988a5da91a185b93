"""s3a:// end to end on a moto S3 server: images in, parquet out, checkpoint on S3, restart reprocesses nothing."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest
from support import copy_classes

from fruits import lake
from fruits.upload import upload_dir
from streaming.job import StreamingJob

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
        source=f"{root}/images/", output=f"{root}/results", errors=f"{root}/errors",
        checkpoint=f"{root}/checkpoints/stream", trigger="available-now",
    )

    def run() -> dict:
        job = StreamingJob(stream_settings, spark=spark)
        job.start()
        job.run_until_stopped()
        return job.summary()

    assert run()["rows"] == 16
    table = lake.read_table(f"{root}/results", endpoint_url=moto_server).to_pandas()
    assert Counter(table["label"]) == {"Banana": 8, "Apple Red 1": 8}
    assert all(p.startswith(f"{root}/images/") for p in table["path"])
    assert {len(v) for v in table["pca"]} == {fitted["pca_k"]}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="checkpoints/stream/")["Contents"]]
    assert any(k.startswith("checkpoints/stream/results/commits/") for k in keys)
    assert any(k.startswith("checkpoints/stream/errors/offsets/") for k in keys)

    assert run()["rows"] == 0  # restart: everything is in the S3 checkpoint already

    copy_classes(data_dir, tmp_path / "more", ["Limes"], per_class=5)
    upload_dir(tmp_path / "more", f"s3://{BUCKET}/images/", endpoint_url=moto_server, progress=False)
    assert run()["rows"] == 5  # only the new uploads
    assert len(lake.read_table(f"{root}/results", endpoint_url=moto_server, columns=["path"])) == 21
