"""The app as a person uses it, on emulated AWS: the page asks the app for a presigned POST, the browser
posts the photo straight to S3 (a moto server), S3's event reaches the upload Lambda's handler, SNS,
the stream's SQS queue, the REAL stream on the notification source (s3a://, 1 s trigger) writes the
answer to DynamoDB (moto), and the page shows it.

moto cannot run a Lambda (no Docker): demo.emulated_aws's EventPollers call lambda/handler.py with
the events moto delivers, as the runtime would. moto does not check a presigned POST's policy
(tests/app/test_s3.py asserts it on the policy document); the stream's size limit holds regardless.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from app_support import Phone, first_answered, needs_chromium, screenshot

from app.main import create_app
from app.serve import BackgroundServer
from demo.emulated_aws import EventPollers, wired_bucket
from demo.run import s3a_problem, stop_stream, wait_for_first_trigger
from demo.workspace import scratch_state
from fruits.answers import ANSWERED, REJECTED, open_answer_store
from streaming.job import StreamingJob
from support import champion_copy

pytestmark = [pytest.mark.slow, needs_chromium]
REGION = "eu-west-3"
KNOWN, UNKNOWN = "Limes", "Guava"  # a test/ fruit the model knows; an extra_classes/ one it does not


@pytest.fixture(scope="module")
def world(spark, settings, fitted, moto_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("app-aws")
    bucket, suffix = f"fruits-app-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with wired_bucket(work, REGION, moto_server, bucket, suffix) as aws, EventPollers(aws):
        assert s3a_problem(spark, aws) is None
        run = settings.replace(
            state_dir=scratch_state(work / "state", settings),
            mlflow_tracking_uri=settings.tracking_uri,
            source=f"s3a://{bucket}/images/",
            notifications=aws.stream_queue_url,
            s3_endpoint_url=moto_server,
            checkpoint=f"s3a://{bucket}/checkpoints/stream",
            output=str(work / "results"),
            errors=str(work / "errors"),
            answers=f"dynamodb://answers-{suffix}",
            dynamodb_endpoint_url=moto_server,
            trigger="1s",
            model_name="fruits-app-aws",
            app_secret=uuid.uuid4().hex * 2,
            app_uploads_per_minute=60,
        )  # every visitor here is 127.0.0.1
        champion_copy(run, fitted, "fruits-app-aws")
        open_answer_store(run).create_table()  # the stack's table (infra), made here on moto
        job = StreamingJob(run, spark=spark)
        job.start()
        try:
            wait_for_first_trigger(job)
            # The app addresses the bucket as s3:// (boto3); the stream as s3a:// (Spark): the same prefix.
            with BackgroundServer(create_app(run.replace(source=f"s3://{bucket}/images/"))) as server:
                s3.put_bucket_cors(
                    Bucket=bucket,
                    CORSConfiguration={
                        "CORSRules": [
                            {"AllowedOrigins": [server.url], "AllowedMethods": ["POST"], "AllowedHeaders": ["*"]}
                        ]
                    },
                )
                yield server.url, run, s3, bucket
        finally:
            stop_stream(job)


@pytest.fixture(scope="module")
def photos(world, data_dir) -> dict[str, Path]:
    """A test/ photo the model names right and an extra_classes/ photo it flags (app_support.first_answered:
    presigned POSTs to S3, as the page sends them)."""
    return {
        "known": first_answered(
            world[0],
            sorted((data_dir / "test" / KNOWN).glob("*.jpg")),
            lambda view: view["title"] == KNOWN,
            f"named {KNOWN}",
        ),
        "unknown": first_answered(
            world[0],
            sorted((data_dir / "extra_classes" / UNKNOWN).glob("*.jpg")),
            lambda view: view["is_novel"],
            "flagged as unknown",
        ),
    }


@pytest.fixture
def phone(browser, world):
    phone = Phone(browser, world[0])
    yield phone
    assert phone.console_errors == []  # the CSP lets the page post to the bucket, and nothing else broke
    phone.close()


def upload_of(phone: Phone) -> str:
    return phone.page.url.rsplit("/u/", 1)[1]


def test_a_photo_goes_straight_to_s3_and_its_fruit_comes_back_from_dynamodb(phone, world, photos, tmp_path) -> None:
    _, run, s3, bucket = world
    phone.page.set_input_files("#photo", str(photos["known"]))
    assert phone.answer() == KNOWN
    upload_id = upload_of(phone)
    key = f"images/app/private/{upload_id}.jpg"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == photos["known"].read_bytes()
    stored = open_answer_store(run).get(upload_id)
    assert stored.status == ANSWERED and stored.prediction == KNOWN
    assert all(phone.images_loaded("#answer-neighbours img, #answer-photo, #answer-map"))
    screenshot(phone, tmp_path, "aws-answer")


def test_an_unknown_fruit_through_s3_is_a_fruit_it_does_not_know_yet(phone, photos) -> None:
    phone.page.set_input_files("#photo", str(photos["unknown"]))
    assert phone.answer() == "A fruit I don't know yet"


def test_a_text_file_named_jpg_reaches_s3_and_the_stream_refuses_it_in_plain_words(phone, world, tmp_path) -> None:
    fake = tmp_path / "shopping.jpg"
    fake.write_text("kumquats, limes, a pineapple\n" * 20)
    phone.page.set_input_files("#photo", str(fake))  # the browser declares image/jpeg: only the stream can tell
    assert phone.answer() == "Sorry, no answer for this one"
    assert "not an image" in phone.page.locator("#answer-message").inner_text()
    stored = open_answer_store(world[1]).get(upload_of(phone))
    assert (stored.status, stored.reason) == (REJECTED, "not_an_image")


def test_ops_reads_the_stream_numbers_from_its_checkpoint_on_s3(browser, world) -> None:
    phone = Phone(browser, world[0] + "/ops")
    # The stream mirrors its progress to the checkpoint every few seconds: wait for the rejected upload.
    phone.page.wait_for_function(
        "() => document.getElementById('ops-error_reasons').textContent.includes('not_an_image')", timeout=120_000
    )
    assert int(phone.page.locator("[data-key=answers]").inner_text()) >= 3
    assert phone.console_errors == []
    phone.close()
