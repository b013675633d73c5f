"""What the gate needs to know, cached per process and checked against a config epoch.

Every change the gate must honour at once (policy, kill switch, API key) bumps the epoch row
in PostgreSQL in the same transaction and, on commit, raises the copy in Redis. Each decision
reads the Redis copy (one GET); a process whose snapshot is older reloads it from PostgreSQL.
When Redis cannot be reached the PostgreSQL row is read instead, and every process reads that
row at least once a second anyway, so a kill switch reaches every process on the very next
decision with Redis up or down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from oversight import adapters, breakers, picks
from oversight.fallbacks import FallbackRule
from oversight.gate import CLOSED_BREAKER, BreakerState, KillState, Policy
from oversight.guardrails import Guardrails
from oversight.models import (
    AISystem,
    ApiKey,
    Breaker,
    Drill,
    HostedModel,
    KillSwitch,
    LoopMitigation,
    Readiness,
    Rollout,
)

log = logging.getLogger(__name__)

EPOCH_KEY_SUFFIX = ":config_epoch"
# Raise the Redis copy only upwards, so commits that land out of order never lower it.
_SET_IF_GREATER = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > cur then redis.call('SET', KEYS[1], ARGV[1]) return new end
return cur
"""
REDIS_RETRY_AFTER_S = 1.0
DB_CHECK_EVERY_S = 1.0
# On the hot path a Redis that is away must cost milliseconds, not redis-py's default retries
# with back-off (over 3 s per call on a refused connection): fail at once, read PostgreSQL.
REDIS_TIMEOUT_S = 0.25
FAIL_FAST: dict[str, object] = {
    "socket_timeout": REDIS_TIMEOUT_S,
    "socket_connect_timeout": REDIS_TIMEOUT_S,
    "health_check_interval": 30,
    "retry": Retry(NoBackoff(), 0),
}


class ActiveDrill(NamedTuple):
    """A chaos drill running on a system (``oversight.drills``): what fails, for which share of
    decisions, until when (the snapshot reloads only on an epoch change: ``build`` checks the end)."""

    kind: str
    share: float
    ends_at: datetime


DEFAULT_WAIT_MS = 1000
DEFAULT_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class Routing:
    """How a system's hosted models answer (policy field ``routing``): all vote, or a bandit picks one."""

    mode: str = "ensemble"  # ensemble | bandit
    floor: float = DEFAULT_FLOOR  # bandit: each arm's least share of the traffic
    wait_ms: int = DEFAULT_WAIT_MS  # how long a request waits for the models by default

    @classmethod
    def from_json(cls, data: dict[str, object] | None) -> Routing:
        data = data or {}
        return cls(str(data.get("mode") or "ensemble"), float(data.get("floor", DEFAULT_FLOOR)),  # type: ignore[arg-type]
                   int(data.get("wait_ms") or DEFAULT_WAIT_MS))  # type: ignore[call-overload]


DEFAULT_ROUTING = Routing()


class RolloutState(NamedTuple):
    """A rollout running on a system: the candidate answers in place of the baseline for ``share``."""

    id: str
    candidate: str
    baseline: str
    share: float


@dataclass(frozen=True)
class SystemEntry:
    id: int
    slug: str
    name: str
    policy: Policy
    kills: KillState
    review_sla_s: int = 900
    double_review_rate: float = 0.0  # the share of review items a second operator also sees
    breaker: BreakerState = CLOSED_BREAKER
    readiness: int | None = None  # the newest readiness score; None: never assessed
    drill: ActiveDrill | None = None  # a chaos drill running on the system
    fallback_rule: FallbackRule | None = None  # None: the fixed fallback output
    mitigation: tuple[float, float] | None = None  # feedback-loop mitigation: (exploration share, model weight)
    hosted: tuple[adapters.Spec, ...] = ()  # enabled hosted models (oversight.scoring)
    routing: Routing = DEFAULT_ROUTING
    rollout: RolloutState | None = None
    curation: picks.Curation | None = None  # editors' picks and blocks (oversight.picks)


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    systems_by_slug: dict[str, SystemEntry] = field(default_factory=dict)
    systems_by_id: dict[int, SystemEntry] = field(default_factory=dict)
    key_systems: dict[str, int] = field(default_factory=dict)  # api key digest -> system id


def epoch_key() -> str:
    return settings.REDIS_PREFIX + EPOCH_KEY_SUFFIX


class RedisEpoch:
    """The Redis copy of the epoch: read on every decision, raised after every change."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None
        self.down_until = 0.0

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(settings.REDIS_URL, **FAIL_FAST)
        return self._client

    def _failed(self) -> None:
        self.down_until = time.monotonic() + REDIS_RETRY_AFTER_S

    def away(self) -> bool:
        """Redis failed within the last second: not asked again until then (a silent server would
        cost every caller the 0.25 s timeout)."""
        return time.monotonic() < self.down_until

    def mark_away(self) -> None:
        self._failed()

    def get(self) -> int | None:
        """The epoch in Redis; None when Redis is away or has lost it."""
        return self.get_with(None)[0]

    def get_with(self, key: str | None) -> tuple[int | None, bytes | None]:
        """The epoch and, in the same round trip, the value of another key (``None``: not asked,
        missing, or Redis away)."""
        if time.monotonic() < self.down_until:
            return None, None
        try:
            if key is None:
                epoch, value = self.client().get(epoch_key()), None
            else:
                epoch, value = self.client().mget([epoch_key(), key])
        except redis.RedisError:
            self._failed()
            log.warning("Redis unreachable for the config epoch; reading PostgreSQL")
            return None, None
        return (int(epoch) if epoch is not None else None), (value.encode() if isinstance(value, str) else value)

    def raise_to(self, epoch: int) -> None:
        if time.monotonic() < self.down_until:
            return
        try:
            self.client().eval(_SET_IF_GREATER, 1, epoch_key(), epoch)
        except redis.RedisError:
            self._failed()
            log.error(
                "could not raise the config epoch in Redis to %s; every process reads PostgreSQL "
                "at least once a second, so the change still reaches them", epoch
            )


redis_epoch = RedisEpoch()


#: SQL true while the configuration in force is no newer than the epoch given as its one parameter:
#: a write made under a snapshot checks it in its own statement (``decisions.submit_one``), so a
#: change committed before the write began, even one this process has not heard of, is never missed.
EPOCH_AT_MOST = "COALESCE((SELECT epoch FROM oversight_configepoch WHERE id = 1), 0) <= %s"  # no row: 0, as db_epoch


def db_epoch() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT epoch FROM oversight_configepoch WHERE id = 1")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def bump_epoch() -> None:
    """Call inside the transaction of a change the gate must see; Redis follows on commit."""
    with connection.cursor() as cur:
        # Clock-based and strictly increasing: after a database restore (or a test database made
        # anew) the epoch still moves past every value a process or Redis has seen before.
        cur.execute(
            "INSERT INTO oversight_configepoch (id, epoch) "
            "VALUES (1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
            "ON CONFLICT (id) DO UPDATE SET epoch = GREATEST(oversight_configepoch.epoch + 1, EXCLUDED.epoch) "
            "RETURNING epoch"
        )
        epoch = int(cur.fetchone()[0])
    transaction.on_commit(lambda: redis_epoch.raise_to(epoch))


def _reason(text: str) -> str:
    return text or "no reason given"


def load_snapshot() -> Snapshot:
    with transaction.atomic():
        epoch = db_epoch()
        kills = list(KillSwitch.objects.filter(engaged=True).values("scope", "system_id", "model", "reason"))
        global_reason = next((_reason(k["reason"]) for k in kills if k["scope"] == KillSwitch.Scope.GLOBAL), None)
        sys_reason: dict[int, str] = {}
        model_reasons: dict[int, dict[str, str]] = {}
        for k in kills:
            if k["scope"] == KillSwitch.Scope.SYSTEM and k["system_id"]:
                sys_reason[k["system_id"]] = _reason(k["reason"])
            elif k["scope"] == KillSwitch.Scope.MODEL and k["system_id"]:
                model_reasons.setdefault(k["system_id"], {})[k["model"]] = _reason(k["reason"])
        tripped: dict[int, tuple[str, str]] = {}  # system -> (state, reason) of its own breaker
        models_open: dict[int, dict[str, str]] = {}
        for b in Breaker.objects.exclude(state=Breaker.State.CLOSED).values("system_id", "model", "state", "reason"):
            if not b["model"]:
                tripped[b["system_id"]] = (b["state"], b["reason"])
            elif b["state"] == Breaker.State.OPEN:
                models_open.setdefault(b["system_id"], {})[b["model"]] = b["reason"]
        # The assessment in force: each system's newest (DISTINCT ON, one query).
        scores = dict(Readiness.objects.order_by("system_id", "-assessed_at", "-id").distinct("system_id")
                      .values_list("system_id", "score"))
        drills = {d.system_id: ActiveDrill(d.kind, d.share, d.ends_at)
                  for d in Drill.objects.filter(ended_at__isnull=True, ends_at__gt=timezone.now())}
        mitigations = {m[0]: (m[1], m[2]) for m in LoopMitigation.objects.filter(ended_at__isnull=True)
                       .values_list("system_id", "exploration_share", "model_weight")}
        hosted: dict[int, list[adapters.Spec]] = {}
        for m in HostedModel.objects.filter(enabled=True).order_by("system_id", "name"):
            hosted.setdefault(m.system_id, []).append(
                adapters.Spec(m.name, m.kind, m.target, m.protocol, m.role, m.weight, m.timeout_ms))
        rollouts = {r.system_id: RolloutState(r.public_id, r.candidate, r.baseline, r.share)
                    for r in Rollout.objects.filter(state=Rollout.State.RUNNING)}
        curations = picks.load_all(timezone.now())
        by_slug: dict[str, SystemEntry] = {}
        by_id: dict[int, SystemEntry] = {}
        for s in AISystem.objects.all():
            state, why = tripped.get(s.id, (breakers.CLOSED, ""))
            breaker = CLOSED_BREAKER
            if state != breakers.CLOSED or s.id in models_open:
                breaker = BreakerState(state, why, breakers.Policy.from_json(s.breaker).canary_share,
                                       models_open.get(s.id, {}))
            entry = SystemEntry(
                id=s.id,
                slug=s.slug,
                name=s.name,
                policy=Policy(
                    level=s.level,
                    confidence_threshold=s.confidence_threshold,
                    audit_sample_rate=s.audit_sample_rate,
                    fallback=s.fallback,
                    version=s.policy_version,
                    guardrails=Guardrails.from_json(s.guardrails) if s.level == 3 else None,
                ),
                kills=KillState(global_reason, sys_reason.get(s.id), model_reasons.get(s.id, {})),
                review_sla_s=s.review_sla_s,
                double_review_rate=s.double_review_rate,
                breaker=breaker,
                readiness=scores.get(s.id),
                drill=drills.get(s.id),
                fallback_rule=FallbackRule.from_json(s.fallback_rule),
                mitigation=mitigations.get(s.id),
                hosted=tuple(hosted.get(s.id, ())),
                routing=Routing.from_json(s.routing) if s.routing else DEFAULT_ROUTING,
                rollout=rollouts.get(s.id),
                curation=curations.get(s.id),
            )
            by_slug[s.slug] = entry
            by_id[s.id] = entry
        keys = dict(ApiKey.objects.filter(revoked_at__isnull=True).values_list("digest", "system_id"))
    return Snapshot(epoch, by_slug, by_id, keys)


class _Cache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self._db_checked_at = -DB_CHECK_EVERY_S

    def current(self) -> Snapshot:
        """The snapshot as of now: one Redis GET, a reload only when something changed.

        Once a second the PostgreSQL row is read as well: if raising the Redis copy failed after a
        commit (a timeout, a blip), the change still reaches every process within that second, and
        the Redis copy is repaired.
        """
        return self._as_of(redis_epoch.get())

    def held(self) -> Snapshot:
        """The snapshot this process holds, without asking whether it is still current (loaded if
        there is none yet). Only for a write that checks the epoch itself (``EPOCH_AT_MOST``), and
        for refusals made again on ``current()`` before they are given."""
        snap = self._snapshot
        return snap if snap is not None else self.current()

    def from_database(self) -> Snapshot:
        """The snapshot as of PostgreSQL's epoch now (after a write found the one held outdated)."""
        return self._as_of(db_epoch())

    def current_with(self, key: str) -> tuple[Snapshot, bytes | None]:
        """``current()`` and the value of another Redis key, read in the same round trip as the epoch
        (a scoring task's job: ``oversight.scoring``)."""
        epoch, value = redis_epoch.get_with(key)
        return self._as_of(epoch), value

    def _as_of(self, epoch: int | None) -> Snapshot:
        now = self._clock()
        if epoch is None or now - self._db_checked_at >= DB_CHECK_EVERY_S:
            truth = db_epoch()
            self._db_checked_at = now
            if epoch is None or truth > epoch:
                redis_epoch.raise_to(truth)  # Redis restarted empty, or missed a raise: repair it
                epoch = truth
        snap = self._snapshot
        if snap is not None and snap.epoch >= epoch:  # epochs only grow: newer is current too
            return snap
        return self._reload(epoch)

    def _reload(self, epoch: int) -> Snapshot:
        with self._lock:
            snap = self._snapshot
            if snap is None or snap.epoch < epoch:
                snap = load_snapshot()
                self._snapshot = snap
                if snap.epoch > epoch:
                    redis_epoch.raise_to(snap.epoch)
        return snap

    def clear(self) -> None:
        self._snapshot = None
        self._db_checked_at = -DB_CHECK_EVERY_S


cache = _Cache()


def system_entry(system_id: int) -> SystemEntry | None:
    """The gate's view of one system as of now (its policy and what stops it)."""
    return cache.current().systems_by_id.get(system_id)
