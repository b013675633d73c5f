"""The review queue page marks items past their review SLA."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from reviewqueue.models import ReviewItem
from tests.conftest import decision_body


def test_queue_marks_overdue_items_only(world):
    client = world.client_for("crit")
    for _ in range(2):
        r = client.post("/api/v1/systems/crit/decisions", decision_body(0.9), content_type="application/json")
        assert r.status_code == 201
    late, on_time = ReviewItem.objects.order_by("created_at")
    ReviewItem.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(minutes=5))
    page = world.person(world.operator).get("/review/").content.decode()
    assert page.count("· overdue") == 1
    row = page[page.index(f'data-item="{late.public_id}"'):]
    assert "overdue" in row[: row.index("</tr>")]
    assert on_time.public_id in page
