"""The notification parser on its own: the bodies AWS sends, then hostile ones (every field of a
wrong type or out of range, lone surrogates, keys outside the prefix or the bucket, 100,000 levels
of nesting, huge bodies) and a seeded fuzz of forged bodies whose outcome is known by construction."""

from __future__ import annotations

import json
import logging

import pytest

from forged_notifications import ANNOUNCES, IGNORED, MALFORMED, TEST_EVENT, Forger, Real
from fruits.exceptions import FruitsError
from fruits.notifications import Location, Upload, parse_body
from fruits.notifications.messages import Malformed, shown

WHERE = Location.parse("s3a://fruits-bucket/images/")
ETAG = "0123456789abcdef0123456789abcdef"
LAMBDA = {
    "schema": "fruits.image-uploaded/1",
    "bucket": "fruits-bucket",
    "key": "images/Kaki/a b+c.jpg",
    "size": 4096,
    "etag": ETAG,
    "sequencer": "0062",
    "event_time": "2026-12-01T09:30:00.000Z",
    "event_name": "ObjectCreated:Put",
    "dedup_key": "fruits-bucket/images/Kaki/a b+c.jpg/0062",
}


def s3_event(
    key: str = "images/Kaki/a+b%2Bc.jpg",
    *,
    bucket: str = "fruits-bucket",
    name: str = "ObjectCreated:Put",
    size: object = 4096,
    etag: object = ETAG,
    **record: object,
) -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": "2026-12-01T09:30:00.000Z",
                "eventName": name,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag}},
                **record,
            }
        ]
    }


def sns(message: dict | str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-3:1:t",
            "Message": message if isinstance(message, str) else json.dumps(message),
        }
    )


def lam(**changes: object) -> str:
    """The Lambda's message with some fields changed (a value of `...` deletes the field)."""
    return json.dumps({k: v for k, v in {**LAMBDA, **changes}.items() if v is not ...})


TEST_EVENT_BODY = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2026-12-01T09:00:00Z",
    "Bucket": "fruits-bucket",
}
KAKI = ("images/Kaki/a b+c.jpg", ETAG)  # what every accepted form below announces


@pytest.mark.parametrize(
    ("body", "uploads", "ignored", "test_event", "malformed"),
    [
        (sns(LAMBDA), [KAKI], 0, False, None),  # (a) SNS envelope around the Lambda's message
        (json.dumps(LAMBDA), [KAKI], 0, False, None),  # (b) raw message delivery
        (json.dumps(s3_event()), [KAKI], 0, False, None),  # (c) S3 -> SQS, key URL-encoded
        (sns(s3_event()), [KAKI], 0, False, None),  # (d) S3 -> SNS -> SQS
        (json.dumps(TEST_EVENT_BODY), [], 0, True, None),  # (e) test events, raw or wrapped
        (sns(TEST_EVENT_BODY), [], 0, True, None),
        (lam(sequencer=..., event_time=...), [KAKI], 0, False, None),  # optional fields absent or null
        (lam(sequencer=None, event_time=None), [KAKI], 0, False, None),
        (lam(etag=f'"{ETAG}"'), [KAKI], 0, False, None),  # a quoted ETag compares bare
        (json.dumps(s3_event(bucket="elsewhere")), [], 1, False, None),  # not ours
        (json.dumps(s3_event("results/Kaki/x.jpg")), [], 1, False, None),
        (json.dumps(s3_event("images-old/Kaki/x.jpg")), [], 1, False, None),
        (json.dumps(s3_event("images/Kaki/notes.txt")), [], 1, False, None),
        (json.dumps(s3_event("images/_tmp/Kaki/x.jpg")), [], 1, False, None),
        (json.dumps(s3_event("images/Kaki/.x.jpg")), [], 1, False, None),
        (json.dumps(s3_event("images/../secret/x.jpg")), [], 1, False, None),
        (json.dumps(s3_event(name="ObjectRemoved:Delete", size=None, etag=None)), [], 1, False, None),
        (lam(event_name="ObjectRemoved:Delete"), [], 1, False, None),
        (json.dumps({"Type": "SubscriptionConfirmation", "TopicArn": "arn", "Message": "confirm"}), [], 1, False, None),
        ("not json", [], 0, False, "body is not JSON"),  # malformed
        ("[1, 2]", [], 0, False, "body is not a JSON object"),
        (sns("{half"), [], 0, False, "SNS Message is not JSON"),
        (json.dumps({"hello": "world"}), [], 0, False, "neither an S3 event"),
        (json.dumps(s3_event(size=-1)), [], 0, False, "bad object size -1"),
        (json.dumps(s3_event(size="12")), [], 0, False, "bad object size '12'"),
        (
            json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}),
            [],
            0,
            False,
            "missing field 'object'",
        ),
        (lam(key=""), [], 0, False, "bad object key"),
    ],
)
def test_parse_body_on_a_table_of_bodies(body, uploads, ignored, test_event, malformed) -> None:
    parsed = parse_body(body, WHERE)
    assert [(u.key, u.etag) for u in parsed.uploads] == uploads
    assert (parsed.ignored, parsed.test_event) == (ignored, test_event)
    if malformed is None:
        assert parsed.malformed is None
    else:
        assert malformed in parsed.malformed


# Every field of a creation, with a wrong type or out of its range: malformed, nothing announced.
HOSTILE_FIELDS = [
    *[
        ("bucket", v)
        for v in (
            None,
            12,
            ["fruits-bucket"],
            {"name": "fruits-bucket"},
            "",
            "UPPER",
            "a",
            "b" * 64,
            "bad_name",
            "b/c",
            "fruits-bucket\n",
        )
    ],
    *[
        ("key", v)
        for v in (
            None,
            12,
            ["images/K/x.jpg"],
            "",
            "images/K/\ud800.jpg",
            "images/K/\udfffx.jpg",
            "images/K/" + "x" * 1016 + ".jpg",
        )
    ],
    *[("size", v) for v in (None, "4096", 4096.0, 1.5, True, [4096], -1, 2**63, 2**70, -(2**63))],
    *[("etag", v) for v in (None, 12, ["x"], "", "zz", "g" * 32, "0" * 65, ETAG + "\n", "abc-", '"', "\ud800")],
    *[("sequencer", v) for v in (12, "xyz", "0" * 65, "", ["0062"])],
    *[
        ("event_time", v)
        for v in (
            12,
            "",
            "yesterday",
            "2026-13-45T00:00:00Z",
            "1" * 70,
            "\ud800",
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+01:00",
        )
    ],
    *[("event_name", v) for v in (None, 12, "", "ObjectCreated:*", "Object Created:Put", "x" * 200)],
]


@pytest.mark.parametrize(("name", "value"), HOSTILE_FIELDS)
def test_every_field_of_a_wrong_type_or_out_of_range_is_malformed_in_every_shape(name, value) -> None:
    s3_names = {
        "bucket": ("s3", "bucket", "name"),
        "key": ("s3", "object", "key"),
        "size": ("s3", "object", "size"),
        "etag": ("s3", "object", "eTag"),
        "sequencer": ("s3", "object", "sequencer"),
        "event_time": ("eventTime",),
        "event_name": ("eventName",),
    }
    event = s3_event()
    where = event["Records"][0]
    for step in s3_names[name][:-1]:
        where = where[step]
    where[s3_names[name][-1]] = value
    for body in (lam(**{name: value}), sns(lam(**{name: value})), json.dumps(event), sns(event)):
        parsed = parse_body(body, WHERE)
        assert parsed.malformed and not parsed.uploads, (name, value, body[:200])
        assert parsed.ignored == 0


@pytest.mark.parametrize("raw_key", ["images/K/%ED%A0%80.jpg", "images/K/%FF.jpg", "images/K/%C3.jpg"])
def test_url_encoded_keys_that_are_not_utf8_are_refused_not_replaced(raw_key) -> None:
    parsed = parse_body(json.dumps(s3_event(raw_key)), WHERE)
    assert not parsed.uploads and "does not decode as UTF-8" in parsed.malformed


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "200,000 characters, over the 65,536 limit"),
        ("[" * 30_000 + "]" * 30_000, "nests 30,000 levels deep"),
        ('{"a":' * 10_000 + "1" + "}" * 10_000, "nests 10,000 levels deep"),
        (lam(label=json.loads("[" * 16 + "]" * 16)), "nests 17 levels deep"),  # even where nothing is read
        (sns("[" * 5_000 + "]" * 5_000), "SNS Message nests 5,000 levels deep"),
        (lam(label="x" * 70_000), "over the 65,536 limit"),
        (sns(lam(label="x" * (65_500 - len(lam(label=""))))), "body has 65,"),  # the envelope pushes it over
        (lam(size=0).replace('"size": 0', '"size": ' + "9" * 5000), "body is not JSON"),  # int() refuses 5,000 digits
        (lam(size=0).replace('"size": 0', '"size": NaN'), "bad object size nan"),
        (lam(size=0).replace('"size": 0', '"size": 1e400'), "bad object size inf"),
        (lam() + "\x00", "body is not JSON"),
        ('["\\"[[[[[[[[[[[[[[[[[[[["]', "not a JSON object"),  # brackets inside a string are not nesting
    ],
)
def test_nesting_size_and_number_limits_hold_before_json_is_parsed(body, reason) -> None:
    parsed = parse_body(body, WHERE)
    assert not parsed.uploads and reason in parsed.malformed


def test_a_legitimate_body_at_its_largest_is_accepted() -> None:
    """A 1,024-byte key of control characters, JSON-escaped three times over inside an SNS envelope."""
    key = "images/K/" + "\x01" * (1024 - len("images/K/.jpg")) + ".jpg"
    body = sns({**LAMBDA, "key": key, "uri": f"s3://fruits-bucket/{key}", "dedup_key": f"fruits-bucket/{key}/0062"})
    assert 20_000 < len(body) < 65_536
    assert [u.key for u in parse_body(body, WHERE).uploads] == [key]


def test_one_bad_record_does_not_hide_the_good_ones() -> None:
    event = s3_event()
    event["Records"] += [{"eventName": "ObjectCreated:Put"}, "not a record", s3_event(size=2**64)["Records"][0]]
    parsed = parse_body(json.dumps(event), WHERE)
    assert [u.identity for u in parsed.uploads] == [f"images/Kaki/a b+c.jpg|etag:{ETAG}"]
    assert parsed.malformed.startswith("record: ")


def test_the_event_time_is_kept_in_utc_and_a_naive_one_is_taken_as_utc() -> None:
    assert (
        parse_body(lam(event_time="2026-12-01T10:30:00+01:00"), WHERE).uploads[0].event_time
        == "2026-12-01T09:30:00+00:00"
    )
    assert parse_body(lam(event_time="2026-12-01T09:30:00"), WHERE).uploads[0].event_time == "2026-12-01T09:30:00+00:00"


def test_an_upload_is_checked_wherever_it_is_built() -> None:
    assert Upload("fruits-bucket", "images/K/x.jpg", f'"{ETAG}"', None).identity == f"images/K/x.jpg|etag:{ETAG}"
    for bad in (dict(etag=None), dict(key="k\ud800"), dict(event_time="soon"), dict(bucket="a/b"), dict(key=7)):
        fields = {"bucket": "fruits-bucket", "key": "images/K/x.jpg", "etag": ETAG, "event_time": None, **bad}
        with pytest.raises(Malformed):
            Upload(**fields)
        with pytest.raises(Malformed):
            Upload.from_json(fields)


def test_values_in_reasons_are_escaped_and_bounded_and_documents_are_never_shown() -> None:
    text = shown("\x1b[31mred\r\nforged line\ud800" + "x" * 10_000)
    assert "\x1b" not in text and "\r" not in text and "\n" not in text and "\ud800" not in text
    assert text.startswith("'\\x1b[31mred\\r\\nforged line\\ud800") and text.endswith("...") and len(text) < 100
    assert (shown(2**70), shown(10**5000), shown(None), shown(4096)) == (
        "<an integer of 71 bits>",
        "<an integer of 16,610 bits>",
        "None",
        "4096",
    )
    assert (shown({"key": "images/Kaki/secret.jpg"}), shown(["images/Kaki/secret.jpg"])) == (
        "<an object>",
        "<an array>",
    )


def test_a_malformed_message_is_logged_once_with_its_id_reason_and_length_never_its_body(caplog) -> None:
    from fruits.notifications.feed import NotificationFeed

    feed = NotificationFeed.__new__(NotificationFeed)  # _take alone: no queue, no checkpoint
    feed.location, feed.counts, feed.dead_letter_queue = (
        WHERE,
        dict.fromkeys(["messages", "ignored", "test_events", "malformed"], 0),
        False,
    )
    feed._malformed_seen, feed._to_delete = {}, []
    body = lam(key="images/K/\x1b]0;pwned\x07" + "y" * 5000 + ".jpg", size="big")
    nested = sns({**LAMBDA, "bucket": {"owner": "someone", "key": "images/K/private-name.jpg"}})
    with caplog.at_level(logging.WARNING, logger="fruits.notifications"):
        for receipt in ("r1", "r2"):  # a redelivery
            feed._take({"MessageId": "m-1", "ReceiptHandle": receipt, "Body": body})
        feed._take({"MessageId": "m-2", "ReceiptHandle": "r3", "Body": nested})
    assert feed.counts["malformed"] == 2 and feed.counts["messages"] == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"malformed message m-1 skipped (bad object size 'big'; a body of {len(body)} characters)",
        f"malformed message m-2 skipped (bad bucket name <an object>; a body of {len(nested)} characters)",
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/images/", ("s3", "b", "images/")),
        ("s3a://b/images", ("s3a", "b", "images/")),
        ("s3://b", ("s3", "b", "")),
    ],
)
def test_location(uri, expected) -> None:
    where = Location.parse(uri)
    assert (where.scheme, where.bucket, where.prefix) == expected
    assert where.path("images/K/x.jpg") == f"{expected[0]}://b/images/K/x.jpg"


def test_a_local_source_is_refused() -> None:
    with pytest.raises(FruitsError, match="s3://BUCKET/PREFIX/"):
        Location.parse("/data/landing")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forged_bodies_end_as_their_construction_says(seed: int) -> None:
    """A few hundred forged bodies per seed (tests/forged_notifications.py): never an exception, and
    each one malformed, ignored, a test event, or the announcement of exactly the (key, ETag) it was built with."""
    real = Real("images/Kaki/a.jpg", ETAG, 4096)
    forger = Forger(seed, "fruits-bucket", "images/", [real])
    forged = forger.bodies(400)
    assert {f.expect for f in forged} == {MALFORMED, IGNORED, TEST_EVENT, ANNOUNCES}
    wrong = []
    for f in forged:
        parsed = parse_body(f.body, WHERE)
        outcome = (
            MALFORMED
            if parsed.malformed
            else IGNORED
            if parsed.ignored
            else TEST_EVENT
            if parsed.test_event
            else ANNOUNCES
        )
        announced = [(u.key, u.etag) for u in parsed.uploads]
        if outcome != f.expect or announced != ([f.announces] if f.expect == ANNOUNCES else []):
            wrong.append((f.mutation, f.expect, outcome, parsed.malformed))
    assert not wrong
    for body in forger.real_bodies(real):  # and the real bodies the mutations start from
        assert [(u.key, u.etag) for u in parse_body(body, WHERE).uploads] == [("images/Kaki/a.jpg", ETAG)]


def test_an_unforeseen_exception_while_parsing_is_one_malformed_message(monkeypatch) -> None:
    """A bug of ours injected on purpose in one check: the message (or record) is malformed, nothing raises."""
    from fruits.notifications import messages

    def broken(value):
        if value == 13:
            raise ZeroDivisionError("a bug")
        return value

    monkeypatch.setattr(messages, "checked_size", broken)
    assert parse_body(lam(size=13), WHERE).malformed == "cannot be parsed: ZeroDivisionError"
    event = s3_event(size=13)
    event["Records"] += s3_event(size=12)["Records"]
    parsed = parse_body(json.dumps(event), WHERE)
    assert parsed.malformed == "record: cannot be parsed: ZeroDivisionError" and len(parsed.uploads) == 1
