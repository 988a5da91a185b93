"""infra/steps.py: the spark-submit steps that run `fruits fit` / `fruits stream` on the cluster."""

from __future__ import annotations

import pytest

from aws_support import BUCKET, WEIGHTS_URI
from fruits.exceptions import FruitsError
from infra.steps import JobOptions, build_steps, check_tracking_uri, job_arguments

# emr-spark-8.x has no EMRFS: every URI Spark or the jobs open is s3a://.
WEIGHTS_S3A = WEIGHTS_URI.replace("s3://", "s3a://")


def test_steps_run_our_jobs_through_spark_submit() -> None:
    options = JobOptions(
        bucket=BUCKET, tracking_uri="https://mlflow.internal", trigger="10s", max_files_per_trigger=500
    )
    fit, stream = build_steps("both", options)

    spark_submit = [
        "spark-submit",
        "--deploy-mode",
        "client",
        "--master",
        "yarn",
        f"s3a://{BUCKET}/bootstrap/spark_entry.py",
    ]
    assert (fit["Name"], fit["ActionOnFailure"]) == ("fruits-fit", "CANCEL_AND_WAIT")
    assert (stream["Name"], stream["ActionOnFailure"]) == ("fruits-stream", "CONTINUE")
    assert fit["HadoopJarStep"] == {
        "Jar": "command-runner.jar",
        "Args": [
            *spark_submit,
            "fit",
            "--images",
            f"s3a://{BUCKET}/images/",
            "--features-output",
            f"s3a://{BUCKET}/features/",
            "--tracking-uri",
            "https://mlflow.internal",
            "--weights",
            WEIGHTS_S3A,
        ],
    }
    assert stream["HadoopJarStep"]["Args"] == [
        *spark_submit,
        "stream",
        "--source",
        f"s3a://{BUCKET}/images/",
        "--output",
        f"s3a://{BUCKET}/results",
        "--errors",
        f"s3a://{BUCKET}/errors",
        "--checkpoint",
        f"s3a://{BUCKET}/checkpoints/stream",  # the stop marker goes directly under it
        "--tracking-uri",
        "https://mlflow.internal",
        "--weights",
        WEIGHTS_S3A,
        "--trigger",
        "10s",
        "--max-files-per-trigger",
        "500",
    ]
    assert [s["Name"] for s in build_steps("stream", options)] == ["fruits-stream"]


def test_the_refit_step_reads_the_lake_and_the_held_out_images_outside_images() -> None:
    options = JobOptions(bucket=BUCKET, tracking_uri="https://mlflow.internal")
    [refit] = build_steps("refit", options)

    assert (refit["Name"], refit["ActionOnFailure"]) == ("fruits-refit", "CONTINUE")
    assert refit["HadoopJarStep"]["Args"][6:] == [
        "refit",
        "--eval-images",
        f"s3a://{BUCKET}/holdout/",  # never under images/: the stream would ingest them
        "--output",
        f"s3a://{BUCKET}/results",
        "--features-output",
        f"s3a://{BUCKET}/features/",
        "--tracking-uri",
        "https://mlflow.internal",
        "--weights",
        WEIGHTS_S3A,
    ]
    other = JobOptions(bucket=BUCKET, tracking_uri="https://m.internal", eval_images=f"s3a://{BUCKET}/holdout/2026-12/")
    assert build_steps("refit", other)[0]["HadoopJarStep"]["Args"][8] == f"s3a://{BUCKET}/holdout/2026-12/"


@pytest.mark.parametrize("uri", [None, "sqlite:////tmp/mlflow.db", "/home/hadoop/mlruns", "file:///mnt/mlruns"])
def test_steps_refuse_a_registry_that_dies_with_the_cluster(uri: str | None) -> None:
    with pytest.raises(FruitsError, match="tracking"):
        check_tracking_uri(uri)


@pytest.mark.parametrize("uri", ["http://admin:s3cret@mlflow.internal:5000", "https://token@mlflow.example"])
def test_steps_refuse_credentials_in_the_tracking_uri(uri: str) -> None:
    """They would be in the step arguments (and the job run), readable by anyone who may describe them."""
    with pytest.raises(FruitsError, match="carries credentials") as refused:
        build_steps("stream", JobOptions(bucket=BUCKET, tracking_uri=uri))
    assert "s3cret" not in str(refused.value) and "token" not in str(refused.value)


@pytest.mark.parametrize("uri", ["http://mlflow.internal:5000", "http://10.20.1.17:5000", "HTTP://mlflow.internal"])
def test_steps_refuse_a_tracking_server_in_clear(uri: str) -> None:
    """Issue 24, finding 11: over plain http the credentials and the registry (who may move @champion) cross the VPC."""
    with pytest.raises(FruitsError, match=r"is plain http.*use https://"):
        build_steps("stream", JobOptions(bucket=BUCKET, tracking_uri=uri))


@pytest.mark.parametrize(
    "uri",
    ["https://mlflow.internal", "https://mlflow.internal:8443/", "http://127.0.0.1:5000", "http://localhost:5000"],
)
def test_steps_accept_tls_or_a_server_on_this_machine(uri: str) -> None:
    (stream,) = build_steps("stream", JobOptions(bucket=BUCKET, tracking_uri=uri))
    args = stream["HadoopJarStep"]["Args"]
    assert args[args.index("--tracking-uri") + 1] == uri


def test_the_stream_reads_the_queue_when_given_one() -> None:
    queue = "https://sqs.eu-west-3.amazonaws.com/123456789012/fruits-uploads"
    (stream,) = build_steps("stream", JobOptions(bucket=BUCKET, tracking_uri="https://m.internal", notifications=queue))
    args = stream["HadoopJarStep"]["Args"]
    assert args[args.index("--notifications") + 1] == queue
    (listing,) = build_steps("stream", JobOptions(bucket=BUCKET, tracking_uri="https://m.internal"))
    assert "--notifications" not in listing["HadoopJarStep"]["Args"]
    with pytest.raises(FruitsError, match="is not an SQS queue URL"):
        build_steps(
            "stream",
            JobOptions(
                bucket=BUCKET,
                tracking_uri="https://m.internal",
                notifications="arn:aws:sqs:eu-west-3:123456789012:fruits-uploads",
            ),
        )


def test_the_stream_answers_the_apps_uploads_in_the_stacks_table_on_both_targets() -> None:
    from infra.serverless import ServerlessOptions, job_run_request

    options = JobOptions(bucket=BUCKET, tracking_uri="https://mlflow.internal", answers="dynamodb://fruits-answers")
    stream = job_arguments("stream", options)
    assert stream[stream.index("--answers") + 1] == "dynamodb://fruits-answers"
    assert "--answers" not in job_arguments("fit", options) and "--answers" not in job_arguments("refit", options)
    (step,) = build_steps("stream", options)
    assert step["HadoopJarStep"]["Args"][-2:] == ["--answers", "dynamodb://fruits-answers"]
    run = job_run_request(
        "stream", ServerlessOptions(bucket=BUCKET), options, "00app", "arn:aws:iam::123456789012:role/r"
    )
    arguments = run["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert arguments[arguments.index("--answers") + 1] == "dynamodb://fruits-answers"
    # A sqlite file on a node would be answered into and read by nobody.
    with pytest.raises(FruitsError, match="dynamodb://TABLE"):
        job_arguments("stream", JobOptions(bucket=BUCKET, tracking_uri="https://m", answers="sqlite:////tmp/a.db"))


def test_fruits_stream_takes_the_answers_store_from_its_flag() -> None:
    import argparse

    from cli import stream
    from cli.console import settings_from_args

    parser = argparse.ArgumentParser()
    stream.configure(parser)
    args = parser.parse_args(["--answers", "dynamodb://fruits-answers"])
    assert settings_from_args(args).answers_uri == "dynamodb://fruits-answers"
    assert settings_from_args(parser.parse_args([])).answers is None  # the environment's, else <state>/answers.db
