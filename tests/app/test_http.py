"""The app over HTTP, on a real uvicorn server, locally: uploads land where the stream reads, answers are read
by id, and a public page's hygiene holds (ids, EXIF, CSRF, size and rate limits, headers, logs).

Here the test writes each answer into the real answers store, as the stream does (its contract:
fruits.answers); tests/app/test_journeys_*.py run the real stream behind a real browser. The known
map is a fruits.knownmap.KnownMap of real subset/ images.
"""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from app_support import GPS_MAKE, with_gps
from PIL import Image

from app.images import MAP_MARGIN, MAP_PX
from demo.visitors import Visitor
from fruits.answers import ANSWERED, REJECTED, Answer, open_answer_store

MODEL = ("fruits-pca", "7")
SECURITY_HEADERS = {"content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"}


def answered(upload_id: str, **changes) -> Answer:
    values = dict(
        answered_at=time.time(),
        uploaded_at=time.time() - 1.25,
        consent=True,
        prediction="Banana",
        confidence=0.93,
        is_novel=False,
        top=(("Banana", 0.93), ("Limes", 0.04), ("Kumquats", 0.02)),
        neighbours=(1, 0, 4),
        map_xy=(0.15, 0.2),
        model_name=MODEL[0],
        model_version=MODEL[1],
    )
    return Answer(upload_id, ANSWERED, **{**values, **changes})


@pytest.fixture
def app_url(local_settings, known, serve) -> str:
    return serve(
        local_settings,
        known_maps=lambda name, version: known if (name, version) == MODEL else None,
        ops_numbers=lambda: {"files": 0},
    )


def banana(data_dir: Path) -> Path:
    return sorted((data_dir / "test" / "Banana").glob("*.jpg"))[0]


def test_an_upload_lands_atomically_under_its_own_id_and_its_answer_is_read_by_id(
    app_url, local_settings, known, data_dir
) -> None:
    visitor = Visitor(app_url)
    photo = banana(data_dir).read_bytes()
    sent = visitor.upload(photo, consent=True)
    assert sent.status_code == 201, sent.text
    upload_id = sent.json()["upload_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", upload_id) and sent.json()["page"] == f"/u/{upload_id}"
    landing = Path(local_settings.source_uri)
    consented = landing / "app" / "consented"
    assert [p.name for p in consented.iterdir()] == [f"{upload_id}.jpg"]  # no temporary file left behind
    assert (consented / f"{upload_id}.jpg").read_bytes() == photo
    private = visitor.upload(photo).json()["upload_id"]
    assert (landing / "app" / "private" / f"{private}.jpg").is_file() and private != upload_id

    assert visitor.get(f"/api/answers/{upload_id}").json()["status"] == "pending"
    assert visitor.get(f"/u/{upload_id}").status_code == 200

    store = open_answer_store(local_settings)
    store.put_many([answered(upload_id)])  # what the stream writes for it
    view = visitor.get(f"/api/answers/{upload_id}").json()
    assert (view["status"], view["title"], view["message"], view["is_novel"]) == (ANSWERED, "Banana", "93% sure", False)
    assert [(t["name"], t["percent"]) for t in view["top"]] == [("Banana", "93%"), ("Limes", "4%"), ("Kumquats", "2%")]
    assert view["seconds"] == pytest.approx(1.25, abs=0.01) and view["model"] == "fruits-pca v7"
    assert [n["label"] for n in view["neighbours"]] == ["Banana", "Banana", "Kumquats"]  # known.labels[1, 0, 4]
    for neighbour, index in zip(view["neighbours"], (1, 0, 4), strict=True):
        assert neighbour["thumbnail"] == f"/known/fruits-pca/7/{index}.jpg"
        thumb = Image.open(io.BytesIO(visitor.get(neighbour["thumbnail"]).content))
        source = Image.open(known.paths[index].removeprefix("file:")).convert("RGB").resize(thumb.size)
        assert thumb.format == "JPEG" and thumb.size == (224, 224)  # what the model sees
        assert np.abs(np.asarray(thumb, float) - np.asarray(source, float)).mean() < 8  # that very training image

    svg = visitor.get(view["map"]).text
    assert svg.count('r="3"') == len(known.labels)
    span = MAP_PX - 2 * MAP_MARGIN  # the upload's cross-hair where its map_xy (0.15, 0.2) says, y pointing up
    assert f'cx="{MAP_MARGIN + 0.15 * span:.1f}" cy="{MAP_MARGIN + 0.8 * span:.1f}" r="11"' in svg
    assert all(f">{name}</text>" in svg for name in set(known.labels))

    novel = visitor.upload(photo).json()["upload_id"]
    rejected = visitor.upload(photo).json()["upload_id"]
    store.put_many(
        [
            answered(novel, is_novel=True, prediction="Limes", confidence=0.31),
            Answer(rejected, REJECTED, answered_at=time.time(), reason="truncated", detail="image file is truncated"),
        ]
    )
    view = visitor.get(f"/api/answers/{novel}").json()
    assert view["title"] == "A fruit I don't know yet" and "Limes (31%)" in view["message"]
    view = visitor.get(f"/api/answers/{rejected}").json()
    assert (view["status"], view["reason"]) == (REJECTED, "truncated") and "incomplete" in view["message"]
    assert "top" not in view and "neighbours" not in view


def test_unknown_and_malformed_ids_look_the_same_and_nothing_lists_uploads(app_url, data_dir) -> None:
    visitor = Visitor(app_url)
    upload_id = visitor.upload(banana(data_dir).read_bytes()).json()["upload_id"]
    missing = [
        visitor.get(f"/api/answers/{other}")
        for other in ("0" * 32, "xyz", upload_id.upper(), upload_id + "0", f"{upload_id[:-1]}%2F", "-1")
    ]
    assert {(r.status_code, r.text) for r in missing} == {
        (404, '{"reason":"not_found","message":"There is no such photo here."}')
    }
    pages = [visitor.get(f"/u/{other}") for other in ("0" * 32, "xyz", upload_id.upper())]
    assert {r.status_code for r in pages} == {404} and len({r.text for r in pages}) == 1
    for path in (
        "/api/answers",
        "/api/answers/",
        "/api/uploads",
        "/u/",
        "/static/",
        "/known/",
        "/landing/",
        f"/app/private/{upload_id}.jpg",
        f"/static/../landing/app/private/{upload_id}.jpg",
        f"/api/answers/{'0' * 32}/photo.jpg",
        "/docs",
        "/openapi.json",
    ):
        response = visitor.get(path)
        assert response.status_code in (404, 405), path
        assert upload_id not in response.text


def test_photos_come_back_only_as_reencoded_thumbnails_without_exif_and_nothing_personal_is_logged(
    app_url, local_settings, data_dir, caplog
) -> None:
    raw = with_gps(banana(data_dir))
    caplog.set_level(logging.DEBUG)  # everything the server logs, at its most talkative
    visitor = Visitor(app_url)
    upload_id = visitor.upload(raw).json()["upload_id"]
    assert (Path(local_settings.source_uri) / "app" / "private" / f"{upload_id}.jpg").read_bytes() == raw

    served = visitor.get(f"/api/answers/{upload_id}/photo.jpg")
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(served.content))
    assert thumb.format == "JPEG" and not thumb.getexif() and "exif" not in thumb.info
    assert b"Exif" not in served.content and GPS_MAKE.encode() not in served.content
    assert served.content != raw and thumb.size == (224, 224)
    assert not any(
        raw in r.content for r in (served, visitor.get(f"/api/answers/{upload_id}"), visitor.get(f"/u/{upload_id}"))
    )

    logged = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith("urllib3")
    )  # the test's own HTTP client
    assert "upload" in logged and upload_id in logged  # the app did log the requests...
    assert "127.0.0.1" not in logged and GPS_MAKE not in logged and "48.0" not in logged  # ...with nothing personal
    assert "GET /api/answers" in logged  # the access log, without addresses


def test_every_post_needs_this_pages_token_and_comes_from_this_host(app_url, local_settings, data_dir) -> None:
    visitor, stranger = Visitor(app_url), Visitor(app_url)
    photo = banana(data_dir).read_bytes()
    refused = [
        visitor.upload(photo, token=None),
        visitor.upload(photo, token="0" * 64),
        visitor.upload(photo, token=stranger.token),  # a valid token, for another browser's cookie
        visitor.upload(photo, origin="https://evil.example"),
        requests.post(
            app_url + "/api/uploads",
            files={"photo": ("p.jpg", photo)},
            timeout=30,
            headers={"X-CSRF-Token": visitor.token},
        ),
    ]  # the token without its cookie
    assert [r.status_code for r in refused] == [403] * 5
    assert all(r.json()["reason"] == "csrf" for r in refused)
    assert not (Path(local_settings.source_uri) / "app").exists()  # nothing landed
    assert visitor.upload(photo, origin=None).status_code == 201  # no Origin header: the token decides
    assert visitor.upload(photo).status_code == 201
    presign = visitor.post("/api/uploads/presign", json={"content_type": "image/jpeg"})
    assert presign.status_code == 404  # a local folder takes uploads through the app only


def test_request_size_limits_refuse_big_bodies_before_and_while_reading(
    tmp_path, local_settings, serve, data_dir
) -> None:
    url = serve(local_settings.replace(max_image_bytes=100_000), known_maps=lambda *_: None)
    visitor = Visitor(url)
    jpeg = banana(data_dir).read_bytes()
    big = jpeg + b"\0" * 200_000
    declared = visitor.upload(big)
    assert declared.status_code == 413 and declared.json()["reason"] == "too_large"

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="photo"; filename="p.jpg"\r\n\r\n\xff\xd8\xff'
        for _ in range(60):
            yield b"x" * 10_000

    chunked = visitor.post("/api/uploads", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413  # no Content-Length: refused once 164 KB passed
    over = visitor.upload(jpeg + b"\0" * (100_001 - len(jpeg)))  # under the body limit, over the image limit
    assert over.status_code == 413 and "too large" in over.json()["message"]
    assert (
        visitor.post("/api/uploads/presign", json={"content_type": "image/jpeg", "pad": "x" * 20_000}).status_code
        == 413
    )
    text = visitor.upload(b"shopping list: kumquats, limes\n" * 10, name="list.jpg")
    assert (text.status_code, text.json()["reason"]) == (415, "not_an_image")
    assert "not an image" in text.json()["message"]
    assert visitor.upload(b"").status_code == 400
    assert visitor.upload(jpeg).status_code == 201
    assert len(list((tmp_path / "landing").rglob("*.jpg"))) == 1  # only the photo


def test_rate_limits_count_each_client_alone(local_settings, serve, data_dir) -> None:
    url = serve(
        local_settings.replace(app_uploads_per_minute=2, app_requests_per_minute=20), known_maps=lambda *_: None
    )
    photo = banana(data_dir).read_bytes()
    first = Visitor(url)
    assert [first.upload(photo).status_code for _ in range(3)] == [201, 201, 429]
    limited = first.upload(photo)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 30
    assert "Too many photos" in limited.json()["message"]
    other = Visitor(url, address="127.0.0.2")  # another client: a bucket of its own
    assert other.upload(photo).status_code == 201
    statuses = [other.get(f"/api/answers/{'0' * 32}").status_code for _ in range(25)]
    assert 429 in statuses and statuses[0] == 404  # polls are limited too, at their own rate


def test_every_response_carries_the_security_headers_and_no_server_banner(app_url, data_dir) -> None:
    visitor = Visitor(app_url)
    upload_id = visitor.upload(banana(data_dir).read_bytes()).json()["upload_id"]
    responses = [
        visitor.get("/"),
        visitor.get("/ops"),
        visitor.get("/static/app.js"),
        visitor.get("/static/app.css"),
        visitor.get(f"/api/answers/{upload_id}"),
        visitor.get(f"/api/answers/{upload_id}/photo.jpg"),
        visitor.get("/nowhere"),
        visitor.get(f"/api/answers/{'0' * 32}"),
        visitor.upload(b"x", token=None),
        visitor.upload(b"\xff\xd8\xff" + b"\0" * (70 * 1024 * 1024)),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 200, 404, 404, 403, 413]
    for response in responses:
        assert set(response.headers.keys()) >= SECURITY_HEADERS, response.url
        assert "server" not in response.headers
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    cookie = requests.get(app_url + "/", timeout=30).headers["set-cookie"]  # a first visit
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    for page in responses[:2]:  # the CSP forbids inline code: the pages have none
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text) and " style=" not in page.text
        assert not re.search(r"\son[a-z]+=", page.text)


def test_ops_passes_the_stream_numbers_through_and_says_when_there_are_none(local_settings, serve) -> None:
    numbers = {"files": 12, "answer_latency_p95_s": 1.9, "class_mix": {"Banana": 12}}
    visitor = Visitor(serve(local_settings, known_maps=lambda *_: None, ops_numbers=lambda: numbers))
    served = visitor.get("/api/ops")
    assert served.headers["cache-control"] == "no-store"
    assert {k: v for k, v in served.json().items() if k != "generated_at"} == numbers
    assert time.time() - served.json()["generated_at"] < 60

    def no_stream() -> dict:
        raise FileNotFoundError("no progress under the checkpoint")

    silent = Visitor(serve(local_settings, known_maps=lambda *_: None, ops_numbers=no_stream)).get("/api/ops")
    assert (silent.status_code, silent.json()["reason"]) == (503, "no_stream")
