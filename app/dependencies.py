"""The routes' dependencies (FastAPI's `Depends`): the app's context, CSRF checks, rate limits, refusals."""

from __future__ import annotations

import math

from fastapi import Depends, Request

from app.context import AppContext
from app.security import CSRF_COOKIE, CSRF_HEADER, same_origin


class Refused(Exception):
    """An API request answered with `status` and a sentence for people (`message`) under a stable `reason`."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}


NOT_FOUND = (404, "not_found", "There is no such photo here.")


def context(request: Request) -> AppContext:
    return request.app.state.context


def client_key(request: Request) -> str:
    """Whom a rate limit counts: the peer's address (behind a proxy, uvicorn's --forwarded-allow-ips makes it
    the client's). Held in memory for the limit only, never logged."""
    return request.client.host if request.client else "unknown"


def limit_requests(request: Request, ctx: AppContext = Depends(context)) -> None:
    wait = ctx.request_limiter.wait(client_key(request))
    if wait:
        raise Refused(429, "rate_limited", "Too many requests: wait a few seconds and try again.",
                      {"Retry-After": str(math.ceil(wait))})


def limit_uploads(request: Request, ctx: AppContext = Depends(context)) -> None:
    wait = ctx.upload_limiter.wait(client_key(request))
    if wait:
        raise Refused(429, "rate_limited", f"Too many photos in a short time: try again in {math.ceil(wait)} s.",
                      {"Retry-After": str(math.ceil(wait))})


def csrf_checked(request: Request, ctx: AppContext = Depends(context)) -> None:
    """Every POST: from this host when the browser says where it comes from, with the token of this page."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")) or \
            not ctx.csrf.valid(request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)):
        raise Refused(403, "csrf", "This page has expired: reload it and try again.")
