"""The breaker evaluation of a monitoring tick: every system's and every model's newest windows,
in a few set-based queries (eight for all systems when nothing changes).

Reads what the drift and performance jobs stored (metric points, drift results, the open
feedback-loop alerts), asks ``oversight.breakers.step`` what each system's breaker should do,
and stores the changes through ``oversight.breaker_actions`` (one transaction each). A tick that
changes nothing writes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from dashboards.models import Alert
from dashboards.performance_job import ALERT_KIND as FEEDBACK_LOOP
from oversight import breaker_actions, breakers, mitigation
from oversight.errors import ActionError
from oversight.models import AISystem, Breaker, BreakerEvent, LoopMitigation

WINDOWS = 3  # the newest windows read per system and series
DRIFT_SHARE = "drift.drifted_share"

_METRICS_SQL = """
SELECT s.id, n.name, m.t, m.value
FROM unnest(%s::bigint[]) AS s(id)
CROSS JOIN unnest(%s::text[]) AS n(name)
CROSS JOIN LATERAL (
    SELECT t, value FROM dashboards_metricpoint
    WHERE system_id = s.id AND name = n.name ORDER BY t DESC LIMIT %s
) m
"""

# Per window, the share of features whose primary method says "drifted" (of those with a verdict).
_DRIFT_SQL = """
SELECT s.id, w.window_start, w.share
FROM unnest(%s::bigint[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT d.window_start, avg(CASE WHEN d.drifted THEN 1.0 ELSE 0.0 END) AS share
    FROM dashboards_driftresult d
    WHERE d.system_id = s.id AND d."primary" AND d.drifted IS NOT NULL AND d.window_start IN (
        SELECT DISTINCT window_start FROM dashboards_driftresult
        WHERE system_id = s.id ORDER BY window_start DESC LIMIT %s)
    GROUP BY d.window_start
) w
"""


def readings(system_ids: list[int]) -> dict[int, list[breakers.Reading]]:
    """Each system's newest windows with the figures its breaker watches."""
    by: dict[int, dict[datetime, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    with connection.cursor() as cur:
        cur.execute(_METRICS_SQL, [system_ids, [s for s in breakers.SERIES if s != DRIFT_SHARE], WINDOWS])
        for sid, name, t, value in cur.fetchall():
            by[sid][t][name] = value
        cur.execute(_DRIFT_SQL, [system_ids, WINDOWS])
        for sid, t, share in cur.fetchall():
            by[sid][t][DRIFT_SHARE] = float(share)
    return {sid: [breakers.Reading(t, values) for t, values in windows.items()] for sid, windows in by.items()}


def run_all(now: datetime | None = None) -> dict[str, Any]:
    """Evaluate every system's breaker once; returns what changed."""
    started = time.perf_counter()
    now = now or timezone.now()
    systems = list(AISystem.objects.values_list("id", "level", "breaker"))
    ids = [s[0] for s in systems]
    stored = {b.system_id: b for b in Breaker.objects.filter(model="")}
    # What opened each half-open breaker last: recovering needs a verdict on that figure.
    half = [sid for sid, b in stored.items() if b.state == breakers.HALF_OPEN]
    tripped: dict[int, str] = {}
    if half:
        tripped = dict(BreakerEvent.objects.filter(system_id__in=half, model="", to_state=breakers.OPEN)
                       .order_by("system_id", "-at").distinct("system_id").values_list("system_id", "metric"))
    alerts = dict(Alert.objects.filter(kind=FEEDBACK_LOOP, state=Alert.State.OPEN).values_list("system_id", "message"))
    read = readings(ids) if ids else {}
    wanted: list[tuple[int, breakers.Change, str]] = []
    for sid, level, policy_json in systems:
        b = stored.get(sid)
        view = (breakers.Breaker(b.state, b.changed_at, b.manual, b.awaiting_person, tripped.get(sid, ""))
                if b else breakers.Breaker())
        change = breakers.step(view, breakers.Policy.from_json(policy_json), read.get(sid, []), now, level,
                               alerts.get(sid))
        if change is not None:
            wanted.append((sid, change, view.state))
    keyed: list[tuple[int, str, breakers.Change, str]] = [(sid, "", c, st) for sid, c, st in wanted]
    keyed += model_changes(systems, read, now)
    before = {(sid, m): state for sid, m, _, state in keyed}
    changes = [{"system_id": b.system_id, "model": b.model, "from": before[(b.system_id, b.model)], "to": b.state,
                "reason": b.reason} for b in breaker_actions.apply(keyed, now)]
    mitigations = mitigate(alerts, now)
    return {"systems": len(systems), "changes": changes, "mitigations": mitigations,
            "ms": round((time.perf_counter() - started) * 1000, 1)}


_MODEL_SQL = """
SELECT m.system_id, m.name, m.t, m.value FROM dashboards_metricpoint m
WHERE m.name LIKE 'model.%%' AND (m.system_id, m.t) IN (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))
"""


def model_changes(systems: list[tuple[int, int, Any]], read: dict[int, list[breakers.Reading]],
                  now: datetime) -> list[tuple[int, str, breakers.Change, str]]:
    """Each model's breaker against its own accuracy in the system's newest windows (the series
    ``model.<name>.accuracy`` / ``.outcomes`` of dashboards/performance_job.py), with the system's
    thresholds (minimum accuracy, outcomes, cool-down, margin). While open, the model is left out of
    the answers; half-open, it is back in and the next window with a verdict closes or reopens it."""
    pairs = [(sid, r.window_start) for sid, rs in read.items() for r in rs]
    if not pairs:
        return []
    by: dict[tuple[int, str], dict[datetime, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    with connection.cursor() as cur:
        cur.execute(_MODEL_SQL, [[p[0] for p in pairs], [p[1] for p in pairs]])
        for sid, name, t, value in cur.fetchall():
            model, _, series = name.removeprefix("model.").rpartition(".")
            if model and series in ("accuracy", "outcomes"):
                by[(sid, model)][t]["perf." + series] = value
    # Closed model breakers with no figures have nothing to do: only the others are read.
    stored = {(sid, m): breakers.Breaker(state, at, manual, waiting, "perf.accuracy")
              for sid, m, state, at, manual, waiting in Breaker.objects.exclude(model="").exclude(
                  state=breakers.CLOSED).values_list("system_id", "model", "state", "changed_at", "manual",
                                                     "awaiting_person")}
    closed_since = dict(((sid, m), at) for sid, m, at in Breaker.objects.filter(
        state=breakers.CLOSED, system_id__in={sid for sid, _ in by}).exclude(model="").values_list(
        "system_id", "model", "changed_at")) if by else {}
    out: list[tuple[int, str, breakers.Change, str]] = []
    policies = {sid: (level, p) for sid, level, p in systems}
    own_policy: dict[int, breakers.Policy] = {}
    for (sid, model) in {*by, *stored}:
        if sid not in policies:
            continue
        level, policy_json = policies[sid]
        if sid not in own_policy:
            policy = breakers.Policy.from_json(policy_json)
            # Only the model's own accuracy speaks for it (the system's other figures are the system's).
            own_policy[sid] = breakers.Policy(
                enabled=policy.enabled, min_accuracy=policy.min_accuracy, min_mean_reward=None,
                max_drifted_share=None, max_error_rate=None, max_deadline_miss_rate=None, feedback_loop=False,
                min_outcomes=policy.min_outcomes, canary_share=policy.canary_share, cooldown_s=policy.cooldown_s,
                recover_margin=policy.recover_margin)
        view = stored.get((sid, model)) or breakers.Breaker(changed_at=closed_since.get((sid, model)))
        readings = [breakers.Reading(t, v) for t, v in by.get((sid, model), {}).items()]
        change = breakers.step(view, own_policy[sid], readings, now, level)
        if change is not None:
            out.append((sid, model, change, view.state))
    return out


def mitigate(alerts: dict[int, str], now: datetime) -> list[dict[str, Any]]:
    """Feedback-loop mitigation for systems whose policy says ``auto``: started when their
    feedback-loop alert is open, ended when it is resolved (``oversight.mitigation``)."""
    active = dict(LoopMitigation.objects.filter(ended_at__isnull=True).values_list("system_id", "auto"))
    done: list[dict[str, Any]] = []
    for sid, slug, policy_json in AISystem.objects.filter(id__in={*alerts, *active}).values_list(
            "id", "slug", "loop_mitigation"):
        if mitigation.Policy.from_json(policy_json).mode != "auto":
            continue
        try:
            if sid in alerts and sid not in active:
                mitigation.start(None, slug, f"feedback-loop alert open: {alerts[sid]}", auto=True, now=now)
                done.append({"system_id": sid, "action": "start"})
            elif sid not in alerts and active.get(sid):
                mitigation.stop(None, slug, "the feedback-loop alert was resolved", now=now)
                done.append({"system_id": sid, "action": "end"})
        except ActionError:  # a person moved it meanwhile
            continue
    return done
