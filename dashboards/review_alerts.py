"""The overdue alert: review items past their system's SLA (``review_sla_s``), one alert per system.

Opened when a system has waiting items past their due time, kept up to date while it does (the
count in its message and value), resolved when none is left; pushed live to the overview and the
system's page like every alert (the overview's alert column is what admins watch), and audited
(``alert.open`` / ``alert.resolve``). Beat runs it every 30 s.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from dashboards import drift_job
from dashboards.models import Alert
from oversight import audit, events
from oversight.models import AISystem, Level
from reviewqueue import triage

KIND = "review_overdue"


def overdue_count(system_id: int, now: datetime) -> int:
    """Waiting items of the system past their due time, counted up to the queue's cap (+1 past it)."""
    qs = triage.pending().filter(system_id=system_id, level__in=Level.values, due_at__lt=now)
    return triage.count_upto(qs, triage.COUNT_CAP)


def _message(system: AISystem, n: int) -> str:
    many = f"more than {triage.COUNT_CAP}" if n > triage.COUNT_CAP else str(n)
    items = "item is" if n == 1 else "items are"
    return (f"{many} review {items} past the SLA of {system.review_sla_s} s: the queue needs operators "
            f"(/review/?system={system.slug})")


def update_system(system: AISystem, now: datetime | None = None) -> str:
    """Open, refresh or resolve ``system``'s overdue alert; returns what happened ("opened", "resolved", "")."""
    now = now or timezone.now()
    n = overdue_count(system.id, now)
    groups = [events.system_group(system.slug), events.OVERVIEW_GROUP]
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(system=system, kind=KIND, state=Alert.State.OPEN).first()
        if n and alert is None:
            alert = Alert.objects.create(system=system, kind=KIND, subject="queue", value=float(n), opened_at=now,
                                         message=_message(system, n))
            audit.record(None, "alert.open", system=system, target=KIND, data={"id": alert.public_id, "overdue": n})
            events.send_on_commit(groups, drift_job.alert_message(system.slug, alert))
            return "opened"
        if n and alert is not None and alert.value != float(n):
            alert.value, alert.message = float(n), _message(system, n)
            alert.save(update_fields=["value", "message"])
            events.send_on_commit(groups, drift_job.alert_message(system.slug, alert))
        elif not n and alert is not None:
            alert.state, alert.resolved_at = Alert.State.RESOLVED, now
            alert.save(update_fields=["state", "resolved_at"])
            audit.record(None, "alert.resolve", system=system, target=KIND,
                         data={"id": alert.public_id, "reason": "no review item is past its SLA"})
            events.send_on_commit(groups, drift_job.alert_message(system.slug, alert))
            return "resolved"
    return ""


def run_all(now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    done = [update_system(s, now) for s in AISystem.objects.all()]
    return {"opened": done.count("opened"), "resolved": done.count("resolved")}
