"""The app as the stack deploys it (issue 24): the Lambda entry point app.aws.handler called with API Gateway
HTTP API events (payload 2.0) against moto, in a process of its own with the function's environment from the
template; what it imports there is what infra/build_app_lambda.sh packs; its role, table, secrets, lifecycle
rule and edge throttling on the parsed template, evaluated like IAM (tests/cfn_support.py).

moto cannot run a Lambda (no Docker): the handler is called as the runtime would, with the event.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from packaging.requirements import Requirement

from aws_support import ACCOUNT, REGION
from cfn_support import ROOT, Resolver, allows, bucket_policy_statements, effective, load_template, role_statements
from fruits.answers import ANSWERED, Answer, DynamoAnswers
from fruits.settings import Settings, fields_of

BUCKET_ARN = f"arn:aws:s3:::fruits-{ACCOUNT}-{REGION}"
TABLE_ARN = "<AnswersTable.Arn>"  # tests/cfn_support.Resolver: a resource ARN of this stack
# What the Lambda runtime brings (python3.13): not packed, allowed to be imported.
RUNTIME_DISTRIBUTIONS = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six"}
OUR_PACKAGES = {"app", "fruits", "streaming"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# ---------------------------------------------------------------------------- the template
def app_may(template: dict[str, Any], action: str, resource: str, **context: str) -> bool:
    return effective(template, "AppFunctionRole", action, resource, **context)


def test_the_app_role_presigns_under_its_own_prefix_only(template: dict[str, Any]) -> None:
    for key in ("images/app/private/0123abcd.jpg", "images/app/consented/0123abcd.png"):
        assert app_may(template, "s3:PutObject", f"{BUCKET_ARN}/{key}")
    for key in (
        "images/Limes/1.jpg",
        "images/app-old/x.jpg",
        "bootstrap/bootstrap.sh",
        "models/keras/w.h5",
        "results/part-0.parquet",
        "checkpoints/stream/offsets/0",
    ):
        assert not app_may(template, "s3:PutObject", f"{BUCKET_ARN}/{key}"), key
    for action in ("s3:DeleteObject", "s3:PutObjectAcl"):
        assert not app_may(template, action, f"{BUCKET_ARN}/images/app/private/0123abcd.jpg")


def test_the_app_role_reads_what_its_pages_show_and_nothing_else(template: dict[str, Any]) -> None:
    assert app_may(template, "s3:GetObject", f"{BUCKET_ARN}/images/app/private/0123abcd.jpg")
    assert app_may(template, "s3:GetObject", f"{BUCKET_ARN}/images/Limes/1.jpg")  # a known map's training image
    assert app_may(template, "s3:GetObject", f"{BUCKET_ARN}/checkpoints/stream/progress/1796468400.json")
    for key in (
        "results/part-0.parquet",
        "errors/x",
        "checkpoints/stream/offsets/0",
        "checkpoints/stream/notifications/batches/1.json",
        "features/run/part-0.parquet",
        "mlflow/1/model.pkl",
        "holdout/Limes/1.jpg",
    ):
        assert not app_may(template, "s3:GetObject", f"{BUCKET_ARN}/{key}"), key
    # Listing (a missing key answers 404, not 403) only where it looks up keys.
    assert app_may(template, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "images/app/private/0123abcd.jpg"})
    assert app_may(
        template, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "checkpoints/stream/progress/1796468400.json"}
    )
    assert not app_may(template, "s3:ListBucket", BUCKET_ARN, **{"s3:prefix": "images/"})
    assert not app_may(template, "s3:ListBucket", BUCKET_ARN)
    # The answers: read one by id; never write, scan or delete them (the stream writes them).
    assert app_may(template, "dynamodb:GetItem", TABLE_ARN)
    for action in (
        "dynamodb:PutItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:Scan",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    ):
        assert not app_may(template, action, TABLE_ARN), action
    # Votes (issue 23): under labels/ only.
    assert app_may(template, "s3:PutObject", f"{BUCKET_ARN}/labels/part-0.parquet")
    assert app_may(template, "s3:PutObject", f"{BUCKET_ARN}/curation/_delta_log/00000000000000000001.json")


def test_the_app_reads_its_secrets_and_the_secrets_are_generated_by_the_stack(template: dict[str, Any]) -> None:
    statements = role_statements(template, "AppFunctionRole")
    assert allows(statements, "secretsmanager:GetSecretValue", "<AppSecret>")
    assert allows(statements, "secretsmanager:GetSecretValue", "<CuratorSecret>")
    mlflow_user = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:fruits/mlflow-app-AbCdEf"
    assert not allows(statements, "secretsmanager:GetSecretValue", mlflow_user)
    with_user = role_statements(template, "AppFunctionRole", AppMlflowSecretArn=mlflow_user)
    assert allows(with_user, "secretsmanager:GetSecretValue", mlflow_user)
    resources = template["Resources"]
    for name, key in (("AppSecret", "app_secret"), ("CuratorSecret", "curator_token")):
        generated = resources[name]["Properties"]["GenerateSecretString"]
        assert generated["GenerateStringKey"] == key and int(generated["PasswordLength"]) >= 32
    env = Resolver(template)(resources["AppFunction"]["Properties"]["Environment"]["Variables"])
    assert env["FRUITS_SECRETS"] == "<AppSecret>,<CuratorSecret>"
    assert not any(name in env for name in ("FRUITS_APP_SECRET", "FRUITS_CURATOR_PASSWORD", "MLFLOW_TRACKING_PASSWORD"))
    assert set(env) == {
        "FRUITS_SOURCE",
        "FRUITS_ANSWERS",
        "FRUITS_CHECKPOINT",
        "FRUITS_STATE_DIR",
        "FRUITS_LABELS",
        "FRUITS_CURATION",
        "FRUITS_SECRETS",
        "MLFLOW_TRACKING_URI",
    }


def test_the_stream_writes_the_answers_the_app_reads(template: dict[str, Any]) -> None:
    stream = role_statements(template, "EmrInstanceRole") + [
        s for s in bucket_policy_statements(template) if s["Effect"] == "Deny"
    ]
    serverless = role_statements(template, "ServerlessJobRole")
    for statements in (stream, serverless):
        for action in ("dynamodb:GetItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem"):
            assert allows(statements, action, "<AnswersTable.Arn>"), action
        assert not allows(statements, "dynamodb:DeleteItem", "<AnswersTable.Arn>")
        assert not allows(statements, "dynamodb:Scan", "<AnswersTable.Arn>")


def test_the_answers_table_expires_items_and_is_encrypted(template: dict[str, Any]) -> None:
    props = template["Resources"]["AnswersTable"]["Properties"]
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }  # fruits.answers writes it
    assert props["KeySchema"] == [{"AttributeName": "upload_id", "KeyType": "HASH"}]
    assert props["SSESpecification"]["SSEEnabled"] is True and props["BillingMode"] == "PAY_PER_REQUEST"


def test_uploads_without_consent_expire_after_the_retention(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    rules = resolve(template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"])
    (rule,) = [r for r in rules if r["Id"] == "app-private-uploads-expiry"]
    from fruits.contracts import APP_FOLDER

    assert rule["Prefix"] == f"images/{APP_FOLDER}/private/"
    assert int(rule["ExpirationInDays"]) == template["Parameters"]["AppPrivateRetentionDays"]["Default"] == 1
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}  # versioning keeps no copy for 30 days
    assert not any(r.get("Prefix", "").startswith("images/app/consented") for r in rules)


def test_the_edge_throttles_and_the_function_reserves_nothing(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    stage = resources["AppStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "AppRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "AppBurstLimit"},
    }
    assert "sourceIp" not in stage["AccessLogSettings"]["Format"]  # no client address in the logs
    assert "ReservedConcurrentExecutions" not in resources["AppFunction"]["Properties"]  # finding 2
    assert resources["AppIntegration"]["Properties"]["PayloadFormatVersion"] == "2.0"  # the event shape app.aws reads
    assert resources["AppRoute"]["Properties"]["RouteKey"] == "$default"
    cors = resources["DataBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert cors == [
        {
            "AllowedMethods": ["POST"],
            "AllowedOrigins": [{"Fn::GetAtt": ["AppApi", "ApiEndpoint"]}],
            "AllowedHeaders": ["*"],
            "MaxAge": 3600,
        }
    ]


# ---------------------------------------------------------------------------- the secrets
class FakeSecrets:
    """Secrets Manager's GetSecretValue answer shape, for the pure mapping; the handler test below uses moto."""

    def __init__(self, secrets: dict[str, dict[str, str]]):
        self.secrets = secrets

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        return {"SecretString": json.dumps(self.secrets[SecretId])}


def test_secrets_become_settings_and_the_mlflow_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.aws import with_secrets

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    store = FakeSecrets({"a": {"app_secret": "k" * 64}, "m": {"username": "fruits-app", "password": "pw"}})
    settings = with_secrets(Settings.load(env={}, secrets="a, m"), store)
    assert settings.app_secret == "k" * 64
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("fruits-app", "pw")
    # A key that names no setting is left out (and logged by name): what it was meant for keeps no default.
    kept = with_secrets(Settings.load(env={}, secrets="x"), FakeSecrets({"x": {"app_secert": "p" * 64}}))
    assert kept.app_secret is None
    # The stack's generated curator token: one curator, unless the secret names them (issue 23's Settings.curators).
    if "curators" in fields_of(Settings):
        made = with_secrets(Settings.load(env={}, secrets="c"), FakeSecrets({"c": {"curator_token": "t" * 40}}))
        assert made.curators == "curator:" + "t" * 40


# ---------------------------------------------------------------------------- the handler, as Lambda calls it
PROBE = r"""
import importlib.abc, json, os, sys

BLOCKED = set(json.loads(os.environ["BLOCKED_MODULES"]))
tried = set()

class NotInThePackage(importlib.abc.MetaPathFinder):
    # What infra/build_app_lambda.sh does not pack cannot be imported here either (optional imports fall back).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.add(name.split(".")[0])
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInThePackage())
from http_api import http_api_event
import app.aws

host = "abc123.execute-api.eu-west-3.amazonaws.com"
upload_id = sys.argv[1]
def call(method, path, **kw):
    return app.aws.handler(http_api_event(method, path, host=host, **kw), None)

page = call("GET", "/")
cookies = page.get("cookies", [])
token = page["body"].split('data-csrf="', 1)[1].split('"', 1)[0]
presign = call("POST", "/api/uploads/presign", cookies=[c.split(";")[0] for c in cookies],
               headers={"origin": f"https://{host}", "content-type": "application/json", "x-csrf-token": token},
               body=json.dumps({"content_type": "image/jpeg", "consent": False}))
answer = call("GET", f"/api/answers/{upload_id}")
vote = call("POST", f"/api/answers/{upload_id}/vote", cookies=[c.split(";")[0] for c in cookies],
            headers={"origin": f"https://{host}", "content-type": "application/json", "x-csrf-token": token},
            body=json.dumps({"agrees": True}))
ops = call("GET", "/api/ops")
print(json.dumps({"page": page["statusCode"], "csp": page["headers"].get("content-security-policy", ""),
                  "presign": [presign["statusCode"], json.loads(presign["body"])],
                  "answer": [answer["statusCode"], json.loads(answer["body"])],
                  "vote": [vote["statusCode"], json.loads(vote["body"])], "ops": ops["statusCode"],
                  "modules": sorted({m.split(".")[0] for m in sys.modules}), "tried": sorted(tried)}))
"""


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def packed_distributions() -> set[str]:
    """infra/app_lambda_requirements.txt and everything they depend on (the venv's metadata), normalised names."""
    wanted = [
        line.strip()
        for line in (ROOT / "infra" / "app_lambda_requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    seen: set[str] = set()
    while wanted:
        name = normalised(wanted.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return seen


@pytest.mark.slow
def test_the_deployed_handler_answers_http_api_events_and_imports_only_what_is_packed(
    moto_server: str, template: dict[str, Any], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bucket, table = f"fruits-app-{suffix}", f"fruits-answers-{suffix}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    secrets = boto3.client("secretsmanager", endpoint_url=moto_server, region_name=REGION)
    app_secret = secrets.create_secret(Name=f"app-{suffix}", SecretString=json.dumps({"app_secret": "s" * 64}))["ARN"]
    DynamoAnswers(table, REGION, moto_server, 86400).create_table()
    upload_id = "0123456789abcdef0123456789abcdef"
    DynamoAnswers(table, REGION, moto_server, 86400).put_many(
        [
            Answer(
                upload_id,
                ANSWERED,
                answered_at=1796468400.0 + 10**6,
                prediction="Limes",
                confidence=0.97,
                top=(("Limes", 0.97), ("Lemon", 0.02)),
                model_name="fruits-pca",
                model_version="1",
            )
        ]
    )

    # The function's environment as the template sets it, with this test's bucket, table and secret.
    env = Resolver(template, ProjectName="fruits")(
        template["Resources"]["AppFunction"]["Properties"]["Environment"]["Variables"]
    )
    env = {
        k: v.replace(f"fruits-{ACCOUNT}-{REGION}", bucket)
        .replace("<AnswersTable>", table)
        .replace("<AppSecret>,<CuratorSecret>", app_secret)
        for k, v in env.items()
        if v
    }
    env["FRUITS_STATE_DIR"] = str(tmp_path / "lambda-tmp")  # /tmp/fruits on Lambda
    # A tracking server (REST) that refuses at once: the known map is then missing, and the page says so.
    env.update(MLFLOW_TRACKING_URI="https://127.0.0.1:9", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    # Every installed module whose distribution the package does not hold, nor the runtime.
    allowed = packed_distributions() | RUNTIME_DISTRIBUTIONS
    blocked = sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if module not in OUR_PACKAGES and not {normalised(d) for d in dists} & allowed
    )
    assert {"pyspark", "tensorflow", "onnxruntime", "deltalake", "sqlalchemy"} <= set(blocked)
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUITS_", "MLFLOW_", "AWS_"))}
    process_env.update(
        env,
        AWS_ENDPOINT_URL=moto_server,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONPATH=str(ROOT / "tests"),
        BLOCKED_MODULES=json.dumps(blocked),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, upload_id],
        env=process_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert (
        seen["page"] == 200 and moto_server in seen["csp"]
    )  # the page may post to the bucket (its origin), and only there
    status, post = seen["presign"]
    assert status == 201 and re.fullmatch(r"images/app/private/[0-9a-f]{32}\.jpg", post["fields"]["key"])
    assert seen["answer"][0] == 200 and seen["answer"][1]["title"] == "Limes"  # read from DynamoDB by id
    # The package has no delta-rs (134 MB beside pyarrow's: over Lambda's 250 MB): votes are refused, said so.
    assert seen["vote"][0] == 503 and seen["vote"][1]["reason"] == "votes_unavailable"
    assert seen["ops"] == 200  # the progress mirror on S3 (empty here), without Spark

    # It served all that with the packed distributions only; what it would have liked besides is optional.
    assert not {m for m in set(blocked) & set(seen["modules"]) if not m.startswith("_")}  # _*: loaded by site at start
    print("optional imports refused:", seen["tried"])
