"""The app on S3 (a moto server): the browser gets a presigned POST bound to one key, and posts the photo
straight to the bucket; answers come from DynamoDB (moto).

moto accepts a presigned POST without checking its policy (a wrong key or an oversized body is
stored all the same), so the conditions are asserted on the decoded policy document; the stream
enforces the size limit again when it reads the object.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import requests
from app_support import GPS_MAKE, with_gps
from PIL import Image

from demo.visitors import Visitor
from fruits.answers import REJECTED, Answer, open_answer_store
from fruits.exceptions import FruitsError
from fruits.settings import Settings

REGION = "eu-west-3"
MAX_BYTES = 5 * 1024 * 1024


@pytest.fixture
def s3_world(moto_server: str, tmp_path: Path) -> tuple[Settings, str, object]:
    bucket = f"fruits-app-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    settings = Settings.load(
        state_dir=tmp_path / "state",
        source=f"s3://{bucket}/images/",
        s3_endpoint_url=moto_server,
        dynamodb_endpoint_url=moto_server,
        answers=f"dynamodb://answers-{bucket}",
        app_secret="k" * 40,
        max_image_bytes=MAX_BYTES,
    )
    open_answer_store(settings).create_table()
    return settings, bucket, s3


def policy_of(fields: dict) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


def test_the_presigned_post_is_bound_to_one_key_a_size_range_an_image_type_and_minutes(
    s3_world, serve, data_dir: Path
) -> None:
    settings, bucket, s3 = s3_world
    url = serve(settings, known_maps=lambda *_: None)
    visitor = Visitor(url)
    asked = time.time()
    grant = visitor.post("/api/uploads/presign", json={"content_type": "image/jpeg", "consent": False})
    assert grant.status_code == 201, grant.text
    body = grant.json()
    upload_id, key = body["upload_id"], f"images/app/private/{body['upload_id']}.jpg"
    assert body["url"] == f"{settings.s3_endpoint_url}/{bucket}" and body["fields"]["key"] == key
    policy = policy_of(body["fields"])
    conditions = policy["conditions"]
    assert {"bucket": bucket} in conditions and {"key": key} in conditions
    assert ["content-length-range", 1, MAX_BYTES] in conditions
    assert ["eq", "$Content-Type", "image/jpeg"] in conditions and body["fields"]["Content-Type"] == "image/jpeg"
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert asked + 240 <= expires <= time.time() + 301  # 5 minutes

    consented = visitor.post("/api/uploads/presign", json={"content_type": "image/png", "consent": True}).json()
    assert {"key": f"images/app/consented/{consented['upload_id']}.png"} in policy_of(consented["fields"])["conditions"]
    for refused in ("image/gif", "text/plain", ""):
        answer = visitor.post("/api/uploads/presign", json={"content_type": refused})
        assert (answer.status_code, answer.json()["reason"]) == (415, "not_an_image")
    assert visitor.post("/api/uploads/presign", json={"content_type": "image/jpeg"}, token=None).status_code == 403
    assert visitor.upload(b"\xff\xd8\xff").status_code == 404  # on S3 the app never takes the bytes itself
    policy_header = visitor.get("/").headers["content-security-policy"]
    assert f"connect-src 'self' {settings.s3_endpoint_url};" in policy_header
    assert f"form-action 'self' {settings.s3_endpoint_url};" in policy_header

    assert visitor.get(f"/api/answers/{upload_id}").status_code == 404  # nothing posted yet: no such upload
    raw = with_gps(sorted((data_dir / "test" / "Limes").glob("*.jpg"))[0])
    stored = requests.post(
        body["url"], data=body["fields"], files={"file": ("photo.jpg", raw, "image/jpeg")}, timeout=30
    )
    assert stored.status_code == 204, stored.text
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == raw
    assert visitor.get(f"/api/answers/{upload_id}").json()["status"] == "pending"  # the object is there

    photo = visitor.get(f"/api/answers/{upload_id}/photo.jpg")
    assert photo.status_code == 200 and b"Exif" not in photo.content and GPS_MAKE.encode() not in photo.content
    assert not Image.open(io.BytesIO(photo.content)).getexif()

    open_answer_store(settings).put_many(
        [Answer(upload_id, REJECTED, answered_at=time.time(), reason="too_large", detail="over the limit")]
    )
    view = visitor.get(f"/api/answers/{upload_id}").json()
    assert (view["status"], view["message"]) == (REJECTED, "This file is too large: photos up to 5 MB.")


def test_on_s3_the_app_refuses_to_start_without_its_secret(s3_world) -> None:
    from app.main import create_app

    settings, _, _ = s3_world
    with pytest.raises(FruitsError, match="FRUITS_APP_SECRET must be set"):
        create_app(settings.replace(app_secret=None))
