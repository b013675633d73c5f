"""Writing decisions: gate each one, store it with its review item in one transaction, answer.

Idempotency: a client's retry with the same ``idempotency_key`` and the same body returns the
stored decision (``replayed``); the same key with a different body is a conflict.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import orjson
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from oversight import aio, bulk, gate, hooks, ids
from oversight.config import SystemEntry
from oversight.models import Decision, Outcome
from oversight.schemas import DecisionIn, OutcomeIn, PredictionIn

_rng = random.Random()  # audit sampling needs a fair draw, not a secret one


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


_MISSING = object()


def request_hash(body: Any) -> str:
    """A digest of what the client sent (the JSON body as parsed), idempotency key left out."""
    if isinstance(body, DecisionIn):
        body = body.model_dump(mode="json", exclude_unset=True)
    key = _MISSING
    if isinstance(body, dict):
        key = body.pop("idempotency_key", _MISSING)  # left out of the digest, put back below
    try:
        try:
            data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
        except TypeError:  # what orjson refuses (integers over 64 bits, lone surrogates): the standard library
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
            data = text.encode("utf-8", "surrogatepass")
    finally:
        if key is not _MISSING:
            body["idempotency_key"] = key
    return hashlib.sha256(data).hexdigest()


def _prediction(p: DecisionIn) -> gate.Prediction | None:
    if p.prediction is None:
        return None
    votes = tuple(gate.Vote(v.model, v.output, v.confidence) for v in p.prediction.votes)
    return gate.Prediction(p.prediction.output, p.prediction.confidence, p.prediction.model, votes)


def _prediction_json(p: PredictionIn) -> dict[str, Any]:
    """``p.model_dump(mode="json")``, without pydantic's per-call cost (every value is parsed JSON)."""
    return {
        "output": p.output,
        "confidence": p.confidence,
        "model": p.model,
        "votes": [{"model": v.model, "output": v.output, "confidence": v.confidence} for v in p.votes],
    }


def build(
    system: SystemEntry, payload: DecisionIn, now: datetime, draw: float | None = None, raw: Any = None,
    decision_id: uuid.UUID | None = None,
) -> Decision:
    verdict = gate.decide(system.policy, system.kills, _prediction(payload), _rng.random() if draw is None else draw)
    return bulk.new(
        Decision,
        id=decision_id or ids.uuid7(),
        system_id=system.id,
        subject=payload.subject,
        context=payload.context,
        features=payload.features,
        prediction=_prediction_json(payload.prediction) if payload.prediction else None,
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
    )


DEADLOCK = "40P01"
_ON_KEY_CONFLICT = (
    "ON CONFLICT (system_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)


def submit_one(system: SystemEntry, payload: DecisionIn, raw: Any = None) -> Submitted:
    """One decision on Django's connection: one ``INSERT … ON CONFLICT`` statement that also
    writes its review item, if it has one (one round trip, one transaction).
    (Under an ASGI server the endpoint uses ``prepare_one`` and ``astore_one``.)"""
    d, rows = prepare_one(system, payload, raw)
    if bulk.insert_one(d, _ON_KEY_CONFLICT, rows):
        return Submitted(d)
    return _replay(system, d)


def prepare_one(system: SystemEntry, payload: DecisionIn, raw: Any = None) -> tuple[Decision, list[Any]]:
    """Gate one decision: the row and the rows that go with it (its review item), not yet stored."""
    d = build(system, payload, timezone.now(), raw=raw)
    return d, hooks.rows_for(system, [d])


async def astore_one(system: SystemEntry, d: Decision, rows: list[Any]) -> Submitted:
    """``submit_one``'s statement on the event loop's own pool (the hot path under an ASGI server).

    Only a reused idempotency key (rare) takes the sync path, to replay or refuse.
    """
    async with aio.connection() as conn:
        inserted = await bulk.ainsert_one(conn.hot_cursor(), d, _ON_KEY_CONFLICT, rows)
    if inserted:
        return Submitted(d)
    return await sync_to_async(_replay)(system, d)


def _replay(system: SystemEntry, d: Decision) -> Submitted:
    """The key was taken: the same body replays the stored decision, another body conflicts."""
    key = d.idempotency_key
    prior = Decision.objects.filter(system_id=system.id, idempotency_key=key).first()
    if prior is None:  # pragma: no cover - a decision is never deleted while its key is in use
        raise IdempotencyConflict(key or "")
    if prior.request_hash == d.request_hash:
        return Submitted(prior, replayed=True)
    return Submitted(None, error=IdempotencyConflict(key or ""))


def submit(system: SystemEntry, payloads: Sequence[DecisionIn], raws: Sequence[Any] | None = None) -> list[Submitted]:
    """Gate and store decisions of one system. One transaction for the lot (COPY for many)."""
    for attempt in range(3):
        try:
            return _submit(system, payloads, raws)  # (the batch endpoint runs it with the GC paused)
        except IntegrityError:
            # A concurrent request stored one of our idempotency keys first: read it as a replay.
            if attempt == 2:
                raise
        except OperationalError as exc:
            # Two batches sharing keys in a different order can still deadlock: PostgreSQL aborts one.
            if getattr(exc.__cause__, "sqlstate", None) != DEADLOCK or attempt == 2:
                raise
    raise AssertionError("unreachable")


COPY_CHUNK = 100  # rows gated, then sent, at a time: PostgreSQL stores one chunk while the next is made


@transaction.atomic
def _submit(system: SystemEntry, payloads: Sequence[DecisionIn], raws: Sequence[Any] | None) -> list[Submitted]:
    now = timezone.now()
    # Rows go in idempotency-key order, so concurrent batches lock keys in the same order.
    order = sorted(range(len(payloads)), key=lambda i: payloads[i].idempotency_key or "")
    if len(payloads) >= bulk.COPY_FROM:
        # Optimistic: most batches are new. Gate and COPY them chunk by chunk; the unique index
        # catches a key that was used before (or twice in the batch), and only then are existing
        # keys looked up.
        built: list[Decision | None] = [None] * len(payloads)
        new_ids = ids.uuid7_many(len(payloads))
        try:
            with transaction.atomic(), bulk.copy_writer(Decision, decision_copy_text) as write:
                for start in range(0, len(order), COPY_CHUNK):
                    chunk = order[start : start + COPY_CHUNK]
                    write([_build_at(system, payloads, raws, now, i, built, new_ids) for i in chunk])
        except IntegrityError:
            pass
        else:
            stored = cast("list[Decision]", built)
            bulk.insert_rows(hooks.rows_for(system, [stored[i] for i in order]))
            return [Submitted(d) for d in stored]
    return _store(system, [build(system, p, now, raw=raws[i] if raws else None) for i, p in enumerate(payloads)], order)


def _build_at(
    system: SystemEntry, payloads: Sequence[DecisionIn], raws: Sequence[Any] | None, now: datetime, i: int,
    built: list[Decision | None], new_ids: list[uuid.UUID],
) -> Decision:
    d = built[i] = build(system, payloads[i], now, raw=raws[i] if raws else None, decision_id=new_ids[i])
    return d


_COLUMNS = (
    "id", "system_id", "subject", "context", "features", "prediction", "model", "output", "confidence", "status",
    "route", "reasons", "audit", "idempotency_key", "request_hash", "policy_version", "occurred_at", "created_at",
    "released_at", "review",
)


if tuple(f.attname for f in bulk.fields(Decision)) != _COLUMNS:
    raise ImproperlyConfigured("oversight.decisions.decision_copy_text does not match the Decision model's columns")


def decision_copy_text(rows: Sequence[Decision]) -> bytes:
    """``bulk.copy_text`` for decisions, written out column by column: a quarter faster, and a
    batch's rows are a third of its time. ``tests/integration/test_copy_text.py`` checks that both
    write the same bytes; the column order is checked when this module loads."""
    null, esc, js, iso = bulk.COPY_NULL, bulk.copy_escape, bulk.copy_json, bulk.iso_aware
    first = rows[0].__dict__
    created, system_id, version = iso(first["created_at"]), str(first["system_id"]), str(first["policy_version"])
    lines = []
    for row in rows:
        d = row.__dict__
        if d["created_at"] is not first["created_at"] or d["system_id"] != first["system_id"] \
                or d["policy_version"] != first["policy_version"]:  # pragma: no cover - one batch, one arrival
            return bulk.copy_text(rows)
        prediction, output, confidence, key = d["prediction"], d["output"], d["confidence"], d["idempotency_key"]
        released, review = d["released_at"], d["review"]
        released_text = null if released is None else created if released is d["created_at"] else iso(released)
        lines.append(
            f"{d['id']}\t{system_id}\t{esc(d['subject'])}\t{js(d['context'])}\t{js(d['features'])}\t"
            f"{null if prediction is None else js(prediction)}\t{esc(d['model'])}\t"
            f"{null if output is None else js(output)}\t{null if confidence is None else repr(confidence)}\t"
            f"{esc(d['status'])}\t{esc(d['route'])}\t{js(d['reasons'])}\t{'t' if d['audit'] else 'f'}\t"
            f"{null if key is None else esc(key)}\t{esc(d['request_hash'])}\t{version}\t{iso(d['occurred_at'])}\t"
            f"{created}\t{released_text}\t{null if review is None else js(review)}"
        )
    lines.append("")
    return "\n".join(lines).encode()


def _store(system: SystemEntry, built: list[Decision], order: list[int]) -> list[Submitted]:
    """The careful path: look up the keys already stored, replay or refuse those, store the rest."""
    keys = [d.idempotency_key for d in built if d.idempotency_key]
    existing: dict[str, Decision] = {}
    if keys:
        existing = {
            d.idempotency_key: d  # type: ignore[misc]
            for d in Decision.objects.filter(system_id=system.id, idempotency_key__in=keys)
        }
    results: list[Submitted] = []
    new: set[int] = set()
    for i, d in enumerate(built):
        key = d.idempotency_key
        prior = existing.get(key) if key else None
        if prior is not None:
            if prior.request_hash == d.request_hash:
                results.append(Submitted(prior, replayed=True))
            else:
                results.append(Submitted(None, error=IdempotencyConflict(key)))  # type: ignore[arg-type]
            continue
        if key:
            existing[key] = d  # a repeat inside the same batch replays this one
        new.add(i)
        results.append(Submitted(d))
    if new:
        rows = [built[i] for i in order if i in new]
        bulk.insert_many(rows)
        bulk.insert_rows(hooks.rows_for(system, rows))
    return results


@transaction.atomic
def record_outcome(decision: Decision, payload: OutcomeIn) -> Outcome:
    return Outcome.objects.create(
        decision=decision,
        label=payload.label,
        reward=payload.reward,
        observed_at=payload.observed_at or timezone.now(),
    )


@lru_cache(maxsize=1024)  # a batch's decisions share their arrival time: format it once
def iso(t: datetime) -> str:
    """A time as the API writes it everywhere (Django's JSON encoder's form: milliseconds, Z for UTC)."""
    r = t.isoformat()
    if t.microsecond:
        r = r[:23] + r[26:]
    return r.removesuffix("+00:00") + "Z" if r.endswith("+00:00") else r


def public(decision: Decision, slug: str) -> dict[str, Any]:
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


def parse_public_id(value: str) -> uuid.UUID | None:
    raw = value[4:] if value.startswith("dec_") else value
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        return None
