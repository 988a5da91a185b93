"""fruits.labels: names, the agreement rule, the curator's decisions, and the two Delta tables (delta-rs, tmp dirs)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from fruits.exceptions import FruitsError
from fruits.labels import (
    ACCEPT,
    ACCEPTED,
    AGREED,
    DISPUTED,
    MERGE,
    NAME,
    REJECT,
    REJECTED,
    REOPEN,
    UPLOAD,
    Decision,
    LabelStore,
    Vote,
    accepted_names,
    canonical_name,
    decision,
    select_for_refit,
    training_labels,
    verdicts,
)
from fruits.settings import Settings
from support import table_rows

KNOWN = ["Banana", "Plum", "Pepper Red", "Cherry 1"]
T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def vote(upload: str, client: str, label: str, minute: int = 0) -> Vote:
    return Vote(upload, label, client, at(minute))


def ruling(subject: str, key: str, action: str, label: str | None = None, minute: int = 100) -> Decision:
    return Decision(at(minute), "ana", subject, key, action, label)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("banana", "Banana"),
        ("  BANANA ", "Banana"),
        ("Bananna", "Banana"),
        ("pepper   red", "Pepper Red"),
        ("Péppér Red", "Pepper Red"),
        ("plum", "Plum"),
        ("plum 2", "Plum 2"),
        ("passion fruit", "Passion Fruit"),
        ("cherry rainier", "Cherry Rainier"),
    ],
)
def test_names_are_normalised_and_typos_meet_the_known_name(typed: str, meant: str) -> None:
    assert canonical_name(typed, KNOWN) == meant


@pytest.mark.parametrize("bad", ["", "   ", "<script>", "x" * 41, "42", "a/b"])
def test_what_cannot_be_a_name_is_refused(bad: str) -> None:
    with pytest.raises(FruitsError):
        canonical_name(bad, KNOWN)


def test_two_clients_who_agree_make_a_label_one_client_never_does() -> None:
    found = verdicts(
        [
            vote("u1", "a", "Guava"),
            vote("u1", "b", "Guava"),
            vote("u2", "a", "Guava"),
            vote("u2", "a", "Guava", 1),
        ],  # one client twice
        [],
        {"u1", "u2"},
    )
    assert (found["u1"].status, found["u1"].label) == (AGREED, "Guava")
    assert found["u2"].status == DISPUTED and found["u2"].tally == (("Guava", 1),)


def test_more_than_two_thirds_must_agree() -> None:
    two_of_three = [vote("u", c, "Guava") for c in "ab"] + [vote("u", "c", "Banana")]
    three_of_four = [*two_of_three, vote("u", "d", "Guava")]
    assert verdicts(two_of_three, [], {"u"})["u"].status == DISPUTED  # 2/3 is not MORE than 2/3
    assert verdicts(three_of_four, [], {"u"})["u"].label == "Guava"
    assert verdicts(two_of_three, [], {"u"}, share=0.6)["u"].label == "Guava"  # the numbers are settings
    assert verdicts(two_of_three, [], {"u"}, min_clients=3)["u"].status == DISPUTED


def test_a_later_vote_replaces_the_earlier_one_of_the_same_client() -> None:
    votes = [vote("u", "a", "Banana", 0), vote("u", "b", "Guava", 1), vote("u", "a", "Guava", 2)]
    assert verdicts(votes, [], {"u"})["u"].tally == (("Guava", 2),)
    assert verdicts(list(reversed(votes)), [], {"u"})["u"].label == "Guava"  # order of the log does not matter


def test_uploads_without_consent_never_train() -> None:
    found = verdicts([vote("u", c, "Guava") for c in "abc"], [ruling(UPLOAD, "u", ACCEPT, "Guava")], set())
    assert found["u"].status == REJECTED and training_labels(found) == {}


def test_the_curator_overrides_and_is_reversible() -> None:
    votes = [vote("agreed", c, "Guava") for c in "abc"] + [vote("split", "a", "Plum"), vote("split", "b", "Guava")]
    decisions = [ruling(UPLOAD, "agreed", REJECT, minute=10), ruling(UPLOAD, "split", ACCEPT, "Plum", minute=11)]
    found = verdicts(votes, decisions, {"agreed", "split"})
    assert found["agreed"].status == REJECTED and (found["split"].status, found["split"].label) == (ACCEPTED, "Plum")
    reopened = verdicts(votes, [*decisions, ruling(UPLOAD, "agreed", REOPEN, minute=12)], {"agreed", "split"})
    assert reopened["agreed"].label == "Guava"  # back to the community's agreement


def test_merged_spellings_count_together_and_rejected_names_never_count() -> None:
    votes = [
        vote("u", "a", "Pasion Fruit"),
        vote("u", "b", "Passion Fruit"),
        vote("v", "a", "Poop"),
        vote("v", "b", "Poop"),
    ]
    assert verdicts(votes, [], {"u", "v"})["u"].status == DISPUTED
    decisions = [ruling(NAME, "Pasion Fruit", MERGE, "Passion Fruit"), ruling(NAME, "Poop", REJECT)]
    found = verdicts(votes, decisions, {"u", "v"})
    assert training_labels(found) == {"u": "Passion Fruit"}
    assert accepted_names(decisions) == {"Passion Fruit"}


def test_decisions_are_checked() -> None:
    assert decision("ana", UPLOAD, "u", ACCEPT, "Guava").label == "Guava"
    for bad in (
        (UPLOAD, "u", MERGE, "x"),
        (UPLOAD, "u", ACCEPT, None),
        (NAME, "n", MERGE, None),
        ("x", "u", ACCEPT, "a"),
    ):
        with pytest.raises(FruitsError):
            decision("ana", *bad)
    with pytest.raises(FruitsError):
        decision("  ", UPLOAD, "u", REJECT)


def test_votes_and_decisions_are_append_only_delta_tables(tmp_path) -> None:
    settings = Settings.load(state_dir=tmp_path / "state")
    store = LabelStore(settings)
    assert store.votes() == [] and store.decisions() == []
    store.add_votes([vote("u", "a", "Guava"), vote("u", "b", "Guava")])
    store.add_votes([vote("u", "b", "Plum", 5)])
    store.add_decisions([ruling(NAME, "Plum", REJECT)])
    rows = table_rows(settings.labels_uri)  # read with delta-rs alone
    assert sorted((r.client, r.label) for r in rows) == [("a", "Guava"), ("b", "Guava"), ("b", "Plum")]
    assert [r.action for r in table_rows(settings.curation_uri)] == [REJECT]
    found = store.verdicts()
    assert found["u"].status == DISPUTED and found["u"].tally == (("Guava", 1),)  # b's latest vote: a rejected name


def test_a_new_class_enters_with_enough_images_and_each_class_is_split_by_upload() -> None:
    labels = (
        {f"g{i}": "Guava" for i in range(5)}
        | {f"o{i}": "Orange" for i in range(4)}
        | {f"p{i}": "Plum 2" for i in range(10)}
        | {f"b{i}": "Banana" for i in range(5)}
    )
    chosen = select_for_refit(labels, {"Banana"}, min_images=5, holdout_share=0.2)
    assert chosen.waiting == {"Orange": 4}  # a new name short of images waits
    held = Counter(chosen.held_out.values())
    assert held == {"Plum 2": 2, "Guava": 1, "Banana": 1}  # floor(n * 0.2)
    by_content = select_for_refit(
        labels, {"Banana"}, min_images=5, holdout_share=0.2, order={"g3": "0", "p7": "0", "p8": "1"}
    )
    assert {"g3", "p7", "p8"} <= set(by_content.held_out)  # held out first: the order says which
    assert set(chosen.train) | set(chosen.held_out) == set(labels) - {f"o{i}" for i in range(4)}
    assert not set(chosen.train) & set(chosen.held_out)
    again = select_for_refit(dict(reversed(labels.items())), {"Banana"}, min_images=5, holdout_share=0.2)
    assert again == chosen  # the split depends on the uploads, not on the order


def test_the_tables_live_on_s3_by_uri_too(tmp_path, moto_server) -> None:
    import boto3

    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket="fruits-labels", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    settings = Settings.load(
        state_dir=tmp_path / "state",
        s3_endpoint_url=moto_server,
        labels="s3://fruits-labels/lake/labels",
        curation="s3a://fruits-labels/lake/curation",
    )
    store = LabelStore(settings)
    store.add_votes([vote("u", "a", "Guava"), vote("u", "b", "Guava")])
    store.add_decisions([ruling(UPLOAD, "u", REJECT)])
    assert sorted(v.client for v in store.votes()) == ["a", "b"]
    assert store.verdicts()["u"].status == REJECTED
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").list_objects_v2(
            Bucket="fruits-labels"
        )["Contents"]
    ]
    assert any(k.startswith("lake/labels/_delta_log/") for k in keys)
    assert any(k.startswith("lake/curation/_delta_log/") for k in keys)
