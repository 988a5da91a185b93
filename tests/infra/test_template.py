"""infra/template.yaml: lint, static security checks on the parsed template, a real stack on moto.

moto's CloudFormation creates the bucket (with its encryption), the topic, the queues, the keys, the
function and the IAM roles, but it ignores the bucket's NotificationConfiguration, lifecycle, public
access block, ownership and versioning, skips the bucket, topic and queue policies, the SNS
subscriptions, Glue and Athena, and never evaluates IAM policies. Everything it cannot see is asserted on the parsed template below,
evaluating the policies the way IAM matches them (wildcards, StringLike conditions).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from cfn_support import (
    ACCOUNT,
    BUCKET,
    BUCKET_ARN,
    IMAGE_SUFFIXES,
    REGION,
    ROOT,
    TEMPLATE,
    Resolver,
    action_match,
    all_statements,
    create_stack_secrets,
    deploy_http_api,
    listify,
    load_template,
    moto_template_body,
    resources_of,
    wildcard_on_wildcard,
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# ---------------------------------------------------------------------------- lint
def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    return subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.slow
def test_cfn_lint_is_clean() -> None:
    result = _cfn_lint(TEMPLATE)
    assert result.returncode == 0, f"cfn-lint failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_cfn_lint_run_this_way_does_catch_errors(tmp_path: Path) -> None:
    # Guards the check above against a linter that silently lints nothing.
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Runtime: python3.13", "Runtime: python3.99"))
    result = _cfn_lint(broken)
    assert result.returncode != 0 and "python3.99" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------- names & outputs
def test_names_other_code_relies_on(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    named = {
        "AWS::S3::Bucket": ("BucketName", BUCKET),
        "AWS::SNS::Topic": ("TopicName", "fruits-uploads"),
        "AWS::Lambda::Function": ("FunctionName", ["fruits-app", "fruits-upload-notifier"]),
        "AWS::IAM::InstanceProfile": ("InstanceProfileName", "fruits-emr-ec2-role"),  # = its role's name
    }
    for type_, (prop, expected) in named.items():
        names = sorted(resolve(resource["Properties"][prop]) for resource in resources_of(template, type_).values())
        assert names == (expected if isinstance(expected, list) else [expected])
    role_names = {
        resolve(r["Properties"].get("RoleName", "")) for r in resources_of(template, "AWS::IAM::Role").values()
    }
    assert {"fruits-emr-service-role", "fruits-emr-ec2-role"} <= role_names
    params = template["Parameters"]
    assert params["ProjectName"]["Default"] == "fruits"
    assert params["ImagesPrefix"]["Default"] == "images/"
    assert params["NotificationEmail"]["Default"] == ""


def test_outputs(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    outputs = {name: resolve(o["Value"]) for name, o in template["Outputs"].items()}
    assert outputs["BucketName"] == BUCKET
    assert outputs["MlflowArtifactRoot"] == f"s3://{BUCKET}/mlflow/"
    assert template["Outputs"]["TopicArn"]["Value"] == {"Ref": "UploadsTopic"}
    assert template["Outputs"]["UploadNotifierArn"]["Value"] == {"Fn::GetAtt": ["UploadNotifier", "Arn"]}
    # run_job_flow takes the role and the instance profile (not the EC2 role) by name.
    assert template["Outputs"]["EmrServiceRole"]["Value"] == {"Ref": "EmrServiceRole"}
    assert template["Outputs"]["EmrInstanceProfile"]["Value"] == {"Ref": "EmrInstanceProfile"}


# ---------------------------------------------------------------------------- policies everywhere
def test_wildcard_detector_flags_what_it_should() -> None:
    assert wildcard_on_wildcard({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert wildcard_on_wildcard({"Effect": "Allow", "Action": ["sns:Publish", "s3:*"], "Resource": ["x", "*"]})
    assert wildcard_on_wildcard({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert not wildcard_on_wildcard({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"})
    assert not wildcard_on_wildcard({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})


def test_no_wildcard_action_on_wildcard_resource_anywhere(template: dict[str, Any]) -> None:
    # A key policy's "*" resource is the key itself: tests/infra/test_security.py checks who gets what there.
    others = {name: r for name, r in template["Resources"].items() if r["Type"] != "AWS::KMS::Key"}
    statements = list(all_statements(others))
    # 3 trust policies, 2 bucket-policy denies, 2 Lambda-role, 1 PassRole, 6 EMR instance-role
    assert len(statements) >= 14, "the walker missed policy documents"
    offenders = [s for s in statements if wildcard_on_wildcard(s)]
    assert offenders == []


# ---------------------------------------------------------------------------- bucket
def test_bucket_blocks_public_access_and_acls(template: dict[str, Any]) -> None:
    props = template["Resources"]["DataBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_bucket_is_encrypted_by_default(template: dict[str, Any]) -> None:
    (rule,) = template["Resources"]["DataBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algorithm = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert algorithm in {"AES256", "aws:kms"}
    if algorithm == "aws:kms":
        assert rule.get("BucketKeyEnabled") is True


def test_bucket_policy_denies_plain_http_on_bucket_and_objects(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    (policy,) = resources_of(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    tls_denies = [
        resolve(s)
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if str(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport", "")).lower() == "false"
    ]
    assert len(tls_denies) == 1
    deny = tls_denies[0]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] in ("*", {"AWS": "*"})
    assert any(
        action_match(a, "s3:GetObject") and action_match(a, "s3:PutObject") and action_match(a, "s3:ListBucket")
        for a in listify(deny["Action"])
    )
    assert set(listify(deny["Resource"])) == {BUCKET_ARN, f"{BUCKET_ARN}/*"}


def test_versioning_is_bounded_and_logs_expire(template: dict[str, Any]) -> None:
    props = template["Resources"]["DataBucket"]["Properties"]
    rules = [r for r in props["LifecycleConfiguration"]["Rules"] if r["Status"] == "Enabled"]
    whole_bucket = [r for r in rules if not r.get("Prefix") and "TagFilters" not in r]
    assert any(
        1 <= r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation", 0) <= 7 for r in whole_bucket
    )
    logs = [r for r in rules if r.get("Prefix") == "logs/"]
    assert len(logs) == 1 and 1 <= logs[0]["ExpirationInDays"] <= 90
    if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        # Without it, every checkpoint rewrite is kept forever.
        assert any("NoncurrentVersionExpiration" in r for r in whole_bucket)


# ---------------------------------------------------------------------------- notification
def notification_rules(template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The bucket's NotificationConfiguration with these parameters (Fn::If resolved, NoValue dropped)."""
    resolved = Resolver(template, **parameters)(
        template["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]
    )
    return {kind: rules for kind, rules in resolved.items() if rules != "<AWS::NoValue>"}


@pytest.mark.parametrize(
    ("wiring", "kind", "target"),
    [
        ("lambda-sns", "LambdaConfigurations", ("Function", "<UploadNotifier.Arn>")),
        ("s3-sqs", "QueueConfigurations", ("Queue", "<NotificationsQueue.Arn>")),
    ],
)
def test_uploads_reach_exactly_one_target_per_wiring(
    template: dict[str, Any], wiring: str, kind: str, target: tuple[str, str]
) -> None:
    configs = notification_rules(template, NotificationWiring=wiring)
    assert list(configs) == [kind]  # never both: S3 rejects overlapping rules
    suffixes = set()
    for config in configs[kind]:
        assert config["Event"] == "s3:ObjectCreated:*"
        assert config[target[0]] == target[1]
        rules = {r["Name"].lower(): r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        assert set(rules) == {"prefix", "suffix"}
        assert rules["prefix"] == "images/"
        suffixes.add(rules["suffix"])
    assert len(configs[kind]) == len(IMAGE_SUFFIXES) and suffixes == IMAGE_SUFFIXES
    # S3 rejects overlapping rules: same event, and one suffix ending with another.
    for a in suffixes:
        for b in suffixes - {a}:
            assert not a.endswith(b)
    # S3 checks the target's permission when the configuration is saved: both exist first.
    bucket = template["Resources"]["DataBucket"]
    assert {"UploadNotifierS3Permission", "NotificationsQueuePolicy"} <= set(listify(bucket["DependsOn"]))


def test_invoke_permission_names_the_bucket_without_a_cycle(template: dict[str, Any]) -> None:
    permission = template["Resources"]["UploadNotifierS3Permission"]
    props = Resolver(template)(permission["Properties"])
    assert props["Action"] == "lambda:InvokeFunction"
    assert props["Principal"] == "s3.amazonaws.com"
    assert props["SourceArn"] == BUCKET_ARN
    assert props["SourceAccount"] == ACCOUNT
    assert permission["Properties"]["FunctionName"] in (
        {"Fn::GetAtt": ["UploadNotifier", "Arn"]},
        {"Ref": "UploadNotifier"},
    )
    # Referencing the bucket from the permission would close the cycle bucket -> permission.
    assert "DataBucket" not in repr(permission)


# ---------------------------------------------------------------------------- Lambda
def test_lambda_function_configuration(template: dict[str, Any]) -> None:
    props = template["Resources"]["UploadNotifier"]["Properties"]
    assert props["Runtime"] == "python3.13"  # why: tests/infra/test_second_review.py
    assert props["Handler"] == "handler.handler"
    assert props["Role"] == {"Fn::GetAtt": ["UploadNotifierRole", "Arn"]}
    assert props["Environment"]["Variables"] == {
        "TOPIC_ARN": {"Ref": "UploadsTopic"},
        "IMAGES_PREFIX": {"Ref": "ImagesPrefix"},
        "EXPECTED_BUCKET": {"Fn::Sub": "${ProjectName}-${AWS::AccountId}-${AWS::Region}"},
    }
    assert Resolver(template)(props["Environment"]["Variables"]["EXPECTED_BUCKET"]) == BUCKET
    # A reservation only when asked (tests/infra/test_second_review.py); what still fails is kept, not lost.
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasConcurrencyReservation", {"Ref": "UploadNotifierConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert props["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["UploadNotifierDeadLetters", "Arn"]}}
    dead_letters = template["Resources"]["UploadNotifierDeadLetters"]["Properties"]
    assert dead_letters["MessageRetentionPeriod"] == 1209600 and dead_letters["KmsMasterKeyId"] == {
        "Ref": "MessagesKey"
    }
    log_group = template["Resources"]["UploadNotifierLogGroup"]
    assert Resolver(template)(log_group["Properties"]["LogGroupName"]) == "/aws/lambda/fruits-upload-notifier"
    assert 1 <= log_group["Properties"]["RetentionInDays"] <= 400


def test_lambda_role_only_publishes_to_its_topic_and_writes_its_logs(template: dict[str, Any]) -> None:
    role = template["Resources"]["UploadNotifierRole"]["Properties"]
    # A managed policy such as AWSLambdaBasicExecutionRole would grant logs on every group.
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert all(s["Effect"] == "Allow" for s in statements)
    grants = {(action, repr(s["Resource"])) for s in statements for action in listify(s["Action"])}
    topic = repr({"Ref": "UploadsTopic"})
    log_group = repr({"Fn::GetAtt": ["UploadNotifierLogGroup", "Arn"]})
    key = repr({"Fn::GetAtt": ["MessagesKey", "Arn"]})
    assert grants == {
        ("sns:Publish", topic),
        ("logs:CreateLogStream", log_group),
        ("logs:PutLogEvents", log_group),
        ("sqs:SendMessage", repr({"Fn::GetAtt": ["UploadNotifierDeadLetters", "Arn"]})),
        ("kms:GenerateDataKey", key),  # the topic and the dead-letter queue are encrypted
        ("kms:Decrypt", key),
    }


def test_email_subscription_only_when_an_address_is_given(template: dict[str, Any]) -> None:
    subscriptions = resources_of(template, "AWS::SNS::Subscription")
    assert set(subscriptions) == {"UploadsEmailSubscription", "NotificationsSubscription"}  # the queue's: test_queue.py
    subscription = subscriptions["UploadsEmailSubscription"]
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "UploadsTopic"}
    condition = template["Conditions"][subscription["Condition"]]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "NotificationEmail"}, ""]}]}


# ---------------------------------------------------------------------------- moto
def _lambda_zip() -> bytes:
    """lambda/*.py at the zip's root, as docs/aws.md packages it (`python3 -m zipfile -c ...`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted((ROOT / "lambda").glob("*.py")):
            archive.write(source, source.name)
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Tried to parse")
def test_stack_deploys_on_moto(moto_server: str) -> None:
    # A project name of its own: the moto server is shared with other tests that may create
    # buckets named after the default project.
    project = "fruits-cfntest"
    bucket = f"{project}-{ACCOUNT}-{REGION}"
    clients = {
        name: boto3.client(name, endpoint_url=moto_server, region_name=REGION)
        for name in ("s3", "cloudformation", "sns", "lambda", "iam", "dynamodb", "apigatewayv2", "secretsmanager")
    }
    s3, cfn = clients["s3"], clients["cloudformation"]

    # The deployment procedure of docs/aws.md: the code goes to an artifacts bucket first.
    code = _lambda_zip()
    # Handler "handler.handler" means handler.py at the root of the zip.
    assert "handler.py" in zipfile.ZipFile(io.BytesIO(code)).namelist()
    artifacts = f"{project}-artifacts-{ACCOUNT}-{REGION}"
    s3.create_bucket(Bucket=artifacts, CreateBucketConfiguration={"LocationConstraint": REGION})
    code_key = f"lambda/upload-notifier-{hashlib.sha256(code).hexdigest()[:16]}.zip"
    s3.put_object(Bucket=artifacts, Key=code_key, Body=code)

    cfn.create_stack(
        StackName="fruits-cfntest",
        # moto's CloudFormation has neither the HTTP API nor Secrets Manager: made through their APIs (cfn_support).
        TemplateBody=moto_template_body(secrets=create_stack_secrets(clients["secretsmanager"], project)),
        Parameters=[
            {"ParameterKey": "ProjectName", "ParameterValue": project},
            {"ParameterKey": "LambdaCodeS3Bucket", "ParameterValue": artifacts},
            {"ParameterKey": "LambdaCodeS3Key", "ParameterValue": code_key},
            {
                "ParameterKey": "AppCodeS3Key",
                "ParameterValue": code_key,
            },  # a stand-in: moto stores the app's code, never runs it
            {"ParameterKey": "DeployPrincipalArn", "ParameterValue": f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"},
        ],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + 120  # generous: moto creates the stack in seconds, busy machines are slower
    while True:
        (stack,) = cfn.describe_stacks(StackName="fruits-cfntest")["Stacks"]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    assert outputs["BucketName"] == bucket
    s3.head_bucket(Bucket=bucket)
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == REGION
    (sse,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{project}-uploads"
    assert outputs["TopicArn"] == topic_arn
    assert clients["sns"].get_topic_attributes(TopicArn=topic_arn)["Attributes"]["TopicArn"] == topic_arn

    function = clients["lambda"].get_function(FunctionName=f"{project}-upload-notifier")
    config = function["Configuration"]
    assert outputs["UploadNotifierArn"] == config["FunctionArn"]
    assert config["FunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{project}-upload-notifier"
    assert config["Runtime"] == "python3.13"
    assert config["Handler"] == "handler.handler"
    assert config["Environment"]["Variables"] == {
        "TOPIC_ARN": topic_arn,
        "IMAGES_PREFIX": "images/",
        "EXPECTED_BUCKET": bucket,
    }
    # The function runs the zip the parameters point at (moto stores it; it cannot run it).
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()

    iam = clients["iam"]
    assert outputs["EmrServiceRole"] == f"{project}-emr-service-role"
    assert outputs["EmrInstanceProfile"] == f"{project}-emr-ec2-role"  # the role's own name
    assert outputs["EmrSecurityConfiguration"] == f"{project}-emr-security"
    assert outputs["DeployRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{project}-deploy"
    service_role = iam.get_role(RoleName=f"{project}-emr-service-role")["Role"]
    assert service_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "elasticmapreduce.amazonaws.com"
    }
    # moto does not attach a template's ManagedPolicyArns: test_emr_service_role checks it.
    assert outputs["ServerlessJobRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{project}-emr-serverless-job-role"
    serverless_role = iam.get_role(RoleName=f"{project}-emr-serverless-job-role")["Role"]
    assert serverless_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "emr-serverless.amazonaws.com"
    }
    profile = iam.get_instance_profile(InstanceProfileName=f"{project}-emr-ec2-role")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [f"{project}-emr-ec2-role"]
    assert outputs["MlflowArtifactRoot"] == f"s3://{bucket}/mlflow/"
    policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/{project}-mlflow-artifacts"
    assert outputs["MlflowArtifactsPolicyArn"] == policy_arn
    assert iam.get_policy(PolicyArn=policy_arn)["Policy"]["PolicyName"] == f"{project}-mlflow-artifacts"

    # moto creates the EMR security configuration too, but its EMR API answers from the region in the
    # endpoint's host name (us-east-1 for 127.0.0.1): tests/infra/test_security.py checks it on the template.
    topic_attributes = clients["sns"].get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    # Encrypted with a key the stack created (a KMS key id; which one is checked on the template: moto's
    # stack-resource and key APIs fail on this stack's key policy).
    assert re.fullmatch(r"[0-9a-f-]{36}", topic_attributes["KmsMasterKeyId"])

    # The app: its function, table and secrets from the stack; its HTTP API from the template's properties
    # (moto's CloudFormation has none), throttled at the stage, proxying everything to the function.
    app = clients["lambda"].get_function(FunctionName=f"{project}-app")["Configuration"]
    assert (app["Runtime"], app["Handler"]) == ("python3.13", "app.aws.handler")
    assert outputs["AppFunctionName"] == f"{project}-app"
    variables = app["Environment"]["Variables"]
    assert variables["FRUITS_SOURCE"] == f"s3://{bucket}/images/"
    assert variables["FRUITS_ANSWERS"] == outputs["AnswersUri"] == f"dynamodb://{project}-answers"
    assert variables["FRUITS_CHECKPOINT"] == f"s3://{bucket}/checkpoints/stream"
    secret_ids = variables["FRUITS_SECRETS"].split(",")
    assert len(secret_ids) == 2 and outputs["CuratorSecretArn"] in secret_ids
    generated = [clients["secretsmanager"].get_secret_value(SecretId=s)["SecretString"] for s in secret_ids]
    assert all(len(value) > 32 for value in generated)  # generated by the stack, never typed
    table = clients["dynamodb"].describe_table(TableName=f"{project}-answers")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "upload_id", "KeyType": "HASH"}]
    # moto's CloudFormation skips the table's TTL: tests/infra/test_app_stack.py checks it on the template.
    api = deploy_http_api(clients["apigatewayv2"], app["FunctionArn"])
    (route,) = clients["apigatewayv2"].get_routes(ApiId=api["api_id"])["Items"]
    assert route["RouteKey"] == "$default"
    stage = clients["apigatewayv2"].get_stage(ApiId=api["api_id"], StageName="$default")
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == 50.0
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 100
