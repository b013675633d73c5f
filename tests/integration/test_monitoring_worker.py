"""The monitoring task on a real Celery worker: counts stored, message pushed to the Channels group."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from dashboards.models import MetricPoint
from dashboards.tasks import compute_route_counts
from oversight import events
from tests.conftest import decision_body


async def _run_task_and_listen(group: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        result = await asyncio.to_thread(lambda: compute_route_counts.delay().get(timeout=timeout))
        message = await asyncio.wait_for(layer.receive(channel), timeout=timeout)
        return result, message
    finally:
        await layer.group_discard(group, channel)


def test_worker_counts_decisions_and_pushes_them_to_the_overview_group(tworld, celery_worker_proc):
    client = tworld.client_for("sup")
    for conf in (0.9, 0.95, 0.1):  # two released (auto), one queued for a person (human)
        r = client.post("/api/v1/systems/sup/decisions", decision_body(conf), content_type="application/json")
        assert r.status_code == 201
    killed = tworld.client_for("auto")
    from oversight import actions

    actions.set_killswitch(tworld.admin, "system", True, "drift spotted", "auto")
    r = killed.post("/api/v1/systems/auto/decisions", decision_body(0.9), content_type="application/json")
    assert r.json()["route"] == "killed"

    result, message = async_to_sync(_run_task_and_listen)(events.OVERVIEW_GROUP, 60)

    assert result["points"] > 0
    pushed = message["message"]
    assert pushed["type"] == "batch"
    metrics: dict[tuple[str, str], float] = {}
    for m in pushed["messages"]:  # the last two minutes hold all four decisions (made seconds ago)
        if m["type"] == "metric":
            metrics[(m["system"], m["name"])] = metrics.get((m["system"], m["name"]), 0) + m["value"]
    assert metrics[("sup", "decisions.auto")] >= 2
    assert metrics[("sup", "decisions.human")] >= 1
    assert metrics[("auto", "decisions.killed")] >= 1
    queues = {m["system"]: m["depth"] for m in pushed["messages"] if m["type"] == "queue"}
    assert queues["sup"] == 1
    stored = MetricPoint.objects.filter(system=tworld.supervised, name="decisions.auto")
    assert sum(p.value for p in stored) == 2
