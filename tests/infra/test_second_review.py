"""The second review of the AWS path (issue 24): each finding pinned on the parsed template, evaluated as IAM does.

Finding -> where it is pinned:
 1 PassRole of the instance role to EC2 ................ test_runjobflow_passes_each_role_to_the_service_that_takes_it
 2 reserved concurrency in a new account ............... test_no_concurrency_reservation_unless_asked
 3 service-linked roles of the first `up` .............. test_the_deploy_role_creates_exactly_the_two_service_linked_roles
 4 MLFLOW_DFS_TMP on S3 for Serverless ................. tests/infra/test_serverless.py, test_the_jobs_stage_mlflow_models_under_scratch
 5 KMS/SQS/Secrets Manager endpoints ................... tests/infra/test_walkthrough.py (the documented commands, in order)
 6 the Lambda runtime .................................. test_the_lambda_runtime_is_supported_the_longest
 7 capacity for the stream and a refit ................. tests/infra/test_serverless.py
 8 the model check's credentials ....................... tests/cli/test_submit_checks.py; test_the_deploy_role_reads_the_mlflow_secret_only_when_given
 9 visibility of a held batch .......................... test_the_stream_may_extend_the_visibility_of_what_it_holds
10 tag takeover ........................................ test_tags_are_the_stacks_project_and_no_foreign_cluster_can_be_adopted
11 MLflow over TLS, the stream's user read-only ........ tests/infra/test_steps.py; tests/cli/test_submit_checks.py
12 the deploy role's trust ............................. test_the_deploy_role_trusts_one_named_principal_never_the_root
13 who feeds and who reads the stream .................. test_only_the_lambda_publishes_*, test_only_the_topic_or_the_bucket_*
14 smaller ones ........................................ the tests below named after each; tests/lambda (logs),
                                                         tests/infra/test_bootstrap.py (secret), tests/fruits/test_spark_jars.py
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import cfnlint
import pytest

from aws_support import constraint_pins
from cfn_support import (
    ACCOUNT,
    BUCKET_ARN,
    REGION,
    ROOT,
    Resolver,
    action_match,
    all_statements,
    allows,
    effective,
    listify,
    load_template,
    role_statements,
)

ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Admin"
CI = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"
CLUSTER = f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/j-1ABC"
APPLICATION = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00f1abc"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def deploy(template: dict[str, Any], **parameters: str) -> list[dict[str, Any]]:
    return role_statements(template, "DeployRole", **parameters)


def policy_of(template: dict[str, Any], logical: str, **parameters: str) -> list[dict[str, Any]]:
    """A resource policy's statements (topic, queue), Fn::If resolved with these parameters."""
    document = Resolver(template, **parameters)(template["Resources"][logical]["Properties"]["PolicyDocument"])
    return [s for s in document["Statement"] if s != "<AWS::NoValue>"]


# ---------------------------------------------------------------------------- would fail
def test_runjobflow_passes_each_role_to_the_service_that_takes_it(template: dict[str, Any]) -> None:
    """1: RunJobFlow passes the service role to EMR and the instance role to EC2."""
    statements = deploy(template)
    service, instance = (f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-{n}" for n in ("service-role", "ec2-role"))
    assert allows(statements, "iam:PassRole", instance, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert allows(statements, "iam:PassRole", service, **{"iam:PassedToService": "elasticmapreduce.amazonaws.com"})
    assert not allows(statements, "iam:PassRole", instance, **{"iam:PassedToService": "elasticmapreduce.amazonaws.com"})
    assert not allows(statements, "iam:PassRole", service, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allows(statements, "iam:PassRole", ADMIN, **{"iam:PassedToService": "ec2.amazonaws.com"})


def test_no_concurrency_reservation_unless_asked(template: dict[str, Any]) -> None:
    """2: a new account (quota 10, 10 kept unreserved) cannot reserve any: none by default."""
    assert template["Parameters"]["UploadNotifierConcurrency"]["Default"] == ""
    function = template["Resources"]["UploadNotifier"]["Properties"]
    assert Resolver(template)(function["ReservedConcurrentExecutions"]) == "<AWS::NoValue>"
    assert Resolver(template, UploadNotifierConcurrency="10")(function["ReservedConcurrentExecutions"]) == "10"
    pattern = template["Parameters"]["UploadNotifierConcurrency"]["AllowedPattern"]
    assert [v for v in ("", "10", "0", "-1", "ten") if re.fullmatch(pattern, v)] == ["", "10"]


def test_the_deploy_role_creates_exactly_the_two_service_linked_roles(template: dict[str, Any]) -> None:
    """3: EMR's cleanup role and EMR Serverless' role, which the first `up` of an account needs."""
    statements = deploy(template)
    linked = {
        "elasticmapreduce.amazonaws.com": "AWSServiceRoleForEMRCleanup",
        "ops.emr-serverless.amazonaws.com": "AWSServiceRoleForAmazonEMRServerless",
    }
    for service, name in linked.items():
        arn = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{service}/{name}"
        assert allows(statements, "iam:CreateServiceLinkedRole", arn, **{"iam:AWSServiceName": service}), service
    other = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    assert not allows(
        statements, "iam:CreateServiceLinkedRole", other, **{"iam:AWSServiceName": "autoscaling.amazonaws.com"}
    )
    assert not allows(statements, "iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/anything")


@pytest.mark.parametrize("role", ["EmrInstanceRole", "ServerlessJobRole"])
def test_the_jobs_stage_mlflow_models_under_scratch(template: dict[str, Any], role: str) -> None:
    """4: MLFLOW_DFS_TMP=s3a://bucket/scratch/mlflow/ must be writable, readable, deletable and listable, and expires."""
    staged = f"{BUCKET_ARN}/scratch/mlflow/0a1b2c3d/sparkml/stages/0_StandardScaler/metadata/part-00000"
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        assert effective(template, role, action, staged), action
    assert effective(template, role, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "scratch/mlflow/0a1b2c3d/"})
    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (scratch,) = [r for r in rules if r.get("Prefix") == "scratch/"]
    assert scratch["ExpirationInDays"] == 1


def test_the_lambda_runtime_is_supported_the_longest(template: dict[str, Any]) -> None:
    """6: of the runtimes in cfn-lint's own lifecycle data, none is supported longer than ours."""
    lifecycle = json.loads(
        (Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "LmbdRuntimeLifecycle.json").read_text()
    )
    runtime = template["Resources"]["UploadNotifier"]["Properties"]["Runtime"]
    deprecated = dt.date.fromisoformat(lifecycle[runtime]["deprecated"])
    python = {
        name: dt.date.fromisoformat(v["deprecated"]) for name, v in lifecycle.items() if name.startswith("python3")
    }
    assert deprecated == max(python.values()) and deprecated >= dt.date(2029, 6, 30), (runtime, deprecated)


# ---------------------------------------------------------------------------- would misbehave
def test_the_deploy_role_reads_the_mlflow_secret_only_when_given(template: dict[str, Any]) -> None:
    """8: `submit` authenticates its model check with the server's secret."""
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:fruits/mlflow-AbCdEf"
    assert not allows(deploy(template), "secretsmanager:GetSecretValue", secret)
    statements = deploy(template, MlflowCredentialsSecretArn=secret)
    assert allows(statements, "secretsmanager:GetSecretValue", secret)
    assert not allows(statements, "secretsmanager:GetSecretValue", secret.replace("mlflow", "payroll"))


@pytest.mark.parametrize("role", ["EmrInstanceRole", "ServerlessJobRole"])
def test_the_stream_may_extend_the_visibility_of_what_it_holds(template: dict[str, Any], role: str) -> None:
    """9 (IAM side): the feed keeps a held batch invisible with ChangeMessageVisibility(Batch: same action)."""
    statements = role_statements(template, role)
    assert allows(statements, "sqs:ChangeMessageVisibility", "<NotificationsQueue.Arn>")
    assert not allows(statements, "sqs:ChangeMessageVisibility", "<NotificationsDeadLetters.Arn>")


# ---------------------------------------------------------------------------- security
def test_tags_are_the_stacks_project_and_no_foreign_cluster_can_be_adopted(template: dict[str, Any]) -> None:
    """10: create and operate only with this stack's ProjectName; never tag someone else's compute."""
    statements = deploy(template, ProjectName="vision")
    assert allows(statements, "elasticmapreduce:RunJobFlow", "*", **{"elasticmapreduce:RequestTag/project": "vision"})
    assert not allows(
        statements, "elasticmapreduce:RunJobFlow", "*", **{"elasticmapreduce:RequestTag/project": "fruits"}
    )
    ours, theirs = (
        {"elasticmapreduce:ResourceTag/project": "vision"},
        {"elasticmapreduce:ResourceTag/project": "fruits"},
    )
    assert allows(statements, "elasticmapreduce:TerminateJobFlows", CLUSTER, **ours)
    assert not allows(statements, "elasticmapreduce:TerminateJobFlows", CLUSTER, **theirs)
    # The takeover: tag a foreign (or untagged) cluster with our project, then operate it. No AddTags at all.
    for context in ({}, theirs, ours):
        assert not allows(
            statements,
            "elasticmapreduce:AddTags",
            CLUSTER,
            **{"elasticmapreduce:RequestTag/project": "vision", **context},
        )
    # EMR Serverless authorizes tags on create as TagResource: with our tag; never on another project's application.
    assert allows(statements, "emr-serverless:TagResource", APPLICATION, **{"aws:RequestTag/project": "vision"})
    assert not allows(
        statements,
        "emr-serverless:TagResource",
        APPLICATION,
        **{"aws:RequestTag/project": "vision", "aws:ResourceTag/project": "fruits"},
    )
    assert not allows(statements, "emr-serverless:UntagResource", APPLICATION, **{"aws:ResourceTag/project": "fruits"})
    assert allows(statements, "emr-serverless:StartJobRun", APPLICATION, **{"aws:ResourceTag/project": "vision"})
    assert not allows(statements, "emr-serverless:StartJobRun", APPLICATION, **{"aws:ResourceTag/project": "fruits"})
    literal = [s for s in all_statements(template["Resources"]) if "'fruits'" in repr(s.get("Condition"))]
    assert literal == []  # every tag condition is the ProjectName parameter


def test_the_deploy_role_trusts_one_named_principal_never_the_root(template: dict[str, Any]) -> None:
    """12: the deploy role writes bootstrap/ (root on every node): a required principal, never the account root."""
    parameter = template["Parameters"]["DeployPrincipalArn"]
    assert "Default" not in parameter  # CloudFormation refuses a stack without it
    pattern = parameter["AllowedPattern"]
    assert re.fullmatch(pattern, CI) and re.fullmatch(pattern, f"arn:aws:iam::{ACCOUNT}:user/ana")
    for refused in (f"arn:aws:iam::{ACCOUNT}:root", "", "*", ACCOUNT):
        assert not re.fullmatch(pattern, refused), refused
    trust = Resolver(template, DeployPrincipalArn=CI)(
        template["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]
    )
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": CI}, "Action": "sts:AssumeRole"}]


def test_only_the_lambda_publishes_and_only_the_stacks_endpoints_subscribe(template: dict[str, Any]) -> None:
    """13: an administrator's own allow does not let them feed the stream or read every object key."""
    topic = "<UploadsTopic>"
    lambda_role = Resolver(template).values["UploadNotifierRole.Arn"]
    everything = [{"Effect": "Allow", "Action": "sns:*", "Resource": "*"}]
    policy = policy_of(template, "UploadsTopicPolicy", NotificationEmail="ops@fruits.example")
    tls = {"aws:SecureTransport": "true"}
    assert allows(everything + policy, "sns:Publish", topic, **{"aws:PrincipalArn": lambda_role, **tls})
    assert not allows(everything + policy, "sns:Publish", topic, **{"aws:PrincipalArn": ADMIN, **tls})
    for endpoint in ("<NotificationsQueue.Arn>", "ops@fruits.example"):
        assert allows(everything + policy, "sns:Subscribe", topic, **{"sns:Endpoint": endpoint, **tls}), endpoint
    for endpoint in (
        "https://collector.example/hook",
        "arn:aws:sqs:eu-west-3:999999999999:theirs",
        "someone@else.example",
    ):
        assert not allows(everything + policy, "sns:Subscribe", topic, **{"sns:Endpoint": endpoint, **tls}), endpoint
    # Without NotificationEmail, no address may subscribe at all.
    no_email = policy_of(template, "UploadsTopicPolicy")
    assert not allows(everything + no_email, "sns:Subscribe", topic, **{"sns:Endpoint": "ops@fruits.example", **tls})


@pytest.mark.parametrize("wiring", ["lambda-sns", "s3-sqs"])
def test_only_the_topic_or_the_bucket_sends_to_the_stream(template: dict[str, Any], wiring: str) -> None:
    """13: SendMessage from any principal of the account (an admin included) is denied; only the sources."""
    everything = [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]
    policy = policy_of(template, "NotificationsQueuePolicy", NotificationWiring=wiring)
    queue, tls = "<NotificationsQueue.Arn>", {"aws:SecureTransport": "true"}
    assert allows(policy, "sqs:SendMessage", queue, **{"aws:SourceArn": "<UploadsTopic>", **tls})
    assert not allows(everything + policy, "sqs:SendMessage", queue, **{"aws:PrincipalArn": ADMIN, **tls})
    direct = allows(
        policy, "sqs:SendMessage", queue, **{"aws:SourceArn": BUCKET_ARN, "aws:SourceAccount": ACCOUNT, **tls}
    )
    assert direct is (wiring == "s3-sqs")


# ---------------------------------------------------------------------------- finding 14, the smaller ones
def test_ebs_grants_are_for_aws_resources_and_nothing_re_encrypts(template: dict[str, Any]) -> None:
    statements = Resolver(template)(template["Resources"]["EmrDiskKey"]["Properties"]["KeyPolicy"])["Statement"]
    users = [s for s in statements if s["Sid"] != "AccountAdministers"]
    assert not any(action_match(a, "kms:ReEncryptFrom") for s in users for a in listify(s["Action"]))
    service_role = f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-service-role"
    granting = [s for s in users if s["Principal"]["AWS"] == service_role]
    assert allows(granting, "kms:CreateGrant", "*", **{"kms:GrantIsForAWSResource": "true"})
    assert not allows(granting, "kms:CreateGrant", "*", **{"kms:GrantIsForAWSResource": "false"})
    assert not allows(granting, "kms:CreateGrant", "*")


def test_the_messages_key_serves_this_stacks_topic_and_bucket_only(template: dict[str, Any]) -> None:
    (services,) = [
        s
        for s in Resolver(template)(template["Resources"]["MessagesKey"]["Properties"]["KeyPolicy"])["Statement"]
        if "Service" in s["Principal"]
    ]
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:fruits-uploads"
    for source in (topic, BUCKET_ARN):
        assert allows([services], "kms:GenerateDataKey", "*", **{"aws:SourceAccount": ACCOUNT, "aws:SourceArn": source})
    other = f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses-topic"
    assert not allows([services], "kms:GenerateDataKey", "*", **{"aws:SourceAccount": ACCOUNT, "aws:SourceArn": other})


def test_the_lake_readers_may_locate_the_bucket(template: dict[str, Any]) -> None:
    """GetBucketLocation carries no s3:prefix: under the listing's prefix condition it was never granted."""
    resolve = Resolver(template)
    statements = [
        resolve(s) for s in template["Resources"]["LakeReaderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert allows(statements, "s3:GetBucketLocation", BUCKET_ARN)
    for role in ("EmrInstanceRole", "ServerlessJobRole"):
        assert effective(template, role, "s3:GetBucketLocation", BUCKET_ARN)


@pytest.mark.parametrize("role", ["EmrInstanceRole", "ServerlessJobRole"])
def test_multipart_uploads_are_listed_under_the_outputs_only(template: dict[str, Any], role: str) -> None:
    for prefix in ("results/", "checkpoints/stream/", "features/", "scratch/mlflow/"):
        assert effective(template, role, "s3:ListBucketMultipartUploads", BUCKET_ARN, **{"s3:prefix": prefix}), prefix
    for prefix in ("images/", "models/", "bootstrap/", ""):
        assert not effective(template, role, "s3:ListBucketMultipartUploads", BUCKET_ARN, **{"s3:prefix": prefix}), (
            prefix
        )
    assert not effective(template, role, "s3:ListBucketMultipartUploads", BUCKET_ARN)


@pytest.mark.parametrize("policy", ["UploadNotifierDeadLettersPolicy", "NotificationsDeadLettersPolicy"])
def test_the_dead_letter_queues_refuse_plain_http_and_strangers(template: dict[str, Any], policy: str) -> None:
    statements = policy_of(template, policy)
    queue = {
        "UploadNotifierDeadLettersPolicy": "<UploadNotifierDeadLetters.Arn>",
        "NotificationsDeadLettersPolicy": "<NotificationsDeadLetters.Arn>",
    }[policy]
    assert Resolver(template)(template["Resources"][policy]["Properties"]["Queues"]) == [queue.split(".")[0] + ">"]
    everything = [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]
    assert not allows(everything + statements, "sqs:ReceiveMessage", queue, **{"aws:SecureTransport": "false"})
    assert allows(everything + statements, "sqs:ReceiveMessage", queue, **{"aws:SecureTransport": "true"})
    lambda_role = Resolver(template).values["UploadNotifierRole.Arn"]
    sends = allows(
        everything + statements,
        "sqs:SendMessage",
        queue,
        **{"aws:PrincipalArn": lambda_role, "aws:SecureTransport": "true"},
    )
    assert sends is (policy == "UploadNotifierDeadLettersPolicy")
    assert not allows(
        everything + statements, "sqs:SendMessage", queue, **{"aws:PrincipalArn": ADMIN, "aws:SecureTransport": "true"}
    )


def test_pip_and_setuptools_pins_are_past_their_known_vulnerabilities() -> None:
    """pip < 25.3 (CVE-2025-8869: tar links outside the target) and < 26.0 (CVE-2026-1703: wheel paths);
    setuptools < 78.1.1 (CVE-2025-47273, and 70.0 / 65.5.1 before it). The nodes install these from the lock."""
    pins = constraint_pins(ROOT)

    def version(name: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", pins[name])[:3])

    assert version("pip") >= (26, 0) and version("setuptools") >= (78, 1, 1) and version("wheel") >= (0, 38, 1)
