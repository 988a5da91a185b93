"""infra/cluster.py: the run_job_flow request built from named options, checked offline."""

from __future__ import annotations

import pytest

from aws_support import BUCKET, WEIGHTS_URI, WHEELHOUSE_URI
from fruits.exceptions import FruitsError
from infra.cluster import ClusterOptions, planned_request
from infra.layout import WEIGHTS_KEY

PYTHON = "/usr/bin/python3.11"
LOCK_SHA256 = "0123456789abcdef" * 4
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fruits/mlflow-AbCdEf"
SUBNET = "subnet-0a1b2c3d"


def test_full_request_carries_every_option() -> None:
    options = ClusterOptions(
        bucket=BUCKET,
        region="us-east-1",
        core_count=3,
        task_count=2,
        spot_bid_fraction=0.5,
        ebs_size_gb=100,
        subnet_id="subnet-0a1b2c3d",
        primary_security_group="sg-0aaa1111",
        core_security_group="sg-0bbb2222",
        service_access_security_group="sg-0ccc3333",
        mlflow_secret_arn=SECRET,
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
    assert (request["Instances"]["Ec2SubnetId"], request["Instances"]["Ec2KeyName"]) == ("subnet-0a1b2c3d", "ops")
    assert (
        request["Instances"]["EmrManagedMasterSecurityGroup"],
        request["Instances"]["EmrManagedSlaveSecurityGroup"],
        request["Instances"]["ServiceAccessSecurityGroup"],
    ) == ("sg-0aaa1111", "sg-0bbb2222", "sg-0ccc3333")
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert request["VisibleToAllUsers"] is True
    # EMR rejects an instance profile named differently from its role: the stack names both fruits-emr-ec2-role.
    assert (request["ServiceRole"], request["JobFlowRole"]) == ("fruits-emr-service-role", "fruits-emr-ec2-role")
    assert request["SecurityConfiguration"] == "fruits-emr-security"  # the stack's AWS::EMR::SecurityConfiguration
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
                    "--region",
                    "us-east-1",
                    "--python",
                    PYTHON,
                    "--wheel",
                    f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
                    "--wheelhouse",
                    WHEELHOUSE_URI,
                    "--lock-sha256",
                    LOCK_SHA256,
                    "--weights",
                    WEIGHTS_URI,
                    "--mlflow-secret",
                    SECRET,  # an ARN: the credentials never enter the request
                ],
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
    assert configurations["yarn-site"]["Properties"] == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "ON_DEMAND",
        "yarn.log-aggregation-enable": "true",  # --conf added to the existing classification
    }
    (export,) = configurations["spark-env"]["Configurations"]
    assert export["Classification"] == "export" and export["Properties"]["PYSPARK_PYTHON"] == PYTHON


def test_weights_key_is_the_file_the_featurizer_expects() -> None:
    from fruits.weights import WEIGHTS_FILE

    assert f"models/keras/{WEIGHTS_FILE}" == WEIGHTS_KEY


def test_a_malformed_lock_sha256_is_refused() -> None:
    with pytest.raises(FruitsError, match="--lock-sha256 'ABC' is not a sha256"):
        planned_request(ClusterOptions(bucket=BUCKET, lock_sha256="ABC"))


def test_a_wheelhouse_given_without_its_slash_is_still_a_prefix() -> None:
    options = ClusterOptions(bucket=BUCKET, wheelhouse=f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11")
    assert options.bootstrap.wheelhouse == f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11/"


# ---------------------------------------------------------------------------- issue 10: what a real account meets
def test_memory_is_explicit_for_the_default_instance_type_and_leaves_room_for_the_am() -> None:
    request = planned_request(ClusterOptions(bucket=BUCKET, subnet_id=SUBNET))
    configurations = {c["Classification"]: c["Properties"] for c in request["Configurations"]}
    defaults = configurations["spark-defaults"]

    assert "spark" not in configurations  # no maximizeResourceAllocation: it starves the Python workers
    mb = {
        k: int(defaults[k].removesuffix("m"))
        for k in (
            "spark.executor.memory",
            "spark.executor.memoryOverhead",
            "spark.executor.pyspark.memory",
            "spark.yarn.am.memory",
            "spark.yarn.am.memoryOverhead",
        )
    }
    # m5.xlarge: yarn.nodemanager.resource.memory-mb 12288 (EMR release guide, "Task configuration").
    executor = mb["spark.executor.memory"] + mb["spark.executor.memoryOverhead"] + mb["spark.executor.pyspark.memory"]
    assert executor + mb["spark.yarn.am.memory"] + mb["spark.yarn.am.memoryOverhead"] <= 12288
    assert executor == 11264 and mb["spark.executor.pyspark.memory"] == 2816  # a quarter of the container for Python
    assert defaults["spark.executor.cores"] == "4"  # the m5.xlarge's vCPUs: one Python worker each


def test_the_application_master_stays_off_spot_task_nodes() -> None:
    request = planned_request(ClusterOptions(bucket=BUCKET, subnet_id=SUBNET, task_count=2))
    (yarn,) = [c["Properties"] for c in request["Configurations"] if c["Classification"] == "yarn-site"]
    assert yarn == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "ON_DEMAND",
    }
    assert [g["Market"] for g in request["Instances"]["InstanceGroups"] if g["InstanceRole"] == "TASK"] == ["SPOT"]
    assert [g["Market"] for g in request["Instances"]["InstanceGroups"] if g["InstanceRole"] == "CORE"] == ["ON_DEMAND"]


def test_launching_needs_a_subnet_and_the_locks_sha256_and_plan_does_not() -> None:
    planned_request(ClusterOptions(bucket=BUCKET))  # plan: warnings only
    with pytest.raises(FruitsError, match="no --subnet-id: the cluster needs a private subnet tagged"):
        planned_request(ClusterOptions(bucket=BUCKET, lock_sha256=LOCK_SHA256), launching=True)
    with pytest.raises(FruitsError, match=r"no requirements\.lock sha256"):
        planned_request(ClusterOptions(bucket=BUCKET, subnet_id=SUBNET), launching=True)
    request = planned_request(ClusterOptions(bucket=BUCKET, subnet_id=SUBNET, lock_sha256=LOCK_SHA256), launching=True)
    assert request["Instances"]["Ec2SubnetId"] == SUBNET
    # The tag the managed service policy requires, on the cluster (EMR propagates it to what it creates).
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in request["Tags"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"primary_security_group": "sg-0aaa1111"}, "give all three of --primary-security-group"),
        ({"subnet_id": "subnet-xyz"}, "is not a subnet id"),
        (
            {
                "primary_security_group": "sg-1",
                "core_security_group": "sg-0bbb2222",
                "service_access_security_group": "sg-0ccc3333",
            },
            "'sg-1' is not a security group id",
        ),
        ({"instance_type": "m5.2xlarge"}, "the YARN memory of m5.2xlarge is not in infra/sizing.py"),
        ({"am_node_label": "TASK"}, "--am-node-label must be one of ON_DEMAND, CORE"),
        ({"mlflow_secret_arn": "fruits/mlflow"}, "is not a Secrets Manager secret ARN"),
    ],
)
def test_bad_network_sizing_and_secret_options_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(FruitsError, match=message):
        planned_request(ClusterOptions(bucket=BUCKET, **{"subnet_id": SUBNET, **changes}))


def test_another_instance_type_is_accepted_once_its_executors_are_sized_by_hand() -> None:
    sized = (
        ("spark-defaults", "spark.executor.memory", "16g"),
        ("spark-defaults", "spark.executor.pyspark.memory", "6g"),
    )
    request = planned_request(
        ClusterOptions(bucket=BUCKET, subnet_id=SUBNET, instance_type="m5.2xlarge", extra_configurations=sized)
    )
    (defaults,) = [c["Properties"] for c in request["Configurations"] if c["Classification"] == "spark-defaults"]
    assert (defaults["spark.executor.memory"], defaults["spark.executor.pyspark.memory"]) == ("16g", "6g")
