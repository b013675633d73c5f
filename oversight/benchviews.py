"""The baselines `make bench` measures the decision endpoint against (mounted only when
``settings.BENCH_BASELINE`` is on, see ``oversight/urls.py``).

* ``bare``: a bare sync Django view answering a small ``JsonResponse``: what any request costs
  through uvicorn, Django's handler and the middleware.
* ``bare_insert``: the same, plus one raw ``INSERT`` of a decision row committed durably (autocommit:
  one statement, one commit). The floor for any durable decision: no authentication, no validation,
  no gate, no review item, no idempotency check; only the request, one row and one commit.

Neither is part of the API. ``body_switch`` lets the bench send a request through a2wsgi's own
bridge instead of ``oversight.wsgibridge``'s, on the same server, to measure what the latter gains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from uuid_utils.compat import uuid7

from oversight.models import AISystem

BENCH_SLUG = "bench-recs"  # the system bench/run.py creates; ?system=<slug> picks another

# slug -> (id, policy version, confidence threshold), looked up once per process.
_systems: dict[str, tuple[int, int, float]] = {}

_INSERT = (
    "INSERT INTO oversight_decision (id, system_id, subject, context, features, prediction, model, output, "
    "confidence, status, route, reasons, audit, idempotency_key, request_hash, policy_version, occurred_at, "
    "created_at, released_at, review) "
    "VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, "
    "%s::timestamptz, %s, %s, NULL)"
)


def bare(request: HttpRequest) -> HttpResponse:
    """A bare JSON view: the baseline for what any request costs."""
    return JsonResponse({"ok": True})


def _system(slug: str) -> tuple[int, int, float] | None:
    found = _systems.get(slug)
    if found is None:
        row = AISystem.objects.filter(slug=slug).values_list("id", "policy_version", "confidence_threshold").first()
        if row is None:
            return None
        found = _systems[slug] = (int(row[0]), int(row[1]), float(row[2]))
    return found


@csrf_exempt
@require_POST
def bare_insert(request: HttpRequest) -> HttpResponse:
    """The body as it comes (a decision's JSON, not validated), stored as one decision row by one raw
    ``INSERT`` in autocommit: the floor for a durable decision."""
    system = _system(request.GET.get("system", BENCH_SLUG))
    if system is None:
        return JsonResponse({"error": "no such system"}, status=404)
    system_id, policy_version, threshold = system
    body = request.body
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    prediction = data.get("prediction") if isinstance(data.get("prediction"), dict) else {}
    confidence = prediction.get("confidence")
    if not isinstance(confidence, int | float):
        confidence = None
    released = confidence is not None and confidence >= threshold
    if released:
        status, route = "released", "auto"
        reasons = [f"confidence {confidence:.2f} ≥ threshold {threshold:.2f}"]
    else:
        status, route = "pending_review", "human"
        reasons = [f"confidence {confidence or 0.0:.2f} < threshold {threshold:.2f}: a person decides"]
    key = data.get("idempotency_key")
    now = timezone.now()
    decision_id = uuid7()
    with connection.cursor() as cur:
        cur.execute(_INSERT, [
            decision_id, system_id, str(data.get("subject", ""))[:200],
            json.dumps(data.get("context", {})), json.dumps(data.get("features", {})),
            json.dumps(prediction) if prediction else None, str(prediction.get("model", ""))[:200],
            json.dumps(prediction.get("output")) if released else None, confidence, status, route,
            json.dumps(reasons), False, None if key is None else str(key)[:200], hashlib.sha256(body).hexdigest(),
            policy_version, data.get("occurred_at") or now, now, now if released else None,
        ])
    return JsonResponse({"id": f"dec_{decision_id.hex}", "status": status})


@csrf_exempt
@require_POST
def score_in_process(request: HttpRequest, slug: str) -> HttpResponse:
    """Hosted scoring without Celery, for ``bench/scoring.py``: the worker's own steps (ask the models,
    combine, gate, insert: ``oversight.scoring.score``, ``decisions.build``, ``bulk.insert_one``) run
    in this request instead. The difference to the API's hosted path is what the scoring queue costs."""
    from oversight import bulk, config, decisions, hooks, scoring
    from oversight.schemas import DecisionIn

    entry = config.cache.current().systems_by_slug.get(slug)
    if entry is None:
        return JsonResponse({"error": "no such system"}, status=404)
    raw = json.loads(request.body)
    payload = DecisionIn.model_validate(raw)
    decision_id = uuid7()
    combined = scoring.score(entry, payload, decision_id, entry.routing.wait_ms / 1000.0)
    d = decisions.build(entry, payload, timezone.now(), raw=raw, decision_id=decision_id, scored=combined)
    bulk.insert_one(d, "ON CONFLICT DO NOTHING", hooks.rows_for(entry, [d]))
    return JsonResponse(decisions.public(d, entry.slug), status=201)


PLAIN_BODY_HEADER = (b"x-oversight-bench-body", b"plain")


def body_switch(body_first: Any, wsgi_app: Any) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """ASGI: a request carrying ``X-Oversight-Bench-Body: plain`` is served by a2wsgi's own
    ``WSGIMiddleware`` (the body read from the request's thread), any other by ``body_first``."""
    from a2wsgi import WSGIMiddleware
    from django.conf import settings

    plain = WSGIMiddleware(wsgi_app, workers=settings.WEB_THREADS)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and PLAIN_BODY_HEADER in scope["headers"]:
            return await plain(scope, receive, send)
        return await body_first(scope, receive, send)

    return app
