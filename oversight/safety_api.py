"""The JSON API's feedback-loop mitigation endpoints (API.md, safety controls); mounted in urls.py."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from pydantic import BaseModel, Field

from oversight import access, mitigation
from oversight.jsonapi import ANYONE, PEOPLE, require_person, system_for
from oversight.models import AISystem
from oversight.schemas import ErrorOut

router = Router(tags=["safety"], auth=PEOPLE)


class MitigationIn(BaseModel):
    active: bool
    reason: str = Field(default="", max_length=2000)


class MitigationOut(BaseModel):
    system: str
    policy: dict[str, Any]  # mode, exploration_share, model_weight (defaults filled in)
    active: bool
    exploration_share: float | None
    model_weight: float | None
    reason: str
    auto: bool
    started_by: str | None
    started_at: str | None
    history: list[dict[str, Any]]


@router.get("/systems/{system}/mitigation", response=MitigationOut, auth=ANYONE)
def get_mitigation(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's feedback-loop mitigation: anyone with a role, and the system's own key."""
    entry = system_for(request, system)
    return mitigation.describe(AISystem.objects.get(id=entry.id))


@router.post("/systems/{system}/mitigation", response={200: MitigationOut, 409: ErrorOut})
def set_mitigation(request: HttpRequest, system: str, payload: MitigationIn) -> dict[str, Any]:
    """An admin starts or ends the mitigation, with a reason."""
    who = require_person(request, access.ADMIN)
    if payload.active:
        mitigation.start(who.user, system, payload.reason)
    else:
        mitigation.stop(who.user, system, payload.reason)
    return mitigation.describe(AISystem.objects.get(slug=system))
