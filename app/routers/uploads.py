"""Taking photos: locally the app lands the bytes; on S3 it signs a presigned POST the browser sends to the bucket.

The first look is cheap (size, JPEG/PNG magic bytes); the stream is the real judge, and whatever
it rejects is answered from its errors (app.views).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.context import AppContext
from app.dependencies import NOT_FOUND, Refused, context, csrf_checked, limit_requests, limit_uploads
from app.uploads import CONTENT_TYPES, sniff
from app.views import rejection
from fruits.appuploads import new_upload_id

log = logging.getLogger("fruits.app")
router = APIRouter(
    prefix="/api/uploads", dependencies=[Depends(limit_requests), Depends(csrf_checked), Depends(limit_uploads)]
)


def links(upload_id: str) -> dict[str, str]:
    return {"upload_id": upload_id, "page": f"/u/{upload_id}", "answer": f"/api/answers/{upload_id}"}


@router.post("", status_code=201)
async def upload(request: Request, ctx: AppContext = Depends(context)) -> dict[str, str]:
    """multipart/form-data: `photo` (the file), `consent` ("yes" to let it improve the model)."""
    if ctx.uploads.presigned:
        raise Refused(*NOT_FOUND)
    async with request.form(max_files=1, max_fields=2) as form:
        photo, consent = form.get("photo"), form.get("consent") == "yes"
        if not isinstance(photo, UploadFile):
            raise Refused(400, "no_photo", "Choose a photo first.")
        content = await photo.read()
    limit = ctx.settings.max_image_bytes
    if not content or len(content) > limit:
        reason = "too_large" if content else "empty"
        raise Refused(413 if content else 400, reason, rejection(reason, limit))
    extension = sniff(content[:16])
    if extension is None:
        raise Refused(415, "not_an_image", rejection("not_an_image", limit))
    upload_id = new_upload_id()
    await run_in_threadpool(ctx.uploads.land, upload_id, consent, extension, content)
    log.info(
        "upload %s landed: %s, %d KB, %s",
        upload_id,
        extension,
        len(content) // 1024,
        "consented" if consent else "private",
    )
    return links(upload_id)


class PresignRequest(BaseModel):
    content_type: str
    consent: bool = False


@router.post("/presign", status_code=201)
def presign(body: PresignRequest, ctx: AppContext = Depends(context)) -> dict[str, object]:
    """A presigned POST for one new upload id: the browser posts `fields` + the file to `url`."""
    if not ctx.uploads.presigned:
        raise Refused(*NOT_FOUND)
    if body.content_type not in CONTENT_TYPES:
        raise Refused(415, "not_an_image", rejection("not_an_image", ctx.settings.max_image_bytes))
    post = ctx.uploads.presign(new_upload_id(), body.consent, body.content_type)
    log.info(
        "upload %s presigned: %s, %s", post.upload_id, body.content_type, "consented" if body.consent else "private"
    )
    return {**links(post.upload_id), "url": post.url, "fields": post.fields}
