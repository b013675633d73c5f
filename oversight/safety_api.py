"""The JSON API's feedback-loop mitigation endpoints (API.md, safety controls); mounted in urls.py."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from pydantic import BaseModel, Field

from oversight import access, mitigation
from oversight.jsonapi import auth, require_person, system_for
from oversight.models import AISystem, LoopMitigation

router = Router(tags=["safety"], auth=auth)


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


def _state(system: AISystem) -> dict[str, Any]:
    rows = list(LoopMitigation.objects.filter(system=system)[:20])
    now = next((m for m in rows if m.ended_at is None), None)
    p = mitigation.Policy.from_json(system.loop_mitigation)
    return {
        "system": system.slug,
        "policy": {"mode": p.mode, "exploration_share": p.exploration_share, "model_weight": p.model_weight},
        "active": now is not None,
        "exploration_share": now.exploration_share if now else None,
        "model_weight": now.model_weight if now else None,
        "reason": now.reason if now else "", "auto": now.auto if now else False,
        "started_by": now.started_by if now else None,
        "started_at": now.started_at.isoformat() if now else None,
        "history": [{"started_at": m.started_at.isoformat(), "started_by": m.started_by, "reason": m.reason,
                     "auto": m.auto, "ended_at": m.ended_at.isoformat() if m.ended_at else None,
                     "ended_by": m.ended_by, "end_reason": m.end_reason} for m in rows],
    }


@router.get("/systems/{system}/mitigation", response=MitigationOut)
def get_mitigation(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's feedback-loop mitigation: anyone with a role, and the system's own key."""
    entry = system_for(request, system)
    return _state(AISystem.objects.get(id=entry.id))


@router.post("/systems/{system}/mitigation", response=MitigationOut)
def set_mitigation(request: HttpRequest, system: str, payload: MitigationIn) -> dict[str, Any]:
    """An admin starts or ends the mitigation, with a reason."""
    who = require_person(request, access.ADMIN)
    if payload.active:
        mitigation.start(who.user, system, payload.reason)
    else:
        mitigation.stop(who.user, system, payload.reason)
    return _state(AISystem.objects.get(slug=system))
