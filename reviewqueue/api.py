"""Review endpoints (API.md, "Review"): operators claim, renew (heartbeat), resolve and release items."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Router
from pydantic import Field

from oversight import access, decisions
from oversight.jsonapi import PEOPLE, ApiError, json_response, require_person
from oversight.schemas import ErrorOut, In, ReviewItemOut
from reviewqueue import actions
from reviewqueue.models import ReviewItem

router = Router(tags=["review"], auth=PEOPLE)


class ClaimIn(In):
    system: str | None = Field(default=None, max_length=64)


class ResolveIn(In):
    action: Literal["approve", "reject", "modify"]
    output: Any = None
    note: str = Field(default="", max_length=5000)


def item_out(item: ReviewItem) -> dict[str, Any]:
    d = item.decision
    return {
        "id": item.public_id,
        "kind": item.kind,
        "status": item.status,
        "system": item.system.slug,
        "decision": decisions.public(d, item.system.slug) | {
            "subject": d.subject, "context": d.context, "features": d.features, "prediction": d.prediction,
        },
        "claimed_by": item.claimed_by.get_username() if item.claimed_by else None,
        "lease_expires_at": item.lease_expires_at,
        "due_at": item.due_at,
        "action": item.action or None,
        "note": item.note,
    }


def parse_item_id(value: str) -> Any:
    raw = value[4:] if value.startswith("rev_") else value
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        raise ApiError(404, "not_found", f"{value!r} is not a review item id (they look like rev_…)") from None


def _load(item_id: Any) -> ReviewItem:
    return ReviewItem.objects.select_related("decision", "system", "claimed_by").get(id=item_id)


@router.post("/review/claim", response={200: ReviewItemOut, 204: None, 404: ErrorOut})
def claim(request: HttpRequest, payload: ClaimIn | None = None) -> HttpResponse:
    """The next item, leased to the caller (``system``: only that system's), or 204 when none is free."""
    who = require_person(request, *access.REVIEWERS)
    item = actions.claim_next(who.user, payload.system if payload else None)
    if item is None:
        return HttpResponse(status=204)
    return json_response(item_out(_load(item.id)))


@router.post("/review/{item_id}/resolve", response={200: ReviewItemOut, 409: ErrorOut})
def resolve(request: HttpRequest, item_id: str, payload: ResolveIn) -> HttpResponse:
    who = require_person(request, *access.REVIEWERS)
    item = actions.resolve(
        who.user, parse_item_id(item_id), payload.action, payload.note, payload.output,
        output_given="output" in payload.model_fields_set,
    )
    return json_response(item_out(_load(item.id)))


@router.post("/review/{item_id}/release", response={200: ReviewItemOut, 409: ErrorOut})
def release(request: HttpRequest, item_id: str) -> HttpResponse:
    """Give the lease back."""
    who = require_person(request, *access.REVIEWERS)
    item = actions.release(who.user, parse_item_id(item_id))
    return json_response(item_out(_load(item.id)))


@router.post("/review/{item_id}/heartbeat", response={200: ReviewItemOut, 409: ErrorOut})
def heartbeat(request: HttpRequest, item_id: str) -> HttpResponse:
    """Renew the caller's lease (or take the item again if it lapsed and is still free)."""
    who = require_person(request, *access.REVIEWERS)
    item = actions.heartbeat(who.user, parse_item_id(item_id))
    return json_response(item_out(_load(item.id)))
