"""Writes by people: systems and policies, readiness assessments, kill switches, API keys, personal tokens.

Each action owns its transaction, writes its audit event in it, bumps the config epoch when
the gate must see the change, and sends live events on commit.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import IntegrityError, transaction
from django.utils import timezone

from oversight import audit, config, credentials, events, readiness
from oversight.errors import ActionError
from oversight.models import AISystem, ApiKey, KillSwitch, PersonalToken, PolicyVersion, Readiness, ReleaseRequest

User = Person | AnonymousUser | None
POLICY_FIELDS = (
    "name",
    "level",
    "confidence_threshold",
    "audit_sample_rate",
    "override_window_s",
    "review_sla_s",
    "review_expiry_s",
    "fallback",
    "window",
    "drift",
    "breaker",
    "guardrails",
    "fallback_rule",
    "loop_mitigation",
    "routing",
    "callback_url",
    "double_review_rate",
)


def _record_policy(system: AISystem, actor: User) -> None:
    user = actor if actor is not None and actor.is_authenticated else None
    PolicyVersion.objects.create(
        system=system,
        version=system.policy_version,
        policy=system.policy_dict(),
        created_by=user,
    )


def _readiness_rule(actor: User, rule: bool | None) -> bool:
    """Whether the level-3 readiness rule applies: always to people (and to ``rule=True``, e.g.
    policies as code); code that seeds systems with no person behind it (``actor`` None) is exempt."""
    return rule if rule is not None else actor is not None and actor.is_authenticated


@transaction.atomic(durable=True)
def create_system(actor: User, data: dict[str, Any], reason: str = "", *, readiness_rule: bool | None = None
                  ) -> AISystem:
    if AISystem.objects.filter(slug=data["slug"]).exists():
        raise ActionError("conflict", f"a system with slug {data['slug']!r} already exists", "slug")
    if _readiness_rule(actor, readiness_rule):
        readiness.check_level(int(data.get("level", 2)), None, None)
    fields = {k: data[k] for k in POLICY_FIELDS if k in data}
    fields.setdefault("name", data["slug"])
    if not fields["name"]:
        fields["name"] = data["slug"]
    try:
        with transaction.atomic():
            system = AISystem.objects.create(slug=data["slug"], **fields)
    except IntegrityError:  # another admin created the same slug a moment ago
        raise ActionError("conflict", f"a system with slug {data['slug']!r} already exists", "slug") from None
    _record_policy(system, actor)
    audit.record(actor, "system.create", system=system, target=system.slug, reason=reason, data=system.policy_dict())
    config.bump_epoch()
    events.send_on_commit([events.OVERVIEW_GROUP], {"type": "system", "system": system.slug, "action": "created"})
    return system


@transaction.atomic(durable=True)
def update_system(actor: User, slug: str, changes: dict[str, Any], reason: str = "", *,
                  readiness_rule: bool | None = None) -> AISystem:
    system = AISystem.objects.select_for_update(of=("self",)).filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}")
    if "level" in changes and _readiness_rule(actor, readiness_rule):
        now = current_readiness(system.id)
        readiness.check_level(int(changes["level"]), system.level, now.score if now else None,
                              now.answers if now else None)
    before = system.policy_dict()
    for key, value in changes.items():
        if key in POLICY_FIELDS:
            setattr(system, key, value)
    after = system.policy_dict()
    diff = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
    if not diff:
        return system
    reason = reason.strip()
    if not reason:
        raise ActionError("invalid", "say why: a reason is required to change a policy (it goes to the audit log)",
                          "reason")
    system.policy_version += 1
    system.save()
    _record_policy(system, actor)
    audit.record(actor, "policy.change", system=system, target=slug, reason=reason,
                 data={"version": system.policy_version, "changes": diff})
    config.bump_epoch()
    events.send_on_commit(
        [events.OVERVIEW_GROUP, events.system_group(slug)],
        {"type": "policy", "system": slug, "version": system.policy_version, "level": system.level},
    )
    return system


def apply_policy(actor: User, data: dict[str, Any], reason: str = "") -> tuple[AISystem, str]:
    """Create or update one system from a policies-as-code entry. Returns (system, what happened)."""
    slug = data["slug"]
    if AISystem.objects.filter(slug=slug).exists():
        before = AISystem.objects.get(slug=slug).policy_version
        system = update_system(actor, slug, {k: v for k, v in data.items() if k in POLICY_FIELDS}, reason,
                               readiness_rule=True)
        return system, "changed" if system.policy_version != before else "unchanged"
    return create_system(actor, data, reason, readiness_rule=True), "created"


# --- the readiness assessment (rules: oversight.readiness) ----------------------------------


def current_readiness(system_id: int) -> Readiness | None:
    """The assessment in force: the system's newest."""
    return Readiness.objects.filter(system_id=system_id).select_related("assessed_by").first()


@transaction.atomic(durable=True)
def assess_readiness(actor: User, slug: str, answers: dict[str, Any], note: str = "") -> Readiness:
    """Record an assessment: the row, its audit event and an epoch bump, so the very next decision
    is gated by its score. A level-3 system's score cannot drop below 4 (lower its level first)."""
    system = AISystem.objects.select_for_update(of=("self",)).filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}")
    checked = readiness.check_answers(answers)
    score = readiness.score(checked)
    readiness.check_assessment(system.level, score, checked)
    before = current_readiness(system.id)
    user = actor if actor is not None and actor.is_authenticated else None
    row = Readiness.objects.create(system=system, answers=checked, score=score, note=note.strip(), assessed_by=user)
    audit.record(actor, "readiness.assess", system=system, target=slug, reason=row.note, data={
        "answers": checked, "score": score, "previous_score": before.score if before else None})
    config.bump_epoch()
    return row


@transaction.atomic(durable=True)
def set_killswitch(
    actor: User, scope: str, engaged: bool, reason: str, system_slug: str | None = None, model: str = ""
) -> KillSwitch | ReleaseRequest:
    """Engage or release a kill switch. Releasing one that needs four eyes (``needs_second_admin``)
    does not release it: it returns the request that waits for a second admin."""
    reason = reason.strip()
    if engaged and not reason:
        raise ActionError("invalid", "say why: a reason is required to engage a kill switch", "reason")
    system = None
    if scope in (KillSwitch.Scope.SYSTEM, KillSwitch.Scope.MODEL):
        if not system_slug:
            raise ActionError("invalid", f"a {scope} kill switch needs the system's slug", "system")
        system = AISystem.objects.filter(slug=system_slug).first()
        if system is None:
            raise ActionError("not_found", f"no system {system_slug!r}", "system")
    if scope == KillSwitch.Scope.MODEL and not model.strip():
        raise ActionError("invalid", "a model kill switch needs the model's name", "model")
    if scope != KillSwitch.Scope.MODEL:
        model = ""
    switch, _ = KillSwitch.objects.select_for_update(of=("self",)).get_or_create(
        scope=scope, system=system, model=model.strip()
    )
    if not engaged and switch.engaged and needs_second_admin(switch):
        return _request_release(actor, switch, reason)  # asks for its reason in its own words
    if not engaged and not reason:
        raise ActionError("invalid", "say why: a reason is required to release a kill switch", "reason")
    if engaged:  # engaging again ends any release that was waiting
        ReleaseRequest.objects.filter(switch=switch, state=ReleaseRequest.State.PENDING).update(
            state=ReleaseRequest.State.WITHDRAWN, decided_at=timezone.now())
    return _apply_switch(actor, switch, engaged, reason)


def _switch_target(switch: KillSwitch) -> str:
    system = switch.system
    target = "global" if system is None else system.slug + (f"/{switch.model}" if switch.model else "")
    return f"{switch.scope}:{target}"


def _apply_switch(actor: User, switch: KillSwitch, engaged: bool, reason: str, data: dict[str, Any] | None = None
                  ) -> KillSwitch:
    user = actor if actor is not None and actor.is_authenticated else None
    system = switch.system
    switch.engaged = engaged
    switch.reason = reason
    switch.changed_by = user
    switch.save()
    audit.record(actor, "killswitch.engage" if engaged else "killswitch.release", system=system,
                 target=_switch_target(switch), reason=reason, data=data)
    config.bump_epoch()
    groups = [events.OVERVIEW_GROUP]
    if system is not None:
        groups.append(events.system_group(system.slug))
    events.send_on_commit(groups, {
        "type": "killswitch",
        "scope": switch.scope,
        "system": system.slug if system else None,
        "model": switch.model,
        "engaged": engaged,
        "reason": reason,
        "by": user.get_username() if user else "system",
        "at": timezone.now().isoformat(),
    })
    events.send_status_on_commit()  # the banner of every open page
    return switch


# --- four eyes: releasing what stops a critical system takes two admins ----------------------


def needs_second_admin(switch: KillSwitch) -> bool:
    """The global kill switch, and any kill switch of a level-1 system, is released only when a
    second admin approves the release."""
    return switch.scope == KillSwitch.Scope.GLOBAL or (switch.system is not None and switch.system.level == 1)


def _release_message(r: ReleaseRequest, action: str) -> dict[str, Any]:
    s = r.switch
    return {"type": "release_request", "action": action, "id": r.public_id, "scope": s.scope,
            "system": s.system.slug if s.system else None, "model": s.model, "state": r.state,
            "reason": r.reason, "requested_by": r.requested_by.get_username(),
            "decided_by": r.decided_by.get_username() if r.decided_by else None}


def _request_release(actor: User, switch: KillSwitch, reason: str) -> ReleaseRequest:
    if actor is None or not actor.is_authenticated:
        raise ActionError("forbidden", "releasing this kill switch needs two admins: ask as a person")
    waiting = ReleaseRequest.objects.filter(switch=switch, state=ReleaseRequest.State.PENDING).first()
    if waiting is not None:
        raise ActionError("conflict", f"a release of this kill switch is already waiting for a second admin "
                                      f"({waiting.public_id}, asked by {waiting.requested_by.get_username()})")
    if not reason:
        raise ActionError("invalid", "say why: the second admin reads the reason before approving", "reason")
    r = ReleaseRequest.objects.create(switch=switch, reason=reason, requested_by=actor)
    audit.record(actor, "killswitch.release_requested", system=switch.system, target=_switch_target(switch),
                 reason=reason, data={"request": r.public_id})
    groups = [events.OVERVIEW_GROUP] + ([events.system_group(switch.system.slug)] if switch.system else [])
    events.send_on_commit(groups, _release_message(r, "requested"))
    return r


def _pending(request_id: str) -> ReleaseRequest:
    """The request, locked after its switch (the order ``set_killswitch`` takes them in, so an admin
    engaging the switch again while another approves waits instead of deadlocking)."""
    raw = request_id.removeprefix("rel_")
    switch_id = ReleaseRequest.objects.filter(pk=int(raw)).values_list("switch_id", flat=True).first() \
        if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    if switch_id is not None:
        KillSwitch.objects.select_for_update().filter(pk=switch_id).first()
    r = (ReleaseRequest.objects.select_for_update(of=("self",)).select_related("switch__system", "requested_by")
         .filter(pk=int(raw)).first()) if switch_id is not None else None
    if r is None:
        raise ActionError("not_found", f"no release request {request_id!r}")
    if r.state != ReleaseRequest.State.PENDING:
        raise ActionError("conflict", f"release request {r.public_id} is already {r.state}")
    return r


@transaction.atomic(durable=True)
def approve_release(actor: Person, request_id: str) -> KillSwitch:
    """A second admin approves: the kill switch is released now, with the requester's reason."""
    r = _pending(request_id)
    if r.requested_by_id == actor.pk:
        raise ActionError("forbidden", "you asked for this release: a second admin must approve it")
    r.state, r.decided_by, r.decided_at = ReleaseRequest.State.APPROVED, actor, timezone.now()
    r.save()
    audit.record(actor, "killswitch.release_approved", system=r.switch.system, target=_switch_target(r.switch),
                 reason=r.reason, data={"request": r.public_id, "requested_by": r.requested_by.get_username()})
    groups = [events.OVERVIEW_GROUP] + ([events.system_group(r.switch.system.slug)] if r.switch.system else [])
    events.send_on_commit(groups, _release_message(r, "approved"))
    return _apply_switch(actor, r.switch, False, r.reason,
                         data={"request": r.public_id, "requested_by": r.requested_by.get_username()})


@transaction.atomic(durable=True)
def withdraw_release(actor: Person, request_id: str) -> ReleaseRequest:
    """The requester takes the request back; the switch stays engaged."""
    r = _pending(request_id)
    if r.requested_by_id != actor.pk:
        raise ActionError("forbidden", f"only {r.requested_by.get_username()}, who asked, can withdraw this request")
    r.state, r.decided_by, r.decided_at = ReleaseRequest.State.WITHDRAWN, actor, timezone.now()
    r.save()
    audit.record(actor, "killswitch.release_withdrawn", system=r.switch.system, target=_switch_target(r.switch),
                 reason=r.reason, data={"request": r.public_id})
    groups = [events.OVERVIEW_GROUP] + ([events.system_group(r.switch.system.slug)] if r.switch.system else [])
    events.send_on_commit(groups, _release_message(r, "withdrawn"))
    return r


def pending_releases() -> list[ReleaseRequest]:
    return list(ReleaseRequest.objects.filter(state=ReleaseRequest.State.PENDING)
                .select_related("switch__system", "requested_by").order_by("requested_at"))


@transaction.atomic(durable=True)
def create_api_key(actor: User, system: AISystem, name: str = "") -> tuple[ApiKey, str]:
    secret, prefix, digest = credentials.new_secret(credentials.API_KEY_PREFIX)
    user = actor if actor is not None and actor.is_authenticated else None
    key = ApiKey.objects.create(system=system, name=name, prefix=prefix, digest=digest, created_by=user)
    audit.record(actor, "apikey.create", system=system, target=prefix, data={"name": name})
    config.bump_epoch()
    return key, secret


@transaction.atomic(durable=True)
def revoke_api_key(actor: User, key: ApiKey) -> None:
    updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if updated:
        audit.record(actor, "apikey.revoke", system=key.system, target=key.prefix)
        config.bump_epoch()


@transaction.atomic(durable=True)
def create_personal_token(user: Person, name: str = "") -> tuple[PersonalToken, str]:
    secret, prefix, digest = credentials.new_secret(credentials.TOKEN_PREFIX)
    token = PersonalToken.objects.create(user=user, name=name, prefix=prefix, digest=digest)
    audit.record(user, "token.create", target=prefix, data={"name": name})
    return token, secret


@transaction.atomic(durable=True)
def revoke_personal_token(user: Person, token: PersonalToken) -> None:
    if PersonalToken.objects.filter(pk=token.pk, user=user, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit.record(user, "token.revoke", target=token.prefix)
