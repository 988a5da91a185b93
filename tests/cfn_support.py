"""Reading infra/template.yaml as CloudFormation does, and evaluating its policies as IAM does (tests only)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

from aws_support import ACCOUNT, BUCKET, REGION

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "template.yaml"

# What the resolved names must be for the default parameters in a moto-like account.
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


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    # cfn-lint's own decoder: it understands !Sub/!Ref/!GetAtt and turns them into the
    # JSON forms ({"Fn::Sub": ...}), exactly as CloudFormation reads them.
    return cfn_yaml.load(str(TEMPLATE))


def load_template() -> dict[str, Any]:
    import copy

    return copy.deepcopy(_load())


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
        # A stack named after the default project; a test that knows the real id passes it as an override.
        self.values["AWS::StackName"] = "fruits"
        self.values["AWS::StackId"] = (
            f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/fruits/0a1b2c3d-0000-4000-8000-000000000000"
        )
        self.values.update(overrides)
        self.values.update({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws"})
        self.conditions = template.get("Conditions", {})
        bucket_name = template["Resources"]["DataBucket"]["Properties"]["BucketName"]
        self.values["DataBucket"] = self(bucket_name)
        self.values["DataBucket.Arn"] = f"arn:aws:s3:::{self.values['DataBucket']}"
        # Named roles: Ref is the name, GetAtt Arn the ARN IAM gives them.
        for name, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            role_name = resource["Properties"].get("RoleName")
            # A role without a name gets one from CloudFormation: <stack>-<logical id>-<suffix>.
            self.values[name] = self(role_name) if role_name else f"fruits-{name}-GENERATED"
            self.values[f"{name}.Arn"] = f"arn:aws:iam::{ACCOUNT}:role/{self.values[name]}"

    def condition(self, name: str) -> bool:
        return bool(self(self.conditions[name]))

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self(item) for item in node]
        if not isinstance(node, dict):
            return str(node) if isinstance(node, str) else node
        if len(node) != 1:
            return {key: self(value) for key, value in node.items()}
        ((key, arg),) = node.items()
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
        if key == "Fn::If":
            return self(arg[1] if self.condition(arg[0]) else arg[2])
        if key == "Fn::Equals":
            return self(arg[0]) == self(arg[1])
        if key == "Fn::Not":
            return not self(arg[0])
        if key == "Condition":
            return self.condition(arg)
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
            if operator == "Null":
                # "true": the key must be absent; "false": it must be present.
                if (actual is None) != (str(expected).lower() == "true"):
                    return False
                continue
            if actual is None:
                # IAM: a condition on a missing key fails, except the negated operators, which hold.
                if operator in ("ArnNotEquals", "StringNotEquals"):
                    continue
                return False
            if operator == "StringLike":
                ok = any(iam_match(p, actual) for p in listify(expected))
            elif operator in ("StringEquals", "ArnEquals"):
                ok = actual in listify(expected)
            elif operator in ("StringNotEquals", "ArnNotEquals"):
                ok = actual not in listify(expected)
            elif operator == "ArnLike":
                ok = any(iam_match(p, actual) for p in listify(expected))
            elif operator == "Bool":
                ok = actual.lower() in [str(e).lower() for e in listify(expected)]
            elif operator == "NumericLessThan":
                ok = float(actual) < float(listify(expected)[0])
            else:
                raise AssertionError(f"the test's evaluator does not know {operator}: extend it")
            if not ok:
                return False
    return True


def matches(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    return (
        any(action_match(a, action) for a in listify(statement["Action"]))
        and any(iam_match(r, resource) for r in listify(statement["Resource"]))
        and conditions_hold(statement.get("Condition"), context)
    )


def allows(statements: list[dict[str, Any]], action: str, resource: str, **context: str) -> bool:
    """Whether the statements grant `action` on `resource`: an allow matches and no deny does."""
    if any(s["Effect"] == "Deny" and matches(s, action, resource, context) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s, action, resource, context) for s in statements)


def role_statements(template: dict[str, Any], role: str, **parameters: str) -> list[dict[str, Any]]:
    """Every statement a role gets: its inline policies, the template's managed policies it attaches and
    the AWS::IAM::Policy resources attached to it (those whose Condition holds with these parameters)."""
    resolve = Resolver(template, **parameters)
    props = template["Resources"][role]["Properties"]
    # Conditional policies (Fn::If) are resolved with the default parameters.
    documents = [policy["PolicyDocument"] for policy in resolve(props.get("Policies", [])) if isinstance(policy, dict)]
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:  # a policy of this template; AWS-managed ones are checked by name
            documents.append(template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        attached = {"Ref": role} in policy["Properties"].get("Roles", [])
        if attached and ("Condition" not in policy or resolve.condition(policy["Condition"])):
            documents.append(policy["Properties"]["PolicyDocument"])
    return [resolve(s) for document in documents for s in document["Statement"]]


def bucket_policy_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    resolve = Resolver(template)
    (policy,) = resources_of(template, "AWS::S3::BucketPolicy").values()
    return [resolve(s) for s in policy["Properties"]["PolicyDocument"]["Statement"]]


def effective(template: dict[str, Any], role: str, action: str, resource: str, **context: str) -> bool:
    """What a role may do on the data bucket: its own policies, then the bucket policy's denies."""
    principal = Resolver(template).values[f"{role}.Arn"]
    context = {"aws:PrincipalArn": principal, "aws:SecureTransport": "true", "s3:TlsVersion": "1.3", **context}
    denies = [s for s in bucket_policy_statements(template) if s["Effect"] == "Deny"]
    return allows(role_statements(template, role) + denies, action, resource, **context)


# ---------------------------------------------------------------------------- the stack on moto
# moto's CloudFormation has no AWS::ApiGatewayV2::* (it skips them, then fails on a reference to one):
# the template goes to moto without them, the references become a placeholder, and the HTTP API is
# created through moto's own apigatewayv2 API from the template's properties (deploy_http_api).
HTTP_API_TYPES = ("AWS::ApiGatewayV2::",)
HTTP_API_PLACEHOLDER = "https://http-api.placeholder.invalid"


def create_stack_secrets(secretsmanager: Any, project: str, template: dict[str, Any] | None = None) -> dict[str, str]:
    """The template's generated secrets (moto's CloudFormation has no AWS::SecretsManager::Secret), created
    through moto's API from their properties: {logical id: ARN}, for moto_template_body."""
    template = template or load_template()
    resolve = Resolver(template, ProjectName=project)
    made = {}
    for name, resource in resources_of(template, "AWS::SecretsManager::Secret").items():
        props = resolve(resource["Properties"])
        generate = props["GenerateSecretString"]
        value = secretsmanager.get_random_password(
            PasswordLength=int(generate["PasswordLength"]), ExcludePunctuation=generate["ExcludePunctuation"] == "true"
        )["RandomPassword"]
        document = {**json.loads(generate["SecretStringTemplate"]), generate["GenerateStringKey"]: value}
        made[name] = secretsmanager.create_secret(Name=props["Name"], SecretString=json.dumps(document))["ARN"]
    return made


def moto_template_body(template: dict[str, Any] | None = None, secrets: dict[str, str] | None = None) -> str:
    """The template as moto can create it: JSON, without the HTTP API and what refers to it, and with the
    secrets create_stack_secrets made (`secrets`) in place of the template's."""
    template = template or load_template()
    resources = template["Resources"]
    secrets = secrets or {}
    dropped = {name for name, r in resources.items() if r["Type"].startswith(HTTP_API_TYPES)} | set(secrets)
    dropped |= {
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Permission" and "AppApi" in json.dumps(r["Properties"].get("SourceArn"))
    }

    def replace(node: Any) -> Any:
        if isinstance(node, list):
            return [replace(item) for item in node]
        if isinstance(node, dict):
            if node.get("Fn::GetAtt") in (["AppApi", "ApiEndpoint"], "AppApi.ApiEndpoint"):
                return HTTP_API_PLACEHOLDER
            if node.get("Ref") in secrets:
                return secrets[node["Ref"]]
            if "Fn::Sub" in node and isinstance(node["Fn::Sub"], str):
                text = node["Fn::Sub"]
                for name, arn in secrets.items():
                    text = text.replace("${" + name + "}", arn)
                return {"Fn::Sub": text}
            return {key: replace(value) for key, value in node.items()}
        return node

    template["Resources"] = {name: replace(r) for name, r in resources.items() if name not in dropped}
    template["Outputs"] = {name: replace(o) for name, o in template.get("Outputs", {}).items()}
    return json.dumps(template)


def deploy_http_api(apigateway: Any, function_arn: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The template's HTTP API (AppApi, its integration, route and stage) created through moto's apigatewayv2 API,
    with the template's own properties; returns {"api_id", "endpoint", "stage"} as moto made them."""
    template = template or load_template()
    resolve = Resolver(template)
    props = {
        name: resolve(template["Resources"][name]["Properties"])
        for name in ("AppApi", "AppIntegration", "AppRoute", "AppStage")
    }
    api = apigateway.create_api(
        Name=props["AppApi"]["Name"],
        ProtocolType=props["AppApi"]["ProtocolType"],
        Description=props["AppApi"]["Description"],
        Tags=props["AppApi"]["Tags"],
    )
    integration = props["AppIntegration"]
    assert integration["IntegrationUri"] == "<AppFunction.Arn>"
    made = apigateway.create_integration(
        ApiId=api["ApiId"],
        IntegrationType=integration["IntegrationType"],
        IntegrationUri=function_arn,
        PayloadFormatVersion=integration["PayloadFormatVersion"],
        TimeoutInMillis=integration["TimeoutInMillis"],
    )
    route = props["AppRoute"]
    assert route["Target"] == "integrations/<AppIntegration>"
    apigateway.create_route(
        ApiId=api["ApiId"],
        RouteKey=route["RouteKey"],
        AuthorizationType=route["AuthorizationType"],
        Target=f"integrations/{made['IntegrationId']}",
    )
    stage = props["AppStage"]
    settings = {
        k: int(float(v)) if k == "ThrottlingBurstLimit" else float(v) for k, v in stage["DefaultRouteSettings"].items()
    }
    made_stage = apigateway.create_stage(
        ApiId=api["ApiId"], StageName=stage["StageName"], AutoDeploy=stage["AutoDeploy"], DefaultRouteSettings=settings
    )
    return {"api_id": api["ApiId"], "endpoint": api["ApiEndpoint"], "stage": made_stage}
