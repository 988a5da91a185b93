"""docs/aws.md's walk-through, run in order against an empty moto account (issue 24, item 4).

Every `aws ...` and `fruits ...` command of the section, in the order the page gives them, is run
here: the `fruits` commands through the command line itself, the `aws` ones as the same API call
with boto3 (the AWS CLI is not installed here). The test fails if the page and this list differ,
so neither can change without the other.

From step 5 on, the person is the stack's deploy role: every AWS request of those steps (the
`aws` commands', and those `fruits` makes itself, recorded at botocore's API-call boundary) is
turned into the IAM request(s) AWS authorizes it with and evaluated against the deploy role's
policy and the bucket policy, as tests/cfn_support.py evaluates IAM. moto itself enforces no IAM.

Between steps 10 and 11 a person uses the deployed app (a_photo_through_the_deployed_app): one photo
from the app's page through S3, the upload Lambda, SNS, SQS, the stream and DynamoDB back to the page,
the app's and the upload Lambda's requests checked against their own roles the same way.

Stand-ins, where the real thing cannot run here: the wheelhouse and the venv archive are small
ones (tests/aws_support.small_wheelhouse: the real pip wheel plus minimal wheels; building the
real one needs the package index), so is the app's package (infra/build_app_lambda.sh needs the
index too; the handler runs from this checkout); the MLflow server is the session's sqlite registry
(`submit --job both` asks it nothing; the stream and the app read @champion and its known map
there); moto's CloudFormation has no HTTP API, no secrets and no subscriptions (tests/cfn_support.py
makes them through moto's APIs from the template's properties); moto cannot run a Lambda (the
handlers are called with the events moto makes, as the runtime would). Time: ~2 min (most of it the
stream's JVM and its backfill of the 323 uploaded images), plus the session's fit (~2.5 min, shared
with the other tests that need a model). What moto cannot check is docs/aws.md's checklist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest

from aws_support import ACCOUNT, REGION, small_wheelhouse
from cfn_support import (
    ROOT,
    TEMPLATE,
    Resolver,
    allows,
    bucket_policy_statements,
    create_stack_secrets,
    deploy_http_api,
    load_template,
    moto_template_body,
    role_statements,
)
from cli.main import main
from support import wait_until

DOC = ROOT / "docs" / "aws.md"
SECTION = "## From an empty account to a running stream, step by step"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
OPERATOR = "fruits-operator"
SERVICE_LINKED = {
    "elasticmapreduce.amazonaws.com": "AWSServiceRoleForEMRCleanup",
    "ops.emr-serverless.amazonaws.com": "AWSServiceRoleForAmazonEMRServerless",
}


def documented_commands() -> list[str]:
    """The `aws` and `fruits` command lines of the walk-through's bash blocks, in order, one line each."""
    text = DOC.read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"^(?:[A-Z_]+=\$\()?(aws|fruits) ", line):
                commands.append(" ".join(line.split()))
    return commands


@pytest.fixture
def empty_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto server in a process of its own: moto keeps its state per process (and S3 names per
    process too), so an in-process server would see what the other tests made."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, timeout=60, what="the walk-through's moto server", process=server)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_REGION", REGION)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


class Walkthrough:
    """Runs the page's commands in order as one person or another, and checks the deploy role's requests."""

    def __init__(self, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch, account: str) -> None:
        self.template = template
        self.vars: dict[str, str] = {"AWS_REGION": REGION, "PROJECT": "fruits", "OPERATOR": OPERATOR}
        self.executed: list[str] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.role: str | None = None  # whose AWS requests are recorded and checked: a role of the template
        self.denied: list[str] = []
        self.checked: set[str] = set()
        original = botocore.client.BaseClient._make_api_call
        walkthrough = self

        def recorded(client: Any, operation: str, params: dict[str, Any]) -> Any:
            # This account's requests only: a thread another test left behind may still call its own moto.
            if walkthrough.role and client.meta.endpoint_url.rstrip("/") == account.rstrip("/"):
                walkthrough.calls.append((client.meta.service_model.service_name, operation, dict(params)))
            return original(client, operation, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def sub(self, text: str) -> str:
        return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: self.vars[m[1]], text)

    def run(self, command: str, action: Callable[[], Any], into: str | None = None) -> None:
        self.executed.append(command)
        value = action()
        if into:
            self.vars[into] = str(value)

    def fruits(self, command: str, paths: dict[str, str] | None = None) -> dict[str, Any]:
        self.executed.append(command)
        line = command
        # The page's `output` function, run as whoever runs the command.
        line = re.sub(r"\$\(output (\w+)\)", lambda m: self.output(m[1]), line)
        line = self.sub(line)
        for placeholder, path in (paths or {}).items():
            line = line.replace(placeholder, path)
        argv = [*line.split()[1:], "--json"]
        assert main(argv) == 0, f"`{line}` failed"
        return {}

    def output(self, key: str) -> str:
        """The page's `output` function: `aws cloudformation describe-stacks --query ...`."""
        stack = self.client("cloudformation").describe_stacks(StackName=self.vars["PROJECT"])["Stacks"][0]
        return next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == key)

    # ------------------------------------------------------------------ the deploy role's requests
    def check_role_step(self, step: str, parameters: dict[str, str]) -> None:
        """Every request recorded since the last check, evaluated against `self.role`'s policies and the bucket's denies."""
        assert self.role is not None
        requests = [
            r
            for service, operation, params in self.calls
            for r in [(service, operation, *request) for request in self.iam_requests(service, operation, params)]
        ]
        self.check_requests(step, requests, parameters)
        self.calls = []

    def check_requests(
        self, step: str, requests: list[tuple[str, str, str, str, dict[str, str]]], parameters: dict[str, str]
    ) -> None:
        assert self.role is not None
        statements = role_statements(self.template, self.role, **parameters)
        statements += [s for s in bucket_policy_statements(self.template) if s["Effect"] == "Deny"]
        principal = Resolver(self.template, **parameters).values[f"{self.role}.Arn"]
        for service, operation, action, resource, context in requests:
            self.checked.add(action)
            context = {"aws:PrincipalArn": principal, "aws:SecureTransport": "true", "s3:TlsVersion": "1.3", **context}
            if not allows(statements, action, resource, **context):
                self.denied.append(
                    f"step {step} as {self.role}: {service} {operation} needs {action} on {resource} {context}"
                )

    @contextlib.contextmanager
    def looking(self) -> Iterator[None]:
        """The test's own look at the account: not a request of the walk-through."""
        self.role, previous = None, self.role
        try:
            yield
        finally:
            self.role = previous

    def cluster_tags(self, cluster_id: str) -> dict[str, str]:
        with self.looking():
            tags = self.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Tags"]
        return {t["Key"]: t["Value"] for t in tags}

    def iam_requests(
        self, service: str, operation: str, params: dict[str, Any]
    ) -> list[tuple[str, str, dict[str, str]]]:
        """What IAM authorizes for one API call (the Service Authorization Reference's mapping, for the calls made here)."""
        if service == "s3":
            bucket = f"arn:aws:s3:::{params['Bucket']}"
            if operation == "HeadObject":  # and, for a 404 rather than a 403 on a missing key, ListBucket there
                return [
                    ("s3:GetObject", f"{bucket}/{params['Key']}", {}),
                    ("s3:ListBucket", bucket, {"s3:prefix": params["Key"]}),
                ]
            if operation in ("ListObjectsV2", "ListObjects"):
                return [("s3:ListBucket", bucket, {"s3:prefix": params["Prefix"]} if "Prefix" in params else {})]
            if operation == "DeleteObjects":
                return [("s3:DeleteObject", f"{bucket}/{o['Key']}", {}) for o in params["Delete"]["Objects"]]
            writes = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
            action = {
                "HeadObject": "s3:GetObject",
                "GetObject": "s3:GetObject",
                "DeleteObject": "s3:DeleteObject",
                "AbortMultipartUpload": "s3:AbortMultipartUpload",
                **dict.fromkeys(writes, "s3:PutObject"),
            }.get(operation)
            if action:
                return [(action, f"{bucket}/{params['Key']}", {})]
        if service == "emr":
            if operation == "RunJobFlow":
                tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
                role = f"arn:aws:iam::{ACCOUNT}:role/"
                return [
                    (
                        "elasticmapreduce:RunJobFlow",
                        "*",
                        {"elasticmapreduce:RequestTag/project": tags.get("project", "")},
                    ),
                    (
                        "iam:PassRole",
                        role + params["ServiceRole"],
                        {"iam:PassedToService": "elasticmapreduce.amazonaws.com"},
                    ),
                    # The instance profile has its role's name (the stack makes it so).
                    ("iam:PassRole", role + params["JobFlowRole"], {"iam:PassedToService": "ec2.amazonaws.com"}),
                ]
            if operation == "ListClusters":
                return [("elasticmapreduce:ListClusters", "*", {})]
            ids = params.get("JobFlowIds") or [params.get("ClusterId") or params.get("JobFlowId")]
            return [
                (
                    f"elasticmapreduce:{operation}",
                    f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/{i}",
                    {"elasticmapreduce:ResourceTag/project": self.cluster_tags(i).get("project", "")},
                )
                for i in ids
            ]
        if service == "sts" and operation == "GetCallerIdentity":
            return []  # needs no permission
        if service == "iam" and operation == "CreateServiceLinkedRole":
            name = params["AWSServiceName"]
            arn = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{name}/{SERVICE_LINKED.get(name, 'Unknown')}"
            return [("iam:CreateServiceLinkedRole", arn, {"iam:AWSServiceName": name})]
        if service == "dynamodb" and operation in ("GetItem", "PutItem", "BatchWriteItem", "DescribeTable"):
            tables = params.get("RequestItems") or {params["TableName"]: None}
            return [
                (f"dynamodb:{operation}", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}", {}) for name in tables
            ]
        if service == "sns" and operation == "Publish":
            return [("sns:Publish", params["TopicArn"], {})]
        if service == "secretsmanager" and operation == "GetSecretValue":
            return [("secretsmanager:GetSecretValue", params["SecretId"], {})]
        if service == "cloudformation" and operation == "DescribeStacks":
            assert params["StackName"] == self.vars["PROJECT"]
            return [("cloudformation:DescribeStacks", self.vars["STACK_ID"], {})]
        raise AssertionError(
            f"the walk-through test does not know what IAM authorizes for {service} {operation}: extend it"
        )


def a_photo_through_the_deployed_app(
    w: Walkthrough,
    stack_values: dict[str, str],
    stream_args: list[str],
    tmp_path: Path,
    data_dir: Path,
    settings: Any,
    fitted: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> dict:
    """A person opens the deployed app and sends one photo; returns the answer the app shows.

    The page asks the app's Lambda handler (app.aws.handler, called with HTTP API events, in the function's
    environment as the stack deployed it) for a presigned POST; the browser POSTs the photo to S3 (moto);
    S3's event reaches the upload Lambda's handler (lambda/handler.py, called with the event moto made: moto
    cannot run a Lambda), which publishes to the stack's topic; SNS delivers into the stack's queue; the stream
    (`fruits stream` with the arguments `submit` gave the cluster's step, on local Spark against this moto)
    answers into the stack's DynamoDB table; the app reads the answer by id. Every request of the app's and the
    upload Lambda's handlers is checked against their roles, like the deploy role's. Stand-ins: the MLflow server
    is the session's sqlite registry (its @champion, fitted once per session); the stream's tables are local.
    """
    import importlib.util

    import requests
    from http_api import http_api_event

    from app import aws as app_aws
    from demo.workspace import scratch_state
    from support import start_stream

    bucket, lam, s3 = w.vars["BUCKET"], w.client("lambda"), w.client("s3")
    with w.looking():
        app_env = lam.get_function(FunctionName="fruits-app")["Configuration"]["Environment"]["Variables"]
        notifier_env = lam.get_function(FunctionName="fruits-upload-notifier")["Configuration"]["Environment"][
            "Variables"
        ]
        # What moto's CloudFormation does not wire: the topic's subscription (the template's properties), and the
        # bucket's Lambda trigger, replaced by a queue of S3's events that this test hands to the handler.
        sqs, sns = w.client("sqs"), w.client("sns")
        sns.subscribe(
            TopicArn=w.output("TopicArn"),
            Protocol="sqs",
            Endpoint=w.output("NotificationsQueueArn"),
            Attributes={"RawMessageDelivery": "false"},
        )
        events = sqs.create_queue(QueueName="s3-events-for-the-upload-lambda")["QueueUrl"]
        events_arn = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": events_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": [
                                    {"Name": "prefix", "Value": notifier_env["IMAGES_PREFIX"]},
                                    {"Name": "suffix", "Value": ".jpg"},
                                ]
                            }
                        },
                    }
                ]
            },
        )

    # The app's Lambda: the function's environment (Lambda's /tmp here a tmp dir; the registry the session's).
    for name, value in {
        **app_env,
        "FRUITS_STATE_DIR": str(tmp_path / "lambda-tmp"),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app_aws, "_handler", None)  # a cold start
    host = "app1234567.execute-api.eu-west-3.amazonaws.com"

    def call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return app_aws.handler(http_api_event(method, path, host=host, **kwargs), None)

    w.role = "AppFunctionRole"
    page = call("GET", "/")
    assert page["statusCode"] == 200
    token = page["body"].split('data-csrf="', 1)[1].split('"', 1)[0]
    cookies = [c.split(";")[0] for c in page.get("cookies", [])]
    presign = call(
        "POST",
        "/api/uploads/presign",
        cookies=cookies,
        body=json.dumps({"content_type": "image/jpeg"}),
        headers={"origin": f"https://{host}", "content-type": "application/json", "x-csrf-token": token},
    )
    assert presign["statusCode"] == 201, presign["body"]
    post = json.loads(presign["body"])
    upload_id, key = post["upload_id"], post["fields"]["key"]
    assert key == f"images/app/private/{upload_id}.jpg"
    w.check_role_step("app: page, presign", stack_values)

    # The browser's POST (S3 authorizes it as the role that signed it).
    photo = sorted((data_dir / "test" / "Limes").glob("*.jpg"))[0]
    sent = requests.post(
        post["url"], data=post["fields"], files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=30
    )
    assert sent.status_code in (200, 201, 204), sent.text
    w.check_requests(
        "app: the browser's POST",
        [("s3", "POST (presigned)", "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}", {})],
        stack_values,
    )
    pending = call("GET", f"/api/answers/{upload_id}")
    assert pending["statusCode"] == 200 and json.loads(pending["body"])["status"] == "pending"
    w.check_role_step("app: pending", stack_values)

    # S3's event -> the upload Lambda's handler -> SNS -> the stream's queue.
    spec = importlib.util.spec_from_file_location("upload_notifier", ROOT / "lambda" / "handler.py")
    notifier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notifier)
    for name, value in notifier_env.items():
        monkeypatch.setenv(name, value)
    delivered: list[dict] = []

    def s3_event() -> bool:
        with w.looking():
            for message in sqs.receive_message(QueueUrl=events, WaitTimeSeconds=1).get("Messages", []):
                body = json.loads(message["Body"])
                delivered.extend([body] if body.get("Records") else [])  # not s3:TestEvent
        return bool(delivered)

    wait_until(s3_event, timeout=60, what="S3's event for the upload")
    w.role = "UploadNotifierRole"
    result = notifier.handler(delivered[0], None)
    assert result.get("published") == 1, result
    w.check_role_step("upload Lambda", stack_values)

    # The stream, with the step's arguments (the registry, the tables and the state are this machine's), drains
    # the queue and answers (`available-now`: it stops once done; every run of `submit` would keep going).
    w.role = None
    checkout = Path.cwd()
    os.chdir(ROOT)  # the project's caches (.fruits/: s3a jars, Keras weights) as `make setup` left them
    state = scratch_state(tmp_path / "stream-state", settings)
    args, skip = [], {"--tracking-uri", "--weights", "--output", "--errors"}
    stream_part = stream_args[stream_args.index("stream") + 1 :]
    for flag, value in zip(stream_part[::2], stream_part[1::2], strict=True):
        if flag not in skip:
            args += [flag, value]
    args += [
        "--tracking-uri",
        settings.tracking_uri,
        "--output",
        str(tmp_path / "results"),
        "--errors",
        str(tmp_path / "errors"),
        "--state-dir",
        str(state),
        "--spark-master",
        "local[2]",
        "--trigger",
        "available-now",
        "--json",
    ]
    try:
        process = start_stream(args, tmp_path / "stream.log")
        out, _ = process.communicate(timeout=600)
    finally:
        os.chdir(checkout)
    assert process.returncode == 0, (tmp_path / "stream.log").read_text()[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["source_mode"] == "notifications"

    # The app reads the answer by id, and /ops the stream's progress on S3.
    w.role = "AppFunctionRole"
    answered = call("GET", f"/api/answers/{upload_id}")
    assert answered["statusCode"] == 200
    ops = call("GET", "/api/ops")
    assert ops["statusCode"] == 200 and json.loads(ops["body"])["answers"] >= 1
    w.check_role_step("app: the answer", stack_values)
    w.role = None
    return json.loads(answered["body"])


@pytest.mark.slow
def test_the_walkthrough_runs_in_order_from_an_empty_account(
    empty_account: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path, settings: Any, fitted: dict
) -> None:
    w = Walkthrough(load_template(), monkeypatch, empty_account)
    ec2, s3 = w.client("ec2"), w.client("s3")
    project_dir = tmp_path / "checkout"  # the walk-through runs from a checkout: build/, dist/ are relative
    project_dir.mkdir()
    monkeypatch.chdir(project_dir)

    # ------------------------------------------------------------ preamble (the administrator)
    w.run(
        "ACCOUNT=$(aws sts get-caller-identity --query Account --output text)",
        lambda: w.client("sts").get_caller_identity()["Account"],
        into="ACCOUNT",
    )
    assert w.vars["ACCOUNT"] == ACCOUNT
    w.vars["ARTIFACTS"] = w.sub("$PROJECT-artifacts-$ACCOUNT-$AWS_REGION")

    # ------------------------------------------------------------ 2. the network
    w.run(
        "VPC=$(aws ec2 create-vpc --cidr-block 10.20.0.0/16 --query Vpc.VpcId --output text)",
        lambda: ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"],
        into="VPC",
    )
    w.run(
        "SUBNET=$(aws ec2 create-subnet --vpc-id $VPC --cidr-block 10.20.1.0/24 --availability-zone ${AWS_REGION}a "
        "--query Subnet.SubnetId --output text)",
        lambda: ec2.create_subnet(VpcId=w.vars["VPC"], CidrBlock="10.20.1.0/24", AvailabilityZone=f"{REGION}a")[
            "Subnet"
        ]["SubnetId"],
        into="SUBNET",
    )
    w.run(
        "aws ec2 modify-vpc-attribute --vpc-id $VPC --enable-dns-hostnames",
        lambda: ec2.modify_vpc_attribute(VpcId=w.vars["VPC"], EnableDnsHostnames={"Value": True}),
    )
    w.run(
        "TABLE=$(aws ec2 describe-route-tables --filters Name=vpc-id,Values=$VPC --query 'RouteTables[0].RouteTableId' "
        "--output text)",
        lambda: ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [w.vars["VPC"]]}])["RouteTables"][0][
            "RouteTableId"
        ],
        into="TABLE",
    )
    for gateway in ("s3", "dynamodb"):
        w.run(
            f"aws ec2 create-vpc-endpoint --vpc-id $VPC --service-name com.amazonaws.$AWS_REGION.{gateway} "
            "--vpc-endpoint-type Gateway --route-table-ids $TABLE",
            lambda g=gateway: ec2.create_vpc_endpoint(
                VpcId=w.vars["VPC"],
                ServiceName=f"com.amazonaws.{REGION}.{g}",
                VpcEndpointType="Gateway",
                RouteTableIds=[w.vars["TABLE"]],
            ),
        )
    groups = {
        "PRIMARY_SG": ("emr-primary", "EMR primary"),
        "CORE_SG": ("emr-core", "EMR core and task"),
        "SERVICE_SG": ("emr-service-access", "EMR service access"),
        "ENDPOINT_SG": ("endpoints", "VPC interface endpoints"),
    }
    for var, (name, description) in groups.items():
        w.run(
            f"{var}=$(aws ec2 create-security-group --vpc-id $VPC --group-name $PROJECT-{name} --description "
            f'"{description}" --query GroupId --output text)',
            lambda n=name, d=description: ec2.create_security_group(
                VpcId=w.vars["VPC"], GroupName=f"fruits-{n}", Description=d
            )["GroupId"],
            into=var,
        )
    tagged = ["VPC", "SUBNET", "PRIMARY_SG", "CORE_SG", "SERVICE_SG"]
    w.run(
        "aws ec2 create-tags --resources $VPC $SUBNET $PRIMARY_SG $CORE_SG $SERVICE_SG --tags "
        "Key=for-use-with-amazon-emr-managed-policies,Value=true Key=project,Value=$PROJECT",
        lambda: ec2.create_tags(
            Resources=[w.vars[v] for v in tagged],
            Tags=[
                {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
                {"Key": "project", "Value": "fruits"},
            ],
        ),
    )

    def ingress(group: str) -> Callable[[], Any]:
        return lambda: ec2.authorize_security_group_ingress(
            GroupId=w.vars[group], IpProtocol="tcp", FromPort=443, ToPort=443, CidrIp="10.20.0.0/16"
        )

    def interface(service: str, group: str) -> Callable[[], Any]:
        return lambda: ec2.create_vpc_endpoint(
            VpcId=w.vars["VPC"],
            VpcEndpointType="Interface",
            SubnetIds=[w.vars["SUBNET"]],
            ServiceName=service.replace("$AWS_REGION", REGION),
            SecurityGroupIds=[w.vars[group]],
            PrivateDnsEnabled=True,
        )

    w.run(
        "aws ec2 authorize-security-group-ingress --group-id $SERVICE_SG --protocol tcp --port 443 --cidr 10.20.0.0/16",
        ingress("SERVICE_SG"),
    )
    w.run(
        "aws ec2 create-vpc-endpoint --vpc-id $VPC --vpc-endpoint-type Interface --subnet-ids $SUBNET --service-name "
        "aws.api.$AWS_REGION.emr-service-cell01 --security-group-ids $SERVICE_SG --private-dns-enabled",
        interface("aws.api.$AWS_REGION.emr-service-cell01", "SERVICE_SG"),
    )
    w.run(
        "aws ec2 authorize-security-group-ingress --group-id $ENDPOINT_SG --protocol tcp --port 443 --cidr 10.20.0.0/16",
        ingress("ENDPOINT_SG"),
    )
    for service in ("sqs", "kms", "secretsmanager"):
        w.run(
            f"aws ec2 create-vpc-endpoint --vpc-id $VPC --vpc-endpoint-type Interface --subnet-ids $SUBNET --service-name "
            f"com.amazonaws.$AWS_REGION.{service} --security-group-ids $ENDPOINT_SG --private-dns-enabled",
            interface(f"com.amazonaws.$AWS_REGION.{service}", "ENDPOINT_SG"),
        )
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [w.vars["VPC"]]}])["VpcEndpoints"]
    assert sorted(e["ServiceName"] for e in endpoints) == sorted(
        [
            f"aws.api.{REGION}.emr-service-cell01",
            *(f"com.amazonaws.{REGION}.{s}" for s in ("dynamodb", "kms", "s3", "secretsmanager", "sqs")),
        ]
    )

    # ------------------------------------------------------------ 3. the Lambda's code, the MLflow secret
    w.run(
        "aws s3 mb s3://$ARTIFACTS",
        lambda: s3.create_bucket(Bucket=w.vars["ARTIFACTS"], CreateBucketConfiguration={"LocationConstraint": REGION}),
    )
    package = project_dir / "build" / "upload-notifier.zip"
    package.parent.mkdir()
    with zipfile.ZipFile(package, "w") as archive:  # python3 -m zipfile -c build/upload-notifier.zip lambda/*.py
        for source in sorted((ROOT / "lambda").glob("*.py")):
            archive.write(source, source.name)
    w.vars["CODE_KEY"] = "lambda/upload-notifier-walkthrough.zip"
    w.run(
        "aws s3 cp build/upload-notifier.zip s3://$ARTIFACTS/$CODE_KEY",
        lambda: s3.upload_file(str(package), w.vars["ARTIFACTS"], w.vars["CODE_KEY"]),
    )
    # The app's package: a stand-in (infra/build_app_lambda.sh needs the package index; moto stores the code and
    # never runs it; the handler runs below from this checkout). tests/infra/test_app_lambda.py checks what it holds.
    app_package = project_dir / "build" / "app-lambda.zip"
    with zipfile.ZipFile(app_package, "w") as archive:
        archive.write(ROOT / "app" / "aws.py", "app/aws.py")
    w.vars["APP_KEY"] = "lambda/app-walkthrough.zip"
    w.run(
        "aws s3 cp build/app-lambda.zip s3://$ARTIFACTS/$APP_KEY",
        lambda: s3.upload_file(str(app_package), w.vars["ARTIFACTS"], w.vars["APP_KEY"]),
    )
    credentials = {"username": "fruits-jobs", "password": "correct horse battery staple"}
    w.run(
        "MLFLOW_SECRET=$(aws secretsmanager create-secret --name $PROJECT/mlflow --secret-string "
        "file://mlflow-credentials.json --query ARN --output text)",
        lambda: w.client("secretsmanager").create_secret(Name="fruits/mlflow", SecretString=json.dumps(credentials))[
            "ARN"
        ],
        into="MLFLOW_SECRET",
    )

    # ------------------------------------------------------------ 4. the stack
    parameters = {
        "ProjectName": "fruits",
        "LambdaCodeS3Bucket": w.vars["ARTIFACTS"],
        "LambdaCodeS3Key": w.vars["CODE_KEY"],
        "AppCodeS3Key": w.vars["APP_KEY"],
        "DeployPrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/{OPERATOR}",
        "MlflowCredentialsSecretArn": w.vars["MLFLOW_SECRET"],
    }

    secrets: dict[str, str] = {}

    def deploy() -> None:
        # `deploy --s3-bucket` uploads the template there and creates the stack from its URL. moto's CloudFormation
        # lacks the HTTP API and Secrets Manager: those are made through their APIs from the template's properties.
        cfn = w.client("cloudformation")
        secrets.update(create_stack_secrets(w.client("secretsmanager"), "fruits"))
        key = "cloudformation/template.json"
        s3.put_object(Bucket=w.vars["ARTIFACTS"], Key=key, Body=moto_template_body(secrets=secrets).encode())
        cfn.create_stack(
            StackName="fruits",
            TemplateURL=f"https://{w.vars['ARTIFACTS']}.s3.amazonaws.com/{key}",
            Capabilities=["CAPABILITY_NAMED_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        cfn.get_waiter("stack_create_complete").wait(StackName="fruits", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        function = w.client("lambda").get_function(FunctionName="fruits-app")["Configuration"]["FunctionArn"]
        deploy_http_api(w.client("apigatewayv2"), function)

    w.run(
        "aws cloudformation deploy --stack-name $PROJECT --template-file infra/template.yaml --s3-bucket $ARTIFACTS "
        "--s3-prefix cloudformation --capabilities CAPABILITY_NAMED_IAM --parameter-overrides ProjectName=$PROJECT "
        "LambdaCodeS3Bucket=$ARTIFACTS LambdaCodeS3Key=$CODE_KEY AppCodeS3Key=$APP_KEY "
        "DeployPrincipalArn=arn:aws:iam::$ACCOUNT:role/$OPERATOR MlflowCredentialsSecretArn=$MLFLOW_SECRET",
        deploy,
    )
    w.vars["BUCKET"], w.vars["DEPLOY_ROLE"] = w.output("BucketName"), w.output("DeployRoleArn")
    assert w.vars["DEPLOY_ROLE"] == f"arn:aws:iam::{ACCOUNT}:role/fruits-deploy"
    trust = w.client("iam").get_role(RoleName="fruits-deploy")["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:role/{OPERATOR}"}]

    # ------------------------------------------------------------ 5.-11. as the deploy role
    w.vars["STACK_ID"] = w.client("cloudformation").describe_stacks(StackName="fruits")["Stacks"][0]["StackId"]

    stack_values = {
        "MlflowCredentialsSecretArn": w.vars["MLFLOW_SECRET"],
        "DeployPrincipalArn": parameters["DeployPrincipalArn"],
        "AWS::StackId": w.vars["STACK_ID"],
        "AnswersTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/fruits-answers",
        "UploadsTopic": w.output("TopicArn"),
        **secrets,
    }

    def step(number: str) -> None:
        w.check_role_step(number, stack_values)

    w.role = "DeployRole"
    w.run("aws configure set profile.fruits-deploy.role_arn $DEPLOY_ROLE", lambda: None)  # the CLI's local profile
    w.run("aws configure set profile.fruits-deploy.source_profile default", lambda: None)
    for service in SERVICE_LINKED:
        w.run(
            f"aws iam create-service-linked-role --aws-service-name {service}",
            lambda s=service: w.client("iam").create_service_linked_role(AWSServiceName=s),
        )
    step("5")
    # moto names service-linked roles its own way (AWS's names are SERVICE_LINKED, in the IAM check): the paths.
    with w.looking():
        paths = {r["Path"] for r in w.client("iam").list_roles(PathPrefix="/aws-service-role/")["Roles"]}
    assert paths == {f"/aws-service-role/{service}/" for service in SERVICE_LINKED}

    w.run(
        f"aws s3 cp ~/.keras/models/{WEIGHTS} s3://$BUCKET/models/keras/",
        lambda: s3.upload_file(
            str(data_dir.parents[1] / "models" / "keras" / WEIGHTS), w.vars["BUCKET"], f"models/keras/{WEIGHTS}"
        ),
    )
    step("6")

    wheelhouse = project_dir / "build" / "wheelhouse"
    project_wheel, _lock = small_wheelhouse(wheelhouse, project_dir / "dist")  # stand-ins: see the module docstring
    archive = project_dir / "build" / "fruits-venv.tar.gz"
    archive.write_bytes(b"a packed venv stand-in")
    uploads = {
        "aws s3 cp dist/fruits-0.1.0-py3-none-any.whl s3://$BUCKET/bootstrap/": (
            project_wheel,
            f"bootstrap/{project_wheel.name}",
        ),
        "aws s3 cp infra/bootstrap.sh s3://$BUCKET/bootstrap/bootstrap.sh": (
            ROOT / "infra" / "bootstrap.sh",
            "bootstrap/bootstrap.sh",
        ),
        "aws s3 cp cli/spark_entry.py s3://$BUCKET/bootstrap/spark_entry.py": (
            ROOT / "cli" / "spark_entry.py",
            "bootstrap/spark_entry.py",
        ),
    }
    for command, (path, key) in uploads.items():
        w.run(command, lambda p=path, k=key: s3.upload_file(str(p), w.vars["BUCKET"], k))

    def sync() -> None:
        prefix = "bootstrap/wheelhouse/"
        there = {o["Key"] for o in s3.list_objects_v2(Bucket=w.vars["BUCKET"], Prefix=prefix).get("Contents", [])}
        for path in sorted(wheelhouse.iterdir()):
            s3.upload_file(str(path), w.vars["BUCKET"], prefix + path.name)
        for stale in there - {prefix + p.name for p in wheelhouse.iterdir()}:
            s3.delete_object(Bucket=w.vars["BUCKET"], Key=stale)

    w.run("aws s3 sync --delete build/wheelhouse s3://$BUCKET/bootstrap/wheelhouse/", sync)
    w.run(
        "aws s3 cp build/fruits-venv.tar.gz s3://$BUCKET/bootstrap/venv/fruits-venv.tar.gz",
        lambda: s3.upload_file(str(archive), w.vars["BUCKET"], "bootstrap/venv/fruits-venv.tar.gz"),
    )
    step("7")

    labelled = str(data_dir / "subset")  # 32 classes x 10 real images: more than the fit's 300
    w.fruits("fruits upload path/to/labelled-photos s3://$BUCKET/images/", {"path/to/labelled-photos": labelled})
    step("9")
    with w.looking():
        listed = s3.get_paginator("list_objects_v2").paginate(Bucket=w.vars["BUCKET"], Prefix="images/")
        assert sum(len(page.get("Contents", [])) for page in listed) == 320

    network = (
        "--bucket $BUCKET --subnet-id $SUBNET --primary-security-group $PRIMARY_SG --core-security-group $CORE_SG "
        "--service-access-security-group $SERVICE_SG"
    )
    w.vars["MLFLOW_HOST"] = "mlflow.fruits.internal"
    w.fruits(f"fruits emr plan {network}")
    w.fruits(f"fruits emr up {network} --mlflow-secret $MLFLOW_SECRET --idle-timeout 3600")
    w.fruits(
        "fruits emr submit --bucket $BUCKET --job both --tracking-uri https://$MLFLOW_HOST --notifications "
        "$(output NotificationsQueueUrl) --answers $(output AnswersUri)"
    )
    w.fruits("fruits emr status")
    new_photos = tmp_path / "new-photos" / "Limes"
    new_photos.mkdir(parents=True)
    for image in sorted((data_dir / "stream" / "Limes").glob("*.jpg"))[:3]:
        shutil.copy(image, new_photos)
    w.fruits("fruits upload path/to/new-photos s3://$BUCKET/images/", {"path/to/new-photos": str(new_photos.parent)})
    step("10")
    with w.looking():
        (cluster,) = w.client("emr").list_clusters()["Clusters"]
        steps = w.client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]
        assert [s["Name"] for s in steps] == ["fruits-stream", "fruits-fit"]
        stream_args = steps[0]["Config"]["Args"]
        assert stream_args[stream_args.index("--answers") + 1] == "dynamodb://fruits-answers"

    # ------------------------------------------------------------ a person uses the app: one photo, end to end
    answer = a_photo_through_the_deployed_app(
        w, stack_values, stream_args, tmp_path, data_dir, settings, fitted, monkeypatch
    )
    assert answer["status"] == "answered" and answer["prediction"] in {p.name for p in (data_dir / "subset").iterdir()}
    assert answer["model"] == f"fruits-pca v{fitted['model_version']}" and answer["neighbours"]  # its known map
    w.role = "DeployRole"

    w.fruits("fruits emr stop --bucket $BUCKET")
    w.fruits("fruits emr status")
    w.fruits("fruits emr down --yes")
    step("11")
    w.role = None
    assert w.client("emr").describe_cluster(ClusterId=cluster["Id"])["Cluster"]["Status"]["State"] in {
        "TERMINATING",
        "TERMINATED",
    }

    # The page and this test ran the same commands, in the same order.
    assert w.executed == documented_commands()
    # Every request of steps 5-11 was authorized by the deploy role's policy; the check saw the kinds it exists for.
    assert w.denied == []
    assert {
        "s3:PutObject",
        "s3:ListBucket",
        "s3:GetObject",
        "elasticmapreduce:RunJobFlow",
        "iam:PassRole",
        "elasticmapreduce:AddJobFlowSteps",
        "elasticmapreduce:TerminateJobFlows",
        "iam:CreateServiceLinkedRole",
        "cloudformation:DescribeStacks",
        "dynamodb:GetItem",
        "sns:Publish",
        "secretsmanager:GetSecretValue",
    } <= w.checked


def test_the_page_lists_the_walkthrough_commands_it_is_tested_with() -> None:
    """The extraction the walk-through test compares against finds every step's commands (fast, no moto)."""
    commands = documented_commands()
    assert commands[0] == "ACCOUNT=$(aws sts get-caller-identity --query Account --output text)"
    assert commands[-1] == "fruits emr down --yes"
    assert (
        sum("create-vpc-endpoint" in c for c in commands) == 6
    )  # s3, dynamodb, the EMR cell, sqs, kms, secretsmanager
    assert sum(c.startswith("aws iam create-service-linked-role") for c in commands) == 2


def test_the_template_goes_to_cloudformation_through_s3_when_it_is_too_big_to_go_inline() -> None:
    """CloudFormation takes at most 51,200 bytes inline; `deploy` then needs --s3-bucket (moto takes anything)."""
    (deploy,) = [c for c in documented_commands() if c.startswith("aws cloudformation deploy")]
    assert len(TEMPLATE.read_bytes()) <= 51_200 or "--s3-bucket $ARTIFACTS" in deploy
    assert len(TEMPLATE.read_bytes()) <= 1_000_000  # the limit through S3
