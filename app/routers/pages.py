"""The pages: the upload page (also an upload's answer page, /u/<id>) and the team's /ops."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from app.context import AppContext
from app.dependencies import context, limit_requests
from app.security import CSRF_COOKIE
from fruits.appuploads import is_upload_id

router = APIRouter(dependencies=[Depends(limit_requests)], default_response_class=HTMLResponse)


def render(request: Request, ctx: AppContext, template: str, status: int = 200, **values: object) -> Response:
    """A page with this browser's CSRF token in it (and its cookie, the first time); never cached."""
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh = not ctx.csrf.is_cookie(cookie)
    if fresh:
        cookie = ctx.csrf.new_cookie()
    response = request.app.state.templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": ctx.csrf.token_for(cookie),
            "presigned": ctx.uploads.presigned,
            "max_mb": max(1, ctx.settings.max_image_bytes // (1024 * 1024)),
            "retention": ctx.settings.app_private_retention,
            **values,
        },
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, cookie, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https"
        )
    return response


@router.get("/")
def upload_page(request: Request, ctx: AppContext = Depends(context)) -> Response:
    return render(request, ctx, "index.html", upload_id="")


@router.get("/u/{upload_id}")
def answer_page(upload_id: str, request: Request, ctx: AppContext = Depends(context)) -> Response:
    """The upload page showing one upload's answer: the link a person keeps. Unknown and malformed ids alike: 404."""
    if not is_upload_id(upload_id) or (ctx.answers.get(upload_id) is None and not ctx.uploads.exists(upload_id)):
        return render(request, ctx, "missing.html", status=404)
    return render(request, ctx, "index.html", upload_id=upload_id)


@router.get("/ops")
def ops_page(request: Request, ctx: AppContext = Depends(context)) -> Response:
    return render(request, ctx, "ops.html")
