"""`submit` refuses what cannot work (issue 10, finding 2), against moto S3/EMR and a real MLflow server.

The documented order is: upload the labelled images, then `submit --job both` (the fit registers
the model the stream loads). Each refusal below would otherwise fail on the cluster: a fit on an
empty prefix (and its CANCEL_AND_WAIT then cancels the queued stream), a stream with no model.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from mlflow import MlflowClient

from aws_support import BUCKET, REGION, last_json, make_bucket, put_labelled_images
from cli.main import main


@pytest.fixture
def cluster(moto_server: str, project_bucket: str, capsys: pytest.CaptureFixture) -> dict:
    name = f"fruits-test-{uuid.uuid4().hex[:8]}"
    aws = ["--endpoint-url", moto_server, "--name", name]
    assert (
        main(
            [
                "emr",
                "up",
                "--bucket",
                project_bucket,
                *aws,
                "--subnet-id",
                "subnet-0a1b2c3d",
                "--lock-sha256",
                "ab" * 32,
                "--json",
            ]
        )
        == 0
    )
    cluster_id = last_json(capsys.readouterr().out)["cluster_id"]
    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    return {"aws": aws, "id": cluster_id, "emr": emr, "s3": s3}


def steps_of(cluster: dict) -> list[str]:
    return [s["Name"] for s in cluster["emr"].list_steps(ClusterId=cluster["id"])["Steps"]]


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_fit_on_an_empty_or_thin_prefix_is_refused(cluster: dict, capsys: pytest.CaptureFixture) -> None:
    bucket = f"fruits-thin-{uuid.uuid4().hex[:8]}"
    make_bucket(cluster["s3"], bucket)
    cluster["s3"].put_object(Bucket=bucket, Key="bootstrap/spark_entry.py", Body=b"entry")
    submit = [
        "emr",
        "submit",
        "--bucket",
        bucket,
        "--job",
        "both",
        *cluster["aws"],
        "--tracking-uri",
        "https://m.internal",
    ]

    err = refused(submit, capsys)
    assert f"s3a://{bucket}/images/ holds 0 labelled images in 0 class folders: the fit needs at least 300" in err

    put_labelled_images(cluster["s3"], bucket, {"Kumquats": 299})
    cluster["s3"].put_object(Bucket=bucket, Key="images/loose.jpg", Body=b"x")  # no class folder: not counted
    cluster["s3"].put_object(Bucket=bucket, Key="images/_tmp/a.jpg", Body=b"x")  # hidden folder: not counted
    err = refused(submit, capsys)
    assert "holds 299 labelled images in 1 class folders" in err
    assert steps_of(cluster) == []  # nothing was added


def test_a_missing_entry_script_is_refused(cluster: dict, capsys: pytest.CaptureFixture) -> None:
    bucket = f"fruits-noentry-{uuid.uuid4().hex[:8]}"
    make_bucket(cluster["s3"], bucket)
    err = refused(
        ["emr", "submit", "--bucket", bucket, "--job", "fit", *cluster["aws"], "--tracking-uri", "https://m.internal"],
        capsys,
    )
    assert f"s3://{bucket}/bootstrap/spark_entry.py is missing: upload cli/spark_entry.py there" in err


def test_a_stream_without_a_registered_model_is_refused_until_one_is_registered(
    cluster: dict, mlflow_server: str, capsys: pytest.CaptureFixture
) -> None:
    submit = ["emr", "submit", "--bucket", BUCKET, "--job", "stream", *cluster["aws"], "--tracking-uri", mlflow_server]
    err = refused(submit, capsys)
    assert f"no model fruits-pca@champion in the registry at {mlflow_server}" in err
    assert steps_of(cluster) == []

    registry = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    registry.create_registered_model("fruits-pca")
    version = registry.create_model_version("fruits-pca", source="s3://fruits/mlflow/1/model", run_id=None)
    registry.set_registered_model_alias("fruits-pca", "champion", version.version)

    assert main([*submit, "--json"]) == 0
    assert [s["name"] for s in last_json(capsys.readouterr().out)["steps"]] == ["fruits-stream"]


def test_an_unreachable_tracking_server_says_how_to_skip_the_check(
    cluster: dict, capsys: pytest.CaptureFixture
) -> None:
    submit = [
        "emr",
        "submit",
        "--bucket",
        BUCKET,
        "--job",
        "stream",
        *cluster["aws"],
        "--tracking-uri",
        "http://127.0.0.1:9",
    ]
    err = refused(submit, capsys)
    assert "cannot reach the MLflow server at http://127.0.0.1:9" in err and "--skip-model-check" in err

    assert main([*submit, "--skip-model-check"]) == 0  # a server reachable only from inside the VPC
    assert steps_of(cluster) == ["fruits-stream"]


def test_serverless_refuses_a_missing_venv_archive(moto_server: str, capsys: pytest.CaptureFixture) -> None:
    err = refused(
        [
            "serverless",
            "submit",
            "--bucket",
            BUCKET,
            "--job",
            "fit",
            "--endpoint-url",
            moto_server,
            "--application-id",
            "00fakeapp",
            "--venv-archive",
            f"s3://{BUCKET}/bootstrap/venv/missing.tar.gz",
            "--tracking-uri",
            "https://m.internal",
        ],
        capsys,
    )
    assert (
        f"s3://{BUCKET}/bootstrap/venv/missing.tar.gz is missing: build and upload it (infra/build_venv_archive.sh"
        in err
    )


def test_a_refit_needs_held_out_images_and_is_refused_behind_a_running_stream(
    cluster: dict, mlflow_server: str, capsys: pytest.CaptureFixture
) -> None:
    bucket = f"fruits-refit-{uuid.uuid4().hex[:8]}"
    make_bucket(cluster["s3"], bucket)
    cluster["s3"].put_object(Bucket=bucket, Key="bootstrap/spark_entry.py", Body=b"entry")
    registry = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    if not registry.search_registered_models(filter_string="name = 'fruits-pca'"):
        registry.create_registered_model("fruits-pca")
    version = registry.create_model_version("fruits-pca", source="s3://fruits/mlflow/1/model", run_id=None)
    registry.set_registered_model_alias("fruits-pca", "champion", version.version)
    submit = ["emr", "submit", "--bucket", bucket, "--job", "refit", *cluster["aws"], "--tracking-uri", mlflow_server]

    put_labelled_images(cluster["s3"], bucket, {"Kiwi": 3})  # under images/: not held out
    err = refused(submit, capsys)
    assert f"s3a://{bucket}/holdout/ holds 0 labelled images in 0 class folders" in err and "never under images/" in err

    put_labelled_images(cluster["s3"], bucket, {"Kiwi": 2, "Banana": 2}, prefix="holdout/")
    assert (
        main(["emr", "submit", "--bucket", bucket, "--job", "stream", *cluster["aws"], "--tracking-uri", mlflow_server])
        == 0
    )
    err = refused(submit, capsys)
    assert "the cluster runs one step at a time: a refit step would wait behind it forever" in err
    assert "fruits serverless submit --job refit" in err
    assert steps_of(cluster) == ["fruits-stream"]


def _secret(moto_server: str, name: str, value: dict[str, str]) -> str:
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_server)
    return secrets.create_secret(Name=f"{name}-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(value))["ARN"]


def test_the_model_check_authenticates_with_the_servers_secret(
    cluster: dict, mlflow_auth_server: dict[str, str], moto_server: str, capsys: pytest.CaptureFixture
) -> None:
    """Issue 24, finding 8: behind basic auth the check needs the credentials, read from Secrets Manager."""
    url = mlflow_auth_server["url"]
    submit = ["emr", "submit", "--bucket", BUCKET, "--job", "stream", *cluster["aws"], "--tracking-uri", url]

    err = refused(submit, capsys)
    assert f"cannot check fruits-pca@champion at {url}: HTTP 401, credentials are needed: pass --mlflow-secret" in err
    wrong = _secret(moto_server, "mlflow-wrong", {"username": "fruits-stream", "password": "not-it"})
    assert "HTTP 401, credentials were refused" in refused([*submit, "--mlflow-secret", wrong], capsys)
    assert steps_of(cluster) == []

    stream = _secret(
        moto_server,
        "mlflow-stream",
        {"username": "fruits-stream", "password": mlflow_auth_server["password:fruits-stream"]},
    )
    assert main([*submit, "--mlflow-secret", stream, "--json"]) == 0
    assert [s["name"] for s in last_json(capsys.readouterr().out)["steps"]] == ["fruits-stream"]


def test_the_streams_registry_user_reads_but_cannot_move_the_champion(
    mlflow_auth_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24, finding 11: the server as docs/aws.md sets it up. Whoever holds the stream's credentials (every
    streaming node) can load @champion, never repoint it; the fit's user, which created the model, can."""
    from mlflow.exceptions import MlflowException

    url = mlflow_auth_server["url"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "fruits-stream")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server["password:fruits-stream"])
    registry = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = registry.get_model_version_by_alias("fruits-pca", "champion")
    with pytest.raises(MlflowException, match="403"):
        registry.set_registered_model_alias("fruits-pca", "champion", champion.version)
    with pytest.raises(MlflowException, match="403"):
        registry.create_model_version("fruits-pca", source="s3://attacker/model", run_id=None)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "fruits-jobs")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server["password:fruits-jobs"])
    registry.set_registered_model_alias("fruits-pca", "challenger", champion.version)
    assert registry.get_model_version_by_alias("fruits-pca", "challenger").version == champion.version
