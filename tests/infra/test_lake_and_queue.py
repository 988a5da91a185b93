"""The stream's queue and the lake's catalog in infra/template.yaml (the infra parts of issues 11 and 12).

On the parsed template: the queue, its dead letters, who may send and who may consume; the Glue
tables Athena reads with no crawler. On a moto server: the stack creates the topic and the queue;
moto's CloudFormation creates neither SNS subscriptions nor bucket notifications, so the test
applies the template's own subscription and S3 -> SQS rules through the API, then checks that a
message published to the stack's topic arrives as the SNS envelope the stream parses, and that
the direct rules deliver images and nothing else.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest

from cfn_support import (
    ACCOUNT,
    BUCKET,
    BUCKET_ARN,
    REGION,
    Resolver,
    allows,
    create_stack_secrets,
    effective,
    load_template,
    moto_template_body,
    role_statements,
)
from support import wait_until

QUEUE_ARN = "<NotificationsQueue.Arn>"
CONSUMER_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def queue_policy(template: dict[str, Any], **parameters: str) -> list[dict[str, Any]]:
    statements = Resolver(template, **parameters)(template["Resources"]["NotificationsQueuePolicy"]["Properties"])
    return [s for s in statements["PolicyDocument"]["Statement"] if s != "<AWS::NoValue>"]


# ---------------------------------------------------------------------------- the queue
def test_the_queue_is_encrypted_long_polled_and_sets_failures_aside(template: dict[str, Any]) -> None:
    queue = template["Resources"]["NotificationsQueue"]["Properties"]
    assert queue["KmsMasterKeyId"] == {"Ref": "MessagesKey"}
    assert queue["ReceiveMessageWaitTimeSeconds"] == 20  # an idle stream pays a receive per 20 s, not per trigger
    assert queue["VisibilityTimeout"] == {"Ref": "QueueVisibilitySeconds"}
    assert template["Parameters"]["QueueVisibilitySeconds"]["Default"] == 300
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["NotificationsDeadLetters", "Arn"]},
        "maxReceiveCount": 5,
    }
    dead = template["Resources"]["NotificationsDeadLetters"]["Properties"]
    assert dead["KmsMasterKeyId"] == {"Ref": "MessagesKey"} and dead["MessageRetentionPeriod"] == 1209600
    subscription = template["Resources"]["NotificationsSubscription"]["Properties"]
    assert subscription == {
        "TopicArn": {"Ref": "UploadsTopic"},
        "Protocol": "sqs",
        "Endpoint": {"Fn::GetAtt": ["NotificationsQueue", "Arn"]},
        "RawMessageDelivery": False,
    }


def test_only_the_topic_sends_unless_the_bucket_is_wired_directly(template: dict[str, Any]) -> None:
    topic = "<UploadsTopic>"
    default = queue_policy(template)
    assert allows(default, "sqs:SendMessage", QUEUE_ARN, **{"aws:SourceArn": topic})
    sources = {s["Principal"]["Service"] for s in default if s["Effect"] == "Allow"}
    assert sources == {"sns.amazonaws.com"}
    assert not allows(
        default, "sqs:SendMessage", QUEUE_ARN, **{"aws:SourceArn": "arn:aws:sns:eu-west-3:999999999999:other"}
    )

    direct = queue_policy(template, NotificationWiring="s3-sqs")
    assert {s["Principal"]["Service"] for s in direct if s["Effect"] == "Allow"} == {
        "sns.amazonaws.com",
        "s3.amazonaws.com",
    }
    assert allows(direct, "sqs:SendMessage", QUEUE_ARN, **{"aws:SourceArn": BUCKET_ARN, "aws:SourceAccount": ACCOUNT})
    assert not allows(
        direct, "sqs:SendMessage", QUEUE_ARN, **{"aws:SourceArn": BUCKET_ARN, "aws:SourceAccount": "999999999999"}
    )
    (deny,) = [s for s in default if s.get("Sid") == "DenyInsecureTransport"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize("role", ["EmrInstanceRole", "ServerlessJobRole"])
def test_the_job_roles_consume_this_queue_only(template: dict[str, Any], role: str) -> None:
    statements = role_statements(template, role)
    for action in CONSUMER_ACTIONS:
        assert allows(statements, action, QUEUE_ARN), action
        assert not allows(statements, action, "<NotificationsDeadLetters.Arn>"), action
        assert not allows(statements, action, "<UploadNotifierDeadLetters.Arn>"), action
    assert not allows(statements, "sqs:SendMessage", QUEUE_ARN)
    assert not allows(statements, "sqs:PurgeQueue", QUEUE_ARN)
    assert allows(statements, "kms:Decrypt", "<MessagesKey.Arn>")  # the messages are SSE-KMS


@pytest.mark.parametrize("role", ["UploadNotifierRole", "DeployRole"])
def test_nobody_else_reads_the_queue(template: dict[str, Any], role: str) -> None:
    statements = role_statements(template, role)
    assert not any(allows(statements, action, QUEUE_ARN) for action in CONSUMER_ACTIONS)


# ---------------------------------------------------------------------------- the lake's catalog
RESULTS = [
    "path:string",
    "label:string",
    "size:bigint",
    "modification_time:timestamp",
    "ingest_time:timestamp",
    "features:array<float>",
    "pca:array<float>",
    "model_name:string",
    "model_version:string",
    "featurizer_sha256:string",
    "ingest_date:date",
]
ERRORS = [
    "path:string",
    "label:string",
    "size:bigint",
    "modification_time:timestamp",
    "ingest_time:timestamp",
    "reason:string",
    "detail:string",
    "batch_id:bigint",
]


@pytest.mark.parametrize(
    ("logical", "name", "columns"), [("ResultsTable", "results", RESULTS), ("ErrorsTable", "errors", ERRORS)]
)
def test_the_delta_tables_are_in_the_catalog_for_athena(
    template: dict[str, Any], logical: str, name: str, columns: list[str]
) -> None:
    resolve = Resolver(template)
    table = resolve(template["Resources"][logical]["Properties"])
    assert table["DatabaseName"] == "<LakeDatabase>"
    entry = table["TableInput"]
    assert entry["Name"] == name and entry["TableType"] == "EXTERNAL_TABLE"
    # Athena's native Delta reader: table_type DELTA and a location; the schema and partitioning
    # (ingest_date for results) come from the table's own log, so no crawler and no partitions.
    assert entry["Parameters"]["table_type"] == "DELTA"
    assert entry["PartitionKeys"] == []
    location = f"s3://{BUCKET}/{name}/"  # where the stream writes s3a://<bucket>/<name>
    assert entry["StorageDescriptor"]["Location"] == location
    assert entry["StorageDescriptor"]["SerdeInfo"]["Parameters"]["path"] == location
    assert [f"{c['Name']}:{c['Type']}" for c in entry["StorageDescriptor"]["Columns"]] == columns


def test_the_database_and_workgroup(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    assert resolve(template["Resources"]["LakeDatabase"]["Properties"])["DatabaseInput"]["Name"] == "fruits"
    hyphenated = Resolver(template, ProjectName="fruits-eu")(template["Resources"]["LakeDatabase"]["Properties"])
    assert hyphenated["DatabaseInput"]["Name"] == "fruits_eu"  # Athena names: no hyphen
    workgroup = resolve(template["Resources"]["AthenaWorkGroup"]["Properties"])["WorkGroupConfiguration"]
    assert workgroup["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}  # reads Delta natively
    assert workgroup["EnforceWorkGroupConfiguration"] is True
    assert workgroup["ResultConfiguration"] == {
        "OutputLocation": f"s3://{BUCKET}/athena/",
        "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
    }


def test_the_lake_readers_read_the_tables_and_nothing_else(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    statements = [
        resolve(s) for s in template["Resources"]["LakeReaderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert allows(statements, "s3:GetObject", f"{BUCKET_ARN}/results/ingest_date=2026-12-01/part-0.parquet")
    assert allows(statements, "s3:GetObject", f"{BUCKET_ARN}/errors/_delta_log/00000000000000000000.json")
    assert allows(statements, "s3:PutObject", f"{BUCKET_ARN}/athena/query-1.csv")
    for key in ("images/Kiwi/1.jpg", "models/keras/w.h5", "checkpoints/stream/offsets/1"):
        assert not allows(statements, "s3:GetObject", f"{BUCKET_ARN}/{key}"), key
    assert not allows(statements, "s3:PutObject", f"{BUCKET_ARN}/results/x.parquet")
    assert allows(statements, "glue:GetTable", f"arn:aws:glue:{REGION}:{ACCOUNT}:table/<LakeDatabase>/results")
    assert not allows(statements, "glue:UpdateTable", f"arn:aws:glue:{REGION}:{ACCOUNT}:table/<LakeDatabase>/results")


def test_the_job_roles_need_no_catalog(template: dict[str, Any]) -> None:
    """delta-rs writes the tables' log itself: the jobs never touch Glue."""
    for role in ("EmrInstanceRole", "ServerlessJobRole"):
        assert not allows(role_statements(template, role), "glue:UpdateTable", "*")
    assert effective(
        template, "EmrInstanceRole", "s3:PutObject", f"{BUCKET_ARN}/results/_delta_log/00000000000000000001.json"
    )


# ---------------------------------------------------------------------------- deliveries on moto
def _receive(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    def enough() -> bool:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
            messages.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages) >= expected

    wait_until(enough, timeout=30, what=f"{expected} messages in {url}")
    return messages


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Tried to parse")
def test_the_stacks_topic_delivers_into_the_stacks_queue_on_moto(moto_server: str, template: dict[str, Any]) -> None:
    project = f"fruits-q{uuid.uuid4().hex[:6]}"
    clients = {
        n: boto3.client(n, endpoint_url=moto_server, region_name=REGION)
        for n in ("s3", "cloudformation", "sns", "sqs", "secretsmanager")
    }
    artifacts = f"{project}-artifacts"
    clients["s3"].create_bucket(Bucket=artifacts, CreateBucketConfiguration={"LocationConstraint": REGION})
    clients["s3"].put_object(Bucket=artifacts, Key="lambda/code.zip", Body=b"PK")
    cfn = clients["cloudformation"]
    body = moto_template_body(secrets=create_stack_secrets(clients["secretsmanager"], project))  # what moto can create
    cfn.create_stack(
        StackName=project,
        TemplateBody=body,
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v}
            for k, v in {
                "ProjectName": project,
                "LambdaCodeS3Bucket": artifacts,
                "LambdaCodeS3Key": "lambda/code.zip",
                "AppCodeS3Key": "lambda/code.zip",
                "DeployPrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/ci-deployer",
            }.items()
        ],
    )

    def created() -> bool:
        return cfn.describe_stacks(StackName=project)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    wait_until(created, timeout=60, what="the stack")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=project)["Stacks"][0]["Outputs"]}
    assert outputs["NotificationsQueueUrl"].endswith(f"/{project}-uploads")

    subscription = Resolver(template)(template["Resources"]["NotificationsSubscription"]["Properties"])
    clients["sns"].subscribe(
        TopicArn=outputs["TopicArn"],
        Protocol=subscription["Protocol"],
        Endpoint=outputs["NotificationsQueueArn"],
        Attributes={"RawMessageDelivery": str(subscription["RawMessageDelivery"]).lower()},
    )
    message = {"dedup_key": f"{project}-b/images/Kiwi/1.jpg/00A1", "bucket": "b", "key": "images/Kiwi/1.jpg"}
    clients["sns"].publish(TopicArn=outputs["TopicArn"], Message=json.dumps(message))
    (received,) = _receive(clients["sqs"], outputs["NotificationsQueueUrl"], 1)
    envelope = json.loads(received["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == outputs["TopicArn"]
    assert json.loads(envelope["Message"]) == message  # the envelope the stream's contract names


@pytest.mark.slow
def test_the_direct_wiring_rules_deliver_images_only_on_moto(moto_server: str, template: dict[str, Any]) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    bucket = f"fruits-direct-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    url = sqs.create_queue(QueueName=f"direct-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # The template's own rules for NotificationWiring=s3-sqs, pointed at this queue.
    resolve = Resolver(template, NotificationWiring="s3-sqs")
    rules = resolve(template["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"])[
        "QueueConfigurations"
    ]
    configuration = [
        {"QueueArn": arn, "Events": [r["Event"]], "Filter": {"Key": {"FilterRules": r["Filter"]["S3Key"]["Rules"]}}}
        for r in rules
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configuration}
    )
    # moto (like S3) sends an s3:TestEvent when the configuration is saved: it is drained below.

    for key in (
        "images/Kiwi/1.jpg",
        "images/Kiwi/2.png",
        "images/Kiwi/3.JPG",
        "images-old/Kiwi/4.jpg",
        "images/Kiwi/notes.txt",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    events = [json.loads(m["Body"]) for m in _receive(sqs, url, 3)]
    keys = sorted(unquote_plus(r["s3"]["object"]["key"]) for e in events if "Records" in e for r in e["Records"])
    # Raw S3 events; the upper-case suffix, the sibling prefix and the text file are not delivered.
    assert keys == ["images/Kiwi/1.jpg", "images/Kiwi/2.png"]
    assert [e["Event"] for e in events if "Records" not in e] == ["s3:TestEvent"]
