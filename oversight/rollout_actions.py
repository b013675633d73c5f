"""Gradual rollouts, the writes: start, advance, complete, roll back, cancel; and the stats the
guard judges on.

An admin starts a rollout of a candidate hosted model in for a baseline (both enabled models of the
system, different); one runs per system at a time. ``dashboards.rollout_job`` evaluates every
running one on each tick (:func:`evaluate`, the rules in ``oversight.rollouts``); an admin may also
advance, roll back or cancel one by hand, with a reason. Completing disables the baseline hosted
model, rolling back or cancelling disables the candidate.

Each write owns its transaction: the rollout row, its ``RolloutEvent`` (drawn on the system page),
the audit event (``rollout.start``, ``rollout.advance``, ``rollout.complete``, ``rollout.rollback``,
``rollout.cancel``), a config-epoch bump (the gate sees the new share on the next decision) and a
live push on commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from oversight import audit, config, events, rollouts
from oversight.errors import ActionError
from oversight.models import AISystem, Decision, HostedModel, Outcome, Rollout, RolloutEvent

User = Person | AnonymousUser | None
JOB = "rollouts"  # who acts when the job advances, completes or rolls back
REASON_MAX = 2000


# --- reading --------------------------------------------------------------------------------------


def state_of(rollout: Rollout) -> rollouts.State:
    return rollouts.State(steps=tuple(rollout.steps), step=rollout.step, step_started_at=rollout.step_started_at,
                          step_seconds=rollout.step_seconds, guard=rollouts.Guard.from_json(rollout.guard))


def model_stats(system_id: int, models: list[str], since: datetime, until: datetime) -> dict[str, rollouts.Stats]:
    """Per model, the client outcomes of the system's decisions made in [since, until] that the model
    answered (``Decision.model``) or voted on (``prediction.votes``): their mean reward, and its
    accuracy against the label (its own vote's output; a vote that failed has none and counts as
    wrong; the prediction's output when the model answered alone). One query."""
    d, o = Decision._meta.db_table, Outcome._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            "SELECT m.name, count(o.reward), avg(o.reward), count(o.label), "  # noqa: S608
            "avg(CASE WHEN o.label IS NULL THEN NULL "
            "WHEN (CASE WHEN v.voted THEN v.output ELSE d.prediction -> 'output' END) = o.label THEN 1.0 ELSE 0.0 END) "
            "FROM unnest(%s::text[]) AS m(name) "
            f"JOIN {d} d ON d.system_id = %s AND d.created_at >= %s AND d.created_at <= %s "
            "LEFT JOIN LATERAL (SELECT true AS voted, e -> 'output' AS output FROM jsonb_array_elements("
            "CASE WHEN jsonb_typeof(d.prediction -> 'votes') = 'array' THEN d.prediction -> 'votes' "
            "ELSE '[]'::jsonb END) e WHERE e ->> 'model' = m.name LIMIT 1) v ON true "
            f"JOIN {o} o ON o.decision_id = d.id AND o.source = %s "
            "WHERE d.model = m.name OR v.voted "
            "GROUP BY m.name",
            [models, system_id, since, until, Outcome.Source.CLIENT],
        )
        found = {name: rollouts.Stats(rewards=int(nr), mean_reward=None if mr is None else float(mr),
                                      labels=int(nl), accuracy=None if acc is None else float(acc))
                 for name, nr, mr, nl, acc in cur.fetchall()}
    return {m: found.get(m, rollouts.Stats()) for m in models}


def verdict(rollout: Rollout, now: datetime | None = None) -> tuple[rollouts.Action, dict[str, rollouts.Stats]]:
    """What the rules say of a running rollout now, and the step's stats of its two models."""
    now = now or timezone.now()
    found = model_stats(rollout.system_id, [rollout.candidate, rollout.baseline], rollout.step_started_at, now)
    return (rollouts.next_action(state_of(rollout), found[rollout.candidate], found[rollout.baseline], now),
            found)


def _stats_json(s: rollouts.Stats) -> dict[str, Any]:
    return {"rewards": s.rewards, "mean_reward": s.mean_reward, "labels": s.labels, "accuracy": s.accuracy}


def public(rollout: Rollout, slug: str, now: datetime | None = None) -> dict[str, Any]:
    """A rollout as the API and the page show it; a running one with what the rules say now
    (``next``: hold, advance, complete or rollback, and why) and its step's stats."""
    state = rollout.state
    out: dict[str, Any] = {
        "id": rollout.public_id, "system": slug, "candidate": rollout.candidate, "baseline": rollout.baseline,
        "steps": rollout.steps, "step": rollout.step, "share": rollout.share, "step_seconds": rollout.step_seconds,
        "guard": rollouts.Guard.from_json(rollout.guard).to_json(), "state": state,
        "state_label": state.replace("_", " "), "reason": rollout.reason,
        "started_by": rollout.started_by, "started_at": rollout.started_at,
        "step_started_at": rollout.step_started_at, "ended_at": rollout.ended_at,
        "events": [{"kind": e.kind, "what": e.kind.replace("_", " "), "share": e.share, "reason": e.reason,
                    "by": e.by, "at": e.at}
                   for e in rollout.events.all()],
    }
    if state == Rollout.State.RUNNING:
        action, found = verdict(rollout, now)
        out["step_ends_at"] = rollout.step_started_at + timedelta(seconds=rollout.step_seconds)
        out["next"] = {"action": action.kind, "reason": action.reason}
        out["stats"] = {"candidate": _stats_json(found[rollout.candidate]),
                        "baseline": _stats_json(found[rollout.baseline])}
    return out


def of_system(system: AISystem, limit: int = 10) -> list[Rollout]:
    """The system's rollouts, newest first, with their events."""
    return list(Rollout.objects.filter(system=system).prefetch_related("events")[:limit])


# --- writing --------------------------------------------------------------------------------------


def _checked_reason(reason: Any, what: str) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise ActionError("invalid", f"say why: a reason is required to {what}", "reason")
    if len(text) > REASON_MAX:
        raise ActionError("invalid", f"the reason is {len(text)} characters, over the limit of {REASON_MAX}", "reason")
    return text


def _push(rollout: Rollout, slug: str, kind: str) -> None:
    events.send_on_commit([events.system_group(slug)], {
        "type": "rollout", "system": slug, "id": rollout.public_id, "event": kind, "state": rollout.state,
        "share": rollout.share, "candidate": rollout.candidate, "baseline": rollout.baseline,
    })


def _models(system: AISystem, candidate: Any, baseline: Any) -> tuple[str, str]:
    """Both names must be enabled hosted models of the system, different ones, of the same role."""
    for field, name in (("candidate", candidate), ("baseline", baseline)):
        if not isinstance(name, str) or not name.strip():
            raise ActionError("invalid", f"{field} is the name of one of the system's hosted models", field)
    candidate, baseline = candidate.strip(), baseline.strip()
    if candidate == baseline:
        raise ActionError("invalid", f"the candidate and the baseline are both {candidate!r}: a rollout moves "
                                     "traffic from one model to another", "candidate")
    hosted = {h.name: h for h in HostedModel.objects.filter(system=system)}
    for field, name in (("candidate", candidate), ("baseline", baseline)):
        h = hosted.get(name)
        if h is None:
            known = ", ".join(sorted(hosted)) or "none yet"
            raise ActionError("invalid", f"{system.slug} has no hosted model {name!r} (its models: {known})", field)
        if not h.enabled:
            raise ActionError("invalid", f"hosted model {name!r} is disabled: enable it before a rollout", field)
    if hosted[candidate].role != hosted[baseline].role:
        raise ActionError("invalid", f"{candidate!r} is a {hosted[candidate].role} and {baseline!r} a "
                                     f"{hosted[baseline].role}: a rollout replaces a model by one of the same role",
                          "candidate")
    return candidate, baseline


def _by(actor: User) -> tuple[Any, str]:
    user = actor if actor is not None and actor.is_authenticated else None
    return user, (user.get_username() if user is not None else JOB)


@transaction.atomic(durable=True)
def start(actor: User, slug: str, candidate: Any, baseline: Any, steps: Any = None, step_seconds: Any = None,
          guard: Any = None, reason: Any = "", now: datetime | None = None) -> Rollout:
    """Start a rollout (admins; the caller checks the role): the candidate takes the first step's
    share at once. A second one while one runs on the system is a conflict."""
    try:
        steps_ok = rollouts.check_steps(steps)
        seconds = rollouts.check_step_seconds(step_seconds)
        if guard is not None and not isinstance(guard, dict):
            raise ValueError("guard is an object: {\"metric\", \"max_drop\", \"min_outcomes\"}", "guard")
        guard_ok = rollouts.Guard.from_json(guard)
    except ValueError as exc:
        raise ActionError("invalid", str(exc.args[0]), exc.args[1] if len(exc.args) > 1 else None) from exc
    text = _checked_reason(reason, "start a rollout")
    system = AISystem.objects.select_for_update().filter(slug=slug).first()  # one start at a time per system
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}", "system")
    candidate, baseline = _models(system, candidate, baseline)
    current = Rollout.objects.filter(system=system, state=Rollout.State.RUNNING).first()
    if current is not None:
        raise ActionError("conflict", f"a rollout of {current.candidate} over {current.baseline} already runs on "
                                      f"{slug} ({current.public_id}, at {rollouts.pct(current.share)}): let it "
                                      "finish, or roll it back or cancel it first", "system")
    user, by = _by(actor)
    now = now or timezone.now()
    try:
        with transaction.atomic():
            rollout = Rollout.objects.create(
                system=system, candidate=candidate, baseline=baseline, steps=list(steps_ok), step=0,
                step_seconds=seconds, guard=guard_ok.to_json(), reason=text, started_by=by, started_at=now,
                step_started_at=now)
    except IntegrityError as exc:  # pragma: no cover - the row lock above serialises starts
        raise ActionError("conflict", f"a rollout already runs on {slug}", "system") from exc
    RolloutEvent.objects.create(rollout=rollout, share=rollout.share, kind="started", reason=text, by=by, at=now)
    audit.record(user, "rollout.start", system=system, target=rollout.public_id, reason=text, actor_label=by,
                 data={"candidate": candidate, "baseline": baseline, "steps": list(steps_ok),
                       "step_seconds": seconds, "guard": guard_ok.to_json(), "share": rollout.share})
    config.bump_epoch()
    _push(rollout, slug, "started")
    return rollout


def _pk(rollout_id: str) -> int:
    raw = str(rollout_id).removeprefix("rol_")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ActionError("not_found", f"no rollout {rollout_id!r} (they look like rol_12)", "rollout")
    return int(raw)


def _locked_running(rollout_id: str) -> Rollout:
    rollout = (Rollout.objects.select_for_update(of=("self",)).select_related("system")
               .filter(pk=_pk(rollout_id)).first())
    if rollout is None:
        raise ActionError("not_found", f"no rollout {rollout_id!r}", "rollout")
    if rollout.state != Rollout.State.RUNNING:
        raise ActionError("conflict", f"rollout {rollout.public_id} is {rollout.state.replace('_', ' ')} already",
                          "rollout")
    return rollout


def _disable(system: AISystem, name: str) -> bool:
    return HostedModel.objects.filter(system=system, name=name, enabled=True).update(enabled=False) > 0


def _apply(rollout: Rollout, actor: User, kind: str, reason: str, now: datetime,
           data: dict[str, Any] | None = None) -> Rollout:
    """One step of a locked running rollout: ``advance`` (to the next step; past the one before the
    last it completes), ``complete``, ``rollback`` or ``cancel``; its event, audit, epoch and push."""
    system = rollout.system
    before = rollout.share
    disabled = ""
    if kind == "advance" and rollout.step + 1 >= len(rollout.steps) - 1:
        kind = "complete"
    if kind == "advance":
        rollout.step += 1
        rollout.step_started_at = now
        event, action = "advanced", "rollout.advance"
    elif kind == "complete":
        rollout.step = len(rollout.steps) - 1
        rollout.state, rollout.ended_at = Rollout.State.COMPLETED, now
        disabled = rollout.baseline if _disable(system, rollout.baseline) else ""
        event, action = "completed", "rollout.complete"
    elif kind == "rollback":
        rollout.state, rollout.ended_at = Rollout.State.ROLLED_BACK, now
        disabled = rollout.candidate if _disable(system, rollout.candidate) else ""
        event, action = "rolled_back", "rollout.rollback"
    elif kind == "cancel":
        rollout.state, rollout.ended_at = Rollout.State.CANCELLED, now
        disabled = rollout.candidate if _disable(system, rollout.candidate) else ""
        event, action = "cancelled", "rollout.cancel"
    else:  # pragma: no cover - callers pass one of the four
        raise ValueError(kind)
    rollout.save(update_fields=["step", "step_started_at", "state", "ended_at"])
    user, by = _by(actor)
    RolloutEvent.objects.create(rollout=rollout, share=rollout.share, kind=event, reason=reason, by=by, at=now)
    audit.record(user, action, system=system, target=rollout.public_id, reason=reason, actor_label=by,
                 data={"candidate": rollout.candidate, "baseline": rollout.baseline, "from_share": before,
                       "share": rollout.share, "step": rollout.step, "disabled": disabled or None, **(data or {})})
    config.bump_epoch()
    _push(rollout, system.slug, event)
    return rollout


@transaction.atomic(durable=True)
def advance(actor: User, rollout_id: str, reason: Any, now: datetime | None = None) -> Rollout:
    """A person moves a running rollout to its next step now (from the one before the last, it completes)."""
    text = _checked_reason(reason, "advance a rollout")
    return _apply(_locked_running(rollout_id), actor, "advance", text, now or timezone.now())


@transaction.atomic(durable=True)
def complete(actor: User, rollout_id: str, reason: Any, now: datetime | None = None) -> Rollout:
    """A person gives the candidate all the traffic now; the baseline is disabled."""
    text = _checked_reason(reason, "complete a rollout")
    return _apply(_locked_running(rollout_id), actor, "complete", text, now or timezone.now())


@transaction.atomic(durable=True)
def rollback(actor: User, rollout_id: str, reason: Any, now: datetime | None = None) -> Rollout:
    """A person rolls a running rollout back: the baseline takes all the traffic again, the candidate
    is disabled."""
    text = _checked_reason(reason, "roll a rollout back")
    return _apply(_locked_running(rollout_id), actor, "rollback", text, now or timezone.now())


@transaction.atomic(durable=True)
def cancel(actor: User, rollout_id: str, reason: Any, now: datetime | None = None) -> Rollout:
    """An admin stops a rollout that is not wanted any more (not a regression): as a rollback, the
    baseline takes all the traffic and the candidate is disabled."""
    text = _checked_reason(reason, "cancel a rollout")
    return _apply(_locked_running(rollout_id), actor, "cancel", text, now or timezone.now())


@transaction.atomic(durable=True)
def evaluate(rollout_pk: int, now: datetime | None = None) -> rollouts.Action | None:
    """The job's turn at one running rollout: the rules on the step's stats, and the action they
    call for applied in the same transaction (None: it is not running, or another run holds it)."""
    rollout = (Rollout.objects.select_for_update(of=("self",), skip_locked=True).select_related("system")
               .filter(pk=rollout_pk, state=Rollout.State.RUNNING).first())
    if rollout is None:
        return None
    now = now or timezone.now()
    action, found = verdict(rollout, now)
    if action.kind != "hold":
        _apply(rollout, None, action.kind, action.reason, now,
               data={"stats": {"candidate": _stats_json(found[rollout.candidate]),
                               "baseline": _stats_json(found[rollout.baseline])}})
    return action
