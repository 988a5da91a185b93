"""`fruits upload` against a real moto S3 server (HTTP on 127.0.0.1) and a real local directory.

Expectations come from the shared images themselves (file listing, sizes, MANIFEST.tsv sha256),
never from the uploader.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli.main import main
from fruits.exceptions import FruitsError
from fruits.upload import upload_dir

REGION = "eu-west-3"
CLASSES = ("Apple Red 1", "Cactus fruit", "Kumquats")  # spaces in two of the three names


@pytest.fixture(scope="module")
def manifest(data_dir: Path) -> dict[str, str]:
    """'Apple Red 1/r_23_100.jpg' -> sha256, from the data set's own manifest."""
    rows = (line.split("\t") for line in (data_dir / "MANIFEST.tsv").read_text().splitlines()[1:])
    return {f"{cls}/{name}": sha for split, cls, name, sha in rows if split == "subset"}


@pytest.fixture
def source(tmp_path: Path, data_dir: Path) -> Path:
    """Three real class folders (30 JPEGs) plus files an uploader must leave alone."""
    root = tmp_path / "photos"
    for cls in CLASSES:
        shutil.copytree(data_dir / "subset" / cls, root / cls)
    (root / "labels.txt").write_text("not an image\n")
    (root / "Kumquats" / "._103_100.jpg").write_bytes(b"macOS resource fork")
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "1_100.jpg").write_bytes(b"hidden folder")
    return root


@pytest.fixture
def expected_files(data_dir: Path) -> dict[str, Path]:
    """'Apple Red 1/r_23_100.jpg' -> the original file, for the three classes."""
    return {f"{cls}/{p.name}": p for cls in CLASSES for p in sorted((data_dir / "subset" / cls).iterdir())}


@pytest.fixture
def s3(moto_server: str) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=moto_server)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"fruits-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def keys(s3: Any, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


# ----------------------------------------------------------------------------- S3
def test_uploads_class_folders_then_skips_everything(
    source: Path, bucket: str, s3: Any, moto_server: str, expected_files: dict[str, Path], manifest: dict[str, str]
) -> None:
    announced: list[str] = []

    report = upload_dir(
        source, f"s3://{bucket}/images/", endpoint_url=moto_server, workers=4, on_uploaded=announced.append
    )

    assert len(expected_files) == 30
    expected_keys = {f"images/{relative}" for relative in expected_files}
    assert "images/Apple Red 1/r_23_100.jpg" in expected_keys
    assert keys(s3, bucket) == expected_keys
    assert (report.uploaded, report.skipped, report.failed) == (30, 0, [])
    assert report.bytes == sum(p.stat().st_size for p in expected_files.values())
    assert report.destinations == sorted(f"s3://{bucket}/{key}" for key in expected_keys)
    assert sorted(announced) == report.destinations

    stored = s3.get_object(Bucket=bucket, Key="images/Cactus fruit/r_154_100.jpg")
    assert stored["Body"].read() == (expected_files["Cactus fruit/r_154_100.jpg"]).read_bytes()
    assert stored["ContentType"] == "image/jpeg"
    assert stored["Metadata"]["sha256"] == manifest["Cactus fruit/r_154_100.jpg"]

    announced.clear()
    again = upload_dir(source, f"s3://{bucket}/images", endpoint_url=moto_server, on_uploaded=announced.append)

    assert (again.uploaded, again.skipped, again.failed, again.bytes) == (0, 30, [], 0)
    assert again.destinations == [] and announced == []


def test_only_changed_files_are_uploaded_again(source: Path, bucket: str, s3: Any, moto_server: str) -> None:
    upload_dir(source, f"s3a://{bucket}/images/", endpoint_url=moto_server)
    changed = source / "Kumquats" / "r_187_100.jpg"
    content = bytearray(changed.read_bytes())
    content[-3] ^= 0xFF  # same size, different bytes: only the checksum can tell
    changed.write_bytes(bytes(content))
    # Objects put by another tool carry no sha256 metadata: their MD5 ETag decides.
    s3.put_object(
        Bucket=bucket, Key="images/Apple Red 1/31_100.jpg", Body=(source / "Apple Red 1" / "31_100.jpg").read_bytes()
    )
    same_size = bytearray((source / "Apple Red 1" / "236_100.jpg").read_bytes())
    same_size[100] ^= 0xFF
    s3.put_object(Bucket=bucket, Key="images/Apple Red 1/236_100.jpg", Body=bytes(same_size))

    report = upload_dir(source, f"s3a://{bucket}/images/", endpoint_url=moto_server)

    assert (report.uploaded, report.skipped) == (2, 28)
    assert report.destinations == [
        f"s3a://{bucket}/images/Apple Red 1/236_100.jpg",
        f"s3a://{bucket}/images/Kumquats/r_187_100.jpg",
    ]
    assert s3.get_object(Bucket=bucket, Key="images/Kumquats/r_187_100.jpg")["Body"].read() == bytes(content)
    assert (
        s3.head_object(Bucket=bucket, Key="images/Apple Red 1/31_100.jpg")["Metadata"] == {}
    )  # skipped, not rewritten


def test_dry_run_writes_nothing(source: Path, bucket: str, s3: Any, moto_server: str) -> None:
    report = upload_dir(source, f"s3://{bucket}/images/", endpoint_url=moto_server, dry_run=True)

    assert (report.uploaded, report.skipped, report.dry_run, report.destinations) == (30, 0, True, [])
    assert keys(s3, bucket) == set()


def test_missing_bucket_is_one_clear_error(source: Path, moto_server: str) -> None:
    with pytest.raises(FruitsError, match=r"^bucket 'no-such-bucket-4711' does not exist at http://127\.0\.0\.1:\d+$"):
        upload_dir(source, "s3://no-such-bucket-4711/images/", endpoint_url=moto_server)


@contextlib.contextmanager
def moto_authentication(moto_server: str) -> Iterator[None]:
    """Turn on moto's request authentication (off by default) inside the block, over its HTTP API."""

    def reset_auth(count: str) -> str:
        request = urllib.request.Request(
            f"{moto_server}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )  # not a form: moto reads the raw body
        with urllib.request.urlopen(request) as response:
            return json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    previous = reset_auth("0")
    try:
        yield
    finally:
        reset_auth(previous)


@pytest.fixture
def iam_user(moto_server: str) -> dict[str, Any]:
    """A real IAM user with an access key and no permissions (created while authentication is off)."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto_server)
    user = f"uploader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    access_key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"iam": iam, "user": user, "key_id": access_key["AccessKeyId"], "secret": access_key["SecretAccessKey"]}


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (
            "unknown key",
            r"^AWS rejected the credentials \(InvalidAccessKeyId\) at http://127\.0\.0\.1:\d+: check AWS_PROFILE",
        ),
        ("wrong secret", r"^AWS rejected the credentials \(SignatureDoesNotMatch\) at "),
        (
            "no permission",
            r"^access denied to s3://{bucket}/images/ at http://127\.0\.0\.1:\d+: uploading needs s3:ListBucket",
        ),
    ],
)
def test_rejected_credentials_are_one_clear_error(
    credentials: str,
    message: str,
    source: Path,
    bucket: str,
    s3: Any,
    moto_server: str,
    iam_user: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret = {
        "unknown key": ("AKIAUNKNOWN000000000", "anything"),
        "wrong secret": (iam_user["key_id"], "not-the-secret"),
        "no permission": (iam_user["key_id"], iam_user["secret"]),
    }[credentials]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    with moto_authentication(moto_server), pytest.raises(FruitsError, match=message.format(bucket=bucket)):
        upload_dir(source, f"s3://{bucket}/images/", endpoint_url=moto_server)
    assert keys(s3, bucket) == set()


def test_the_same_user_with_permission_uploads(
    source: Path, bucket: str, moto_server: str, iam_user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authentication really is on, and a permitted user gets through: the rejections above are not blanket."""
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam_user["iam"].put_user_policy(UserName=iam_user["user"], PolicyName="upload", PolicyDocument=json.dumps(policy))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_user["key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_user["secret"])

    with moto_authentication(moto_server):
        assert upload_dir(source, f"s3://{bucket}/images/", endpoint_url=moto_server).uploaded == 30


def test_no_credentials_at_all_is_one_clear_error(
    source: Path, bucket: str, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe either

    with pytest.raises(FruitsError, match=r"^no usable AWS credentials \(Unable to locate credentials\)"):
        upload_dir(source, f"s3://{bucket}/images/", endpoint_url=moto_server)


def test_unreachable_endpoint_is_one_clear_error(source: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"

    with pytest.raises(FruitsError, match=rf"^cannot reach the S3 endpoint at {closed}: Could not connect"):
        upload_dir(source, "s3://fruits/images/", endpoint_url=closed)


# ----------------------------------------------------------------------------- CLI
def test_cli_json_summary_then_endpoint_from_the_environment(
    source: Path,
    bucket: str,
    moto_server: str,
    expected_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = f"s3://{bucket}/images/"
    assert main(["upload", str(source), dest, "--endpoint-url", moto_server, "--workers", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {k: summary[k] for k in ("uploaded", "skipped", "failed", "bytes", "dest")} == {
        "uploaded": 30,
        "skipped": 0,
        "failed": 0,
        "bytes": sum(p.stat().st_size for p in expected_files.values()),
        "dest": dest,
    }
    assert summary["seconds"] > 0

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    assert main(["upload", str(source), dest, "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"uploaded 0 image(s) (0 bytes) to {dest} in ") and out.endswith("; 30 already there\n")


@pytest.mark.parametrize("problem", ["missing", "no images"])
def test_cli_bad_dir_exits_1_with_one_line(problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "nothing here"
    if problem == "no images":
        (folder / "Kiwi").mkdir(parents=True)
        (folder / "Kiwi" / "notes.txt").write_text("no photos yet")

    assert main(["upload", str(folder), "s3://fruits/images/"]) == 1

    captured = capsys.readouterr()
    expected = f"{folder} does not exist" if problem == "missing" else f"no images (.jpg, .jpeg, .png) under {folder}"
    assert captured.err == f"fruits upload: error: {expected}\n"
    assert captured.out == ""


# ----------------------------------------------------------------------------- local landing directory
def test_local_destination_is_written_atomically_and_skips_identical_files(
    source: Path, tmp_path: Path, expected_files: dict[str, Path]
) -> None:
    landing = tmp_path / "state dir" / "landing"  # does not exist yet; a space survives the file:// URI

    report = upload_dir(source, landing.as_uri(), progress=False)

    written = {p.relative_to(landing).as_posix(): p for p in landing.rglob("*") if p.is_file()}
    assert set(written) == set(expected_files)
    assert all(written[r].read_bytes() == expected_files[r].read_bytes() for r in expected_files)
    assert report.destinations == sorted(str(landing / r) for r in expected_files)
    assert (report.uploaded, report.skipped) == (30, 0)

    (source / "Kumquats" / "r_187_100.jpg").write_bytes(b"\xff\xd8 a different photo")
    again = upload_dir(source, str(landing), progress=False)

    assert (again.uploaded, again.skipped, again.destinations) == (1, 29, [str(landing / "Kumquats" / "r_187_100.jpg")])
    assert (landing / "Kumquats" / "r_187_100.jpg").read_bytes() == b"\xff\xd8 a different photo"
    assert [p.name for p in landing.rglob(".*")] == []


def test_local_failure_of_one_file_is_reported_and_leaves_no_temporary(source: Path, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "Kumquats" / "103_100.jpg").mkdir(parents=True)  # a folder where a photo must go

    report = upload_dir(source, str(landing), progress=False)

    assert (report.uploaded, report.skipped) == (29, 0)
    [(path, reason)] = report.failed
    assert path == str(source / "Kumquats" / "103_100.jpg")
    assert "Is a directory" in reason
    assert [p.name for p in landing.rglob(".*")] == []
