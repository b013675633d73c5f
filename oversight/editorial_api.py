"""The JSON API's editorial endpoints (API.md, Editorial): curated picks and blocked items, and the
preview of what a segment would receive; mounted in urls.py.

Reading: any person with a role. Changing: editors and admins (client keys and operators: 403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from oversight import access, editorial
from oversight.jsonapi import PEOPLE, ApiError, in_utc, require_person
from oversight.models import AISystem, BlockedItem, Pick
from oversight.schemas import ErrorOut

router = Router(tags=["editorial"], auth=PEOPLE)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("needs a time zone, e.g. 2026-03-15T23:00:00Z")
    return value


Moment = Annotated[datetime, AfterValidator(_aware), AfterValidator(in_utc)]


class CurationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(description="1–200 characters, no spaces at the ends, no control characters")
    segment: str = Field(default="", description="matches the decision's context['segment']; empty: any")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="every key must equal the decision's context value; {}: any")
    starts_at: Moment | None = Field(default=None, description="default: now")
    ends_at: Moment | None = Field(default=None, description="null: open-ended")
    note: str = ""


class PickIn(CurationIn):
    position: int = Field(default=1, description="1-based: 1 is first")


class CurationOut(BaseModel):
    id: str
    system: str
    item: str
    segment: str
    context: dict[str, Any]
    match: str  # the segment and context in words, e.g. "activity=sleep" or "everyone"
    starts_at: datetime
    ends_at: datetime | None
    note: str
    state: str  # active | scheduled | ended | removed
    created_by: str | None
    created_at: datetime
    removed_at: datetime | None
    removed_by: str | None


class PickOut(CurationOut):
    position: int
    overlaps: list[str]  # the ids of picks in force that could apply with this one (same item or position)
    overlap_note: str  # "overlaps pck_7" or ""


class PicksOut(BaseModel):
    system: str
    picks: list[PickOut]


class BlocksOut(BaseModel):
    system: str
    blocked: list[CurationOut]


class PreviewOut(BaseModel):
    system: str
    context: dict[str, Any]
    base: Any  # the model's output of the newest matching released decision, or the fallback
    source: str  # "dec_…" or "fallback"
    curated: Any  # what that decision would receive now
    reasons: list[str]


def _system(slug: str) -> AISystem:
    system = AISystem.objects.filter(slug=slug).first()
    if system is None:
        raise ApiError(404, "not_found", f"no system {slug!r}", "system")
    return system


def _fields(payload: CurationIn) -> dict[str, Any]:
    return {"item": payload.item, "segment": payload.segment, "context": payload.context,
            "starts_at": payload.starts_at, "ends_at": payload.ends_at, "note": payload.note}


# --- picks ---------------------------------------------------------------------------------------


@router.get("/systems/{system}/picks", response=PicksOut)
def list_picks(request: HttpRequest, system: str, all: bool = False) -> dict[str, Any]:  # noqa: A002
    """The system's picks in force or to come (``?all=true``: the ended and removed ones too)."""
    require_person(request)
    s = _system(system)
    return {"system": s.slug, "picks": editorial.listing(Pick, s, timezone.now(), include_ended=all)}


@router.post("/systems/{system}/picks", response={201: PickOut})
def create_pick(request: HttpRequest, system: str, payload: PickIn) -> tuple[int, dict[str, Any]]:
    """An editor pins an item; the answer says which picks in force it overlaps."""
    who = require_person(request, access.EDITOR, access.ADMIN)
    row = editorial.create_pick(who.user, system, position=payload.position, **_fields(payload))
    return 201, editorial.describe_one(Pick, row, timezone.now())


@router.delete("/picks/{pick_id}", response={200: PickOut, 409: ErrorOut})
def remove_pick(request: HttpRequest, pick_id: str) -> dict[str, Any]:
    who = require_person(request, access.EDITOR, access.ADMIN)
    row = editorial.remove_pick(who.user, pick_id)
    return editorial.describe_one(Pick, row, timezone.now())


@router.get("/systems/{system}/picks/preview", response=PreviewOut)
def preview_picks(request: HttpRequest, system: str, context: list[str] = Query(default=[]),  # noqa: B008
            segment: str = "") -> dict[str, Any]:
    """What a decision with this context would receive now: ``?segment=night&context=activity=sleep
    &context=hour=23`` (each ``context`` a ``key=value`` pair; values compare as text, so ``hour=23``
    matches 23 too)."""
    require_person(request)
    s = _system(system)
    ctx: dict[str, Any] = dict(editorial.parse_pairs(context or []))
    if segment:
        ctx["segment"] = segment
    p = editorial.preview(s, ctx)
    return {"system": s.slug, "context": ctx, "base": p.base, "source": p.source, "curated": p.curated,
            "reasons": p.reasons}


# --- blocked items -------------------------------------------------------------------------------


@router.get("/systems/{system}/blocked", response=BlocksOut)
def list_blocked(request: HttpRequest, system: str, all: bool = False) -> dict[str, Any]:  # noqa: A002
    require_person(request)
    s = _system(system)
    return {"system": s.slug, "blocked": editorial.listing(BlockedItem, s, timezone.now(), include_ended=all)}


@router.post("/systems/{system}/blocked", response={201: CurationOut})
def create_block(request: HttpRequest, system: str, payload: CurationIn) -> tuple[int, dict[str, Any]]:
    who = require_person(request, access.EDITOR, access.ADMIN)
    row = editorial.create_block(who.user, system, **_fields(payload))
    return 201, editorial.describe_one(BlockedItem, row, timezone.now())


@router.delete("/blocked/{block_id}", response={200: CurationOut, 409: ErrorOut})
def remove_block(request: HttpRequest, block_id: str) -> dict[str, Any]:
    who = require_person(request, access.EDITOR, access.ADMIN)
    row = editorial.remove_block(who.user, block_id)
    return editorial.describe_one(BlockedItem, row, timezone.now())
