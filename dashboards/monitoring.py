"""Monitoring computations and their storage. Plain functions; the Celery task only calls them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from dashboards.models import MetricPoint
from oversight import events
from oversight.models import AISystem, Decision

ROUTES = [r.value for r in Decision.Route]
ROUTE_METRIC = "decisions.{route}"


def minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def route_counts(since: datetime) -> list[tuple[int, datetime, str, int]]:
    """(system id, minute, route, count) for decisions that arrived since ``since``."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT system_id, date_trunc('minute', created_at) AS m, route, count(*) "
            "FROM oversight_decision WHERE created_at >= %s GROUP BY 1, 2, 3",
            [since],
        )
        return [(int(s), m, r, int(n)) for s, m, r, n in cur.fetchall()]


def queue_depths() -> dict[int, tuple[int, float | None]]:
    """Open review items per system: (depth, age in seconds of the oldest)."""
    from reviewqueue.models import ReviewItem

    now = timezone.now()
    rows = (
        ReviewItem.objects.filter(~Q(status=ReviewItem.Status.RESOLVED))
        .values("system_id")
        .annotate(depth=Count("id"), oldest=Min("created_at"))
    )
    return {r["system_id"]: (r["depth"], (now - r["oldest"]).total_seconds() if r["oldest"] else None) for r in rows}


@transaction.atomic
def store_route_counts(minutes: int = 10, now: datetime | None = None) -> list[MetricPoint]:
    """Recount the last ``minutes`` minutes per system and route; upsert the points (zeros included)."""
    now = now or timezone.now()
    start = minute(now) - timedelta(minutes=minutes - 1)
    counts = {(s, m, r): n for s, m, r, n in route_counts(start)}
    system_ids = list(AISystem.objects.values_list("id", flat=True))
    points = []
    for sid in system_ids:
        for i in range(minutes):
            t = start + timedelta(minutes=i)
            for route in ROUTES:
                n = counts.get((sid, t, route), 0)
                points.append(MetricPoint(system_id=sid, name=ROUTE_METRIC.format(route=route), t=t, value=float(n)))
    if points:
        MetricPoint.objects.bulk_create(
            points, update_conflicts=True, unique_fields=["system", "name", "t"], update_fields=["value", "updated_at"]
        )
    return points


def run_route_counts(minutes: int = 10) -> dict[str, Any]:
    """The monitoring job: store counts, then (after commit) push the newest points and queue depths."""
    points = store_route_counts(minutes)
    slugs = dict(AISystem.objects.values_list("id", "slug"))
    depths = queue_depths()
    latest = [p for p in points if p.t >= max((q.t for q in points), default=timezone.now()) - timedelta(minutes=1)]
    messages: list[dict[str, Any]] = [
        {"type": "metric", "system": slugs.get(p.system_id), "name": p.name, "t": p.t.isoformat(), "value": p.value}
        for p in latest
    ]
    for sid, slug in slugs.items():
        depth, oldest = depths.get(sid, (0, None))
        messages.append({"type": "queue", "system": slug, "depth": depth, "oldest_age_s": oldest})
    batch = {"type": "batch", "messages": messages}
    events.send_now([events.OVERVIEW_GROUP], batch)
    for slug in slugs.values():
        own = [m for m in messages if m.get("system") == slug]
        events.send_now([events.system_group(slug)], {"type": "batch", "messages": own})
    return {"points": len(points), "pushed": len(messages)}


def series(since: datetime, name_prefix: str = "decisions.") -> list[dict[str, Any]]:
    rows = (
        MetricPoint.objects.filter(t__gte=since, name__startswith=name_prefix)
        .select_related("system")
        .order_by("t")
        .values("system__slug", "name", "t", "value")
    )
    return [
        {"system": r["system__slug"], "name": r["name"], "t": r["t"].isoformat(), "value": r["value"]} for r in rows
    ]


def series_by(since: datetime, bucket: str, name_prefix: str = "decisions.") -> list[dict[str, Any]]:
    """:func:`series` summed per system, name and ``bucket`` (``minute`` or ``hour``), in SQL."""
    if bucket == "minute":
        return series(since, name_prefix)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT s.slug, p.name, date_trunc(%s, p.t) AS b, sum(p.value) "  # noqa: S608
            f"FROM {MetricPoint._meta.db_table} p JOIN {AISystem._meta.db_table} s ON s.id = p.system_id "
            "WHERE p.t >= %s AND p.name LIKE %s GROUP BY 1, 2, 3 ORDER BY 3",
            [bucket, since, name_prefix.replace("%", r"\%").replace("_", r"\_") + "%"],
        )
        return [{"system": slug, "name": name, "t": b.isoformat(), "value": float(v)}
                for slug, name, b, v in cur.fetchall()]
