"""What the page shows of an answer, in plain words: the JSON the page's script renders.

Every sentence a person reads is written here, once (the script only places them), and rejected
uploads are told why from the stream's stable reason codes (fruits.decode, the errors table).
"""

from __future__ import annotations

from typing import Any

from fruits.answers import REJECTED, Answer
from fruits.knownmap import KnownMap

PENDING = "pending"
UNKNOWN_FRUIT = "A fruit I don't know yet"
REASONS = {
    "empty": "This file is empty: not an image.",
    "not_an_image": "This is not an image: send a photo (JPEG or PNG).",
    "truncated": "This photo arrived incomplete: please send it again.",
    "corrupt": "This photo is damaged: it cannot be read.",
    "bad_dimensions": "This picture has no size we can read.",
    "too_many_pixels": "This picture is too large: it has too many pixels.",
    "unsupported_mode": "This kind of image is not supported: send an ordinary colour photo.",
    "too_large": "This file is too large: photos up to {max_mb} MB.",
    "missing": "This photo was deleted before we could look at it.",
}
UNREADABLE = "We could not read this photo."


def rejection(reason: str | None, max_bytes: int) -> str:
    return REASONS.get(reason or "", UNREADABLE).format(max_mb=max(1, max_bytes // (1024 * 1024)))


def percent(probability: float | None) -> str:
    """'93%'; never a certain-looking '0%' or '100%' for what is neither."""
    value = probability or 0.0
    shown = round(value * 100)
    if shown == 0 and value > 0:
        return "<1%"
    if shown == 100 and value < 1:
        return ">99%"
    return f"{shown}%"


def pending(upload_id: str) -> dict[str, Any]:
    return {"upload_id": upload_id, "status": PENDING, "title": "Looking at your photo…"}


def answer_view(answer: Answer, known: KnownMap | None, max_bytes: int) -> dict[str, Any]:
    """The page's JSON for a stored answer. Thumbnails and the map are addressed by model version and
    index (or by the upload id), never by a path."""
    view: dict[str, Any] = {"upload_id": answer.upload_id, "status": answer.status}
    if answer.uploaded_at is not None:
        view["seconds"] = round(max(0.0, answer.answered_at - answer.uploaded_at), 2)
    if answer.status == REJECTED:  # no photo to show back: the stream could not read it
        return {
            **view,
            "reason": answer.reason,
            "title": "Sorry, no answer for this one",
            "message": rejection(answer.reason, max_bytes),
        }
    view["photo"] = f"/api/answers/{answer.upload_id}/photo.jpg"
    top = [{"name": name, "probability": round(p, 4), "percent": percent(p)} for name, p in answer.top]
    if answer.is_novel:
        title = UNKNOWN_FRUIT
        message = (
            f"It looks a little like {answer.prediction} ({percent(answer.confidence)}), but not "
            "enough: maybe a fruit the model has not learnt."
            if answer.prediction
            else ""
        )
    elif answer.prediction:
        title, message = answer.prediction, f"{percent(answer.confidence)} sure"
    else:
        title, message = "No prediction", "This model has no fruit classes."
    view.update(
        prediction=answer.prediction,
        confidence=answer.confidence,
        is_novel=bool(answer.is_novel),
        title=title,
        message=message,
        top=top,
        model=f"{answer.model_name} v{answer.model_version}",
        neighbours=[],
        map=None,
    )
    # "Is it right?": asked on photos shared to improve the model (the others never train); the names the
    # model knows are the choices (a new name can be typed).
    view["vote"] = {
        "asks": bool(answer.consent),
        "agree": bool(answer.prediction and not answer.is_novel),
        "names": sorted(set(known.labels)) if known is not None else [name for name, _ in answer.top],
    }
    if known is not None:
        base = f"/known/{answer.model_name}/{answer.model_version}"
        view["neighbours"] = [
            {"label": known.labels[i], "thumbnail": f"{base}/{i}.jpg"}
            for i in answer.neighbours
            if 0 <= i < len(known.labels)
        ]
        if answer.map_xy is not None:
            view["map"] = f"/api/answers/{answer.upload_id}/map.svg"
    return view
