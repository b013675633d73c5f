"""Celery tasks of the monitoring queue: thin wrappers over dashboards.monitoring."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from dashboards import monitoring


@shared_task(name="dashboards.tasks.compute_route_counts", ignore_result=False)
def compute_route_counts(minutes: int = 10) -> dict[str, Any]:
    return monitoring.run_route_counts(minutes)
