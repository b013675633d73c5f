"""The JSON API's endpoints for client services and admins (API.md): decisions, outcomes,
systems and policies, readiness assessments, kill switches, circuit breakers. Each one authenticates,
asks ``oversight.access``, calls one domain action and answers; the machinery (parser, renderer,
errors, auth) is ``oversight.jsonapi``.

Over ~400 lines on purpose: about thirty endpoints of a few lines each, in API.md's order, so the
core's whole API reads top to bottom; the apps' endpoints live in their own ``api.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from oversight import (
    access,
    actions,
    breaker_actions,
    breakers,
    config,
    decisions,
    drills,
    overrides,
    readiness,
    scoring,
    webhooks,
)
from oversight.jsonapi import (
    ANYONE,
    CLIENT,
    DECIDING,
    PEOPLE,
    ApiError,
    api,
    error_body,
    held_snapshot,
    json_response,
    numbered,
    principal,
    refresh,
    require_person,
    snapshot,
    system_for,
    validation_message,
)
from oversight.models import AISystem, Breaker, KillSwitch, Readiness, ReleaseRequest
from oversight.schemas import (
    BatchIn,
    BatchOut,
    BreakerIn,
    BreakerOut,
    BreakersOut,
    DecisionIn,
    DecisionOut,
    DrillIn,
    DrillOut,
    DrillsOut,
    ErrorOut,
    KillSwitchIn,
    KillSwitchState,
    OutcomeIn,
    OutcomeOut,
    OverrideIn,
    ReadinessIn,
    ReadinessOut,
    ReleaseRequestOut,
    SystemIn,
    SystemOut,
    SystemPatch,
    WebhookSecretOut,
    raw_text_storable,
)

# --- decisions (client service) -----------------------------------------------------------

client = Router(tags=["decisions"], auth=CLIENT)


#: ``?wait_ms=`` in the document (read by ``_wait_ms``, not by a parameter: the hot path parses no query).
WAIT_MS = {
    "name": "wait_ms", "in": "query", "required": False,
    "description": "Hosted models only: how long to wait for them to score, in milliseconds; past it the "
                   "fallback answers.",
    "schema": {"type": "integer", "minimum": 1, "maximum": scoring.MAX_WAIT_MS},
}


def _wait_ms(request: HttpRequest) -> int | None:
    value = request.GET.get("wait_ms")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or not 1 <= int(value) <= scoring.MAX_WAIT_MS:
        raise ApiError(422, "invalid", f"wait_ms must be a whole number of milliseconds from 1 to "
                       f"{scoring.MAX_WAIT_MS}, not {value[:20]!r}", "wait_ms")
    return int(value)


@client.post("/systems/{system}/decisions", response={200: DecisionOut, 201: DecisionOut, 409: ErrorOut},
             auth=DECIDING, openapi_extra={"parameters": [WAIT_MS]})
def submit_decision(request: HttpRequest, system: str, payload: DecisionIn) -> HttpResponse:
    """The hot path: gate the decision, store it (and its review item) in one statement, answer.
    Without a ``prediction``, the system's hosted models score it first (``?wait_ms=`` bounds the wait)."""
    result = _decide(request, system, payload, getattr(request, "_json_body", None))
    if result.error is not None:
        raise ApiError(409, "idempotency_conflict", str(result.error), "idempotency_key")
    return json_response(result.public(system), 200 if result.replayed else 201)


def _decide(request: HttpRequest, slug: str, payload: DecisionIn, raw: Any) -> decisions.Submitted:
    """Gated under the configuration this process holds, with no round trip to check it: the INSERT
    checks the epoch itself, and when a change was committed since (a switch, a key, a policy), the
    decision is gated again under the configuration in PostgreSQL. Hosted scoring reads the
    configuration as of now, as its worker does. Three changes committed while one decision is
    made (each within a millisecond or so) get a 503: nothing stored, send it again."""
    entry = system_for(request, slug, client_only=True, held=True)
    wait_ms = _wait_ms(request)
    for _ in range(3):
        if scoring.wanted(entry, payload):
            return scoring.submit(system_for(request, slug, client_only=True), payload, raw, wait_ms)
        result = decisions.submit_one(entry, payload, raw, as_of=held_snapshot(request).epoch)
        if not result.stale:
            return result
        refresh(request)
        entry = system_for(request, slug, client_only=True)
    raise ApiError(503, "unavailable", "the configuration changed three times while this decision was being made; "
                   "nothing was stored: send it again")


_DECISION_LIST = TypeAdapter(list[DecisionIn])


def _validate_items(
    items: list[Any], context: dict[str, Any] | None = None
) -> tuple[list[DecisionIn], list[Any], list[dict[str, Any] | None]]:
    """Validate a batch in one call; only when something is wrong, item by item to say which."""
    try:
        return _DECISION_LIST.validate_python(items, context=context), items, [None] * len(items)
    except PydanticValidationError:
        pass
    valid: list[DecisionIn] = []
    raws: list[Any] = []
    slots: list[dict[str, Any] | None] = []
    for i, raw in enumerate(items):
        try:
            valid.append(DecisionIn.model_validate(raw))
            raws.append(raw)
            slots.append(None)
        except PydanticValidationError as exc:
            message, field = validation_message(exc.errors())  # type: ignore[arg-type]
            slots.append(error_body("invalid", f"items[{i}]: {message}", field))
    return valid, raws, slots


def _submit_valid(entry: config.SystemEntry, valid: list[DecisionIn], raws: list[Any], wait_ms: int | None
                  ) -> list[decisions.Submitted]:
    """Items with predictions are stored together (one transaction, COPY for many); items without
    them, on a system with hosted models, are scored on the workers first. In order."""
    hosted = [i for i, p in enumerate(valid) if scoring.wanted(entry, p)]
    if not hosted:
        return decisions.submit(entry, valid, raws)
    scored = set(hosted)
    rest = [i for i in range(len(valid)) if i not in scored]
    out: list[decisions.Submitted | None] = [None] * len(valid)
    for i, r in zip(rest, decisions.submit(entry, [valid[i] for i in rest], [raws[i] for i in rest]) if rest
                    else [], strict=True):
        out[i] = r
    for i, r in zip(hosted, scoring.submit_many(entry, [valid[i] for i in hosted], [raws[i] for i in hosted],
                                                wait_ms), strict=True):
        out[i] = r
    return [r for r in out if r is not None]


@client.post("/systems/{system}/decisions/batch", response={200: BatchOut}, openapi_extra={"parameters": [WAIT_MS]})
def submit_batch(request: HttpRequest, system: str, payload: BatchIn) -> HttpResponse:
    entry = system_for(request, system, client_only=True)
    if not payload.items:
        raise ApiError(422, "invalid", "a batch needs at least one item (send them in \"items\")", "items")
    if len(payload.items) > settings.MAX_BATCH_ITEMS:
        raise ApiError(
            422, "batch_too_large",
            f"a batch holds at most {settings.MAX_BATCH_ITEMS} items; this one has {len(payload.items)}: split it",
            "items",
        )
    checked = {"text_checked": True} if raw_text_storable(request.body) else None
    valid, raws, slots = _validate_items(payload.items, checked)
    submitted = iter(_submit_valid(entry, valid, raws, _wait_ms(request)) if valid else [])
    results: list[dict[str, Any]] = []
    for slot in slots:
        if slot is not None:
            results.append(slot)
            continue
        r = next(submitted)
        if r.error is not None:
            results.append(error_body("idempotency_conflict", str(r.error), "idempotency_key"))
        else:
            body = r.public(entry.slug)
            body["replayed"] = r.replayed
            results.append(body)
    return json_response({"results": results})


@client.get("/decisions/{decision_id}", response=DecisionOut, auth=ANYONE)
def get_decision(request: HttpRequest, decision_id: str) -> dict[str, Any]:
    decision = access.decision_for(principal(request), decision_id)
    return decisions.public(decision, decision.system.slug)


@client.post("/decisions/{decision_id}/override", response={200: DecisionOut, 409: ErrorOut}, auth=PEOPLE)
def override_decision(request: HttpRequest, decision_id: str, payload: OverrideIn) -> dict[str, Any]:
    """A person replaces a released decision's output within the system's override window (API.md)."""
    who = require_person(request, *access.REVIEWERS)
    decision = access.decision_for(who, decision_id)
    changed = overrides.override(who.user, decision.id, payload.output, note=payload.note,
                                 output_given="output" in payload.model_fields_set)
    return decisions.public(changed, changed.system.slug)


@client.post("/decisions/{decision_id}/outcome", response={201: OutcomeOut})
def post_outcome(request: HttpRequest, decision_id: str, payload: OutcomeIn) -> tuple[int, dict[str, Any]]:
    if payload.label is None and payload.reward is None:
        raise ApiError(422, "invalid", "send a label or a reward (0.0–1.0)", "label")
    who = principal(request)
    if not who.is_client:
        raise ApiError(403, "forbidden", "outcomes come from the system's client service (API key)")
    decision = access.decision_for(who, decision_id)
    outcome = decisions.record_outcome(decision, payload)
    return 201, {
        "id": outcome.id,
        "decision": decision.public_id,
        "source": outcome.source,
        "label": outcome.label,
        "reward": outcome.reward,
        "observed_at": outcome.observed_at,
    }


# --- systems and policies -----------------------------------------------------------------

systems = Router(tags=["systems"], auth=PEOPLE)


def _switch_state(k: KillSwitch) -> dict[str, Any]:
    return {
        "scope": k.scope,
        "system": k.system.slug if k.system else None,
        "model": k.model,
        "engaged": k.engaged,
        "reason": k.reason,
        "changed_by": k.changed_by.get_username() if k.changed_by else None,
        "changed_at": k.changed_at,
    }


def _breaker_state(b: Breaker) -> dict[str, Any]:
    return {
        "model": b.model, "state": b.state, "reason": b.reason, "manual": b.manual,
        "awaiting_person": b.awaiting_person, "changed_by": b.changed_by.get_username() if b.changed_by else None,
        "changed_at": b.changed_at,
    }


def system_out(s: AISystem, switches: list[KillSwitch], snap: config.Snapshot,
               breakers_of: dict[int, list[Breaker]] | None = None) -> dict[str, Any]:
    entry = snap.systems_by_id.get(s.id)
    reason = entry.kills.stop_reason if entry is not None else None
    if breakers_of is None:
        breakers_of = _breakers(s.id)
    return {
        **s.policy_dict(),
        "policy_version": s.policy_version,
        "webhook_secret_set": bool(s.webhook_secret),
        "killed": reason is not None,
        "kill_reason": reason,
        "killswitches": [_switch_state(k) for k in switches if k.system_id == s.id],
        "breakers": [_breaker_state(b) for b in breakers_of.get(s.id, [])],
    }


def _switches() -> list[KillSwitch]:
    return list(KillSwitch.objects.select_related("system", "changed_by"))


def _breakers(system_id: int | None = None) -> dict[int, list[Breaker]]:
    qs = Breaker.objects.select_related("changed_by").order_by("system_id", "model")
    out: dict[int, list[Breaker]] = {}
    for b in qs.filter(system_id=system_id) if system_id is not None else qs:
        out.setdefault(b.system_id, []).append(b)
    return out


@systems.get("/systems", response=list[SystemOut])
def list_systems(request: HttpRequest) -> list[dict[str, Any]]:
    require_person(request)
    switches, snap, tripped = _switches(), snapshot(request), _breakers()  # one epoch read for the whole list
    return [system_out(s, switches, snap, tripped) for s in AISystem.objects.all()]


@systems.get("/systems/{system}", response=SystemOut, auth=ANYONE)
def get_system(request: HttpRequest, system: str) -> dict[str, Any]:
    entry = system_for(request, system)
    switches = _switches()
    return system_out(AISystem.objects.get(id=entry.id), switches, snapshot(request))


@systems.post("/systems", response={201: SystemOut, 409: ErrorOut})
def create_system(request: HttpRequest, payload: SystemIn) -> tuple[int, dict[str, Any]]:
    who = require_person(request, access.ADMIN)
    created = actions.create_system(who.user, payload.model_dump())
    switches = _switches()
    return 201, system_out(created, switches, config.cache.current())  # after the change's commit


@systems.patch("/systems/{system}", response=SystemOut)
def patch_system(request: HttpRequest, system: str, payload: SystemPatch) -> dict[str, Any]:
    who = require_person(request, access.ADMIN)
    changes = payload.model_dump(exclude_unset=True, exclude={"reason"})
    if "fallback" not in payload.model_fields_set:
        changes.pop("fallback", None)
    changes = {k: v for k, v in changes.items() if v is not None or k == "fallback"}
    updated = actions.update_system(who.user, system, changes, payload.reason)
    switches = _switches()
    return system_out(updated, switches, config.cache.current())  # after the change's commit


@systems.post("/systems/{system}/webhook-secret", response={201: WebhookSecretOut})
def new_webhook_secret(request: HttpRequest, system: str) -> tuple[int, dict[str, Any]]:
    """A new secret for signing the system's webhooks, shown in this answer only (API.md, Webhooks)."""
    who = require_person(request, access.ADMIN)
    entry = system_for(request, system)
    secret = webhooks.set_secret(AISystem.objects.get(id=entry.id), who.user)
    return 201, {"system": entry.slug, "secret": secret}


@systems.get("/killswitches", response=list[KillSwitchState])
def list_killswitches(request: HttpRequest) -> list[dict[str, Any]]:
    require_person(request)
    return [_switch_state(k) for k in KillSwitch.objects.select_related("system", "changed_by")]


@systems.post("/killswitches", response={200: KillSwitchState, 202: ReleaseRequestOut, 404: ErrorOut, 409: ErrorOut})
def flip_killswitch(request: HttpRequest, payload: KillSwitchIn) -> tuple[int, dict[str, Any]]:
    """Engage or release. Releasing the global switch, or one of a level-1 system, answers 202 with
    the request that waits for a second admin (four eyes)."""
    who = require_person(request, access.ADMIN)
    done = actions.set_killswitch(
        who.user, payload.scope, payload.engaged, payload.reason, payload.system, payload.model
    )
    if isinstance(done, ReleaseRequest):
        return 202, _release_state(done)
    return 200, _switch_state(KillSwitch.objects.select_related("system", "changed_by").get(pk=done.pk))


def _release_state(r: ReleaseRequest) -> dict[str, Any]:
    return {
        "id": r.public_id, "status": "pending_approval" if r.state == ReleaseRequest.State.PENDING else r.state,
        "scope": r.switch.scope, "system": r.switch.system.slug if r.switch.system else None,
        "model": r.switch.model, "reason": r.reason, "requested_by": r.requested_by.get_username(),
        "requested_at": r.requested_at, "decided_by": r.decided_by.get_username() if r.decided_by else None,
        "decided_at": r.decided_at,
    }


@systems.get("/killswitches/releases", response=list[ReleaseRequestOut])
def list_releases(request: HttpRequest) -> list[dict[str, Any]]:
    """Releases waiting for a second admin: anyone with a role sees them."""
    require_person(request)
    return [_release_state(r) for r in actions.pending_releases()]


@systems.post("/killswitches/releases/{request_id}/approve", response={200: KillSwitchState, 409: ErrorOut})
def approve_release(request: HttpRequest, request_id: str) -> dict[str, Any]:
    """A second admin approves a release: the switch is released now (not your own request)."""
    who = require_person(request, access.ADMIN)
    switch = actions.approve_release(who.user, numbered(request_id, "rel", "release request"))
    return _switch_state(KillSwitch.objects.select_related("system", "changed_by").get(pk=switch.pk))


@systems.post("/killswitches/releases/{request_id}/withdraw", response={200: ReleaseRequestOut, 409: ErrorOut})
def withdraw_release(request: HttpRequest, request_id: str) -> dict[str, Any]:
    """The admin who asked takes the request back; the switch stays engaged."""
    who = require_person(request, access.ADMIN)
    r = actions.withdraw_release(who.user, numbered(request_id, "rel", "release request"))
    return _release_state(ReleaseRequest.objects.select_related("switch__system", "requested_by", "decided_by")
                          .get(pk=r.pk))


@systems.get("/systems/{system}/breakers", response=BreakersOut, auth=ANYONE)
def list_breakers(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's breakers (its own and its models') and their timeline: anyone with a role, and
    the system's own key."""
    entry = system_for(request, system)
    s = AISystem.objects.get(id=entry.id)
    return {
        "system": s.slug,
        "policy": dataclasses.asdict(breakers.Policy.from_json(s.breaker)),
        "breakers": [_breaker_state(b) for b in _breakers(s.id).get(s.id, [])],
        "events": [
            {"model": e.model, "from_state": e.from_state, "to_state": e.to_state, "reason": e.reason,
             "metric": e.metric, "value": e.value, "threshold": e.threshold, "by": e.actor_label, "at": e.at}
            for e in breaker_actions.timeline(s)
        ],
    }


@systems.post("/systems/{system}/breakers", response={200: BreakerOut, 409: ErrorOut})
def set_breaker(request: HttpRequest, system: str, payload: BreakerIn) -> dict[str, Any]:
    """An admin opens or closes a breaker by hand, with a reason."""
    who = require_person(request, access.ADMIN)
    b = breaker_actions.set_by_hand(who.user, system, payload.state, payload.reason, payload.model)
    return _breaker_state(Breaker.objects.select_related("changed_by").get(pk=b.pk))



def _assessment(r: Readiness) -> dict[str, Any]:
    return {"score": r.score, "answers": r.answers, "note": r.note,
            "assessed_by": r.assessed_by.get_username() if r.assessed_by else None, "assessed_at": r.assessed_at}


def readiness_state(s: AISystem) -> dict[str, Any]:
    """A system's readiness: the assessment in force, what it misses, its history, the questions."""
    rows = list(Readiness.objects.filter(system=s).select_related("assessed_by")[:20])
    current = rows[0] if rows else None
    score = current.score if current else None
    return {
        "system": s.slug, "level": s.level, "score": score, "max_score": readiness.MAX_SCORE,
        "holds_decisions": readiness.hold_reason(score) is not None,
        "level_3_allowed": score is not None and score >= readiness.LEVEL_3_MIN_SCORE,
        "missing": [q.key for q in readiness.missing(current.answers)] if current else [],
        "current": _assessment(current) if current else None,
        "history": [_assessment(r) for r in rows],
        "questions": [{"key": q.key, "text": q.text,
                       "choices": [{"key": c.key, "label": c.label, "points": c.points} for c in q.choices]}
                      for q in readiness.QUESTIONS],
    }


@systems.get("/systems/{system}/readiness", response=ReadinessOut, auth=ANYONE)
def get_readiness(request: HttpRequest, system: str) -> dict[str, Any]:
    """The readiness assessment in force and its history: anyone with a role, and the system's own key."""
    entry = system_for(request, system)
    return readiness_state(AISystem.objects.get(id=entry.id))


@systems.put("/systems/{system}/readiness", response=ReadinessOut)
def put_readiness(request: HttpRequest, system: str, payload: ReadinessIn) -> dict[str, Any]:
    """An admin records an assessment; the very next decision is gated by its score."""
    who = require_person(request, access.ADMIN)
    row = actions.assess_readiness(who.user, system, payload.answers, payload.note)
    return readiness_state(AISystem.objects.get(pk=row.system_id))


# --- chaos drills (oversight.drills) ----------------------------------------------------------

@systems.post("/systems/{system}/drills", response={201: DrillOut, 409: ErrorOut})
def start_drill(request: HttpRequest, system: str, payload: DrillIn) -> tuple[int, dict[str, Any]]:
    """An admin starts a drill: for ``minutes``, a ``share`` of the system's decisions meet a failing model."""
    who = require_person(request, access.ADMIN)
    d = drills.start(who.user, system, payload.kind, payload.minutes, payload.share, payload.reason)
    return 201, drills.public(d, system)


@systems.post("/drills/{drill_id}/stop", response={200: DrillOut, 409: ErrorOut})
def stop_drill(request: HttpRequest, drill_id: str) -> dict[str, Any]:
    """An admin ends a running drill early; its report follows within 15 s."""
    who = require_person(request, access.ADMIN)
    d = drills.stop(who.user, numbered(drill_id, "drl", "drill"))
    return drills.public(d, d.system.slug)


@systems.get("/systems/{system}/drills", response=DrillsOut)
def list_drills(request: HttpRequest, system: str) -> dict[str, Any]:
    """The system's drills, newest first, with their reports: anyone with a role."""
    require_person(request)
    s = AISystem.objects.filter(slug=system).first()
    if s is None:
        raise ApiError(404, "not_found", f"no system {system!r}", "system")
    return {"system": s.slug, "drills": [drills.public(d, s.slug) for d in drills.of_system(s)]}

api.add_router("", client)
api.add_router("", systems)
