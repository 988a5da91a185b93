"""infra/cluster.py: the run_job_flow request built from named options, checked offline."""

from __future__ import annotations

import pytest

from aws_support import BUCKET, WEIGHTS_URI, WHEELHOUSE_URI
from fruits.exceptions import FruitsError
from infra.cluster import ClusterOptions, planned_request
from infra.layout import WEIGHTS_KEY

PYTHON = "/usr/bin/python3.11"
LOCK_SHA256 = "0123456789abcdef" * 4


def test_full_request_carries_every_option() -> None:
    options = ClusterOptions(
        bucket=BUCKET,
        region="us-east-1",
        core_count=3,
        task_count=2,
        spot_bid_fraction=0.5,
        ebs_size_gb=100,
        subnet_id="subnet-0abc",
        key_name="ops",
        idle_timeout_seconds=1800,
        owner="vision-team",
        cost_center="cc-42",
        lock_sha256=LOCK_SHA256,
        extra_configurations=(
            ("spark-defaults", "spark.executor.memory", "10g"),
            ("yarn-site", "yarn.log-aggregation-enable", "true"),
        ),
    )
    request = planned_request(options)

    groups = request["Instances"]["InstanceGroups"]
    assert [(g["InstanceRole"], g["Market"], g["InstanceCount"]) for g in groups] == [
        ("MASTER", "ON_DEMAND", 1),
        ("CORE", "ON_DEMAND", 3),
        ("TASK", "SPOT", 2),
    ]
    assert groups[2]["BidPrice"] == "0.0960"  # 0.5 x 0.192
    assert "BidPrice" not in groups[0] and "BidPrice" not in groups[1]
    volumes = [g["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]["VolumeSpecification"] for g in groups]
    assert volumes == [{"VolumeType": "gp3", "SizeInGB": 100}] * 3
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert (request["Instances"]["Ec2SubnetId"], request["Instances"]["Ec2KeyName"]) == ("subnet-0abc", "ops")
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert request["VisibleToAllUsers"] is True
    assert (request["ServiceRole"], request["JobFlowRole"]) == ("fruits-emr-service-role", "fruits-emr-ec2-profile")
    assert request["Applications"] == [{"Name": "Spark"}]
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
        "project": "fruits",
        "owner": "vision-team",
        "cost-center": "cc-42",
        "for-use-with-amazon-emr-managed-policies": "true",
    }
    assert request["BootstrapActions"] == [
        {
            "Name": "install-fruits",
            "ScriptBootstrapAction": {
                "Path": f"s3://{BUCKET}/bootstrap/bootstrap.sh",
                "Args": [
                    "--region", "us-east-1",
                    "--python", PYTHON,
                    "--wheel", f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
                    "--wheelhouse", WHEELHOUSE_URI,
                    "--lock-sha256", LOCK_SHA256,
                    "--weights", WEIGHTS_URI,
                ],  # fmt: skip
            },
        }
    ]
    configurations = {c["Classification"]: c for c in request["Configurations"]}
    defaults = configurations["spark-defaults"]["Properties"]
    assert defaults["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == "64"
    assert defaults["spark.sql.files.openCostInBytes"] == "65536"
    assert defaults["spark.python.worker.reuse"] == "true"
    assert defaults["spark.dynamicAllocation.enabled"] == "false"
    assert defaults["spark.executor.instances"] == "5"  # one per core + task node
    assert defaults["spark.executorEnv.PYSPARK_PYTHON"] == defaults["spark.pyspark.python"] == PYTHON
    assert defaults["spark.executor.memory"] == "10g"  # --conf merged into the existing classification
    assert configurations["yarn-site"]["Properties"] == {"yarn.log-aggregation-enable": "true"}
    (export,) = configurations["spark-env"]["Configurations"]
    assert export["Classification"] == "export" and export["Properties"]["PYSPARK_PYTHON"] == PYTHON


def test_weights_key_is_the_file_the_featurizer_expects() -> None:
    from fruits.weights import WEIGHTS_FILE

    assert WEIGHTS_KEY == f"models/keras/{WEIGHTS_FILE}"


def test_a_malformed_lock_sha256_is_refused() -> None:
    with pytest.raises(FruitsError, match="--lock-sha256 'ABC' is not a sha256"):
        planned_request(ClusterOptions(bucket=BUCKET, lock_sha256="ABC"))


def test_a_wheelhouse_given_without_its_slash_is_still_a_prefix() -> None:
    options = ClusterOptions(bucket=BUCKET, wheelhouse=f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11")
    assert options.bootstrap.wheelhouse == f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11/"
