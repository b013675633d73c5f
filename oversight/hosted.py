"""Registering a system's hosted models (admins: API, the system's page, ``apply_policies``).

Each change is one transaction: the row, an audit event, a config-epoch bump (the very next
decision is scored by the new set of models). A model is checked before it is stored: a dotted
path must import here (the workers run the same code), an HTTP model server must answer.
"""

from __future__ import annotations

from typing import Any

import httpx
from django.db import IntegrityError, transaction
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from oversight import adapters, audit, config
from oversight.errors import ActionError
from oversight.models import AISystem, HostedModel

REACH_TIMEOUT_S = 2.0


class HostedModelIn(BaseModel):
    """A hosted model as an admin registers it (API body, form, policies file)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
    kind: str = Field(pattern="^(python|http)$")
    target: str = Field(min_length=1, max_length=500)
    protocol: str = Field(default="json", pattern="^(json|v2)$")
    role: str = Field(default="voter", pattern="^(voter|context)$")
    weight: float = Field(default=1.0, ge=0.0, le=1000.0, allow_inf_nan=False)
    timeout_ms: int = Field(default=500, ge=1, le=30_000)
    enabled: bool = True

    @field_validator("target")
    @classmethod
    def _target_fits_kind(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        kind = info.data.get("kind")
        if kind == "http" and not value.startswith(("http://", "https://")):
            raise ValueError("an HTTP model's target is its URL, starting with http:// or https://")
        if kind == "python" and value.startswith(("http://", "https://")):
            raise ValueError('a URL is an HTTP model: set kind to "http"')
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol_fits_kind(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "python" and value != "json":
            raise ValueError('protocol "v2" is for HTTP model servers')
        return value


class HostedModelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(default=None, min_length=1, max_length=500)
    protocol: str | None = Field(default=None, pattern="^(json|v2)$")
    role: str | None = Field(default=None, pattern="^(voter|context)$")
    weight: float | None = Field(default=None, ge=0.0, le=1000.0, allow_inf_nan=False)
    timeout_ms: int | None = Field(default=None, ge=1, le=30_000)
    enabled: bool | None = None


def check_target(kind: str, target: str) -> None:
    """Refuse a model that cannot work: a dotted path that does not import, a URL nobody answers at."""
    if kind == "python":
        try:
            adapters.load_callable(target)
        except adapters.ImportFailed as exc:
            raise ActionError("invalid", f"the dotted path does not import: {exc}", "target") from exc
        return
    try:
        # Any HTTP answer means a server is there (a model server may refuse a bare GET).
        httpx.get(target, timeout=REACH_TIMEOUT_S)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # ValueError: a host name idna refuses
        raise ActionError("invalid", f"the model URL {target} cannot be reached ({type(exc).__name__}: {exc}); "
                          "check the address and that the model server is running", "target") from exc


def spec_of(m: HostedModel) -> adapters.Spec:
    return adapters.Spec(m.name, m.kind, m.target, m.protocol, m.role, m.weight, m.timeout_ms)


def public(m: HostedModel) -> dict[str, Any]:
    return {"name": m.name, "kind": m.kind, "target": m.target, "protocol": m.protocol, "role": m.role,
            "weight": m.weight, "timeout_ms": m.timeout_ms, "enabled": m.enabled, "created_at": m.created_at}


def validated(data: dict[str, Any], schema: type[BaseModel] = HostedModelIn) -> BaseModel:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ActionError("invalid", f"{field}: {msg}" if field else msg, field) from exc


def _system(slug: str) -> AISystem:
    system = AISystem.objects.filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}", "system")
    return system


def models_of(slug: str) -> list[HostedModel]:
    return list(HostedModel.objects.filter(system=_system(slug)))


def register(actor: Any, slug: str, data: dict[str, Any]) -> HostedModel:
    """Add a hosted model to a system (409 when the name is taken). The model is checked first,
    outside the transaction (reaching a model server may take up to two seconds)."""
    payload = validated(data)
    assert isinstance(payload, HostedModelIn)
    system = _system(slug)
    if payload.enabled:
        check_target(payload.kind, payload.target)
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        try:
            with transaction.atomic():
                m = HostedModel.objects.create(system=system, created_by=user, **payload.model_dump())
        except IntegrityError as exc:
            raise ActionError("conflict", f"{slug} already has a model named {payload.name!r}", "name") from exc
        audit.record(actor, "model.register", system=system, target=m.name, data=payload.model_dump())
        config.bump_epoch()
    return m


def update(actor: Any, slug: str, name: str, data: dict[str, Any], reason: str = "") -> HostedModel:
    """Change a hosted model's weight, timeout, target or role, or switch it off and on. A model that
    will answer at a new target, or again, is checked first, outside the transaction."""
    payload = validated(data, HostedModelPatch)
    changes = payload.model_dump(exclude_none=True)
    system = _system(slug)
    current = HostedModel.objects.filter(system=system, name=name).first()
    if current is None:
        raise ActionError("not_found", f"{slug} has no model named {name!r}", "name")
    will = {**public(current), **changes}
    validated({k: v for k, v in will.items() if k != "created_at"})  # the whole model still fits
    if will["enabled"] and ("target" in changes or (changes.get("enabled") and not current.enabled)):
        check_target(will["kind"], will["target"])
    with transaction.atomic():
        return _update(actor, system, name, changes, reason)


def _update(actor: Any, system: AISystem, name: str, changes: dict[str, Any], reason: str) -> HostedModel:
    m = HostedModel.objects.select_for_update().filter(system=system, name=name).first()
    if m is None:
        raise ActionError("not_found", f"{system.slug} has no model named {name!r}", "name")
    before = public(m)
    for k, v in changes.items():
        setattr(m, k, v)
    m.save()
    audit.record(actor, "model.update", system=system, target=m.name, reason=reason,
                 data={k: {"from": before[k], "to": v} for k, v in changes.items() if before[k] != v})
    config.bump_epoch()
    return m


@transaction.atomic
def remove(actor: Any, slug: str, name: str, reason: str = "") -> None:
    system = _system(slug)
    m = HostedModel.objects.filter(system=system, name=name).first()
    if m is None:
        raise ActionError("not_found", f"{slug} has no model named {name!r}", "name")
    snapshot = public(m)
    m.delete()
    audit.record(actor, "model.remove", system=system, target=name, reason=reason,
                 data={k: v for k, v in snapshot.items() if k != "created_at"})
    config.bump_epoch()


def apply(actor: Any, slug: str, data: dict[str, Any], reason: str = "") -> str:
    """Policies as code: register the model, or bring the registered one in line with ``data``.
    Says what happened: created, changed or unchanged."""
    payload = validated(data)
    assert isinstance(payload, HostedModelIn)
    current = HostedModel.objects.filter(system__slug=slug, name=payload.name).first()
    if current is None:
        register(actor, slug, data)
        return "created"
    if current.kind != payload.kind:
        raise ActionError("conflict", f"{payload.name} is a {current.kind} model; remove it to register it as "
                          f"{payload.kind}", "kind")
    wanted = payload.model_dump(exclude={"name", "kind"})
    changes = {k: v for k, v in wanted.items() if getattr(current, k) != v}
    if not changes:
        return "unchanged"
    update(actor, slug, payload.name, changes, reason)
    return "changed"
