"""The JSON API's monitoring endpoints (API.md "Monitoring"): stored drift results, running the
monitoring job on demand and its state, alerts and their acknowledgement.

* ``GET /systems/{system}/drift`` and ``GET /systems/{system}/metrics`` — a person with a role, or
  the system's own key.
* ``POST /systems/{system}/monitoring/run`` — admin; 202 ``{"job": id}``, queued after commit.
* ``GET /jobs/{id}`` — a person with a role; ``queued`` also for an id Celery does not know.
* ``GET /alerts``, ``POST /alerts/{id}/ack`` — a person with a role; acknowledging needs admin.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Router

from dashboards import alerts
from dashboards.models import Alert, DriftResult, MetricPoint
from oversight import access, audit
from oversight.jsonapi import ANYONE, PEOPLE, ApiError, json_response, numbered, require_person, system_for
from oversight.models import AISystem
from oversight.schemas import AlertOut, AlertsPageOut, DriftPageOut, ErrorOut, JobOut, JobStartedOut, MetricsPageOut

router = Router(tags=["monitoring"], auth=PEOPLE)

#: Results per page of ``/drift`` and ``/alerts`` unless ``limit`` says fewer; ``next_offset`` pages on.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000


def _aware(t: datetime | None, field: str) -> datetime | None:
    """A query's time in UTC (naive: taken as UTC). PostgreSQL refuses offsets beyond ±15:59, which
    Python parses: converted, any offset is fine."""
    if t is None:
        return None
    if timezone.is_naive(t):
        return t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid", f"{field}: is out of range", field) from None


def _page(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid", f"limit: between 1 and {MAX_LIMIT}", "limit")
    if offset < 0:
        raise ApiError(422, "invalid", "offset: 0 or more", "offset")
    return limit, offset


def _paged(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    more = len(items) > limit
    return {"results": items[:limit], "next_offset": offset + limit if more else None}


# --- drift results ------------------------------------------------------------------------------


def drift_out(r: DriftResult) -> dict[str, Any]:
    return {
        "window_start": r.window_start,
        "window_end": r.window_end,
        "feature": r.feature,
        "method": r.method,
        "statistic": r.statistic,
        "threshold": r.threshold,
        "p_value": r.p_value,
        "drifted": r.drifted,
        "p_threshold": r.p_threshold,
        "severity": r.severity,
        "primary": r.primary,
        "rows": r.rows,
        "computed_at": r.computed_at,
    }


@router.get("/systems/{system}/drift", response=DriftPageOut, auth=ANYONE)
def list_drift(
    request: HttpRequest,
    system: str,
    since: datetime | None = None,
    until: datetime | None = None,
    feature: str | None = None,
    primary: bool | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> HttpResponse:
    """Stored results of windows starting in [since, until), by window, feature and method."""
    entry = system_for(request, system)
    limit, offset = _page(limit, offset)
    qs = DriftResult.objects.filter(system_id=entry.id)
    if since is not None:
        qs = qs.filter(window_start__gte=_aware(since, "since"))
    if until is not None:
        qs = qs.filter(window_start__lt=_aware(until, "until"))
    if feature is not None:
        qs = qs.filter(feature=feature)
    if primary is not None:
        qs = qs.filter(primary=primary)
    rows = list(qs.order_by("window_start", "feature", "method")[offset : offset + limit + 1])
    return json_response({"system": entry.slug, **_paged([drift_out(r) for r in rows], limit, offset)})


# --- metric series ---------------------------------------------------------------------------------


@router.get("/systems/{system}/metrics", response=MetricsPageOut, auth=ANYONE)
def list_metrics(
    request: HttpRequest,
    system: str,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> HttpResponse:
    """Stored metric points with ``t`` in [since, until), by name and time. ``name``: one series or
    several, comma-separated (``decisions.auto``, ``perf.accuracy``, ``loop.correlation``, …)."""
    entry = system_for(request, system)
    limit, offset = _page(limit, offset)
    qs = MetricPoint.objects.filter(system_id=entry.id).exclude(name__startswith="_")
    if name:
        qs = qs.filter(name__in=[n.strip() for n in name.split(",") if n.strip()])
    if since is not None:
        qs = qs.filter(t__gte=_aware(since, "since"))
    if until is not None:
        qs = qs.filter(t__lt=_aware(until, "until"))
    rows = list(qs.order_by("name", "t").values_list("name", "t", "value")[offset : offset + limit + 1])
    points = [{"name": n, "t": t, "value": v} for n, t, v in rows]
    return json_response({"system": entry.slug, **_paged(points, limit, offset)})


# --- running the job ------------------------------------------------------------------------------


@router.post("/systems/{system}/monitoring/run", response={202: JobStartedOut})
def run_monitoring(request: HttpRequest, system: str) -> HttpResponse:
    who = require_person(request, access.ADMIN)
    entry = system_for(request, system)
    from dashboards.tasks import run_monitoring as job_task

    job = str(uuid.uuid4())
    audit.record(who.user, "monitoring.run", system=AISystem.objects.get(id=entry.id), target=job)
    transaction.on_commit(lambda: job_task.apply_async(args=[entry.id], task_id=job, queue="monitoring"))
    return json_response({"job": job}, 202)


_STATES = {
    "PENDING": "queued",  # also an id the result backend does not know (yet)
    "RECEIVED": "queued",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "done",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


@router.get("/jobs/{job_id}", response=JobOut)
def get_job(request: HttpRequest, job_id: str) -> HttpResponse:
    require_person(request)
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise ApiError(404, "not_found", f"{job_id!r} is not a job id") from None
    from celery.result import AsyncResult

    from oversight.celery import app

    result = AsyncResult(job_id, app=app)
    try:
        raw = result.state
        body: dict[str, Any] = {"id": job_id, "state": _STATES.get(raw, "running")}
        if raw == "SUCCESS":
            body["result"] = result.result
        elif raw in ("FAILURE", "REVOKED"):
            body["result"] = {"error": str(result.result)}
    except Exception as exc:  # the result backend (Redis) away
        raise ApiError(503, "unavailable", "job states cannot be read right now; retry shortly") from exc
    return json_response(body)


# --- alerts -----------------------------------------------------------------------------------------------


def alert_out(a: Alert) -> dict[str, Any]:
    return {
        "id": a.public_id,
        "system": a.system.slug,
        "kind": a.kind,
        "subject": a.subject,
        "state": a.state,
        "message": a.message,
        "value": a.value,
        "opened_at": a.opened_at,
        "resolved_at": a.resolved_at,
        "acked_by": a.acked_by.get_username() if a.acked_by else None,
        "acked_at": a.acked_at,
    }


@router.get("/alerts", response={200: AlertsPageOut, 404: ErrorOut})
def list_alerts(
    request: HttpRequest,
    state: str | None = None,
    system: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> HttpResponse:
    """Newest first; ``state=open|resolved``, ``system=<slug>``."""
    require_person(request)
    limit, offset = _page(limit, offset)
    qs = Alert.objects.select_related("system", "acked_by")
    if state is not None:
        if state not in Alert.State.values:
            raise ApiError(422, "invalid", "state: one of open, resolved", "state")
        qs = qs.filter(state=state)
    if system is not None:
        entry = system_for(request, system)
        qs = qs.filter(system_id=entry.id)
    rows = list(qs.order_by("-opened_at", "-id")[offset : offset + limit + 1])
    return json_response(_paged([alert_out(a) for a in rows], limit, offset))


@router.post("/alerts/{alert_id}/ack", response=AlertOut)
def ack_alert(request: HttpRequest, alert_id: str) -> HttpResponse:
    """Acknowledge an alert (admin). Again is fine: the first person and time are kept."""
    who = require_person(request, access.ADMIN)
    alert = alerts.acknowledge(who.user, numbered(alert_id, "alr", "alert"))  # ActionError: the API's 404
    return json_response(alert_out(alert))
