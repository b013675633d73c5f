"""The rollout and bandit tick (``dashboards.tasks.run_rollouts``, every 15 s).

**Rollouts**: every running rollout is judged on its step's outcomes (``oversight.rollouts``) and
what the rules call for (advance, complete, roll back) is applied at once, each rollout in its own
transaction (``oversight.rollout_actions.evaluate``); a rollout that holds writes nothing.

**Bandit series**: for every system whose routing mode is ``bandit``, each arm's expected share of
the traffic now and its posterior (mean, and the 90 % credible interval) are stored as metric
series at the tick's minute, ``bandit.<model>.share``, ``bandit.<model>.mean``,
``bandit.<model>.low`` and ``bandit.<model>.high`` (a later tick in the same minute replaces the
values), and pushed to the system's page like the other metric points (type ``metrics``).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from dashboards.models import MetricPoint
from oversight import bandit_arms, bandits, events, rollout_actions
from oversight.models import AISystem, Rollout

log = logging.getLogger(__name__)

PREFIX = "bandit."
KINDS = ("share", "mean", "low", "high")
BUCKET_S = 60
_NAME_MAX = MetricPoint._meta.get_field("name").max_length or 100


def bucket(now: datetime) -> datetime:
    """The tick's time bucket: its minute."""
    return now - timedelta(seconds=now.timestamp() % BUCKET_S)


def run_rollouts(now: datetime | None = None) -> dict[str, Any]:
    """Every running rollout, judged and acted on: how many did what."""
    done: Counter[str] = Counter()
    failed = []
    for pk in Rollout.objects.filter(state=Rollout.State.RUNNING).order_by("id").values_list("id", flat=True):
        try:
            action = rollout_actions.evaluate(pk, now)
        except Exception:
            log.exception("rollout job failed for rollout %s", pk)
            failed.append(pk)
            continue
        done[action.kind if action is not None else "skipped"] += 1
    return {"rollouts": dict(done), "failed": failed}


def bandit_values(system: AISystem) -> dict[str, float]:
    """The system's bandit series now: per enabled voter, its share, posterior mean, low and high."""
    _, floor = bandit_arms.routing_of(system)
    arms = bandit_arms.arms_of(system.id, bandit_arms.arm_models(system.id))
    shares = bandits.traffic_shares(arms, floor)
    values: dict[str, float] = {}
    for arm in arms:
        if len(f"{PREFIX}{arm.model}.share") > _NAME_MAX:
            log.warning("model name too long for a bandit series: %s", arm.model)
            continue
        mean, low, high = bandits.posterior(arm)
        for kind, value in zip(KINDS, (shares[arm.model], mean, low, high), strict=True):
            values[f"{PREFIX}{arm.model}.{kind}"] = value
    return values


def store_bandit(system: AISystem, now: datetime) -> int:
    """Store (replace) the system's bandit series at the tick's bucket and push them on commit."""
    values = bandit_values(system)
    if not values:
        return 0
    t = bucket(now)
    with transaction.atomic():
        MetricPoint.objects.bulk_create(
            [MetricPoint(system_id=system.id, name=k, t=t, value=v) for k, v in values.items()],
            update_conflicts=True, unique_fields=["system", "name", "t"], update_fields=["value", "updated_at"])
        events.send_on_commit([events.system_group(system.slug)],
                              {"type": "metrics", "system": system.slug, "t": t.isoformat(), "values": values})
    return len(values)


def run_bandits(now: datetime | None = None) -> dict[str, Any]:
    """:func:`store_bandit` for every system routed by the bandit."""
    now = now or timezone.now()
    out: dict[str, Any] = {"systems": 0, "points": 0, "failed": []}
    for system in AISystem.objects.filter(routing__mode="bandit").order_by("id"):
        try:
            out["points"] += store_bandit(system, now)
        except Exception:
            log.exception("bandit series failed for system %s", system.slug)
            out["failed"].append(system.id)
            continue
        out["systems"] += 1
    return out


def run_all(now: datetime | None = None) -> dict[str, Any]:
    """The tick: rollouts first (a completed one changes the arms), then the bandit series."""
    return {"rollouts": run_rollouts(now), "bandits": run_bandits(now)}
