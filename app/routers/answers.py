"""An upload's answer, its re-encoded photo and its place on the known map: by upload id only.

There is no listing: the id (128 random bits) is the only way to an upload, and unknown and
malformed ids get the same 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.context import AppContext
from app.dependencies import NOT_FOUND, Refused, context, limit_requests
from app.images import thumbnail
from app.views import answer_view, pending
from fruits.answers import ANSWERED, Answer
from fruits.appuploads import is_upload_id

router = APIRouter(prefix="/api/answers", dependencies=[Depends(limit_requests)])


def stored(upload_id: str, ctx: AppContext) -> Answer | None:
    if not is_upload_id(upload_id):
        raise Refused(*NOT_FOUND)
    return ctx.answers.get(upload_id)


@router.get("/{upload_id}")
def answer(upload_id: str, response: Response, ctx: AppContext = Depends(context)) -> dict[str, Any]:
    """The answer, or `pending` while the stream has not written it (the page polls), or 404."""
    found = stored(upload_id, ctx)
    response.headers["Cache-Control"] = "no-store"
    if found is None:
        if ctx.uploads.exists(upload_id):
            return pending(upload_id)
        raise Refused(*NOT_FOUND)
    return answer_view(found, ctx.known.get(found.model_name, found.model_version), ctx.settings.max_image_bytes)


@router.get("/{upload_id}/photo.jpg")
def photo(upload_id: str, ctx: AppContext = Depends(context)) -> Response:
    """The upload as a new small JPEG without any metadata; the raw upload is never served."""
    if not is_upload_id(upload_id):
        raise Refused(*NOT_FOUND)
    content = ctx.uploads.read(upload_id, ctx.settings.max_image_bytes)
    small = thumbnail(content, ctx.settings.max_image_pixels) if content else None
    if small is None:
        raise Refused(*NOT_FOUND)
    return Response(small, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{upload_id}/map.svg")
def known_map(upload_id: str, ctx: AppContext = Depends(context)) -> Response:
    found = stored(upload_id, ctx)
    svg = (
        ctx.known.svg(found.model_name, found.model_version, found.map_xy, found.neighbours)
        if found is not None and found.status == ANSWERED
        else None
    )
    if svg is None:
        raise Refused(*NOT_FOUND)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})
