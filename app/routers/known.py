"""Thumbnails of the known (training) images, addressed by model version and index in its known map:
never by a path from the request."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.context import AppContext
from app.dependencies import NOT_FOUND, Refused, context, limit_requests

router = APIRouter(prefix="/known", dependencies=[Depends(limit_requests)])
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NUMBER = re.compile(r"^[0-9]{1,9}$")


@router.get("/{model_name}/{version}/{index}.jpg")
def known_thumbnail(model_name: str, version: str, index: str, ctx: AppContext = Depends(context)) -> Response:
    if not (_MODEL_NAME.match(model_name) and _NUMBER.match(version) and _NUMBER.match(index)):
        raise Refused(*NOT_FOUND)
    small = ctx.known.thumbnail(model_name, version, int(index))
    if small is None:
        raise Refused(*NOT_FOUND)
    # A version's known images never change.
    return Response(small, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400, immutable"})
