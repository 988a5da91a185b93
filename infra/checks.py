"""Checks on what a person types, before any request is built: each failure is one readable line."""

from __future__ import annotations

import re

from fruits.exceptions import FruitsError

BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


def check_bucket(bucket: str, flag: str = "--bucket") -> None:
    if (
        not BUCKET_PATTERN.match(bucket)
        or ".." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
        or bucket.startswith("xn--")
    ):
        raise FruitsError(
            f"{flag} {bucket!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, dots, hyphens; e.g. fruits-<account>-<region>)"
        )


def check_region(region: str) -> None:
    if not REGION_PATTERN.match(region):
        raise FruitsError(f"--region {region!r} is not an AWS region name (e.g. eu-west-3)")


def check_fraction(flag: str, value: float) -> None:
    if not 0 < value <= 1:
        raise FruitsError(f"{flag} must be in (0, 1], got {value:g}")
