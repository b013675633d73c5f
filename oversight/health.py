"""Health checks for load balancers and orchestrators: public, no login."""

from __future__ import annotations

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from oversight import config


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """PostgreSQL and Redis answer (503 otherwise, naming which)."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["postgresql"] = "ok"
    except Exception as exc:
        checks["postgresql"] = f"unreachable: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(settings.REDIS_URL, **config.FAIL_FAST).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
