"""The curator's queue: /curate, behind HTTP basic auth from FRUITS_CURATORS (refused when unset).

It shows what the community has not settled: disputed uploads (votes, no agreement) and the new
names people proposed, each with its photos, listed so that names near each other in feature
space come together (two spellings of one fruit). A curator accepts or rejects an upload's label,
accepts, rejects, merges or renames a name; each decision is appended with who and when, and a
later decision reverses it ("reopen" hands the subject back to the votes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.context import AppContext
from app.dependencies import Refused, context, csrf_checked, curator, labels_kept, limit_requests
from app.routers.pages import render
from fruits.appuploads import is_upload_id
from fruits.exceptions import FruitsError
from fruits.labels import (
    ACCEPTED,
    AGREED,
    DISPUTED,
    NAME,
    UPLOAD,
    Vote,
    accepted_names,
    canonical_name,
    decision,
    proposed_names,
    upload_features,
)

router = APIRouter(dependencies=[Depends(limit_requests), Depends(labels_kept)])


def model_names(ctx: AppContext, votes: list[Vote]) -> set[str]:
    """The classes of the model versions that answered the voted photos (their known maps)."""
    versions = {(v.model_name, v.model_version) for v in votes}
    return {label for name, version in versions if (known := ctx.known.get(name, version)) for label in known.labels}


@router.get("/curate", response_class=HTMLResponse)
def curate_page(request: Request, who: str = Depends(curator), ctx: AppContext = Depends(context)) -> Response:
    return render(request, ctx, "curate.html", curator=who)


@router.get("/api/curate")
def queue(response: Response, who: str = Depends(curator), ctx: AppContext = Depends(context)) -> dict[str, Any]:
    """Disputed uploads and proposed names (with their photos), the decisions so far, and the counts."""
    response.headers["Cache-Control"] = "no-store"
    votes, decisions = ctx.labels.votes(), ctx.labels.decisions()
    found = ctx.labels.verdicts(votes, decisions)
    known = model_names(ctx, votes) | accepted_names(decisions)
    proposed = proposed_names(found, known, upload_features(ctx.settings, list(found)))

    def upload(upload_id: str) -> dict[str, Any]:
        verdict = found[upload_id]
        return {
            "upload_id": upload_id,
            "photo": f"/api/answers/{upload_id}/photo.jpg",
            "status": verdict.status,
            "label": verdict.label,
            "tally": [{"label": label, "clients": n} for label, n in verdict.tally],
        }

    return {
        "curator": who,
        "disputed": [upload(i) for i in sorted(found) if found[i].status == DISPUTED],
        "names": [
            {
                "name": p.name,
                "votes": p.votes,
                "nearest": p.nearest,
                "similarity": p.similarity,
                "uploads": [upload(i) for i in p.uploads],
            }
            for p in proposed
        ],
        "known": sorted(known),
        "decisions": [
            {
                "at": d.decided_at.isoformat(),
                "curator": d.curator,
                "subject": d.subject,
                "key": d.key,
                "action": d.action,
                "label": d.label,
            }
            for d in sorted(decisions, key=lambda d: d.decided_at)
        ],
        "counts": {status: sum(v.status == status for v in found.values()) for status in (AGREED, ACCEPTED, DISPUTED)},
    }


class DecisionRequest(BaseModel):
    subject: str = Field(max_length=10)
    key: str = Field(max_length=200)
    action: str = Field(max_length=10)
    label: str | None = Field(default=None, max_length=200)


@router.post("/api/curate/decisions", status_code=201, dependencies=[Depends(csrf_checked)])
def decide(body: DecisionRequest, who: str = Depends(curator), ctx: AppContext = Depends(context)) -> dict[str, Any]:
    """Record one decision. Labels and merge targets go through the same name rule as the votes."""
    if body.subject == UPLOAD and not is_upload_id(body.key):
        raise Refused(400, "bad_decision", "Not an upload id.")
    try:
        label = body.label
        if label:
            known = model_names(ctx, ctx.labels.votes()) | accepted_names(ctx.labels.decisions())
            label = canonical_name(label, known)
        made = decision(who, body.subject, body.key if body.subject == UPLOAD else body.key.strip(), body.action, label)
    except FruitsError as exc:
        raise Refused(400, "bad_decision", f"{exc}.") from None
    if made.subject == NAME and made.label == made.key:
        raise Refused(400, "bad_decision", "A name cannot be merged into itself.")
    ctx.labels.add_decisions([made])
    return {
        "recorded": True,
        "curator": made.curator,
        "at": made.decided_at.isoformat(),
        "subject": made.subject,
        "key": made.key,
        "action": made.action,
        "label": made.label,
    }
