"""`fruits emr`: flags, human and --json output, one-line errors, and the cluster lifecycle on moto.

Prices in the expectations are typed from infra/prices.json by hand and multiplied out in the
comments. The lifecycle runs against the session's real moto server over HTTP.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from aws_support import BUCKET, WEIGHTS_URI, WHEELHOUSE_URI, last_json
from cli.main import main
from support import WITHOUT_SPARK

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3.11"
LOCK_SHA256 = "0123456789abcdef" * 4  # a well-formed sha256 for commands that need one
SUBNET = "subnet-0a1b2c3d"
SECURITY_GROUPS = [
    "--primary-security-group",
    "sg-0aaa1111",
    "--core-security-group",
    "sg-0bbb2222",
    "--service-access-security-group",
    "sg-0ccc3333",
]


def named(args: list[str]) -> dict[str, str]:
    """bootstrap.sh's --name value pairs as a dict (asserts they are pairs)."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    return dict(zip(args[::2], args[1::2], strict=True))


def bootstrap_args(request: dict) -> dict[str, str]:
    (action,) = request["BootstrapActions"]
    return named(action["ScriptBootstrapAction"]["Args"])


@pytest.mark.parametrize("module", ["cli.emr", "cli.serverless"])
def test_the_launchers_import_infra_at_the_top_and_nothing_heavy(module: str) -> None:
    """`fruits emr --help` loads the launcher and infra, but no boto3, botocore, Spark or MLflow (infra imports
    boto3/botocore only in the functions that call AWS)."""
    code = (
        f"import sys, {module}; heavy = {{'boto3', 'botocore', 'pyspark', 'py4j', 'mlflow'}};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), 'infra.cluster' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[] True"


# `fruits` in a fresh interpreter where pyspark and py4j cannot be imported (support.WITHOUT_SPARK).
FRUITS_WITHOUT_SPARK = (
    WITHOUT_SPARK
    + """
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""
)


def test_emr_plan_works_without_pyspark() -> None:
    """Issue 21: the launchers need the Spark-free core only (fruits.contracts), not the spark extra."""
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # and no AWS call either
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FRUITS_WITHOUT_SPARK,
            "emr",
            "plan",
            "--bucket",
            BUCKET,
            "--subnet-id",
            SUBNET,
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    request = last_json(done.stdout)["request"]
    assert request["Instances"]["Ec2SubnetId"] == SUBNET
    # The application settings reached the request from fruits.contracts, with pyspark unimportable.
    (defaults,) = [c for c in request["Configurations"] if c["Classification"] == "spark-defaults"]
    assert defaults["Properties"]["spark.sql.execution.arrow.maxRecordsPerBatch"] == "64"


# ---------------------------------------------------------------------------- plan: offline, request + cost
def test_plan_prints_request_and_cost_without_any_network(no_network: list, capsys: pytest.CaptureFixture) -> None:
    rc = main(["emr", "plan", "--bucket", BUCKET, "--images-per-second-per-node", "100", "--json"])
    summary = last_json(capsys.readouterr().out)

    assert rc == 0 and no_network == []
    request, cost = summary["request"], summary["cost"]
    assert request["Name"] == "fruits-stream"
    assert request["ReleaseLabel"] == "emr-spark-8.1.0"
    assert request["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert [(g["InstanceRole"], g["Market"], g["InstanceCount"]) for g in request["Instances"]["InstanceGroups"]] == [
        ("MASTER", "ON_DEMAND", 1),
        ("CORE", "ON_DEMAND", 2),
    ]
    assert bootstrap_args(request)["--wheelhouse"] == WHEELHOUSE_URI
    assert cost["region"] == "eu-west-3"  # conftest's AWS_REGION
    assert {b["bucket"] for b in summary["gateway_endpoint_buckets"]} >= {BUCKET, "al2023-repos-eu-west-3-de612dc2"}
    assert cost["per_hour"] == pytest.approx(0.816)  # 3 x (0.224 + 0.048)
    assert cost["per_million_images"] == pytest.approx(1.133333, rel=1e-5)  # 0.816 / (2 x 100 x 3600) x 1e6
    assert [g["per_hour"] for g in cost["groups"]] == pytest.approx([0.272, 0.544])


def test_the_flags_map_onto_cluster_options_by_name(no_network: list, capsys: pytest.CaptureFixture) -> None:
    """Issue 21: every ClusterOptions field is a flag of `plan`/`up` whose dest is the field's name (no hand mapping);
    the values below reach the request through that mapping alone."""
    from cli.main import build_parser
    from infra.cluster import ClusterOptions

    args = build_parser(["emr"]).parse_args(["emr", "plan", "--bucket", BUCKET])
    computed = {"region", "lock_sha256", "extra_configurations"}
    assert {f.name for f in dataclasses.fields(ClusterOptions)} - computed <= set(vars(args))

    secret = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:fruits/mlflow-AbCdEf"
    assert (
        main(
            [
                "emr",
                "plan",
                "--bucket",
                BUCKET,
                "--core",
                "3",
                "--task",
                "1",
                "--ebs-gb",
                "40",
                "--idle-timeout",
                "600",
                "--mlflow-secret",
                secret,
                "--project",
                "vision",
                "--name",
                "vision-stream",
                "--json",
            ]
        )
        == 0
    )
    request = last_json(capsys.readouterr().out)["request"]
    groups = {g["InstanceRole"]: g for g in request["Instances"]["InstanceGroups"]}
    assert (groups["CORE"]["InstanceCount"], groups["TASK"]["InstanceCount"]) == (3, 1)
    assert groups["CORE"]["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]["VolumeSpecification"]["SizeInGB"] == 40
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 600}
    assert bootstrap_args(request)["--mlflow-secret"] == secret
    assert {"Key": "project", "Value": "vision"} in request["Tags"] and request["Name"] == "vision-stream"
    # Unset flags keep ClusterOptions' own defaults (stated once, there).
    assert main(["emr", "plan", "--bucket", BUCKET, "--json"]) == 0
    default = last_json(capsys.readouterr().out)["request"]
    assert {"Key": "project", "Value": ClusterOptions(bucket=BUCKET).project} in default["Tags"]
    assert "AutoTerminationPolicy" not in default and len(default["Instances"]["InstanceGroups"]) == 2


def test_plan_human_output_shows_pretty_request_and_cost_lines(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out

    assert '  "ReleaseLabel": "emr-spark-8.1.0",' in out  # indented JSON, not one line
    assert (
        "release: emr-spark-8.1.0 (Spark 4.1.1, Scala 2.13.17, Python 3.11, Delta 4.2.0; long-term support until 2029-09-07)"
        in out
    )
    assert "primary 1 x m5.xlarge ON_DEMAND $0.2400/h each = $0.2400/h" in out  # 0.192 + 0.048
    assert "total   $0.7200/h" in out  # 3 x 0.24
    # 2 core nodes x 75 img/s (the default) = 150 img/s = 540,000 img/h; 0.72 / 0.54 = 1.3333
    assert "per 1M images $1.3333" in out
    assert (
        f"bootstrap: installs {WHEELHOUSE_URI}requirements.lock (sha256 <sha256 of requirements.lock: build the "
        f"wheelhouse>, every wheel hashed, s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl included) into "
        "/usr/bin/python3.11, no package index"
    ) in out
    assert no_network == []


def test_plan_and_up_put_the_local_locks_sha256_in_the_request(
    no_network: list, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("fruits[keras]==0.1.0 --hash=sha256:" + "1" * 64 + "\n")
    assert main(["emr", "plan", "--bucket", BUCKET, "--lock", str(lock), "--json"]) == 0
    captured = capsys.readouterr()

    # That one line's sha256, from `sha256sum` when the test was written.
    expected = "1cb4e026cf62d48b015e088e248640958274a0a5dbf98920bd88b2b7bc5aa30f"
    assert bootstrap_args(last_json(captured.out)["request"])["--lock-sha256"] == expected
    assert "requirements.lock" not in captured.err  # no warning: the request is complete


def test_up_refuses_a_request_without_the_locks_sha256(no_network: list, capsys: pytest.CaptureFixture) -> None:
    rc = main(["emr", "up", "--bucket", BUCKET, "--subnet-id", SUBNET, "--lock", "/nonexistent/requirements.lock"])
    err = capsys.readouterr().err

    assert rc == 1 and no_network == []
    assert "no requirements.lock sha256: the bootstrap checks the wheelhouse's lock" in err
    assert len(err.strip().splitlines()) == 1


def test_up_refuses_to_launch_without_a_subnet(no_network: list, capsys: pytest.CaptureFixture) -> None:
    """The default VPC is neither private nor tagged for AmazonEMRServicePolicy_v2: no silent default."""
    assert main(["emr", "up", "--bucket", BUCKET, "--lock-sha256", LOCK_SHA256]) == 1
    err = capsys.readouterr().err
    assert (
        "no --subnet-id: the cluster needs a private subnet tagged for-use-with-amazon-emr-managed-policies=true" in err
    )
    assert no_network == [] and len(err.strip().splitlines()) == 1


def test_plan_takes_another_wheelhouse(no_network: list, capsys: pytest.CaptureFixture) -> None:
    wheelhouse = f"s3://{BUCKET}/bootstrap/wheelhouse-2026-11/"
    assert main(["emr", "plan", "--bucket", BUCKET, "--wheelhouse", wheelhouse, "--json"]) == 0
    captured = capsys.readouterr()

    assert bootstrap_args(last_json(captured.out)["request"])["--wheelhouse"] == wheelhouse
    assert "outside" not in captured.err  # under bootstrap/: the stack's instance role reads it


def test_plan_warns_when_the_instance_role_cannot_read_the_wheelhouse(
    no_network: list, capsys: pytest.CaptureFixture
) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--wheelhouse", "s3://shared-wheels/fruits/", "--json"]) == 0
    captured = capsys.readouterr()

    assert bootstrap_args(last_json(captured.out)["request"])["--wheelhouse"] == "s3://shared-wheels/fruits/"
    assert f"--wheelhouse s3://shared-wheels/fruits/ is outside s3://{BUCKET}/bootstrap/" in captured.err


def test_plan_in_a_region_without_prices_says_unknown(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--region", "ap-southeast-2", "--json"]) == 0
    cost = last_json(capsys.readouterr().out)["cost"]

    assert cost["unknown"] is True
    assert cost["per_hour"] is None and cost["per_million_images"] is None
    assert all(g["per_hour"] is None and "ap-southeast-2" in g["note"] for g in cost["groups"])


# ---------------------------------------------------------------------------- bad input: one line, no call
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--instance-type", "m5.xlarg"], "unknown instance type 'm5.xlarg': known types are c5.xlarge, m5.2xlarge"),
        (
            ["--release-label", "emr-7.10.0"],
            "--release-label 'emr-7.10.0' is not supported: use one of emr-spark-8.1.0",
        ),
        (["--conf", "sparkdefaults:spark.executor.memory=10g"], "unknown configuration classification 'sparkdefaults'"),
        (["--conf", "spark-defaults"], "is not CLASSIFICATION:PROPERTY=VALUE"),
        (["--bucket", "Fruits_Bucket"], "is not a valid S3 bucket name"),
        (["--idle-timeout", "30"], "--idle-timeout must be between 60 and 604800"),
        (["--core", "0"], "--core must be at least 1"),
        (["--task", "1", "--spot-bid-fraction", "1.5"], "--spot-bid-fraction must be in (0, 1]"),
        (["--wheelhouse", "https://wheels.example/w/"], "--wheelhouse 'https://wheels.example/w/' is not an S3 prefix"),
        (["--wheelhouse", f"s3://{BUCKET}"], "is not an S3 prefix"),
        (
            ["--wheelhouse", "s3://Wheels_Bucket/w/"],
            "--wheelhouse bucket 'Wheels_Bucket' is not a valid S3 bucket name",
        ),
        (["--region", "ap-southeast-2", "--task", "1", "--spot-bid-fraction", "0.5"], "on-demand price of m5.xlarge"),
        (["--subnet-id", "vpc-0a1b2c3d"], "is not a subnet id"),
        (["--primary-security-group", "sg-0a1b2c3d"], "give all three of --primary-security-group"),
        (["--instance-type", "r5.xlarge"], "the YARN memory of r5.xlarge is not in infra/sizing.py"),
    ],
)
def test_up_rejects_bad_input_before_any_call(
    flags: list[str], message: str, no_network: list, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["emr", "up", "--bucket", BUCKET, "--lock-sha256", LOCK_SHA256, "--subnet-id", SUBNET, *flags])
    err = capsys.readouterr().err

    assert rc == 1
    assert no_network == []
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------- lifecycle on moto
def test_up_submit_status_stop_down_on_moto(
    moto_server: str, project_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    name = f"fruits-test-{uuid.uuid4().hex[:8]}"  # other tests share the moto server
    aws = ["--endpoint-url", moto_server, "--name", name]
    client = boto3.client("emr", region_name="eu-west-3", endpoint_url=moto_server)

    assert (
        main(
            [
                "emr",
                "up",
                "--bucket",
                BUCKET,
                *aws,
                "--task",
                "2",
                "--idle-timeout",
                "3600",
                "--subnet-id",
                SUBNET,
                *SECURITY_GROUPS,
                "--owner",
                "vision-team",
                "--lock-sha256",
                LOCK_SHA256,
                "--json",
            ]
        )
        == 0
    )
    cluster_id = last_json(capsys.readouterr().out)["cluster_id"]

    cluster = client.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Name"] == name
    assert cluster["ReleaseLabel"] == "emr-spark-8.1.0"
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert cluster["VisibleToAllUsers"] is True
    assert cluster["ServiceRole"] == "fruits-emr-service-role"
    # The instance profile has its role's name (EMR refuses any other); the stack's security configuration.
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "fruits-emr-ec2-role"
    assert cluster["SecurityConfiguration"] == "fruits-emr-security"
    attributes = cluster["Ec2InstanceAttributes"]
    assert attributes["Ec2SubnetId"] == SUBNET
    assert (
        attributes["EmrManagedMasterSecurityGroup"],
        attributes["EmrManagedSlaveSecurityGroup"],
        attributes["ServiceAccessSecurityGroup"],
    ) == ("sg-0aaa1111", "sg-0bbb2222", "sg-0ccc3333")
    assert {"Key": "owner", "Value": "vision-team"} in cluster["Tags"]
    sent = {c["Classification"]: c for c in cluster["Configurations"]}
    assert sent["spark-defaults"]["Properties"]["spark.executor.instances"] == "4"  # 2 core + 2 task
    assert sent["spark-env"]["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == PYTHON
    # moto does not model AutoTerminationPolicy; the request test checks it.

    groups = client.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted(
        (g["InstanceGroupType"], g["Market"], g["RequestedInstanceCount"], g["InstanceType"]) for g in groups
    ) == [
        ("CORE", "ON_DEMAND", 2, "m5.xlarge"),
        ("MASTER", "ON_DEMAND", 1, "m5.xlarge"),
        ("TASK", "SPOT", 2, "m5.xlarge"),
    ]
    (bootstrap,) = client.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert bootstrap["ScriptPath"] == f"s3://{BUCKET}/bootstrap/bootstrap.sh"
    assert named(bootstrap["Args"]) == {
        "--region": "eu-west-3",  # every `aws s3` call of the bootstrap names it
        "--python": PYTHON,
        "--wheel": f"s3://{BUCKET}/bootstrap/fruits-0.1.0-py3-none-any.whl",
        "--wheelhouse": WHEELHOUSE_URI,  # what bootstrap.sh installs from, with no package index
        "--lock-sha256": LOCK_SHA256,  # the only requirements.lock it accepts
        "--weights": WEIGHTS_URI,
    }

    # The tracking URI comes from the environment when the flag is absent; the cluster is found by name.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.internal")
    assert main(["emr", "submit", "--bucket", BUCKET, "--job", "both", *aws, "--json"]) == 0
    added = last_json(capsys.readouterr().out)
    assert added["cluster_id"] == cluster_id
    assert [s["name"] for s in added["steps"]] == ["fruits-fit", "fruits-stream"]

    # A second stream would queue behind the first forever (one step at a time): refused.
    assert main(["emr", "submit", "--bucket", BUCKET, "--job", "stream", "--skip-model-check", *aws]) == 1
    assert "a stream is already" in capsys.readouterr().err
    assert len(client.list_steps(ClusterId=cluster_id)["Steps"]) == 2

    steps = {s["Name"]: s for s in client.list_steps(ClusterId=cluster_id)["Steps"]}
    assert steps.keys() == {"fruits-fit", "fruits-stream"}
    stream_args = steps["fruits-stream"]["Config"]["Args"]
    assert stream_args[:5] == ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    assert stream_args[stream_args.index("--source") + 1] == f"s3a://{BUCKET}/images/"
    assert stream_args[stream_args.index("--tracking-uri") + 1] == "https://mlflow.internal"
    assert steps["fruits-stream"]["ActionOnFailure"] == "CONTINUE"
    assert steps["fruits-fit"]["ActionOnFailure"] == "CANCEL_AND_WAIT"

    assert main(["emr", "status", *aws, "--json"]) == 0
    status = last_json(capsys.readouterr().out)
    assert status["cluster_id"] == cluster_id
    assert status["state"] in {"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"}
    assert [s["name"] for s in status["steps"]] == ["fruits-fit", "fruits-stream"]  # oldest first

    # The graceful stop: the marker the stream polls, directly under its checkpoint.
    assert main(["emr", "stop", "--bucket", BUCKET, "--endpoint-url", moto_server, "--json"]) == 0
    assert last_json(capsys.readouterr().out)["stop_marker"] == f"s3://{BUCKET}/checkpoints/stream/_stop"
    s3 = boto3.client("s3", region_name="eu-west-3", endpoint_url=moto_server)
    assert b"fruits emr stop" in s3.get_object(Bucket=BUCKET, Key="checkpoints/stream/_stop")["Body"].read()

    assert main(["emr", "down", *aws]) == 1  # no --yes: nothing happens
    assert "--yes" in capsys.readouterr().err
    assert client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] not in {
        "TERMINATING",
        "TERMINATED",
    }

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


# ---------------------------------------------------------------------------- spark-submit entry
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


def test_plan_on_the_older_spark_4_release_warns_and_says_why(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["emr", "plan", "--bucket", BUCKET, "--release-label", "emr-spark-8.0.0", "--json"]) == 0
    captured = capsys.readouterr()

    assert last_json(captured.out)["request"]["ReleaseLabel"] == "emr-spark-8.0.0"
    assert (
        "emr-spark-8.0.0 runs Spark 4.0.2" in captured.err and "use emr-spark-8.1.0 (long-term support)" in captured.err
    )
