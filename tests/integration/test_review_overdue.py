"""The overdue alert: review items past their SLA open one alert per system, kept current, resolved
when the queue catches up; audited, shown on the overview to every role (admins watch it there)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from dashboards import review_alerts
from dashboards.models import Alert
from oversight.models import AuditEvent
from reviewqueue import actions
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body


def pending(world: World, n: int) -> list[ReviewItem]:
    for _ in range(n):
        r = world.client_for("crit").post("/api/v1/systems/crit/decisions", decision_body(0.9),
                                          content_type="application/json")
        assert r.status_code == 201, r.content
    return list(ReviewItem.objects.filter(system=world.critical).order_by("created_at"))


def test_items_past_their_sla_open_one_alert_that_follows_the_count_and_resolves(world: World) -> None:
    items = pending(world, 3)
    sla = world.critical.review_sla_s
    assert review_alerts.run_all(timezone.now()) == {"opened": 0, "resolved": 0}  # nothing due yet
    assert not Alert.objects.filter(kind=review_alerts.KIND).exists()

    later = timezone.now() + timedelta(seconds=sla + 5)
    assert review_alerts.run_all(later) == {"opened": 1, "resolved": 0}
    alert = Alert.objects.get(kind=review_alerts.KIND, state=Alert.State.OPEN)
    assert alert.system == world.critical
    assert alert.value == 3
    assert f"3 review items are past the SLA of {sla} s" in alert.message
    assert "/review/?system=crit" in alert.message
    assert AuditEvent.objects.filter(action="alert.open", target=review_alerts.KIND).count() == 1

    for item in items[:2]:  # two resolved: the same alert, with the new count (not a second alert)
        claimed = actions.claim_item(world.operator, item.id, now=later)
        actions.resolve(world.operator, claimed.id, "approve", now=later)
    assert review_alerts.run_all(later) == {"opened": 0, "resolved": 0}
    alert.refresh_from_db()
    assert alert.state == Alert.State.OPEN
    assert alert.value == 1
    assert "1 review item is past the SLA" in alert.message

    overview = world.person(world.editor).get("/")
    assert overview.status_code == 200
    assert "1 review item is past the SLA" in overview.content.decode()

    actions.resolve(world.operator, actions.claim_item(world.operator, items[2].id, now=later).id, "reject", now=later)
    assert review_alerts.run_all(later) == {"opened": 0, "resolved": 1}
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED
    assert alert.resolved_at == later
    assert AuditEvent.objects.filter(action="alert.resolve", target=review_alerts.KIND).count() == 1


def test_other_systems_are_left_alone(world: World) -> None:
    pending(world, 1)
    review_alerts.run_all(timezone.now() + timedelta(days=1))
    assert list(Alert.objects.filter(kind=review_alerts.KIND).values_list("system__slug", flat=True)) == ["crit"]
