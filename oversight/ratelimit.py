"""The guardrail's rate: decisions of a level-3 system per clock minute, counted across every web
process in Redis (one round trip: INCRBY and EXPIRE in a pipeline), only for systems whose
guardrails set ``rate_per_minute``.

When Redis cannot be reached the count is not known and the decisions are let through (the other
guardrails, the breakers and the kill switches still hold): a missing counter must not stop an
autonomous system. The failure is logged.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from oversight import config

log = logging.getLogger(__name__)


def _key(system_id: int, minute: int) -> str:
    return f"{settings.REDIS_PREFIX}:rate:{system_id}:{minute}"


def over(system: config.SystemEntry, n: int = 1, now: float | None = None) -> list[bool]:
    """For ``n`` decisions of ``system`` arriving now: which of them go past its rate this minute."""
    rails = system.policy.guardrails
    if rails is None or rails.rate_per_minute is None or n <= 0:
        return [False] * max(n, 0)
    minute = int((time.time() if now is None else now) // 60)
    if config.redis_epoch.away():  # failed within the last second: not counted, at once
        return [False] * n
    try:
        pipe = config.redis_epoch.client().pipeline(transaction=False)
        pipe.incrby(_key(system.id, minute), n)
        pipe.expire(_key(system.id, minute), 120)
        total = int(pipe.execute()[0])
    except redis.RedisError:
        config.redis_epoch.mark_away()
        log.warning("Redis unreachable: the guardrail rate of system %s is not counted", system.slug)
        return [False] * n
    first = total - n  # decisions of this minute before these
    return [first + i + 1 > rails.rate_per_minute for i in range(n)]
