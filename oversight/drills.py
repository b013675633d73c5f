"""Chaos drills: for a few minutes, a share of a system's decisions meets a model that fails.

An admin starts one on a system with a reason: the model raises an error, answers garbage, or
answers after its deadline, for 1–60 minutes, for a share of decisions (default all of them). The
gate reads the running drill from its cached snapshot (``config.SystemEntry.drill``) and gives each
affected decision the fallback, route ``fallback``, with the drill in its reasons and its
``failure`` stored; the performance job counts failures per window (``gate.error_rate``,
``gate.deadline_miss_rate``) and the breakers trip on them. One drill runs per system at a time.
It ends on time (``dashboards.tasks.finish_drills``, every 15 s) or when an admin stops it; then
``dashboards.drill_report`` writes its report (what tripped, how fast, what the clients received).

Each write owns its transaction: the row, the audit event (``drill.start``, ``drill.end``), a
config-epoch bump (so every process's gate sees it at once) and a live push on commit.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import IntegrityError, transaction
from django.utils import timezone

from oversight import audit, config, events
from oversight.errors import ActionError
from oversight.models import AISystem, Drill

User = Person | AnonymousUser | None
KINDS: dict[str, str] = dict(Drill.Kind.choices)
MIN_MINUTES, MAX_MINUTES = 1, 60
ON_TIME = "drills"  # who ends a drill whose time is up


def running(drill: Drill, now: datetime | None = None) -> bool:
    """Whether the drill still injects failures."""
    return drill.ended_at is None and drill.ends_at > (now or timezone.now())


def describe(drill: Drill) -> str:
    """The drill in words: "the model raises an error for 50 % of decisions"."""
    share = "every decision" if drill.share >= 1 else f"{drill.share:.0%} of decisions".replace("%", " %")
    return f"{KINDS.get(drill.kind, drill.kind)} for {share}"


def public(drill: Drill, slug: str, now: datetime | None = None) -> dict[str, Any]:
    """A drill as the API and the pages show it."""
    return {
        "id": drill.public_id, "system": slug, "kind": drill.kind, "share": drill.share, "reason": drill.reason,
        "what": describe(drill), "started_by": drill.started_by.get_username() if drill.started_by else None,
        "started_at": drill.started_at, "ends_at": drill.ends_at, "ended_at": drill.ended_at,
        "ended_by": drill.ended_by or None, "running": running(drill, now), "report": drill.report,
    }


def message(drill: Drill, slug: str, state: str) -> dict[str, Any]:
    """The live push (type ``drill``): ``started``, ``ended`` or ``report``."""
    return {"type": "drill", "system": slug, "id": drill.public_id, "kind": drill.kind, "share": drill.share,
            "state": state, "ends_at": drill.ends_at.isoformat(),
            "ended_at": drill.ended_at.isoformat() if drill.ended_at else None}


def _push(drill: Drill, slug: str, state: str) -> None:
    events.send_on_commit([events.OVERVIEW_GROUP, events.system_group(slug)], message(drill, slug, state))


def _checked(kind: str, minutes: Any, share: Any, reason: str) -> tuple[int, float, str]:
    if kind not in KINDS:
        raise ActionError("invalid", f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "kind")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise ActionError("invalid", f"a drill lasts {MIN_MINUTES} to {MAX_MINUTES} minutes (whole minutes), "
                                     f"not {minutes!r}", "minutes")
    if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share) \
            or not 0 < share <= 1:
        raise ActionError("invalid", f"share is the part of decisions the drill affects: above 0 and at most 1, "
                                     f"not {share!r}", "share")
    reason = reason.strip()
    if not reason:
        raise ActionError("invalid", "say why: a reason is required to start a drill", "reason")
    return minutes, float(share), reason


@transaction.atomic(durable=True)
def start(actor: User, slug: str, kind: str, minutes: Any, share: Any = 1.0, reason: str = "",
          now: datetime | None = None) -> Drill:
    """Start a drill on a system (admins; the caller checks the role). A second one while one runs
    on the system is a conflict."""
    minutes, share, reason = _checked(kind, minutes, share, reason)
    system = AISystem.objects.select_for_update().filter(slug=slug).first()  # one start at a time per system
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}", "system")
    now = now or timezone.now()
    current = Drill.objects.filter(system=system, ended_at__isnull=True).first()
    if current is not None:
        if running(current, now):
            raise ActionError("conflict", f"a drill already runs on {slug} until "
                                          f"{current.ends_at:%Y-%m-%d %H:%M:%S} UTC ({current.public_id}): "
                                          "stop it first", "system")
        raise ActionError("conflict", f"the last drill on {slug} ended at {current.ends_at:%H:%M:%S} UTC and its "
                                      "report is being written (within 15 s): try again then", "system")
    user = actor if actor is not None and actor.is_authenticated else None
    try:
        with transaction.atomic():
            drill = Drill.objects.create(system=system, kind=kind, share=share, reason=reason, started_by=user,
                                         started_at=now, ends_at=now + timedelta(minutes=minutes))
    except IntegrityError as exc:  # pragma: no cover - the row lock above serialises starts
        raise ActionError("conflict", f"a drill already runs on {slug}", "system") from exc
    audit.record(user, "drill.start", system=system, target=drill.public_id, reason=reason,
                 data={"kind": kind, "share": share, "minutes": minutes, "ends_at": drill.ends_at.isoformat()})
    config.bump_epoch()
    _push(drill, system.slug, "started")
    return drill


def _end(drill: Drill, system: AISystem, actor: User, at: datetime, by: str, early: bool) -> Drill:
    drill.ended_at, drill.ended_by = at, by
    drill.save(update_fields=["ended_at", "ended_by"])
    audit.record(actor, "drill.end", system=system, target=drill.public_id, actor_label=by,
                 reason="stopped early" if early else "its time was up",
                 data={"kind": drill.kind, "share": drill.share, "early": early,
                       "started_at": drill.started_at.isoformat(), "ended_at": at.isoformat()})
    _push(drill, system.slug, "ended")
    return drill


def _drill_pk(drill_id: str) -> int:
    raw = drill_id.removeprefix("drl_")
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise ActionError("not_found", f"no drill {drill_id!r}", "drill")
    return int(raw)


@transaction.atomic(durable=True)
def stop(actor: User, drill_id: str, now: datetime | None = None) -> Drill:
    """An admin ends a running drill early: from the very next decision, none fails."""
    drill = (Drill.objects.select_for_update(of=("self",)).select_related("system")
             .filter(pk=_drill_pk(drill_id)).first())
    if drill is None:
        raise ActionError("not_found", f"no drill {drill_id!r}", "drill")
    now = now or timezone.now()
    if not running(drill, now):
        raise ActionError("conflict", f"drill {drill.public_id} is over already", "drill")
    user = actor if actor is not None and actor.is_authenticated else None
    by = user.get_username() if user is not None else ON_TIME
    _end(drill, drill.system, user, now, by, early=True)
    config.bump_epoch()
    return drill


@transaction.atomic(durable=True)
def end_due(now: datetime | None = None) -> list[Drill]:
    """End every drill whose time is up (one transaction, one epoch bump)."""
    now = now or timezone.now()
    due = list(Drill.objects.select_for_update(skip_locked=True, of=("self",)).select_related("system")
               .filter(ended_at__isnull=True, ends_at__lte=now))
    for d in due:
        _end(d, d.system, None, d.ends_at, ON_TIME, early=False)
    if due:
        config.bump_epoch()
    return due


def store_report(drill: Drill, report: dict[str, Any]) -> None:
    """Store a drill's report (``dashboards.drill_report`` builds it) and tell the pages."""
    with transaction.atomic():
        Drill.objects.filter(pk=drill.pk).update(report=report)
        drill.report = report
        _push(drill, drill.system.slug, "report")


def of_system(system: AISystem, limit: int = 20) -> list[Drill]:
    """The system's drills, newest first."""
    return list(Drill.objects.filter(system=system).select_related("started_by", "system")[:limit])
