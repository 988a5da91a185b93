"""A public page's hygiene: CSRF tokens, per-client rate limits, request size limits, security headers,
and an access log that holds no personal data (no IP, no user agent, no query string).

CSRF: signed double submit. Each browser gets a random cookie (HttpOnly, SameSite=Strict); the page
carries HMAC(secret, cookie); every POST must send that token in `X-CSRF-Token` along with the
cookie, and, when the browser says where it comes from (`Origin`), come from this host. Another
site can make a browser send the cookie but can neither read the page's token nor forge one.

Rate limits: token buckets per client address, in this process. Enough for one app process; with
several processes or hosts each would count alone: production puts the limit where all requests
pass (the load balancer's or WAF's rate-based rules, or a shared store such as Redis).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fruits.exceptions import FruitsError
from fruits.settings import Settings

log = logging.getLogger("fruits.app")
CSRF_COOKIE = "fruits_csrf"
CSRF_HEADER = "x-csrf-token"
SECRET_FILE = "app-secret"
_COOKIE_VALUE = re.compile(r"^[0-9a-f]{64}$")


def serves_s3(settings: Settings) -> bool:
    """Whether uploads go to S3 (the public deployment, or emulated AWS) rather than a local folder."""
    return settings.source_uri.startswith(("s3://", "s3a://"))


def app_secret(settings: Settings) -> bytes:
    """The key that signs CSRF tokens: FRUITS_APP_SECRET; required on S3 (never a default in production),
    else generated once per state dir (`<state>/app-secret`, readable by its owner only)."""
    if settings.app_secret:
        if len(settings.app_secret) < 32:
            raise FruitsError("FRUITS_APP_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return settings.app_secret.encode()
    if serves_s3(settings):
        raise FruitsError(
            "FRUITS_APP_SECRET must be set when the app serves an S3 source (the public deployment): "
            "32 random characters or more, from your secret store"
        )
    path = settings.state / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class CsrfTokens:
    """Signed double-submit tokens: cookie = 32 random bytes (hex), token = HMAC-SHA256(secret, cookie)."""

    def __init__(self, secret: bytes):
        self._secret = secret

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_hex(32)

    @staticmethod
    def is_cookie(value: str | None) -> bool:
        return bool(value and _COOKIE_VALUE.match(value))

    def token_for(self, cookie: str) -> str:
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def pseudonym(self, cookie: str) -> str:
        """The browser's pseudonymous id for its votes: another HMAC of the same random cookie (a different
        message, so the stored id is never a valid CSRF token). No address, nothing that names a person."""
        return hmac.new(self._secret, b"voter:" + cookie.encode(), hashlib.sha256).hexdigest()[:32]

    def valid(self, cookie: str | None, token: str | None) -> bool:
        if not self.is_cookie(cookie) or not token:
            return False
        return hmac.compare_digest(self.token_for(cookie), token)


_CURATOR = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


def curator_tokens(settings: Settings) -> dict[str, str]:
    """FRUITS_CURATORS "name:token,name:token" -> {name: token}; empty when unset (then /curate is refused).
    A token has 32 characters or more: there is no default password."""
    curators: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in (settings.curators or "").split(","))):
        name, _, token = entry.partition(":")
        if not _CURATOR.match(name) or len(token) < 32:
            raise FruitsError(
                "FRUITS_CURATORS must be name:token pairs separated by commas, each name letters, digits, "
                "'.', '_' or '-', each token 32 characters or more (e.g. `openssl rand -hex 32`)"
            )
        curators[name] = token
    return curators


def same_origin(origin: str | None, host: str | None) -> bool:
    """An Origin header names this host (scheme aside: TLS may end at a proxy). No Origin: not checked here."""
    if not origin:
        return True
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


class RateLimiter:
    """Token buckets per client: `per_minute` tokens a minute, at most `per_minute` saved up (the burst).

    `wait(client)` takes a token and returns 0.0, or returns how many seconds until one is there.
    At most `max_clients` buckets are kept (the least recently seen go first): a flood of new
    addresses cannot grow memory without bound.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate


def content_security_policy(upload_origins: tuple[str, ...] = ()) -> str:
    """Scripts, styles and images from this origin only; no inline script or style, no framing. The
    browser posts photos to `upload_origins` too (the S3 endpoint of a presigned POST)."""
    uploads = "".join(f" {origin}" for origin in upload_origins)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{uploads}; form-action 'self'{uploads}; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    )


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and no `server` banner."""

    def __init__(self, app: Any, csp: str):
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"geolocation=(), microphone=(), camera=()"),
        ]
        self._names = {name for name, _ in self.headers} | {b"server"}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._names]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit_for(path)` bytes is refused with 413, from its
    Content-Length before anything is read, or as soon as a chunked body passes the limit."""

    def __init__(self, app: Any, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await too_large(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await too_large(send, limit)


async def too_large(send: Any, limit: int) -> None:
    body = b'{"reason":"too_large","message":"This file is too large: photos up to %d MB."}' % max(
        1, limit // (1024 * 1024)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """ASGI middleware: one DEBUG line per request (method, path, status, milliseconds). Never the client's
    address, user agent or query string: the app logs no personal data (uvicorn's own access log is off)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def noted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            log.debug(
                "%s %s %d %.0f ms", scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000
            )
