"""infra/template.yaml: lint, static security checks on the parsed template, a real stack on moto.

moto's CloudFormation creates the bucket (with its encryption), the topic, the function and the
IAM roles, but it ignores the bucket's NotificationConfiguration, lifecycle, public access block,
ownership and versioning, skips the bucket and topic policies and the email subscription, and never
evaluates IAM policies. Everything it cannot see is asserted on the parsed template below,
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"

# What the resolved names must be for the default parameters in a moto-like account.
ACCOUNT = "123456789012"  # moto's default account id
REGION = "eu-west-3"
BUCKET = f"fruits-{ACCOUNT}-{REGION}"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
S3_WRITE_ACTIONS = (
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectAcl",
    "s3:PutObjectTagging",
    "s3:AbortMultipartUpload",
    "s3:RestoreObject",
)


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    # cfn-lint's own decoder: it understands !Sub/!Ref/!GetAtt and turns them into the
    # JSON forms ({"Fn::Sub": ...}), exactly as CloudFormation reads them.
    return cfn_yaml.load(str(TEMPLATE))


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Resolver:
    """Evaluates the intrinsic functions the template uses, with default parameters.

    Refs to resources other than the bucket become "<Name>" placeholders, GetAtt "<Name.Attr>":
    the assertions only need concrete strings for names built from parameters and the bucket.
    """

    def __init__(self, template: dict[str, Any], **overrides: str) -> None:
        self.values: dict[str, str] = {
            name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()
        }
        self.values.update(overrides)
        self.values.update({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws"})
        bucket_name = template["Resources"]["DataBucket"]["Properties"]["BucketName"]
        self.values["DataBucket"] = self(bucket_name)
        self.values["DataBucket.Arn"] = f"arn:aws:s3:::{self.values['DataBucket']}"

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self(item) for item in node]
        if not isinstance(node, dict):
            return str(node) if isinstance(node, str) else node
        if len(node) != 1:
            return {key: self(value) for key, value in node.items()}
        (key, arg), = node.items()
        if key == "Ref":
            return self.values.get(arg, f"<{arg}>")
        if key == "Fn::GetAtt":
            dotted = ".".join(arg) if isinstance(arg, list) else arg
            return self.values.get(dotted, f"<{dotted}>")
        if key == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], {k: self(v) for k, v in arg[1].items()})
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(local.get(m[1], self.values.get(m[1], f"<{m[1]}>"))), text)
        if key == "Fn::Select":
            return self(arg[1])[int(arg[0])]
        if key == "Fn::Split":
            return self(arg[1]).split(arg[0])
        if key == "Fn::Join":
            return arg[0].join(self(arg[1]))
        return {key: self(arg)}


def all_statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM/resource policy statement anywhere in the template."""
    if isinstance(node, dict):
        if "Statement" in node and isinstance(node["Statement"], list):
            yield from node["Statement"]
        for value in node.values():
            yield from all_statements(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_statements(item)


def wildcard_on_wildcard(statement: dict[str, Any]) -> bool:
    """True for "*" or "service:*" actions (or any NotAction) on a "*" resource."""
    actions = listify(statement.get("Action", []))
    resources = listify(statement.get("Resource", []))
    broad_action = "NotAction" in statement or any(
        isinstance(a, str) and (a == "*" or a.endswith(":*")) for a in actions
    )
    broad_resource = "NotResource" in statement or "*" in resources
    return broad_action and broad_resource


def iam_match(pattern: str, value: str) -> bool:
    """IAM string matching: * is any run of characters (including "/"), ? is one, case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def action_match(pattern: str, action: str) -> bool:
    # Action names are case-insensitive in IAM.
    return iam_match(pattern.lower(), action.lower())


def conditions_hold(condition: dict[str, Any] | None, context: dict[str, str]) -> bool:
    for operator, entries in (condition or {}).items():
        for key, expected in entries.items():
            actual = context.get(key)
            if actual is None:
                return False
            if operator == "StringLike":
                ok = any(iam_match(p, actual) for p in listify(expected))
            elif operator == "StringEquals":
                ok = actual in listify(expected)
            else:
                raise AssertionError(f"the test's evaluator does not know {operator}: extend it")
            if not ok:
                return False
    return True


def allows(statements: list[dict[str, Any]], action: str, resource: str, **context: str) -> bool:
    """Whether an allow-only policy grants `action` on `resource` (the roles have no Deny)."""
    return any(
        s["Effect"] == "Allow"
        and any(action_match(a, action) for a in listify(s["Action"]))
        and any(iam_match(r, resource) for r in listify(s["Resource"]))
        and conditions_hold(s.get("Condition"), context)
        for s in statements
    )


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every statement a role gets: its inline policies and the template's managed policies it attaches."""
    resolve = Resolver(template)
    props = template["Resources"][role]["Properties"]
    documents = [policy["PolicyDocument"] for policy in props.get("Policies", [])]
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:  # a policy of this template; AWS-managed ones are checked by name
            documents.append(template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    statements = [resolve(s) for document in documents for s in document["Statement"]]
    assert all(s["Effect"] == "Allow" for s in statements), "the evaluator assumes allow-only role policies"
    return statements


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
    broken.write_text(TEMPLATE.read_text().replace("Runtime: python3.11", "Runtime: python3.99"))
    result = _cfn_lint(broken)
    assert result.returncode != 0 and "python3.99" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------- names & outputs
def test_names_other_code_relies_on(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    named = {
        "AWS::S3::Bucket": ("BucketName", BUCKET),
        "AWS::SNS::Topic": ("TopicName", "fruits-uploads"),
        "AWS::Lambda::Function": ("FunctionName", "fruits-upload-notifier"),
        "AWS::IAM::InstanceProfile": ("InstanceProfileName", "fruits-emr-ec2-profile"),
    }
    for type_, (prop, expected) in named.items():
        (resource,) = resources_of(template, type_).values()
        assert resolve(resource["Properties"][prop]) == expected
    role_names = {resolve(r["Properties"].get("RoleName", "")) for r in resources_of(template, "AWS::IAM::Role").values()}
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
    statements = list(all_statements(template["Resources"]))
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
    assert any(action_match(a, "s3:GetObject") and action_match(a, "s3:PutObject") and action_match(a, "s3:ListBucket")
               for a in listify(deny["Action"]))
    assert set(listify(deny["Resource"])) == {BUCKET_ARN, f"{BUCKET_ARN}/*"}


def test_versioning_is_bounded_and_logs_expire(template: dict[str, Any]) -> None:
    props = template["Resources"]["DataBucket"]["Properties"]
    rules = [r for r in props["LifecycleConfiguration"]["Rules"] if r["Status"] == "Enabled"]
    whole_bucket = [r for r in rules if not r.get("Prefix") and "TagFilters" not in r]
    assert any(1 <= r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation", 0) <= 7 for r in whole_bucket)
    logs = [r for r in rules if r.get("Prefix") == "logs/"]
    assert len(logs) == 1 and 1 <= logs[0]["ExpirationInDays"] <= 90
    if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        # Without it, every checkpoint rewrite is kept forever.
        assert any("NoncurrentVersionExpiration" in r for r in whole_bucket)


# ---------------------------------------------------------------------------- notification
def test_notification_targets_the_lambda_on_images_with_image_suffixes(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["DataBucket"]
    configs = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    suffixes = set()
    for config in configs:
        assert config["Event"] == "s3:ObjectCreated:*"
        assert config["Function"] == {"Fn::GetAtt": ["UploadNotifier", "Arn"]}
        rules = {r["Name"].lower(): r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        assert set(rules) == {"prefix", "suffix"}
        assert rules["prefix"] == {"Ref": "ImagesPrefix"}
        suffixes.add(rules["suffix"])
    assert len(configs) == len(IMAGE_SUFFIXES)
    assert suffixes == IMAGE_SUFFIXES
    # S3 rejects overlapping rules: same event, and one suffix ending with another.
    for a in suffixes:
        for b in suffixes - {a}:
            assert not a.endswith(b)
    assert "UploadNotifierS3Permission" in listify(bucket["DependsOn"])
    assert template["Resources"]["UploadNotifierS3Permission"]["Type"] == "AWS::Lambda::Permission"


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
    assert props["Runtime"] == "python3.11"
    assert props["Handler"] == "handler.handler"
    assert props["Role"] == {"Fn::GetAtt": ["UploadNotifierRole", "Arn"]}
    assert props["Environment"]["Variables"] == {
        "TOPIC_ARN": {"Ref": "UploadsTopic"},
        "IMAGES_PREFIX": {"Ref": "ImagesPrefix"},
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
    assert grants == {
        ("sns:Publish", topic),
        ("logs:CreateLogStream", log_group),
        ("logs:PutLogEvents", log_group),
    }


# ---------------------------------------------------------------------------- EMR
def test_emr_service_role(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    role = resolve(template["Resources"]["EmrServiceRole"]["Properties"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert role["ManagedPolicyArns"] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]
    statements = role_statements(template, "EmrServiceRole")
    pass_role = [s for s in statements if any(action_match(a, "iam:PassRole") for a in listify(s["Action"]))]
    assert len(pass_role) == 1
    assert listify(pass_role[0]["Resource"]) == ["<EmrInstanceRole.Arn>"]


def test_emr_instance_profile_wraps_the_ec2_role(template: dict[str, Any]) -> None:
    profile = template["Resources"]["EmrInstanceProfile"]["Properties"]
    assert profile["Roles"] == [{"Ref": "EmrInstanceRole"}]
    trust = template["Resources"]["EmrInstanceRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}]


def test_no_other_passrole_in_the_template(template: dict[str, Any]) -> None:
    passing = [
        s for s in all_statements(template["Resources"])
        if any(isinstance(a, str) and action_match(a, "iam:PassRole") for a in listify(s.get("Action", [])))
    ]
    assert len(passing) == 1


JOB_ROLES = ["EmrInstanceRole", "ServerlessJobRole"]  # the same data access wherever the jobs run


@pytest.mark.parametrize("role", JOB_ROLES)
@pytest.mark.parametrize("prefix", ["images/", "models/", "bootstrap/"])
def test_job_roles_read_but_never_write_inputs(template: dict[str, Any], prefix: str, role: str) -> None:
    statements = role_statements(template, role)
    key = f"{BUCKET_ARN}/{prefix}Apple Red 1/r_12_100.jpg"
    assert allows(statements, "s3:GetObject", key)
    assert allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": prefix})
    writable = [action for action in S3_WRITE_ACTIONS if allows(statements, action, key)]
    assert writable == []


@pytest.mark.parametrize("role", JOB_ROLES)
@pytest.mark.parametrize("prefix", ["results/", "errors/", "checkpoints/", "logs/", "features/", "mlflow/"])
def test_job_roles_write_outputs(template: dict[str, Any], prefix: str, role: str) -> None:
    statements = role_statements(template, role)
    key = f"{BUCKET_ARN}/{prefix}stream/date=2025-01-01/part-00000.snappy.parquet"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert allows(statements, action, key), action
    assert allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": f"{prefix}stream/"})


@pytest.mark.parametrize("role", JOB_ROLES)
def test_job_roles_stay_inside_the_bucket(template: dict[str, Any], role: str) -> None:
    statements = role_statements(template, role)
    # Listing the whole bucket, or another project's prefix, is not granted.
    assert not allows(statements, "s3:ListBucket", BUCKET_ARN)
    assert not allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "secrets/"})
    assert not allows(statements, "s3:GetObject", f"{BUCKET_ARN}/secrets/x")
    assert not allows(statements, "s3:GetObject", "arn:aws:s3:::someone-elses-bucket/images/a.jpg")
    assert not allows(statements, "s3:DeleteBucket", BUCKET_ARN)
    assert not allows(statements, "s3:PutBucketPolicy", BUCKET_ARN)
    foreign = {
        r for s in statements for r in listify(s["Resource"])
        if r != BUCKET_ARN and not r.startswith(f"{BUCKET_ARN}/")
    }
    # The only resource outside the data bucket: the cluster's read of EMR's public tooling bucket.
    assert foreign == ({f"arn:aws:s3:::{REGION}.elasticmapreduce/*"} if role == "EmrInstanceRole" else set())
    assert not allows(statements, "s3:PutObject", f"arn:aws:s3:::{REGION}.elasticmapreduce/x")


def test_serverless_job_role_is_assumed_by_this_accounts_applications_only(template: dict[str, Any]) -> None:
    role = Resolver(template)(template["Resources"]["ServerlessJobRole"]["Properties"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/*"},
    }
    assert role["RoleName"] == "fruits-emr-serverless-job-role"  # infra/defaults.py JOB_ROLE


def test_mlflow_server_policy_reaches_only_the_mlflow_prefix(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    policy = template["Resources"]["MlflowArtifactsPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert resolve(policy["Properties"]["ManagedPolicyName"]) == "fruits-mlflow-artifacts"
    statements = [resolve(s) for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    artifact = f"{BUCKET_ARN}/mlflow/1/0123abcd/artifacts/model/MLmodel"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allows(statements, action, artifact), action
    assert allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "mlflow/1/"})
    for other in ("images/a/b.jpg", "results/part-0.parquet", "models/w.h5"):
        assert not allows(statements, "s3:GetObject", f"{BUCKET_ARN}/{other}")
    assert not allows(statements, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "images/"})


def test_email_subscription_only_when_an_address_is_given(template: dict[str, Any]) -> None:
    subscriptions = resources_of(template, "AWS::SNS::Subscription")
    assert len(subscriptions) == 1
    (subscription,) = subscriptions.values()
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
@pytest.mark.filterwarnings("ignore:Tried to parse .*BucketPolicy")
def test_stack_deploys_on_moto(moto_server: str) -> None:
    # A project name of its own: the moto server is shared with other tests that may create
    # buckets named after the default project.
    project = "fruits-cfntest"
    bucket = f"{project}-{ACCOUNT}-{REGION}"
    clients = {
        name: boto3.client(name, endpoint_url=moto_server, region_name=REGION)
        for name in ("s3", "cloudformation", "sns", "lambda", "iam")
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
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[
            {"ParameterKey": "ProjectName", "ParameterValue": project},
            {"ParameterKey": "LambdaCodeS3Bucket", "ParameterValue": artifacts},
            {"ParameterKey": "LambdaCodeS3Key", "ParameterValue": code_key},
        ],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + 20
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
    assert config["Runtime"] == "python3.11"
    assert config["Handler"] == "handler.handler"
    assert config["Environment"]["Variables"] == {"TOPIC_ARN": topic_arn, "IMAGES_PREFIX": "images/"}
    # The function runs the zip the parameters point at (moto stores it; it cannot run it).
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()

    iam = clients["iam"]
    assert outputs["EmrServiceRole"] == f"{project}-emr-service-role"
    assert outputs["EmrInstanceProfile"] == f"{project}-emr-ec2-profile"
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
    profile = iam.get_instance_profile(InstanceProfileName=f"{project}-emr-ec2-profile")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [f"{project}-emr-ec2-role"]
    assert outputs["MlflowArtifactRoot"] == f"s3://{bucket}/mlflow/"
    policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/{project}-mlflow-artifacts"
    assert outputs["MlflowArtifactsPolicyArn"] == policy_arn
    assert iam.get_policy(PolicyArn=policy_arn)["Policy"]["PolicyName"] == f"{project}-mlflow-artifacts"
