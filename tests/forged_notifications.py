"""Forged notification bodies: a seeded generator of hostile SQS messages for the notification source.

Every body starts as a real one, as it arrives on the stream's queue: the upload Lambda's message
(made by lambda/handler.py itself from an S3 record) or an S3 event, each raw or in an SNS
envelope. Then one mutation: a field's type swapped, a field deleted, an out-of-range or huge
value, a lone surrogate or other unicode in the key, a key outside the prefix or the bucket,
nesting, truncation, padding, duplicate JSON keys, NaN, garbage.

The outcome each body must have is known by construction, never by asking the parser:
MALFORMED, IGNORED (well-formed, not ours), TEST_EVENT, or ANNOUNCES one (key, ETag) under the
watched prefix. Every body is valid SQS text (the characters SQS accepts), so the same bodies
can be sent to a queue. Used by tests/fruits/test_notification_messages.py (parser),
tests/streaming/test_notifications_stream.py (the stream on moto) and bench/fuzz_notifications.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote_plus

from demo.emulated_aws import load_lambda_handler

MALFORMED, IGNORED, TEST_EVENT, ANNOUNCES = "malformed", "ignored", "test_event", "announces"
REGION = "eu-west-3"
LIMIT_NESTING = 16  # the source's documented limit: deeper is malformed
LIMIT_BODY = 64 * 1024  # characters
SHAPES = ("lambda", "lambda+sns", "s3", "s3+sns")  # the Lambda's message or an S3 event, raw or in an SNS envelope
MARKER = "@@forged@@"  # stands for a value written into the JSON text afterwards


@dataclass(frozen=True)
class Real:
    """A real upload: its key, ETag (bare) and size."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class Forged:
    body: str
    mutation: str
    expect: str
    announces: tuple[str, str] | None = None  # (key, ETag) when expect is ANNOUNCES
    family: str = ""  # the mutation's kind (the Forger method that made it)


def s3_event(bucket: str, key: str, etag: str, size: int, *, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event as S3 sends it (eventVersion 2.1): one record, the key URL-encoded, the ETag bare."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-12-01T09:30:00.123Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.7"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "fruits-images",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


def sns_envelope(message: str, kind: str = "Notification") -> str:
    """An SNS notification as SNS delivers it to SQS (raw message delivery off)."""
    return json.dumps(
        {
            "Type": kind,
            "MessageId": "1f0a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8",
            "TopicArn": f"arn:aws:sns:{REGION}:123456789012:fruits-uploaded",
            "Subject": "Fruits! image uploaded",
            "Message": message,
            "Timestamp": "2026-12-01T09:30:01.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
        }
    )


class Forger:
    """Hostile bodies about `bucket`/`prefix`, some of them built on the real uploads `reals`."""

    def __init__(self, seed: int, bucket: str, prefix: str, reals: list[Real]):
        self.rng = random.Random(seed)
        self.bucket, self.prefix, self.reals = bucket, prefix, reals
        self.lambda_handler = load_lambda_handler()
        self._serial = 0
        self.mutations: list[tuple[int, Callable[[], Forged]]] = [
            (6, self.type_swap),
            (4, self.deletion),
            (6, self.out_of_range),
            (3, self.lone_surrogate),
            (4, self.unicode_key),
            (4, self.not_ours),
            (3, self.nesting),
            (2, self.huge),
            (4, self.truncation),
            (2, self.numbers),
            (1, self.duplicate_keys),
            (2, self.garbage),
            (3, self.claims),
            (1, self.test_event),
            (2, self.whole_body_nesting),
        ]

    def bodies(self, count: int) -> list[Forged]:
        weights, makers = [w for w, _ in self.mutations], [m for _, m in self.mutations]
        return [
            replace(maker(), family=maker.__name__)
            for maker in (self.rng.choices(makers, weights)[0] for _ in range(count))
        ]

    # ---------------------------------------------------------------- real bodies
    def real_bodies(self, real: Real) -> list[str]:
        """The four ways a real upload's announcement reaches the queue."""
        return [self._body(shape, self._document(shape, real.key, real.etag, real.size)[0]) for shape in SHAPES]

    def _document(self, shape: str, key: str, etag: str, size: int) -> tuple[dict[str, Any], str]:
        event = s3_event(self.bucket, key, etag, size)
        if shape.startswith("lambda"):
            return self.lambda_handler.parse_record(event["Records"][0], self.prefix), "lambda"
        return event, "s3"

    @staticmethod
    def _body(shape: str, document: dict[str, Any], patch: Callable[[str], str] | None = None) -> str:
        """The document as the queue receives it; `patch` edits its JSON text before any envelope."""
        text = json.dumps(document, sort_keys=shape.startswith("lambda"))  # the Lambda publishes sorted keys
        text = patch(text) if patch else text
        return sns_envelope(text) if shape.endswith("+sns") else text

    def _new(self) -> tuple[str, dict[str, Any], str, str, str]:
        """A random shape's real-looking document announcing a new key: (shape, document, kind, key, etag)."""
        shape = self.rng.choice(SHAPES)
        self._serial += 1
        key, etag = f"{self.prefix}Forged/f{self._serial}.jpg", f"{self.rng.getrandbits(128):032x}"
        document, kind = self._document(shape, key, etag, self.rng.randrange(1, 100_000))
        return shape, document, kind, key, etag

    # ---------------------------------------------------------------- field paths
    # Required: a wrong type or its absence makes the message malformed. Optional: may be absent or null.
    REQUIRED: ClassVar[dict] = {
        "lambda": [("bucket",), ("key",), ("etag",), ("size",), ("event_name",), ("schema",)],
        "s3": [
            ("Records",),
            ("Records", 0, "eventName"),
            ("Records", 0, "s3"),
            ("Records", 0, "s3", "bucket"),
            ("Records", 0, "s3", "bucket", "name"),
            ("Records", 0, "s3", "object"),
            ("Records", 0, "s3", "object", "key"),
            ("Records", 0, "s3", "object", "eTag"),
            ("Records", 0, "s3", "object", "size"),
        ],
    }
    OPTIONAL: ClassVar[dict] = {
        "lambda": [("sequencer",), ("event_time",)],
        "s3": [("Records", 0, "eventTime"), ("Records", 0, "s3", "object", "sequencer")],
    }
    UNCHECKED: ClassVar[dict] = {  # fields the source never reads: anything goes there
        "lambda": [("label",), ("uri",), ("dedup_key",), ("region",)],
        "s3": [("Records", 0, "userIdentity"), ("Records", 0, "awsRegion"), ("Records", 0, "responseElements")],
    }
    STRING_FIELDS = (
        "bucket",
        "key",
        "etag",
        "event_name",
        "schema",
        "eventName",
        "name",
        "eTag",
        "sequencer",
        "event_time",
        "eventTime",
    )

    def _set(self, document: dict[str, Any], path: tuple, value: Any) -> None:
        for step in path[:-1]:
            document = document[step]
        document[path[-1]] = value

    def _delete(self, document: dict[str, Any], path: tuple) -> None:
        for step in path[:-1]:
            document = document[step]
        del document[path[-1]]

    def _wrong_type(self, path: tuple) -> Any:
        if path[-1] in self.STRING_FIELDS:
            return self.rng.choice([0, 12, -1.5, True, False, [], ["x"], {}, {"a": "b"}, 10**20])
        if path[-1] in ("size",):
            return self.rng.choice(["12", "", 1.5, 12.0, True, False, [], [12], {}, {"n": 12}])
        return self.rng.choice([0, "text", True, None])  # containers: Records, a record, s3, bucket, object

    def _announcing(self, mutation: str, shape: str, document: dict[str, Any], key: str, etag: str) -> Forged:
        return Forged(self._body(shape, document), mutation, ANNOUNCES, (key, etag))

    # ---------------------------------------------------------------- mutations
    def type_swap(self) -> Forged:
        shape, document, kind, key, etag = self._new()
        if self.rng.random() < 0.75:
            path = self.rng.choice(self.REQUIRED[kind])
            self._set(document, path, None if self.rng.random() < 0.15 else self._wrong_type(path))
            return Forged(self._body(shape, document), f"{shape}: {path[-1]} of a wrong type", MALFORMED)
        path = self.rng.choice(self.OPTIONAL[kind])
        if self.rng.random() < 0.3:
            self._set(document, path, None)
            return self._announcing(f"{shape}: {path[-1]} null", shape, document, key, etag)
        self._set(document, path, self._wrong_type(path))
        return Forged(self._body(shape, document), f"{shape}: {path[-1]} of a wrong type", MALFORMED)

    def deletion(self) -> Forged:
        shape, document, kind, key, etag = self._new()
        if self.rng.random() < 0.7:
            path = self.rng.choice(self.REQUIRED[kind])
            self._delete(document, path)
            return Forged(self._body(shape, document), f"{shape}: no {path[-1]}", MALFORMED)
        path = self.rng.choice(self.OPTIONAL[kind] + self.UNCHECKED[kind])
        self._delete(document, path)
        return self._announcing(f"{shape}: no {path[-1]}", shape, document, key, etag)

    OUT_OF_RANGE: ClassVar[dict] = {
        "size": [-1, -(2**63), 2**63, 2**70, 10**30],
        "etag": ["zz", "g" * 32, "0" * 65, "abc-", "abc-123456", '"', " 0123", "0123abcd\n", "ab cd"],
        "event_time": [
            "yesterday",
            "2026-13-45T00:00:00Z",
            "2026-12-01T25:00:00Z",
            "1" * 70,
            "",
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+01:00",
        ],
        "event_name": [
            "ObjectCreated:*",
            "Object Created:Put",
            "ObjectCreated:Put\n",
            "x" * 200,
            "ObjectCreated:Put:A:B",
            "ObjectCreated:Put;DROP",
        ],
        "bucket": ["UPPER-CASE", "a", "b" * 64, "-bad-", "bad_name", "b/c", ""],
        "sequencer": ["xyz", "0" * 65, ""],
    }
    S3_NAMES: ClassVar[dict] = {
        "size": ("Records", 0, "s3", "object", "size"),
        "etag": ("Records", 0, "s3", "object", "eTag"),
        "event_time": ("Records", 0, "eventTime"),
        "event_name": ("Records", 0, "eventName"),
        "bucket": ("Records", 0, "s3", "bucket", "name"),
        "sequencer": ("Records", 0, "s3", "object", "sequencer"),
    }

    def out_of_range(self) -> Forged:
        shape, document, kind, _key, _etag = self._new()
        name = self.rng.choice(sorted(self.OUT_OF_RANGE))
        value = self.rng.choice(self.OUT_OF_RANGE[name])
        self._set(document, (name,) if kind == "lambda" else self.S3_NAMES[name], value)
        return Forged(self._body(shape, document), f"{shape}: {name} {value!r:.40}", MALFORMED)

    def lone_surrogate(self) -> Forged:
        shape, document, kind, _key, _etag = self._new()
        surrogate = self.rng.choice(["\ud800", "\udfff", "\udc80x"])
        if kind == "s3" and self.rng.random() < 0.5:  # URL-encoded bytes that are not UTF-8
            raw = f"{self.prefix}K/{self.rng.choice(['%ED%A0%80', '%FF', '%C3', '%80%80'])}x.jpg"
            self._set(document, ("Records", 0, "s3", "object", "key"), raw)
            return Forged(self._body(shape, document), f"{shape}: key {raw!r} not UTF-8", MALFORMED)
        path = self.rng.choice(["key", "etag", "event_time", "bucket"])
        where = (path,) if kind == "lambda" else self.S3_NAMES.get(path, ("Records", 0, "s3", "object", "key"))
        self._set(document, where, f"{self.prefix}K/a{surrogate}.jpg" if path == "key" else surrogate)
        return Forged(self._body(shape, document), f"{shape}: lone surrogate in {path}", MALFORMED)

    UNICODE: ClassVar[list[str]] = [
        "é",
        "水果",
        "🍓",
        "\u202e",
        "\u0001",
        "a b",
        "+",
        "%",
        "ß",
        "\u00a0",
        "\t",
        "\u200b",
        "Ω≈ç√",
        "\\",
        "'",
        '"',
        "<>&",
        "?x=1#y",
        "~!@$^*()",
    ]

    def unicode_key(self) -> Forged:
        """Valid keys with unusual characters (announced: their GET says whether they exist), or too long."""
        shape = self.rng.choice(SHAPES)
        etag = f"{self.rng.getrandbits(128):032x}"
        name = "".join(self.rng.choice(self.UNICODE) for _ in range(self.rng.randrange(1, 6))) + ".jpg"
        length = self.rng.choice([None, None, None, 1024, 1025, 3000])  # bytes, S3's limit being 1,024
        padding = "x" * (length - len(f"{self.prefix}U/{name}".encode())) if length else ""
        key = f"{self.prefix}U/{padding}{name}"
        document, _ = self._document(shape, key, etag, 10)
        if len(key.encode()) > 1024:
            return Forged(self._body(shape, document), f"{shape}: key of {len(key.encode())} bytes", MALFORMED)
        return Forged(self._body(shape, document), f"{shape}: unicode key {key[-12:]!r}", ANNOUNCES, (key, etag))

    def not_ours(self) -> Forged:
        shape = self.rng.choice(SHAPES)
        etag = f"{self.rng.getrandbits(128):032x}"
        case = self.rng.randrange(7)
        bucket, key, event = self.bucket, f"{self.prefix}K/x{self._serial}.jpg", "ObjectCreated:Put"
        if case == 0:
            bucket = "someone-elses-bucket"
        elif case == 1:
            key = f"other/{key}"
        elif case == 2:
            key = key.replace(".jpg", ".txt")
        elif case == 3:
            key = f"{self.prefix}_tmp/x.jpg"
        elif case == 4:
            key = f"{self.prefix}K/.hidden.jpg"
        elif case == 5:
            event = self.rng.choice(["ObjectRemoved:Delete", "ObjectRestore:Completed", "ObjectTagging:Put"])
        else:
            return Forged(
                sns_envelope("https://sns.example/confirm?token=x", "SubscriptionConfirmation"),
                "SNS subscription confirmation",
                IGNORED,
            )
        event_doc = s3_event(bucket, key, etag, 10, event_name=event)
        document = (
            self.lambda_handler.parse_record(event_doc["Records"][0], self.prefix)
            if shape.startswith("lambda")
            else event_doc
        )
        return Forged(self._body(shape, document), f"{shape}: not ours ({bucket}/{key}, {event})", IGNORED)

    def nesting(self) -> Forged:
        """Nested arrays in place of a field: deeper than the limit is malformed even where nothing is read."""
        shape, document, kind, key, etag = self._new()
        unchecked = self.rng.random() < 0.5
        path = self.rng.choice(self.UNCHECKED[kind] if unchecked else self.REQUIRED[kind])
        depth = self.rng.choice([1, 3, 8, LIMIT_NESTING - len(path), LIMIT_NESTING - len(path) + 1, 40, 3000])
        self._set(document, path, MARKER)  # the nesting goes in as text: json.dumps would recurse that deep
        body = self._body(shape, document, lambda text: text.replace(f'"{MARKER}"', "[" * depth + "1" + "]" * depth))
        if unchecked and len(path) + depth <= LIMIT_NESTING:
            return Forged(body, f"{shape}: {depth} levels in {path[-1]}", ANNOUNCES, (key, etag))
        return Forged(body, f"{shape}: {depth} levels in {path[-1]}", MALFORMED)

    def whole_body_nesting(self) -> Forged:
        depth = self.rng.choice([LIMIT_NESTING + 1, 1000, 30_000, 100_000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        body = opener * depth + "1" + closer * depth
        return Forged(body, f"{depth} nested levels, {len(body):,} characters", MALFORMED)

    def huge(self) -> Forged:
        shape, document, kind, _key, _etag = self._new()
        size = self.rng.choice([LIMIT_BODY + 1, 200_000, 1_000_000 - 4096])
        self._set(document, self.rng.choice(self.UNCHECKED[kind]), "x" * size)
        return Forged(self._body(shape, document), f"{shape}: padded to over {size:,} characters", MALFORMED)

    def truncation(self) -> Forged:
        shape, document, _, _, _ = self._new()
        body = self._body(shape, document)
        cut = self.rng.randrange(len(body))  # any strict prefix of a JSON object is not JSON
        return Forged(body[:cut], f"{shape}: truncated to {cut} of {len(body)} characters", MALFORMED)

    def numbers(self) -> Forged:
        shape, document, kind, _, _ = self._new()
        self._set(document, ("size",) if kind == "lambda" else self.S3_NAMES["size"], MARKER)
        literal = self.rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000, "1.0e2", "-0.0"])
        body = self._body(shape, document, lambda text: text.replace(f'"{MARKER}"', literal))
        return Forged(body, f"{shape}: size {literal[:12]}", MALFORMED)

    def duplicate_keys(self) -> Forged:
        """JSON's last duplicate wins: a bad value after a good one."""
        _, document, _, _, _ = self._new()
        while "Records" in document:
            _, document, _, _, _ = self._new()
        body = json.dumps(document)
        name, value = self.rng.choice([("key", 12), ("size", -1), ("etag", None), ("bucket", "")])
        return Forged(
            body[:-1] + f", {json.dumps(name)}: {json.dumps(value)}}}", f"lambda: duplicate {name}", MALFORMED
        )

    def garbage(self) -> Forged:
        choice = self.rng.randrange(3)
        if choice == 0:
            body = self.rng.choice(
                [
                    "",
                    "null",
                    "true",
                    "1",
                    '"text"',
                    "[]",
                    "[{}]",
                    "{}",
                    '{"Records": 1}',
                    '{"Type": "Notification", "Message": 12}',
                    '{"schema": "fruits.image-uploaded/1"}',
                ]
            )
        elif choice == 1:
            alphabet = "abc xyz012\n\t<>&;'\\é水🍓\u202e"
            body = "".join(self.rng.choice(alphabet) for _ in range(self.rng.randrange(1, 400)))
            body = "x" + body  # never the start of a JSON object
        else:
            body = sns_envelope(self.rng.choice(["not json", "[1, 2]", "{half", "", "null"]))
        return Forged(body, f"garbage {body[:20]!r}", MALFORMED)

    def claims(self) -> Forged:
        """A real upload's announcement with another claimed size, or another (well-formed) ETag."""
        if not self.reals:
            return self.truncation()
        real = self.rng.choice(self.reals)
        shape = self.rng.choice(SHAPES)
        if self.rng.random() < 0.6:
            size = self.rng.choice([0, 1, max(0, real.size - 1), real.size * 1000, 2**63 - 1])
            document, _ = self._document(shape, real.key, real.etag, size)
            return self._announcing(f"{shape}: {real.key} claims {size} bytes", shape, document, real.key, real.etag)
        etag = f"{self.rng.getrandbits(128):032x}"
        document, _ = self._document(shape, real.key, etag, real.size)
        return self._announcing(f"{shape}: {real.key} with another ETag", shape, document, real.key, etag)

    def test_event(self) -> Forged:
        event = json.dumps(
            {
                "Service": "Amazon S3",
                "Event": "s3:TestEvent",
                "Time": "2026-12-01T09:00:00.000Z",
                "Bucket": self.bucket,
                "RequestId": "5582815E1AEA5ADF",
                "HostId": "8cLeGAmw098X5cv4Zkw",
            }
        )
        return Forged(sns_envelope(event) if self.rng.random() < 0.5 else event, "s3:TestEvent", TEST_EVENT)
