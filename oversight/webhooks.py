"""Webhooks to the client service: an outbox row per event, delivered by Celery until a 2xx.

When a person resolves a pending decision or overrides a released one, :func:`enqueue` writes a
:class:`~oversight.models.WebhookDelivery` row in the same transaction (so the event exists exactly
when the change does) and, once that commits, sends the ``deliver_webhook`` task. :func:`attempt`
POSTs the stored body to the system's ``callback_url``, signed with the system's webhook secret
(``X-Oversight-Signature: sha256=<hex HMAC-SHA256 of the raw body>``), with the row's id as
``X-Oversight-Delivery`` (the same on every retry, so a receiver can drop duplicates). A 2xx ends
delivery; anything else (an error status, a refused connection, a timeout) is retried with
exponential backoff (2 s, 4 s, 8 s … then every 10 minutes) until ``WEBHOOK_GIVE_UP_S`` (24 h by
default) has passed since the event. The task retries itself; a beat job (:func:`due`) sends the
task again for any row whose retry was lost (a worker restarted, Redis was away at commit), so an
acknowledged event is never dropped. Rows are leased before the POST (``next_attempt_at`` moves
past the request's timeout), so two workers never send the same attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from oversight import audit, jsonutil
from oversight.decisions import public
from oversight.models import AISystem, Decision, WebhookDelivery

log = logging.getLogger(__name__)

RESOLVED = "decision.resolved"
OVERRIDDEN = "decision.overridden"
TASK = "oversight.tasks.deliver_webhook"
TIMEOUT_S = 10.0
FIRST_BACKOFF_S = 2.0
MAX_BACKOFF_S = 600.0
SECRET_PREFIX = "whsec_"  # noqa: S105 — a prefix, not a secret


def give_up_after_s() -> float:
    return float(getattr(settings, "WEBHOOK_GIVE_UP_S", 86400.0))


def backoff_s(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed try: 2, 4, 8 … capped at 10 minutes."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, attempts - 1))


def signature(secret: str, body: bytes) -> str:
    """The ``X-Oversight-Signature`` header for ``body``: what a receiver recomputes and compares."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def enqueue(decision: Decision, event: str) -> WebhookDelivery | None:
    """The event for ``decision`` (already changed, in the caller's transaction), if its system has
    a callback URL; the delivery task is sent once the transaction commits."""
    system: AISystem = decision.system
    if not system.callback_url:
        return None
    body = jsonutil.dumps({"event": event, "decision": public(decision, system.slug)})
    row = WebhookDelivery.objects.create(
        system=system, decision=decision, event=event, url=system.callback_url, body=body.decode("utf-8"),
    )
    transaction.on_commit(lambda: send_task(str(row.id)))
    return row


def send_task(delivery_id: str, countdown: float | None = None) -> None:
    """Hand one delivery to a worker. Best effort: if the broker is away, the beat sweep sends it later."""
    from oversight.celery import app

    try:
        app.send_task(TASK, args=[delivery_id], countdown=countdown)
    except Exception:  # noqa: BLE001 — the outbox row is the record; the sweep retries
        log.warning("webhook %s: could not queue the delivery now; the sweep will", delivery_id, exc_info=True)


def _lease(delivery_id: str, now: datetime) -> WebhookDelivery | None:
    """Take one due, undelivered row for this attempt (None: done, not due, or another worker has it)."""
    with transaction.atomic(durable=True):
        row = (WebhookDelivery.objects.select_for_update(skip_locked=True).select_related("system")
               .filter(id=delivery_id, delivered_at__isnull=True, given_up_at__isnull=True,
                       next_attempt_at__lte=now).first())
        if row is None:
            return None
        row.attempts += 1
        # Past this request's timeout: a second worker (the sweep) does not send it meanwhile.
        row.next_attempt_at = now + timedelta(seconds=TIMEOUT_S + backoff_s(row.attempts))
        row.save(update_fields=["attempts", "next_attempt_at"])
        return row


def post(row: WebhookDelivery) -> tuple[int | None, str]:
    """POST the stored body once: (HTTP status or None, what went wrong or "")."""
    body = row.body.encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Oversight-Webhooks/1",
        "X-Oversight-Event": row.event,
        "X-Oversight-Delivery": str(row.id),
    }
    if row.system.webhook_secret:
        headers["X-Oversight-Signature"] = signature(row.system.webhook_secret, body)
    try:
        r = httpx.post(row.url, content=body, headers=headers, timeout=TIMEOUT_S, follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 — not only httpx.HTTPError: a host name the client refuses
        # raises UnicodeError or InvalidURL. Whatever stopped the POST is this attempt's failure
        # (recorded, retried, given up in the end), never an exception that leaves the row leased.
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= r.status_code < 300:
        return r.status_code, ""
    return r.status_code, f"HTTP {r.status_code}: {r.text[:200]}"


def attempt(delivery_id: str, now: datetime | None = None) -> float | None:
    """Try one delivery now. Returns the seconds until the next try, or None when there is none
    (delivered, given up, or not ours to send)."""
    clock = now  # tests inject one clock for the whole attempt
    now = now or timezone.now()
    row = _lease(delivery_id, now)
    if row is None:
        return None
    status, error = post(row)
    done_at = clock or timezone.now()
    fields: dict[str, Any] = {"last_status": status, "last_error": error}
    wait: float | None = None
    if not error:
        fields["delivered_at"] = done_at
    elif (done_at - row.created_at).total_seconds() >= give_up_after_s():
        fields["given_up_at"] = done_at
    else:
        wait = backoff_s(row.attempts)
        fields["next_attempt_at"] = done_at + timedelta(seconds=wait)
    with transaction.atomic(durable=True):
        WebhookDelivery.objects.filter(id=row.id).update(**fields)
        if "given_up_at" in fields:
            audit.record(None, "webhook.give_up", system=row.system, target=f"dec_{row.decision_id.hex}",
                         reason=f"no 2xx from {row.url} after {row.attempts} attempts: {error}",
                         data={"delivery": str(row.id), "event": row.event})
    return wait


def due(now: datetime | None = None, late_s: float = 30.0, limit: int = 500) -> list[str]:
    """Undelivered rows whose next try is more than ``late_s`` overdue: their retry was lost."""
    now = now or timezone.now()
    return [str(i) for i in WebhookDelivery.objects.filter(
        delivered_at__isnull=True, given_up_at__isnull=True, next_attempt_at__lte=now - timedelta(seconds=late_s),
    ).order_by("next_attempt_at").values_list("id", flat=True)[:limit]]


@transaction.atomic(durable=True)
def set_secret(system: AISystem, actor: Any) -> str:
    """A new webhook secret for ``system`` (the old one stops signing at once); returned once."""
    secret = new_secret()
    AISystem.objects.filter(pk=system.pk).update(webhook_secret=secret)
    audit.record(actor, "webhook.secret", system=system, target=system.slug,
                 reason="a new webhook secret was made; deliveries are signed with it from now on")
    return secret
