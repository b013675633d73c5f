"""A chaos drill's report: what tripped, how fast, what the clients received (``oversight.drills``).

Written when a drill ends (on time by ``dashboards.tasks.finish_drills``, or stopped by an admin)
and rewritten on each tick while the breaker has not recovered, for :data:`AFTERMATH` after the
end: whether the system recovered is known only later. Reads the decisions made during the drill
(by route, by status, the failures injected), the monitoring windows' failure figures and the
system's breaker transitions from the drill's start on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from dashboards import drift_job
from dashboards.models import MetricPoint
from oversight import breakers, drills
from oversight.models import BreakerEvent, Decision, Drill

#: How long after its end a drill's report still follows the breaker (to see it recover).
AFTERMATH = timedelta(hours=2)
FAILURE_SERIES = ("gate.error_rate", "gate.deadline_miss_rate")


def _counts(rows: Any, field: str) -> dict[str, int]:
    return {k: n for k, n in rows.values_list(field).annotate(n=Count("id")).order_by("-n", field)}


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _breaker(drill: Drill, end: datetime, now: datetime) -> dict[str, Any]:
    events = BreakerEvent.objects.filter(system_id=drill.system_id, model="")
    before = events.filter(at__lt=drill.started_at).order_by("-at", "-id").first()
    seen = list(events.filter(at__gte=drill.started_at, at__lte=min(now, end + AFTERMATH)).order_by("at", "id"))
    opened = next((e for e in seen if e.to_state == breakers.OPEN), None)
    closed = next((e for e in seen if opened is not None and e.at >= opened.at and e.to_state == breakers.CLOSED),
                  None)
    return {
        "at_start": before.to_state if before is not None else breakers.CLOSED,
        "opened_at": opened.at.isoformat() if opened else None,
        "seconds_to_open": round((opened.at - drill.started_at).total_seconds(), 1) if opened else None,
        "open_reason": opened.reason if opened else "",
        "recovered": (closed is not None) if opened else None,
        "recovered_at": closed.at.isoformat() if closed else None,
        "transitions": [{"from": e.from_state, "to": e.to_state, "at": e.at.isoformat(), "by": e.actor_label,
                         "reason": e.reason, "during": e.at <= end} for e in seen],
    }


def _peaks(drill: Drill, end: datetime) -> dict[str, float]:
    kind, size = drift_job.policy_of(drill.system)
    since = drill.started_at - timedelta(seconds=size if kind == "time" else 0)
    points = MetricPoint.objects.filter(system_id=drill.system_id, name__in=FAILURE_SERIES, t__gt=since, t__lt=end)
    peaks: dict[str, float] = {}
    for name, value in points.values_list("name", "value"):
        peaks[name] = max(value, peaks.get(name, 0.0))
    return peaks


def sentences(r: dict[str, Any]) -> list[str]:
    """The report in words, for the page."""
    b, n = r["breaker"], r["decisions"]
    who = "every decision" if r["share"] >= 1 else f"{r['share']:.0%} of decisions".replace("%", " %")
    out = [f"{drills.KINDS.get(r['kind'], r['kind']).capitalize()} for {who}, {_duration(r['seconds'])}"
           + (f", stopped early by {r['ended_by']}." if r["stopped_early"] else ".")]
    share = f" ({r['fallback'] / n:.0%})".replace("%", " %") if n else ""
    out.append(f"{n} decisions during the drill: {r['fallback']} got the fallback{share}, "
               f"{r['failures_total']} model failures injected.")
    if b["at_start"] == breakers.OPEN:
        out.append("The breaker was already open when the drill started.")
    elif b["opened_at"] is None:
        out.append("The breaker did not open" + ("." if r["final"] else " (yet)."))
    else:
        out.append(f"The breaker opened {_duration(b['seconds_to_open'])} after the start: {b['open_reason']}.")
        out.append("It closed again: the system recovered." if b["recovered"] else
                   "It has not closed again yet: the system has not recovered.")
    return out


def build(drill: Drill, now: datetime | None = None) -> dict[str, Any]:
    """The report of a drill that ended (the figures as of ``now``)."""
    now = now or timezone.now()
    end = drill.ended_at or drill.ends_at
    rows = Decision.objects.filter(system_id=drill.system_id, created_at__gte=drill.started_at, created_at__lt=end)
    by_route, by_status = _counts(rows, "route"), _counts(rows, "status")
    failures = _counts(rows.exclude(failure=""), "failure")
    breaker = _breaker(drill, end, now)
    report: dict[str, Any] = {
        "kind": drill.kind, "share": drill.share, "started_at": drill.started_at.isoformat(),
        "ended_at": end.isoformat(), "seconds": round((end - drill.started_at).total_seconds(), 1),
        "stopped_early": drill.ended_by not in ("", drills.ON_TIME), "ended_by": drill.ended_by,
        "decisions": sum(by_route.values()), "by_route": by_route, "by_status": by_status,
        "fallback": by_status.get(Decision.Status.FALLBACK, 0), "failures": failures,
        "failures_total": sum(failures.values()), "peaks": _peaks(drill, end), "breaker": breaker,
        "final": bool(breaker["recovered"]) or now >= end + AFTERMATH,
    }
    report["sentences"] = sentences(report)
    return report


def write(drill: Drill, now: datetime | None = None) -> dict[str, Any]:
    """Build the drill's report and store it when it says something new."""
    report = build(drill, now)
    if report != drill.report:
        drills.store_report(drill, report)
    return report


def finish_due(now: datetime | None = None) -> dict[str, Any]:
    """The beat tick: end the drills whose time is up, and write the reports still open."""
    now = now or timezone.now()
    ended = drills.end_due(now)
    open_reports = (Drill.objects.filter(ended_at__isnull=False).select_related("system")
                    .exclude(report__final=True))
    written = [write(d, now) for d in open_reports]
    return {"ended": [d.public_id for d in ended], "reports": len(written)}


def page_state(system: Any, limit: int = 10) -> dict[str, Any]:
    """The system page's drill card: the drill running now (or just over, its report coming) and the
    past drills with their reports in words (``system_state``'s ``drills``)."""
    now = timezone.now()
    rows = drills.of_system(system, limit + 1)
    current = next((d for d in rows if d.ended_at is None), None)
    running = None
    if current is not None:
        active = drills.running(current, now)
        who = current.started_by.get_username() if current.started_by else "someone"
        running = {"id": current.public_id, "active": active, "ends_at": current.ends_at.isoformat(),
                   "text": (f"Running: {drills.describe(current)}, until {current.ends_at:%H:%M:%S} UTC "
                            f"(started by {who}: {current.reason})." if active else
                            f"The drill ended at {current.ends_at:%H:%M:%S} UTC; its report follows within 15 s.")}
    past = [{
        "id": d.public_id,
        "title": f"{d.get_kind_display().capitalize()}, {d.started_at:%Y-%m-%d %H:%M} UTC, started by "
                 f"{d.started_by.get_username() if d.started_by else 'someone'}: {d.reason}",
        "sentences": (d.report or {}).get("sentences", []),
        "routes": sorted((d.report or {}).get("by_route", {}).items(), key=lambda kv: -kv[1]),
    } for d in rows if d.ended_at is not None][:limit]
    return {"running": running, "past": past}
