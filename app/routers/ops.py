"""The team's numbers: the running stream over the last hour, as JSON for /ops to poll (streaming.ops)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Response

from app.context import AppContext
from app.dependencies import Refused, context, limit_requests
from fruits.exceptions import one_line

log = logging.getLogger("fruits.app")
router = APIRouter(prefix="/api/ops", dependencies=[Depends(limit_requests)])


@router.get("")
def ops(response: Response, ctx: AppContext = Depends(context)) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    try:
        stats = ctx.ops()
    except Exception as exc:  # no progress yet, storage away: /ops says so and polls again
        log.warning("no ops numbers: %s", one_line(exc))
        raise Refused(503, "no_stream", "No numbers from the stream yet.") from None
    return {**stats, "generated_at": time.time()}
