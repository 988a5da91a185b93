"""infra/network.py: the buckets a private subnet's S3 gateway endpoint must let the nodes reach."""

from __future__ import annotations

from infra.network import gateway_endpoint_buckets


def test_the_buckets_of_the_emr_private_subnet_guide_for_paris() -> None:
    # Typed from the EMR management guide, "Minimum Amazon S3 policy for private subnet".
    buckets = {b.bucket: b.access for b in gateway_endpoint_buckets("eu-west-3", "fruits-123456789012-eu-west-3")}
    assert buckets == {
        "fruits-123456789012-eu-west-3": "read-write",
        "al2023-repos-eu-west-3-de612dc2": "read",
        "repo.eu-west-3.emr.amazonaws.com": "read",
        "aws157-instance-data-0-prod-eu-west-3": "read",
        "aws157-instance-data-1-prod-eu-west-3": "read",
        "aws157-logs-prod-eu-west-3": "write",
        "prod.eu-west-3.appinfo.src": "read-write",
        "eu-west-3.elasticmapreduce": "read",
    }


def test_the_guides_regional_exceptions() -> None:
    us = {b.bucket for b in gateway_endpoint_buckets("us-east-1", "b")}
    assert "aws157-logs-prod" in us and "aws157-logs-prod-us-east-1" not in us
    sydney = {b.bucket for b in gateway_endpoint_buckets("ap-southeast-2", "b")}
    assert {
        "aws157-instance-data-bucket-0-prod-ap-southeast-2",
        "aws157-instance-data-bucket-1-prod-ap-southeast-2",
    } <= sydney
