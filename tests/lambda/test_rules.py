"""The Lambda's copy of the image rules agrees with the stream's, and the Lambda stays standalone.

lambda/handler.py ships alone in its zip (boto3 comes with the runtime), so it cannot import
`fruits` and keeps its own copy of which keys are images, which folders are hidden and which
class an image has. These tests hold the two copies to the same answers on one table of keys,
and the handler to the standard library plus boto3.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from fruits import source

HANDLER = Path(__file__).resolve().parents[2] / "lambda" / "handler.py"
sys.path.insert(0, str(HANDLER.parent))
import handler as lambda_handler  # noqa: E402  (lambda/ is not a package: `lambda` is a keyword)

PREFIX = "images/"
KEYS = [
    "images/Apple Red 1/r_12_100.jpg",
    "images/Banana/b.JPG",
    "images/Banana/b.jpeg",
    "images/Banana/b.Png",
    "images/Banana/b.gif",
    "images/Banana/b.jpg.txt",
    "images/Banana/jpg",
    "images/Banana/.hidden.jpg",
    "images/Banana/_tmp.jpg",
    "images/_staging/Banana/b.jpg",
    "images/.spark/Banana/b.jpg",
    "images/Banana/_sub/b.jpg",
    "images/loose.jpg",
    "images/Kiwi/nested/deeper/k.png",
    "images/Cactus fruit/ünïcode näme 1.jpg",
    "images/Pear/x%20y.jpg",
    "images/Pear/",
    "images/app/consented/0123456789abcdef0123456789abcdef.jpg",
    "images/app/private/0123456789abcdef0123456789abcdef.png",
    "images/apple/a.jpg",
]


@pytest.mark.parametrize("key", KEYS)
def test_the_lambda_and_the_stream_agree_on_every_key(key: str) -> None:
    assert lambda_handler.is_image_key(key) is source.is_image_name(key)
    assert lambda_handler.in_hidden_folder(key, PREFIX) is source.in_hidden_folder(key, PREFIX)
    if source.is_image_name(key):
        assert lambda_handler.label_of(key, PREFIX) == source.label_from_path(key, PREFIX.rstrip("/"))


def test_the_table_covers_both_answers_of_each_rule() -> None:
    images = [k for k in KEYS if source.is_image_name(k)]
    assert 0 < len(images) < len(KEYS)
    assert {source.in_hidden_folder(k, PREFIX) for k in KEYS} == {True, False}
    assert None in {source.label_from_path(k, "images") for k in images}
    assert "apple" in {source.label_from_path(k, "images") for k in images}


def test_the_handler_imports_only_the_standard_library_and_boto3() -> None:
    imported = set()
    for node in ast.walk(ast.parse(HANDLER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    outside = imported - set(sys.stdlib_module_names) - {"boto3", "botocore"}
    assert not outside, f"lambda/handler.py must ship alone: it imports {sorted(outside)}"
    assert "boto3" in imported and "json" in imported  # the walk saw the imports


def test_the_lambda_writes_the_schema_the_stream_reads() -> None:
    """One name for the message schema (fruits.contracts); the Lambda cannot import it, so it keeps a copy."""
    from fruits.contracts import UPLOAD_MESSAGE_SCHEMA

    assert lambda_handler.SCHEMA == UPLOAD_MESSAGE_SCHEMA == "fruits.image-uploaded/1"
