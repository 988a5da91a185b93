"""The "Is it right?" question: a person's vote on the answer to a photo they shared, into the vote log (fruits.labels).

Yes (the model's answer, taken from the stored answer, never from the request) or "no, it's …" (a
known fruit or a new name, normalised and matched to the known names within a typo). One vote per
browser and upload: a later vote replaces the earlier one. The browser is known only by a
pseudonym (an HMAC of its random cookie). Only photos shared to improve the model can be voted on:
the others are never training data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from app.context import AppContext
from app.dependencies import NOT_FOUND, Refused, context, csrf_checked, labels_kept, limit_requests, limit_votes
from app.routers.answers import stored
from app.security import CSRF_COOKIE
from fruits.answers import ANSWERED, Answer
from fruits.exceptions import FruitsError
from fruits.labels import Vote, accepted_names, canonical_name, now

router = APIRouter(
    prefix="/api/answers",
    dependencies=[Depends(limit_requests), Depends(csrf_checked), Depends(limit_votes), Depends(labels_kept)],
)


class VoteRequest(BaseModel):
    agrees: bool = False  # "yes": the model's answer is right
    label: str | None = Field(default=None, max_length=200)  # "no, it's …"


def known_names(answer: Answer, ctx: AppContext) -> set[str]:
    """The fruits the answering model knows (its known map, else its top guesses) and the names curators accepted."""
    known = ctx.known.get(answer.model_name, answer.model_version)
    names = set(known.labels) if known is not None else {name for name, _ in answer.top}
    return names | accepted_names(ctx.labels.decisions())


@router.post("/{upload_id}/vote")
def vote(upload_id: str, body: VoteRequest, request: Request, ctx: AppContext = Depends(context)) -> dict[str, Any]:
    answer = stored(upload_id, ctx)
    if answer is None:
        raise Refused(*NOT_FOUND)
    if answer.status != ANSWERED:
        raise Refused(409, "not_answered", "This photo has no answer to judge.")
    if not answer.consent:
        raise Refused(
            409,
            "private",
            "This photo was not shared to improve the model, so it is not used to learn: thank you all the same.",
        )
    names = known_names(answer, ctx)
    if body.agrees:
        if answer.is_novel or not answer.prediction:
            raise Refused(400, "no_answer_to_agree", "The model did not name this fruit: tell it what it is.")
        label = answer.prediction
    else:
        try:
            label = canonical_name(body.label or "", names)
        except FruitsError as exc:
            raise Refused(400, "bad_name", f"{exc}.") from None
    ctx.labels.add_votes(
        [
            Vote(
                upload_id,
                label,
                ctx.csrf.pseudonym(request.cookies[CSRF_COOKIE]),
                now(),
                answer.model_name,
                answer.model_version,
                True,
            )
        ]
    )
    return {
        "recorded": True,
        "label": label,
        "known": label in names,
        "message": f"Thank you: your answer “{label}” is recorded.",
    }
