"""`fruits serverless`: plan offline, one-line errors, and the application lifecycle on moto's EMR Serverless.

moto 5.2.5 validates release labels with a pattern that predates the `emr-spark-*` train (it
rejects emr-spark-8.1.0, which the first test shows through `up`), so the lifecycle creates the
application from our own request with an emr-7 label moto accepts; everything after that (job
runs, status, stop, delete) goes through the command line. What moto does not model (mode,
retry policy, architecture) is asserted on the requests in tests/infra/test_serverless.py.
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from aws_support import ACCOUNT, BUCKET, REGION, last_json
from cli.main import main
from infra.aws import create_application
from infra.serverless import ServerlessOptions, application_request

NETWORK = ["--subnet-id", "subnet-0a1b2c", "--security-group-id", "sg-0d4e5f"]


def test_plan_prints_both_requests_their_cost_and_the_comparison_offline(
    no_network: list, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(
            ["serverless", "plan", "--bucket", BUCKET, *NETWORK, "--tracking-uri", "https://mlflow.internal", "--json"]
        )
        == 0
    )
    summary = last_json(capsys.readouterr().out)

    assert no_network == []
    assert summary["application"]["releaseLabel"] == "emr-spark-8.1.0"
    stream = summary["stream_job_run"]
    assert (stream["mode"], stream["executionTimeoutMinutes"]) == ("STREAMING", 0)
    assert "https://mlflow.internal" in stream["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert summary["cost"]["per_hour"] == pytest.approx(
        0.9074
    )  # 2 x 0.06318 + 8 x 0.00689 + 2 x (4 x 0.06318 + 16 x 0.00689)
    targets = summary["comparison"]["targets"]
    assert targets["EMR on EC2"]["stream_per_hour"] == pytest.approx(0.816)  # the cluster with as many processing nodes
    assert targets["EMR Serverless"]["stream_per_month"] == pytest.approx(662.402)  # 0.9074 x 730


def test_plan_human_output_ends_with_the_side_by_side_table(no_network: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["serverless", "plan", "--bucket", BUCKET]) == 0
    captured = capsys.readouterr()

    lines = captured.out.splitlines()
    assert "cost side by side, eu-west-3, USD:" in lines
    assert lines[lines.index("cost side by side, eu-west-3, USD:") + 2].split() == [
        "always-on",
        "stream,",
        "per",
        "hour",
        "0.8160",
        "0.9074",
    ]
    assert "no --subnet-id: `up` needs the private subnets" in captured.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "--subnet-id and --security-group-id are required"),
        ([*NETWORK, "--executor-memory-gb", "40"], "a 4-vCPU worker takes 8-30 GB of memory"),
        ([*NETWORK, "--release-label", "emr-7.10.0"], "--release-label 'emr-7.10.0' is not supported"),
    ],
)
def test_up_refuses_bad_input_before_any_call(
    flags: list[str], message: str, no_network: list, capsys: pytest.CaptureFixture
) -> None:
    assert main(["serverless", "up", "--bucket", BUCKET, *flags]) == 1
    err = capsys.readouterr().err
    assert no_network == [] and message in err and len(err.strip().splitlines()) == 1


def test_moto_rejects_the_emr_spark_release_label_and_the_error_is_one_line(
    moto_server: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["serverless", "up", "--bucket", BUCKET, *NETWORK, "--endpoint-url", moto_server]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fruits serverless: error: create_application failed: ValidationException:")
    assert "emr-spark-8.1.0" in err and len(err.strip().splitlines()) == 1


def test_submit_status_stop_down_on_moto(
    moto_server: str, project_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    name = f"fruits-test-{uuid.uuid4().hex[:8]}"  # other tests share the moto server
    serverless = boto3.client("emr-serverless", region_name=REGION, endpoint_url=moto_server)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    request = application_request(
        ServerlessOptions(bucket=BUCKET, name=name, subnet_ids=("subnet-0a1b2c",), security_group_ids=("sg-0d4e5f",))
    )
    request["releaseLabel"] = "emr-7.12.0"  # moto's release pattern predates emr-spark-8.x (see the module docstring)
    application_id = create_application(serverless, request)
    assert serverless.get_application(applicationId=application_id)["application"]["networkConfiguration"] == {
        "subnetIds": ["subnet-0a1b2c"],
        "securityGroupIds": ["sg-0d4e5f"],
    }
    aws = ["--endpoint-url", moto_server, "--name", name]

    # The documented order: the fit first (moto finishes job runs at once: SUCCESS), then the stream.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.internal")
    assert main(["serverless", "submit", "--bucket", BUCKET, "--job", "fit", *aws]) == 0
    assert "(BATCH)" in capsys.readouterr().out

    # The tracking URI comes from the environment; the role name becomes an ARN in the caller's account.
    # mlflow.internal is not reachable from here (the model check is tests/cli/test_submit_checks.py's).
    assert (
        main(["serverless", "submit", "--bucket", BUCKET, "--job", "stream", "--skip-model-check", *aws, "--json"]) == 0
    )
    started = last_json(capsys.readouterr().out)
    assert (started["application_id"], started["name"], started["mode"]) == (
        application_id,
        "fruits-stream",
        "STREAMING",
    )
    run = serverless.get_job_run(applicationId=application_id, jobRunId=started["job_run_id"])["jobRun"]
    assert run["executionRole"] == f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-serverless-job-role"
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"s3a://{BUCKET}/bootstrap/spark_entry.py"
    assert driver["entryPointArguments"][driver["entryPointArguments"].index("--checkpoint") + 1] == (
        f"s3a://{BUCKET}/checkpoints/stream"
    )
    assert (
        f"spark.archives=s3a://{BUCKET}/bootstrap/venv/fruits-venv.tar.gz#environment"
        in driver["sparkSubmitParameters"]
    )
    assert run["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == (
        f"s3://{BUCKET}/logs/serverless/"
    )

    assert main(["serverless", "status", *aws, "--json"]) == 0
    status = last_json(capsys.readouterr().out)
    assert status["application_id"] == application_id
    assert sorted(r["name"] for r in status["job_runs"]) == ["fruits-fit", "fruits-stream"]

    # The graceful stop: the marker the stream polls, directly under its checkpoint.
    assert main(["serverless", "stop", "--bucket", BUCKET, "--endpoint-url", moto_server, "--json"]) == 0
    assert last_json(capsys.readouterr().out)["stop_marker"] == f"s3://{BUCKET}/checkpoints/stream/_stop"
    marker = s3.get_object(Bucket=BUCKET, Key="checkpoints/stream/_stop")["Body"].read()
    assert b"fruits serverless stop" in marker

    assert main(["serverless", "down", *aws]) == 1  # no --yes: nothing happens
    assert "--yes" in capsys.readouterr().err
    assert serverless.get_application(applicationId=application_id)["application"]["state"] == "STARTED"

    assert main(["serverless", "down", *aws, "--yes", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["state"] == "TERMINATED"
    assert main(["serverless", "status", *aws]) == 1  # gone: no live application by that name
    assert f"no EMR Serverless application named '{name}'" in capsys.readouterr().err
