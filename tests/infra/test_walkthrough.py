"""docs/aws.md's walk-through, run in order against an empty moto account (issue 24, item 4).

Every `aws ...` and `fruits ...` command of the section, in the order the page gives them, is run
here: the `fruits` commands through the command line itself, the `aws` ones as the same API call
with boto3 (the AWS CLI is not installed here). The test fails if the page and this list differ,
so neither can change without the other.

From step 5 on, the person is the stack's deploy role: every AWS request of those steps (the
`aws` commands', and those `fruits` makes itself, recorded at botocore's API-call boundary) is
turned into the IAM request(s) AWS authorizes it with and evaluated against the deploy role's
policy and the bucket policy, as tests/cfn_support.py evaluates IAM. moto itself enforces no IAM.

Stand-ins, where the real thing cannot run here: the wheelhouse and the venv archive are small
ones (tests/aws_support.small_wheelhouse: the real pip wheel plus minimal wheels; building the
real one needs the package index), and the MLflow server is not reached (`submit --job both`
asks it nothing). What moto cannot check is docs/aws.md's checklist.
"""

from __future__ import annotations

import contextlib
import json
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
from cfn_support import ROOT, TEMPLATE, allows, bucket_policy_statements, load_template, role_statements
from cli.main import main
from support import wait_until

DOC = ROOT / "docs" / "aws.md"
SECTION = "## From an empty account to a running stream, step by step"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
OPERATOR = "fruits-operator"
SERVICE_LINKED = {"elasticmapreduce.amazonaws.com": "AWSServiceRoleForEMRCleanup",
                  "ops.emr-serverless.amazonaws.com": "AWSServiceRoleForAmazonEMRServerless"}


def documented_commands() -> list[str]:
    """The `aws` and `fruits` command lines of the walk-through's bash blocks, in order, one line each."""
    text = DOC.read_text()
    start = text.index(SECTION)
    section = text[start:text.index("\n## ", start + 1)]
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
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)

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

    def __init__(self, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.template = template
        self.vars: dict[str, str] = {"AWS_REGION": REGION, "PROJECT": "fruits", "OPERATOR": OPERATOR}
        self.executed: list[str] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.as_deploy_role = False
        self.denied: list[str] = []
        self.checked: set[str] = set()
        original = botocore.client.BaseClient._make_api_call
        walkthrough = self

        def recorded(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if walkthrough.as_deploy_role:
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
        if "$(output NotificationsQueueUrl)" in line:  # the page's function, run as whoever runs the command
            line = line.replace("$(output NotificationsQueueUrl)", self.output("NotificationsQueueUrl"))
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
    def check_deploy_role_step(self, step: str, parameters: dict[str, str]) -> None:
        statements = role_statements(self.template, "DeployRole", **parameters)
        statements += [s for s in bucket_policy_statements(self.template) if s["Effect"] == "Deny"]
        principal = f"arn:aws:iam::{ACCOUNT}:role/fruits-deploy"
        for service, operation, params in self.calls:
            for action, resource, context in self.iam_requests(service, operation, params):
                self.checked.add(action)
                context = {"aws:PrincipalArn": principal, "aws:SecureTransport": "true", "s3:TlsVersion": "1.3", **context}
                if not allows(statements, action, resource, **context):
                    self.denied.append(f"step {step}: {service} {operation} needs {action} on {resource} {context}")
        self.calls = []

    @contextlib.contextmanager
    def looking(self) -> Iterator[None]:
        """The test's own look at the account: not a request of the walk-through."""
        self.as_deploy_role, previous = False, self.as_deploy_role
        try:
            yield
        finally:
            self.as_deploy_role = previous

    def cluster_tags(self, cluster_id: str) -> dict[str, str]:
        with self.looking():
            tags = self.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Tags"]
        return {t["Key"]: t["Value"] for t in tags}

    def iam_requests(self, service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
        """What IAM authorizes for one API call (the Service Authorization Reference's mapping, for the calls made here)."""
        if service == "s3":
            bucket = f"arn:aws:s3:::{params['Bucket']}"
            if operation in ("ListObjectsV2", "ListObjects"):
                return [("s3:ListBucket", bucket, {"s3:prefix": params["Prefix"]} if "Prefix" in params else {})]
            if operation == "DeleteObjects":
                return [("s3:DeleteObject", f"{bucket}/{o['Key']}", {}) for o in params["Delete"]["Objects"]]
            writes = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
            action = {"HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "DeleteObject": "s3:DeleteObject",
                      "AbortMultipartUpload": "s3:AbortMultipartUpload",
                      **dict.fromkeys(writes, "s3:PutObject")}.get(operation)
            if action:
                return [(action, f"{bucket}/{params['Key']}", {})]
        if service == "emr":
            if operation == "RunJobFlow":
                tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
                role = f"arn:aws:iam::{ACCOUNT}:role/"
                return [("elasticmapreduce:RunJobFlow", "*", {"elasticmapreduce:RequestTag/project": tags.get("project", "")}),
                        ("iam:PassRole", role + params["ServiceRole"], {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}),
                        # The instance profile has its role's name (the stack makes it so).
                        ("iam:PassRole", role + params["JobFlowRole"], {"iam:PassedToService": "ec2.amazonaws.com"})]
            if operation == "ListClusters":
                return [("elasticmapreduce:ListClusters", "*", {})]
            ids = params.get("JobFlowIds") or [params.get("ClusterId") or params.get("JobFlowId")]
            return [(f"elasticmapreduce:{operation}", f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/{i}",
                     {"elasticmapreduce:ResourceTag/project": self.cluster_tags(i).get("project", "")}) for i in ids]
        if service == "sts" and operation == "GetCallerIdentity":
            return []  # needs no permission
        if service == "iam" and operation == "CreateServiceLinkedRole":
            name = params["AWSServiceName"]
            arn = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{name}/{SERVICE_LINKED.get(name, 'Unknown')}"
            return [("iam:CreateServiceLinkedRole", arn, {"iam:AWSServiceName": name})]
        if service == "secretsmanager" and operation == "GetSecretValue":
            return [("secretsmanager:GetSecretValue", params["SecretId"], {})]
        if service == "cloudformation" and operation == "DescribeStacks":
            assert params["StackName"] == self.vars["PROJECT"]
            return [("cloudformation:DescribeStacks", self.vars["STACK_ID"], {})]
        raise AssertionError(f"the walk-through test does not know what IAM authorizes for {service} {operation}: extend it")


@pytest.mark.slow
def test_the_walkthrough_runs_in_order_from_an_empty_account(
    empty_account: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    w = Walkthrough(load_template(), monkeypatch)
    ec2, s3 = w.client("ec2"), w.client("s3")
    project_dir = tmp_path / "checkout"  # the walk-through runs from a checkout: build/, dist/ are relative
    project_dir.mkdir()
    monkeypatch.chdir(project_dir)

    # ------------------------------------------------------------ preamble (the administrator)
    w.run("ACCOUNT=$(aws sts get-caller-identity --query Account --output text)",
          lambda: w.client("sts").get_caller_identity()["Account"], into="ACCOUNT")
    assert w.vars["ACCOUNT"] == ACCOUNT
    w.vars["ARTIFACTS"] = w.sub("$PROJECT-artifacts-$ACCOUNT-$AWS_REGION")

    # ------------------------------------------------------------ 2. the network
    w.run("VPC=$(aws ec2 create-vpc --cidr-block 10.20.0.0/16 --query Vpc.VpcId --output text)",
          lambda: ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"], into="VPC")
    w.run("SUBNET=$(aws ec2 create-subnet --vpc-id $VPC --cidr-block 10.20.1.0/24 --availability-zone ${AWS_REGION}a "
          "--query Subnet.SubnetId --output text)",
          lambda: ec2.create_subnet(VpcId=w.vars["VPC"], CidrBlock="10.20.1.0/24",
                                    AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"], into="SUBNET")
    w.run("aws ec2 modify-vpc-attribute --vpc-id $VPC --enable-dns-hostnames",
          lambda: ec2.modify_vpc_attribute(VpcId=w.vars["VPC"], EnableDnsHostnames={"Value": True}))
    w.run("TABLE=$(aws ec2 describe-route-tables --filters Name=vpc-id,Values=$VPC --query 'RouteTables[0].RouteTableId' "
          "--output text)",
          lambda: ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [w.vars["VPC"]]}])["RouteTables"][0][
              "RouteTableId"], into="TABLE")
    w.run("aws ec2 create-vpc-endpoint --vpc-id $VPC --service-name com.amazonaws.$AWS_REGION.s3 --vpc-endpoint-type Gateway "
          "--route-table-ids $TABLE",
          lambda: ec2.create_vpc_endpoint(VpcId=w.vars["VPC"], ServiceName=f"com.amazonaws.{REGION}.s3",
                                          VpcEndpointType="Gateway", RouteTableIds=[w.vars["TABLE"]]))
    groups = {"PRIMARY_SG": ("emr-primary", "EMR primary"), "CORE_SG": ("emr-core", "EMR core and task"),
              "SERVICE_SG": ("emr-service-access", "EMR service access"),
              "ENDPOINT_SG": ("endpoints", "VPC interface endpoints")}
    for var, (name, description) in groups.items():
        w.run(f"{var}=$(aws ec2 create-security-group --vpc-id $VPC --group-name $PROJECT-{name} --description "
              f"\"{description}\" --query GroupId --output text)",
              lambda n=name, d=description: ec2.create_security_group(VpcId=w.vars["VPC"], GroupName=f"fruits-{n}",
                                                                      Description=d)["GroupId"], into=var)
    tagged = ["VPC", "SUBNET", "PRIMARY_SG", "CORE_SG", "SERVICE_SG"]
    w.run("aws ec2 create-tags --resources $VPC $SUBNET $PRIMARY_SG $CORE_SG $SERVICE_SG --tags "
          "Key=for-use-with-amazon-emr-managed-policies,Value=true Key=project,Value=$PROJECT",
          lambda: ec2.create_tags(Resources=[w.vars[v] for v in tagged],
                                  Tags=[{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
                                        {"Key": "project", "Value": "fruits"}]))

    def ingress(group: str) -> Callable[[], Any]:
        return lambda: ec2.authorize_security_group_ingress(GroupId=w.vars[group], IpProtocol="tcp", FromPort=443,
                                                            ToPort=443, CidrIp="10.20.0.0/16")

    def interface(service: str, group: str) -> Callable[[], Any]:
        return lambda: ec2.create_vpc_endpoint(VpcId=w.vars["VPC"], VpcEndpointType="Interface", SubnetIds=[w.vars["SUBNET"]],
                                               ServiceName=service.replace("$AWS_REGION", REGION),
                                               SecurityGroupIds=[w.vars[group]], PrivateDnsEnabled=True)

    w.run("aws ec2 authorize-security-group-ingress --group-id $SERVICE_SG --protocol tcp --port 443 --cidr 10.20.0.0/16",
          ingress("SERVICE_SG"))
    w.run("aws ec2 create-vpc-endpoint --vpc-id $VPC --vpc-endpoint-type Interface --subnet-ids $SUBNET --service-name "
          "aws.api.$AWS_REGION.emr-service-cell01 --security-group-ids $SERVICE_SG --private-dns-enabled",
          interface("aws.api.$AWS_REGION.emr-service-cell01", "SERVICE_SG"))
    w.run("aws ec2 authorize-security-group-ingress --group-id $ENDPOINT_SG --protocol tcp --port 443 --cidr 10.20.0.0/16",
          ingress("ENDPOINT_SG"))
    for service in ("sqs", "kms", "secretsmanager"):
        w.run(f"aws ec2 create-vpc-endpoint --vpc-id $VPC --vpc-endpoint-type Interface --subnet-ids $SUBNET --service-name "
              f"com.amazonaws.$AWS_REGION.{service} --security-group-ids $ENDPOINT_SG --private-dns-enabled",
              interface(f"com.amazonaws.$AWS_REGION.{service}", "ENDPOINT_SG"))
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [w.vars["VPC"]]}])["VpcEndpoints"]
    assert sorted(e["ServiceName"] for e in endpoints) == sorted(
        [f"aws.api.{REGION}.emr-service-cell01", *(f"com.amazonaws.{REGION}.{s}" for s in ("kms", "s3", "secretsmanager", "sqs"))])

    # ------------------------------------------------------------ 3. the Lambda's code, the MLflow secret
    w.run("aws s3 mb s3://$ARTIFACTS",
          lambda: s3.create_bucket(Bucket=w.vars["ARTIFACTS"], CreateBucketConfiguration={"LocationConstraint": REGION}))
    package = project_dir / "build" / "upload-notifier.zip"
    package.parent.mkdir()
    with zipfile.ZipFile(package, "w") as archive:  # python3 -m zipfile -c build/upload-notifier.zip lambda/*.py
        for source in sorted((ROOT / "lambda").glob("*.py")):
            archive.write(source, source.name)
    w.vars["CODE_KEY"] = "lambda/upload-notifier-walkthrough.zip"
    w.run("aws s3 cp build/upload-notifier.zip s3://$ARTIFACTS/$CODE_KEY",
          lambda: s3.upload_file(str(package), w.vars["ARTIFACTS"], w.vars["CODE_KEY"]))
    credentials = {"username": "fruits-jobs", "password": "correct horse battery staple"}
    w.run("MLFLOW_SECRET=$(aws secretsmanager create-secret --name $PROJECT/mlflow --secret-string "
          "file://mlflow-credentials.json --query ARN --output text)",
          lambda: w.client("secretsmanager").create_secret(Name="fruits/mlflow", SecretString=json.dumps(credentials))["ARN"],
          into="MLFLOW_SECRET")

    # ------------------------------------------------------------ 4. the stack
    parameters = {"ProjectName": "fruits", "LambdaCodeS3Bucket": w.vars["ARTIFACTS"], "LambdaCodeS3Key": w.vars["CODE_KEY"],
                  "DeployPrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/{OPERATOR}", "MlflowCredentialsSecretArn": w.vars["MLFLOW_SECRET"]}

    def deploy() -> None:
        cfn = w.client("cloudformation")
        cfn.create_stack(StackName="fruits", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
        cfn.get_waiter("stack_create_complete").wait(StackName="fruits", WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    w.run("aws cloudformation deploy --stack-name $PROJECT --template-file infra/template.yaml --capabilities "
          "CAPABILITY_NAMED_IAM --parameter-overrides ProjectName=$PROJECT LambdaCodeS3Bucket=$ARTIFACTS "
          "LambdaCodeS3Key=$CODE_KEY DeployPrincipalArn=arn:aws:iam::$ACCOUNT:role/$OPERATOR "
          "MlflowCredentialsSecretArn=$MLFLOW_SECRET", deploy)
    w.vars["BUCKET"], w.vars["DEPLOY_ROLE"] = w.output("BucketName"), w.output("DeployRoleArn")
    assert w.vars["DEPLOY_ROLE"] == f"arn:aws:iam::{ACCOUNT}:role/fruits-deploy"
    trust = w.client("iam").get_role(RoleName="fruits-deploy")["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:role/{OPERATOR}"}]

    # ------------------------------------------------------------ 5.-11. as the deploy role
    w.vars["STACK_ID"] = w.client("cloudformation").describe_stacks(StackName="fruits")["Stacks"][0]["StackId"]

    def step(number: str) -> None:
        w.check_deploy_role_step(number, {"MlflowCredentialsSecretArn": w.vars["MLFLOW_SECRET"],
                                          "DeployPrincipalArn": parameters["DeployPrincipalArn"],
                                          "AWS::StackId": w.vars["STACK_ID"]})

    w.as_deploy_role = True
    w.run("aws configure set profile.fruits-deploy.role_arn $DEPLOY_ROLE", lambda: None)  # the CLI's local profile
    w.run("aws configure set profile.fruits-deploy.source_profile default", lambda: None)
    for service in SERVICE_LINKED:
        w.run(f"aws iam create-service-linked-role --aws-service-name {service}",
              lambda s=service: w.client("iam").create_service_linked_role(AWSServiceName=s))
    step("5")
    # moto names service-linked roles its own way (AWS's names are SERVICE_LINKED, in the IAM check): the paths.
    with w.looking():
        paths = {r["Path"] for r in w.client("iam").list_roles(PathPrefix="/aws-service-role/")["Roles"]}
    assert paths == {f"/aws-service-role/{service}/" for service in SERVICE_LINKED}

    w.run(f"aws s3 cp ~/.keras/models/{WEIGHTS} s3://$BUCKET/models/keras/",
          lambda: s3.upload_file(str(data_dir.parents[1] / "models" / "keras" / WEIGHTS), w.vars["BUCKET"], f"models/keras/{WEIGHTS}"))
    step("6")

    wheelhouse = project_dir / "build" / "wheelhouse"
    project_wheel, _lock = small_wheelhouse(wheelhouse, project_dir / "dist")  # stand-ins: see the module docstring
    archive = project_dir / "build" / "fruits-venv.tar.gz"
    archive.write_bytes(b"a packed venv stand-in")
    uploads = {
        "aws s3 cp dist/fruits-0.1.0-py3-none-any.whl s3://$BUCKET/bootstrap/": (project_wheel, f"bootstrap/{project_wheel.name}"),
        "aws s3 cp infra/bootstrap.sh s3://$BUCKET/bootstrap/bootstrap.sh": (ROOT / "infra" / "bootstrap.sh", "bootstrap/bootstrap.sh"),
        "aws s3 cp cli/spark_entry.py s3://$BUCKET/bootstrap/spark_entry.py": (ROOT / "cli" / "spark_entry.py", "bootstrap/spark_entry.py"),
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
    w.run("aws s3 cp build/fruits-venv.tar.gz s3://$BUCKET/bootstrap/venv/fruits-venv.tar.gz",
          lambda: s3.upload_file(str(archive), w.vars["BUCKET"], "bootstrap/venv/fruits-venv.tar.gz"))
    step("7")

    labelled = str(data_dir / "subset")  # 32 classes x 10 real images: more than the fit's 300
    w.fruits("fruits upload path/to/labelled-photos s3://$BUCKET/images/", {"path/to/labelled-photos": labelled})
    step("9")
    with w.looking():
        listed = s3.get_paginator("list_objects_v2").paginate(Bucket=w.vars["BUCKET"], Prefix="images/")
        assert sum(len(page.get("Contents", [])) for page in listed) == 320

    network = ("--bucket $BUCKET --subnet-id $SUBNET --primary-security-group $PRIMARY_SG --core-security-group $CORE_SG "
               "--service-access-security-group $SERVICE_SG")
    w.vars["MLFLOW_HOST"] = "mlflow.fruits.internal"
    w.fruits(f"fruits emr plan {network}")
    w.fruits(f"fruits emr up {network} --mlflow-secret $MLFLOW_SECRET --idle-timeout 3600")
    w.fruits("fruits emr submit --bucket $BUCKET --job both --tracking-uri https://$MLFLOW_HOST --notifications "
             "$(output NotificationsQueueUrl)")
    w.fruits("fruits emr status")
    new_photos = tmp_path / "new-photos" / "Limes"
    new_photos.mkdir(parents=True)
    for image in sorted((data_dir / "stream" / "Limes").glob("*.jpg"))[:3]:
        shutil.copy(image, new_photos)
    w.fruits("fruits upload path/to/new-photos s3://$BUCKET/images/", {"path/to/new-photos": str(new_photos.parent)})
    step("10")
    with w.looking():
        (cluster,) = w.client("emr").list_clusters()["Clusters"]
        assert [s["Name"] for s in w.client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]] == ["fruits-stream", "fruits-fit"]

    w.fruits("fruits emr stop --bucket $BUCKET")
    w.fruits("fruits emr status")
    w.fruits("fruits emr down --yes")
    step("11")
    w.as_deploy_role = False
    assert w.client("emr").describe_cluster(ClusterId=cluster["Id"])["Cluster"]["Status"]["State"] in {"TERMINATING", "TERMINATED"}

    # The page and this test ran the same commands, in the same order.
    assert w.executed == documented_commands()
    # Every request of steps 5-11 was authorized by the deploy role's policy; the check saw the kinds it exists for.
    assert w.denied == []
    assert {"s3:PutObject", "s3:ListBucket", "s3:GetObject", "elasticmapreduce:RunJobFlow", "iam:PassRole",
            "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:TerminateJobFlows", "iam:CreateServiceLinkedRole",
            "cloudformation:DescribeStacks"} <= w.checked


def test_the_page_lists_the_walkthrough_commands_it_is_tested_with() -> None:
    """The extraction the walk-through test compares against finds every step's commands (fast, no moto)."""
    commands = documented_commands()
    assert commands[0] == "ACCOUNT=$(aws sts get-caller-identity --query Account --output text)"
    assert commands[-1] == "fruits emr down --yes"
    assert sum("create-vpc-endpoint" in c for c in commands) == 5  # s3, the EMR cell, sqs, kms, secretsmanager
    assert sum(c.startswith("aws iam create-service-linked-role") for c in commands) == 2
