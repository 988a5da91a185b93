"""The hygiene's parts on their own: token buckets, CSRF tokens, the app's secret, the CSP."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.security import CsrfTokens, RateLimiter, app_secret, content_security_policy, same_origin
from fruits.exceptions import FruitsError
from fruits.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_allows_its_burst_then_one_per_interval_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=3, clock=clock)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(20.0)  # 3 a minute: the next token in 20 s
    assert limiter.wait("b") == 0.0  # another client has its own bucket
    clock.now += 10
    assert limiter.wait("a") == pytest.approx(10.0)  # refused requests take nothing
    clock.now += 10
    assert limiter.wait("a") == 0.0 and limiter.wait("a") > 0
    clock.now += 3600  # a long pause refills to the burst, never beyond
    assert [limiter.wait("a") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_a_flood_of_new_clients_keeps_a_bounded_number_of_buckets() -> None:
    limiter = RateLimiter(per_minute=1, clock=Clock(), max_clients=100)
    for n in range(1000):
        limiter.wait(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter._buckets) == 100
    assert limiter.wait("10.0.3.231") > 0  # the most recent are kept (and still limited)
    assert limiter.wait("10.0.0.0") == 0.0  # the oldest were forgotten


def test_a_csrf_token_is_valid_only_with_the_cookie_it_was_made_for() -> None:
    tokens = CsrfTokens(b"k" * 32)
    cookie, other = tokens.new_cookie(), tokens.new_cookie()
    assert cookie != other and CsrfTokens.is_cookie(cookie)
    token = tokens.token_for(cookie)
    assert tokens.valid(cookie, token)
    assert not tokens.valid(other, token)
    assert not tokens.valid(cookie, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not tokens.valid(cookie, None) and not tokens.valid(None, token) and not tokens.valid("short", token)
    assert not CsrfTokens(b"another secret of 32 bytes......").valid(cookie, token)  # signed: not forgeable


def test_origins_compare_by_host_and_port() -> None:
    assert same_origin("https://fruits.example", "fruits.example")  # TLS ended at a proxy
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("https://evil.example", "fruits.example")
    assert same_origin(None, "fruits.example")  # no Origin: the token decides


def test_the_secret_is_required_on_s3_and_generated_once_per_state_dir_locally(tmp_path: Path) -> None:
    with pytest.raises(FruitsError, match="FRUITS_APP_SECRET must be set"):
        app_secret(Settings.load(env={}, state_dir=tmp_path, source="s3://bucket/images/"))
    with pytest.raises(FruitsError, match="at least 32 characters"):
        app_secret(Settings.load(env={"FRUITS_APP_SECRET": "hunter2"}, state_dir=tmp_path))
    given = "s" * 40
    assert app_secret(Settings.load(env={"FRUITS_APP_SECRET": given}, source="s3://bucket/images/")) == given.encode()
    assert given not in repr(Settings.load(env={"FRUITS_APP_SECRET": given}))  # never printed

    first = app_secret(Settings.load(env={}, state_dir=tmp_path / "one"))
    assert len(first) == 64 and app_secret(Settings.load(env={}, state_dir=tmp_path / "one")) == first
    assert stat.S_IMODE((tmp_path / "one" / "app-secret").stat().st_mode) == 0o600
    assert app_secret(Settings.load(env={}, state_dir=tmp_path / "two")) != first


def test_the_content_security_policy_allows_no_inline_code_and_names_the_upload_endpoint() -> None:
    local = dict(part.split(" ", 1) for part in content_security_policy().split("; "))
    assert local["default-src"] == local["script-src"] == local["style-src"] == "'self'"
    assert local["frame-ancestors"] == "'none'" and "unsafe" not in content_security_policy()
    s3 = dict(
        part.split(" ", 1) for part in content_security_policy(("https://b.s3.eu-west-3.amazonaws.com",)).split("; ")
    )
    assert s3["form-action"] == s3["connect-src"] == "'self' https://b.s3.eu-west-3.amazonaws.com"
    assert s3["script-src"] == "'self'"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITS_APP_UPLOADS_PER_MINUTE": "0"}, "rate limits"),
        ({"FRUITS_APP_UPLOAD_EXPIRY": "2h"}, "between 1s and 1h"),
        ({"FRUITS_APP_PRIVATE_RETENTION": "forever"}, "--retention must be an interval"),
    ],
)
def test_bad_app_settings_are_one_line_errors(env: dict, message: str) -> None:
    with pytest.raises(FruitsError, match=message):
        Settings.load(env=env)
