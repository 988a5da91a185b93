"""Who may do what, from the parsed template, evaluated as IAM evaluates it (wildcards, conditions, denies).

The EMR instance role and the EMR Serverless job role share one data-access policy; the bucket
policy's denies apply to every principal; the deploy role is the only one that may change what
the nodes run. Issue 10's findings 1, 8 and 10 are pinned here.
"""

from __future__ import annotations

from typing import Any

import pytest

from cfn_support import (
    ACCOUNT,
    BUCKET_ARN,
    REGION,
    S3_WRITE_ACTIONS,
    Resolver,
    action_match,
    all_statements,
    allows,
    bucket_policy_statements,
    effective,
    listify,
    load_template,
    role_statements,
)
from infra.defaults import INSTANCE_PROFILE, JOB_ROLE, SERVICE_ROLE

JOB_ROLES = ["EmrInstanceRole", "ServerlessJobRole"]  # the same data access wherever the jobs run


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# ---------------------------------------------------------------------------- names the launchers pass
def test_the_instance_profile_has_its_roles_name_and_the_launcher_passes_it(template: dict[str, Any]) -> None:
    """EMR refuses a profile named differently from its role ('invalid instance profile')."""
    resolve = Resolver(template)
    resources = template["Resources"]
    role_name = resolve(resources["EmrInstanceRole"]["Properties"]["RoleName"])
    profile = resources["EmrInstanceProfile"]["Properties"]
    assert resolve(profile["InstanceProfileName"]) == role_name == INSTANCE_PROFILE == "fruits-emr-ec2-role"
    assert profile["Roles"] == [{"Ref": "EmrInstanceRole"}]
    assert resolve(resources["EmrServiceRole"]["Properties"]["RoleName"]) == SERVICE_ROLE
    assert resolve(resources["ServerlessJobRole"]["Properties"]["RoleName"]) == JOB_ROLE


def test_emr_service_role(template: dict[str, Any]) -> None:
    role = Resolver(template)(template["Resources"]["EmrServiceRole"]["Properties"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    assert role["ManagedPolicyArns"] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]
    statements = role_statements(template, "EmrServiceRole")
    assert allows(
        statements,
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-ec2-role",
        **{"iam:PassedToService": "ec2.amazonaws.com"},
    )
    assert not allows(
        statements,
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/fruits-deploy",
        **{"iam:PassedToService": "ec2.amazonaws.com"},
    )


def test_passrole_is_granted_for_the_three_compute_roles_only(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    passing = [
        resolve(s)
        for s in all_statements(template["Resources"])
        if any(isinstance(a, str) and action_match(a, "iam:PassRole") for a in listify(s.get("Action", [])))
    ]
    passed = {r for s in passing for r in listify(s["Resource"])}
    assert passed == {
        f"arn:aws:iam::{ACCOUNT}:role/{name}"
        for name in ("fruits-emr-ec2-role", "fruits-emr-service-role", "fruits-emr-serverless-job-role")
    }
    assert all("iam:PassedToService" in str(s.get("Condition")) for s in passing)


# ---------------------------------------------------------------------------- the jobs' data access
@pytest.mark.parametrize("role", JOB_ROLES)
@pytest.mark.parametrize("prefix", ["images/", "holdout/", "models/", "bootstrap/"])
def test_job_roles_read_but_never_write_inputs(template: dict[str, Any], prefix: str, role: str) -> None:
    key = f"{BUCKET_ARN}/{prefix}Apple Red 1/r_12_100.jpg"
    assert effective(template, role, "s3:GetObject", key)
    assert effective(template, role, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": prefix})
    assert [action for action in S3_WRITE_ACTIONS if effective(template, role, action, key)] == []


@pytest.mark.parametrize("role", JOB_ROLES)
@pytest.mark.parametrize("prefix", ["results/", "errors/", "checkpoints/", "features/"])
def test_job_roles_write_outputs(template: dict[str, Any], prefix: str, role: str) -> None:
    key = f"{BUCKET_ARN}/{prefix}stream/ingest_date=2026-12-01/part-00000.parquet"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert effective(template, role, action, key), action
    assert effective(template, role, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": f"{prefix}stream/"})


@pytest.mark.parametrize("role", JOB_ROLES)
def test_the_stream_may_delete_its_stop_marker(template: dict[str, Any], role: str) -> None:
    marker = f"{BUCKET_ARN}/checkpoints/stream/_stop"
    assert effective(template, role, "s3:GetObject", marker)
    assert effective(template, role, "s3:DeleteObject", marker)


@pytest.mark.parametrize("role", JOB_ROLES)
def test_logs_are_written_never_read_back_or_deleted(template: dict[str, Any], role: str) -> None:
    log = f"{BUCKET_ARN}/logs/emr/j-1ABC/node/i-0123/applications/spark/stderr.gz"
    assert effective(template, role, "s3:PutObject", log)
    assert not effective(template, role, "s3:DeleteObject", log)
    assert not effective(template, role, "s3:GetObject", log)


@pytest.mark.parametrize("role", JOB_ROLES)
def test_job_roles_cannot_touch_the_mlflow_artifacts(template: dict[str, Any], role: str) -> None:
    """The tracking server proxies artifacts: it alone writes mlflow/ (MlflowArtifactsPolicy)."""
    artifact = f"{BUCKET_ARN}/mlflow/1/0123abcd/artifacts/model/MLmodel"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert not effective(template, role, action, artifact), action
    assert not effective(template, role, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "mlflow/"})


@pytest.mark.parametrize("role", JOB_ROLES)
@pytest.mark.parametrize("prefix", ["images", "images-old/", "results-archive/", "checkpoints", "", "mlflow"])
def test_listing_never_reaches_past_a_folder(template: dict[str, Any], role: str, prefix: str) -> None:
    """S3 prefixes are plain string prefixes: "images" would also list "images-old/..."."""
    assert not effective(template, role, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": prefix})


@pytest.mark.parametrize("role", JOB_ROLES)
def test_job_roles_stay_inside_the_bucket(template: dict[str, Any], role: str) -> None:
    statements = role_statements(template, role)
    assert not allows(statements, "s3:ListBucket", BUCKET_ARN)
    assert not allows(statements, "s3:GetObject", f"{BUCKET_ARN}/secrets/x")
    assert not allows(statements, "s3:GetObject", "arn:aws:s3:::someone-elses-bucket/images/a.jpg")
    assert not allows(statements, "s3:DeleteBucket", BUCKET_ARN)
    assert not allows(statements, "s3:PutBucketPolicy", BUCKET_ARN)
    s3_resources = {
        r for s in statements if any(a.startswith("s3:") for a in listify(s["Action"])) for r in listify(s["Resource"])
    }
    foreign = {r for r in s3_resources if r != BUCKET_ARN and not r.startswith(f"{BUCKET_ARN}/")}
    # The only S3 resource outside the data bucket: the cluster's read of EMR's public tooling bucket.
    assert foreign == ({f"arn:aws:s3:::{REGION}.elasticmapreduce/*"} if role == "EmrInstanceRole" else set())


def test_serverless_job_role_is_assumed_by_this_accounts_applications_only(template: dict[str, Any]) -> None:
    role = Resolver(template)(template["Resources"]["ServerlessJobRole"]["Properties"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/*"},
    }


def test_the_mlflow_secret_is_readable_by_the_cluster_only_when_given(template: dict[str, Any]) -> None:
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:fruits/mlflow-AbCdEf"
    without = role_statements(template, "EmrInstanceRole")
    assert not allows(without, "secretsmanager:GetSecretValue", secret)

    statements = role_statements(template, "EmrInstanceRole", MlflowCredentialsSecretArn=secret)
    assert allows(statements, "secretsmanager:GetSecretValue", secret)
    assert not allows(
        role_statements(template, "ServerlessJobRole", MlflowCredentialsSecretArn=secret),
        "secretsmanager:GetSecretValue",
        secret,
    )
    assert not allows(statements, "secretsmanager:GetSecretValue", secret.replace("mlflow", "other"))


def test_mlflow_server_policy_reaches_only_the_mlflow_prefix(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    policy = template["Resources"]["MlflowArtifactsPolicy"]
    assert resolve(policy["Properties"]["ManagedPolicyName"]) == "fruits-mlflow-artifacts"
    statements = [resolve(s) for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    artifact = f"{BUCKET_ARN}/mlflow/1/0123abcd/artifacts/model/MLmodel"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allows(statements, action, artifact), action
    assert allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "mlflow/1/"})
    for other in ("images/a/b.jpg", "results/part-0.parquet", "models/w.h5"):
        assert not allows(statements, "s3:GetObject", f"{BUCKET_ARN}/{other}")


# ---------------------------------------------------------------------------- the deploy role
def test_only_the_deploy_role_may_change_what_the_nodes_run(template: dict[str, Any]) -> None:
    (deny,) = [s for s in bucket_policy_statements(template) if s.get("Sid") == "OnlyTheDeployRoleWritesCodeAndWeights"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/fruits-deploy"}}
    for key in ("bootstrap/bootstrap.sh", "bootstrap/wheelhouse/requirements.lock", "models/keras/w.h5"):
        assert effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/{key}"), key
        assert effective(template, "DeployRole", "s3:DeleteObject", f"{BUCKET_ARN}/{key}"), key
        for role in ("EmrInstanceRole", "ServerlessJobRole", "UploadNotifierRole"):
            assert not effective(template, role, "s3:PutObject", f"{BUCKET_ARN}/{key}"), (role, key)
    # The deny holds for a principal whose own policy allows everything, e.g. an administrator.
    admin = [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]
    context = {
        "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin",
        "aws:SecureTransport": "true",
        "s3:TlsVersion": "1.3",
    }
    denies = [s for s in bucket_policy_statements(template) if s["Effect"] == "Deny"]
    assert not allows(admin + denies, "s3:PutObject", f"{BUCKET_ARN}/bootstrap/bootstrap.sh", **context)
    assert allows(admin + denies, "s3:PutObject", f"{BUCKET_ARN}/images/Kiwi/1.jpg", **context)


def test_the_deploy_role_operates_but_does_not_write_outputs(template: dict[str, Any]) -> None:
    assert effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/images/Kiwi/1.jpg")  # the labelled set
    assert effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/holdout/Kiwi/1.jpg")  # the refit's
    assert effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/checkpoints/stream/_stop")  # `stop`
    assert not effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/checkpoints/stream/offsets/7")
    assert not effective(template, "DeployRole", "s3:PutObject", f"{BUCKET_ARN}/results/part-0.parquet")
    statements = role_statements(template, "DeployRole")
    cluster = f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/j-1ABC"
    assert allows(
        statements, "elasticmapreduce:RunJobFlow", "*", **{"elasticmapreduce:RequestTag/project": "fruits"}
    )  # ProjectName
    assert not allows(statements, "elasticmapreduce:RunJobFlow", "*")  # an untagged cluster
    assert allows(
        statements, "elasticmapreduce:TerminateJobFlows", cluster, **{"elasticmapreduce:ResourceTag/project": "fruits"}
    )
    assert not allows(
        statements, "elasticmapreduce:TerminateJobFlows", cluster, **{"elasticmapreduce:ResourceTag/project": "other"}
    )
    assert not allows(
        statements,
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/Admin",
        **{"iam:PassedToService": "elasticmapreduce.amazonaws.com"},
    )
