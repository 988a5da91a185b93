"""The composition root of the app: `create_app(settings)` wires the stores, the hygiene and the routers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from app.context import AppContext, KnownMapLoader, KnownMaps
from app.dependencies import Refused
from app.routers import answers, curate, known, ops, pages, uploads, votes
from app.security import (
    AccessLog,
    BodyLimit,
    CsrfTokens,
    RateLimiter,
    SecurityHeaders,
    app_secret,
    content_security_policy,
    curator_tokens,
)
from app.uploads import open_uploads
from fruits.answers import AnswerStore, open_answer_store
from fruits.knownmap import KnownMap
from fruits.labels import LabelStore
from fruits.settings import Settings
from streaming.ops import ops_window

HERE = Path(__file__).resolve().parent
UPLOAD_PATH = "/api/uploads"
MULTIPART_OVERHEAD = 64 * 1024  # the form's boundaries and fields around the photo
OTHER_BODY_LIMIT = 16 * 1024  # every other request: a small JSON body at most


def create_app(
    settings: Settings,
    *,
    answer_store: AnswerStore | None = None,
    known_maps: KnownMapLoader | None = None,
    ops_numbers: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """The app on `settings`: the stream's source (local folder or S3), its answers store and registry.

    `known_maps` and `ops_numbers` default to fruits.knownmap and streaming.ops; tests pass their own
    only where the real ones cannot run.
    """
    landing = open_uploads(settings)
    context = AppContext(
        settings=settings,
        answers=answer_store or open_answer_store(settings),
        uploads=landing,
        known=KnownMaps(known_maps or functools.partial(KnownMap.load, settings), settings),
        csrf=CsrfTokens(app_secret(settings)),
        upload_limiter=RateLimiter(settings.app_uploads_per_minute),
        request_limiter=RateLimiter(settings.app_requests_per_minute),
        vote_limiter=RateLimiter(settings.app_votes_per_minute),
        labels=LabelStore(settings),
        curators=curator_tokens(settings),
        ops=ops_numbers or functools.partial(ops_window, settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        context.answers.close()

    app = FastAPI(title="Fruits!", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.context = context
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (pages.router, uploads.router, answers.router, votes.router, known.router, ops.router, curate.router):
        app.include_router(router)
    add_error_pages(app)
    upload_limit = settings.max_image_bytes + MULTIPART_OVERHEAD
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit if path == UPLOAD_PATH else OTHER_BODY_LIMIT)
    app.add_middleware(SecurityHeaders, csp=content_security_policy(landing.upload_origins))
    app.add_middleware(AccessLog)
    return app


def add_error_pages(app: FastAPI) -> None:
    """API errors as {"reason", "message"} JSON; a page that does not exist as the 404 page."""

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> Response:
        return JSONResponse({"reason": exc.reason, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"reason": "bad_request", "message": "This request is not one the app understands."}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404 and not request.url.path.startswith("/api/"):
            return app.state.templates.TemplateResponse(request, "missing.html", {}, status_code=404)
        return JSONResponse(
            {"reason": "http_error", "message": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )
