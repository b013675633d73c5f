"""Bandit arms in the database: each (system, model)'s Beta(alpha, beta) belief about its reward.

The rules are ``oversight.bandits`` (pure); this module reads the arms for them and folds rewards in.
A model without a row is an arm that has learnt nothing yet, Beta(1, 1). ``record_reward`` is one
upsert statement, so outcomes arriving at once for the same arm add up instead of overwriting each
other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.db import connection

from oversight import bandits
from oversight.bandits import Arm
from oversight.models import AISystem, BanditArm, HostedModel


def routing_of(system: AISystem) -> tuple[str, float]:
    """The system's routing mode (``ensemble`` unless its policy says ``bandit``) and the arms' floor."""
    routing = system.routing if isinstance(system.routing, dict) else {}
    floor = routing.get("floor")
    return (routing.get("mode") or "ensemble",
            float(floor) if isinstance(floor, int | float) and not isinstance(floor, bool) else bandits.DEFAULT_FLOOR)


def arm_models(system_id: int) -> list[str]:
    """The models the bandit chooses among: the system's enabled voters, by name."""
    return list(HostedModel.objects.filter(system_id=system_id, enabled=True, role=HostedModel.Role.VOTER)
                .order_by("name").values_list("name", flat=True))


def arms_of(system_id: int, models: Sequence[str]) -> list[Arm]:
    """The arms of ``models``, in their order (one query; a model without a row reads as Beta(1, 1))."""
    found = {m: (a, b) for m, a, b in BanditArm.objects.filter(system_id=system_id, model__in=list(models))
             .values_list("model", "alpha", "beta")}
    return [Arm(m, *found.get(m, (1.0, 1.0))) for m in models]


def record_reward(system_id: int, model: str, reward: float) -> None:
    """Fold one outcome into the arm that answered: alpha += r, beta += 1 - r, pulls += 1 (r clipped to
    0–1; one INSERT … ON CONFLICT statement, in the caller's transaction)."""
    r = float(reward)
    if not math.isfinite(r):
        raise ValueError(f"a reward is a number from 0 to 1, not {reward!r}")
    r = min(1.0, max(0.0, r))
    table = BanditArm._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (system_id, model, alpha, beta, pulls, updated_at) "  # noqa: S608
            "VALUES (%s, %s, 1 + %s, 2 - %s, 1, now()) ON CONFLICT (system_id, model) DO UPDATE SET "
            f"alpha = {table}.alpha + %s, beta = {table}.beta + (1 - %s), pulls = {table}.pulls + 1, "
            "updated_at = now()",
            [system_id, model, r, r, r, r],
        )


def describe(system: AISystem) -> dict[str, Any]:
    """The system's arms as the API and the page show them: each enabled voter's alpha, beta and
    pulls, its posterior mean with a 90 % credible interval, and its expected share of the traffic."""
    mode, floor = routing_of(system)
    models = arm_models(system.id)
    rows = {r.model: r for r in BanditArm.objects.filter(system=system, model__in=models)}
    arms = [Arm(m, rows[m].alpha, rows[m].beta) if m in rows else Arm(m) for m in models]
    shares = bandits.traffic_shares(arms, floor)
    out = []
    for arm in arms:
        mean, low, high = bandits.posterior(arm)
        row = rows.get(arm.model)
        out.append({"model": arm.model, "alpha": arm.alpha, "beta": arm.beta, "pulls": row.pulls if row else 0,
                    "mean": mean, "low": low, "high": high, "share": shares.get(arm.model, 0.0),
                    "updated_at": row.updated_at if row else None})
    return {"system": system.slug, "mode": mode, "floor": floor, "arms": out}
