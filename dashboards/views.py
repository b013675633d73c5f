"""The overview page: every system, its level and kill state, decisions per minute by route."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from dashboards import monitoring
from oversight.models import AISystem, KillSwitch
from oversight.views import any_role

WINDOW_MIN = 30


def overview_state() -> dict[str, Any]:
    now = timezone.now()
    switches = list(KillSwitch.objects.filter(engaged=True).select_related("system", "changed_by"))
    glob = next((k for k in switches if k.scope == "global"), None)
    sys_kill = {k.system_id: k for k in switches if k.scope == "system"}
    depths = monitoring.queue_depths()
    recent = monitoring.series(now - timedelta(minutes=10))
    totals: dict[tuple[str, str], float] = {}
    for p in recent:
        key = (p["system"], p["name"].removeprefix("decisions."))
        totals[key] = totals.get(key, 0.0) + p["value"]
    systems = []
    for s in AISystem.objects.all():
        k = sys_kill.get(s.id)
        depth, oldest = depths.get(s.id, (0, None))
        systems.append({
            "slug": s.slug,
            "name": s.name,
            "level": s.level,
            "threshold": s.confidence_threshold,
            "killed": k is not None,
            "kill_reason": k.reason if k else "",
            "kill_by": k.changed_by.get_username() if k and k.changed_by else "",
            "queue_depth": depth,
            "oldest_age_s": oldest,
            "routes": {r: int(totals.get((s.slug, r), 0)) for r in monitoring.ROUTES},
        })
    return {
        "global": {
            "engaged": glob is not None,
            "reason": glob.reason if glob else "",
            "by": glob.changed_by.get_username() if glob and glob.changed_by else "",
        },
        "systems": systems,
        "routes": monitoring.ROUTES,
        "series": monitoring.series(now - timedelta(minutes=WINDOW_MIN)),
        "now": now.isoformat(),
    }


@any_role
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/overview.html", {"state": overview_state()})


@any_role
def overview_data(request: HttpRequest) -> HttpResponse:
    """What a (re)connecting overview page resynchronises from."""
    return JsonResponse(overview_state())
