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

from oversight import bulk, fallbacks, gate, hooks, jsonutil, mitigation, ratelimit
from oversight.config import SystemEntry
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


def build(
    system: SystemEntry, payload: DecisionIn, now: datetime, draw: float | None = None, raw: Any = None,
    decision_id: uuid.UUID | None = None, over_rate: bool = False,
) -> Decision:
    """Gate one decision: the row, not yet stored. ``raw`` is the body as sent (for its digest);
    ``over_rate``: the system's guardrail rate is used up (``ratelimit.over``). A chaos drill running
    on the system (``oversight.drills``) makes the model fail for its share of decisions."""
    drill, failure = system.drill, None
    # The snapshot reloads only when the epoch moves: a drill past its end injects nothing more.
    if drill is not None and drill.ends_at > now and _rng.random() < drill.share:
        failure = drill.kind
    verdict = gate.decide(
        system.policy, system.kills, _prediction(payload), _rng.random() if draw is None else draw,
        system.breaker, _rng.random() if system.breaker.state == "half_open" else 0.0, system.readiness,
        over_rate, failure,
    )
    verdict = mitigation.apply(system.mitigation, verdict, _rng.random() if system.mitigation else 1.0,
                               system.policy.fallback)
    verdict = fallbacks.resolve(system.fallback_rule, verdict, payload.context, payload.features)
    return Decision(
        id=decision_id or uuid7(),
        system_id=system.id,
        subject=payload.subject,
        context=payload.context,
        features=payload.features,
        prediction=payload.prediction.model_dump(mode="json") if payload.prediction else None,
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


DEADLOCK = "40P01"
_ON_KEY_CONFLICT = "ON CONFLICT (system_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"


def submit_one(system: SystemEntry, payload: DecisionIn, raw: Any = None) -> Submitted:
    """One decision: one ``INSERT … ON CONFLICT`` statement that also writes its review item, if it
    has one (one round trip, one transaction)."""
    d = build(system, payload, timezone.now(), raw=raw, over_rate=ratelimit.over(system)[0])
    if bulk.insert_one(d, _ON_KEY_CONFLICT, hooks.rows_for(system, [d])):
        return Submitted(d)
    return _replay(system, d)


def _replay(system: SystemEntry, d: Decision) -> Submitted:
    """The key was taken: the same body replays the stored decision, another body conflicts."""
    key = d.idempotency_key or ""
    prior = Decision.objects.filter(system_id=system.id, idempotency_key=key).first()
    if prior is not None and prior.request_hash == d.request_hash:
        return Submitted(prior, replayed=True)
    return Submitted(None, error=IdempotencyConflict(key))


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
    return Outcome.objects.create(
        decision=decision,
        label=payload.label,
        reward=payload.reward,
        observed_at=payload.observed_at or timezone.now(),
    )


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
