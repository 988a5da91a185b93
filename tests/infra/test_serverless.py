"""infra/serverless.py: the EMR Serverless application and job-run requests, checked against botocore's model.

moto 5.2.5 models EMR Serverless applications and job runs (tests/cli/test_serverless.py runs
the lifecycle there) but ignores `mode`, `retryPolicy`, `architecture` and
`monitoringConfiguration` and turns an `executionTimeoutMinutes` of 0 into 720: those are asserted
here, on the requests.
"""

from __future__ import annotations

import pytest

from aws_support import BUCKET
from fruits.exceptions import FruitsError
from infra.serverless import (
    ServerlessOptions,
    WorkerSize,
    application_request,
    executor_memory,
    job_run_request,
    planned_application,
)
from infra.steps import JobOptions

ROLE = "arn:aws:iam::123456789012:role/fruits-emr-serverless-job-role"
JOBS = JobOptions(bucket=BUCKET, tracking_uri="https://mlflow.internal")


def conf(request: dict) -> dict[str, str]:
    """sparkSubmitParameters ("--conf k=v --conf ...") as a dict."""
    words = request["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"].split()
    assert words[::2] == ["--conf"] * (len(words) // 2)
    return dict(pair.split("=", 1) for pair in words[1::2])


def test_the_application_runs_the_clusters_release_on_x86_with_a_capacity_cap_and_logs() -> None:
    options = ServerlessOptions(bucket=BUCKET, subnet_ids=("subnet-0a",), security_group_ids=("sg-0b",), owner="vision")
    request = planned_application(options)

    assert (request["name"], request["type"], request["releaseLabel"]) == ("fruits", "SPARK", "emr-spark-8.1.0")
    assert request["architecture"] == "X86_64"  # the venv archive holds x86_64 wheels
    assert "initialCapacity" not in request  # pre-initialized workers are billed even idle
    # Two runs at once (issue 24, finding 7: the stream and a refit beside it), each a driver of 2 vCPU / 8 GB
    # + 2 executors x 4 vCPU / 16 GB: 2 x 10 vCPU, 2 x 40 GB, 2 x 3 workers x 20 GB disk.
    assert request["maximumCapacity"] == {"cpu": "20 vCPU", "memory": "80 GB", "disk": "120 GB"}
    assert request["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 15}
    assert request["networkConfiguration"] == {"subnetIds": ["subnet-0a"], "securityGroupIds": ["sg-0b"]}
    assert request["monitoringConfiguration"] == {
        "s3MonitoringConfiguration": {"logUri": f"s3://{BUCKET}/logs/serverless/"}
    }
    assert request["tags"] == {"project": "fruits", "owner": "vision"}
    # The same request twice is the same token: a retried `up` creates one application.
    assert application_request(options)["clientToken"] == request["clientToken"]
    assert application_request(ServerlessOptions(bucket=BUCKET, executors=3))["clientToken"] != request["clientToken"]


def test_the_stream_is_a_streaming_run_retried_and_never_timed_out() -> None:
    request = job_run_request("stream", ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE)

    assert request["mode"] == "STREAMING"
    assert request["retryPolicy"] == {"maxFailedAttemptsPerHour": 5}
    assert request["executionTimeoutMinutes"] == 0
    assert request["executionRoleArn"] == ROLE and request["applicationId"] == "00app"
    driver = request["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"s3a://{BUCKET}/bootstrap/spark_entry.py"
    # The same job arguments as the cluster's step: one contract for both targets.
    assert driver["entryPointArguments"][:9] == [
        "stream",
        "--source",
        f"s3a://{BUCKET}/images/",
        "--output",
        f"s3a://{BUCKET}/results",
        "--errors",
        f"s3a://{BUCKET}/errors",
        "--checkpoint",
        f"s3a://{BUCKET}/checkpoints/stream",
    ]
    assert request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == (
        f"s3://{BUCKET}/logs/serverless/"
    )
    # A fresh token per submit: a stream submitted again after a stop is a new run.
    assert (
        job_run_request("stream", ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE)["clientToken"]
        != request["clientToken"]
    )


def test_the_fit_is_a_batch_run_with_one_attempt_and_a_timeout() -> None:
    request = job_run_request("fit", ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE)

    assert request["mode"] == "BATCH"
    assert request["retryPolicy"] == {"maxAttempts": 1}
    assert request["executionTimeoutMinutes"] == 720
    assert request["jobDriver"]["sparkSubmit"]["entryPointArguments"][:3] == [
        "fit",
        "--images",
        f"s3a://{BUCKET}/images/",
    ]


def test_the_refit_is_a_batch_run_on_the_lake_and_the_held_out_images() -> None:
    request = job_run_request("refit", ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE)

    assert (request["mode"], request["retryPolicy"], request["name"]) == ("BATCH", {"maxAttempts": 1}, "fruits-refit")
    assert request["jobDriver"]["sparkSubmit"]["entryPointArguments"][:7] == [
        "refit",
        "--eval-images",
        f"s3a://{BUCKET}/holdout/",
        "--output",
        f"s3a://{BUCKET}/results",
        "--features-output",
        f"s3a://{BUCKET}/features/",
    ]


def test_every_worker_runs_the_packed_venv_and_static_executors() -> None:
    settings = conf(job_run_request("stream", ServerlessOptions(bucket=BUCKET, executors=3), JOBS, "00app", ROLE))

    assert settings["spark.archives"] == f"s3a://{BUCKET}/bootstrap/venv/fruits-venv.tar.gz#environment"
    for key in (
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON",
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON",
        "spark.executorEnv.PYSPARK_PYTHON",
    ):
        assert settings[key] == "./environment/bin/python"
    assert settings["spark.dynamicAllocation.enabled"] == "false"
    assert settings["spark.executor.instances"] == "3"
    assert settings["spark.sql.execution.arrow.maxRecordsPerBatch"] == "64"  # the app settings travel too


@pytest.mark.parametrize("job", ["fit", "refit", "stream"])
def test_mlflow_stages_spark_models_on_s3_not_on_a_workers_disk(job: str) -> None:
    """Issue 24, finding 4: mlflow.spark saves and loads through MLFLOW_DFS_TMP (default /tmp/mlflow on Spark's
    default filesystem); EMR Serverless has no HDFS, so it must be S3 that every worker sees."""
    settings = conf(job_run_request(job, ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE))

    assert settings["spark.emr-serverless.driverEnv.MLFLOW_DFS_TMP"] == f"s3a://{BUCKET}/scratch/mlflow/"
    assert settings["spark.executorEnv.MLFLOW_DFS_TMP"] == f"s3a://{BUCKET}/scratch/mlflow/"


def test_mlflow_reads_the_staging_directory_from_that_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable the request sets is the one MLflow itself reads (not a name we made up)."""
    from mlflow.environment_variables import MLFLOW_DFS_TMP

    assert MLFLOW_DFS_TMP.name == "MLFLOW_DFS_TMP" and MLFLOW_DFS_TMP.get() == "/tmp/mlflow"  # the HDFS-less trap
    monkeypatch.setenv("MLFLOW_DFS_TMP", f"s3a://{BUCKET}/scratch/mlflow/")
    assert MLFLOW_DFS_TMP.get() == f"s3a://{BUCKET}/scratch/mlflow/"


def test_applications_and_job_runs_carry_the_stacks_project_tag() -> None:
    """Issue 24, finding 10: the deploy role operates what carries its stack's ProjectName, not a literal."""
    options = ServerlessOptions(bucket=BUCKET, project="vision-eu", owner="ana")
    assert application_request(options)["tags"] == {"project": "vision-eu", "owner": "ana"}
    assert job_run_request("stream", options, JOBS, "00app", ROLE)["tags"] == {
        "project": "vision-eu",
        "owner": "ana",
        "job": "stream",
    }


@pytest.mark.parametrize(
    ("memory_gb", "heap", "overhead", "pyspark"),
    [(16, "10240m", "2048m", "4096m"), (8, "5120m", "1024m", "2048m"), (30, "19200m", "3840m", "7680m")],
)
def test_executor_memory_fills_the_worker_and_gives_python_a_quarter(
    memory_gb: int, heap: str, overhead: str, pyspark: str
) -> None:
    settings = executor_memory(WorkerSize(4, memory_gb))

    assert (
        settings["spark.executor.memory"],
        settings["spark.executor.memoryOverhead"],
        settings["spark.executor.pyspark.memory"],
    ) == (heap, overhead, pyspark)
    assert settings["spark.executor.cores"] == "4"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ServerlessOptions(bucket=BUCKET, executor=WorkerSize(3, 16)), "3 vCPU is not a worker size"),
        (ServerlessOptions(bucket=BUCKET, executor=WorkerSize(4, 32)), "a 4-vCPU worker takes 8-30 GB"),
        (ServerlessOptions(bucket=BUCKET, executor=WorkerSize(8, 18)), "16-60 GB of memory in steps of 4 GB"),
        (ServerlessOptions(bucket=BUCKET, driver=WorkerSize(2, 8, 10)), "disk must be 20-200 GB"),
        (ServerlessOptions(bucket=BUCKET, executors=0), "--executors must be at least 1"),
        (ServerlessOptions(bucket=BUCKET, max_failed_attempts_per_hour=11), "must be 1-10"),
        (ServerlessOptions(bucket=BUCKET, release_label="emr-7.1.0"), "is not supported"),
        (ServerlessOptions(bucket=BUCKET, venv_archive="https://x/venv.tar.gz"), "is not an s3:// URI of a .tar.gz"),
    ],
)
def test_bad_options_are_refused_with_one_line(options: ServerlessOptions, message: str) -> None:
    with pytest.raises(FruitsError, match=message):
        planned_application(options)


def test_both_jobs_at_once_is_refused_because_runs_do_not_queue() -> None:
    with pytest.raises(FruitsError, match="--job must be stream, fit or refit on EMR Serverless"):
        job_run_request("both", ServerlessOptions(bucket=BUCKET), JOBS, "00app", ROLE)


# ---------------------------------------------------------------------------- MLflow's user on EMR Serverless
def test_a_job_run_authenticates_to_mlflow_with_a_password_emr_serverless_resolves() -> None:
    secret = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:fruits/mlflow-stream-password-AbCdEf"
    options = ServerlessOptions(bucket=BUCKET, mlflow_user="fruits-stream", mlflow_password_secret=secret)
    request = job_run_request("stream", options, JOBS, "00app", "arn:aws:iam::123456789012:role/r", client_token="t")
    (defaults,) = request["configurationOverrides"]["applicationConfiguration"]
    assert defaults == {
        "classification": "spark-defaults",
        "properties": {
            "spark.emr-serverless.driverEnv.MLFLOW_TRACKING_USERNAME": "fruits-stream",
            "spark.emr-serverless.driverEnv.MLFLOW_TRACKING_PASSWORD": f"EMR.secret@{secret}",
        },
    }
    # Nowhere else: not in the arguments or the spark-submit parameters anyone who may GetJobRun reads.
    assert "MLFLOW_TRACKING_PASSWORD" not in request["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"]
    assert not any("fruits-stream" in a for a in request["jobDriver"]["sparkSubmit"]["entryPointArguments"])
    # Without a user, no configuration: a server that needs none (loopback tests) still works.
    plain = job_run_request("fit", ServerlessOptions(bucket=BUCKET), JOBS, "00app", "arn:aws:iam::123456789012:role/r")
    assert "applicationConfiguration" not in plain["configurationOverrides"]
    with pytest.raises(FruitsError, match="go together"):
        job_run_request(
            "fit", ServerlessOptions(bucket=BUCKET, mlflow_user="fruits-jobs"), JOBS, "00app", "arn:aws:iam::1:role/r"
        )


def test_only_the_given_mlflow_passwords_are_readable_by_the_job_role() -> None:
    from cfn_support import allows, load_template, role_statements

    template = load_template()
    secret = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:fruits/mlflow-stream-password-AbCdEf"
    assert not allows(role_statements(template, "ServerlessJobRole"), "secretsmanager:GetSecretValue", secret)
    granted = role_statements(template, "ServerlessJobRole", ServerlessMlflowPasswordSecretArns=secret)
    assert allows(granted, "secretsmanager:GetSecretValue", secret)
    assert not allows(granted, "secretsmanager:GetSecretValue", secret.replace("stream", "other"))
    assert not allows(
        role_statements(template, "EmrInstanceRole", ServerlessMlflowPasswordSecretArns=secret),
        "secretsmanager:GetSecretValue",
        secret,
    )
