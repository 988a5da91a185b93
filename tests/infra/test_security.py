"""Encryption, instance metadata and the checkov findings of infra/template.yaml (issue 10, findings 9 and 10).

checkov (PyPI checkov 3.3.30) runs in `make lint`, from its own venv (.venv-lint: its dependency
tree conflicts with the project's pins). The test that runs it here is skipped when that venv
does not exist; the one that checks every skip has a reason always runs.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from cfn_support import ACCOUNT, ROOT, TEMPLATE, Resolver, load_template
from infra.defaults import SECURITY_CONFIGURATION

CHECKOV = ROOT / ".venv-lint" / "bin" / "checkov"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_the_emr_security_configuration_requires_imdsv2_and_encrypts_disks(template: dict[str, Any]) -> None:
    resource = Resolver(template)(template["Resources"]["EmrSecurityConfiguration"]["Properties"])
    assert resource["Name"] == SECURITY_CONFIGURATION  # the name every run_job_flow request carries
    config = resource["SecurityConfiguration"]
    assert config["InstanceMetadataServiceConfiguration"] == {
        "MinimumInstanceMetadataServiceVersion": 2,  # IMDSv2 only
        "HttpPutResponseHopLimit": 1,  # a container on the node cannot reach the instance's credentials
    }
    encryption = config["EncryptionConfiguration"]
    assert encryption["EnableAtRestEncryption"] is True
    disks = encryption["AtRestEncryptionConfiguration"]["LocalDiskEncryptionConfiguration"]
    assert disks == {
        "EncryptionKeyProviderType": "AwsKms",
        "AwsKmsKey": "<EmrDiskKey.Arn>",
        "EnableEbsEncryption": True,
    }
    # In transit only with certificates (the parameter empty by default: off, and said so in docs/aws.md).
    assert encryption["EnableInTransitEncryption"] is False
    assert encryption["InTransitEncryptionConfiguration"] == "<AWS::NoValue>"  # left out of the configuration


def test_in_transit_encryption_is_on_when_certificates_are_given(template: dict[str, Any]) -> None:
    resolve = Resolver(template, InTransitCertificatesS3Object="s3://fruits-certs/emr/certs.zip")
    encryption = resolve(template["Resources"]["EmrSecurityConfiguration"]["Properties"])["SecurityConfiguration"][
        "EncryptionConfiguration"
    ]
    assert encryption["EnableInTransitEncryption"] is True
    assert encryption["InTransitEncryptionConfiguration"] == {
        "TLSCertificateConfiguration": {"CertificateProviderType": "PEM", "S3Object": "s3://fruits-certs/emr/certs.zip"}
    }


def key_policy(template: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return Resolver(template)(template["Resources"][key]["Properties"]["KeyPolicy"])["Statement"]


def test_the_disk_key_is_used_by_the_cluster_roles_only(template: dict[str, Any]) -> None:
    statements = key_policy(template, "EmrDiskKey")
    principals = {s["Sid"]: s["Principal"]["AWS"] for s in statements}
    assert principals == {
        "AccountAdministers": f"arn:aws:iam::{ACCOUNT}:root",
        "NodesUseTheKey": f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-ec2-role",
        "ServiceRoleEncryptsEbs": f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-service-role",
        "ServiceRoleGrantsEbsOnly": f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-service-role",
    }
    nodes = next(s for s in statements if s["Sid"] == "NodesUseTheKey")
    assert "kms:CreateGrant" not in nodes["Action"]  # only EMR's service role creates the EBS grants
    assert template["Resources"]["EmrDiskKey"]["Properties"]["EnableKeyRotation"] is True


def test_the_messages_key_lets_only_this_accounts_sns_and_s3_encrypt_into_queues(template: dict[str, Any]) -> None:
    (services,) = [s for s in key_policy(template, "MessagesKey") if "Service" in s["Principal"]]
    assert sorted(services["Principal"]["Service"]) == ["s3.amazonaws.com", "sns.amazonaws.com"]
    assert sorted(services["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert services["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    assert services["Condition"]["ArnLike"] == {
        "aws:SourceArn": [f"arn:aws:sns:eu-west-3:{ACCOUNT}:fruits-uploads", f"arn:aws:s3:::fruits-{ACCOUNT}-eu-west-3"]
    }


def test_the_topic_is_encrypted_and_refuses_plain_http(template: dict[str, Any]) -> None:
    assert template["Resources"]["UploadsTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "MessagesKey"}
    policy = template["Resources"]["UploadsTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "UploadsTopic"}]
    (deny,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "DenyInsecureTransport"]
    assert "sns:Publish" in deny["Action"] and deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_checkov_skip_names_a_check_and_says_why() -> None:
    skips = re.findall(r"#\s*checkov:skip=([A-Z_0-9]+)(.*)", TEMPLATE.read_text())
    assert skips, "the template justifies its remaining checkov findings in comments"
    for check, reason in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", check), check
        assert len(reason.lstrip(": ").split()) >= 6, f"{check}: say why in a sentence"


@pytest.mark.slow
@pytest.mark.skipif(not CHECKOV.exists(), reason="`make lint` creates .venv-lint with checkov 3.3.30")
def test_checkov_finds_nothing_the_template_does_not_justify() -> None:
    result = subprocess.run(
        [
            str(CHECKOV),
            "-f",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["summary"]["failed"] == 0, result.stdout[-3000:]
    justified = set(re.findall(r"checkov:skip=([A-Z_0-9]+)", TEMPLATE.read_text()))
    assert {c["check_id"] for c in report["results"]["skipped_checks"]} == justified
    assert report["summary"]["passed"] >= 70


def test_the_lint_extra_and_its_constraints_pin_the_same_checkov() -> None:
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lint"]
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints-lint.txt").read_text().split() if "==" in line)
    assert extra == ["checkov==3.3.30"] and pins["checkov"] == "3.3.30"
