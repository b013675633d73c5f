"""Alerts people act on: acknowledging one (the API and the system page call this)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from dashboards import drift_job
from dashboards.models import Alert
from oversight import audit, events
from oversight.errors import ActionError


def acknowledge(user: Any, alert_id: str) -> Alert:
    """Acknowledge ``alr_N``. Again is fine: the first person and time are kept (audited once, pushed)."""
    raw = alert_id.removeprefix("alr_")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ActionError("not_found", f"no alert {alert_id!r}")
    with transaction.atomic():
        alert = Alert.objects.select_for_update(of=("self",)).select_related("system").filter(pk=int(raw)).first()
        if alert is None:
            raise ActionError("not_found", f"no alert {alert_id!r}")
        if alert.acked_at is None:
            alert.acked_by = user
            alert.acked_at = timezone.now()
            alert.save(update_fields=["acked_by", "acked_at"])
            audit.record(user, "alert.ack", system=alert.system, target=alert.subject,
                         data={"id": alert.public_id, "kind": alert.kind})
            message = {**drift_job.alert_message(alert.system.slug, alert),
                       "acked_by": user.get_username(), "acked_at": alert.acked_at.isoformat()}
            events.send_on_commit([events.system_group(alert.system.slug), events.OVERVIEW_GROUP], message)
    return Alert.objects.select_related("system", "acked_by").get(pk=alert.pk)
