"""Notification messages as untrusted input: an SQS body -> the uploads it announces, or why not.

Anyone allowed to send to the queue (or to publish on the topic) writes these bodies, so nothing
in them is trusted. A body ends in one of three ways:
- **uploads**: well-formed announcements of new objects in the watched bucket, under the prefix,
  with an image name outside `.`/`_` folders (the listing source's rules);
- **ignored**: well-formed, but not ours (another bucket or prefix, not an image, not a creation,
  an SNS subscription confirmation);
- **malformed**: anything else, including any exception while parsing it. Never raised: one
  message never fails `latestOffset`.

Before `json.loads` a body must be at most MAX_BODY_CHARS long and nest at most MAX_NESTING
levels (counted in one linear pass, no recursion). Every field of a creation is then checked
for type and range; one bad field makes the record malformed:
- bucket: S3's naming rules (3-63 lowercase letters, digits, dots, hyphens), or the watched name;
- key: a non-empty string, valid UTF-8 (S3 event keys are URL-decoded strictly: a lone surrogate
  or an invalid byte sequence is refused, not replaced), at most 1,024 bytes;
- size: an integer in 0..2**63-1 (Spark's long). Checked, then never used: the object's real size
  is what the read measures (fruits.notifications.reads);
- etag: required, hex digits with an optional multipart suffix (`-N`); the read is conditional on it;
- sequencer: absent or hex digits; event_time: absent, null or an ISO 8601 string, kept in UTC;
- event name: a string such as `ObjectCreated:Put`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from fruits.contracts import UPLOAD_MESSAGE_SCHEMA, in_hidden_folder, is_image_name
from fruits.exceptions import FruitsError

# The largest legitimate body is one record whose 1,024-byte key is written with JSON escapes
# (6 characters a byte) three times over (key, uri, dedup_key) inside an SNS envelope that escapes
# it again: 22,318 characters. 64 Ki leaves room for that and is a quarter of SNS's own maximum
# (256 KiB; SQS takes up to 1 MiB): bigger bodies are no announcement of ours.
MAX_BODY_CHARS = 64 * 1024
MAX_NESTING = 16  # ours nest 4 deep ({"Records": [{"s3": {"object": {...}}}]}); JSON itself sets no limit
MAX_KEY_BYTES = 1024  # S3's own limit
MAX_SIZE = 2**63 - 1  # Spark's long
MAX_TIME_CHARS = 64

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LEGACY_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")  # what us-east-1 once allowed: a watched bucket may be one
_ETAG = re.compile(r"[0-9a-fA-F]{1,64}(-[0-9]{1,5})?")
_SEQUENCER = re.compile(r"[0-9a-fA-F]{1,64}")
_EVENT_NAME = re.compile(r"(s3:)?[A-Za-z]{1,64}(:[A-Za-z]{1,64}){0,2}")
# What matters to nesting outside strings: escapes (skipped), quotes (enter/leave a string), brackets.
_NESTING_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


class Malformed(ValueError):
    """A message, record or persisted entry that does not pass the checks above."""


def shown(value: Any, limit: int = 80) -> str:
    """A field's value for a reason or a log line: a string repr-escaped (no raw control characters,
    lone surrogates as escapes) and cut at `limit` characters; a number or null as it is. Objects
    and arrays are named, never shown: no log line holds an excerpt of a message body."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length():,} bits>"  # printing one of 4,300 digits or more raises
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return {dict: "<an object>", list: "<an array>"}.get(type(value), f"<a {type(value).__name__}>")


# ============================================================================ what an announcement must hold
def checked_bucket(value: Any, watched: str) -> str:
    if not isinstance(value, str) or not (value == watched or _BUCKET.fullmatch(value)):
        raise Malformed(f"bad bucket name {shown(value)}")
    return value


def checked_key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Malformed(f"bad object key {shown(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise Malformed(f"object key {shown(value)} is not valid UTF-8 (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise Malformed(f"object key of {size:,} bytes: S3 keys have at most {MAX_KEY_BYTES:,}")
    return value


def checked_etag(value: Any) -> str:
    """Events carry the ETag bare, listings quoted: compare them bare."""
    bare = value.strip('"') if isinstance(value, str) else value
    if not isinstance(bare, str) or not _ETAG.fullmatch(bare):
        raise Malformed(f"bad ETag {shown(value)}")
    return bare


def checked_size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise Malformed(f"bad object size {shown(value)}")
    return value


def checked_sequencer(value: Any) -> None:
    if value is not None and not (isinstance(value, str) and _SEQUENCER.fullmatch(value)):
        raise Malformed(f"bad sequencer {shown(value)}")


def checked_time(value: Any) -> str | None:
    """None, or an ISO 8601 time -> the same instant in UTC, ISO 8601 (a naive time is taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIME_CHARS:
        raise Malformed(f"bad event time {shown(value)}")
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    except (ValueError, OverflowError):
        raise Malformed(f"bad event time {shown(value)}") from None


def checked_event_name(value: Any) -> str:
    if not isinstance(value, str) or not _EVENT_NAME.fullmatch(value):
        raise Malformed(f"bad event name {shown(value)}")
    return value.removeprefix("s3:")


# ============================================================================ uploads
@dataclass(frozen=True)
class Upload:
    """One object to ingest, as a notification or the backfill listing describes it.

    Checked when built, wherever it comes from (a message, the listing, a persisted list read
    back): an Upload that exists passes every check above, so only those enter the ledger and
    the checkpoint."""

    bucket: str
    key: str
    etag: str
    event_time: str | None  # ISO 8601 in UTC: the event's time, or the object's LastModified

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not _LEGACY_BUCKET.fullmatch(self.bucket):
            raise Malformed(f"bad bucket name {shown(self.bucket)}")
        checked_key(self.key)
        object.__setattr__(self, "etag", checked_etag(self.etag))
        object.__setattr__(self, "event_time", checked_time(self.event_time))

    @property
    def identity(self) -> str:
        """(key, ETag): the same for every copy of one upload's notifications and for the listing;
        the read is conditional on the ETag, so an identity names exactly one content."""
        return f"{self.key}|etag:{self.etag}"

    def as_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "event_time": self.event_time}

    @classmethod
    def from_json(cls, entry: Any) -> Upload:
        """An entry of a persisted list -> Upload; Malformed if it does not pass the checks."""
        if not isinstance(entry, dict):
            raise Malformed(f"not an object: {shown(entry)}")
        return cls(entry.get("bucket"), entry.get("key"), entry.get("etag"), entry.get("event_time"))


@dataclass(frozen=True)
class Location:
    """The watched prefix: s3://bucket/prefix/ (or s3a://: the rows' paths keep the scheme)."""

    scheme: str
    bucket: str
    prefix: str  # "" or ending with "/"

    @classmethod
    def parse(cls, uri: str) -> Location:
        match = re.match(r"^(s3a?)://([^/]+)/?(.*)$", uri)
        if not match:
            raise FruitsError(f"a notification source must be s3://BUCKET/PREFIX/, got {uri!r}")
        prefix = match[3]
        return cls(match[1], match[2], prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def wants(self, bucket: str, key: str) -> bool:
        """The listing source's rules: this bucket, under the prefix, an image name, no hidden folder."""
        return (
            bucket == self.bucket
            and key.startswith(self.prefix)
            and is_image_name(key)
            and not in_hidden_folder(key, self.prefix)
        )

    def path(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"


# ============================================================================ bodies
@dataclass
class Parsed:
    """What one SQS message says: uploads we want, and what else it held."""

    uploads: list[Upload] = field(default_factory=list)
    ignored: int = 0  # well-formed but not ours: another bucket or prefix, not an image, not a creation
    test_event: bool = False
    malformed: str | None = None  # why (bounded, escaped): the message, or one of its records


def parse_body(body: Any, location: Location) -> Parsed:
    """An SQS message body -> Parsed. Never raises: what cannot be understood is `malformed`.

    Accepted: an SNS envelope (Type Notification) around the upload Lambda's message or around
    an S3 event; the Lambda's message delivered raw; an S3 event delivered to SQS directly
    (keys URL-encoded); s3:TestEvent (skipped), raw or in an envelope.
    """
    parsed = Parsed()
    try:
        _parse(body, location, parsed)
    except Exception as exc:  # unforeseen ones too: still one bad message, never a failed trigger
        parsed.malformed = _reason(exc)
    return parsed


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, Malformed) else f"cannot be parsed: {type(exc).__name__}"


def _parse(body: Any, location: Location, parsed: Parsed) -> None:
    document = json_object(body, "body")
    if "Type" in document and ("TopicArn" in document or "Message" in document):  # an SNS envelope
        if document["Type"] != "Notification":
            parsed.ignored += 1  # subscription confirmations and the like
            return
        document = json_object(document.get("Message"), "SNS Message")
    if document.get("Event") == "s3:TestEvent":
        parsed.test_event = True
    elif document.get("schema") == UPLOAD_MESSAGE_SCHEMA:
        _keep(parsed, location, _from_lambda(document, location))
    elif "Records" in document:
        if not isinstance(document["Records"], list):
            raise Malformed("Records is not a list")
        for record in document["Records"]:
            try:
                _keep(parsed, location, _from_s3_record(record, location))
            except Exception as exc:  # one bad record does not hide the good ones
                parsed.malformed = f"record: {_reason(exc)}"
    else:
        raise Malformed("neither an S3 event, an upload announcement nor an SNS envelope")


def json_object(text: Any, what: str) -> dict[str, Any]:
    """A JSON object from an untrusted string, size and nesting checked before it is parsed."""
    if not isinstance(text, str):
        raise Malformed(f"{what} is not a string")
    if len(text) > MAX_BODY_CHARS:
        raise Malformed(f"{what} has {len(text):,} characters, over the {MAX_BODY_CHARS:,} limit")
    openers = text.count("[") + text.count("{")  # fewer than the limit (ours: a handful): no need to look closer
    depth = nesting_depth(text) if openers > MAX_NESTING else 0
    if depth > MAX_NESTING:
        raise Malformed(f"{what} nests {depth:,} levels deep, over the limit of {MAX_NESTING}")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: not JSON, or an integer too long to convert
        raise Malformed(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise Malformed(f"{what} is not a JSON object")
    return document


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, brackets inside strings left out: one pass, no recursion."""
    depth = deepest = 0
    in_string = False
    for token in _NESTING_TOKENS.findall(text):
        if token == '"':
            in_string = not in_string
        elif in_string or len(token) == 2:  # inside a string, or an escape
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _keep(parsed: Parsed, location: Location, upload: Upload | None) -> None:
    if upload is not None and location.wants(upload.bucket, upload.key):
        parsed.uploads.append(upload)
    else:
        parsed.ignored += 1


def _from_lambda(message: dict[str, Any], location: Location) -> Upload | None:
    """The upload Lambda's message; None if it announces something else than a creation."""
    if not checked_event_name(message.get("event_name")).startswith("ObjectCreated:"):
        return None
    checked_size(message.get("size"))
    checked_sequencer(message.get("sequencer"))
    return Upload(
        checked_bucket(message.get("bucket"), location.bucket),
        message.get("key"),
        message.get("etag"),
        message.get("event_time"),
    )


def _from_s3_record(record: Any, location: Location) -> Upload | None:
    """One record of an S3 event; None if it is not a creation (a removal and the like: not ours)."""
    if not isinstance(record, dict):
        raise Malformed(f"a record is not an object: {shown(record)}")
    if not checked_event_name(record.get("eventName")).startswith("ObjectCreated:"):
        return None
    s3 = _member(record, "s3")
    obj = _member(s3, "object")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str):
        raise Malformed(f"bad object key {shown(raw_key)}")
    try:
        key = unquote_plus(raw_key, errors="strict")  # S3 URL-encodes keys in events, spaces as '+'
    except UnicodeDecodeError:
        raise Malformed(f"object key {shown(raw_key)} does not decode as UTF-8") from None
    checked_size(obj.get("size"))
    checked_sequencer(obj.get("sequencer"))
    return Upload(
        checked_bucket(_member(s3, "bucket").get("name"), location.bucket),
        key,
        obj.get("eTag"),
        record.get("eventTime"),
    )


def _member(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise Malformed(f"missing field {name!r}")
    return value
