"""`fruits emr`: the request, its offline validation, the cost model, and the cluster lifecycle on moto.

Prices in the expectations are typed from infra/prices.json by hand (m5.xlarge: us-east-1 0.192 EC2
+ 0.048 EMR, eu-west-3 0.224 + 0.048) and multiplied out in the comments, never computed by the
code under test. The lifecycle runs against the session's real moto server over HTTP.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli.main import main
from fruits.exceptions import FruitsError
from infra import emr

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fruits-123456789012-eu-west-3"
WEIGHTS_URI = f"s3://{BUCKET}/models/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
WHEELHOUSE_URI = f"s3://{BUCKET}/bootstrap/wheelhouse/"
PYTHON = "/usr/bin/python3.11"
BOOTSTRAP_ARGS = (
    f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
    f"s3://{BUCKET}/bootstrap/constraints.txt",
    WEIGHTS_URI,
    WHEELHOUSE_URI,
)


def last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """boto3 pointed at a closed loopback port, and every socket connect recorded and refused."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


# ============================================================================ plan: offline, request + cost
def test_plan_prints_request_and_cost_without_any_network(no_network: list, capsys: pytest.CaptureFixture) -> None:
    rc = main(["emr", "plan", "--bucket", BUCKET, "--images-per-second-per-node", "100", "--json"])
    summary = last_json(capsys.readouterr().out)

    assert rc == 0 and no_network == []
    request, cost = summary["request"], summary["cost"]
    assert request["Name"] == "fruits-stream"
    assert request["ReleaseLabel"] == "emr-7.10.0"
    assert request["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert [(g["InstanceRole"], g["Market"], g["InstanceCount"]) for g in request["Instances"]["InstanceGroups"]] == [
        ("MASTER", "ON_DEMAND", 1),
        ("CORE", "ON_DEMAND", 2),
    ]
    (bootstrap,) = request["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Args"][3] == WHEELHOUSE_URI
    assert cost["region"] == "eu-west-3"  # conftest's AWS_REGION
    assert cost["per_hour"] == pytest.approx(0.816)  # 3 x (0.224 + 0.048)
    assert cost["per_million_images"] == pytest.approx(1.133333, rel=1e-5)  # 0.816 / (2 x 100 x 3600) x 1e6
    assert [g["per_hour"] for g in cost["groups"]] == pytest.approx([0.272, 0.544])


def test_plan_human_output_shows_pretty_request_and_cost_lines(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out

    assert '  "ReleaseLabel": "emr-7.10.0",' in out  # indented JSON, not one line
    assert "primary 1 x m5.xlarge ON_DEMAND $0.2400/h each = $0.2400/h" in out  # 0.192 + 0.048
    assert "total   $0.7200/h" in out  # 3 x 0.24
    # 2 core nodes x 75 img/s (the default) = 150 img/s = 540,000 img/h; 0.72 / 0.54 = 1.3333
    assert "per 1M images $1.3333" in out
    assert (
        f"bootstrap: installs s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl[keras] "
        f"from the wheelhouse {WHEELHOUSE_URI} only (no package index)"
    ) in out
    assert no_network == []


def test_plan_takes_another_wheelhouse(no_network: list, capsys: pytest.CaptureFixture) -> None:
    wheelhouse = f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11/"
    assert main(["emr", "plan", "--bucket", BUCKET, "--wheelhouse", wheelhouse, "--json"]) == 0
    captured = capsys.readouterr()

    args = last_json(captured.out)["request"]["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    assert args == [*BOOTSTRAP_ARGS[:3], wheelhouse]
    assert "outside" not in captured.err  # under bootstrap/: the stack's instance role reads it


def test_plan_warns_when_the_instance_role_cannot_read_the_wheelhouse(
    no_network: list, capsys: pytest.CaptureFixture
) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--wheelhouse", "s3://shared-wheels/fruits/", "--json"]) == 0
    captured = capsys.readouterr()

    args = last_json(captured.out)["request"]["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    assert args[3] == "s3://shared-wheels/fruits/"
    assert f"--wheelhouse s3://shared-wheels/fruits/ is outside s3://{BUCKET}/bootstrap/" in captured.err


def test_plan_in_a_region_without_prices_says_unknown(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--region", "ap-southeast-2", "--json"]) == 0
    cost = last_json(capsys.readouterr().out)["cost"]

    assert cost["unknown"] is True
    assert cost["per_hour"] is None and cost["per_million_images"] is None
    assert all(g["per_hour"] is None and "ap-southeast-2" in g["note"] for g in cost["groups"])


# ============================================================================ cost model
def test_on_demand_cost_matches_the_table_by_hand() -> None:
    cost = emr.estimate_cost(emr.ClusterOptions(bucket=BUCKET, region="us-east-1"), "us-east-1", 100)

    assert cost.per_hour == pytest.approx(0.72)  # 3 x (0.192 + 0.048)
    assert cost.processing_nodes == 2  # the primary does not process images
    assert cost.images_per_second == 200
    assert cost.per_million_images == pytest.approx(1.0)  # 0.72 $/h / 720,000 img/h x 1e6
    assert [(g.role, g.count, g.per_instance_hour) for g in cost.groups] == [
        ("MASTER", 1, pytest.approx(0.24)),
        ("CORE", 2, pytest.approx(0.24)),
    ]


def test_spot_discounts_only_the_ec2_part() -> None:
    options = emr.ClusterOptions(bucket=BUCKET, region="us-east-1", task_count=2)
    cost = emr.estimate_cost(options, "us-east-1", 100, spot_fraction=0.4)

    task = cost.groups[-1]
    assert (task.role, task.market, task.count) == ("TASK", "SPOT", 2)
    assert task.per_instance_hour == pytest.approx(0.1248)  # 0.4 x 0.192 + 0.048 (uplift undiscounted)
    assert cost.per_hour == pytest.approx(0.9696)  # 0.72 + 2 x 0.1248
    assert cost.per_million_images == pytest.approx(0.673333, rel=1e-5)  # 0.9696 / (4 x 100 x 3600) x 1e6


def test_bid_below_expected_spot_price_is_flagged() -> None:
    options = emr.ClusterOptions(bucket=BUCKET, region="us-east-1", task_count=1, spot_bid_fraction=0.3)
    cost = emr.estimate_cost(emr.planned_request(options), "us-east-1", 100, spot_fraction=0.4)

    assert "may not launch" in cost.groups[-1].note  # bid 0.0576 < expected 0.0768


def test_a_missing_uplift_makes_the_total_unknown_not_cheaper() -> None:
    # c5.xlarge is a known type with an EC2 price but no EMR uplift in us-east-1.
    cost = emr.estimate_cost(
        emr.ClusterOptions(bucket=BUCKET, region="us-east-1", instance_type="c5.xlarge"), "us-east-1", 100
    )

    assert cost.per_hour is None and cost.per_million_images is None
    assert "no EMR uplift price for c5.xlarge in us-east-1" in cost.groups[0].note
    assert any(line.strip().startswith("total   unknown") for line in cost.lines())


def test_cost_per_million_for_the_benchmarks() -> None:
    seed_rate = 320 / 95  # the seed: 320 images in 95 s on 3 x m5.xlarge
    # 3 x 0.24 = 0.72 $/h; 0.72 x 95 / (320 x 3600) x 1e6 = 59.375
    assert emr.cost_per_million(seed_rate, "m5.xlarge", 3, "us-east-1") == pytest.approx(59.375)
    # spot everywhere: 3 x (0.4 x 0.192 + 0.048) = 0.3744 $/h -> 0.3744 x 95 / 1,152,000 x 1e6 = 30.875
    assert emr.cost_per_million(seed_rate, "m5.xlarge", 3, "us-east-1", "SPOT") == pytest.approx(30.875)
    # Paris: 3 x 0.272 = 0.816 $/h -> 0.816 x 95 / 1,152,000 x 1e6 = 67.2917
    assert emr.cost_per_million(seed_rate, "m5.xlarge", 3, "eu-west-3") == pytest.approx(67.2917, rel=1e-5)
    assert emr.cost_per_million(seed_rate, "m5.xlarge", 3, "sa-east-1") is None
    with pytest.raises(FruitsError, match="unknown instance type 'm5.xxl'"):
        emr.cost_per_million(seed_rate, "m5.xxl", 3, "us-east-1")


# ============================================================================ the request
def test_full_request_carries_every_option() -> None:
    options = emr.ClusterOptions(
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
        extra_configurations=(
            ("spark-defaults", "spark.executor.memory", "10g"),
            ("yarn-site", "yarn.log-aggregation-enable", "true"),
        ),
    )
    request = emr.planned_request(options)

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
                    f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
                    f"s3://{BUCKET}/bootstrap/constraints.txt",
                    WEIGHTS_URI,
                    f"s3://{BUCKET}/bootstrap/wheelhouse/",
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
    assert configurations["yarn-site"]["Properties"] == {"yarn.log-aggregation-enable": "true"}
    (export,) = configurations["spark-env"]["Configurations"]
    assert export["Classification"] == "export" and export["Properties"]["PYSPARK_PYTHON"] == PYTHON


def test_weights_key_is_the_file_the_featurizer_expects() -> None:
    from fruits.weights import WEIGHTS_FILE

    assert emr.WEIGHTS_KEY == f"models/keras/{WEIGHTS_FILE}"


def test_top_level_import_stays_light() -> None:
    """`fruits --help` imports every command module: infra.emr must not drag boto3 in."""
    code = "import sys, infra.emr; print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# ============================================================================ validation before any call
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--instance-type", "m5.xlarg"], "unknown instance type 'm5.xlarg': known types are c5.xlarge, m5.2xlarge"),
        (["--release-label", "emr-6.15.0"], "is not an emr-7.x release"),
        (["--conf", "sparkdefaults:spark.executor.memory=10g"], "unknown configuration classification 'sparkdefaults'"),
        (["--conf", "spark-defaults"], "is not CLASSIFICATION:PROPERTY=VALUE"),
        (["--bucket", "Fruits_Bucket"], "is not a valid S3 bucket name"),
        (["--idle-timeout", "30"], "--idle-timeout must be between 60 and 604800"),
        (["--core", "0"], "--core must be at least 1"),
        (["--task", "1", "--spot-bid-fraction", "1.5"], "--spot-bid-fraction must be in (0, 1]"),
        (["--wheelhouse", "https://wheels.example/w/"], "--wheelhouse 'https://wheels.example/w/' is not an S3 prefix"),
        (["--wheelhouse", f"s3://{BUCKET}"], "is not an S3 prefix"),
        (["--wheelhouse", "s3://Wheels_Bucket/w/"], "--wheelhouse bucket 'Wheels_Bucket' is not a valid S3 bucket name"),
        (["--region", "ap-southeast-2", "--task", "1", "--spot-bid-fraction", "0.5"], "on-demand price of m5.xlarge"),
    ],
)
def test_up_rejects_bad_input_before_any_call(
    flags: list[str], message: str, no_network: list, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["emr", "up", "--bucket", BUCKET, *flags])
    err = capsys.readouterr().err

    assert rc == 1
    assert no_network == []
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_validate_request_applies_botocore_and_service_model_enums() -> None:
    request = emr.planned_request(emr.ClusterOptions(bucket=BUCKET, task_count=1))

    wrong_type = copy.deepcopy(request)
    wrong_type["Instances"]["InstanceGroups"][1]["InstanceCount"] = "2"
    with pytest.raises(FruitsError, match=r"Invalid type for parameter Instances\.InstanceGroups\[1\]\.InstanceCount"):
        emr.validate_request(wrong_type)

    missing = copy.deepcopy(request)
    del missing["Name"]
    with pytest.raises(FruitsError, match="Missing required parameter"):
        emr.validate_request(missing)

    bad_market = copy.deepcopy(request)
    bad_market["Instances"]["InstanceGroups"][2]["Market"] = "SPOTTY"
    with pytest.raises(FruitsError, match=r"Instances\.InstanceGroups\[2\]\.Market='SPOTTY' is not one of ON_DEMAND, SPOT"):
        emr.validate_request(bad_market)

    bad_role = copy.deepcopy(request)
    bad_role["Instances"]["InstanceGroups"][0]["InstanceRole"] = "PRIMARY"
    with pytest.raises(FruitsError, match="is not one of MASTER, CORE, TASK"):
        emr.validate_request(bad_role)

    nested = copy.deepcopy(request)
    nested["Configurations"][1]["Configurations"] = [{"Classification": "export", "Properties": {}}]
    with pytest.raises(FruitsError, match="'export' cannot be nested in 'spark-defaults'"):
        emr.validate_request(nested)

    with pytest.raises(FruitsError, match="ActionOnFailure='KEEP_GOING' is not one of"):
        emr.validate_parameters(
            "AddJobFlowSteps",
            {"JobFlowId": "j-1", "Steps": [{"Name": "x", "ActionOnFailure": "KEEP_GOING", "HadoopJarStep": {"Jar": "a"}}]},
        )


# ============================================================================ steps
def test_steps_run_our_jobs_through_spark_submit() -> None:
    options = emr.JobOptions(
        bucket=BUCKET, tracking_uri="http://mlflow.internal:5000", trigger="10s", max_files_per_trigger=500
    )
    fit, stream = emr.build_steps("both", options)

    spark_submit = ["spark-submit", "--deploy-mode", "client", "--master", "yarn", f"s3://{BUCKET}/bootstrap/spark_entry.py"]
    assert (fit["Name"], fit["ActionOnFailure"]) == ("fruits-fit", "CANCEL_AND_WAIT")
    assert (stream["Name"], stream["ActionOnFailure"]) == ("fruits-stream", "CONTINUE")
    assert fit["HadoopJarStep"] == {
        "Jar": "command-runner.jar",
        "Args": [
            *spark_submit, "fit",
            "--images", f"s3://{BUCKET}/images/",
            "--features-output", f"s3://{BUCKET}/features/",
            "--tracking-uri", "http://mlflow.internal:5000",
            "--weights", WEIGHTS_URI,
        ],
    }  # fmt: skip
    assert stream["HadoopJarStep"]["Args"] == [
        *spark_submit, "stream",
        "--source", f"s3://{BUCKET}/images/",
        "--output", f"s3://{BUCKET}/results/",
        "--errors", f"s3://{BUCKET}/errors/",
        "--checkpoint", f"s3://{BUCKET}/checkpoints/stream/",
        "--tracking-uri", "http://mlflow.internal:5000",
        "--weights", WEIGHTS_URI,
        "--trigger", "10s",
        "--max-files-per-trigger", "500",
    ]  # fmt: skip
    assert [s["Name"] for s in emr.build_steps("stream", options)] == ["fruits-stream"]


@pytest.mark.parametrize("uri", [None, "sqlite:////tmp/mlflow.db", "/home/hadoop/mlruns", "file:///mnt/mlruns"])
def test_steps_refuse_a_registry_that_dies_with_the_cluster(uri: str | None) -> None:
    with pytest.raises(FruitsError, match="tracking"):
        emr.check_tracking_uri(uri)


# ============================================================================ lifecycle on moto
def test_up_submit_status_down_on_moto(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    name = f"fruits-test-{uuid.uuid4().hex[:8]}"  # other tests share the moto server
    aws = ["--endpoint-url", moto_server, "--name", name]
    client = boto3.client("emr", region_name="eu-west-3", endpoint_url=moto_server)

    assert main(["emr", "up", "--bucket", BUCKET, *aws, "--task", "2", "--idle-timeout", "3600",
                 "--owner", "vision-team", "--json"]) == 0  # fmt: skip
    cluster_id = last_json(capsys.readouterr().out)["cluster_id"]

    cluster = client.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Name"] == name
    assert cluster["ReleaseLabel"] == "emr-7.10.0"
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert cluster["VisibleToAllUsers"] is True
    assert cluster["ServiceRole"] == "fruits-emr-service-role"
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "fruits-emr-ec2-profile"
    assert {"Key": "owner", "Value": "vision-team"} in cluster["Tags"]
    sent = {c["Classification"]: c for c in cluster["Configurations"]}
    assert sent["spark-defaults"]["Properties"]["spark.executor.instances"] == "4"  # 2 core + 2 task
    assert sent["spark-env"]["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == PYTHON
    # moto does not model AutoTerminationPolicy; the request test checks it.

    groups = client.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted((g["InstanceGroupType"], g["Market"], g["RequestedInstanceCount"], g["InstanceType"]) for g in groups) == [
        ("CORE", "ON_DEMAND", 2, "m5.xlarge"),
        ("MASTER", "ON_DEMAND", 1, "m5.xlarge"),
        ("TASK", "SPOT", 2, "m5.xlarge"),
    ]
    (bootstrap,) = client.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert bootstrap["ScriptPath"] == f"s3://{BUCKET}/bootstrap/bootstrap.sh"
    assert bootstrap["Args"] == [
        f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
        f"s3://{BUCKET}/bootstrap/constraints.txt",
        WEIGHTS_URI,
        f"s3://{BUCKET}/bootstrap/wheelhouse/",  # what bootstrap.sh installs from, with no package index
    ]

    # The tracking URI comes from the environment when the flag is absent; the cluster is found by name.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert main(["emr", "submit", "--bucket", BUCKET, "--job", "both", *aws, "--json"]) == 0
    added = last_json(capsys.readouterr().out)
    assert added["cluster_id"] == cluster_id
    assert [s["name"] for s in added["steps"]] == ["fruits-fit", "fruits-stream"]

    steps = {s["Name"]: s for s in client.list_steps(ClusterId=cluster_id)["Steps"]}
    assert steps.keys() == {"fruits-fit", "fruits-stream"}
    stream_args = steps["fruits-stream"]["Config"]["Args"]
    assert stream_args[:5] == ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    assert stream_args[stream_args.index("--source") + 1] == f"s3://{BUCKET}/images/"
    assert stream_args[stream_args.index("--tracking-uri") + 1] == "http://mlflow.internal:5000"
    assert steps["fruits-stream"]["ActionOnFailure"] == "CONTINUE"
    assert steps["fruits-fit"]["ActionOnFailure"] == "CANCEL_AND_WAIT"

    assert main(["emr", "status", *aws, "--json"]) == 0
    status = last_json(capsys.readouterr().out)
    assert status["cluster_id"] == cluster_id
    assert status["state"] in {"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"}
    assert [s["name"] for s in status["steps"]] == ["fruits-fit", "fruits-stream"]  # oldest first

    assert main(["emr", "down", *aws]) == 1  # no --yes: nothing happens
    assert "--yes" in capsys.readouterr().err
    assert client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] not in {"TERMINATING", "TERMINATED"}

    assert main(["emr", "down", *aws, "--yes", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["state"] in {"TERMINATING", "TERMINATED"}
    assert client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] in {"TERMINATING", "TERMINATED"}

    # Gone from the active list: a later submit by name finds nothing instead of a dead cluster.
    assert main(["emr", "submit", "--bucket", BUCKET, *aws]) == 1
    assert f"no active EMR cluster named '{name}'" in capsys.readouterr().err


def test_aws_errors_are_one_line(moto_server: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "status", "--endpoint-url", moto_server, "--cluster-id", "j-DOESNOTEXIST"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fruits emr: error: describe_cluster failed:") and len(err.strip().splitlines()) == 1


# ============================================================================ the files shipped to S3
def test_spark_entry_runs_the_cli_and_exits_with_its_code() -> None:
    entry = [sys.executable, str(ROOT / "cli" / "spark_entry.py")]
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*entry, *args], capture_output=True, text=True, env=env, timeout=60)

    refused = run("emr", "down")
    assert refused.returncode == 1 and "--yes" in refused.stderr

    planned = run("emr", "plan", "--bucket", BUCKET, "--json")
    assert planned.returncode == 0
    assert last_json(planned.stdout)["request"]["Name"] == "fruits-stream"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\nset -eu\n" + body)
    path.chmod(0o755)


# Two wheels stand in for the wheelhouse that infra/build_wheelhouse.sh builds (the real one is ~0.5 GB).
FAKE_WHEELS = (
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl",
)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    """A fake EMR node: S3 is a directory, `aws`/`sudo`/`dnf`/`python3.11` are recording stubs."""
    s3, bin_dir, calls, tmpdir = tmp_path / "s3", tmp_path / "bin", tmp_path / "calls", tmp_path / "var-tmp"
    wheelhouse = s3 / BUCKET / "bootstrap" / "wheelhouse"
    for d in (wheelhouse, s3 / BUCKET / "models" / "keras", bin_dir, calls, tmpdir):
        d.mkdir(parents=True)
    (s3 / BUCKET / "bootstrap" / "fruits-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (s3 / BUCKET / "bootstrap" / "constraints.txt").write_text((ROOT / "constraints.txt").read_text())
    for name in FAKE_WHEELS:
        (wheelhouse / name).write_bytes(b"wheel")
    weights = s3 / BUCKET / WEIGHTS_URI.removeprefix(f"s3://{BUCKET}/")
    weights.write_bytes(b"h5 weights")

    _stub(bin_dir, "sudo", 'exec "$@"\n')
    _stub(bin_dir, "dnf", f'echo "dnf $*" >> {calls}/log\n')
    # `aws s3 sync` of a prefix that does not exist copies nothing and succeeds, as on S3.
    _stub(bin_dir, "aws", f"""echo "aws $*" >> {calls}/aws.log
op="$1 $2"; shift 2
[ "$1" = --only-show-errors ] && shift
src="{s3}/${{1#s3://}}"
case "$op" in
  "s3 cp") cp "$src" "$2" ;;
  "s3 sync") mkdir -p "$2"; if [ -d "$src" ]; then cp -R "$src/." "$2/"; fi ;;
  *) echo "aws stub: no $op" >&2; exit 2 ;;
esac
""")
    # pip install: keep the constraints file it was given and what its --find-links directory held then
    # (the bootstrap deletes its working directory on exit).
    _stub(
        bin_dir,
        "python3.11",
        f"""echo "python3.11 $*" >> {calls}/log
case "$*" in
  "-m pip --version") exit 0 ;;
  "-m pip show"*) [ -n "${{FAKE_PYSPARK_INSTALLED:-}}" ] ;;
  "-m pip install"*)
    prev=""
    for a in "$@"; do
      links=""
      [ "$prev" = --find-links ] && links="$a"
      case "$a" in --find-links=*) links="${{a#--find-links=}}" ;; esac
      [ -n "$links" ] && {{ echo "$links" >> {calls}/find-links-dirs; ls "$links" > {calls}/find-links-listing.txt; }}
      [ -f "$a" ] && cp "$a" {calls}/constraints-used.txt
      prev="$a"
    done
    exit 0 ;;
  "-c "*) echo "fruits 0.1.0 onnxruntime stub" ;;
esac
""",
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KERAS_HOME": str(tmp_path / "home" / ".keras"),
        "TMPDIR": str(tmpdir),
    }
    return {"env": env, "calls": calls, "keras_home": tmp_path / "home" / ".keras", "s3": s3, "tmpdir": tmpdir}


def _bootstrap(node: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess:
    script = ROOT / "infra" / "bootstrap.sh"
    env = {**node["env"], **env}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=30)


def test_bootstrap_installs_without_pyspark_and_caches_the_weights(node: dict[str, Any]) -> None:
    first, second = _bootstrap(node, *BOOTSTRAP_ARGS), _bootstrap(node, *BOOTSTRAP_ARGS)  # idempotent: twice in a row

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    log = (node["calls"] / "log").read_text()
    assert "dnf" not in log  # python3.11 was already there
    assert "fruits-0.1.0-py3-none-any.whl[keras]" in log
    used = (node["calls"] / "constraints-used.txt").read_text().splitlines()
    assert "numpy==2.4.6" in used and "tensorflow_cpu==2.21.0" in used  # the other pins are kept
    assert not [line for line in used if line.lower().startswith("pyspark")]
    cached = node["keras_home"] / "models" / WEIGHTS_URI.rsplit("/", 1)[1]
    assert cached.read_bytes() == b"h5 weights"
    assert "fruits-bootstrap" in first.stdout and "done" in first.stdout.splitlines()[-1]


def test_bootstrap_installs_from_the_synced_wheelhouse_and_no_index(node: dict[str, Any]) -> None:
    runs = [_bootstrap(node, *BOOTSTRAP_ARGS) for _ in range(2)]

    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    aws_calls = (node["calls"] / "aws.log").read_text().splitlines()
    syncs = [line.split() for line in aws_calls if line.startswith("aws s3 sync")]
    assert [sync[:5] for sync in syncs] == [["aws", "s3", "sync", "--only-show-errors", WHEELHOUSE_URI]] * 2
    synced_dirs = [sync[5] for sync in syncs]
    calls = (node["calls"] / "log").read_text().splitlines()
    # Every pip call that could fetch a package (all but `--version` and `show`) is an install, one per run.
    pip_calls = [line for line in calls if line.startswith("python3.11 -m pip") and line.split()[3] not in ("--version", "show")]
    installs = [line for line in pip_calls if line.split()[3] == "install"]
    assert len(installs) == len(pip_calls) == 2
    for install in installs:
        words = install.split()
        assert "--no-index" in words  # never an install that may reach a package index
        assert not {"--index-url", "-i", "--extra-index-url"} & set(words)
        assert "--only-binary=:all:" in words  # nothing is built on the nodes
    # pip looked only in the directory the wheelhouse was synced to, and found its wheels there.
    assert (node["calls"] / "find-links-dirs").read_text().splitlines() == synced_dirs
    assert sorted((node["calls"] / "find-links-listing.txt").read_text().split()) == sorted(FAKE_WHEELS)
    # Staged under TMPDIR (on disk on the nodes, not the /tmp tmpfs) and removed afterwards.
    assert all(Path(d).is_relative_to(node["tmpdir"]) for d in synced_dirs)
    assert list(node["tmpdir"].iterdir()) == []
    assert f"syncing {WHEELHOUSE_URI}" in runs[0].stdout and "from 2 wheels, no package index" in runs[0].stdout


def test_bootstrap_stops_on_an_empty_wheelhouse_before_pip(node: dict[str, Any]) -> None:
    missing = f"s3://{BUCKET}/bootstrap/wheelhouse-never-uploaded/"
    result = _bootstrap(node, *BOOTSTRAP_ARGS[:3], missing)

    assert result.returncode == 1
    assert f"ERROR: no wheels under {missing}" in result.stdout
    assert "pip install" not in (node["calls"] / "log").read_text()
    assert list(node["tmpdir"].iterdir()) == []


def test_bootstrap_fails_if_pyspark_got_installed(node: dict[str, Any]) -> None:
    result = _bootstrap(node, *BOOTSTRAP_ARGS, FAKE_PYSPARK_INSTALLED="1")

    assert result.returncode == 1
    assert "pip installed pyspark" in result.stdout


def test_bootstrap_needs_its_four_arguments(node: dict[str, Any]) -> None:
    result = _bootstrap(node, *BOOTSTRAP_ARGS[:3])  # the old three-argument call

    assert result.returncode != 0
    assert "usage: bootstrap.sh WHEEL_URI CONSTRAINTS_URI WEIGHTS_URI WHEELHOUSE_URI" in result.stderr
    assert not (node["calls"] / "aws.log").exists()  # nothing fetched


# ============================================================================ infra/build_wheelhouse.sh
def _fake_wheel(
    directory: Path, name: str, version: str, tag: str, requires: Sequence[str] = (), extras: Sequence[str] = ()
) -> Path:
    """A minimal valid wheel: enough metadata for pip to resolve it."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = [
        "Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
        *[f"Provides-Extra: {e}" for e in extras], *[f"Requires-Dist: {r}" for r in requires],
    ]  # fmt: skip
    path = directory / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def wheel_index(tmp_path: Path) -> dict[str, Any]:
    """A local directory of wheels instead of a package index: the script runs real pip, offline."""
    links = tmp_path / "links"
    links.mkdir()
    _fake_wheel(links, "fruitsdep-base", "1.0", "py3-none-any")
    _fake_wheel(links, "fruitsdep-pure", "1.0", "py3-none-any")
    # Like tensorflow-cpu 2.21.0: only a manylinux_2_27 wheel, which AL2023 (glibc 2.34) runs.
    _fake_wheel(links, "fruitsdep-native", "1.0", "cp311-cp311-manylinux_2_27_x86_64")
    # Newer, but for a glibc AL2023 does not have, or for another OS: never picked.
    _fake_wheel(links, "fruitsdep-native", "1.1", "cp311-cp311-manylinux_2_35_x86_64")
    _fake_wheel(links, "fruitsdep-native", "1.2", "cp311-cp311-win_amd64")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", EXTRA_WHEELS=str(links), PYTHON=sys.executable)
    return {"links": links, "env": env, "out": tmp_path / "wheelhouse", "dist": tmp_path / "dist"}


def _project_wheel(dist: Path, keras: Sequence[str]) -> Path:
    dist.mkdir(exist_ok=True)
    requires = ["fruitsdep-base", *(f'{r}; extra == "keras"' for r in keras)]
    return _fake_wheel(dist, "fruits", "0.1.0", "py3-none-any", requires, extras=["keras"])


def _build_wheelhouse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = ROOT / "infra" / "build_wheelhouse.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=120)


def test_build_wheelhouse_keeps_the_node_platform_wheels_only(wheel_index: dict[str, Any]) -> None:
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-pure", "fruitsdep-native"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in wheel_index["out"].iterdir()) == [
        "fruitsdep_base-1.0-py3-none-any.whl",
        "fruitsdep_native-1.0-cp311-cp311-manylinux_2_27_x86_64.whl",
        "fruitsdep_pure-1.0-py3-none-any.whl",
    ]  # not the project wheel: it is uploaded per release beside the wheelhouse
    assert "3 wheels" in result.stderr
    assert f"aws s3 sync --delete {wheel_index['out']} s3://<bucket>/bootstrap/wheelhouse/" in result.stderr


def test_build_wheelhouse_names_a_package_without_a_wheel(wheel_index: dict[str, Any]) -> None:
    (wheel_index["links"] / "fruitsdep_sdist-1.0.tar.gz").write_bytes(b"sdist")
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-sdist"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 1
    assert "fruitsdep-sdist" in result.stderr
    assert "as an sdist only" in result.stderr and "EXTRA_WHEELS" in result.stderr


def test_build_wheelhouse_refuses_pyspark(wheel_index: dict[str, Any]) -> None:
    _fake_wheel(wheel_index["links"], "pyspark", "3.5.5", "py2.py3-none-any")
    _fake_wheel(wheel_index["links"], "fruitsdep-sparky", "1.0", "py3-none-any", ["pyspark"])
    project = _project_wheel(wheel_index["dist"], ["fruitsdep-sparky"])
    result = _build_wheelhouse(str(wheel_index["out"]), str(project), env=wheel_index["env"])

    assert result.returncode == 1
    assert "pyspark is in the wheelhouse" in result.stderr


def test_build_wheelhouse_guards_before_downloading(wheel_index: dict[str, Any], tmp_path: Path) -> None:
    project = _project_wheel(wheel_index["dist"], [])
    out = wheel_index["out"]
    out.mkdir()
    (out / "stale-1.0-py3-none-any.whl").write_bytes(b"old")
    not_empty = _build_wheelhouse(str(out), str(project), env=wheel_index["env"])
    assert not_empty.returncode == 2 and "is not empty" in not_empty.stderr

    other_python = tmp_path / "python-elsewhere"
    other_python.write_text('#!/usr/bin/env bash\necho "3.12 darwin arm64"\n')
    other_python.chmod(0o755)
    wrong_host = _build_wheelhouse(str(tmp_path / "new"), str(project), env={**wheel_index["env"], "PYTHON": str(other_python)})
    assert wrong_host.returncode == 2 and "(got: 3.12 darwin arm64)" in wrong_host.stderr
    assert not (tmp_path / "new").exists()

    no_wheel = _build_wheelhouse(str(tmp_path / "new"), str(tmp_path / "missing.whl"), env=wheel_index["env"])
    assert no_wheel.returncode == 2 and "no such wheel" in no_wheel.stderr
