"""Votes and the curator's queue over HTTP, on a real uvicorn server: "Is it right?" into the vote log (a Delta
table read back with delta-rs alone), one vote per browser and upload, names normalised; /curate refused
without its login, its decisions recorded with who and when.

Here the test writes each answer into the real answers store, as the stream does (fruits.answers); the
stream and the refit behind the same endpoints are tests/app/test_labels_learnt.py.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from demo.visitors import Visitor
from fruits.answers import ANSWERED, REJECTED, Answer, open_answer_store
from fruits.appuploads import new_upload_id
from fruits.labels import AGREED, DISPUTED, LabelStore
from support import table_rows

MODEL = ("fruits-pca", "7")
CURATOR, TOKEN = "ana", "c" * 40


def answered(upload_id: str, **changes) -> Answer:
    values = dict(
        answered_at=time.time(),
        uploaded_at=time.time() - 1,
        consent=True,
        prediction="Banana",
        confidence=0.93,
        is_novel=False,
        top=(("Banana", 0.93), ("Limes", 0.04), ("Kumquats", 0.02)),
        model_name=MODEL[0],
        model_version=MODEL[1],
    )
    return Answer(upload_id, ANSWERED, **{**values, **changes})


@pytest.fixture
def settings_with_curators(local_settings):
    return local_settings.replace(curators=f"{CURATOR}:{TOKEN}", app_votes_per_minute=5)


@pytest.fixture
def app_url(settings_with_curators, known, serve) -> str:
    return serve(
        settings_with_curators,
        known_maps=lambda name, version: known if (name, version) == MODEL else None,
        ops_numbers=lambda: {"files": 0},
    )


def stored(settings, *answers: Answer) -> list[str]:
    open_answer_store(settings).put_many(answers)
    return [a.upload_id for a in answers]


def test_a_vote_is_recorded_once_per_browser_and_upload_under_a_pseudonym(app_url, settings_with_curators) -> None:
    [upload_id] = stored(settings_with_curators, answered(new_upload_id()))
    view = Visitor(app_url).get(f"/api/answers/{upload_id}").json()
    assert view["vote"] == {"asks": True, "agree": True, "names": ["Banana", "Kumquats", "Limes", "Pepper Red"]}
    first, second = Visitor(app_url), Visitor(app_url)
    yes = first.post(f"/api/answers/{upload_id}/vote", json={"agrees": True})
    assert yes.status_code == 200 and yes.json()["label"] == "Banana"
    changed = first.post(f"/api/answers/{upload_id}/vote", json={"label": "  kumquat "})  # typo, case, spaces
    assert changed.json()["label"] == "Kumquats" and changed.json()["known"] is True
    new = second.post(f"/api/answers/{upload_id}/vote", json={"label": "Passion fruit"})
    assert new.json() | {"message": ""} == {"recorded": True, "label": "Passion Fruit", "known": False, "message": ""}

    rows = sorted(table_rows(settings_with_curators.labels_uri), key=lambda r: r.voted_at)  # read with delta-rs alone
    assert [(r.upload_id, r.label, r.model_version) for r in rows] == [
        (upload_id, "Banana", "7"),
        (upload_id, "Kumquats", "7"),
        (upload_id, "Passion Fruit", "7"),
    ]
    clients = [r.client for r in rows]
    assert clients[0] == clients[1] != clients[2] and all(re.fullmatch(r"[0-9a-f]{32}", c) for c in clients)
    assert first.http.cookies["fruits_csrf"] not in clients and first.token not in clients  # a pseudonym only
    assert "127.0.0.1" not in str([r.__dict__ for r in rows])
    tally = LabelStore(settings_with_curators).verdicts()[upload_id].tally
    assert sorted(tally) == [("Kumquats", 1), ("Passion Fruit", 1)]  # the later vote replaced "Banana"


def test_votes_are_refused_without_csrf_on_private_or_unanswered_photos_and_for_bad_names(
    app_url, settings_with_curators
) -> None:
    ok, private, rejected = stored(
        settings_with_curators,
        answered(new_upload_id()),
        answered(new_upload_id(), consent=False),
        Answer(new_upload_id(), REJECTED, answered_at=time.time(), reason="corrupt"),
    )
    visitor = Visitor(app_url)
    assert visitor.get(f"/api/answers/{private}").json()["vote"]["asks"] is False
    assert visitor.post(f"/api/answers/{ok}/vote", json={"agrees": True}, token=None).status_code == 403
    assert (
        visitor.post(f"/api/answers/{ok}/vote", json={"agrees": True}, origin="http://evil.example").status_code == 403
    )
    assert visitor.post(f"/api/answers/{private}/vote", json={"agrees": True}).json()["reason"] == "private"
    assert visitor.post(f"/api/answers/{rejected}/vote", json={"agrees": True}).json()["reason"] == "not_answered"
    assert visitor.post(f"/api/answers/{new_upload_id()}/vote", json={"agrees": True}).status_code == 404
    bad = visitor.post(f"/api/answers/{ok}/vote", json={"label": "<img src=x>"})
    assert (bad.status_code, bad.json()["reason"]) == (400, "bad_name")
    assert visitor.post(f"/api/answers/{ok}/vote", json={"label": "Limes"}).status_code == 200  # the 5th this minute
    assert visitor.post(f"/api/answers/{ok}/vote", json={"label": "Lime"}).status_code == 429  # 5 votes a minute
    assert [r.label for r in table_rows(settings_with_curators.labels_uri)] == ["Limes"]  # nothing refused recorded


def test_curate_is_refused_when_no_curator_is_configured(local_settings, serve) -> None:
    url = serve(local_settings, ops_numbers=lambda: {})
    for path in ("/curate", "/api/curate"):
        refused = requests.get(url + path, auth=(CURATOR, TOKEN), timeout=30)
        assert (refused.status_code, refused.json()["reason"]) == (403, "curation_off")


def test_curate_needs_the_login_and_records_who_decided_what_reversibly(app_url, settings_with_curators) -> None:
    uploads = stored(settings_with_curators, *(answered(new_upload_id(), is_novel=True) for _ in range(3)))
    for path in ("/curate", "/api/curate"):
        for auth in (None, (CURATOR, "x" * 40), ("bob", TOKEN)):
            refused = requests.get(app_url + path, auth=auth, timeout=30)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    clients = [Visitor(app_url) for _ in range(3)]
    for visitor, name in zip(clients, ["Pasion Fruit", "Passion fruit", "Passion Fruit"], strict=False):
        assert visitor.post(f"/api/answers/{uploads[0]}/vote", json={"label": name}).status_code == 200
    for visitor, name in zip(clients, ["Guava", "Orange"], strict=False):
        visitor.post(f"/api/answers/{uploads[1]}/vote", json={"label": name})

    curator = Visitor(app_url)
    curator.http.auth = (CURATOR, TOKEN)
    page = curator.get("/curate")
    assert page.status_code == 200 and "Logged in as <strong>ana</strong>" in page.text
    queue = curator.get("/api/curate").json()
    assert [d["upload_id"] for d in queue["disputed"]] == sorted(uploads[:2])  # 2 of 3 is not more than 2/3
    assert {n["name"] for n in queue["names"]} == {"Pasion Fruit", "Passion Fruit", "Guava", "Orange"}
    assert "Banana" in queue["known"]

    assert (
        curator.post(
            "/api/curate/decisions",
            json={"subject": "name", "key": "Pasion Fruit", "action": "merge", "label": "Passion Fruit"},
            token=None,
        ).status_code
        == 403
    )
    merged = curator.post(
        "/api/curate/decisions",
        json={"subject": "name", "key": "Pasion Fruit", "action": "merge", "label": "passion fruit"},
    )
    assert merged.status_code == 201 and merged.json()["label"] == "Passion Fruit"
    curator.post(
        "/api/curate/decisions", json={"subject": "upload", "key": uploads[1], "action": "accept", "label": "guava"}
    )
    found = LabelStore(settings_with_curators).verdicts()
    assert (found[uploads[0]].status, found[uploads[0]].label) == (AGREED, "Passion Fruit")
    assert found[uploads[1]].label == "Guava"
    curator.post("/api/curate/decisions", json={"subject": "name", "key": "Pasion Fruit", "action": "reopen"})
    assert LabelStore(settings_with_curators).verdicts()[uploads[0]].status == DISPUTED  # reversed
    decisions = sorted(table_rows(settings_with_curators.curation_uri), key=lambda d: d.decided_at)
    assert [(d.curator, d.subject, d.action) for d in decisions] == [
        (CURATOR, "name", "merge"),
        (CURATOR, "upload", "accept"),
        (CURATOR, "name", "reopen"),
    ]
    assert all(d.decided_at is not None for d in decisions)
    bad = curator.post(
        "/api/curate/decisions", json={"subject": "upload", "key": "../etc", "action": "accept", "label": "Guava"}
    )
    assert bad.status_code == 400
