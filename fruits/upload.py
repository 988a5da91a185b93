"""Upload images to the images prefix (S3) or a landing folder (local), the way the stream needs them.

Destinations are chosen by URI (s3://, s3a://, file://, a path). Each implementation compares before
writing (size, then the sha256 stored with the object or the single-part MD5 ETag) so re-runs skip
what is already there, and `land` writes local files atomically so a watching stream never reads
half a file. `fruits upload` (cli/upload.py) is the command.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import posixpath
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from fruits.contracts import IMAGE_EXTENSIONS, is_image_name
from fruits.exceptions import FruitsError, one_line

log = logging.getLogger("fruits.upload")

S3_SCHEMES = ("s3", "s3a")
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
# Error codes meaning the credentials themselves are wrong: every request would fail the same way.
CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
ACCESS_DENIED_ERRORS = {"AccessDenied", "AllAccessDisabled", "403"}  # "403": HEAD responses carry no code


@dataclass(frozen=True)
class SourceImage:
    path: Path
    relative: str  # POSIX path under DIR: "Apple Red 1/r_1_100.jpg"


@dataclass
class UploadReport:
    """What one upload did. `destinations` are the written object URIs or local paths, sorted."""

    dest: str
    uploaded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    destinations: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "failures": [{"path": path, "reason": reason} for path, reason in self.failed],
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
        }

    def human(self) -> str:
        verb = "would upload" if self.dry_run else "uploaded"
        text = (
            f"{verb} {self.uploaded} image(s) ({self.bytes:,} bytes) to {self.dest} in {self.seconds:.1f} s; "
            f"{self.skipped} already there"
        )
        return text + (f"; {len(self.failed)} FAILED (see the log above)" if self.failed else "")


class Destination(Protocol):
    """Where images go. One implementation per storage, chosen by the DEST URI."""

    def prepare(self, folders: set[str], pool: ThreadPoolExecutor) -> None:
        """Check the destination is usable and learn what already exists under `folders`."""

    def is_current(self, relative: str, content: bytes, sha256: str) -> bool:
        """True if DEST already holds exactly `content` at `relative`."""

    def write(self, relative: str, content: bytes, sha256: str) -> str:
        """Store `content` at `relative`; returns the destination URI or path."""

    def fatal(self, exc: BaseException) -> FruitsError | None:
        """The user-facing error if `exc` would fail every file, else None (a per-file failure)."""


# ----------------------------------------------------------------------------- public API
def upload_dir(
    source: Path,
    dest: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    workers: int = 8,
    progress: bool = True,
    on_uploaded: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> UploadReport:
    """Upload every image under `source` to `dest` (s3://, s3a://, file:// or a local path).

    A file that fails is reported in `failed` and the others go on; an error that would fail
    every file (missing bucket, bad credentials, access denied, unreachable endpoint) raises
    FruitsError at once. `on_uploaded` is called in the caller's thread for each file written,
    with its destination URI (S3) or path (local). `endpoint_url` None means AWS itself; `region`
    None leaves the region to boto3 (AWS_REGION, the profile).
    """
    if workers < 1:
        raise FruitsError(f"--workers must be at least 1, got {workers}")
    images = find_images(source)
    destination = open_destination(dest, endpoint_url=endpoint_url, region=region, workers=workers)
    report = UploadReport(dest=dest, dry_run=dry_run)
    started = time.perf_counter()
    log.info(
        "%s %d image(s) from %s to %s with %d worker(s)",
        "checking" if dry_run else "uploading",
        len(images),
        source,
        dest,
        workers,
    )

    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload") as pool,
        tqdm(total=len(images), unit="img", desc="upload", file=sys.stderr, disable=None if progress else True) as bar,
    ):
        try:
            _prepare(destination, {posixpath.dirname(image.relative) for image in images}, pool, dest)
            futures = {pool.submit(_transfer, destination, image, dry_run): image for image in images}
            for future in as_completed(futures):
                image = futures[future]
                bar.update()
                try:
                    outcome = future.result()
                except Exception as exc:
                    fatal = destination.fatal(exc)
                    if fatal:
                        raise fatal from None
                    report.failed.append((str(image.path), one_line(exc)))
                    log.warning("failed %s: %s", image.path, one_line(exc))
                    continue
                if outcome.skipped:
                    report.skipped += 1
                    continue
                report.uploaded += 1
                report.bytes += outcome.size
                if outcome.written is not None:
                    report.destinations.append(outcome.written)
                    if on_uploaded is not None:
                        on_uploaded(outcome.written)
        finally:
            # After a fatal error (or Ctrl-C) do not start the files still queued.
            pool.shutdown(wait=True, cancel_futures=True)
    report.destinations.sort()
    report.seconds = time.perf_counter() - started
    return report


def find_images(source: Path) -> list[SourceImage]:
    """Images under `source`, sorted; hidden or _-prefixed folders are skipped as Spark skips them."""
    if not source.exists():
        raise FruitsError(f"{source} does not exist")
    if not source.is_dir():
        raise FruitsError(f"{source} is not a directory")
    images = []
    for folder, subfolders, files in os.walk(source):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith((".", "_")))
        for name in sorted(files):
            if is_image_name(name):
                path = Path(folder) / name
                images.append(SourceImage(path, path.relative_to(source).as_posix()))
    if not images:
        raise FruitsError(f"no images ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}) under {source}")
    return images


def open_destination(
    dest: str, *, endpoint_url: str | None = None, region: str | None = None, workers: int = 8
) -> Destination:
    """Storage is chosen by URI: s3:// and s3a:// go to S3, file:// and plain paths to disk."""
    parsed = urlparse(dest)
    if parsed.scheme in S3_SCHEMES:
        if not parsed.netloc:
            raise FruitsError(f"{dest}: no bucket name (expected {parsed.scheme}://bucket/prefix/)")
        return S3Destination(parsed.scheme, parsed.netloc, parsed.path.lstrip("/"), endpoint_url, region, workers)
    if parsed.scheme == "file":
        return LocalDestination(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise FruitsError(
            f"{dest}: unsupported destination scheme {parsed.scheme!r} (use s3://, s3a://, file:// or a path)"
        )
    return LocalDestination(Path(dest))


# ----------------------------------------------------------------------------- one file
class _Outcome(NamedTuple):
    skipped: bool
    size: int
    written: str | None  # None when skipped or in a dry run


def _prepare(destination: Destination, folders: set[str], pool: ThreadPoolExecutor, dest: str) -> None:
    """Any error here stops the upload: nothing can be compared or written without it."""
    try:
        destination.prepare(folders, pool)
    except FruitsError:
        raise
    except Exception as exc:
        raise destination.fatal(exc) or FruitsError(f"cannot use {dest}: {one_line(exc)}") from None


def _transfer(destination: Destination, image: SourceImage, dry_run: bool) -> _Outcome:
    """Runs in a worker thread."""
    # One read serves the checksum and the upload, so the stored sha256 describes the bytes sent.
    content = image.path.read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()
    if destination.is_current(image.relative, content, sha256):
        log.debug("skipped %s (identical copy at destination)", image.relative)
        return _Outcome(True, 0, None)
    if dry_run:
        return _Outcome(False, len(content), None)
    written = destination.write(image.relative, content, sha256)
    log.debug("uploaded %s -> %s", image.path, written)
    return _Outcome(False, len(content), written)


# ----------------------------------------------------------------------------- S3
@dataclass(frozen=True)
class _RemoteObject:
    size: int
    etag: str


class S3Destination:
    """s3://bucket/prefix/ through one boto3 client shared by the workers (clients are thread-safe)."""

    def __init__(
        self, scheme: str, bucket: str, prefix: str, endpoint_url: str | None, region: str | None, workers: int
    ):
        self.scheme = scheme
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint_url = endpoint_url
        self.client = _s3_client(endpoint_url, region, workers)
        self.existing: dict[str, _RemoteObject] = {}

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def prepare(self, folders: set[str], pool: ThreadPoolExecutor) -> None:
        """List only the class folders being uploaded (not the whole prefix): a prefix can hold millions.

        Listing first also surfaces a missing bucket or bad credentials with a proper error code
        before any upload (HEAD responses carry none).
        """
        for listing in pool.map(self._list_folder, sorted(folders)):
            self.existing.update(listing)

    def _list_folder(self, folder: str) -> dict[str, _RemoteObject]:
        folder_prefix = self.key(folder + "/" if folder else "")
        found = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder_prefix, Delimiter="/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                found[obj["Key"]] = _RemoteObject(obj["Size"], obj["ETag"].strip('"'))
        return found

    def is_current(self, relative: str, content: bytes, sha256: str) -> bool:
        """Same size, then our sha256 metadata; for objects without it, the single-part ETag (an MD5)."""
        remote = self.existing.get(self.key(relative))
        if remote is None or remote.size != len(content):
            return False
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):  # deleted since the listing
                return False
            raise
        stored = head.get("Metadata", {}).get(SHA256_METADATA)
        if stored:
            return stored == sha256
        # A multipart ETag ("...-3") is not an MD5: re-upload, which stores the sha256 for next time.
        return "-" not in remote.etag and remote.etag == hashlib.md5(content, usedforsecurity=False).hexdigest()

    def write(self, relative: str, content: bytes, sha256: str) -> str:
        key = self.key(relative)
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=content,
            ContentType=mimetypes.guess_type(relative)[0] or "application/octet-stream",
            Metadata={SHA256_METADATA: sha256},
        )
        return f"{self.scheme}://{self.bucket}/{key}"

    def fatal(self, exc: BaseException) -> FruitsError | None:
        from botocore import exceptions as boto

        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if isinstance(
            exc,
            (
                boto.NoCredentialsError,
                boto.PartialCredentialsError,
                boto.CredentialRetrievalError,
                boto.TokenRetrievalError,
                boto.SSOError,
            ),
        ):
            return FruitsError(
                f"no usable AWS credentials ({one_line(exc)}): set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectTimeoutError)):
            return FruitsError(f"cannot reach the S3 endpoint{where or ' (AWS)'}: {one_line(exc)}")
        if not isinstance(exc, boto.ClientError):
            return None
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return FruitsError(f"bucket {self.bucket!r} does not exist{where}")
        if code in CREDENTIAL_ERRORS:
            return FruitsError(
                f"AWS rejected the credentials ({code}){where}: check AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        if code in ACCESS_DENIED_ERRORS:
            return FruitsError(
                f"access denied to {self.scheme}://{self.bucket}/{self.prefix}{where}: uploading needs "
                "s3:ListBucket, s3:GetObject and s3:PutObject there"
            )
        return None


def _s3_client(endpoint_url: str | None, region: str | None, workers: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": "standard"},
        # One pooled connection per worker, or urllib3 discards connections and warns.
        max_pool_connections=max(10, workers),
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible endpoints (moto, MinIO) serve buckets as paths, not as DNS names.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


# ----------------------------------------------------------------------------- local
class LocalDestination:
    """A directory (the local demo's landing folder), written atomically for a watching stream."""

    def __init__(self, root: Path):
        self.root = root.expanduser()

    def prepare(self, folders: set[str], pool: ThreadPoolExecutor) -> None:
        """Check only (a dry run writes nothing): folders are created as files arrive."""
        nearest = self.root
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not nearest.is_dir():
            raise FruitsError(f"{nearest} exists and is not a directory")
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise FruitsError(f"cannot write to {nearest}")

    def is_current(self, relative: str, content: bytes, sha256: str) -> bool:
        target = self.root / relative
        try:
            if target.stat().st_size != len(content):
                return False
            return hashlib.sha256(target.read_bytes()).hexdigest() == sha256
        except FileNotFoundError:
            return False

    def write(self, relative: str, content: bytes, sha256: str) -> str:
        return str(land(content, self.root / relative))

    def fatal(self, exc: BaseException) -> FruitsError | None:
        return None


def land(content: bytes, target: Path) -> Path:
    """Write a file the way a watched folder must receive it: readers see all of it or nothing.

    The bytes go to a dot-prefixed temporary name (Spark's file source ignores those) and are
    flushed to disk, then os.replace moves it into place, which is atomic on one filesystem: after
    a crash the name holds all of the file or is absent, never a file whose data was not written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with open(temporary, "xb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
