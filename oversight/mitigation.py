"""Feedback-loop mitigation: when a system's feedback-loop alert fires, serve a larger share of its
decisions from a non-model source and lower its model's weight — by itself or after a click, as the
system's policy says — and record that it did.

The policy field ``loop_mitigation``: ``{"mode": "off" | "auto" | "click", "exploration_share": 0.15,
"model_weight": 0.5}`` (defaults: mode ``click``, share 0.15 — the seed's 10–15 % randomness —
weight 0.5). While a mitigation is active, a released decision is, with probability
``exploration_share``, answered from the non-model source instead: the system's fallback (its
``fallback_rule`` when it has one), route ``fallback``, with the reason. ``model_weight`` is kept
with the mitigation, not applied: a hosted ensemble's weights are relative, so scaling every voter
alike would change nothing, and which voters are "the model" the loop runs through is not known.

``dashboards/breaker_job.py`` starts an ``auto`` mitigation when the alert opens and ends it when
the alert is resolved; ``click`` mitigations are started and ended by an admin (the system page,
or ``POST /api/v1/systems/{system}/mitigation``). Each start and end is audited and pushed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import transaction
from django.utils import timezone

from oversight import audit, config, events, gate
from oversight.errors import ActionError
from oversight.models import AISystem, LoopMitigation

User = Person | AnonymousUser | None
JOB = "feedback-loop monitor"
MODES = ("off", "auto", "click")


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str = "click"
    exploration_share: float = 0.15
    model_weight: float = 0.5

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Policy:
        d = data or {}
        return cls(mode=d.get("mode", "click"), exploration_share=d.get("exploration_share", 0.15),
                   model_weight=d.get("model_weight", 0.5))


def apply(active: tuple[float, float] | None, verdict: gate.Verdict, draw: float, fallback: Any) -> gate.Verdict:
    """A released decision served from the non-model source for the mitigation's share (``active``:
    ``(exploration_share, model_weight)`` from the gate's snapshot; ``draw``: uniform in [0, 1));
    anything else unchanged."""
    if active is None or verdict.status != gate.RELEASED or draw >= active[0]:
        return verdict
    return replace(verdict, status=gate.FALLBACK, route=gate.ROUTE_FALLBACK, output=fallback, audit=False, reasons=[
        *verdict.reasons,
        f"feedback-loop mitigation: in the {active[0]:.0%} share served from a non-model source",
        "answered with the system's fallback output",
    ])


def _push(system: AISystem, m: LoopMitigation, action: str) -> None:
    events.send_on_commit([events.OVERVIEW_GROUP, events.system_group(system.slug)], {
        "type": "mitigation", "system": system.slug, "action": action, "active": m.ended_at is None,
        "exploration_share": m.exploration_share, "model_weight": m.model_weight, "reason": m.reason,
        "by": m.started_by if action == "start" else m.ended_by,
    })


def describe(system: AISystem) -> dict[str, Any]:
    """The system's mitigation as the API and the system page show it: the policy, what is active,
    and the newest 20 (history)."""
    rows = list(LoopMitigation.objects.filter(system=system)[:20])
    now = next((m for m in rows if m.ended_at is None), None)
    p = Policy.from_json(system.loop_mitigation)
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


def current(system_id: int) -> LoopMitigation | None:
    return LoopMitigation.objects.filter(system_id=system_id, ended_at__isnull=True).first()


@transaction.atomic(durable=True)
def start(actor: User, slug: str, reason: str, *, auto: bool = False, now: datetime | None = None) -> LoopMitigation:
    """Start mitigating (a person's click, or the monitor for ``auto`` policies)."""
    reason = reason.strip()
    if not reason:
        raise ActionError("invalid", "say why: a reason is required to start a mitigation", "reason")
    system = AISystem.objects.select_for_update(of=("self",)).filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}")
    policy = Policy.from_json(system.loop_mitigation)
    if policy.mode == "off":
        raise ActionError("conflict", f"feedback-loop mitigation is off in {slug}'s policy (loop_mitigation.mode)")
    if current(system.id) is not None:
        raise ActionError("conflict", f"a feedback-loop mitigation is already active on {slug}")
    user = actor if actor is not None and actor.is_authenticated else None
    by = user.get_username() if user is not None else JOB
    m = LoopMitigation.objects.create(system=system, exploration_share=policy.exploration_share,
                                      model_weight=policy.model_weight, reason=reason, auto=auto,
                                      started_by=by, started_at=now or timezone.now())
    audit.record(user, "mitigation.start", system=system, target=slug, reason=reason, actor_label=by,
                 data={"exploration_share": m.exploration_share, "model_weight": m.model_weight, "auto": auto})
    config.bump_epoch()
    _push(system, m, "start")
    return m


@transaction.atomic(durable=True)
def stop(actor: User, slug: str, reason: str, *, now: datetime | None = None) -> LoopMitigation:
    reason = reason.strip()
    if not reason:
        raise ActionError("invalid", "say why: a reason is required to end a mitigation", "reason")
    system = AISystem.objects.filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}")
    m = LoopMitigation.objects.select_for_update().filter(system=system, ended_at__isnull=True).first()
    if m is None:
        raise ActionError("conflict", f"no feedback-loop mitigation is active on {slug}")
    user = actor if actor is not None and actor.is_authenticated else None
    m.ended_at, m.ended_by, m.end_reason = now or timezone.now(), user.get_username() if user else JOB, reason
    m.save()
    audit.record(user, "mitigation.end", system=system, target=slug, reason=reason, actor_label=m.ended_by,
                 data={"started_at": m.started_at.isoformat(), "auto": m.auto})
    config.bump_epoch()
    _push(system, m, "end")
    return m
