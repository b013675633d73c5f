"""The JSON API's hosted-model endpoints: a system's models, registered by admins; mounted in urls.py."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from pydantic import BaseModel, Field

from oversight import access, hosted
from oversight.jsonapi import ANYONE, PEOPLE, require_person, system_for
from oversight.schemas import ErrorOut

router = Router(tags=["hosted models"], auth=PEOPLE)


class HostedModelOut(BaseModel):
    name: str
    kind: str
    target: str
    protocol: str
    role: str
    weight: float
    timeout_ms: int
    enabled: bool
    created_at: Any


class HostedModelPatchIn(hosted.HostedModelPatch):
    reason: str = Field(default="", max_length=2000)


@router.get("/systems/{system}/models", response=list[HostedModelOut], auth=ANYONE)
def list_models(request: HttpRequest, system: str) -> list[dict[str, Any]]:
    """The system's hosted models: anyone with a role, and the system's own key."""
    entry = system_for(request, system)
    return [hosted.public(m) for m in hosted.models_of(entry.slug)]


@router.post("/systems/{system}/models", response={201: HostedModelOut, 409: ErrorOut})
def register_model(request: HttpRequest, system: str, payload: hosted.HostedModelIn) -> tuple[int, dict[str, Any]]:
    """An admin registers a model: a Python callable (``kind: python``, ``target: package.module:function``)
    or an HTTP model server (``kind: http``, ``target: URL``, ``protocol: json | v2``)."""
    who = require_person(request, access.ADMIN)
    return 201, hosted.public(hosted.register(who.user, system, payload.model_dump()))


@router.patch("/systems/{system}/models/{name}", response=HostedModelOut)
def update_model(request: HttpRequest, system: str, name: str, payload: HostedModelPatchIn) -> dict[str, Any]:
    """An admin changes a model's weight, timeout, target or role, or switches it off (``enabled``)."""
    who = require_person(request, access.ADMIN)
    changes = payload.model_dump(exclude_unset=True, exclude={"reason"})
    return hosted.public(hosted.update(who.user, system, name, changes, payload.reason))


@router.delete("/systems/{system}/models/{name}", response={204: None})
def remove_model(request: HttpRequest, system: str, name: str, reason: str = "") -> tuple[int, None]:
    """An admin removes a model (decisions keep its votes)."""
    who = require_person(request, access.ADMIN)
    hosted.remove(who.user, system, name, reason)
    return 204, None
