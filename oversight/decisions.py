"""Writing decisions: gate each one, store it with its review item in one transaction, answer.

One implementation, used by the API under any server, by management commands and by tests.
Idempotency: a client's retry with the same ``idempotency_key`` and the same body returns the
stored decision (``replayed``); the same key with a different body is a conflict.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone
from uuid_utils.compat import uuid7

from oversight import bandit_arms, bulk, config, fallbacks, gate, hooks, jsonutil, mitigation, picks, ratelimit
from oversight.config import SystemEntry
from oversight.ensemble import Combined
from oversight.models import Decision, Outcome
from oversight.schemas import DecisionIn, OutcomeIn

_rng = random.Random()  # audit sampling needs a fair draw, not a secret one  # noqa: S311


class IdempotencyConflict(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency_key {key!r} was already used with a different body; "
            "send a new key for a new decision, or the original body to replay it"
        )
        self.key = key


@dataclass(slots=True)
class Submitted:
    decision: Decision | None
    replayed: bool = False
    error: IdempotencyConflict | None = None
    body: dict[str, Any] | None = None  # the decision as the API shows it, when only that came back (scoring)
    stale: bool = False  # not stored: the configuration changed after the snapshot it was gated under

    def public(self, slug: str) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        assert self.decision is not None
        return public(self.decision, slug)


def request_hash(body: Any) -> str:
    """A digest of what the client sent (the JSON body as parsed), idempotency key left out."""
    if isinstance(body, DecisionIn):
        body = body.model_dump(mode="json", exclude_unset=True)
    if isinstance(body, dict) and "idempotency_key" in body:
        body = {k: v for k, v in body.items() if k != "idempotency_key"}
    return hashlib.sha256(jsonutil.dumps(body, sort_keys=True, default=str)).hexdigest()


def _prediction(p: DecisionIn) -> gate.Prediction | None:
    if p.prediction is None:
        return None
    votes = tuple(gate.Vote(v.model, v.output, v.confidence) for v in p.prediction.votes)
    return gate.Prediction(p.prediction.output, p.prediction.confidence, p.prediction.model, votes)


def _hosted_prediction(scored: Combined) -> gate.Prediction | None:
    """The gate's view of what the hosted models said: the combined answer and the votes that counted."""
    if not scored.answered:
        return None
    votes = tuple(gate.Vote(v["model"], v.get("output"), v.get("confidence")) for v in scored.votes
                  if "error" not in v and "vetoed" not in v and v.get("role") != "context")
    return gate.Prediction(scored.output, scored.confidence, scored.model, votes)


def build(
    system: SystemEntry, payload: DecisionIn, now: datetime, draw: float | None = None, raw: Any = None,
    decision_id: uuid.UUID | None = None, over_rate: bool = False, scored: Combined | None = None,
    failure: str | None = None, failure_reason: str | None = None,
) -> Decision:
    """Gate one decision: the row, not yet stored. ``raw`` is the body as sent (for its digest);
    ``over_rate``: the system's guardrail rate is used up (``ratelimit.over``). A chaos drill running
    on the system (``oversight.drills``) makes the model fail for its share of decisions.
    ``scored``: what the system's hosted models answered (``oversight.scoring``), in place of the
    client's prediction; ``failure``/``failure_reason``: how and why they did not (e.g. the deadline)."""
    drill = system.drill
    # The snapshot reloads only when the epoch moves: a drill past its end injects nothing more.
    if failure is None and drill is not None and drill.ends_at > now and _rng.random() < drill.share:
        failure = drill.kind
    stored: dict[str, Any] | None
    if scored is not None:
        prediction = _hosted_prediction(scored)
        stored = scored.record()
        if failure is None and not scored.answered and scored.failure:
            failure, failure_reason = scored.failure, "no hosted model answered"
    else:
        prediction = _prediction(payload)
        stored = payload.prediction.model_dump(mode="json") if payload.prediction else None
    verdict = gate.decide(
        system.policy, system.kills, prediction, _rng.random() if draw is None else draw,
        system.breaker, _rng.random() if system.breaker.state == "half_open" else 0.0, system.readiness,
        over_rate, failure, failure_reason,
    )
    if scored is not None and scored.reasons:
        verdict.reasons[:0] = scored.reasons
    verdict = mitigation.apply(system.mitigation, verdict, _rng.random() if system.mitigation else 1.0,
                               system.policy.fallback)
    verdict = fallbacks.resolve(system.fallback_rule, verdict, payload.context, payload.features)
    if system.curation is not None:
        stored = _curate(system, verdict, stored, payload.context, now)
    return Decision(
        id=decision_id or uuid7(),
        system_id=system.id,
        subject=payload.subject,
        context=payload.context,
        features=payload.features,
        prediction=stored,
        model=verdict.model,
        output=verdict.output,
        confidence=verdict.confidence,
        status=verdict.status,
        route=verdict.route,
        reasons=verdict.reasons,
        audit=verdict.audit,
        idempotency_key=payload.idempotency_key,
        request_hash=request_hash(payload if raw is None else raw),
        policy_version=system.policy.version,
        occurred_at=payload.occurred_at or now,
        created_at=now,
        released_at=now if verdict.status == gate.RELEASED else None,
        review=None,
        failure=verdict.failure,
    )


def _curate(system: SystemEntry, verdict: gate.Verdict, stored: dict[str, Any] | None, context: dict[str, Any],
            now: datetime) -> dict[str, Any] | None:
    """Editors' picks and blocks (``oversight.picks``) in the output that leaves, or, while a person
    decides, in the output suggested to them. Returns the prediction to store."""
    if verdict.output is not None:
        verdict.output, reasons = picks.apply(system.curation, verdict.output, context, now)
        verdict.reasons.extend(reasons)
    elif stored is not None and verdict.status == gate.PENDING_REVIEW:
        output, reasons = picks.apply(system.curation, stored.get("output"), context, now)
        if reasons:
            stored = {**stored, "output": output}
            verdict.reasons.extend(f"suggested output: {r}" for r in reasons)
    return stored


DEADLOCK = "40P01"
_ON_KEY_CONFLICT = "ON CONFLICT (system_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"


def submit_one(system: SystemEntry, payload: DecisionIn, raw: Any = None, as_of: int | None = None) -> Submitted:
    """One decision: one ``INSERT … ON CONFLICT`` statement that also writes its review item, if it
    has one (one round trip, one transaction).

    ``as_of``: the epoch of the snapshot ``system`` comes from, when nothing has checked that it is
    still current. The statement then stores the decision only if no change has been committed
    since (``config.EPOCH_AT_MOST``); if one has, nothing is stored and the answer is ``stale``: the
    caller gates it again under the new configuration. A kill switch confirmed before the INSERT
    began is never missed, whatever this process has heard.
    """
    d = build(system, payload, timezone.now(), raw=raw, over_rate=ratelimit.over(system)[0])
    where, params = (config.EPOCH_AT_MOST, [as_of]) if as_of is not None else ("", [])
    if bulk.insert_one(d, _ON_KEY_CONFLICT, hooks.rows_for(system, [d]), where, params):
        return Submitted(d)
    if as_of is not None and config.db_epoch() > as_of:  # epochs only grow: changed before or during the INSERT
        return Submitted(None, stale=True)
    return _replay(system, d)


def _replay(system: SystemEntry, d: Decision) -> Submitted:
    """The key was taken: the same body replays the stored decision, another body conflicts."""
    key = d.idempotency_key or ""
    prior = Decision.objects.filter(system_id=system.id, idempotency_key=key).first()
    if prior is not None and prior.request_hash == d.request_hash:
        return Submitted(prior, replayed=True)
    return Submitted(None, error=IdempotencyConflict(key))


replay_of_key = _replay


def replay_of(prior: Decision, payload: DecisionIn, raw: Any = None) -> Submitted:
    """A request whose idempotency key is stored already: the replay, or a conflict."""
    if prior.request_hash == request_hash(payload if raw is None else raw):
        return Submitted(prior, replayed=True)
    return Submitted(None, error=IdempotencyConflict(prior.idempotency_key or ""))


def submit(system: SystemEntry, payloads: Sequence[DecisionIn], raws: Sequence[Any] | None = None) -> list[Submitted]:
    """Gate and store decisions of one system: one transaction for the lot (COPY for many)."""
    for attempt in range(3):
        try:
            return _submit(system, payloads, raws)
        except IntegrityError:
            # A concurrent request stored one of our idempotency keys first: read it as a replay.
            if attempt == 2:
                raise
        except OperationalError as exc:
            # Two batches sharing keys in a different order can still deadlock: PostgreSQL aborts one.
            if getattr(exc.__cause__, "sqlstate", None) != DEADLOCK or attempt == 2:
                raise
    raise AssertionError("unreachable")


@transaction.atomic
def _submit(system: SystemEntry, payloads: Sequence[DecisionIn], raws: Sequence[Any] | None) -> list[Submitted]:
    now = timezone.now()
    over = ratelimit.over(system, len(payloads))
    built = [build(system, p, now, raw=raws[i] if raws else None, over_rate=over[i]) for i, p in enumerate(payloads)]
    keys = [d.idempotency_key for d in built if d.idempotency_key]
    existing: dict[str, Decision] = {}
    if keys:
        existing = {
            d.idempotency_key: d
            for d in Decision.objects.filter(system_id=system.id, idempotency_key__in=keys)
            if d.idempotency_key
        }
    results: list[Submitted] = []
    new: list[Decision] = []
    for d in built:
        key = d.idempotency_key
        prior = existing.get(key) if key else None
        if key and prior is not None:
            if prior.request_hash == d.request_hash:
                results.append(Submitted(prior, replayed=True))
            else:
                results.append(Submitted(None, error=IdempotencyConflict(key)))
            continue
        if key:
            existing[key] = d  # a repeat inside the same batch replays this one
        new.append(d)
        results.append(Submitted(d))
    # Rows go in idempotency-key order, so concurrent batches take the keys' locks in the same order.
    new.sort(key=lambda d: d.idempotency_key or "")
    bulk.insert_many(new)
    bulk.insert_rows(hooks.rows_for(system, new))
    return results


@transaction.atomic
def record_outcome(decision: Decision, payload: OutcomeIn) -> Outcome:
    """Store a client's outcome; a reward for a decision the bandit routed teaches its arm too."""
    outcome = Outcome.objects.create(
        decision=decision,
        label=payload.label,
        reward=payload.reward,
        observed_at=payload.observed_at or timezone.now(),
    )
    routed = (decision.prediction or {}).get("routing") if isinstance(decision.prediction, dict) else None
    if payload.reward is not None and isinstance(routed, dict) and routed.get("bandit"):
        bandit_arms.record_reward(decision.system_id, str(routed["bandit"]), payload.reward)
    return outcome


def iso(t: datetime) -> str:
    """A time as the API writes it everywhere (Django's JSON encoder's form: milliseconds, Z for UTC)."""
    r = t.isoformat()
    if t.microsecond:
        r = r[:23] + r[26:]
    return r.removesuffix("+00:00") + "Z" if r.endswith("+00:00") else r


def public(decision: Decision, slug: str) -> dict[str, Any]:
    """A decision as the API shows it (API.md)."""
    return {
        "id": decision.public_id,
        "system": slug,
        "status": decision.status,
        "route": decision.route,
        "output": decision.output,
        "confidence": decision.confidence,
        "reasons": decision.reasons,
        "created_at": iso(decision.created_at),
        "occurred_at": iso(decision.occurred_at),
        "review": decision.review,
    }
