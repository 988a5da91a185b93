"""The routes' dependencies (FastAPI's `Depends`): the app's context, CSRF checks, rate limits, refusals."""

from __future__ import annotations

import hmac
import math

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

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


def labels_kept(request: Request) -> None:
    """Votes and the curator's queue need the label tables (fruits.labels: not on the Lambda package)."""
    if not context(request).labels.available:
        raise Refused(
            503, "votes_unavailable", "Votes are not collected on this deployment yet: thank you all the same."
        )


def client_key(request: Request) -> str:
    """Whom a rate limit counts: the peer's address (behind a proxy, uvicorn's --forwarded-allow-ips makes it
    the client's). Held in memory for the limit only, never logged."""
    return request.client.host if request.client else "unknown"


def limit_requests(request: Request, ctx: AppContext = Depends(context)) -> None:
    wait = ctx.request_limiter.wait(client_key(request))
    if wait:
        raise Refused(
            429,
            "rate_limited",
            "Too many requests: wait a few seconds and try again.",
            {"Retry-After": str(math.ceil(wait))},
        )


def limit_uploads(request: Request, ctx: AppContext = Depends(context)) -> None:
    wait = ctx.upload_limiter.wait(client_key(request))
    if wait:
        raise Refused(
            429,
            "rate_limited",
            f"Too many photos in a short time: try again in {math.ceil(wait)} s.",
            {"Retry-After": str(math.ceil(wait))},
        )


def limit_votes(request: Request, ctx: AppContext = Depends(context)) -> None:
    wait = ctx.vote_limiter.wait(client_key(request))
    if wait:
        raise Refused(
            429,
            "rate_limited",
            f"Too many answers in a short time: try again in {math.ceil(wait)} s.",
            {"Retry-After": str(math.ceil(wait))},
        )


def csrf_checked(request: Request, ctx: AppContext = Depends(context)) -> None:
    """Every POST: from this host when the browser says where it comes from, with the token of this page."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")) or not ctx.csrf.valid(
        request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
    ):
        raise Refused(403, "csrf", "This page has expired: reload it and try again.")


basic_auth = HTTPBasic(auto_error=False, realm="Fruits! curators")


def curator(credentials: HTTPBasicCredentials | None = Depends(basic_auth), ctx: AppContext = Depends(context)) -> str:
    """The curator's name, from HTTP basic auth (name, token) checked against FRUITS_CURATORS. Refused when no
    curator is configured: there is no default password."""
    if not ctx.curators:
        raise Refused(403, "curation_off", "Curation is off: the team sets FRUITS_CURATORS to turn it on.")
    token = ctx.curators.get(credentials.username) if credentials else None
    if credentials is None or token is None or not hmac.compare_digest(token.encode(), credentials.password.encode()):
        raise Refused(
            401,
            "login",
            "Curators only: log in with your name and token.",
            {"WWW-Authenticate": 'Basic realm="Fruits! curators", charset="UTF-8"'},
        )
    return credentials.username
