"""What a system's monitoring page shows, and re-reads after its socket reconnects.

Plain functions over the stored results: the decision rate by route (the route counts), the
confidence of the newest decisions against the reference's, the drift of the newest windows
(features × windows, each cell its deciding method's severity: drift above 1), the performance and
feedback-loop series, and the newest alerts. Every read is bounded (the newest windows, the newest
decisions), whatever the number of stored decisions.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import connection
from django.utils import timezone

from dashboards import drift, drift_job, drill_report, monitoring, performance_job
from dashboards.models import Alert, DriftResult, MetricPoint
from oversight import breakers, config, mitigation
from oversight.models import AISystem, Breaker, BreakerEvent, Decision

WINDOWS_SHOWN = 48  # the newest windows on the heat map and the series
RATE_MINUTES = 60
CONFIDENCE_BINS = 20
CONFIDENCE_SAMPLE = 5000  # the newest decisions whose confidence is drawn against the reference's
ALERTS_SHOWN = 20


def _confidence(system: AISystem) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT least(width_bucket(confidence, 0, 1, %s), %s), count(*) FROM ("  # noqa: S608
            f"SELECT confidence FROM {Decision._meta.db_table} WHERE system_id = %s AND confidence IS NOT NULL "
            "ORDER BY occurred_at DESC LIMIT %s) t GROUP BY 1",
            [CONFIDENCE_BINS, CONFIDENCE_BINS, system.id, CONFIDENCE_SAMPLE],
        )
        counts = np.zeros(CONFIDENCE_BINS)
        for bucket, n in cur.fetchall():
            counts[min(max(int(bucket), 1), CONFIDENCE_BINS) - 1] += n
    now = (counts / counts.sum()).tolist() if counts.sum() else []
    reference: list[float] = []
    ref = drift_job.newest_reference(system.id)
    summary = ref.summaries.get(drift_job.CONFIDENCE) if ref is not None else None
    if summary is not None:
        r = drift.reference_from_dict(summary)
        if isinstance(r, drift.NumericReference) and r.values.size:
            hist, _ = np.histogram(np.clip(r.values, 0.0, 1.0), bins=edges)
            reference = (hist / hist.sum()).tolist() if hist.sum() else []
    return {"edges": edges.tolist(), "now": now, "reference": reference, "sample": int(counts.sum())}


def _drift(system: AISystem) -> dict[str, Any]:
    starts = list(
        DriftResult.objects.filter(system=system, primary=True).order_by("-window_start")
        .values_list("window_start", flat=True).distinct()[:WINDOWS_SHOWN]
    )
    starts.reverse()
    rows = DriftResult.objects.filter(system=system, primary=True, window_start__in=starts).order_by(
        "feature", "window_start")
    features: list[str] = []
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.feature not in cells:
            features.append(r.feature)
            cells[r.feature] = {}
        cells[r.feature][r.window_start.isoformat()] = {
            "severity": r.severity, "method": r.method, "statistic": r.statistic, "threshold": r.threshold,
            "p_value": r.p_value, "p_threshold": r.p_threshold, "drifted": r.drifted, "rows": r.rows,
        }
    windows = [t.isoformat() for t in starts]
    return {"windows": windows, "features": features,
            "cells": [[cells[f].get(w) for w in windows] for f in features]}


def _series(system: AISystem) -> dict[str, list[list[Any]]]:
    starts = list(
        MetricPoint.objects.filter(system=system, name__in=performance_job.NAMES).order_by("-t")
        .values_list("t", flat=True).distinct()[:WINDOWS_SHOWN]
    )
    out: dict[str, list[list[Any]]] = {name: [] for name in performance_job.NAMES}
    if starts:
        points = MetricPoint.objects.filter(system=system, name__in=performance_job.NAMES, t__gte=min(starts))
        for name, t, value in points.order_by("t").values_list("name", "t", "value"):
            out[name].append([t.isoformat(), value])
    return out


def _alerts(system: AISystem) -> list[dict[str, Any]]:
    alerts = Alert.objects.filter(system=system).select_related("acked_by").order_by("-opened_at", "-id")
    return [
        {**drift_job.alert_message(system.slug, a), "acked_by": a.acked_by.get_username() if a.acked_by else None}
        for a in alerts[:ALERTS_SHOWN]
    ]


BREAKER_EVENTS_SHOWN = 100


def _breakers(system: AISystem) -> dict[str, Any]:
    """The system's breakers now, their newest transitions (the timeline) and the thresholds."""
    states = [
        {"model": b.model, "state": b.state, "label": b.get_state_display(), "reason": b.reason, "manual": b.manual,
         "awaiting_person": b.awaiting_person, "at": b.changed_at.isoformat() if b.changed_at else None,
         "by": b.changed_by.get_username() if b.changed_by else ("breaker" if b.changed_at else None)}
        for b in Breaker.objects.filter(system=system).select_related("changed_by").order_by("model")
    ]
    events = [
        {"model": e.model, "from": e.from_state, "to": e.to_state, "reason": e.reason, "by": e.actor_label,
         "at": e.at.isoformat()}
        for e in BreakerEvent.objects.filter(system=system)[:BREAKER_EVENTS_SHOWN]
    ]
    events.reverse()
    return {"states": states, "events": events,
            "policy": dataclasses.asdict(breakers.Policy.from_json(system.breaker))}


def system_state(system: AISystem) -> dict[str, Any]:
    now = timezone.now()
    entry = config.cache.current().systems_by_id.get(system.id)
    stop = entry.kills.stop_reason if entry is not None else None
    rate = [p for p in monitoring.series(now - timedelta(minutes=RATE_MINUTES)) if p["system"] == system.slug]
    kind, size = drift_job.policy_of(system)
    return {
        "system": {"slug": system.slug, "name": system.name, "level": system.level,
                   "window": {"kind": kind, "seconds" if kind == "time" else "size": size},
                   "stopped": stop},
        "now": now.isoformat(),
        "routes": monitoring.ROUTES,
        "rate": rate,
        "confidence": _confidence(system),
        "drift": _drift(system),
        "series": _series(system),
        "alerts": _alerts(system),
        "breakers": _breakers(system),
        "drills": drill_report.page_state(system),  # the chaos-drill card
        "mitigation": mitigation.describe(system),
    }
