"""Where the app's uploads land, chosen by the stream's source URI: a local folder or S3.

Both put a photo at `<source>/app/{consented,private}/<id>.<jpg|png>` (fruits.appuploads), where
the stream reads it:

- LocalUploads: the app receives the bytes and lands them atomically (a hidden temporary name in
  the same folder, fsync, rename: fruits.upload.land), so the stream never lists half a file.
- S3Uploads: the app never sees the bytes. It signs a presigned POST bound to exactly that key, a
  size range (1 byte .. the stream's limit), the one image content type the browser declared, and
  a short expiry; the browser posts the photo straight to the bucket.

Either can tell whether an upload exists and read it back (bounded) for its re-encoded thumbnail;
the raw bytes themselves are never served.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from fruits import appuploads
from fruits.exceptions import FruitsError
from fruits.settings import Settings
from fruits.upload import LocalDestination, S3Destination, land, open_destination

log = logging.getLogger("fruits.app")
CONTENT_TYPES = {"image/jpeg": "jpg", "image/png": "png"}  # what the app accepts, and the key's extension
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))


def sniff(head: bytes) -> str | None:
    """'jpg' or 'png' from a file's first bytes, else None: a cheap first look (the stream decodes)."""
    return next((extension for magic, extension in _MAGIC if head.startswith(magic)), None)


@dataclass(frozen=True)
class PresignedPost:
    upload_id: str
    url: str
    fields: dict[str, str]


class Uploads(Protocol):
    presigned: bool  # True: the browser posts to S3 (presign); False: to the app (land)
    upload_origins: tuple[str, ...]  # where the browser sends photos besides the app (the CSP allows them)

    def land(self, upload_id: str, consent: bool, extension: str, content: bytes) -> str: ...

    def presign(self, upload_id: str, consent: bool, content_type: str) -> PresignedPost: ...

    def exists(self, upload_id: str) -> bool: ...

    def read(self, upload_id: str, limit: int) -> bytes | None: ...


def open_uploads(settings: Settings) -> Uploads:
    destination = open_destination(
        settings.source_uri, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region
    )
    if isinstance(destination, S3Destination):
        return S3Uploads(destination, settings.max_image_bytes, settings.app_upload_expiry_seconds)
    assert isinstance(destination, LocalDestination)
    return LocalUploads(destination.root.resolve())


def candidate_keys(upload_id: str) -> list[str]:
    """Every place an upload id may live (consent and extension are part of the key)."""
    return [
        appuploads.upload_key(upload_id, consent, extension)
        for consent in (True, False)
        for extension in appuploads.EXTENSIONS
    ]


class LocalUploads:
    presigned = False
    upload_origins: tuple[str, ...] = ()

    def __init__(self, root: Path):
        self.root = root

    def land(self, upload_id: str, consent: bool, extension: str, content: bytes) -> str:
        return str(land(content, self.root / appuploads.upload_key(upload_id, consent, extension)))

    def presign(self, upload_id: str, consent: bool, content_type: str) -> PresignedPost:
        raise FruitsError("a local landing folder takes uploads through the app, not presigned POSTs")

    def _find(self, upload_id: str) -> Path | None:
        return next((p for key in candidate_keys(upload_id) if (p := self.root / key).is_file()), None)

    def exists(self, upload_id: str) -> bool:
        return self._find(upload_id) is not None

    def read(self, upload_id: str, limit: int) -> bytes | None:
        path = self._find(upload_id)
        if path is None or path.stat().st_size > limit:
            return None
        return path.read_bytes()

    def purge_private(self, retention_s: float, now: float | None = None) -> list[str]:
        """Delete what `app/private/` holds (uploads without consent, and temporary files a crash left)
        older than `retention_s`; returns the upload ids deleted."""
        folder = self.root / appuploads.APP_FOLDER / appuploads.PRIVATE
        cutoff = (time.time() if now is None else now) - retention_s
        deleted = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                if appuploads.is_upload_id(path.stem):
                    deleted.append(path.stem)
        return deleted


class S3Uploads:
    presigned = True

    def __init__(self, destination: S3Destination, max_bytes: int, expiry_s: int):
        self.client: Any = destination.client
        self.bucket = destination.bucket
        self.prefix = destination.prefix
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        probe = self.client.generate_presigned_post(self.bucket, self.prefix + "probe", ExpiresIn=60)["url"]
        parts = urlsplit(probe)  # signed locally: no request is sent
        self.upload_origins = (f"{parts.scheme}://{parts.netloc}",)

    def land(self, upload_id: str, consent: bool, extension: str, content: bytes) -> str:
        raise FruitsError("on S3 the browser posts the photo to the bucket: ask for a presigned POST")

    def presign(self, upload_id: str, consent: bool, content_type: str) -> PresignedPost:
        extension = CONTENT_TYPES[content_type]
        key = self.prefix + appuploads.upload_key(upload_id, consent, extension)
        post = self.client.generate_presigned_post(
            self.bucket,
            key,
            Fields={"Content-Type": content_type},
            Conditions=[["content-length-range", 1, self.max_bytes], ["eq", "$Content-Type", content_type]],
            ExpiresIn=self.expiry_s,
        )
        return PresignedPost(upload_id, post["url"], post["fields"])

    def exists(self, upload_id: str) -> bool:
        for key in candidate_keys(upload_id):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
                return True
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        return False

    def read(self, upload_id: str, limit: int) -> bytes | None:
        for key in candidate_keys(upload_id):
            try:
                found = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except self.client.exceptions.NoSuchKey:
                continue
            with found["Body"] as body:
                return body.read() if found["ContentLength"] <= limit else None
        return None
