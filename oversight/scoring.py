"""Hosted scoring: a decision sent without a ``prediction`` is scored by its system's hosted models
on the ``scoring`` Celery workers, within the request's deadline.

The web process writes the job (the request, under the id the decision will have) to Redis with an
expiry, sends the task with that id, and waits for the worker's answer up to the deadline
(``?wait_ms=``, or the policy's ``routing.wait_ms``). The worker reads the job in the same round trip
as the configuration epoch, asks the models (``oversight.adapters``) which the configuration lets
answer (kill switches and open breakers as of this task; a rollout's share; the bandit's pick),
combines their answers (``oversight.ensemble``), gates the decision like any other
(``oversight.decisions.build``), inserts it with the job's id and pushes the stored decision to a
Redis list the web process blocks on (``SCORING_REPLY = "list"``; with ``"result"``, Celery's result
backend carries it instead: ``make bench-scoring`` measures both). Past the deadline the web process
inserts the fallback under the same id instead, with the miss recorded (``failure = "deadline"``) for
the breakers. The primary key decides which of the two lands, so a task that runs twice (a worker
killed mid-task: the task acknowledges late and is delivered again) or too late never doubles a
decision, and a decision acknowledged to the client is never lost.

The job is a hand-off, not a record: it lives in Redis (the broker the task travels through anyway)
for ten minutes past its deadline, so a redelivered task still finds it; the decision is the record.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerAway
from redis.backoff import NoBackoff
from redis.retry import Retry
from uuid_utils.compat import uuid7

from oversight import adapters, bandit_arms, bandits, bulk, config, decisions, ensemble, hooks, jsonutil, ratelimit
from oversight.celery import app
from oversight.config import SystemEntry
from oversight.models import Decision
from oversight.schemas import DecisionIn

log = logging.getLogger(__name__)

TASK = "oversight.tasks.score"
MAX_WAIT_MS = 30_000
_rng = random.Random()  # routing draws (rollout share, bandit): fair, not secret  # noqa: S311
_ANY_CONFLICT = "ON CONFLICT DO NOTHING"  # the id (the other side won) or the idempotency key (a retry)
JOB_KEEP_S = 600  # a job outlives its deadline by this long, so a task delivered again still finds it
REPLY_KEEP_S = 60  # an answer no web process took (it gave up at its deadline) expires
LIST, RESULT = "list", "result"  # how the worker's answer travels back (settings.SCORING_REPLY)
QUEUE_AWAY = "the scoring queue (Redis) could not be reached: the hosted models were not asked"
TASK_FAILED = "the scoring task failed on the worker (see its log)"


def wanted(system: SystemEntry, payload: DecisionIn) -> bool:
    """Whether this decision is scored by hosted models: no prediction sent, and the system has some."""
    return payload.prediction is None and bool(system.hosted)


def submit(system: SystemEntry, payload: DecisionIn, raw: Any, wait_ms: int | None) -> decisions.Submitted:
    """Score one decision on the workers and store it; past the deadline, store the fallback."""
    key = payload.idempotency_key
    if key:
        prior = Decision.objects.filter(system_id=system.id, idempotency_key=key).first()
        if prior is not None:  # a retry: answer with what was stored, without scoring again
            return decisions.replay_of(prior, payload, raw)
    if system.kills.stopped is not None or system.breaker.state == "open":
        return decisions.submit_one(system, payload, raw)  # the gate answers with the fallback at once
    wait = wait_ms or system.routing.wait_ms
    if not waiting.acquire(blocking=False):
        # Every web thread that may wait for models is waiting: answer now, keep threads for the rest
        # (pages, kill switches, decisions with predictions).
        return _busy(system, payload, raw)
    try:
        return _score_and_wait(system, payload, raw, wait)
    finally:
        waiting.release()


def _busy(system: SystemEntry, payload: DecisionIn, raw: Any) -> decisions.Submitted:
    d = decisions.build(system, payload, timezone.now(), raw=raw, over_rate=ratelimit.over(system)[0],
                        failure=adapters.DEADLINE, failure_reason=(
                            f"the hosted models were not asked: {waiting_limit()} requests of this web process "
                            "are already waiting for them"))
    if bulk.insert_one(d, _ANY_CONFLICT, hooks.rows_for(system, [d])):
        return decisions.Submitted(d)
    return decisions.replay_of_key(system, d)


def waiting_limit() -> int:
    """How many of a web process's request threads may wait for hosted models at once: all but two,
    so pages, kill switches and decisions that bring their prediction always find a thread."""
    return max(1, settings.WEB_THREADS - 2)


waiting = threading.BoundedSemaphore(waiting_limit())


def _score_and_wait(system: SystemEntry, payload: DecisionIn, raw: Any, wait: int) -> decisions.Submitted:
    job_id = uuid7()
    sent = _post(system, [(job_id, raw if raw is not None else payload.model_dump(mode="json", exclude_unset=True))],
                 wait)
    if sent is None:
        return _deadline_passed(system, payload, raw, job_id, QUEUE_AWAY)
    done = _await(sent, wait / 1000.0).get(str(job_id))
    if done is not None and done.get("status") == "scored" and isinstance(done.get("decision"), dict):
        return decisions.Submitted(None, body=done["decision"])  # as the worker stored it
    stored = Decision.objects.filter(id=job_id).first()
    if stored is not None:
        return decisions.Submitted(stored)
    why = TASK_FAILED if done is not None and done.get("status") == "failed" else (
        f"the hosted models did not answer within {wait} ms")
    return _deadline_passed(system, payload, raw, job_id, why)


def job_key(job_id: str) -> str:
    return f"{settings.REDIS_PREFIX}:scoring:job:{job_id}"


def reply_key(job_id: str) -> str:
    return f"{settings.REDIS_PREFIX}:scoring:reply:{job_id}"


class _Sent(NamedTuple):
    """Tasks on their way: their job ids, Celery's handles, and the list their answers come back on
    (one list for all of them: a batch waits on one key)."""

    job_ids: list[str]
    results: list[AsyncResult]
    reply_to: str


def _post(system: SystemEntry, jobs: Sequence[tuple[uuid.UUID, Any]], wait: int) -> _Sent | None:
    """Write the jobs (one pipeline) and send one task each; None when Redis or the broker is away."""
    deadline = time.time() + wait / 1000.0
    keep = wait // 1000 + 1 + JOB_KEEP_S
    reply = settings.SCORING_REPLY
    ids = [str(job_id) for job_id, _ in jobs]
    reply_to = ids[0] if len(ids) == 1 else str(uuid7())
    try:
        pipe = config.redis_epoch.client().pipeline(transaction=False)
        for job_id, (_, body) in zip(ids, jobs, strict=True):
            pipe.set(job_key(job_id), jsonutil.dumps({"system": system.id, "deadline": deadline, "body": body}),
                     ex=keep)
        pipe.execute()
        # With the answer on a list, Celery stores no result (the request's ignore_result wins).
        results = [app.send_task(TASK, args=(job_id,), kwargs={"reply": reply, "reply_to": reply_to},
                                 queue="scoring", ignore_result=reply == LIST) for job_id in ids]
    except (redis.RedisError, BrokerAway) as exc:
        log.error("hosted scoring of %s: %s (%s)", system.slug, QUEUE_AWAY, exc)
        return None
    return _Sent(ids, results, reply_to)


class _Replies:
    """The web side's Redis client for the workers' answers: its socket timeout outlasts the longest
    wait, as a blocking pop needs."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=MAX_WAIT_MS / 1000.0 + 5,
                socket_connect_timeout=config.REDIS_TIMEOUT_S, health_check_interval=30, retry=Retry(NoBackoff(), 0))
        return self._client


replies = _Replies()


def _await(sent: _Sent, wait_s: float) -> dict[str, dict[str, Any]]:
    """The workers' answers that came within ``wait_s``, by job id."""
    got: dict[str, dict[str, Any]] = {}
    until = time.monotonic() + wait_s
    if settings.SCORING_REPLY == LIST:
        waiting_for = set(sent.job_ids)
        key = reply_key(sent.reply_to)
        try:
            while waiting_for and (left := until - time.monotonic()) > 0:
                item = replies.client().blpop([key], timeout=max(left, 0.001))
                if item is None:
                    break
                answer = json.loads(item[1])
                if answer.get("job") in waiting_for:
                    waiting_for.discard(answer["job"])
                    got[answer["job"]] = answer
        except redis.RedisError as exc:
            log.warning("hosted scoring: waiting for the workers' answers failed (%s); the database decides", exc)
        return got
    for job_id, result in zip(sent.job_ids, sent.results, strict=True):
        try:
            done = result.get(timeout=max(0.0, until - time.monotonic()), propagate=False,
                              disable_sync_subtasks=False)
        except CeleryTimeout:
            done = None
        finally:
            result.forget()  # the decision is the record; the task's result is only the signal
        if isinstance(done, dict):
            got[job_id] = done
    return got


def submit_many(system: SystemEntry, payloads: list[DecisionIn], raws: list[Any], wait_ms: int | None
                ) -> list[decisions.Submitted]:
    """A batch's decisions without predictions: one job and one task each, sent together, all
    waited for up to one deadline; the ones not scored by then get the fallback. In order."""
    results: list[decisions.Submitted | None] = [None] * len(payloads)
    keys = [p.idempotency_key for p in payloads if p.idempotency_key]
    prior = {d.idempotency_key: d for d in Decision.objects.filter(system_id=system.id, idempotency_key__in=keys)
             } if keys else {}
    pending: list[int] = []
    seen: dict[str, int] = {}
    for i, p in enumerate(payloads):
        key = p.idempotency_key
        if key and key in prior:
            results[i] = decisions.replay_of(prior[key], p, raws[i])
        elif key and key in seen:
            continue  # a repeat inside the batch: answered like its first, below
        else:
            if key:
                seen[key] = i
            pending.append(i)
    if system.kills.stopped is not None or system.breaker.state == "open":
        stored = decisions.submit(system, [payloads[i] for i in pending], [raws[i] for i in pending])
        for i, r in zip(pending, stored, strict=True):
            results[i] = r
        return _repeats(payloads, raws, results, seen)
    wait = wait_ms or system.routing.wait_ms
    jobs = [(uuid7(), raws[i] if raws[i] is not None else payloads[i].model_dump(mode="json", exclude_unset=True))
            for i in pending]
    sent = _post(system, jobs, wait)
    if sent is not None:
        _await(sent, wait / 1000.0)
    why = QUEUE_AWAY if sent is None else f"the hosted models did not answer within {wait} ms"
    stored_by_id = Decision.objects.in_bulk([job_id for job_id, _ in jobs])
    for i, (job_id, _) in zip(pending, jobs, strict=True):
        found = stored_by_id.get(job_id)
        results[i] = decisions.Submitted(found) if found is not None else _deadline_passed(
            system, payloads[i], raws[i], job_id, why)
    return _repeats(payloads, raws, results, seen)


def _repeats(payloads: list[DecisionIn], raws: list[Any], results: list[decisions.Submitted | None],
             first: dict[str, int]) -> list[decisions.Submitted]:
    """A key repeated inside one batch replays the first item with it (or conflicts with it)."""
    out: list[decisions.Submitted] = []
    for i, r in enumerate(results):
        if r is None:
            key = payloads[i].idempotency_key or ""
            earlier = results[first[key]]
            d = earlier.decision if earlier is not None else None
            r = decisions.replay_of(d, payloads[i], raws[i]) if d is not None else decisions.Submitted(
                None, error=decisions.IdempotencyConflict(key))
        out.append(r)
    return out


def _deadline_passed(system: SystemEntry, payload: DecisionIn, raw: Any, job_id: uuid.UUID, why: str
                     ) -> decisions.Submitted:
    d = decisions.build(system, payload, timezone.now(), raw=raw, decision_id=job_id,
                        over_rate=ratelimit.over(system)[0], failure=adapters.DEADLINE, failure_reason=why)
    inserted = bulk.insert_one(d, _ANY_CONFLICT, hooks.rows_for(system, [d]))
    if inserted:
        return decisions.Submitted(d)
    stored = Decision.objects.filter(id=job_id).first()  # the worker landed it a moment ago
    if stored is not None:
        return decisions.Submitted(stored)
    return decisions.replay_of_key(system, d)  # a concurrent retry with the same idempotency key


# --- the worker's side -------------------------------------------------------------------------


def plan(system: SystemEntry, draw: random.Random = _rng) -> tuple[list[adapters.Spec], list[str], dict[str, Any]]:
    """Which models answer this decision, and why: models stopped by a kill switch or an open
    breaker are not asked; a running rollout asks its candidate in place of its baseline for its
    share; in bandit mode Thompson sampling picks one voter (context models are always asked)."""
    reasons: list[str] = []
    routing: dict[str, Any] = {}
    specs: list[adapters.Spec] = []
    for s in system.hosted:
        why = system.kills.models.get(s.name)
        if why is not None:
            reasons.append(f"model {s.name} not asked: kill switch engaged ({why})")
            continue
        why = system.breaker.models.get(s.name)
        if why is not None:
            reasons.append(f"model {s.name} not asked: circuit breaker open ({why})")
            continue
        specs.append(s)
    names = {s.name for s in specs}
    r = system.rollout
    if r is not None and r.candidate in names and r.baseline in names:
        pct = f"{r.share * 100:g} %"
        if draw.random() < r.share:
            specs = [s for s in specs if s.name != r.baseline]
            reasons.append(f"rollout {r.id}: {r.candidate} answers in place of {r.baseline} ({pct} of decisions)")
            routing["rollout"] = {"id": r.id, "arm": r.candidate}
        else:
            specs = [s for s in specs if s.name != r.candidate]
            routing["rollout"] = {"id": r.id, "arm": r.baseline}
    voters = [s for s in specs if s.role != "context"]
    if system.routing.mode == "bandit" and len(voters) > 1:
        arms = bandit_arms.arms_of(system.id, [s.name for s in voters])
        chosen, why = bandits.choose(arms, system.routing.floor, draw)
        specs = [s for s in specs if s.role == "context" or s.name == chosen]
        reasons.append(why)
        routing["bandit"] = chosen
    return specs, reasons, routing


def request_for(system: SystemEntry, payload: DecisionIn, decision_id: uuid.UUID) -> dict[str, Any]:
    """What every hosted model is sent (``oversight.adapters``)."""
    return {"decision": f"dec_{decision_id.hex}", "system": system.slug, "subject": payload.subject,
            "context": payload.context, "features": payload.features}


def score(system: SystemEntry, payload: DecisionIn, decision_id: uuid.UUID, budget_s: float) -> ensemble.Combined:
    """Ask the models and combine their answers (nothing asked when the system is stopped or tripped:
    the gate answers with the fallback)."""
    if system.kills.stopped is not None or system.breaker.state == "open":
        return ensemble.Combined()
    specs, reasons, routing = plan(system)
    answers = adapters.call_all(specs, request_for(system, payload, decision_id), budget_s)
    combined = ensemble.combine(answers, {s.name: s.weight for s in specs}, {s.name: s.role for s in specs})
    combined.reasons[:0] = reasons
    combined.routing = routing
    return combined


def run_job(job_id: str, reply: str = RESULT, reply_to: str | None = None) -> dict[str, Any]:
    """The ``scoring`` task: score the job's decision and insert it, unless that is done already
    (a task delivered again), the deadline has passed (the web process answers with the fallback),
    or the job is gone (expired, or Redis away). Idempotent. The answer goes back by ``reply``: the
    Redis list the web process waits on (``reply_to``'s: a batch's tasks share one; every outcome, so
    a web process waiting on a task delivered again learns at once that the decision is stored), or
    Celery's result (the task's return value)."""
    jid = uuid.UUID(job_id)
    try:
        # This task's view of the configuration (a kill switch flipped before it is honoured) and
        # the job, in one round trip.
        snapshot, raw = config.cache.current_with(job_key(job_id))
        out = _run(jid, snapshot, raw)
    except Exception:
        # Failed (the database away, a job that does not parse): the web process is told at once and
        # answers with the fallback, as it does when Celery's result says FAILURE.
        if reply == LIST:
            _send_back(reply_to or job_id, {"job": job_id, "status": "failed"})
        raise
    if reply == LIST:
        _send_back(reply_to or job_id, out)
    return out


def _send_back(reply_to: str, answer: dict[str, Any]) -> None:
    key = reply_key(reply_to)
    try:
        pipe = config.redis_epoch.client().pipeline(transaction=False)
        pipe.rpush(key, jsonutil.dumps(answer))
        pipe.expire(key, REPLY_KEEP_S)
        pipe.execute()
    except redis.RedisError as exc:  # the web process finds the decision in the database at its deadline
        log.warning("hosted scoring: the answer to job %s could not be sent back (%s)", answer["job"], exc)


def _run(jid: uuid.UUID, snapshot: config.Snapshot, raw: bytes | None) -> dict[str, Any]:
    job_id = str(jid)
    if raw is None:
        return {"job": job_id, "status": "gone"}
    job = json.loads(raw)
    system = snapshot.systems_by_id.get(job["system"])
    budget = float(job["deadline"]) - time.time()
    if system is None or budget <= 0:
        return {"job": job_id, "status": "late"}
    payload = DecisionIn.model_validate(job["body"])
    combined = score(system, payload, jid, budget)
    d = decisions.build(system, payload, timezone.now(), raw=job["body"], decision_id=jid, scored=combined,
                        over_rate=ratelimit.over(system)[0])
    # One statement (the decision and its review item): the job stays until it expires, so a task
    # delivered again scores again and finds the decision there (ON CONFLICT: nothing doubles).
    if bulk.insert_one(d, _ANY_CONFLICT, hooks.rows_for(system, [d])):
        return {"job": job_id, "status": "scored", "decision": decisions.public(d, system.slug)}
    return {"job": job_id, "status": "exists"}
