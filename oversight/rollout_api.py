"""The JSON API's gradual rollouts and bandit arms (API.md, hosted models); mounted in urls.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field

from oversight import access, bandit_arms, rollout_actions, rollouts
from oversight.jsonapi import ANYONE, PEOPLE, numbered, require_person, system_for
from oversight.models import AISystem, Rollout
from oversight.schemas import ErrorOut

router = Router(tags=["rollouts"], auth=PEOPLE)


class GuardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Literal["auto", "reward", "accuracy"] = "auto"
    max_drop: float = Field(default=0.05, ge=0, le=1)
    min_outcomes: int = Field(default=30, ge=1, le=1_000_000)


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate: str = Field(min_length=1, max_length=200)
    baseline: str = Field(min_length=1, max_length=200)
    steps: list[int] | None = Field(default=None, min_length=2, max_length=rollouts.MAX_STEPS)
    step_seconds: int | None = Field(default=None, ge=rollouts.MIN_STEP_SECONDS, le=rollouts.MAX_STEP_SECONDS)
    guard: GuardIn | None = None
    reason: str = Field(default="", max_length=rollout_actions.REASON_MAX)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=rollout_actions.REASON_MAX)


class RolloutEventOut(BaseModel):
    kind: str  # started | advanced | completed | rolled_back | cancelled
    what: str  # the kind in words
    share: float
    reason: str
    by: str
    at: datetime


class NextOut(BaseModel):
    action: str  # hold | advance | complete | rollback
    reason: str


class RolloutOut(BaseModel):
    id: str
    system: str
    candidate: str
    baseline: str
    steps: list[int]
    step: int
    share: float  # the candidate's share of the traffic now, 0–1
    step_seconds: int
    guard: dict[str, Any]
    state: str  # running | completed | rolled_back | cancelled
    state_label: str
    reason: str
    started_by: str
    started_at: datetime
    step_started_at: datetime
    step_ends_at: datetime | None = None
    ended_at: datetime | None
    next: NextOut | None = None  # running: what the rules say now
    stats: dict[str, dict[str, Any]] | None = None  # running: the step's outcomes of both models
    events: list[RolloutEventOut]


class RolloutsOut(BaseModel):
    system: str
    rollouts: list[RolloutOut]


class ArmOut(BaseModel):
    model: str
    alpha: float
    beta: float
    pulls: int
    mean: float
    low: float  # the 90 % credible interval
    high: float
    share: float  # expected share of the traffic now
    updated_at: datetime | None


class BanditOut(BaseModel):
    system: str
    mode: str
    floor: float
    arms: list[ArmOut]


def _out(rollout: Rollout) -> dict[str, Any]:
    return rollout_actions.public(rollout, rollout.system.slug)


@router.get("/systems/{system}/rollouts", response=RolloutsOut, auth=ANYONE)
def list_rollouts(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's rollouts, newest first: anyone with a role, and the system's own key."""
    entry = system_for(request, system)
    s = AISystem.objects.get(id=entry.id)
    return {"system": s.slug, "rollouts": [rollout_actions.public(r, s.slug) for r in rollout_actions.of_system(s)]}


@router.post("/systems/{system}/rollouts", response={201: RolloutOut, 409: ErrorOut})
def start_rollout(request: HttpRequest, system: str, payload: RolloutIn) -> tuple[int, dict[str, Any]]:
    """An admin starts a rollout of a candidate hosted model in for a baseline, with a reason."""
    who = require_person(request, access.ADMIN)
    r = rollout_actions.start(who.user, system, payload.candidate, payload.baseline, payload.steps,
                              payload.step_seconds, payload.guard.model_dump() if payload.guard else None,
                              payload.reason)
    return 201, _out(r)


@router.post("/rollouts/{rollout_id}/cancel", response={200: RolloutOut, 409: ErrorOut})
def cancel_rollout(request: HttpRequest, rollout_id: str, payload: ReasonIn) -> dict[str, Any]:
    """An admin cancels a running rollout, with a reason: the candidate is disabled."""
    who = require_person(request, access.ADMIN)
    return _out(rollout_actions.cancel(who.user, numbered(rollout_id, "rol", "rollout"), payload.reason))


@router.post("/rollouts/{rollout_id}/advance", response={200: RolloutOut, 409: ErrorOut})
def advance_rollout(request: HttpRequest, rollout_id: str, payload: ReasonIn) -> dict[str, Any]:
    """An admin moves a running rollout to its next step now, with a reason."""
    who = require_person(request, access.ADMIN)
    return _out(rollout_actions.advance(who.user, numbered(rollout_id, "rol", "rollout"), payload.reason))


@router.post("/rollouts/{rollout_id}/rollback", response={200: RolloutOut, 409: ErrorOut})
def rollback_rollout(request: HttpRequest, rollout_id: str, payload: ReasonIn) -> dict[str, Any]:
    """An admin rolls a running rollout back now, with a reason: the candidate is disabled."""
    who = require_person(request, access.ADMIN)
    return _out(rollout_actions.rollback(who.user, numbered(rollout_id, "rol", "rollout"), payload.reason))


@router.get("/systems/{system}/bandit", response=BanditOut, auth=ANYONE)
def get_bandit(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's bandit arms: each enabled voter's Beta posterior, pulls and share of the traffic."""
    entry = system_for(request, system)
    return bandit_arms.describe(AISystem.objects.get(id=entry.id))
